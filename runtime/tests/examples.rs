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
