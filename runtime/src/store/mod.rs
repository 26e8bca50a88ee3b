//! The event store: naming of streams and subjects, the event envelope, (in `jetstream`)
//! reading and appending events with optimistic concurrency, and (in `error`) its failures.

pub mod envelope;
pub mod error;
pub mod jetstream;
pub mod naming;

pub use envelope::{Change, Erasure, Event, EventType};
pub use error::{ReadError, StoreError};
pub use naming::{Key, KeyError, StreamNames};
