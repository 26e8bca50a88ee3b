//! The event store: naming of streams and subjects, the event envelope, and (in `jetstream`)
//! reading and appending events with optimistic concurrency.

pub mod envelope;
pub mod jetstream;
pub mod naming;

pub use envelope::{Change, Event, EventType};
pub use naming::{Key, KeyError, StreamNames};
