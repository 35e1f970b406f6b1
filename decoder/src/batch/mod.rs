//! Batching: decoded requests merged into one request per signal, like the Collector's batch
//! processor, and sent at a size or after a delay.
//!
//! Pure: time comes in as an argument, batches go out as return values. No I/O, no tasks,
//! no waiting; the daemon drives it.

mod batcher;

pub(crate) use batcher::Batcher;
pub use batcher::{Batch, BatchConfig, Incoming};
