//! Where batches go: OTLP/HTTP, OTLP/gRPC, stdout or a file, each sink behind its own
//! queue bounded in bytes and worked by its own task, so a slow or unreachable collector
//! never holds up the reader or the other sinks; what does not fit is dropped and counted.
//!
//! A sink sends one batch at a time. A failure the OTLP specification calls retryable is
//! retried with exponential backoff and jitter (the Collector's `retry_on_failure`), or
//! after the delay the server asked for; any other failure drops the batch at once.
//!
//! [`SinkSet::submit`] never waits: the reader's side must not be held up by a network.
//! Sinks take batches as they are; they neither decode nor merge.

mod compress;
mod config;
mod grpc;
mod http;
mod lines;
mod queue;
mod retry;
mod set;
mod transport;

pub(crate) use compress::body as compressed_body;
pub use config::{Compression, OtlpConfig, Protocol, SinkConfig, SinkError};
pub use queue::SinkSnapshot;
pub use retry::RetryConfig;
pub use set::SinkSet;
pub(crate) use transport::{Outcome, error_chain};
