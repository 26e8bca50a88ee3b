//! What events do to a Postgres view, computed without a database: the effect of one event,
//! the net changes of a batch in each mode, and the deltas that keep aggregates incremental.
//!
//! Values travel to Postgres as text and are cast to the column's declared type there, so one
//! statement shape serves every column type and a value the column rejects fails in Postgres
//! (a poison event), never in a Rust conversion that would disagree with it.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::evaluate::run_filters;
use super::plan::{AggregatePlan, Assignments, Plan, PostgresPlan};
use crate::expr::{Evaluator, ExprError};
use crate::store::{Event, EventType};
use crds::projection::ViewMode;

/// Why an event cannot be projected: it goes to the dead letters (or per `onError`).
#[derive(Debug, thiserror::Error)]
pub enum Poison {
    #[error("the payload is not a DreamPipe event")]
    NotAnEvent(#[source] serde_json::Error),
    #[error("a filter failed")]
    Filter(#[source] ExprError),
    #[error("column {column:?} is summed but holds {value}, which is not a number")]
    NotANumber { column: String, value: Json },
    #[error("the database rejected the row (SQLSTATE {code})")]
    Rejected {
        code: String,
        #[source]
        source: sqlx::Error,
    },
}

impl Poison {
    /// A short, stable name of the kind of poison: the `reason` label of dead-letter metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Poison::NotAnEvent(_) => "not_an_event",
            Poison::Filter(_) => "filter",
            Poison::NotANumber { .. } => "not_a_number",
            Poison::Rejected { .. } => "sink_rejected",
        }
    }

    /// The reason recorded with a dead letter: the error and its sources.
    pub fn reason(&self) -> String {
        let mut reason = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            reason.push_str(": ");
            reason.push_str(&error.to_string());
            source = error.source();
        }
        reason
    }
}

/// What one event does to a Postgres view.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// `latest`: the key's row now holds these values; `history`: a row with these values;
    /// `aggregate`: the key now contributes these values.
    Row(Vec<Json>),
    /// `latest` and `aggregate`: the key has no row (deleted, or its state stopped matching).
    Remove,
    /// `history`: the event was filtered out.
    Nothing,
    /// An erasure's tombstone: everything that came from the key before it goes (the latest
    /// row, every history row, the aggregate contribution and membership), whatever the filters
    /// say (ADR 75).
    Erase,
}

/// An event's place in the stream and its effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Projected {
    pub sequence: u64,
    pub key: String,
    pub version: u64,
    pub type_: EventType,
    pub effect: Effect,
}

/// The effect of `event` on the view of `plan`. Views are defined on states: in `latest` and
/// `aggregate` a deleted key leaves, whatever the filters say.
pub fn effect(
    plan: &Plan,
    view: &PostgresPlan,
    evaluator: &Evaluator,
    event: &Event,
) -> Result<Effect, Poison> {
    if event.is_tombstone() {
        return Ok(Effect::Erase);
    }
    if view.mode != ViewMode::History && event.type_ == EventType::Deleted {
        return Ok(Effect::Remove);
    }
    match run_filters(plan, evaluator, event).map_err(Poison::Filter)? {
        Some(assigned) => {
            let values = column_values(view, event.state.as_ref(), &assigned);
            if view.mode == ViewMode::Aggregate {
                // Checked here so that a bad value is a poison event, not a failed batch.
                contribution(view, &values)?;
            }
            Ok(Effect::Row(values))
        }
        None if view.mode == ViewMode::History => Ok(Effect::Nothing),
        None => Ok(Effect::Remove),
    }
}

/// Each column's value: a `set` filter's assignment, else the state's field of that name.
pub fn column_values(
    view: &PostgresPlan,
    state: Option<&Json>,
    assigned: &Assignments,
) -> Vec<Json> {
    view.columns
        .iter()
        .map(|column| {
            assigned
                .get(&column.name)
                .or_else(|| state.and_then(|s| s.get(&column.name)))
                .cloned()
                .unwrap_or(Json::Null)
        })
        .collect()
}

/// The text Postgres casts to the column's type; JSON null is SQL NULL.
pub fn sql_text(value: &Json, jsonb: bool) -> Option<String> {
    match value {
        Json::Null => None,
        _ if jsonb => Some(value.to_string()),
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        Json::Array(_) | Json::Object(_) => Some(value.to_string()),
    }
}

/// Rows of a batch in `latest` mode: each key's last effect wins.
#[derive(Debug, Default, PartialEq)]
pub struct LatestChanges {
    pub keys: Vec<String>,
    pub versions: Vec<i64>,
    pub sequences: Vec<i64>,
    /// Column-major: `columns[c][row]`.
    pub columns: Vec<Vec<Option<String>>>,
    pub deletes: Vec<String>,
}

/// Net changes of `projected` (in stream order) on a `latest` view.
pub fn latest_changes<'a>(
    view: &PostgresPlan,
    projected: impl IntoIterator<Item = &'a Projected>,
) -> LatestChanges {
    let mut last: HashMap<&str, &Projected> = HashMap::new();
    let mut order = Vec::new();
    for item in projected {
        if last.insert(item.key.as_str(), item).is_none() {
            order.push(item.key.as_str());
        }
    }
    let mut changes = LatestChanges {
        columns: vec![Vec::new(); view.columns.len()],
        ..LatestChanges::default()
    };
    for key in order {
        let item = last[key];
        match &item.effect {
            Effect::Row(values) => {
                changes.keys.push(item.key.clone());
                changes.versions.push(item.version as i64);
                changes.sequences.push(item.sequence as i64);
                for ((column, plan), value) in
                    changes.columns.iter_mut().zip(&view.columns).zip(values)
                {
                    column.push(sql_text(value, plan.jsonb));
                }
            }
            Effect::Remove | Effect::Nothing | Effect::Erase => {
                changes.deletes.push(item.key.clone())
            }
        }
    }
    changes
}

/// Rows of a batch in `history` mode: one per passing event.
#[derive(Debug, Default, PartialEq)]
pub struct HistoryRows {
    pub sequences: Vec<i64>,
    pub keys: Vec<String>,
    pub versions: Vec<i64>,
    pub types: Vec<String>,
    pub columns: Vec<Vec<Option<String>>>,
}

/// The rows `projected` adds to a `history` view.
pub fn history_rows<'a>(
    view: &PostgresPlan,
    projected: impl IntoIterator<Item = &'a Projected>,
) -> HistoryRows {
    let mut rows = HistoryRows {
        columns: vec![Vec::new(); view.columns.len()],
        ..HistoryRows::default()
    };
    for item in projected {
        if let Effect::Row(values) = &item.effect {
            rows.sequences.push(item.sequence as i64);
            rows.keys.push(item.key.clone());
            rows.versions.push(item.version as i64);
            rows.types.push(type_name(item.type_).to_owned());
            for ((column, plan), value) in rows.columns.iter_mut().zip(&view.columns).zip(values) {
                column.push(sql_text(value, plan.jsonb));
            }
        }
    }
    rows
}

/// The tombstones of a batch: each erased key with its tombstone's sequence, before which
/// nothing of the key may stay (history rows, dead letters).
#[derive(Debug, Default, PartialEq)]
pub struct Erasures {
    pub keys: Vec<String>,
    pub sequences: Vec<i64>,
}

impl Erasures {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn push(&mut self, key: &str, sequence: u64) {
        self.keys.push(key.to_owned());
        self.sequences.push(sequence as i64);
    }
}

/// The erasures among `projected`.
pub fn erasures<'a>(projected: impl IntoIterator<Item = &'a Projected>) -> Erasures {
    let mut erasures = Erasures::default();
    for item in projected {
        if item.effect == Effect::Erase {
            erasures.push(&item.key, item.sequence);
        }
    }
    erasures
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Created => "created",
        EventType::Updated => "updated",
        EventType::Deleted => "deleted",
    }
}

/// What one key adds to an aggregate view: its group and the values it sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contribution {
    /// JSON array of the group columns' texts: the group's identity.
    pub group: String,
    /// One numeric literal per `sum` aggregate, in aggregate order (null counts as 0).
    pub sums: Vec<String>,
}

/// The contribution of a key whose columns hold `values`.
pub fn contribution(view: &PostgresPlan, values: &[Json]) -> Result<Contribution, Poison> {
    let group: Vec<Option<String>> = view
        .group_by
        .iter()
        .map(|&i| sql_text(&values[i], view.columns[i].jsonb))
        .collect();
    let mut sums = Vec::new();
    for aggregate in &view.aggregates {
        if let AggregatePlan::Sum { of, .. } = aggregate {
            sums.push(
                numeric_literal(&values[*of]).ok_or_else(|| Poison::NotANumber {
                    column: view.columns[*of].name.clone(),
                    value: values[*of].clone(),
                })?,
            );
        }
    }
    Ok(Contribution {
        group: serde_json::to_string(&group).expect("strings always serialise"),
        sums,
    })
}

/// A JSON number (or a string holding one) as a Postgres numeric literal; null is 0.
fn numeric_literal(value: &Json) -> Option<String> {
    match value {
        Json::Null => Some("0".to_owned()),
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => serde_json::from_str::<serde_json::Number>(s.trim())
            .ok()
            .map(|n| n.to_string()),
        _ => None,
    }
}

fn negate(literal: &str) -> String {
    match literal.strip_prefix('-') {
        Some(positive) => positive.to_owned(),
        None => format!("-{literal}"),
    }
}

/// Net changes of a batch on an aggregate view: the members (each key's contribution) to
/// write or remove, and the signed deltas per group (retract old, add new).
#[derive(Debug, Default, PartialEq)]
pub struct AggregateChanges {
    pub member_keys: Vec<String>,
    pub member_groups: Vec<String>,
    /// JSON arrays of the sums' literals.
    pub member_sums: Vec<String>,
    pub member_deletes: Vec<String>,
    pub delta_groups: Vec<String>,
    pub delta_counts: Vec<i64>,
    /// Column-major: `delta_sums[aggregate][delta]`.
    pub delta_sums: Vec<Vec<String>>,
}

impl AggregateChanges {
    fn delta(&mut self, contribution: &Contribution, sign: i64) {
        self.delta_groups.push(contribution.group.clone());
        self.delta_counts.push(sign);
        for (column, literal) in self.delta_sums.iter_mut().zip(&contribution.sums) {
            column.push(if sign < 0 {
                negate(literal)
            } else {
                literal.clone()
            });
        }
    }
}

/// The keys of a batch whose contribution may change, for reading their old contributions.
pub fn touched_keys<'a>(projected: impl IntoIterator<Item = &'a Projected>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    projected
        .into_iter()
        .filter(|p| seen.insert(p.key.as_str()))
        .map(|p| p.key.clone())
        .collect()
}

/// Net changes of `projected` (in stream order) given each touched key's stored contribution.
pub fn aggregate_changes<'a>(
    view: &PostgresPlan,
    old: &HashMap<String, Contribution>,
    projected: impl IntoIterator<Item = &'a Projected>,
) -> Result<AggregateChanges, Poison> {
    let mut last: HashMap<&str, &Projected> = HashMap::new();
    let mut order = Vec::new();
    for item in projected {
        if last.insert(item.key.as_str(), item).is_none() {
            order.push(item.key.as_str());
        }
    }
    let sums = view
        .aggregates
        .iter()
        .filter(|a| matches!(a, AggregatePlan::Sum { .. }))
        .count();
    let mut changes = AggregateChanges {
        delta_sums: vec![Vec::new(); sums],
        ..AggregateChanges::default()
    };
    for key in order {
        let new = match &last[key].effect {
            Effect::Row(values) => Some(contribution(view, values)?),
            Effect::Remove | Effect::Nothing | Effect::Erase => None,
        };
        let before = old.get(key);
        if before == new.as_ref() {
            continue;
        }
        if let Some(before) = before {
            changes.delta(before, -1);
        }
        match new {
            Some(new) => {
                changes.delta(&new, 1);
                changes.member_keys.push(key.to_owned());
                changes.member_groups.push(new.group);
                changes
                    .member_sums
                    .push(serde_json::to_string(&new.sums).expect("strings always serialise"));
            }
            None => changes.member_deletes.push(key.to_owned()),
        }
    }
    Ok(changes)
}

/// Reads a stored member back (`dp_group`, `dp_sums` as written by [`aggregate_changes`]).
pub fn stored_contribution(group: String, sums: &str) -> Contribution {
    Contribution {
        group,
        sums: serde_json::from_str(sums).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::evaluate::tests::event;
    use crate::projector::plan::Plan;
    use serde_json::json;

    fn plan(mode: &str, filters: &str, extra: &str) -> Plan {
        let yaml = format!(
            "apiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: p}}\nspec:\n  entity: customer\n  filters: {filters}\n  sink:\n    postgres:\n      view: v\n      mode: {mode}\n      columns: [{{name: city, type: text}}, {{name: spend, type: numeric}}, {{name: tags, type: jsonb}}]\n{extra}"
        );
        Plan::new(&serde_yaml::from_str(&yaml).unwrap(), 4).unwrap()
    }

    fn project(plan: &Plan, events: &[Event]) -> Vec<Projected> {
        let view = plan.postgres().unwrap();
        let evaluator = Evaluator::default();
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Projected {
                sequence: i as u64 + 1,
                key: e.key.clone(),
                version: e.version,
                type_: e.type_,
                effect: effect(plan, view, &evaluator, e).unwrap(),
            })
            .collect()
    }

    #[test]
    fn columns_come_from_set_filters_else_from_the_state_field_of_the_same_name() {
        let plan = plan("latest", r#"[{set: {city: "state.address.city"}}]"#, "");
        let e = event(
            "1",
            1,
            None,
            Some(json!({"address": {"city": "Lyon"}, "spend": 12.5, "tags": ["a"]})),
        );
        let projected = project(&plan, &[e]);
        assert_eq!(
            projected[0].effect,
            Effect::Row(vec![json!("Lyon"), json!(12.5), json!(["a"])])
        );
        let changes = latest_changes(plan.postgres().unwrap(), &projected);
        assert_eq!(
            changes.columns,
            vec![
                vec![Some("Lyon".to_owned())],
                vec![Some("12.5".to_owned())],
                vec![Some(r#"["a"]"#.to_owned())]
            ]
        );
    }

    #[test]
    fn latest_keeps_a_row_exactly_while_the_current_state_passes() {
        let plan = plan("latest", r#"[{where: "state.city == 'Lyon'"}]"#, "");
        let lyon = json!({"city": "Lyon"});
        let oslo = json!({"city": "Oslo"});
        let events = [
            event("a", 1, None, Some(lyon.clone())),
            event("b", 1, None, Some(lyon.clone())),
            event("a", 2, Some(lyon.clone()), Some(oslo.clone())), // a stops matching
            event("c", 1, None, Some(oslo.clone())),
            event("c", 2, Some(oslo), Some(lyon.clone())), // c starts matching
            event("b", 2, Some(lyon), None),               // b is deleted
        ];
        let changes = latest_changes(plan.postgres().unwrap(), &project(&plan, &events));
        assert_eq!(changes.keys, ["c"]);
        assert_eq!(changes.versions, [2]);
        assert_eq!(changes.sequences, [5]);
        assert_eq!(changes.deletes, ["a", "b"]);
    }

    #[test]
    fn history_keeps_one_row_per_passing_event_including_deletions() {
        let plan = plan("history", "[{types: [created, deleted]}]", "");
        let events = [
            event("a", 1, None, Some(json!({"city": "Lyon"}))),
            event(
                "a",
                2,
                Some(json!({"city": "Lyon"})),
                Some(json!({"city": "Oslo"})),
            ),
            event("a", 3, Some(json!({"city": "Oslo"})), None),
        ];
        let rows = history_rows(plan.postgres().unwrap(), &project(&plan, &events));
        assert_eq!(rows.sequences, [1, 3]);
        assert_eq!(rows.types, ["created", "deleted"]);
        assert_eq!(rows.columns[0], [Some("Lyon".to_owned()), None]);
    }

    fn aggregate_plan() -> Plan {
        plan(
            "aggregate",
            r#"[{where: "state.active"}]"#,
            "      groupBy: [city]\n      aggregates: [{name: customers, function: count}, {name: total, function: sum, of: spend}]\n",
        )
    }

    #[test]
    fn aggregates_retract_the_previous_contribution_and_add_the_new_one() {
        let plan = aggregate_plan();
        let view = plan.postgres().unwrap();
        let before = json!({"active": true, "city": "Lyon", "spend": 10});
        let after = json!({"active": true, "city": "Oslo", "spend": 2.5});
        let projected = project(&plan, &[event("a", 2, Some(before.clone()), Some(after))]);
        let old = HashMap::from([(
            "a".to_owned(),
            contribution(view, &[json!("Lyon"), json!(10), Json::Null]).unwrap(),
        )]);
        let changes = aggregate_changes(view, &old, &projected).unwrap();
        assert_eq!(changes.delta_groups, [r#"["Lyon"]"#, r#"["Oslo"]"#]);
        assert_eq!(changes.delta_counts, [-1, 1]);
        assert_eq!(changes.delta_sums, [["-10", "2.5"]]);
        assert_eq!(changes.member_keys, ["a"]);
        assert_eq!(changes.member_sums, [r#"["2.5"]"#]);
    }

    #[test]
    fn a_key_that_stops_matching_only_retracts_and_an_unchanged_contribution_writes_nothing() {
        let plan = aggregate_plan();
        let view = plan.postgres().unwrap();
        let old = HashMap::from([(
            "a".to_owned(),
            contribution(view, &[json!("Lyon"), json!(-3), Json::Null]).unwrap(),
        )]);
        let state = json!({"active": true, "city": "Lyon", "spend": -3});
        let inactive = json!({"active": false, "city": "Lyon", "spend": -3});
        let same = project(
            &plan,
            &[event("a", 2, Some(state.clone()), Some(state.clone()))],
        );
        assert_eq!(
            aggregate_changes(view, &old, &same).unwrap(),
            AggregateChanges {
                delta_sums: vec![vec![]],
                ..Default::default()
            }
        );
        let leaving = project(&plan, &[event("a", 3, Some(state), Some(inactive))]);
        let changes = aggregate_changes(view, &old, &leaving).unwrap();
        assert_eq!(changes.delta_counts, [-1]);
        assert_eq!(changes.delta_sums, [["3"]]);
        assert_eq!(changes.member_deletes, ["a"]);
    }

    fn tombstone(key: &str, version: u64) -> Event {
        Event {
            type_: EventType::Deleted,
            erasure: Some(crate::store::Erasure {
                requested_by: "dpo".into(),
                reason: "ticket".into(),
            }),
            ..event(key, version, None, None)
        }
    }

    #[test]
    fn a_tombstone_erases_whatever_the_filters_say_and_a_new_life_after_it_stays() {
        let lyon = json!({"city": "Lyon", "active": true, "spend": 4});
        let latest = plan("latest", r#"[{where: "state.city == 'Oslo'"}]"#, "");
        let history = plan("history", "[{types: [created]}]", "");
        let events = [
            event("a", 1, None, Some(lyon.clone())),
            tombstone("a", 2),
            event("b", 1, None, Some(lyon.clone())),
            tombstone("b", 2),
            event("b", 3, None, Some(json!({"city": "Oslo", "active": true}))),
        ];
        for plan in [&latest, &history, &aggregate_plan()] {
            let projected = project(plan, &events);
            assert_eq!(projected[1].effect, Effect::Erase);
            assert_eq!(
                erasures(&projected),
                Erasures {
                    keys: vec!["a".into(), "b".into()],
                    sequences: vec![2, 4],
                }
            );
        }
        let changes = latest_changes(latest.postgres().unwrap(), &project(&latest, &events));
        assert_eq!(
            (changes.keys, changes.deletes),
            (vec!["b".to_owned()], vec!["a".to_owned()])
        );
        // History rows before a tombstone are deleted by the commit; the new life's row stays.
        let rows = history_rows(history.postgres().unwrap(), &project(&history, &events));
        assert_eq!(rows.sequences, [1, 3, 5]);
    }

    #[test]
    fn a_tombstone_retracts_the_aggregate_contribution_stored_for_the_key() {
        let plan = aggregate_plan();
        let view = plan.postgres().unwrap();
        let old = HashMap::from([(
            "a".to_owned(),
            contribution(view, &[json!("Lyon"), json!(7), Json::Null]).unwrap(),
        )]);
        let changes = aggregate_changes(view, &old, &project(&plan, &[tombstone("a", 4)])).unwrap();
        assert_eq!(changes.delta_counts, [-1]);
        assert_eq!(changes.delta_sums, [["-7"]]);
        assert_eq!(changes.member_deletes, ["a"]);
    }

    #[test]
    fn summing_a_value_that_is_not_a_number_is_a_poison_event() {
        let plan = aggregate_plan();
        let view = plan.postgres().unwrap();
        let e = event(
            "a",
            1,
            None,
            Some(json!({"active": true, "city": "Lyon", "spend": "lots"})),
        );
        let error = effect(&plan, view, &Evaluator::default(), &e).unwrap_err();
        assert_eq!(
            error.reason(),
            "column \"spend\" is summed but holds \"lots\", which is not a number"
        );
        let numeric_text = event(
            "b",
            1,
            None,
            Some(json!({"active": true, "city": "Lyon", "spend": "1e3"})),
        );
        assert!(effect(&plan, view, &Evaluator::default(), &numeric_text).is_ok());
    }

    #[test]
    fn sql_text_binds_json_as_postgres_casts_expect() {
        assert_eq!(sql_text(&json!("x"), false), Some("x".into()));
        assert_eq!(sql_text(&json!("x"), true), Some(r#""x""#.into()));
        assert_eq!(sql_text(&json!(1.5), false), Some("1.5".into()));
        assert_eq!(sql_text(&json!(true), false), Some("true".into()));
        assert_eq!(sql_text(&Json::Null, true), None);
        assert_eq!(sql_text(&json!({"a": 1}), false), Some(r#"{"a":1}"#.into()));
    }
}
