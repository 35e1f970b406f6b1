//! What sinks to start: [`SinkConfig`] (with [`OtlpConfig`] for either OTLP transport),
//! and why one could not start, [`SinkError`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::RetryConfig;

/// The transport of an OTLP sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

impl Protocol {
    /// The OTLP specification's default endpoint for this transport.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http://localhost:4318",
            Self::Grpc => "http://localhost:4317",
        }
    }

    /// The sink's kind in names and errors: `otlp-http` or `otlp-grpc`.
    pub(crate) fn sink_kind(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "otlp-http",
            Self::Grpc => "otlp-grpc",
        }
    }
}

/// How an OTLP sink compresses what it sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Not at all.
    #[default]
    None,
    /// gzip, what every OTLP receiver accepts: its fastest level over HTTP; over gRPC at
    /// level 6, the only one tonic offers.
    Gzip,
    /// zstd (level 1 over HTTP; tonic's default, 3, over gRPC), which the OpenTelemetry
    /// Collector accepts on both: several times cheaper than gzip for a smaller result.
    Zstd,
}

/// Where and how an OTLP sink sends, over either transport.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// OTLP/HTTP or OTLP/gRPC.
    pub protocol: Protocol,
    /// The collector's URL, e.g. `http://127.0.0.1:4318` (`https://` for TLS with the
    /// system's CA roots). OTLP/HTTP appends `/v1/metrics`, `/v1/traces` and `/v1/logs` to
    /// its path; a URL already ending in one signal's path is taken as that signal's URL,
    /// the others' being its siblings. OTLP/gRPC assumes `http://` when there is no scheme.
    pub endpoint: String,
    /// Extra request headers (HTTP) or metadata (gRPC, names lower-cased), e.g.
    /// authentication.
    pub headers: Vec<(String, String)>,
    /// The limit on one request, connecting included (sent as `grpc-timeout` too).
    pub timeout: Duration,
    /// How request bodies are compressed (`Content-Encoding`, or `grpc-encoding`).
    pub compression: Compression,
    /// Retries of retryable failures.
    pub retry: RetryConfig,
}

impl OtlpConfig {
    /// The OTLP specification's defaults for `protocol`: its default endpoint, a 10 s
    /// timeout, no compression; the Collector's retry schedule.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            endpoint: protocol.default_endpoint().into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            retry: RetryConfig::default(),
        }
    }
}

impl Default for OtlpConfig {
    /// OTLP/HTTP to `http://localhost:4318`, as [`OtlpConfig::new`] says.
    fn default() -> Self {
        Self::new(Protocol::default())
    }
}

/// One sink to start.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkConfig {
    /// OTLP over HTTP or gRPC.
    Otlp(OtlpConfig),
    /// One OTLP/JSON line per batch on stdout.
    Stdout,
    /// One OTLP/JSON line per batch appended to a file.
    File(PathBuf),
}

impl SinkConfig {
    /// The sink's name in snapshots and logs, e.g. `otlp-http http://127.0.0.1:4318`.
    pub fn name(&self) -> String {
        match self {
            Self::Otlp(c) => format!("{} {}", c.protocol.sink_kind(), c.endpoint),
            Self::Stdout => "stdout".into(),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}

/// When the on-disk queue forces what it appended to the disk (`fdatasync`). A batch counts
/// as accepted once written to the file, so a killed decoder loses none of them whatever the
/// policy: the kernel still holds them. The policy bounds what a power loss or kernel crash
/// can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// After every batch, before the next is accepted: nothing accepted is lost, for one
    /// `fdatasync` per batch on the batching task.
    EveryBatch,
    /// Group commit: at most this long after a batch was appended, from a thread of its own,
    /// so appending never waits on the disk; a power loss loses at most this window.
    Interval(Duration),
    /// Only at a clean shutdown, otherwise when the kernel writes back (about 30 s).
    Never,
}

impl Default for SyncPolicy {
    /// Group commit every 100 ms.
    fn default() -> Self {
        Self::Interval(Duration::from_millis(100))
    }
}

/// A persistent queue per sink (`--queue-dir`): batches are appended to files in a
/// subdirectory per sink before they count as accepted, sent from there in order, kept
/// across restarts, and removed once the sink's destination acknowledged them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskQueueConfig {
    /// The directory that holds one subdirectory per sink, named after the sink.
    pub dir: PathBuf,
    /// The most bytes each sink's subdirectory may hold; a batch that does not fit is
    /// dropped and counted (`queue_full`).
    pub max_bytes: u64,
    /// When appended batches are forced to the disk.
    pub sync: SyncPolicy,
}

impl DiskQueueConfig {
    /// A queue in `dir` of at most 1 GiB per sink, synced every 100 ms.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 1 << 30,
            sync: SyncPolicy::default(),
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
    /// A sink's on-disk queue could not be opened.
    #[error("sink {sink}: cannot open its queue in {}", path.display())]
    QueueDir {
        /// The sink's name.
        sink: String,
        /// The sink's queue directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process (a second decoder) uses the sink's on-disk queue.
    #[error(
        "sink {sink}: its queue in {} is in use by another process (two decoders cannot share a --queue-dir)",
        path.display()
    )]
    QueueLocked {
        /// The sink's name.
        sink: String,
        /// The sink's queue directory.
        path: PathBuf,
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
