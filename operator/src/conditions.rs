//! The words the operator writes for machines: condition types, condition and Event reasons,
//! and Event actions. One place, so a reason a user greps for is spelled one way.

/// Condition types (`status.conditions[].type`).
pub mod types {
    /// Every desired pod is ready and the role serves.
    pub const READY: &str = "Ready";
    /// A rollout or a generation build is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a look although the resource may still serve.
    pub const DEGRADED: &str = "Degraded";
    /// An Erasure: nothing readable holds the key's data.
    pub const COMPLETE: &str = "Complete";
}

/// Reasons of conditions and Events (one CamelCase word each).
pub mod reasons {
    /// The spec fails validation; the message names every field at fault.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `spec.entity` names an Entity that does not exist.
    pub const UNKNOWN_ENTITY: &str = "UnknownEntity";
    /// `spec.entity` names an Entity whose own spec is invalid.
    pub const INVALID_ENTITY: &str = "InvalidEntity";

    pub const ALL_READY: &str = "AllReady";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// An Adapter's `spec.suspend` is true: no pod reads its source.
    pub const SUSPENDED: &str = "Suspended";
    /// Pods are not ready yet and none reports a problem of its own.
    pub const PODS_NOT_READY: &str = "PodsNotReady";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const HEALTHY: &str = "Healthy";
    /// The role's `/v1/status` could not be read although its pods are ready.
    pub const STATUS_UNAVAILABLE: &str = "StatusUnavailable";

    pub const BUILDING_GENERATION: &str = "BuildingGeneration";
    pub const NO_LIVE_GENERATION: &str = "NoLiveGeneration";
    pub const PARTITIONS_FAILING: &str = "PartitionsFailing";
    /// The Projection's view is owned by another Projection of the namespace (DESIGN §10):
    /// this one is refused and projects nothing; the owner keeps serving.
    pub const VIEW_CONFLICT: &str = "ViewConflict";
    pub const SOURCE_FAILING: &str = "SourceFailing";

    /// Erasures (ADR 76). No receiver of the Entity answered, or it could not reach NATS.
    pub const RECEIVER_UNAVAILABLE: &str = "ReceiverUnavailable";
    /// The key has no events: nothing was erased (a mistyped key?).
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
    /// The stream was created denying purge (before erasure existed): no key can be erased.
    pub const PURGE_DENIED: &str = "PurgeDenied";
    /// The receiver refused the request for another reason it names.
    pub const ERASURE_REFUSED: &str = "ErasureRefused";
    /// The tombstone is written; Projections are still applying it.
    pub const SCRUBBING: &str = "Scrubbing";
    /// The tombstone is written and the key's events purged (an Event).
    pub const KEY_ERASED: &str = "KeyErased";
    /// Nothing readable holds the key's data.
    pub const ERASED: &str = "Erased";

    /// Events.
    pub const CREATED: &str = "Created";
    pub const UPDATED: &str = "Updated";
    pub const GENERATION_SWAPPED: &str = "GenerationSwapped";
    pub const STREAM_DELETED: &str = "StreamDeleted";
    pub const VIEWS_DROPPED: &str = "ViewsDropped";
    pub const DROP_FAILED: &str = "DropFailed";
    /// `spec.autoscale` changed the projector's replicas.
    pub const AUTOSCALED: &str = "Autoscaled";
    /// More dead letters wait to be handled than at the last reconcile.
    pub const NEW_DEAD_LETTERS: &str = "NewDeadLetters";
}

/// Event actions (what the operator was doing).
pub mod actions {
    pub const VALIDATE: &str = "Validate";
    pub const RECONCILE: &str = "Reconcile";
    pub const SWAP: &str = "Swap";
    pub const SCALE: &str = "Scale";
    pub const DELETE: &str = "Delete";
    pub const ERASE: &str = "Erase";
}
