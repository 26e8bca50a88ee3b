//! Decoding Postgres' built-in logical decoding output, `pgoutput` (protocol version 1, the
//! "Logical Replication Message Formats" of the Postgres manual), as the SQL function
//! `pg_logical_slot_peek_binary_changes` returns it: one message per row. Pure.
//!
//! Only what a change feed needs is kept: transaction boundaries (with the commit's end LSN,
//! where a slot is advanced to), relations (their columns and type OIDs, sent before a
//! relation's first change in every decoding session) and inserts, updates and deletes as
//! JSON rows. Values arrive as text and become JSON by their column's type.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

/// One decoded message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Begin {
        xid: u32,
    },
    Commit {
        end_lsn: u64,
    },
    Relation(Relation),
    Change(Change),
    /// Origin, Type, Truncate, Message and anything else a change feed does not act on.
    Other(u8),
}

/// A table as the stream describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

/// A column of a relation.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
}

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// A row change of relation `relation`: the new row (insert, update) or the old key (delete).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub relation: u32,
    pub op: Op,
    pub tuple: Vec<Value>,
}

/// A column's value in a tuple.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch: not sent.
    Unchanged,
    Text(String),
}

/// Why a message could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a pgoutput message ended early, in its {0}")]
    Short(&'static str),
    #[error("a pgoutput {message} message has the unexpected tag {tag:?}")]
    Tag { message: &'static str, tag: char },
    #[error("a pgoutput message holds a string that is not UTF-8")]
    Utf8,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Short(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Short(what))?;
        let text = std::str::from_utf8(&self.bytes[..end]).map_err(|_| DecodeError::Utf8)?;
        self.bytes = &self.bytes[end + 1..];
        Ok(text.to_owned())
    }
    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let columns = self.u16("tuple")?;
        (0..columns)
            .map(|_| match self.u8("tuple column")? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32("tuple value")? as usize;
                    let bytes = self.take(len, "tuple value")?;
                    Ok(Value::Text(
                        std::str::from_utf8(bytes)
                            .map_err(|_| DecodeError::Utf8)?
                            .to_owned(),
                    ))
                }
                other => Err(DecodeError::Tag {
                    message: "tuple",
                    tag: other as char,
                }),
            })
            .collect()
    }
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes };
    let tag = r.u8("tag")?;
    Ok(match tag {
        b'B' => {
            r.u64("begin")?; // final LSN
            r.u64("begin")?; // commit time
            Message::Begin {
                xid: r.u32("begin")?,
            }
        }
        b'C' => {
            r.u8("commit")?; // flags
            r.u64("commit")?; // commit LSN
            Message::Commit {
                end_lsn: r.u64("commit")?,
            }
        }
        b'R' => {
            let oid = r.u32("relation")?;
            let schema = r.string("relation")?;
            let name = r.string("relation")?;
            r.u8("relation")?; // replica identity setting
            let count = r.u16("relation")?;
            let columns = (0..count)
                .map(|_| {
                    let flags = r.u8("relation column")?;
                    let name = r.string("relation column")?;
                    let type_oid = r.u32("relation column")?;
                    r.u32("relation column")?; // type modifier
                    Ok(Column {
                        name,
                        type_oid,
                        key: flags & 1 == 1,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Message::Relation(Relation {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("insert")?;
            expect(&mut r, b'N', "insert")?;
            Message::Change(Change {
                relation,
                op: Op::Insert,
                tuple: r.tuple()?,
            })
        }
        b'U' => {
            let relation = r.u32("update")?;
            let mut marker = r.u8("update")?;
            if marker == b'K' || marker == b'O' {
                r.tuple()?; // the old key or row
                marker = r.u8("update")?;
            }
            if marker != b'N' {
                return Err(DecodeError::Tag {
                    message: "update",
                    tag: marker as char,
                });
            }
            Message::Change(Change {
                relation,
                op: Op::Update,
                tuple: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32("delete")?;
            let marker = r.u8("delete")?;
            if marker != b'K' && marker != b'O' {
                return Err(DecodeError::Tag {
                    message: "delete",
                    tag: marker as char,
                });
            }
            Message::Change(Change {
                relation,
                op: Op::Delete,
                tuple: r.tuple()?,
            })
        }
        other => Message::Other(other),
    })
}

fn expect(r: &mut Reader<'_>, tag: u8, message: &'static str) -> Result<(), DecodeError> {
    match r.u8(message)? {
        found if found == tag => Ok(()),
        found => Err(DecodeError::Tag {
            message,
            tag: found as char,
        }),
    }
}

/// A column's text value as JSON, by its type: booleans, integers and floats as JSON values,
/// `json`/`jsonb` parsed, `numeric` as a number when it fits one exactly, anything else
/// (text, timestamps, uuids, …) as the string Postgres wrote.
pub fn json_value(type_oid: u32, text: &str) -> Json {
    const BOOL: u32 = 16;
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const JSON: u32 = 114;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const NUMERIC: u32 = 1700;
    const JSONB: u32 = 3802;
    let parsed = match type_oid {
        BOOL => Some(Json::Bool(text == "t")),
        INT2 | INT4 | INT8 => text.parse::<i64>().ok().map(Json::from),
        FLOAT4 | FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number),
        // Exact in a double up to 15 significant digits; longer ones stay text, unrounded.
        NUMERIC if significant_digits(text).is_some_and(|digits| digits <= 15) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number),
        JSON | JSONB => serde_json::from_str(text).ok(),
        _ => None,
    };
    parsed.unwrap_or_else(|| Json::String(text.to_owned()))
}

/// The significant digits of a plain decimal (`-12.50` has 4), or `None` for anything else
/// (`NaN`, `Infinity`).
fn significant_digits(text: &str) -> Option<usize> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{whole}{fraction}");
    Some(all.trim_start_matches('0').len().max(1))
}

/// The relations seen so far in one decoding session, by OID.
#[derive(Debug, Default)]
pub struct Relations(HashMap<u32, Relation>);

impl Relations {
    pub fn learn(&mut self, relation: Relation) {
        self.0.insert(relation.oid, relation);
    }

    pub fn get(&self, oid: u32) -> Option<&Relation> {
        self.0.get(&oid)
    }

    /// The change as a JSON row: its columns by name (unchanged TOASTed values and, for a
    /// delete, the columns outside the key are left out).
    pub fn row(&self, change: &Change) -> Option<Map<String, Json>> {
        let relation = self.get(change.relation)?;
        let mut row = Map::new();
        for (column, value) in relation.columns.iter().zip(&change.tuple) {
            let value = match value {
                Value::Null if change.op == Op::Delete && !column.key => continue,
                Value::Null => Json::Null,
                Value::Unchanged => continue,
                Value::Text(text) => json_value(column.type_oid, text),
            };
            row.insert(column.name.clone(), value);
        }
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    }

    fn tuple(out: &mut Vec<u8>, values: &[Option<&str>]) {
        out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for value in values {
            match value {
                None => out.push(b'n'),
                Some(text) => {
                    out.push(b't');
                    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
    }

    fn relation() -> Vec<u8> {
        let mut out = vec![b'R'];
        out.extend_from_slice(&16384u32.to_be_bytes());
        string(&mut out, "public");
        string(&mut out, "accounts");
        out.push(b'd');
        out.extend_from_slice(&3u16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", 23u32), (0, "name", 25), (0, "balance", 1700)] {
            out.push(flags);
            string(&mut out, name);
            out.extend_from_slice(&oid.to_be_bytes());
            out.extend_from_slice(&(-1i32).to_be_bytes());
        }
        out
    }

    #[test]
    fn a_transaction_decodes_into_rows_by_column_type() {
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x16B3748u64.to_be_bytes());
        begin.extend_from_slice(&0u64.to_be_bytes());
        begin.extend_from_slice(&731u32.to_be_bytes());
        assert_eq!(decode(&begin).unwrap(), Message::Begin { xid: 731 });

        let mut relations = Relations::default();
        let Message::Relation(accounts) = decode(&relation()).unwrap() else {
            panic!("a relation");
        };
        assert_eq!(accounts.name, "accounts");
        assert!(accounts.columns[0].key && !accounts.columns[1].key);
        relations.learn(accounts);

        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16384u32.to_be_bytes());
        insert.push(b'N');
        tuple(&mut insert, &[Some("7"), Some("Ada"), Some("12.50")]);
        let Message::Change(change) = decode(&insert).unwrap() else {
            panic!("a change");
        };
        assert_eq!(change.op, Op::Insert);
        assert_eq!(
            Json::Object(relations.row(&change).unwrap()),
            serde_json::json!({"id": 7, "name": "Ada", "balance": 12.50})
        );

        let mut update = vec![b'U'];
        update.extend_from_slice(&16384u32.to_be_bytes());
        update.push(b'K');
        tuple(&mut update, &[Some("7"), None, None]);
        update.push(b'N');
        tuple(
            &mut update,
            &[Some("8"), None, Some("12345678901234567890.5")],
        );
        let Message::Change(change) = decode(&update).unwrap() else {
            panic!("a change");
        };
        assert_eq!(
            Json::Object(relations.row(&change).unwrap()),
            serde_json::json!({"id": 8, "name": null, "balance": "12345678901234567890.5"}),
            "a numeric too long for a double stays text"
        );

        let mut delete = vec![b'D'];
        delete.extend_from_slice(&16384u32.to_be_bytes());
        delete.push(b'K');
        tuple(&mut delete, &[Some("8"), None, None]);
        let Message::Change(change) = decode(&delete).unwrap() else {
            panic!("a change");
        };
        assert_eq!(change.op, Op::Delete);
        assert_eq!(
            Json::Object(relations.row(&change).unwrap()),
            serde_json::json!({"id": 8}),
            "a delete carries its key"
        );

        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&0x16B3748u64.to_be_bytes());
        commit.extend_from_slice(&0x16B3790u64.to_be_bytes());
        commit.extend_from_slice(&0u64.to_be_bytes());
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit { end_lsn: 0x16B3790 }
        );
    }

    #[test]
    fn a_cut_message_or_an_unknown_tuple_tag_is_an_error_not_a_row() {
        let relation = relation();
        assert_eq!(
            decode(&relation[..relation.len() - 3]),
            Err(DecodeError::Short("relation column"))
        );
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&1u32.to_be_bytes());
        insert.push(b'X');
        assert!(matches!(decode(&insert), Err(DecodeError::Tag { .. })));
        assert_eq!(decode(b"T\0\0\0\0").unwrap(), Message::Other(b'T'));
    }

    #[test]
    fn values_become_json_by_type() {
        assert_eq!(json_value(16, "t"), Json::Bool(true));
        assert_eq!(
            json_value(20, "9007199254740993"),
            Json::from(9007199254740993i64)
        );
        assert_eq!(
            json_value(3802, r#"{"a": [1]}"#),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(
            json_value(1184, "2026-12-03 07:00:00+00"),
            Json::from("2026-12-03 07:00:00+00")
        );
        assert_eq!(json_value(1700, "-10.0"), serde_json::json!(-10.0));
        assert_eq!(json_value(1700, "NaN"), Json::from("NaN"));
    }
}
