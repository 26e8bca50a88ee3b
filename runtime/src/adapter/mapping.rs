//! Mapping a source record onto an Entity's state: each output field is a CEL expression over
//! `record`, compiled once; `deleteWhen` turns a record into a delete of its key. Pure.

use crds::adapter::AdapterSpec;
use serde_json::{Map, Value as Json, json};

use crate::expr::{Evaluator, ExprError, Expression, json_to_val};

/// What one record becomes: a state to submit, or a key to delete.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Upsert { key: String, state: Json },
    Delete { key: String },
}

impl Item {
    /// The key the item is about.
    pub fn key(&self) -> &str {
        match self {
            Item::Upsert { key, .. } | Item::Delete { key } => key,
        }
    }

    /// The item as one line of the receiver's NDJSON batch.
    pub fn batch_line(&self) -> Json {
        match self {
            Item::Upsert { key, state } => json!({"key": key, "state": state}),
            Item::Delete { key } => json!({"key": key, "delete": true}),
        }
    }
}

/// Why an Adapter's mapping cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("mapping of field {field:?}")]
    Field {
        field: String,
        #[source]
        source: ExprError,
    },
    #[error("deleteWhen")]
    DeleteWhen(#[source] ExprError),
    #[error(
        "the Entity's key {pointer:?} starts with field {field:?}, which the mapping does not produce"
    )]
    KeyNotMapped { pointer: String, field: String },
}

/// Why one record could not be mapped; the record is rejected, the others go on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("field {field:?} could not be mapped")]
    Field {
        field: String,
        #[source]
        source: ExprError,
    },
    #[error("deleteWhen could not be evaluated")]
    DeleteWhen(#[source] ExprError),
    #[error("the mapped record has no key at {pointer:?} (a string or a number)")]
    NoKey { pointer: String },
}

/// An Adapter's compiled mapping.
#[derive(Debug)]
pub struct Mapping {
    fields: Vec<(String, Expression)>,
    key_field: String,
    key_pointer: String,
    delete_when: Option<Expression>,
    evaluator: Evaluator,
}

impl Mapping {
    /// Compiles `spec`'s mapping for an Entity keyed by `key_pointer` (e.g. `/id`).
    pub fn new(spec: &AdapterSpec, key_pointer: &str) -> Result<Self, MappingError> {
        let fields = spec
            .mapping
            .iter()
            .map(|(field, source)| {
                Expression::compile(source)
                    .map(|expression| (field.clone(), expression))
                    .map_err(|source| MappingError::Field {
                        field: field.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first_token = key_pointer
            .strip_prefix('/')
            .unwrap_or(key_pointer)
            .split('/')
            .next()
            .unwrap_or_default();
        let key_field = crds::pointer::unescape(first_token).into_owned();
        if !fields.iter().any(|(field, _)| *field == key_field) {
            return Err(MappingError::KeyNotMapped {
                pointer: key_pointer.to_owned(),
                field: key_field,
            });
        }
        // A change feed says itself what was deleted (the postgres source's `_op`).
        let default_delete = spec
            .source
            .postgres
            .as_ref()
            .map(|_| r#"record._op == "delete""#);
        let delete_when = spec
            .delete_when
            .as_deref()
            .or(default_delete)
            .map(Expression::compile)
            .transpose()
            .map_err(MappingError::DeleteWhen)?;
        Ok(Mapping {
            fields,
            key_field,
            key_pointer: key_pointer.to_owned(),
            delete_when,
            evaluator: Evaluator::default(),
        })
    }

    /// Maps one record. A delete evaluates only the key's field, since a deleted record's other
    /// fields are often missing.
    pub fn map(&self, record: &Json) -> Result<Item, RecordError> {
        let context = self.evaluator.context([("record", json_to_val(record))]);
        let delete = match &self.delete_when {
            Some(predicate) => predicate
                .evaluate_bool(&context)
                .map_err(RecordError::DeleteWhen)?,
            None => false,
        };
        let mut state = Map::new();
        for (field, expression) in &self.fields {
            if delete && *field != self.key_field {
                continue;
            }
            let value =
                expression
                    .evaluate_json(&context)
                    .map_err(|source| RecordError::Field {
                        field: field.clone(),
                        source,
                    })?;
            state.insert(field.clone(), value);
        }
        let state = Json::Object(state);
        let key = match state.pointer(&self.key_pointer) {
            Some(Json::String(key)) if !key.is_empty() => key.clone(),
            Some(Json::Number(number)) => number.to_string(),
            _ => {
                return Err(RecordError::NoKey {
                    pointer: self.key_pointer.clone(),
                });
            }
        };
        Ok(if delete {
            Item::Delete { key }
        } else {
            Item::Upsert { key, state }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AdapterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn crm_mapping() -> Mapping {
        let spec = spec(
            r#"
entity: customer
source: {generator: {rate: 1}}
mapping:
  id: record.Id
  name: record.Name
  city: record.BillingCity
  revenue: record.AnnualRevenue * 2
deleteWhen: record.IsDeleted
"#,
        );
        Mapping::new(&spec, "/id").unwrap()
    }

    #[test]
    fn fields_are_mapped_from_the_record() {
        let item = crm_mapping()
            .map(&json!({"Id": "001", "Name": "Acme", "BillingCity": "Oslo", "AnnualRevenue": 21, "IsDeleted": false}))
            .unwrap();
        assert_eq!(
            item,
            Item::Upsert {
                key: "001".to_owned(),
                state: json!({"id": "001", "name": "Acme", "city": "Oslo", "revenue": 42})
            }
        );
    }

    #[test]
    fn a_record_matching_delete_when_becomes_a_delete_of_its_key() {
        let item = crm_mapping()
            .map(&json!({"Id": "002", "IsDeleted": true}))
            .unwrap();
        assert_eq!(
            item,
            Item::Delete {
                key: "002".to_owned()
            }
        );
        assert_eq!(item.batch_line(), json!({"key": "002", "delete": true}));
    }

    #[test]
    fn a_record_that_fails_mapping_names_the_field_and_others_still_map() {
        let mapping = crm_mapping();
        let error = mapping
            .map(&json!({"Id": "003", "Name": "Acme", "BillingCity": "Oslo", "IsDeleted": false}))
            .unwrap_err();
        assert!(
            matches!(&error, RecordError::Field { field, .. } if field == "revenue"),
            "{error:?}"
        );
        assert!(mapping
            .map(&json!({"Id": "004", "Name": "B", "BillingCity": "Graz", "AnnualRevenue": 1, "IsDeleted": false}))
            .is_ok());
    }

    #[test]
    fn numeric_keys_are_submitted_as_text() {
        let spec = spec("entity: e\nsource: {generator: {rate: 1}}\nmapping: {id: record.n}\n");
        let item = Mapping::new(&spec, "/id")
            .unwrap()
            .map(&json!({"n": 7}))
            .unwrap();
        assert_eq!(item.key(), "7");
    }

    #[test]
    fn a_mapping_without_the_entity_key_is_refused_at_start() {
        let spec = spec("entity: e\nsource: {generator: {rate: 1}}\nmapping: {name: record.n}\n");
        let error = Mapping::new(&spec, "/id").unwrap_err();
        assert!(matches!(error, MappingError::KeyNotMapped { field, .. } if field == "id"));
    }
}
