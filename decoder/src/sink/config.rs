//! What sinks to start: [`SinkConfig`] (with [`OtlpConfig`] for either OTLP transport),
//! and why one could not start, [`SinkError`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::statsd::StatsdConfig;
use super::{ArchiveConfig, ClickHouseConfig, PrometheusConfig, RetryConfig};

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
    /// zstd at level -2, which the OpenTelemetry Collector accepts on both transports:
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
    /// The CA and client certificate of an `https://` endpoint.
    pub tls: TlsConfig,
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
            tls: TlsConfig::default(),
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

/// A PEM file, read once at start: its contents, and its path to name it in errors. Read
/// before the daemon drops its privileges, so that a key only root may read still works.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it holds.
    pub pem: Vec<u8>,
}

impl PemFile {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, SinkError> {
        std::fs::read(path)
            .map(|pem| Self {
                path: path.to_owned(),
                pem,
            })
            .map_err(|source| SinkError::ReadFile {
                path: path.to_owned(),
                source,
            })
    }
}

impl fmt::Debug for PemFile {
    /// The path alone: the contents may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PemFile").field(&self.path).finish()
    }
}

/// How an OTLP sink authenticates an `https://` collector, and itself to it. By default:
/// the system's CA roots, no client certificate. TLS is rustls, whatever the transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates to trust instead of the system's roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub ca: Option<PemFile>,
    /// The client certificate chain for mutual TLS (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`).
    pub client_cert: Option<PemFile>,
    /// The client certificate's private key (`OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    pub client_key: Option<PemFile>,
}

impl TlsConfig {
    /// Reads the files given; fails naming the first one that cannot be read.
    pub fn from_files(
        ca: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, SinkError> {
        let read = |path: Option<&Path>| path.map(PemFile::read).transpose();
        Ok(Self {
            ca: read(ca)?,
            client_cert: read(client_cert)?,
            client_key: read(client_key)?,
        })
    }

    /// Whether anything differs from the defaults, which only `https://` can use.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// Reads request headers from `path`: one `name: value` per line; blank lines and lines
/// starting with `#` are skipped. Keeps secrets such as API keys off the command line,
/// where every user sees them in `ps`.
pub fn read_headers_file(path: &Path) -> Result<Vec<(String, String)>, SinkError> {
    let text = std::fs::read_to_string(path).map_err(|source| SinkError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse_header_lines(&text).map_err(|(line, reason)| SinkError::HeadersFile {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// The headers of a headers file's text, or the 1-based line that is not `name: value`.
pub(crate) fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err((i + 1, "expected `name: value`".into()));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err((i + 1, "the header name is empty".into()));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(headers)
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
    /// Metrics as DogStatsD lines over UDP or a Unix datagram socket.
    Statsd(StatsdConfig),
    /// The metrics as Prometheus series, served for scraping (traces and logs skip it).
    Prometheus(PrometheusConfig),
    /// Spans, log records and metric points as rows of ClickHouse tables.
    ClickHouse(ClickHouseConfig),
    /// Gzip'd OTLP/JSON objects in object storage: spans per trace, logs and metrics per
    /// batch.
    Archive(ArchiveConfig),
}

impl SinkConfig {
    /// Checks what can be checked without starting the sink: that its PEM files hold
    /// what they should. A daemon calls it before it opens anything else, so that a wrong
    /// file fails at once, named.
    pub fn check(&self) -> Result<(), SinkError> {
        match self {
            Self::Otlp(c) => super::tls::check(c.protocol.sink_kind(), &c.tls),
            Self::Stdout
            | Self::File(_)
            | Self::Statsd(_)
            | Self::Prometheus(_)
            | Self::ClickHouse(_) => Ok(()),
            Self::Archive(_) => Ok(()),
        }
    }

    /// The sink's name in snapshots and logs, e.g. `otlp-http http://127.0.0.1:4318`.
    pub fn name(&self) -> String {
        match self {
            Self::Otlp(c) => format!("{} {}", c.protocol.sink_kind(), c.endpoint),
            Self::Stdout => "stdout".into(),
            Self::File(path) => format!("file {}", path.display()),
            Self::Statsd(c) => c.name(),
            Self::Prometheus(c) => format!("prometheus http://{}/metrics", c.addr),
            Self::ClickHouse(c) => c.name(),
            Self::Archive(c) => c.name(),
        }
    }

    /// Whether the sink takes batches of `signal` (DogStatsD and Prometheus: metrics only).
    pub(crate) fn takes(&self, signal: crate::decode::Signal) -> bool {
        !matches!(self, Self::Prometheus(_) | Self::Statsd(_))
            || signal == crate::decode::Signal::Metrics
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

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    /// Milliseconds (group commit; 0 is `batch`), `batch` or `never`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(Self::EveryBatch),
            "never" => Ok(Self::Never),
            ms => match ms.parse::<u64>() {
                Ok(0) => Ok(Self::EveryBatch),
                Ok(ms) => Ok(Self::Interval(Duration::from_millis(ms))),
                Err(_) => Err(format!(
                    "expected milliseconds, `batch` or `never`, got {s:?}"
                )),
            },
        }
    }
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
    /// A file the sink needs (a PEM file, a headers file) could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line of a headers file is not `name: value`.
    #[error("{}:{line}: {reason}", path.display())]
    HeadersFile {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM file does not hold what it should.
    #[error("{sink} sink: {}: {reason}", path.display())]
    InvalidPem {
        /// The sink's kind.
        sink: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS settings do not fit together or with the endpoint.
    #[error("{sink} sink: {reason}")]
    Tls {
        /// The sink's kind.
        sink: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. the system's TLS roots).
    #[error("otlp-http sink: cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The ClickHouse sink's HTTP client could not be built (e.g. the system's TLS roots).
    #[error("clickhouse sink: cannot build the HTTP client")]
    ClickHouseClient(#[source] reqwest::Error),
    /// The file sink's directory could not be created.
    #[error("file sink: cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The DogStatsD sink's socket could not be opened or connected.
    #[error("{target} sink: cannot open the socket")]
    Statsd {
        /// The sink's name, with its address or path.
        target: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Prometheus sink could not listen on its address.
    #[error("prometheus sink: cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
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
    /// The archive sink's settings do not work, or its store cannot be opened.
    #[error("archive sink {url}: {reason}")]
    Archive {
        /// The archive's URL.
        url: String,
        /// What is wrong.
        reason: String,
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
