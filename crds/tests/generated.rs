//! The committed CRD YAML must be what the types generate, and every field must be documented
//! (the descriptions are what `kubectl explain` shows).

use std::path::Path;

use crds::generate::{KUBERNETES_FORMATS, definitions};

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    let mut stale = Vec::new();
    for (file, expected) in crds::generate::crd_files() {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != expected {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/yaml/{{{}}} is stale: regenerate it with `cargo run -p crds --bin crdgen` and commit the result",
        stale.join(",")
    );
}

/// Walks a schema and lists the property paths that have no description.
fn undocumented(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, property) in properties {
            let child = format!("{path}.{name}");
            if property.get("description").is_none() && !path.is_empty() {
                out.push(child.clone());
            }
            undocumented(property, &child, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(values, &format!("{path}.*"), out);
    }
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    for crd in definitions() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut missing = Vec::new();
        undocumented(&schema["openAPIV3Schema"], "", &mut missing);
        // resources comes from k8s-openapi, documented there.
        missing.retain(|p| !p.contains(".resources."));
        assert!(
            missing.is_empty(),
            "{}: fields without a doc comment: {missing:?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn projection_supports_kubectl_scale() {
    let [_, _, crd, _] = definitions();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}

#[test]
fn conditions_merge_by_type_under_server_side_apply() {
    for crd in definitions() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{}",
            crd.spec.names.kind
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }
}

#[test]
fn entity_key_and_partitions_are_immutable() {
    let [entity, ..] = definitions();
    let schema = serde_json::to_value(&entity.spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in ["key", "partitions"] {
        assert_eq!(
            spec[field]["x-kubernetes-validations"][0]["rule"], "self == oldSelf",
            "{field}"
        );
    }
}

/// Every `(path, value)` of `key` anywhere under `node`.
fn every(node: &serde_json::Value, key: &str, path: &str, out: &mut Vec<(String, String)>) {
    match node {
        serde_json::Value::Object(object) => {
            for (name, child) in object {
                if name == key
                    && let Some(text) = child.as_str()
                {
                    out.push((path.to_owned(), text.to_owned()));
                }
                every(child, key, &format!("{path}.{name}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                every(item, key, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_format_is_one_the_api_server_recognises() {
    for crd in definitions() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut formats = Vec::new();
        every(&schema, "format", "", &mut formats);
        let unknown: Vec<_> = formats
            .iter()
            .filter(|(_, format)| !KUBERNETES_FORMATS.contains(&format.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{}: `kubectl apply` would warn `unrecognized format` for {unknown:?}",
            crd.spec.names.kind
        );
    }
}

fn starts_list_item(line: &str) -> bool {
    let numbered = line
        .split_once(". ")
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    line.starts_with("- ") || line.starts_with("* ") || numbered
}

#[test]
fn descriptions_break_lines_only_between_paragraphs_and_list_items() {
    for crd in definitions() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut descriptions = Vec::new();
        every(&schema, "description", "", &mut descriptions);
        let broken: Vec<_> = descriptions
            .iter()
            .filter(|(_, text)| {
                text.split("\n\n").any(|paragraph| {
                    paragraph
                        .lines()
                        .skip(1)
                        .any(|line| !starts_list_item(line))
                })
            })
            .collect();
        assert!(
            broken.is_empty(),
            "{}: descriptions with a line break inside a sentence: {broken:?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn condition_transition_times_are_date_times() {
    for crd in definitions() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let time = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]["items"]
            ["properties"]["lastTransitionTime"];
        assert_eq!(time["format"], "date-time", "{}", crd.spec.names.kind);
    }
}
