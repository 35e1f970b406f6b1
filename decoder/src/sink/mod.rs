//! Where batches go: OTLP/HTTP, OTLP/gRPC, stdout or a file, each sink behind its own
//! queue bounded in bytes and worked by its own task, so a slow or unreachable collector
//! never holds up the reader or the other sinks; what does not fit is dropped and counted.
//!
//! A sink sends one batch at a time. A failure the OTLP specification calls retryable is
//! retried with exponential backoff and jitter (the Collector's `retry_on_failure`), or
//! after the delay the server asked for; any other failure drops the batch at once.

mod grpc;
mod http;
mod lines;
mod queue;
mod retry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use grpc::GrpcConfig;
pub use http::HttpConfig;
use queue::{SinkQueue, reason};
pub use retry::RetryConfig;
use retry::{Backoff, Rng};

use crate::signal::Batch;

/// One sink to start.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkConfig {
    /// OTLP/HTTP with protobuf bodies.
    OtlpHttp(HttpConfig),
    /// OTLP/gRPC.
    OtlpGrpc(GrpcConfig),
    /// One OTLP/JSON line per batch on stdout.
    Stdout,
    /// One OTLP/JSON line per batch appended to a file.
    File(PathBuf),
}

impl SinkConfig {
    /// The sink's name in snapshots and logs, e.g. `otlp-http http://127.0.0.1:4318`.
    pub fn name(&self) -> String {
        match self {
            Self::OtlpHttp(c) => format!("otlp-http {}", c.endpoint),
            Self::OtlpGrpc(c) => format!("otlp-grpc {}", c.endpoint),
            Self::Stdout => "stdout".into(),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}

/// Why [`SinkSet::start`] could not start a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The endpoint is not a usable URL.
    #[error("{sink} sink: invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The sink's kind.
        sink: &'static str,
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header (or gRPC metadata) name or value cannot be sent.
    #[error("{sink} sink: invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The sink's kind.
        sink: &'static str,
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The retry settings make no schedule.
    #[error("sink {sink}: invalid retry settings: {reason}")]
    InvalidRetry {
        /// The sink's name.
        sink: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. the system's TLS roots).
    #[error("otlp-http sink: cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The file sink's directory could not be created.
    #[error("file sink: cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file sink's file could not be opened for appending.
    #[error("file sink: cannot open {} for appending", path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A point-in-time copy of one sink's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkSnapshot {
    /// The sink's name, e.g. `otlp-http http://127.0.0.1:4318`.
    pub name: String,
    /// Batches the receiver accepted, partially or wholly.
    pub batches_sent: u64,
    /// Data points or spans the receiver accepted (a partial success's rejected ones are
    /// in `rejected_items` instead).
    pub items_sent: u64,
    /// Protobuf bytes of the batches sent, before compression.
    pub bytes_sent: u64,
    /// Attempts that failed in a retryable way and were tried again.
    pub retries: u64,
    /// Items the receiver reported rejected in a partial success (never retried).
    pub rejected_items: u64,
    /// Items dropped, by reason: `queue_full`, `retries_exhausted`, `permanent_error`,
    /// `shutdown`, `encode`.
    pub dropped_items: BTreeMap<&'static str, u64>,
    /// Batches dropped, by the same reasons.
    pub dropped_batches: BTreeMap<&'static str, u64>,
    /// Bytes queued, waiting to be sent (the batch in flight not included).
    pub queue_bytes: u64,
    /// The last failure, retried or not, or the last partial success's message.
    pub last_error: Option<String>,
}

impl SinkSnapshot {
    /// Items dropped for `reason` (zero if none).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped_items.get(reason).copied().unwrap_or(0)
    }

    /// Items dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_items.values().sum()
    }
}

/// The result of one attempt at sending a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Accepted; `rejected` items refused in a partial success, with its message.
    Sent { rejected: u64, message: String },
    /// Failed in a way worth retrying, after `after` if the server said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Failed for good.
    Permanent(String),
}

/// `err: cause: cause`, the whole chain on one line.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest often repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A sink's transport.
#[derive(Debug)]
enum Transport {
    Http(http::HttpSink),
    Grpc(grpc::GrpcSink),
    Lines(lines::LineSink),
}

impl Transport {
    fn new(config: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match config {
            SinkConfig::OtlpHttp(c) => Self::Http(http::HttpSink::new(c)?),
            SinkConfig::OtlpGrpc(c) => Self::Grpc(grpc::GrpcSink::new(c)?),
            SinkConfig::Stdout => Self::Lines(lines::LineSink::stdout()),
            SinkConfig::File(path) => Self::Lines(lines::LineSink::file(path)?),
        })
    }

    /// What is sent for `batch`, made once for all its attempts.
    fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        match self {
            Self::Http(h) => h.encode(batch),
            // tonic encodes the message itself.
            Self::Grpc(_) => Ok(Bytes::new()),
            Self::Lines(_) => Ok(lines::LineSink::encode(batch).into()),
        }
    }

    async fn send(&self, batch: &Batch, payload: &Bytes) -> Outcome {
        match self {
            Self::Http(h) => h.send(batch.signal(), payload.clone()).await,
            Self::Grpc(g) => g.send(batch).await,
            Self::Lines(l) => l.send(payload.to_vec()).await,
        }
    }
}

/// A sink's worker: sends its queue's batches one at a time, retrying as configured,
/// until the queue is closed and empty.
async fn work(queue: Arc<SinkQueue>, transport: Transport, retry: RetryConfig, mut rng: Rng) {
    let sink = queue.name().to_owned();
    while let Some(batch) = queue.pop().await {
        let payload = match transport.encode(&batch) {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%sink, items = batch.items, %error, "dropping a batch: cannot encode it");
                queue.dropped(&batch, reason::ENCODE, error);
                continue;
            }
        };
        let started = Instant::now();
        let mut backoff = Backoff::new(&retry, Rng::seeded(rng.next_u64()));
        loop {
            match transport.send(&batch, &payload).await {
                Outcome::Sent { rejected, message } => {
                    if rejected > 0 {
                        tracing::warn!(%sink, rejected, %message, "the receiver rejected part of a batch");
                        queue
                            .note_error(format!("partial success: {rejected} rejected: {message}"));
                    }
                    queue.sent(&batch, rejected);
                    break;
                }
                Outcome::Permanent(error) => {
                    tracing::warn!(%sink, items = batch.items, %error, "dropping a batch: not retryable");
                    queue.dropped(&batch, reason::PERMANENT_ERROR, error);
                    break;
                }
                Outcome::Retry { error, after } => match backoff.next(started.elapsed(), after) {
                    Some(wait) => {
                        tracing::debug!(%sink, ?wait, %error, "retrying a batch");
                        queue.retrying(error);
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        tracing::warn!(
                            %sink,
                            items = batch.items,
                            elapsed = ?started.elapsed(),
                            %error,
                            "dropping a batch: retries exhausted"
                        );
                        queue.dropped(&batch, reason::RETRIES_EXHAUSTED, error);
                        break;
                    }
                },
            }
        }
    }
}

struct Running {
    queue: Arc<SinkQueue>,
    worker: JoinHandle<()>,
}

/// The running sinks. [`submit`](Self::submit) hands a batch to every one without waiting;
/// [`shutdown`](Self::shutdown) flushes them. Dropping the set without shutting it down
/// abandons whatever the sinks still hold.
pub struct SinkSet {
    sinks: Vec<Running>,
}

impl fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| s.queue.name()))
            .finish()
    }
}

impl SinkSet {
    /// Starts one worker per sink on `rt`, each with a queue of at most `queue_bytes`
    /// bytes of batches. Nothing connects yet; a configuration that cannot work (a bad
    /// URL, header or retry setting, a file that cannot be opened) starts no sink.
    pub fn start(
        configs: Vec<SinkConfig>,
        queue_bytes: usize,
        rt: &tokio::runtime::Handle,
    ) -> Result<SinkSet, SinkError> {
        // tonic's lazy channel spawns its connection task where it is built.
        let _guard = rt.enter();
        let mut built = Vec::with_capacity(configs.len());
        for config in &configs {
            let retry = match config {
                SinkConfig::OtlpHttp(c) => c.retry.clone(),
                SinkConfig::OtlpGrpc(c) => c.retry.clone(),
                // A write error is not a collector's backpressure: no retry.
                SinkConfig::Stdout | SinkConfig::File(_) => RetryConfig {
                    enabled: false,
                    ..RetryConfig::default()
                },
            };
            retry.validate().map_err(|reason| SinkError::InvalidRetry {
                sink: config.name(),
                reason,
            })?;
            built.push((config.name(), Transport::new(config)?, retry));
        }
        let mut seeds = Rng::from_entropy();
        let sinks = built
            .into_iter()
            .map(|(name, transport, retry)| {
                let queue = Arc::new(SinkQueue::new(name, queue_bytes));
                let rng = Rng::seeded(seeds.next_u64());
                let worker = rt.spawn(work(Arc::clone(&queue), transport, retry, rng));
                Running { queue, worker }
            })
            .collect();
        Ok(SinkSet { sinks })
    }

    /// Queues `batch` on every sink, never waiting: a sink whose queue it would take past
    /// its byte limit counts it dropped (`queue_full`) instead.
    pub fn submit(&self, batch: Arc<Batch>) {
        for sink in &self.sinks {
            sink.queue.push(Arc::clone(&batch));
        }
    }

    /// Stops accepting batches and lets every sink send what it holds, retries included,
    /// until `deadline` from now; whatever is still queued or in flight then is counted
    /// dropped (`shutdown`). Returns the final counters.
    pub async fn shutdown(mut self, deadline: Duration) -> Vec<SinkSnapshot> {
        let mut sinks = std::mem::take(&mut self.sinks);
        for sink in &sinks {
            sink.queue.close();
        }
        let until = Instant::now() + deadline;
        for sink in &mut sinks {
            tracing::debug!(sink = %sink.queue.name(), "waiting for the sink's worker");
            if tokio::time::timeout_at(until, &mut sink.worker)
                .await
                .is_err()
            {
                sink.worker.abort();
                // Wait for the abort to land so the worker no longer touches the queue.
                let _ = (&mut sink.worker).await;
            }
            tracing::debug!(sink = %sink.queue.name(), "worker done");
            let left = sink.queue.abandon();
            if left > 0 {
                tracing::warn!(
                    sink = %sink.queue.name(),
                    items = left,
                    "shutdown deadline passed: dropping what the sink still held"
                );
            }
        }
        sinks.iter().map(|s| s.queue.snapshot()).collect()
    }

    /// Every sink's counters now, in the order of the configurations.
    pub fn snapshot(&self) -> Vec<SinkSnapshot> {
        self.sinks.iter().map(|s| s.queue.snapshot()).collect()
    }
}

impl Drop for SinkSet {
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.queue.close();
            sink.worker.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::signal::Request;

    #[test]
    fn names_say_kind_and_destination() {
        assert_eq!(
            SinkConfig::OtlpHttp(HttpConfig::default()).name(),
            "otlp-http http://localhost:4318"
        );
        assert_eq!(
            SinkConfig::OtlpGrpc(GrpcConfig::default()).name(),
            "otlp-grpc http://localhost:4317"
        );
        assert_eq!(SinkConfig::Stdout.name(), "stdout");
        assert_eq!(
            SinkConfig::File("/tmp/x.jsonl".into()).name(),
            "file /tmp/x.jsonl"
        );
    }

    #[tokio::test]
    async fn a_bad_config_starts_nothing() {
        let rt = tokio::runtime::Handle::current();
        let bad_retry = SinkConfig::OtlpHttp(HttpConfig {
            retry: RetryConfig {
                multiplier: 0.0,
                ..RetryConfig::default()
            },
            ..HttpConfig::default()
        });
        let err = SinkSet::start(vec![SinkConfig::Stdout, bad_retry], 1000, &rt).unwrap_err();
        assert!(matches!(err, SinkError::InvalidRetry { .. }), "{err}");
        let bad_url = SinkConfig::OtlpGrpc(GrpcConfig {
            endpoint: "http://bad host:1".into(),
            ..GrpcConfig::default()
        });
        let err = SinkSet::start(vec![bad_url], 1000, &rt).unwrap_err();
        assert!(err.to_string().contains("bad host"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_queued() {
        let dir = std::env::temp_dir().join(format!("ue-decoder-sinkset-{}", std::process::id()));
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Handle::current();
        let set = SinkSet::start(vec![SinkConfig::File(path.clone())], 1 << 20, &rt).unwrap();
        let batch = Arc::new(Batch::new(Request::Traces(
            ExportTraceServiceRequest::default(),
        )));
        for _ in 0..3 {
            set.submit(Arc::clone(&batch));
        }
        let snaps = set.shutdown(Duration::from_secs(5)).await;
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].batches_sent, 3);
        assert_eq!(snaps[0].dropped_total(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
