//! Generation of the CRD YAML from the types, used by `crdgen` and by the staleness test.

use kube::CustomResourceExt;

use crate::{Adapter, Entity, Projection};

/// Each CRD's file name under `crds/yaml/` and its YAML.
pub fn crd_files() -> Vec<(&'static str, String)> {
    let header = "# Generated from the Rust types in crds/src by `cargo run -p crds --bin crdgen`.\n\
                  # Do not edit by hand.\n";
    [
        ("entities.dreampipe.io.yaml", Entity::crd()),
        ("adapters.dreampipe.io.yaml", Adapter::crd()),
        ("projections.dreampipe.io.yaml", Projection::crd()),
    ]
    .into_iter()
    .map(|(file, crd)| {
        let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises to YAML");
        (file, format!("{header}{yaml}"))
    })
    .collect()
}
