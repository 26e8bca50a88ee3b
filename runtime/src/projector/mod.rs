//! The projector (read side, DESIGN §5): replays an Entity's stream, partition by partition,
//! through a Projection's filters into a Postgres view or a NATS subject.
//!
//! - `plan`, `evaluate`, `rows`, `schema`: pure. A Projection compiles once per generation into
//!   a [`plan::Plan`]; the filter chain and the net changes of a batch are computed without a
//!   database; SQL is built once per generation.
//! - `database`: rows, dead letters and the checkpoint commit in one transaction; the
//!   checkpoint moves by compare-and-set under the partition lease's epoch.
//! - `worker`: one (generation, partition): an ordered consumer from the checkpoint on.
//! - `supervisor`: one replica: leases, generations, the swap, retirement.
//! - `status`, `metrics`, `lag`: what the operator and Prometheus read; `lag` tells the age
//!   of a partition's oldest event not yet applied from the stream.

pub mod command;
pub mod database;
pub mod evaluate;
pub mod lag;
pub mod metrics;
pub mod plan;
pub mod rows;
pub mod schema;
pub mod status;
pub mod supervisor;
pub mod worker;

pub use metrics::Metrics;
pub use plan::{Definition, Plan};
pub use status::StatusSource;
pub use supervisor::{Options, Projector, ProjectorError};
pub use worker::WorkerOptions;
