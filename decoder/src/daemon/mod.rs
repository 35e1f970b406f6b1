//! The daemon: the reading thread, the batching task and the sinks wired together
//! ([`run`]), the counters of all three ([`Snapshot`]) and the host check
//! ([`host_status`]).
//!
//! Orchestration only: it reads through the kernel layer, decodes with `decode`, batches
//! with `batch` and sends through `sink`, and owns the threads, channels, timers and
//! shutdown order. Parsing, encoding and syscalls stay in those layers.

mod run;
pub(crate) mod stats;
mod status;

pub use run::{RunConfig, RunError, run};
pub use stats::Snapshot;
pub use status::{Check, host_status};
