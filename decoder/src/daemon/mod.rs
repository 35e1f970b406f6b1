//! The daemon: the reading thread, the batching task and the sinks wired together
//! ([`run`], over an [`EventSource`]), the same batching and sending for a capture
//! ([`forward_capture`]), the counters of all three ([`Snapshot`]) and the host check
//! ([`host_status`]).
//!
//! Orchestration only: it reads through the kernel layer, decodes with `decode`, batches
//! with `batch` and sends through `sink`, and owns the threads, channels, timers and
//! shutdown order. Parsing, encoding and syscalls stay in those layers.

mod admin;
mod forward;
#[cfg(feature = "testing")]
mod memory;
mod run;
mod source;
pub(crate) mod stats;
mod status;

pub use admin::AdminConfig;
pub use forward::{ForwardConfig, ForwardError, forward_capture};
#[cfg(feature = "testing")]
pub use memory::MemorySource;
pub use run::{RunConfig, RunError, run};
pub use source::{EventSource, PerfSource};
pub use stats::Snapshot;
pub use status::{Check, host_status};
