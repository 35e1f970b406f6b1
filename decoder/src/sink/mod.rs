//! Where batches go: OTLP/HTTP, OTLP/gRPC, stdout, a file, DogStatsD, a Prometheus scrape
//! endpoint, ClickHouse tables or an object-storage archive, each sink behind its own queue bounded in bytes and worked by its own task, so
//! a slow or unreachable collector
//! never holds up the reader or the other sinks; what does not fit is dropped and counted.
//!
//! A sink sends one batch at a time. A failure the OTLP specification calls retryable is
//! retried with exponential backoff and jitter (the Collector's `retry_on_failure`), or
//! after the delay the server asked for; any other failure drops the batch at once.
//!
//! [`SinkSet::submit`] never waits: the reader's side must not be held up by a network.
//! With a [`DiskQueueConfig`] each sink's queue is on disk instead of in memory: appended
//! before a batch counts as accepted, replayed after a restart, and emptied only as the
//! destination acknowledges (at-least-once).
//! Sinks take batches as they are; they neither decode nor merge.

mod archive;
mod clickhouse;
mod compress;
mod config;
mod disk;
mod grpc;
mod http;
mod lines;
mod prometheus;
mod queue;
mod retry;
mod route;
mod set;
mod statsd;
mod tls;
mod transport;

pub use archive::{ArchiveConfig, ArchiveSnapshot};
pub use clickhouse::ClickHouseConfig;
pub(crate) use compress::body as compressed_body;
pub use config::{
    Compression, DiskQueueConfig, OtlpConfig, PemFile, Protocol, SinkConfig, SinkError, SyncPolicy,
    TlsConfig, read_headers_file,
};
pub use disk::DiskSnapshot;
pub use prometheus::PrometheusConfig;
pub use queue::SinkSnapshot;
pub use retry::RetryConfig;
pub use route::{Filter, Patterns, Route, RoutedSink};
pub use set::SinkSet;
pub use statsd::{StatsdConfig, StatsdTarget};
pub(crate) use transport::{Outcome, error_chain};
