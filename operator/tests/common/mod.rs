//! Shared test input: the example resources of `tests/fixtures/shop.yaml`.

#![allow(dead_code)]

pub mod lease;
pub mod mock;
pub mod scenarios;

use crds::{Adapter, Entity, Projection};
use operator::build::{self, Children, Owner};
use operator::settings::RuntimeSettings;
use operator::validate;
use serde::Deserialize;

/// The fixture's resources, parsed with the CRD types.
pub struct Shop {
    pub entity: Entity,
    pub projection: Projection,
    pub adapter: Adapter,
    pub webhook: Adapter,
}

pub const SHOP_YAML: &str = include_str!("../fixtures/shop.yaml");

/// Parses every document of the fixture into its kind.
pub fn shop() -> Shop {
    let mut entities = Vec::new();
    let mut projections = Vec::new();
    let mut adapters = Vec::new();
    for document in serde_yaml::Deserializer::from_str(SHOP_YAML) {
        let value = serde_json::Value::deserialize(document).expect("fixture YAML parses");
        match value["kind"].as_str() {
            Some("Entity") => entities.push(serde_json::from_value(value).expect("an Entity")),
            Some("Projection") => {
                projections.push(serde_json::from_value(value).expect("a Projection"));
            }
            Some("Adapter") => adapters.push(serde_json::from_value(value).expect("an Adapter")),
            other => panic!("unexpected kind {other:?} in the fixture"),
        }
    }
    let webhook = adapters.pop().expect("the webhook adapter");
    Shop {
        entity: entities.pop().expect("the entity"),
        projection: projections.pop().expect("the projection"),
        adapter: adapters.pop().expect("the http adapter"),
        webhook,
    }
}

/// The receiver's children of a valid Entity.
pub fn receiver(entity: &Entity, settings: &RuntimeSettings) -> Children {
    let owner = Owner::of(entity).expect("a stored Entity");
    build::entity::build(
        &validate::entity(entity, &owner).expect("a valid Entity"),
        settings,
    )
}

/// The projector's children of a valid Projection over `entity`.
pub fn projector(projection: &Projection, entity: &Entity, settings: &RuntimeSettings) -> Children {
    let owner = Owner::of(projection).expect("a stored Projection");
    let valid = validate::projection(projection, &owner)
        .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
        .expect("a valid Projection");
    build::projection::build(&valid, settings)
}

/// The adapter's children of a valid Adapter feeding `entity`.
pub fn adapter(adapter: &Adapter, entity: &Entity, settings: &RuntimeSettings) -> Children {
    let owner = Owner::of(adapter).expect("a stored Adapter");
    let valid = validate::adapter(adapter, &owner)
        .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
        .expect("a valid Adapter");
    build::adapter::build(&valid, settings)
}
