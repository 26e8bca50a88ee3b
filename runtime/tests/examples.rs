//! Every example folder is valid DreamPipe YAML: it loads with every resource validated and
//! every reference resolved, exactly as `dreampipe dev` and the runtime read it.

use std::path::Path;

use runtime::config::Resources;

#[test]
fn every_example_folder_loads_and_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut folders = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        folders += 1;
        let resources = Resources::load(std::slice::from_ref(&folder), "default")
            .unwrap_or_else(|error| panic!("{}: {error}", folder.display()));
        assert!(
            !resources.entities.is_empty(),
            "{} declares no Entity",
            folder.display()
        );
    }
    assert!(folders > 0, "no example folders found");
}

#[test]
fn the_salesforce_example_tells_the_whole_story() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/salesforce");
    let resources = Resources::load(&[folder], "default").unwrap();
    let names = |list: Vec<&str>| list.join(",");
    assert_eq!(
        names(
            resources
                .entities
                .iter()
                .map(|e| e.metadata.name.as_deref().unwrap())
                .collect()
        ),
        "customer"
    );
    assert_eq!(
        names(
            resources
                .adapters
                .iter()
                .map(|a| a.metadata.name.as_deref().unwrap())
                .collect()
        ),
        "salesforce-customers"
    );
    let mut views: Vec<&str> = resources
        .projections
        .iter()
        .map(|p| p.spec.sink.postgres.as_ref().unwrap().view.as_str())
        .collect();
    views.sort();
    assert_eq!(
        views,
        ["customer_changes", "customers", "customers_by_city"]
    );
}

/// The README and the chart's NOTES apply examples with `kubectl apply -n <release namespace>`:
/// a namespace written into a document would send it elsewhere, away from the database Secret.
#[test]
fn no_example_document_names_a_namespace_of_its_own() {
    use serde::Deserialize;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut documents = 0;
    for folder in std::fs::read_dir(&examples).unwrap() {
        let folder = folder.unwrap().path();
        for file in std::fs::read_dir(&folder).into_iter().flatten() {
            let file = file.unwrap().path();
            if !matches!(
                file.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(document).unwrap();
                documents += 1;
                assert!(
                    value["metadata"].get("namespace").is_none(),
                    "{} names namespace {:?}",
                    file.display(),
                    value["metadata"]["namespace"]
                );
            }
        }
    }
    assert!(documents > 5, "only {documents} example documents found");
}
