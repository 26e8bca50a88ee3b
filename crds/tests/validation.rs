//! Each validation rule, fed YAML a user could write, checked by the path it reports.

use crds::adapter::validate_adapter;
use crds::entity::validate_entity;
use crds::projection::validate_projection;
use crds::{Adapter, Entity, Invalid, Projection};

const ENTITY: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Entity
metadata: {name: customer}
spec:
  key: /id
  partitions: 8
  ignore: [/lastSyncedAt]
  schema:
    type: object
    required: [id, name]
    properties:
      id: {type: string}
      name: {type: string}
      city: {type: string}
      lastSyncedAt: {type: string}
"#;

const ADAPTER: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {name: salesforce-customers}
spec:
  entity: customer
  source:
    http:
      url: http://crm:8080/query
      records: /records
      nextPage: {urlField: /nextRecordsUrl}
      incremental: {field: /LastModifiedDate, param: modifiedSince}
  mapping:
    id: record.Id
    name: record.Name
  deleteWhen: record.IsDeleted == true
  interval: 30s
"#;

const PROJECTION: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Projection
metadata: {name: customers-by-city}
spec:
  entity: customer
  filters:
    - where: state.city != ""
    - set: {city: state.city.lowerAscii()}
    - types: [created, updated]
  sink:
    postgres:
      view: customers_by_city
      mode: aggregate
      columns:
        - {name: city, type: text}
        - {name: revenue, type: "numeric(12,2)"}
      groupBy: [city]
      aggregates:
        - {name: customers, function: count}
        - {name: total_revenue, function: sum, of: revenue}
"#;

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

/// Applies `edit` to the base YAML (as a JSON value) and returns the resource.
fn edited<T: serde::de::DeserializeOwned>(
    base: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> T {
    let mut value: serde_json::Value = serde_yaml::from_str(base).expect("test YAML parses");
    edit(&mut value);
    serde_json::from_value(value).expect("edited resource still deserialises")
}

fn paths(result: Result<(), Invalid>) -> Vec<(String, String)> {
    match result {
        Ok(()) => Vec::new(),
        Err(invalid) => invalid
            .problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect(),
    }
}

/// Asserts that exactly one problem is reported, at `path`, with a message containing `words`.
#[track_caller]
fn assert_single(result: Result<(), Invalid>, path: &str, words: &str) {
    let problems = paths(result);
    assert_eq!(
        problems.len(),
        1,
        "expected one problem at {path}, got {problems:#?}"
    );
    assert_eq!(problems[0].0, path, "{problems:#?}");
    assert!(
        problems[0].1.contains(words),
        "message {:?} should mention {words:?}",
        problems[0].1
    );
}

#[test]
fn the_example_resources_are_valid() {
    assert_eq!(validate_entity(&parse::<Entity>(ENTITY)), Ok(()));
    assert_eq!(validate_adapter(&parse::<Adapter>(ADAPTER)), Ok(()));
    assert_eq!(
        validate_projection(&parse::<Projection>(PROJECTION)),
        Ok(())
    );
}

#[test]
fn entity_key_not_defined_by_the_schema_is_reported() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["key"] = "/customerId".into());
    assert_single(
        validate_entity(&entity),
        "spec.key",
        "/customerId is not defined",
    );
}

#[test]
fn entity_key_must_be_required_by_the_schema() {
    let entity: Entity = edited(ENTITY, |v| {
        v["spec"]["schema"]["required"] = serde_json::json!(["name"])
    });
    assert_single(validate_entity(&entity), "spec.key", "required");
}

#[test]
fn entity_key_must_be_a_string_or_integer() {
    let entity: Entity = edited(ENTITY, |v| {
        v["spec"]["schema"]["properties"]["id"] = serde_json::json!({"type": "object"})
    });
    assert_single(validate_entity(&entity), "spec.key", "string or integer");
}

#[test]
fn entity_key_must_be_a_json_pointer() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["key"] = "id".into());
    assert_single(validate_entity(&entity), "spec.key", "must start with '/'");
}

#[test]
fn entity_schema_that_is_not_a_json_schema_is_reported() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["schema"]["required"] = "id".into());
    let problems = paths(validate_entity(&entity));
    assert!(
        problems
            .iter()
            .any(|(p, m)| p == "spec.schema" && m.contains("not a valid JSON Schema")),
        "{problems:#?}"
    );
}

#[test]
fn entity_schema_must_describe_an_object() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["schema"]["type"] = "array".into());
    assert_single(
        validate_entity(&entity),
        "spec.schema.type",
        "must be \"object\"",
    );
}

#[test]
fn entity_ignore_pointer_unknown_to_the_schema_is_reported() {
    let entity: Entity = edited(ENTITY, |v| {
        v["spec"]["ignore"] = serde_json::json!(["/lastSyncedAt", "/syncedAt"])
    });
    assert_single(
        validate_entity(&entity),
        "spec.ignore[1]",
        "/syncedAt is not defined",
    );
}

#[test]
fn entity_cannot_ignore_its_key() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["ignore"] = serde_json::json!(["/id"]));
    assert_single(
        validate_entity(&entity),
        "spec.ignore[0]",
        "key cannot be ignored",
    );
}

#[test]
fn entity_partitions_out_of_range_are_reported() {
    let entity: Entity = edited(ENTITY, |v| v["spec"]["partitions"] = 0.into());
    assert_single(
        validate_entity(&entity),
        "spec.partitions",
        "between 1 and 1024",
    );
}

#[test]
fn entity_durations_must_parse() {
    let entity: Entity = edited(ENTITY, |v| {
        v["spec"]["stream"] = serde_json::json!({"maxAge": "a year"})
    });
    assert_single(
        validate_entity(&entity),
        "spec.stream.maxAge",
        "not a duration",
    );
}

#[test]
fn entity_name_must_fit_in_a_subject() {
    let entity: Entity = edited(ENTITY, |v| v["metadata"]["name"] = "customer.eu".into());
    assert_single(validate_entity(&entity), "metadata.name", "DNS label");
}

#[test]
fn every_problem_is_reported_at_once() {
    let entity: Entity = edited(ENTITY, |v| {
        v["metadata"]["name"] = "Customer".into();
        v["spec"]["key"] = "/nope".into();
        v["spec"]["partitions"] = 5000.into();
    });
    let found: Vec<String> = paths(validate_entity(&entity))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(found, ["metadata.name", "spec.key", "spec.partitions"]);
}

#[test]
fn adapter_mapping_cel_that_does_not_compile_is_reported() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["mapping"]["name"] = "record.Name +".into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.mapping.name",
        "CEL does not compile",
    );
}

#[test]
fn adapter_delete_when_cel_is_checked() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["deleteWhen"] = "record.IsDeleted ==".into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.deleteWhen",
        "CEL does not compile",
    );
}

#[test]
fn adapter_mapping_output_must_be_a_field_name() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["mapping"]["full name"] = "record.Name".into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.mapping.full name",
        "not a field name",
    );
}

#[test]
fn adapter_needs_exactly_one_source() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"]["generator"] = serde_json::json!({"rate": 10})
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source",
        "exactly one source",
    );
    let adapter: Adapter = edited(ADAPTER, |v| v["spec"]["source"] = serde_json::json!({}));
    assert_single(validate_adapter(&adapter), "spec.source", "set one of");
}

#[test]
fn adapter_http_url_must_be_http() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"]["http"]["url"] = "ftp://crm/query".into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.http.url",
        "http:// or https://",
    );
}

#[test]
fn adapter_delete_missing_needs_a_resync() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"]["http"]["deleteMissing"] = true.into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.http.deleteMissing",
        "resyncInterval",
    );
}

#[test]
fn adapter_cursor_paging_needs_a_parameter() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"]["http"]["nextPage"] = serde_json::json!({"cursorField": "/next"})
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.http.nextPage.cursorParam",
        "required",
    );
}

#[test]
fn adapter_nats_subject_must_be_well_formed() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"] = serde_json::json!({"nats": {"subject": "crm..customers"}})
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.nats.subject",
        "not a NATS subject",
    );
}

#[test]
fn adapter_jetstream_names_and_durations_are_checked_by_path() {
    let adapter: Adapter =
        edited(
            ADAPTER,
            |v| {
                v["spec"]["source"] =
                    serde_json::json!({"jetstream": {"stream": "ORDERS", "consumer": "feed"}})
            },
        );
    validate_adapter(&adapter).unwrap();
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"] = serde_json::json!({"jetstream": {"stream": "orders.v1",
            "consumer": "a b", "filterSubject": "orders..x", "ackWait": "soon"}})
    });
    let problems = validate_adapter(&adapter).unwrap_err().problems;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.source.jetstream.stream",
            "spec.source.jetstream.consumer",
            "spec.source.jetstream.filterSubject",
            "spec.source.jetstream.ackWait"
        ],
        "{problems:?}"
    );
}

#[test]
fn adapter_entity_reference_must_be_a_name() {
    let adapter: Adapter = edited(ADAPTER, |v| v["spec"]["entity"] = "Customer!".into());
    assert_single(
        validate_adapter(&adapter),
        "spec.entity",
        "not a valid resource name",
    );
}

#[test]
fn adapter_interval_must_be_a_duration() {
    let adapter: Adapter = edited(ADAPTER, |v| v["spec"]["interval"] = "often".into());
    assert_single(
        validate_adapter(&adapter),
        "spec.interval",
        "not a duration",
    );
}

#[test]
fn projection_where_cel_that_does_not_compile_is_reported() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][0]["where"] = "state.city ==".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.filters[0].where",
        "CEL does not compile",
    );
}

#[test]
fn projection_set_cel_that_does_not_compile_is_reported() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][1]["set"]["city"] = "((".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.filters[1].set.city",
        "CEL does not compile",
    );
}

#[test]
fn projection_set_of_an_undeclared_column_is_reported() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][1]["set"] = serde_json::json!({"town": "state.city"})
    });
    assert_single(
        validate_projection(&projection),
        "spec.filters[1].set.town",
        "not a column",
    );
}

#[test]
fn projection_filter_sets_exactly_one_step() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][2]["where"] = "true".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.filters[2]",
        "exactly one of where, set or types",
    );
}

#[test]
fn projection_filter_types_are_listed_once() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][2]["types"] = serde_json::json!(["created", "created"])
    });
    assert_single(
        validate_projection(&projection),
        "spec.filters[2].types",
        "twice",
    );
}

#[test]
fn projection_view_must_be_a_sql_identifier() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["view"] = "Customers; drop table x".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.view",
        "not a valid SQL identifier",
    );
}

#[test]
fn projection_column_names_must_be_sql_identifiers() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][1]["name"] = "Revenue".into()
    });
    let problems = paths(validate_projection(&projection));
    assert!(
        problems
            .iter()
            .any(|(p, m)| p == "spec.sink.postgres.columns[1].name"
                && m.contains("not a valid SQL identifier")),
        "{problems:#?}"
    );
}

#[test]
fn projection_column_with_an_unknown_sql_type_is_reported() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][0]["type"] = "string".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.columns[0].type",
        "unknown SQL type \"string\"",
    );
}

#[test]
fn projection_parameterised_sql_types_are_accepted() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][0]["type"] = "varchar(80)".into()
    });
    assert_eq!(validate_projection(&projection), Ok(()));
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][0]["type"] = "varchar(80); drop".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.columns[0].type",
        "unknown SQL type",
    );
}

#[test]
fn projection_columns_are_declared_once() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][1]["name"] = "city".into()
    });
    let problems = paths(validate_projection(&projection));
    assert!(problems.iter().any(|(p, m)| p == "spec.sink.postgres.columns[1].name" && m.contains("declared twice")), "{problems:#?}");
}

#[test]
fn projection_reserved_column_prefix_is_rejected() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["columns"][0]["name"] = "dp_key".into()
    });
    let problems = paths(validate_projection(&projection));
    assert!(
        problems
            .iter()
            .any(|(p, m)| p == "spec.sink.postgres.columns[0].name" && m.contains("reserved")),
        "{problems:#?}"
    );
}

#[test]
fn projection_group_by_must_name_a_declared_column() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["groupBy"] = serde_json::json!(["country"])
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.groupBy[0]",
        "not a declared column",
    );
}

#[test]
fn projection_sum_needs_a_numeric_column() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["aggregates"][1]["of"] = "city".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.aggregates[1].of",
        "not a numeric column",
    );
}

#[test]
fn projection_count_takes_no_column() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["aggregates"][0]["of"] = "revenue".into()
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.postgres.aggregates[0].of",
        "takes no column",
    );
}

#[test]
fn projection_group_by_belongs_to_aggregate_mode() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["postgres"]["mode"] = "latest".into()
    });
    let found: Vec<String> = paths(validate_projection(&projection))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        found,
        [
            "spec.sink.postgres.groupBy",
            "spec.sink.postgres.aggregates"
        ]
    );
}

#[test]
fn projection_needs_exactly_one_sink() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["sink"]["nats"] = serde_json::json!({"subject": "out.customers"})
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink",
        "exactly one of postgres or nats",
    );
}

#[test]
fn projection_nats_subject_has_no_wildcards() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"] = serde_json::json!([]);
        v["spec"]["sink"] = serde_json::json!({"nats": {"subject": "out.*"}});
    });
    assert_single(
        validate_projection(&projection),
        "spec.sink.nats.subject",
        "without wildcards",
    );
}

#[test]
fn problems_render_with_their_paths_in_one_message() {
    let projection: Projection = edited(PROJECTION, |v| {
        v["spec"]["filters"][0]["where"] = "((".into();
        v["spec"]["sink"]["postgres"]["view"] = "Bad View".into();
    });
    let message = validate_projection(&projection).unwrap_err().to_string();
    assert!(
        message.starts_with("Projection/customers-by-city invalid: "),
        "{message}"
    );
    assert!(
        message.contains("spec.filters[0].where: CEL does not compile"),
        "{message}"
    );
    assert!(
        message.contains("spec.sink.postgres.view: \"Bad View\""),
        "{message}"
    );
}

const FILE_ADAPTER: &str = r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {name: customers-file}
spec:
  entity: customer
  source:
    file:
      path: exports/customers.jsonl
      volume: {configMap: customer-export}
  mapping:
    id: record.id
"#;

#[test]
fn a_file_source_may_read_from_one_named_volume() {
    let adapter: Adapter = parse(FILE_ADAPTER);
    validate_adapter(&adapter).unwrap();
    let file = adapter.spec.source.file.as_ref().unwrap();
    assert_eq!(
        file.resolved_path(),
        "/var/run/dreampipe/source/exports/customers.jsonl"
    );
    for kind in ["secret", "persistentVolumeClaim"] {
        let adapter: Adapter = edited(FILE_ADAPTER, |v| {
            v["spec"]["source"]["file"]["volume"] = serde_json::json!({kind: "exports"})
        });
        validate_adapter(&adapter).unwrap();
    }
}

#[test]
fn a_file_volume_names_exactly_one_kind_by_an_object_name() {
    let adapter: Adapter = edited(FILE_ADAPTER, |v| {
        v["spec"]["source"]["file"]["volume"]["secret"] = "exports".into()
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.file.volume",
        "exactly one of configMap, secret or persistentVolumeClaim, found 2",
    );
    let adapter: Adapter = edited(FILE_ADAPTER, |v| {
        v["spec"]["source"]["file"]["volume"] = serde_json::json!({})
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.file.volume",
        "set one of",
    );
    let adapter: Adapter = edited(FILE_ADAPTER, |v| {
        v["spec"]["source"]["file"]["volume"] = serde_json::json!({"configMap": "Not_A_Name"})
    });
    assert_single(
        validate_adapter(&adapter),
        "spec.source.file.volume.configMap",
        "not a Kubernetes object name",
    );
}

#[test]
fn a_path_in_a_file_volume_is_relative_and_stays_inside_it() {
    for (path, words) in [
        ("/etc/passwd", "must be relative to the volume"),
        ("../other/file", "must not leave the volume"),
        ("a/../../b", "must not leave the volume"),
    ] {
        let adapter: Adapter = edited(FILE_ADAPTER, |v| {
            v["spec"]["source"]["file"]["path"] = path.into()
        });
        assert_single(validate_adapter(&adapter), "spec.source.file.path", words);
    }
    let dotted: Adapter = edited(FILE_ADAPTER, |v| {
        v["spec"]["source"]["file"]["path"] = "..data/customers.jsonl".into()
    });
    validate_adapter(&dotted).expect("a name starting with dots is no parent folder");
    let without: Adapter = edited(FILE_ADAPTER, |v| {
        v["spec"]["source"]["file"] = serde_json::json!({"path": "/data/customers.jsonl"})
    });
    validate_adapter(&without).expect("without a volume, a container path");
    assert_eq!(
        without.spec.source.file.unwrap().resolved_path(),
        "/data/customers.jsonl"
    );
}

#[test]
fn projection_autoscale_bounds_must_be_ordered_and_positive() {
    let ok: Projection =
        edited(
            PROJECTION,
            |v| {
                v["spec"]["autoscale"] =
                    serde_json::json!({"minReplicas": 1, "maxReplicas": 4, "targetLagSeconds": 30})
            },
        );
    validate_projection(&ok).unwrap();
    let inverted: Projection =
        edited(
            PROJECTION,
            |v| {
                v["spec"]["autoscale"] =
                    serde_json::json!({"minReplicas": 5, "maxReplicas": 4, "targetLagSeconds": 30})
            },
        );
    assert_single(
        validate_projection(&inverted),
        "spec.autoscale.maxReplicas",
        "must not be below minReplicas (5)",
    );
    let zero: Projection =
        edited(
            PROJECTION,
            |v| {
                v["spec"]["autoscale"] =
                    serde_json::json!({"minReplicas": 0, "maxReplicas": 4, "targetLagSeconds": 30})
            },
        );
    assert_single(
        validate_projection(&zero),
        "spec.autoscale.minReplicas",
        "at least 1",
    );
}

#[test]
fn adapter_oauth2_is_checked_by_path() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        let http = &mut v["spec"]["source"]["http"];
        http["tokenSecretRef"] = serde_json::json!({"name": "crm", "key": "token"});
        http["oauth2"] = serde_json::json!({"tokenUrl": "login.example.com/token",
            "grant": "RefreshToken", "clientIdRef": {"name": "app", "key": "id"},
            "clientSecretRef": {"name": "app", "key": "secret"}, "refreshBefore": "soon"});
    });
    let problems = validate_adapter(&adapter).unwrap_err().problems;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.source.http.oauth2",
            "spec.source.http.oauth2.tokenUrl",
            "spec.source.http.oauth2.refreshTokenRef",
            "spec.source.http.oauth2.refreshBefore"
        ],
        "{problems:?}"
    );
}

#[test]
fn adapter_postgres_names_are_checked_by_path() {
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"] = serde_json::json!({"postgres": {
            "urlSecretRef": {"name": "crm-db", "key": "url"}, "table": "crm.accounts"}})
    });
    validate_adapter(&adapter).unwrap();
    let adapter: Adapter = edited(ADAPTER, |v| {
        v["spec"]["source"] = serde_json::json!({"postgres": {
            "urlSecretRef": {"name": "crm-db", "key": "url"}, "table": "crm.accounts; drop table x",
            "publication": "Pub-1", "slot": "slot name"}})
    });
    let problems = validate_adapter(&adapter).unwrap_err().problems;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.source.postgres.table",
            "spec.source.postgres.publication",
            "spec.source.postgres.slot"
        ],
        "{problems:?}"
    );
}
