//! CEL helpers shared by the roles that evaluate user expressions (projector filters, adapter
//! mappings): compiling once, evaluating with named variables, and converting between JSON and
//! CEL values.
//!
//! JSON numbers become CEL `int` when they fit an `i64` (then `uint`, then `double`): a plain
//! serde conversion would turn positive integers into `uint`, and `uint * int` fails at runtime,
//! which would make `state.price * 2` an error for every positive price.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::objects::Key as CelKey;
use cel::{Context, Env, ExecutionError, Program, Value};
use serde_json::Value as Json;

/// Why an expression could not be compiled or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    #[error("CEL expression {source_text:?} does not compile")]
    Compile {
        source_text: String,
        #[source]
        source: cel::ParseErrors,
    },
    #[error("CEL expression {source_text:?} failed")]
    Execute {
        source_text: String,
        #[source]
        source: ExecutionError,
    },
    #[error("CEL expression {source_text:?} returned {got}, not {want}")]
    Type {
        source_text: String,
        got: String,
        want: &'static str,
    },
    #[error("a CEL {0} value has no JSON form")]
    NoJson(&'static str),
    #[error("CEL double {0} has no JSON form")]
    NonFiniteNumber(f64),
}

/// The standard CEL environment, built once and shared: building it per evaluation is slow.
#[derive(Clone)]
pub struct Evaluator {
    env: Arc<Env>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl Default for Evaluator {
    fn default() -> Self {
        Evaluator {
            env: Arc::new(Env::stdlib()),
        }
    }
}

impl Evaluator {
    /// A context over the shared environment with `variables` bound; the values may borrow
    /// (see [`json_to_val`]), and the context lives no longer than they do.
    pub fn context<'a, 'v>(
        &self,
        variables: impl IntoIterator<Item = (&'a str, Box<dyn Val + 'v>)>,
    ) -> Context<'v, 'v> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        for (name, value) in variables {
            context.add_variable_as_val(name, value);
        }
        context
    }
}

/// A compiled CEL expression and the source it came from.
#[derive(Debug)]
pub struct Expression {
    source_text: String,
    program: Program,
}

impl Expression {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let program = Program::compile(source).map_err(|error| ExprError::Compile {
            source_text: source.to_owned(),
            source: error,
        })?;
        Ok(Expression {
            source_text: source.to_owned(),
            program,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source_text
    }

    /// Whether the expression mentions the variable `name` (so callers can skip building it).
    pub fn uses(&self, name: &str) -> bool {
        self.program.references().has_variable(name)
    }

    /// Evaluates the expression in `context`.
    pub fn evaluate(&self, context: &Context<'_, '_>) -> Result<Value, ExprError> {
        self.program
            .execute(context)
            .map_err(|source| ExprError::Execute {
                source_text: self.source_text.clone(),
                source,
            })
    }

    /// Evaluates a predicate: anything but a `bool` is an error.
    pub fn evaluate_bool(&self, context: &Context<'_, '_>) -> Result<bool, ExprError> {
        match self.evaluate(context)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError::Type {
                source_text: self.source_text.clone(),
                got: type_name(&other).to_owned(),
                want: "bool",
            }),
        }
    }

    /// Evaluates to a JSON value.
    pub fn evaluate_json(&self, context: &Context<'_, '_>) -> Result<Json, ExprError> {
        cel_to_json(&self.evaluate(context)?)
    }
}

/// JSON as a CEL variable, integers first as `int` (see the module documentation). Strings
/// and keys are borrowed from `value`: binding a variable copies no text, and it skips the
/// `Value` form, whose maps the interpreter would clone again to bind them.
pub fn json_to_val(value: &Json) -> Box<dyn Val + '_> {
    match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        Json::Object(fields) => Box::new(CelMap::from(
            fields
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// Converts a CEL result to JSON. Map keys become strings; bytes, functions and opaque values
/// have no JSON form.
pub fn cel_to_json(value: &Value) -> Result<Json, ExprError> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or(ExprError::NonFiniteNumber(*f))?,
        Value::String(s) => Json::String(s.as_str().to_owned()),
        Value::List(items) => Json::Array(items.iter().map(cel_to_json).collect::<Result<_, _>>()?),
        Value::Map(map) => {
            let mut object = serde_json::Map::with_capacity(map.map.len());
            for (key, value) in map.map.iter() {
                let key = match key {
                    CelKey::String(s) => s.as_str().to_owned(),
                    CelKey::Int(i) => i.to_string(),
                    CelKey::Uint(u) => u.to_string(),
                    CelKey::Bool(b) => b.to_string(),
                };
                object.insert(key, cel_to_json(value)?);
            }
            Json::Object(object)
        }
        other => return Err(ExprError::NoJson(type_name(other))),
    })
}

/// The CEL name of a value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        _ => "opaque",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `Value` form of JSON, integers first as `int`: what a bound variable must equal.
    fn json_to_cel(value: &Json) -> Value {
        match value {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Json::String(s) => Value::String(Arc::new(s.clone())),
            Json::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
            Json::Object(fields) => {
                let map: HashMap<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), json_to_cel(v)))
                    .collect();
                Value::from(map)
            }
        }
    }

    fn eval(source: &str, state: Json) -> Result<Json, ExprError> {
        let evaluator = Evaluator::default();
        let context = evaluator.context([("state", json_to_val(&state))]);
        Expression::compile(source)?.evaluate_json(&context)
    }

    #[test]
    fn positive_json_integers_multiply_with_literals() {
        assert_eq!(
            eval("state.price * 2", json!({"price": 21})).unwrap(),
            json!(42)
        );
        assert_eq!(
            eval("state.price * 2.0", json!({"price": 1.25})).unwrap(),
            json!(2.5)
        );
    }

    #[test]
    fn json_round_trips_through_cel() {
        let value = json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": "d"}, "big": u64::MAX});
        assert_eq!(cel_to_json(&json_to_cel(&value)).unwrap(), value);
    }

    #[test]
    fn a_borrowed_variable_is_the_value_json_to_cel_makes() {
        let value =
            json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": "d"}, "big": u64::MAX, "e": {}});
        let bound = Value::try_from(json_to_val(&value).as_ref()).unwrap();
        assert_eq!(bound, json_to_cel(&value));
    }

    #[test]
    fn maps_and_strings_are_built_by_expressions() {
        assert_eq!(
            eval(
                "{'name': state.first + ' ' + state.last}",
                json!({"first": "Ada", "last": "L"})
            )
            .unwrap(),
            json!({"name": "Ada L"})
        );
    }

    #[test]
    fn a_missing_field_is_a_runtime_error_not_a_panic() {
        let error = eval("state.nope > 1", json!({})).unwrap_err();
        assert!(matches!(error, ExprError::Execute { .. }), "{error}");
    }

    #[test]
    fn predicates_must_return_bool() {
        let evaluator = Evaluator::default();
        let state = json!({"n": 1});
        let context = evaluator.context([("state", json_to_val(&state))]);
        let error = Expression::compile("state.n")
            .unwrap()
            .evaluate_bool(&context)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "CEL expression \"state.n\" returned int, not bool"
        );
        assert!(
            Expression::compile("state.n == 1")
                .unwrap()
                .evaluate_bool(&context)
                .unwrap()
        );
    }

    #[test]
    fn references_tell_which_variables_an_expression_needs() {
        let expression = Expression::compile("previous.city != state.city").unwrap();
        assert!(expression.uses("previous") && expression.uses("state"));
        assert!(!expression.uses("event"));
    }

    #[test]
    fn syntax_errors_are_compile_errors() {
        assert!(matches!(
            Expression::compile("state.(").unwrap_err(),
            ExprError::Compile { .. }
        ));
    }
}
