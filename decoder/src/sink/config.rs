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
    /// gzip at its fastest level, what every OTLP receiver accepts.
    Gzip,
    /// zstd at level 1, which the OpenTelemetry Collector accepts on both transports:
    /// several times cheaper than gzip for a smaller result.
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
    /// Requests in flight at once (at least 1): batches are sent concurrently, and
    /// acknowledged in any order, so one slow round trip does not hold up the others.
    pub max_inflight: usize,
}

impl OtlpConfig {
    /// The OTLP specification's defaults for `protocol`: its default endpoint, a 10 s
    /// timeout, no compression; the Collector's retry schedule; 4 requests in flight.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            endpoint: protocol.default_endpoint().into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            retry: RetryConfig::default(),
            max_inflight: 4,
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
