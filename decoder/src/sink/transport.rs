//! One attempt at sending a batch, whatever the sink: [`Transport`] and its [`Outcome`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use ue_proto::collector::logs::v1::ExportLogsServiceResponse;
use ue_proto::collector::metrics::v1::ExportMetricsServiceResponse;
use ue_proto::collector::trace::v1::ExportTraceServiceResponse;

use super::archive::{ArchiveSink, ArchiveStats};
use super::config::Protocol;
use super::queue::SinkQueue;
use super::{SinkConfig, SinkError, clickhouse, grpc, http, lines, prometheus, statsd};
use crate::batch::Batch;

/// An OTLP export response of any signal, over either transport: what its
/// `partial_success` reports rejected (data points, spans or log records).
pub(crate) trait PartialSuccess {
    /// The response as an outcome: sent, with the rejected items and the server's message.
    fn outcome(self) -> Outcome;
}

impl PartialSuccess for ExportMetricsServiceResponse {
    fn outcome(self) -> Outcome {
        let (rejected, message) = self
            .partial_success
            .map(|p| (p.rejected_data_points, p.error_message))
            .unwrap_or_default();
        Outcome::sent(rejected, message)
    }
}

impl PartialSuccess for ExportTraceServiceResponse {
    fn outcome(self) -> Outcome {
        let (rejected, message) = self
            .partial_success
            .map(|p| (p.rejected_spans, p.error_message))
            .unwrap_or_default();
        Outcome::sent(rejected, message)
    }
}

impl PartialSuccess for ExportLogsServiceResponse {
    fn outcome(self) -> Outcome {
        let (rejected, message) = self
            .partial_success
            .map(|p| (p.rejected_log_records, p.error_message))
            .unwrap_or_default();
        Outcome::sent(rejected, message)
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
    /// Taken in by a sink that keeps state rather than sending (Prometheus), but for the
    /// items in `dropped`, by reason, counted dropped while the batch is not.
    Taken {
        dropped: BTreeMap<&'static str, u64>,
    },
    /// Held by a sink that writes later (the archive), which counts its items itself as
    /// they are written or lost.
    Held,
}

impl Outcome {
    /// Accepted, `rejected` items refused (a negative count, which a server must not send,
    /// counts as none).
    pub(crate) fn sent(rejected: i64, message: String) -> Self {
        Self::Sent {
            rejected: rejected.max(0) as u64,
            message,
        }
    }
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

/// A sink's transport. The OTLP clients are boxed: with a URL or a client per signal they
/// are hundreds of bytes, and a sink holds one transport for its whole life.
#[derive(Debug)]
pub(crate) enum Transport {
    Http(Box<http::HttpSink>),
    Grpc(Box<grpc::GrpcSink>),
    Lines(lines::LineSink),
    Statsd(Box<statsd::StatsdSink>),
    Prometheus(Box<prometheus::PrometheusSink>),
    ClickHouse(Box<clickhouse::ClickHouseSink>),
    Archive(Box<ArchiveSink>),
}

impl Transport {
    pub(crate) fn new(config: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match config {
            SinkConfig::Otlp(c) => match c.protocol {
                Protocol::HttpProtobuf => Self::Http(Box::new(http::HttpSink::new(c)?)),
                Protocol::Grpc => Self::Grpc(Box::new(grpc::GrpcSink::new(c)?)),
            },
            SinkConfig::Stdout => Self::Lines(lines::LineSink::stdout()),
            SinkConfig::File(path) => Self::Lines(lines::LineSink::file(path)?),
            SinkConfig::Statsd(c) => Self::Statsd(Box::new(statsd::StatsdSink::new(c)?)),
            SinkConfig::Prometheus(c) => {
                Self::Prometheus(Box::new(prometheus::PrometheusSink::start(c)?))
            }
            SinkConfig::ClickHouse(c) => {
                Self::ClickHouse(Box::new(clickhouse::ClickHouseSink::new(c)?))
            }
            SinkConfig::Archive(c) => Self::Archive(Box::new(ArchiveSink::new(c)?)),
        })
    }

    /// Starts what the transport runs beside the sends, counting into its sink's `queue`.
    pub(crate) fn bind(&self, queue: &Arc<SinkQueue>) {
        if let Self::Archive(a) = self {
            a.bind(Arc::clone(queue));
        }
    }

    /// The archive's counters, for an archive.
    pub(crate) fn archive_stats(&self) -> Option<ArchiveStats> {
        match self {
            Self::Archive(a) => Some(a.stats()),
            _ => None,
        }
    }

    /// Once the queue is drained and every send done: writes what the transport still
    /// holds.
    pub(crate) async fn close(&self) {
        if let Self::Archive(a) = self {
            a.close().await;
        }
    }

    /// What is sent for `batch`, made once for all its attempts.
    pub(crate) fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        match self {
            Self::Http(h) => h.encode(batch),
            Self::Grpc(g) => g.encode(batch),
            Self::Lines(_) => lines::LineSink::encode(batch).map(Bytes::from),
            Self::Statsd(s) => s.encode(batch),
            // It reads the batch's request itself.
            Self::Prometheus(_) => Ok(Bytes::new()),
            Self::ClickHouse(c) => c.encode(batch),
            Self::Archive(_) => ArchiveSink::check(batch).map(|()| Bytes::new()),
        }
    }

    /// One attempt at sending `payload`. `done` is the transport's own record of what
    /// earlier attempts at the same batch delivered (zero at first): ClickHouse counts the
    /// tables inserted, so that a retry does not insert them again.
    pub(crate) async fn send(&self, batch: &Batch, payload: &Bytes, done: &mut usize) -> Outcome {
        match self {
            Self::Http(h) => h.send(batch.signal(), payload.clone()).await,
            Self::Grpc(g) => g.send(batch.signal(), payload.clone()).await,
            Self::Lines(l) => l.send(payload.to_vec()).await,
            Self::Statsd(s) => s.send(payload).await,
            Self::Prometheus(p) => p.send(batch),
            Self::ClickHouse(c) => c.send(payload, done).await,
            Self::Archive(a) => a.send(batch).await,
        }
    }
}
