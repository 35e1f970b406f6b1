//! A real OTLP receiver on 127.0.0.1, for the sink tests, the demo and the VM end-to-end
//! test: OTLP/gRPC through opentelemetry-proto's tonic server stubs and OTLP/HTTP
//! (binary protobuf, gzip-aware) through hyper.
//!
//! It records every request it decodes, in arrival order, with its headers and the answer
//! it gave, and answers from a script: per signal, a queue of [`Respond`]s, then a default
//! (200 OK unless set). It can be stopped, which closes its listeners and every open
//! connection like a crashed collector, and restarted on the same ports. With
//! [`ReceiverBuilder::tls`] both listeners speak TLS only (rustls), as a collector with a
//! `tls` block does; handshakes that fail are dropped without a record.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tests::receiver::{Receiver, Respond};
//! use ue_decoder::Signal;
//!
//! let receiver = Receiver::start().await?;
//! receiver.script(Signal::Traces, [Respond::status(503).retry_after(1), Respond::Ok]);
//! // ... point an exporter at receiver.http_endpoint() ...
//! let accepted = receiver.accepted(Signal::Traces);
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service as _;
use tonic_types::{ErrorDetails, StatusExt as _};
pub use ue_decoder::{Request, Signal};
use ue_proto::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use ue_proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use ue_proto::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use ue_proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use ue_proto::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use ue_proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use ue_proto::common::v1::any_value;

/// The wire protocol a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP, binary protobuf.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl Protocol {
    /// `http` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// A `Retry-After` value to send.
#[derive(Clone, Debug, PartialEq)]
pub enum RetryAfter {
    /// Delta-seconds.
    Seconds(u64),
    /// An HTTP-date.
    Date(SystemTime),
}

/// How the receiver answers one request.
///
/// An HTTP status sent to a gRPC client, or a gRPC code to an HTTP client, becomes the
/// other protocol's answer with the same OTLP meaning (retryable or not, with or without a
/// server-given delay): see [`Respond::to_grpc`] and [`Respond::to_http`].
#[derive(Clone, Debug, PartialEq)]
pub enum Respond {
    /// Success.
    Ok,
    /// Success with a `partial_success` rejecting `rejected` data points or spans.
    PartialSuccess {
        /// Items reported rejected.
        rejected: i64,
        /// The `error_message`.
        message: String,
    },
    /// An HTTP failure status, with a `google.rpc.Status` body carrying `message`.
    Status {
        /// The HTTP status code.
        code: u16,
        /// A `Retry-After` header to send.
        retry_after: Option<RetryAfter>,
        /// The reason in the body.
        message: String,
    },
    /// A gRPC failure status.
    Grpc {
        /// The code.
        code: Code,
        /// A `google.rpc.RetryInfo` detail with this delay.
        retry_info: Option<Duration>,
        /// The status message.
        message: String,
    },
    /// The inner answer after a delay (a slow collector).
    Delayed(Duration, Box<Respond>),
}

impl Respond {
    /// An HTTP failure status.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
            message: format!("scripted HTTP {code}"),
        }
    }

    /// A gRPC failure status.
    pub fn grpc(code: Code) -> Self {
        Self::Grpc {
            code,
            retry_info: None,
            message: format!("scripted gRPC {code:?}"),
        }
    }

    /// A partial success rejecting `rejected` items.
    pub fn partial(rejected: i64, message: impl Into<String>) -> Self {
        Self::PartialSuccess {
            rejected,
            message: message.into(),
        }
    }

    /// Adds `Retry-After: secs` (HTTP) or a `RetryInfo` of `secs` (gRPC).
    pub fn retry_after(self, secs: u64) -> Self {
        self.with_delay_hint(RetryAfter::Seconds(secs))
    }

    /// Adds `Retry-After: <HTTP-date>`.
    pub fn retry_after_date(self, at: SystemTime) -> Self {
        self.with_delay_hint(RetryAfter::Date(at))
    }

    /// Adds a `RetryInfo` of `delay` (gRPC) or the `Retry-After` rounding it up (HTTP).
    pub fn retry_info(self, delay: Duration) -> Self {
        match self {
            Self::Grpc { code, message, .. } => Self::Grpc {
                code,
                retry_info: Some(delay),
                message,
            },
            Self::Delayed(d, inner) => Self::Delayed(d, Box::new(inner.retry_info(delay))),
            other => other.retry_after(delay.as_secs_f64().ceil() as u64),
        }
    }

    fn with_delay_hint(self, hint: RetryAfter) -> Self {
        match self {
            Self::Status { code, message, .. } => Self::Status {
                code,
                retry_after: Some(hint),
                message,
            },
            Self::Grpc { code, message, .. } => Self::Grpc {
                code,
                retry_info: Some(match hint {
                    RetryAfter::Seconds(s) => Duration::from_secs(s),
                    RetryAfter::Date(at) => {
                        at.duration_since(SystemTime::now()).unwrap_or_default()
                    }
                }),
                message,
            },
            Self::Delayed(d, inner) => Self::Delayed(d, Box::new(inner.with_delay_hint(hint))),
            other => panic!("a retry hint on {other:?}, which is no failure"),
        }
    }

    /// Replaces the failure's message.
    pub fn message(self, text: impl Into<String>) -> Self {
        match self {
            Self::Status {
                code, retry_after, ..
            } => Self::Status {
                code,
                retry_after,
                message: text.into(),
            },
            Self::Grpc {
                code, retry_info, ..
            } => Self::Grpc {
                code,
                retry_info,
                message: text.into(),
            },
            Self::PartialSuccess { rejected, .. } => Self::PartialSuccess {
                rejected,
                message: text.into(),
            },
            Self::Delayed(d, inner) => Self::Delayed(d, Box::new(inner.message(text))),
            Self::Ok => Self::Ok,
        }
    }

    /// The same answer after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Self::Delayed(delay, Box::new(self))
    }

    /// Whether the request was accepted (wholly or partly).
    pub fn is_success(&self) -> bool {
        match self {
            Self::Ok | Self::PartialSuccess { .. } => true,
            Self::Status { .. } | Self::Grpc { .. } => false,
            Self::Delayed(_, inner) => inner.is_success(),
        }
    }

    /// This answer as a gRPC one: the HTTP statuses the OTLP specification retries become
    /// UNAVAILABLE, or RESOURCE_EXHAUSTED with `RetryInfo` when a `Retry-After` was set;
    /// the others their usual codes, all permanent.
    pub fn to_grpc(&self) -> Self {
        match self {
            Self::Status {
                code,
                retry_after,
                message,
            } => {
                let retry_info = retry_after.as_ref().map(|r| match r {
                    RetryAfter::Seconds(s) => Duration::from_secs(*s),
                    RetryAfter::Date(at) => {
                        at.duration_since(SystemTime::now()).unwrap_or_default()
                    }
                });
                let code = match code {
                    400 => Code::InvalidArgument,
                    401 => Code::Unauthenticated,
                    403 => Code::PermissionDenied,
                    404 => Code::Unimplemented,
                    413 => Code::ResourceExhausted,
                    429 if retry_info.is_some() => Code::ResourceExhausted,
                    429 | 502 | 503 | 504 => Code::Unavailable,
                    500 => Code::Internal,
                    _ => Code::Unknown,
                };
                Self::Grpc {
                    code,
                    retry_info,
                    message: message.clone(),
                }
            }
            Self::Delayed(d, inner) => Self::Delayed(*d, Box::new(inner.to_grpc())),
            other => other.clone(),
        }
    }

    /// This answer as an HTTP one: retryable codes become 503 (or 429 for
    /// RESOURCE_EXHAUSTED with `RetryInfo`, 504 for DEADLINE_EXCEEDED), `RetryInfo` a
    /// `Retry-After`; the others their usual statuses, all permanent.
    pub fn to_http(&self) -> Self {
        match self {
            Self::Grpc {
                code,
                retry_info,
                message,
            } => {
                let status = match code {
                    Code::InvalidArgument | Code::FailedPrecondition => 400,
                    Code::Unauthenticated => 401,
                    Code::PermissionDenied => 403,
                    Code::NotFound | Code::Unimplemented => 404,
                    Code::ResourceExhausted if retry_info.is_some() => 429,
                    Code::ResourceExhausted => 413,
                    Code::DeadlineExceeded => 504,
                    Code::Cancelled
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss => 503,
                    _ => 500,
                };
                Self::Status {
                    code: status,
                    retry_after: retry_info
                        .map(|d| RetryAfter::Seconds(d.as_secs_f64().ceil() as u64)),
                    message: message.clone(),
                }
            }
            Self::Delayed(d, inner) => Self::Delayed(*d, Box::new(inner.to_http())),
            other => other.clone(),
        }
    }

    /// The delay before answering, and the answer.
    fn split(&self) -> (Duration, &Respond) {
        match self {
            Self::Delayed(d, inner) => {
                let (more, answer) = inner.split();
                (*d + more, answer)
            }
            other => (Duration::ZERO, other),
        }
    }
}

/// One request the receiver decoded.
#[derive(Clone, Debug)]
pub struct Received {
    /// The protocol it came in on.
    pub protocol: Protocol,
    /// The decoded request.
    pub request: Request,
    /// Its HTTP headers; for gRPC, its metadata (the HTTP/2 headers, `grpc-encoding`
    /// included).
    pub headers: HeaderMap,
    /// When it arrived (its body read).
    pub at: Instant,
    /// The same on the wall clock, to compare with HTTP-dates.
    pub wall: SystemTime,
    /// How the receiver answered it.
    pub answer: Respond,
}

impl Received {
    /// The request's signal.
    pub fn signal(&self) -> Signal {
        self.request.signal()
    }

    /// Data points or spans in it.
    pub fn items(&self) -> u64 {
        self.request.items()
    }

    /// Whether it was accepted (wholly or partly).
    pub fn accepted(&self) -> bool {
        self.answer.is_success()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first resource's `service.name`, if any.
    pub fn service_name(&self) -> Option<String> {
        let attributes = match &self.request {
            Request::Metrics(r) => r.resource_metrics.first()?.resource.as_ref()?,
            Request::Traces(r) => r.resource_spans.first()?.resource.as_ref()?,
            Request::Logs(r) => r.resource_logs.first()?.resource.as_ref()?,
        };
        attributes
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    }
}

/// Called with each request as it is recorded (the `otlp-receiver` binary prints it).
pub type Observer = Arc<dyn Fn(&Received) + Send + Sync>;

#[derive(Default)]
struct Script {
    queued: HashMap<Signal, VecDeque<Respond>>,
    defaults: HashMap<Signal, Respond>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
    /// Whether requests are recorded: false once stopped.
    open: bool,
}

struct Shared {
    script: Mutex<Script>,
    log: Mutex<Log>,
    /// The number of requests recorded, to wait on.
    count: watch::Sender<usize>,
    observer: Option<Observer>,
    /// Whether requests are kept for [`Receiver::received`] once observed.
    keep: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock has failed already; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Picks the answer for a `request` that just arrived, and records both; once stopped,
    /// answers UNAVAILABLE and records nothing.
    fn arrive(&self, protocol: Protocol, request: Request, headers: HeaderMap) -> Respond {
        let signal = request.signal();
        // Held until recorded, so stopping and reading the log see whole requests only.
        let mut log = lock(&self.log);
        if !log.open {
            let stopped = Respond::grpc(Code::Unavailable).message("the receiver is stopped");
            return match protocol {
                Protocol::Http => stopped.to_http(),
                Protocol::Grpc => stopped,
            };
        }
        let answer = {
            let mut script = lock(&self.script);
            match script.queued.get_mut(&signal).and_then(VecDeque::pop_front) {
                Some(a) => a,
                None => script.defaults.get(&signal).cloned().unwrap_or(Respond::Ok),
            }
        };
        let answer = match protocol {
            Protocol::Http => answer.to_http(),
            Protocol::Grpc => answer.to_grpc(),
        };
        let received = Received {
            protocol,
            request,
            headers,
            at: Instant::now(),
            wall: SystemTime::now(),
            answer: answer.clone(),
        };
        if let Some(observe) = &self.observer {
            observe(&received);
        }
        if self.keep {
            log.requests.push(received);
        }
        drop(log);
        self.count.send_modify(|n| *n += 1);
        answer
    }
}

/// Where a [`Receiver`] listens and who is told of each request.
#[derive(Clone)]
pub struct ReceiverBuilder {
    http: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
    observer: Option<Observer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    keep: bool,
}

impl ReceiverBuilder {
    /// Keep every request for [`Receiver::received`] (the default), or only show each to
    /// the [`on_request`](Self::on_request) observer: for long, heavy runs.
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Listen for OTLP/HTTP on `addr` (port 0: any free one), or not at all.
    pub fn http(mut self, addr: Option<SocketAddr>) -> Self {
        self.http = addr;
        self
    }

    /// Listen for OTLP/gRPC on `addr` (port 0: any free one), or not at all.
    pub fn grpc(mut self, addr: Option<SocketAddr>) -> Self {
        self.grpc = addr;
        self
    }

    /// Serves TLS only, with `config` (which should offer ALPN `h2` for gRPC clients).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Calls `f` with each request as it is recorded.
    pub fn on_request(mut self, f: impl Fn(&Received) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Binds and starts serving.
    pub async fn start(self) -> std::io::Result<Receiver> {
        let (count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            script: Mutex::default(),
            log: Mutex::default(),
            count,
            observer: self.observer,
            keep: self.keep,
        });
        let mut receiver = Receiver {
            shared,
            http_addr: self.http,
            grpc_addr: self.grpc,
            tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
            servers: Vec::new(),
        };
        receiver.listen().await?;
        Ok(receiver)
    }
}

/// A running OTLP receiver. Dropping it stops it.
pub struct Receiver {
    shared: Arc<Shared>,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    servers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("http", &self.http_addr)
            .field("grpc", &self.grpc_addr)
            .field("running", &!self.servers.is_empty())
            .finish_non_exhaustive()
    }
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Receiver {
    /// A receiver for both protocols on 127.0.0.1, each on a free port.
    pub async fn start() -> std::io::Result<Receiver> {
        Self::builder().start().await
    }

    /// A builder, by default for both protocols on 127.0.0.1, each on a free port.
    pub fn builder() -> ReceiverBuilder {
        ReceiverBuilder {
            http: Some(loopback_any_port()),
            grpc: Some(loopback_any_port()),
            observer: None,
            tls: None,
            keep: true,
        }
    }

    async fn listen(&mut self) -> std::io::Result<()> {
        lock(&self.shared.log).open = true;
        if let Some(addr) = self.http_addr {
            let listener = TcpListener::bind(addr).await?;
            self.http_addr = Some(listener.local_addr()?);
            let shared = Arc::clone(&self.shared);
            let service = service_fn(move |req| handle_http(Arc::clone(&shared), req));
            self.servers
                .push(tokio::spawn(serve(listener, self.tls.clone(), service)));
        }
        if let Some(addr) = self.grpc_addr {
            let listener = TcpListener::bind(addr).await?;
            self.grpc_addr = Some(listener.local_addr()?);
            let otlp = Arc::new(GrpcOtlp(Arc::clone(&self.shared)));
            let metrics = MetricsServiceServer::from_arc(Arc::clone(&otlp))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE);
            let traces = TraceServiceServer::from_arc(Arc::clone(&otlp))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE);
            let logs = LogsServiceServer::from_arc(otlp)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE);
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let (mut metrics, mut traces, mut logs) =
                    (metrics.clone(), traces.clone(), logs.clone());
                async move {
                    let path = req.uri().path();
                    if path.starts_with("/opentelemetry.proto.collector.metrics.v1.MetricsService/")
                    {
                        metrics.call(req).await
                    } else if path
                        .starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/")
                    {
                        traces.call(req).await
                    } else if path
                        .starts_with("/opentelemetry.proto.collector.logs.v1.LogsService/")
                    {
                        logs.call(req).await
                    } else {
                        Ok(
                            tonic::Status::unimplemented(format!("no service at {path}"))
                                .into_http(),
                        )
                    }
                }
            });
            self.servers
                .push(tokio::spawn(serve(listener, self.tls.clone(), service)));
        }
        Ok(())
    }

    /// The OTLP/HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr.expect("the receiver listens for OTLP/HTTP")
    }

    /// The OTLP/gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr.expect("the receiver listens for OTLP/gRPC")
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS), the OTLP/HTTP base URL.
    pub fn http_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.http_addr())
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS), the OTLP/gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc_addr())
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Queues answers for the next requests of `signal`, after those already queued.
    pub fn script(&self, signal: Signal, answers: impl IntoIterator<Item = Respond>) {
        lock(&self.shared.script)
            .queued
            .entry(signal)
            .or_default()
            .extend(answers);
    }

    /// The answer to requests of `signal` once its script has run out.
    pub fn set_default(&self, signal: Signal, answer: Respond) {
        lock(&self.shared.script).defaults.insert(signal, answer);
    }

    /// Every request recorded so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.log).requests.clone()
    }

    /// The requests of `signal` recorded so far, in arrival order.
    pub fn received_of(&self, signal: Signal) -> Vec<Received> {
        lock(&self.shared.log)
            .requests
            .iter()
            .filter(|r| r.signal() == signal)
            .cloned()
            .collect()
    }

    /// The requests of `signal` that were accepted, in arrival order.
    pub fn accepted(&self, signal: Signal) -> Vec<Received> {
        lock(&self.shared.log)
            .requests
            .iter()
            .filter(|r| r.signal() == signal && r.accepted())
            .cloned()
            .collect()
    }

    /// Data points (metrics), spans (traces) or log records (logs) in the accepted requests of
    /// `signal`.
    pub fn accepted_items(&self, signal: Signal) -> u64 {
        self.accepted(signal).iter().map(Received::items).sum()
    }

    /// Waits until `done` holds for the requests recorded, or `timeout` passes; whether it
    /// held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> bool {
        let mut count = self.shared.count.subscribe();
        let wait = async {
            loop {
                if done(&lock(&self.shared.log).requests) {
                    return;
                }
                if count.changed().await.is_err() {
                    // Unreachable while self holds the sender; wait out the timeout.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until `n` requests in all have been recorded, or `timeout` passes; whether
    /// they were.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.len() >= n).await
    }

    /// Every accepted request as OTLP/JSON: `{"metrics": [...], "traces": [...], "logs": [...]}`,
    /// each
    /// element an `Export*ServiceRequest` in the OTLP JSON mapping.
    pub fn dump_json(&self) -> serde_json::Value {
        let log = lock(&self.shared.log);
        let mut metrics = Vec::new();
        let mut traces = Vec::new();
        let mut logs = Vec::new();
        for r in log.requests.iter().filter(|r| r.accepted()) {
            let value = match &r.request {
                Request::Metrics(m) => serde_json::to_value(m),
                Request::Traces(t) => serde_json::to_value(t),
                Request::Logs(l) => serde_json::to_value(l),
            }
            .expect("OTLP messages serialize to JSON");
            match r.signal() {
                Signal::Metrics => metrics.push(value),
                Signal::Traces => traces.push(value),
                Signal::Logs => logs.push(value),
            }
        }
        serde_json::json!({ "metrics": metrics, "traces": traces, "logs": logs })
    }

    /// Stops listening and closes every open connection, like a collector that crashed;
    /// from now on nothing more is recorded. What was recorded and scripted is kept.
    pub async fn stop(&mut self) {
        lock(&self.shared.log).open = false;
        for server in self.servers.drain(..) {
            server.abort();
            // Once the task is gone, its listener and its connections are closed.
            let _ = server.await;
        }
    }

    /// Listens again on the same addresses after [`stop`](Self::stop).
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        self.listen().await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The largest gRPC message accepted: well above a collector's 4 MiB default, so the
/// receiver is never what limits a test.
const MAX_MESSAGE: usize = 64 << 20;

/// Accepts connections until aborted, over TLS if `tls`. The connections are tasks of a
/// set this task owns, so aborting it closes them all at once.
async fn serve<S, B>(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, service: S)
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = service.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // A client hanging up mid-request, or failing the handshake, is no
                    // failure of the receiver.
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type HttpResponse = hyper::Response<Full<Bytes>>;

fn plain(status: StatusCode, text: String) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

async fn handle_http(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let signal = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/metrics") => Signal::Metrics,
        (&Method::POST, "/v1/traces") => Signal::Traces,
        (&Method::POST, "/v1/logs") => Signal::Logs,
        (method, path) => {
            return Ok(plain(
                StatusCode::NOT_FOUND,
                format!("no OTLP endpoint at {method} {path}"),
            ));
        }
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}"),
            ));
        }
    };
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return Ok(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type {content_type:?} is not application/x-protobuf"),
        ));
    }
    let body = match parts
        .headers
        .get(CONTENT_ENCODING)
        .map(HeaderValue::as_bytes)
    {
        None | Some(b"identity") => body.to_vec(),
        Some(b"gzip") => {
            let mut plain_body = Vec::new();
            if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain_body) {
                return Ok(plain(StatusCode::BAD_REQUEST, format!("gunzip: {e}")));
            }
            plain_body
        }
        Some(b"zstd") => match zstd::decode_all(&body[..]) {
            Ok(plain_body) => plain_body,
            Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, format!("unzstd: {e}"))),
        },
        Some(other) => {
            return Ok(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding {:?}", String::from_utf8_lossy(other)),
            ));
        }
    };
    let request = match Request::decode(signal, &body) {
        Ok(r) => r,
        Err(e) => {
            let status = tonic_types::Status {
                code: Code::InvalidArgument as i32,
                message: format!("cannot decode the {signal} request: {e}"),
                details: vec![],
            };
            return Ok(protobuf(StatusCode::BAD_REQUEST, status.encode_to_vec()));
        }
    };
    let answer = shared.arrive(Protocol::Http, request, parts.headers);
    let (delay, answer) = answer.split();
    tokio::time::sleep(delay).await;
    Ok(match answer {
        Respond::Ok => protobuf(StatusCode::OK, success_body(signal, None)),
        Respond::PartialSuccess { rejected, message } => protobuf(
            StatusCode::OK,
            success_body(signal, Some((*rejected, message.clone()))),
        ),
        Respond::Status {
            code,
            retry_after,
            message,
        } => {
            let status = tonic_types::Status {
                code: Code::Unknown as i32,
                message: message.clone(),
                details: vec![],
            };
            let mut response = protobuf(
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                status.encode_to_vec(),
            );
            if let Some(retry_after) = retry_after {
                let value = match retry_after {
                    RetryAfter::Seconds(s) => s.to_string(),
                    RetryAfter::Date(at) => httpdate::fmt_http_date(*at),
                };
                response.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from_str(&value).expect("digits and dates are valid headers"),
                );
            }
            response
        }
        // to_http turned these into statuses.
        Respond::Grpc { .. } | Respond::Delayed(..) => unreachable!("{answer:?}"),
    })
}

/// The protobuf `Export*ServiceResponse` of a success.
fn success_body(signal: Signal, partial: Option<(i64, String)>) -> Vec<u8> {
    match signal {
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
    }
}

/// The gRPC services, all answering from the shared script.
struct GrpcOtlp(Arc<Shared>);

impl GrpcOtlp {
    /// Records the request, waits as scripted, and gives the partial success to send (if
    /// any) or the failure status.
    fn answer(
        &self,
        request: Request,
        metadata: tonic::metadata::MetadataMap,
    ) -> impl Future<Output = Result<Option<(i64, String)>, tonic::Status>> + Send + 'static {
        let answer = self
            .0
            .arrive(Protocol::Grpc, request, metadata.into_headers());
        async move {
            let (delay, answer) = answer.split();
            tokio::time::sleep(delay).await;
            match answer {
                Respond::Ok => Ok(None),
                Respond::PartialSuccess { rejected, message } => {
                    Ok(Some((*rejected, message.clone())))
                }
                Respond::Grpc {
                    code,
                    retry_info: Some(delay),
                    message,
                } => Err(tonic::Status::with_error_details(
                    *code,
                    message.clone(),
                    ErrorDetails::with_retry_info(Some(*delay)),
                )),
                Respond::Grpc { code, message, .. } => {
                    Err(tonic::Status::new(*code, message.clone()))
                }
                // to_grpc turned these into codes.
                Respond::Status { .. } | Respond::Delayed(..) => unreachable!("{answer:?}"),
            }
        }
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcOtlp {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let partial = self.answer(Request::Metrics(message), metadata).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl TraceService for GrpcOtlp {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let partial = self.answer(Request::Traces(message), metadata).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcOtlp {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let (metadata, _, message) = request.into_parts();
        let partial = self.answer(Request::Logs(message), metadata).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: partial.map(|(rejected, message)| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_map_to_grpc_with_the_same_meaning() {
        let grpc = |r: Respond| match r.to_grpc() {
            Respond::Grpc {
                code, retry_info, ..
            } => (code, retry_info),
            other => panic!("{other:?}"),
        };
        assert_eq!(grpc(Respond::status(503)), (Code::Unavailable, None));
        assert_eq!(
            grpc(Respond::status(503).retry_after(2)),
            (Code::Unavailable, Some(Duration::from_secs(2)))
        );
        assert_eq!(grpc(Respond::status(429)), (Code::Unavailable, None));
        assert_eq!(
            grpc(Respond::status(429).retry_after(1)),
            (Code::ResourceExhausted, Some(Duration::from_secs(1)))
        );
        assert_eq!(grpc(Respond::status(400)), (Code::InvalidArgument, None));
        assert_eq!(Respond::Ok.to_grpc(), Respond::Ok);
    }

    #[test]
    fn grpc_answers_map_to_http_with_the_same_meaning() {
        let http = |r: Respond| match r.to_http() {
            Respond::Status {
                code, retry_after, ..
            } => (code, retry_after),
            other => panic!("{other:?}"),
        };
        assert_eq!(http(Respond::grpc(Code::Unavailable)), (503, None));
        assert_eq!(http(Respond::grpc(Code::ResourceExhausted)), (413, None));
        assert_eq!(
            http(Respond::grpc(Code::ResourceExhausted).retry_info(Duration::from_millis(1500))),
            (429, Some(RetryAfter::Seconds(2)))
        );
        assert_eq!(http(Respond::grpc(Code::InvalidArgument)), (400, None));
    }

    #[test]
    fn delays_nest() {
        let r = Respond::Ok
            .after(Duration::from_millis(5))
            .after(Duration::from_millis(7));
        assert_eq!(r.split(), (Duration::from_millis(12), &Respond::Ok));
        assert!(r.is_success());
        assert!(!Respond::status(503).after(Duration::ZERO).is_success());
    }
}
