//! Poison events, recorded with their reason: stored so that any payload fits (jsonb when it
//! can hold the event, readable text otherwise, the exact bytes always). Every query of
//! `dp_dead_letters` is here: recording, counting, listing, reading one, marking handled.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use utoipa::ToSchema;

use super::super::plan::Plan;
use super::super::rows::Erasures;
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

/// Deletes the projection's dead letters (of every generation) of each erased key from before
/// its tombstone: the one way a dead letter leaves the table (ADR 75), since it holds the
/// erased event byte for byte.
pub(super) async fn scrub_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    erased: &Erasures,
) -> Result<(), CommitError> {
    let dead_letters_table = plan.schema.table(tables::DEAD_LETTERS);
    sqlx::query(AssertSqlSafe(format!(
        "delete from {dead_letters_table} d using unnest($2::text[], $3::bigint[]) as e(k, s)
         where d.projection = $1 and d.key = e.k and d.sequence < e.s"
    )))
    .bind(&plan.projection)
    .bind(&erased.keys)
    .bind(&erased.sequences)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many dead letters a generation holds, and how many nobody marked handled yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    pub total: u64,
    pub unhandled: u64,
}

/// Dead letters per generation of `projection`.
pub async fn dead_letter_counts(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
) -> Result<HashMap<String, DeadLetterCounts>, DatabaseError> {
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "select generation, count(*), count(*) filter (where handled_at is null)
         from {dead_letters} where projection = $1 group by generation"
    )))
    .bind(projection)
    .fetch_all(pool)
    .await
    .map_err(query_error("count the dead letters"))?;
    Ok(rows
        .into_iter()
        .map(|(g, total, unhandled)| {
            let counts = DeadLetterCounts {
                total: total as u64,
                unhandled: unhandled as u64,
            };
            (g, counts)
        })
        .collect())
}

/// Which dead letters of a projection to list: one page in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this generation's.
    pub generation: Option<String>,
    /// Only those nobody marked handled.
    pub unhandled_only: bool,
    /// Only ids above this one (the previous page's `nextAfterId`).
    pub after_id: Option<i64>,
    /// At most this many (1 or more).
    pub limit: u32,
}

/// A dead letter as listed: where it was, why, and whether someone handled it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSummary {
    /// Names the dead letter in `show`, `handle` and `.../deadletters/{id}`.
    pub id: i64,
    /// The generation whose worker recorded it.
    pub generation: String,
    pub partition: u32,
    /// Stream sequence of the event.
    pub sequence: u64,
    /// The event's key (NUL written as `\u0000`), when the message decoded as an event.
    pub key: Option<String>,
    /// The event's version, when the message decoded as an event.
    pub version: Option<u64>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// When it was marked handled (RFC 3339); absent while unhandled.
    pub handled_at: Option<String>,
    /// Who marked it handled.
    pub handled_by: Option<String>,
}

/// A dead letter with its message.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// `<namespace>/<name>` of the Projection.
    pub projection: String,
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    /// The message as JSON, when it is JSON that jsonb could hold.
    #[schema(value_type = Option<Object>)]
    pub event: Option<Json>,
    /// Otherwise a readable copy of the message (invalid UTF-8 replaced, NUL as `\u0000`).
    pub payload: Option<String>,
    /// The message byte for byte, base64 (absent on rows recorded before it was kept).
    pub message_base64: Option<String>,
}

/// One page of a projection's dead letters.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPage {
    pub projection: String,
    pub dead_letters: Vec<DeadLetterSummary>,
    /// Pass as `afterId` for the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}

/// What marking a dead letter handled did.
#[derive(Clone, Debug, PartialEq)]
pub enum Handled {
    /// Marked now.
    Now(DeadLetterSummary),
    /// Someone had marked it before; it is left as they marked it.
    Before(DeadLetterSummary),
}

const SUMMARY_COLUMNS: &str = "id, generation, partition, sequence, key, version, reason,
    to_json(recorded_at) #>> '{}', to_json(handled_at) #>> '{}', handled_by";

type SummaryRow = (
    i64,
    String,
    i32,
    i64,
    Option<String>,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn summary(row: SummaryRow) -> DeadLetterSummary {
    let (
        id,
        generation,
        partition,
        sequence,
        key,
        version,
        reason,
        recorded_at,
        handled_at,
        handled_by,
    ) = row;
    DeadLetterSummary {
        id,
        generation,
        partition: partition as u32,
        sequence: sequence as u64,
        key,
        version: version.map(|v| v as u64),
        reason,
        recorded_at,
        handled_at,
        handled_by,
    }
}

/// A page of `projection`'s dead letters matching `filter`, in id order.
pub async fn list_dead_letters(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    filter: &DeadLetterFilter,
) -> Result<DeadLetterPage, DatabaseError> {
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let limit = i64::from(filter.limit.max(1));
    let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SUMMARY_COLUMNS} from {dead_letters}
         where projection = $1
           and ($2::text is null or generation = $2)
           and (not $3 or handled_at is null)
           and ($4::bigint is null or id > $4)
         order by id limit $5"
    )))
    .bind(projection)
    .bind(&filter.generation)
    .bind(filter.unhandled_only)
    .bind(filter.after_id)
    .bind(limit + 1)
    .fetch_all(pool)
    .await
    .map_err(query_error("list the dead letters"))?;
    let mut dead_letters: Vec<DeadLetterSummary> = rows.into_iter().map(summary).collect();
    let more = dead_letters.len() as i64 > limit;
    dead_letters.truncate(limit as usize);
    let next_after_id = more.then(|| dead_letters.last().map(|d| d.id)).flatten();
    Ok(DeadLetterPage {
        projection: projection.to_owned(),
        dead_letters,
        next_after_id,
    })
}

type RecordRow = (
    i64,
    String,
    i32,
    i64,
    Option<String>,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<Json>,
    Option<String>,
    Option<Vec<u8>>,
);

/// Dead letter `id` of `projection` with its message, if there is one.
pub async fn dead_letter(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    id: i64,
) -> Result<Option<DeadLetterRecord>, DatabaseError> {
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let found: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SUMMARY_COLUMNS}, event, payload, message from {dead_letters}
         where projection = $1 and id = $2"
    )))
    .bind(projection)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(query_error("read a dead letter"))?;
    Ok(found.map(
        |(a, b, c, d, e, f, g, h, i, j, event, payload, message)| DeadLetterRecord {
            projection: projection.to_owned(),
            summary: summary((a, b, c, d, e, f, g, h, i, j)),
            event,
            payload,
            message_base64: message.map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
        },
    ))
}

/// Marks dead letter `id` of `projection` handled by `by`, unless someone did before; `None`
/// when the projection has no such dead letter.
pub async fn mark_handled(
    pool: &PgPool,
    schema: &Schema,
    projection: &str,
    id: i64,
    by: &str,
) -> Result<Option<Handled>, DatabaseError> {
    let dead_letters = schema.table(tables::DEAD_LETTERS);
    let marked: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update {dead_letters} set handled_at = now(), handled_by = $3
         where projection = $1 and id = $2 and handled_at is null
         returning {SUMMARY_COLUMNS}"
    )))
    .bind(projection)
    .bind(id)
    .bind(storable_text(by))
    .fetch_optional(pool)
    .await
    .map_err(query_error("mark a dead letter handled"))?;
    if let Some(row) = marked {
        return Ok(Some(Handled::Now(summary(row))));
    }
    let before: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SUMMARY_COLUMNS} from {dead_letters} where projection = $1 and id = $2"
    )))
    .bind(projection)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(query_error("read a dead letter"))?;
    Ok(before.map(|row| Handled::Before(summary(row))))
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
