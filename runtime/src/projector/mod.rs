//! The projector (read side, DESIGN §5): replays an Entity's stream, partition by partition,
//! through a Projection's filters into a Postgres view or a NATS subject, with exactly-once
//! effect, partition leases, and generations that swap with no downtime.

pub mod evaluate;
pub mod plan;
pub mod rows;
