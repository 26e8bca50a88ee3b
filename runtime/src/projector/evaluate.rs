//! The filter chain over one event: `where`, `set` and `types` in order. CEL sees `key`,
//! `state`, `previous` (rebuilt from the event's changes) and `event` (the envelope). Pure.

use std::cell::OnceCell;

use cel::common::types::{CelNull, CelString};
use cel::common::value::Val;
use serde_json::Value as Json;

use super::plan::{Assignments, Needs, Plan, Step};
use crate::expr::{Evaluator, ExprError, json_to_val};
use crate::store::Event;
use crate::store::envelope::revert;

/// Runs the filter chain: `Ok(Some(assignments))` when the event passes, `Ok(None)` when a
/// filter drops it, `Err` when an expression fails (a poison event).
pub fn run_filters(
    plan: &Plan,
    evaluator: &Evaluator,
    event: &Event,
) -> Result<Option<Assignments>, ExprError> {
    let mut assignments = Assignments::new();
    // Declared before the context, which borrows from them.
    let derived = OnceCell::new();
    let mut context = None;
    for step in &plan.steps {
        match step {
            Step::Types(types) => {
                if !types.contains(&event.type_) {
                    return Ok(None);
                }
            }
            Step::Where(predicate) => {
                let context = context.get_or_insert_with(|| {
                    let derived = derived.get_or_init(|| Derived::of(plan.needs, event));
                    evaluator.context(variables(plan.needs, event, derived))
                });
                if !predicate.evaluate_bool(context)? {
                    return Ok(None);
                }
            }
            Step::Set(columns) => {
                let context = context.get_or_insert_with(|| {
                    let derived = derived.get_or_init(|| Derived::of(plan.needs, event));
                    evaluator.context(variables(plan.needs, event, derived))
                });
                for (column, expression) in columns {
                    assignments.insert(column.clone(), expression.evaluate_json(context)?);
                }
            }
        }
    }
    Ok(Some(assignments))
}

/// The JSON the variables `previous` and `event` are built from, where an expression uses them.
struct Derived {
    previous: Option<Json>,
    envelope: Option<Json>,
}

impl Derived {
    fn of(needs: Needs, event: &Event) -> Self {
        Derived {
            previous: needs
                .previous
                .then(|| revert(event.state.as_ref(), &event.changes))
                .flatten(),
            envelope: needs
                .event
                .then(|| serde_json::to_value(event).unwrap_or(Json::Null)),
        }
    }
}

/// The CEL variables of `event`, built only where an expression uses them, borrowing the
/// event's JSON rather than copying it.
fn variables<'v>(
    needs: Needs,
    event: &'v Event,
    derived: &'v Derived,
) -> Vec<(&'static str, Box<dyn Val + 'v>)> {
    let null = || -> Box<dyn Val + 'v> { Box::new(CelNull) };
    let mut variables = Vec::with_capacity(4);
    if needs.key {
        variables.push((
            "key",
            Box::new(CelString::from(event.key.as_str())) as Box<dyn Val>,
        ));
    }
    if needs.state {
        variables.push(("state", event.state.as_ref().map_or_else(null, json_to_val)));
    }
    if needs.previous {
        variables.push((
            "previous",
            derived.previous.as_ref().map_or_else(null, json_to_val),
        ));
    }
    if let Some(envelope) = &derived.envelope {
        variables.push(("event", json_to_val(envelope)));
    }
    variables
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::EventType;
    use crate::store::envelope::diff;
    use serde_json::json;

    pub(crate) fn event(
        key: &str,
        version: u64,
        previous: Option<Json>,
        state: Option<Json>,
    ) -> Event {
        let type_ = match (&previous, &state) {
            (None, _) => EventType::Created,
            (_, None) => EventType::Deleted,
            _ => EventType::Updated,
        };
        Event {
            id: uuid::Uuid::now_v7(),
            entity: "customer".into(),
            key: key.into(),
            version,
            type_,
            changes: diff(previous.as_ref(), state.as_ref()),
            state,
            source: None,
            occurred_at: None,
            recorded_at: "2026-01-01T00:00:00Z".into(),
            correlation_id: None,
            erasure: None,
        }
    }

    fn plan(filters: &str) -> Plan {
        let yaml = format!(
            "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: p}}\nspec:\n  entity: customer\n  filters: {filters}\n  sink: {{nats: {{subject: out}}}}\n"
        );
        Plan::new(&serde_yaml::from_str(&yaml).unwrap(), 4).unwrap()
    }

    #[test]
    fn where_drops_events_whose_predicate_is_false() {
        let plan = plan(r#"[{where: "state.age >= 18"}]"#);
        let evaluator = Evaluator::default();
        let adult = event("1", 1, None, Some(json!({"age": 30})));
        let child = event("2", 1, None, Some(json!({"age": 9})));
        assert_eq!(
            run_filters(&plan, &evaluator, &adult).unwrap(),
            Some(Assignments::new())
        );
        assert_eq!(run_filters(&plan, &evaluator, &child).unwrap(), None);
    }

    #[test]
    fn set_assigns_columns_from_key_state_previous_and_event() {
        let plan = plan(
            r#"[{set: {label: "key + ':' + state.name", was: "previous.name", v: "event.version * 10"}}]"#,
        );
        let update = event(
            "c1",
            2,
            Some(json!({"name": "Ada"})),
            Some(json!({"name": "Grace"})),
        );
        let assigned = run_filters(&plan, &Evaluator::default(), &update)
            .unwrap()
            .unwrap();
        assert_eq!(assigned["label"], json!("c1:Grace"));
        assert_eq!(assigned["was"], json!("Ada"));
        assert_eq!(assigned["v"], json!(20));
    }

    #[test]
    fn types_pass_only_the_listed_event_types() {
        let plan = plan("[{types: [created, deleted]}]");
        let evaluator = Evaluator::default();
        let created = event("1", 1, None, Some(json!({})));
        let updated = event("1", 2, Some(json!({})), Some(json!({"a": 1})));
        let deleted = event("1", 3, Some(json!({"a": 1})), None);
        assert!(run_filters(&plan, &evaluator, &created).unwrap().is_some());
        assert!(run_filters(&plan, &evaluator, &updated).unwrap().is_none());
        assert!(run_filters(&plan, &evaluator, &deleted).unwrap().is_some());
    }

    #[test]
    fn filters_run_in_order_and_stop_at_the_first_drop() {
        // The second filter would fail on a state without `n`; the first drops those first.
        let plan = plan(r#"[{where: "has(state.n)"}, {where: "state.n > 1"}]"#);
        let evaluator = Evaluator::default();
        assert_eq!(
            run_filters(&plan, &evaluator, &event("1", 1, None, Some(json!({})))).unwrap(),
            None
        );
        assert!(
            run_filters(
                &plan,
                &evaluator,
                &event("1", 1, None, Some(json!({"n": 2})))
            )
            .unwrap()
            .is_some()
        );
    }

    #[test]
    fn a_cel_runtime_error_is_reported_not_raised() {
        let plan = plan(r#"[{where: "state.n / 0 > 1"}]"#);
        let poison = event("1", 1, None, Some(json!({"n": 2})));
        assert!(run_filters(&plan, &Evaluator::default(), &poison).is_err());
    }

    #[test]
    fn previous_is_null_for_a_created_event_and_state_is_null_once_deleted() {
        let plan = plan(r#"[{set: {p: "previous", s: "state"}}]"#);
        let evaluator = Evaluator::default();
        let created = run_filters(
            &plan,
            &evaluator,
            &event("1", 1, None, Some(json!({"a": 1}))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (created["p"].clone(), created["s"].clone()),
            (Json::Null, json!({"a": 1}))
        );
        let deleted = run_filters(
            &plan,
            &evaluator,
            &event("1", 2, Some(json!({"a": 1})), None),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (deleted["p"].clone(), deleted["s"].clone()),
            (json!({"a": 1}), Json::Null)
        );
    }
}
