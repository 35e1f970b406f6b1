//! What sinks to start: [`SinkConfig`], and why one could not start, [`SinkError`].

use std::io;
use std::path::PathBuf;

use super::grpc::GrpcConfig;
use super::http::HttpConfig;

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
