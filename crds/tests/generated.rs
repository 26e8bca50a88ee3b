//! The committed CRD YAML must be what the types generate, and every field must be documented
//! (the descriptions are what `kubectl explain` shows).

use std::path::Path;

use kube::CustomResourceExt;

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
    for crd in [
        crds::Entity::crd(),
        crds::Adapter::crd(),
        crds::Projection::crd(),
    ] {
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
    let crd = crds::Projection::crd();
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
    for crd in [
        crds::Entity::crd(),
        crds::Adapter::crd(),
        crds::Projection::crd(),
    ] {
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
    let schema = serde_json::to_value(&crds::Entity::crd().spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in ["key", "partitions"] {
        assert_eq!(
            spec[field]["x-kubernetes-validations"][0]["rule"], "self == oldSelf",
            "{field}"
        );
    }
}
