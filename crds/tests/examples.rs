//! Every DreamPipe resource under examples/ matches the schema of its generated CRD, as the API
//! server would check it at `kubectl apply` (CEL rules aside: the validate_* functions and
//! the runtime's own loading check those).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Each kind's openAPIV3Schema, from the generated CRDs.
fn schemas() -> HashMap<String, Value> {
    crds::generate::definitions()
        .into_iter()
        .map(|crd| {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            (
                crd.spec.names.kind.clone(),
                schema["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}

/// The schema violations of one document, as `path: message`.
fn violations(schemas: &HashMap<String, Value>, document: &Value) -> Vec<String> {
    let kind = document["kind"].as_str().unwrap_or_default();
    let Some(schema) = schemas.get(kind) else {
        return vec![format!("no CRD for kind {kind:?}")];
    };
    let validator = jsonschema::validator_for(schema).expect("generated CRD schemas compile");
    validator
        .iter_errors(document)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

/// Every YAML file under `folder`, in its subfolders too (an example's `erasure/`).
fn yaml_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for path in std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
    {
        if path.is_dir() {
            yaml_files(&path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

fn example_documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        &mut files,
    );
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("dreampipe.io/"))
            {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

#[test]
fn every_example_resource_matches_its_crd_schema() {
    let schemas = schemas();
    let documents = example_documents();
    assert!(
        documents.len() >= 5,
        "the examples hold DreamPipe resources: {}",
        documents.len()
    );
    assert!(
        documents.iter().any(|(_, d)| d["kind"] == "Erasure"),
        "an example Erasure is checked too"
    );
    let mut problems = Vec::new();
    for (file, document) in &documents {
        for violation in violations(&schemas, document) {
            problems.push(format!(
                "{} {}: {violation}",
                file.display(),
                document["metadata"]["name"]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "examples that the API server would refuse:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_resource_that_breaks_the_schema_is_caught() {
    let schemas = schemas();
    let (_, mut entity) = example_documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == "Entity")
        .unwrap();
    entity["spec"]["partitions"] = Value::from("eight");
    entity["spec"]["deletionPolicy"] = Value::from("Shred");
    let found = violations(&schemas, &entity);
    assert!(
        found.iter().any(|v| v.starts_with("/spec/partitions")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|v| v.starts_with("/spec/deletionPolicy")),
        "{found:?}"
    );
}
