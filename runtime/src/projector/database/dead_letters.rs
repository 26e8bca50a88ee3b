//! Poison events, recorded with their reason: stored so that any payload fits (jsonb when it
//! can hold the event, readable text otherwise, the exact bytes always).

use std::collections::HashMap;

use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::super::plan::Plan;
use super::{CommitError, DatabaseError, query_error, storable_text};
use crate::sql::{Schema, tables};

/// A poison event, recorded with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub sequence: u64,
    pub key: Option<String>,
    pub version: Option<u64>,
    /// The message's payload exactly as the stream holds it.
    pub message: bytes::Bytes,
    pub reason: String,
    /// The kind of poison (`Poison::cause`), the label it is counted under; not stored.
    pub cause: &'static str,
}

impl DeadLetter {
    /// The dead letter of the message at stream `sequence`; `key` and `version` are the
    /// event's, when the payload decoded as one.
    pub fn new(
        sequence: u64,
        key: Option<String>,
        version: Option<u64>,
        message: bytes::Bytes,
        reason: impl Into<String>,
    ) -> Self {
        DeadLetter {
            sequence,
            key,
            version,
            message,
            reason: reason.into(),
            cause: "unclassified",
        }
    }

    /// The same dead letter, counted under `cause`.
    pub fn caused_by(self, cause: &'static str) -> Self {
        DeadLetter { cause, ..self }
    }
}

/// A dead letter as bound to `dp_dead_letters`, every value in a form its column accepts
/// whatever the event holds: Postgres text cannot hold NUL, nor jsonb a `\u0000` escape.
#[derive(Debug, PartialEq)]
struct StoredDeadLetter {
    key: Option<String>,
    /// The message as JSON, for jsonb, when jsonb can hold it.
    event: Option<String>,
    /// Otherwise a readable copy (invalid UTF-8 replaced, NUL escaped).
    payload: Option<String>,
    reason: String,
}

impl StoredDeadLetter {
    fn of(letter: &DeadLetter) -> Self {
        let event = serde_json::from_slice::<Json>(&letter.message)
            .ok()
            .filter(|json| !holds_nul(json))
            .map(|json| json.to_string());
        let payload = match &event {
            Some(_) => None,
            None => Some(storable_text(&String::from_utf8_lossy(&letter.message))),
        };
        StoredDeadLetter {
            key: letter.key.as_deref().map(storable_text),
            event,
            payload,
            reason: storable_text(&letter.reason),
        }
    }
}

/// Whether a string (or an object's key) anywhere in `json` holds NUL.
fn holds_nul(json: &Json) -> bool {
    match json {
        Json::String(text) => text.contains('\0'),
        Json::Array(items) => items.iter().any(holds_nul),
        Json::Object(fields) => fields
            .iter()
            .any(|(name, value)| name.contains('\0') || holds_nul(value)),
        Json::Null | Json::Bool(_) | Json::Number(_) => false,
    }
}

pub(super) async fn record_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    partition: u32,
    dead_letters: &[DeadLetter],
) -> Result<(), CommitError> {
    let dead_letters_table = plan.schema.table(tables::DEAD_LETTERS);
    let sequences: Vec<i64> = dead_letters.iter().map(|d| d.sequence as i64).collect();
    let versions: Vec<Option<i64>> = dead_letters
        .iter()
        .map(|d| d.version.map(|v| v as i64))
        .collect();
    let messages: Vec<&[u8]> = dead_letters.iter().map(|d| d.message.as_ref()).collect();
    let stored: Vec<StoredDeadLetter> = dead_letters.iter().map(StoredDeadLetter::of).collect();
    let mut keys = Vec::with_capacity(stored.len());
    let mut events = Vec::with_capacity(stored.len());
    let mut payloads = Vec::with_capacity(stored.len());
    let mut reasons = Vec::with_capacity(stored.len());
    for letter in stored {
        keys.push(letter.key);
        events.push(letter.event);
        payloads.push(letter.payload);
        reasons.push(letter.reason);
    }
    sqlx::query(
        AssertSqlSafe(format!("insert into {dead_letters_table} (projection, generation, partition, sequence, key, version, event, payload, message, reason)
         select $1, $2, $3, s, k, v, e::jsonb, p, m, r
         from unnest($4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bytea[], $10::text[])
              as d(s, k, v, e, p, m, r)
         on conflict do nothing")),
    )
    .bind(&plan.projection)
    .bind(&plan.generation)
    .bind(partition as i32)
    .bind(&sequences)
    .bind(&keys)
    .bind(&versions)
    .bind(&events)
    .bind(&payloads)
    .bind(&messages)
    .bind(&reasons)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Dead letters per generation of `projection`.
pub async fn dead_letter_counts(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
) -> Result<HashMap<String, u64>, DatabaseError> {
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "select generation, count(*) from {dead_letters} where projection = $1 group by generation"
    )))
    .bind(projection)
    .fetch_all(pool)
    .await
    .map_err(query_error("count the dead letters"))?;
    Ok(rows.into_iter().map(|(g, n)| (g, n as u64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: Option<&str>, message: &[u8], reason: &str) -> DeadLetter {
        DeadLetter::new(
            7,
            key.map(str::to_owned),
            Some(1),
            bytes::Bytes::copy_from_slice(message),
            reason,
        )
    }

    #[test]
    fn an_event_holding_nul_is_kept_as_text_with_nul_escaped() {
        let message = br#"{"key":"nul1","state":{"name":"a\u0000b"}}"#;
        let stored = StoredDeadLetter::of(&letter(Some("n\0l"), message, "bad \0 value"));
        assert_eq!(stored.event, None, "jsonb cannot hold \\u0000");
        assert_eq!(
            stored.payload.as_deref(),
            Some(r#"{"key":"nul1","state":{"name":"a\u0000b"}}"#)
        );
        assert_eq!(stored.key.as_deref(), Some("n\\u0000l"));
        assert_eq!(stored.reason, "bad \\u0000 value");
    }

    #[test]
    fn an_event_jsonb_can_hold_is_kept_as_json() {
        let stored = StoredDeadLetter::of(&letter(Some("k"), br#"{"a": [1, "x"]}"#, "r"));
        assert_eq!(stored.event.as_deref(), Some(r#"{"a":[1,"x"]}"#));
        assert_eq!(stored.payload, None);
    }

    #[test]
    fn a_payload_that_is_not_json_is_kept_as_readable_text() {
        let stored = StoredDeadLetter::of(&letter(None, b"not json \xff\x00", "r"));
        assert_eq!(stored.event, None);
        assert_eq!(stored.payload.as_deref(), Some("not json \u{fffd}\\u0000"));
        assert_eq!(stored.key, None);
    }
}
