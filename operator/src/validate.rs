//! The first step of every reconcile, pure: a resource (and the Entity it refers to, looked up
//! by the controller) in, a [`Valid`] value out, or a [`Rejection`] saying why not. Builders
//! accept only a [`Valid`] value, so nothing unvalidated is ever built.

use crds::adapter::validate_adapter;
use crds::entity::validate_entity;
use crds::projection::validate_projection;
use crds::{Adapter, Entity, Invalid, Projection};

use crate::build::Owner;
use crate::conditions::reasons;

/// A resource that passed validation: the object, who owns its children (name, namespace,
/// owner reference), and what it refers to (the Entity of a Projection or an Adapter).
#[derive(Clone, Debug)]
pub struct Valid<'a, K, R = ()> {
    pub object: &'a K,
    pub owner: Owner,
    pub entity: R,
}

pub type ValidEntity<'a> = Valid<'a, Entity>;
pub type ValidProjection<'a> = Valid<'a, Projection, Entity>;
pub type ValidAdapter<'a> = Valid<'a, Adapter, Entity>;

/// Why a resource cannot be built: the condition reason and a message naming every field at
/// fault. A rejection waits for the user to change something; it is not retried: the driver
/// reports it in status and an Event (see `controller::driver`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    fn invalid(reason: &'static str, invalid: &Invalid) -> Rejection {
        Rejection {
            reason,
            message: problems(invalid),
        }
    }
}

/// Every problem with its field path, `; `-separated.
pub fn problems(invalid: &Invalid) -> String {
    invalid
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An Entity whose spec is valid.
pub fn entity<'a>(entity: &'a Entity, owner: &Owner) -> Result<ValidEntity<'a>, Rejection> {
    validate_entity(entity)
        .map_err(|invalid| Rejection::invalid(reasons::INVALID_SPEC, &invalid))?;
    Ok(Valid {
        object: entity,
        owner: owner.clone(),
        entity: (),
    })
}

/// A resource whose own spec is valid and that still needs the Entity it reads: the controller
/// looks `entity_name` up and [`Unresolved::resolve`]s it. (An invalid spec is reported
/// without reading anything.)
#[derive(Clone, Debug)]
pub struct Unresolved<'a, K> {
    object: &'a K,
    owner: Owner,
    entity_name: &'a str,
}

impl<'a, K> Unresolved<'a, K> {
    /// The Entity to look up, in the owner's namespace.
    pub fn entity_name(&self) -> &'a str {
        self.entity_name
    }

    /// The valid resource, if its Entity (as found, or `None`) exists and is valid.
    pub fn resolve(self, referenced: Option<Entity>) -> Result<Valid<'a, K, Entity>, Rejection> {
        let Unresolved {
            object,
            owner,
            entity_name,
        } = self;
        let Some(entity) = referenced else {
            return Err(Rejection {
                reason: reasons::UNKNOWN_ENTITY,
                message: format!(
                    "spec.entity: Entity {entity_name:?} does not exist in namespace {:?}",
                    owner.namespace
                ),
            });
        };
        if let Err(invalid) = validate_entity(&entity) {
            return Err(Rejection {
                reason: reasons::INVALID_ENTITY,
                message: format!(
                    "spec.entity: Entity {entity_name:?} is invalid: {}",
                    problems(&invalid)
                ),
            });
        }
        Ok(Valid {
            object,
            owner,
            entity,
        })
    }
}

/// A Projection whose own spec is valid; its Entity comes next.
pub fn projection<'a>(
    projection: &'a Projection,
    owner: &Owner,
) -> Result<Unresolved<'a, Projection>, Rejection> {
    own_spec(
        projection,
        owner,
        validate_projection(projection),
        &projection.spec.entity,
    )
}

/// An Adapter whose own spec is valid; its Entity comes next.
pub fn adapter<'a>(
    adapter: &'a Adapter,
    owner: &Owner,
) -> Result<Unresolved<'a, Adapter>, Rejection> {
    own_spec(
        adapter,
        owner,
        validate_adapter(adapter),
        &adapter.spec.entity,
    )
}

fn own_spec<'a, K>(
    object: &'a K,
    owner: &Owner,
    own: Result<(), Invalid>,
    entity_name: &'a str,
) -> Result<Unresolved<'a, K>, Rejection> {
    own.map_err(|invalid| Rejection::invalid(reasons::INVALID_SPEC, &invalid))?;
    Ok(Unresolved {
        object,
        owner: owner.clone(),
        entity_name,
    })
}
