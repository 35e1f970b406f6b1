//! The `otlp-grpc` sink: OTLP/gRPC over tonic's channel, sending each batch's protobuf
//! bytes as they are, compressed here (the same body the HTTP sink sends).
//!
//! The unary call is made by hand rather than through `tonic::client::Grpc`: tonic
//! compresses only as it frames a message, at a level it does not let callers choose, and
//! it copies the message into its own buffer. Here the 5-byte gRPC frame header goes
//! before the batch's shared (compressed) bytes, and tonic decodes the response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, TE, USER_AGENT};
use tonic::client::GrpcService as _;
use tonic::codec::Streaming;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;
use tonic_types::StatusExt as _;
use ue_proto::collector::logs::v1::ExportLogsServiceResponse;
use ue_proto::collector::metrics::v1::ExportMetricsServiceResponse;
use ue_proto::collector::trace::v1::ExportTraceServiceResponse;

use super::tls::{self, Trust};
use super::transport::PartialSuccess;
use super::{Compression, OtlpConfig, Outcome, SinkError};
use crate::decode::Signal;

/// What the OTLP specification says a failed call's status calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrpcClass {
    /// Try again later.
    Retryable,
    /// The same request will fail the same way.
    Permanent,
}

/// Classifies a failed call's code as the OTLP/gRPC specification does. RESOURCE_EXHAUSTED
/// is retryable only with a `RetryInfo`, the server's sign that it will recover.
pub(crate) fn classify_code(code: Code, has_retry_info: bool) -> GrpcClass {
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => GrpcClass::Retryable,
        Code::ResourceExhausted if has_retry_info => GrpcClass::Retryable,
        _ => GrpcClass::Permanent,
    }
}

/// The `endpoint` with `http://` if it has no scheme.
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

fn metadata_map(headers: &[(String, String)]) -> Result<MetadataMap, SinkError> {
    let mut map = MetadataMap::new();
    for (name, value) in headers {
        let invalid = |reason: String| SinkError::InvalidHeader {
            sink: "otlp-grpc",
            name: name.clone(),
            reason,
        };
        let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let value =
            AsciiMetadataValue::try_from(value.as_str()).map_err(|e| invalid(e.to_string()))?;
        map.append(key, value);
    }
    Ok(map)
}

/// An OTLP/gRPC client for every signal over one lazily connected channel.
#[derive(Debug)]
pub(crate) struct GrpcSink {
    channel: Channel,
    /// The user's metadata and the call's fixed headers.
    headers: HeaderMap,
    compression: Compression,
    /// Where the TLS trust comes from, to explain a failed handshake.
    trust: Trust,
}

/// The OTLP services' export methods.
const PATHS: [&str; 3] = [
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
];

/// A request body of one gRPC message: its frame header, then its bytes, which are sent
/// from where they are.
struct Message {
    header: Option<Bytes>,
    payload: Option<Bytes>,
}

impl Message {
    /// The length-prefixed message: the compressed flag, the length, then `payload`.
    fn new(payload: Bytes, compressed: bool) -> Result<Self, Status> {
        let len = u32::try_from(payload.len())
            .map_err(|_| Status::resource_exhausted("a batch over 4 GiB"))?;
        let mut header = [0u8; 5];
        header[0] = u8::from(compressed);
        header[1..].copy_from_slice(&len.to_be_bytes());
        Ok(Self {
            header: Some(Bytes::copy_from_slice(&header)),
            payload: Some(payload),
        })
    }
}

impl http_body::Body for Message {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.header.take().or_else(|| self.payload.take());
        Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.header.is_none() && self.payload.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.header.as_ref().map_or(0, Bytes::len)
            + self.payload.as_ref().map_or(0, Bytes::len);
        http_body::SizeHint::with_exact(len as u64)
    }
}

impl GrpcSink {
    /// Checks the configuration and builds the clients; connects (and reconnects) only
    /// when sending. Must run inside a tokio runtime.
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, SinkError> {
        let url = with_scheme(&config.endpoint);
        let invalid = |reason: String| SinkError::InvalidEndpoint {
            sink: "otlp-grpc",
            endpoint: config.endpoint.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid(e.to_string()))?
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(invalid("scheme is not http or https".into()));
        }
        tls::require_https("otlp-grpc", &config.tls, https)?;
        if https {
            tls::check("otlp-grpc", &config.tls)?;
            endpoint = endpoint
                .tls_config(tls::tonic_tls(&config.tls))
                .map_err(|e| SinkError::Tls {
                    sink: "otlp-grpc",
                    reason: super::error_chain(&e),
                })?;
        }
        let mut headers = metadata_map(&config.headers)?.into_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ue-decoder/", env!("CARGO_PKG_VERSION"))),
        );
        let encoding = match config.compression {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            _ => None,
        };
        if let Some(encoding) = encoding {
            headers.insert(
                HeaderName::from_static("grpc-encoding"),
                HeaderValue::from_static(encoding),
            );
        }
        // gRPC's timeout format: at most 8 digits and a unit; milliseconds here.
        let millis = config.timeout.as_millis().clamp(1, 99_999_999);
        headers.insert(
            HeaderName::from_static("grpc-timeout"),
            HeaderValue::from_str(&format!("{millis}m")).expect("digits and a letter"),
        );
        Ok(Self {
            channel: endpoint.connect_lazy(),
            headers,
            compression: config.compression,
            trust: Trust::new(&config.tls).over_https(https),
        })
    }

    /// The body for `batch`, compressed as configured, made once for all its attempts
    /// and sinks.
    pub(crate) fn encode(&self, batch: &crate::batch::Batch) -> Result<Bytes, String> {
        super::compress::body(batch, self.compression)
    }

    /// One attempt at sending `body`, an encoded (and compressed, if so configured)
    /// `signal` request.
    pub(crate) async fn send(&self, signal: Signal, body: Bytes) -> Outcome {
        let trust = &self.trust;
        match signal {
            Signal::Metrics => outcome(
                self.call::<ExportMetricsServiceResponse>(0, body).await,
                trust,
            ),
            Signal::Traces => outcome(
                self.call::<ExportTraceServiceResponse>(1, body).await,
                trust,
            ),
            Signal::Logs => outcome(self.call::<ExportLogsServiceResponse>(2, body).await, trust),
        }
    }

    /// The unary call: headers, one message, then the response's message and trailers,
    /// judged as tonic's own client judges them.
    async fn call<R: prost::Message + Default + Send + 'static>(
        &self,
        path: usize,
        body: Bytes,
    ) -> Result<R, Status> {
        let message = Message::new(body, self.compression != Compression::None)?;
        let mut request = http::Request::new(tonic::body::Body::new(message));
        *request.uri_mut() = http::Uri::from_static(PATHS[path]);
        *request.method_mut() = http::Method::POST;
        *request.headers_mut() = self.headers.clone();
        let mut channel = self.channel.clone();
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
        let response = channel
            .call(request)
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        if let Some(status) = Status::from_header_map(response.headers()) {
            // Trailers only: no message follows.
            return Err(if status.code() == Code::Ok {
                Status::internal("Missing response message.")
            } else {
                status
            });
        }
        let status_code = response.status();
        let mut stream = Streaming::new_response(
            ProstDecoder::<R>::default(),
            response.into_body(),
            status_code,
            None,
            None,
        );
        let message = stream
            .message()
            .await?
            .ok_or_else(|| Status::internal("Missing response message."))?;
        stream.trailers().await?;
        Ok(message)
    }
}

/// What a call's result calls for: a partial success's rejected items, or what its failure
/// calls for, led by what a failed TLS handshake means.
fn outcome<R: PartialSuccess>(result: Result<R, Status>, trust: &Trust) -> Outcome {
    match result {
        Ok(response) => response.outcome(),
        Err(status) => match (outcome_of(&status), trust.explain(&status)) {
            (Outcome::Retry { error, after }, Some(why)) => Outcome::Retry {
                error: format!("{why}: {error}"),
                after,
            },
            (Outcome::Permanent(error), Some(why)) => Outcome::Permanent(format!("{why}: {error}")),
            (outcome, _) => outcome,
        },
    }
}

/// What to do after a call failed with `status`.
pub(crate) fn outcome_of(status: &Status) -> Outcome {
    let retry_delay = status
        .get_details_retry_info()
        .map(|info| info.retry_delay.unwrap_or_default());
    let error = describe(status);
    match classify_code(effective_code(status), retry_delay.is_some()) {
        GrpcClass::Retryable => Outcome::Retry {
            error,
            after: retry_delay,
        },
        GrpcClass::Permanent => Outcome::Permanent(error),
    }
}

/// The code to judge `status` by. tonic reports a connection that broke under a call
/// (reset, broken pipe) as UNKNOWN with the transport error as its source, where gRPC's own
/// clients say UNAVAILABLE, and the OTLP specification retries connection failures. A
/// status the server sent has no source, so its UNKNOWN stays permanent.
fn effective_code(status: &Status) -> Code {
    match status.code() {
        Code::Unknown if std::error::Error::source(status).is_some() => Code::Unavailable,
        code => code,
    }
}

/// `gRPC UNAVAILABLE: <message>` with the transport's underlying cause, if any.
fn describe(status: &Status) -> String {
    let mut text = format!("gRPC {:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&super::error_chain(source));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn only_the_specs_codes_are_retryable() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert_eq!(classify_code(code, false), GrpcClass::Retryable, "{code:?}");
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            Code::ResourceExhausted,
        ] {
            assert_eq!(classify_code(code, false), GrpcClass::Permanent, "{code:?}");
        }
        assert_eq!(
            classify_code(Code::ResourceExhausted, true),
            GrpcClass::Retryable
        );
    }

    #[test]
    fn retry_info_is_the_next_delay() {
        let status = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        match outcome_of(&status) {
            Outcome::Retry { error, after } => {
                assert_eq!(after, Some(Duration::from_millis(1500)));
                assert!(error.contains("ResourceExhausted") && error.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
        let plain = Status::resource_exhausted("full");
        assert!(matches!(outcome_of(&plain), Outcome::Permanent(e) if e.contains("full")));
        let unavailable = Status::unavailable("down");
        assert!(matches!(
            outcome_of(&unavailable),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn a_broken_connection_is_retryable_but_a_servers_unknown_is_not() {
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        match outcome_of(&broken) {
            Outcome::Retry { error, after: None } => {
                assert!(error.contains("connection reset"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        let from_server = Status::unknown("the server does not know");
        assert!(matches!(outcome_of(&from_server), Outcome::Permanent(_)));
    }

    #[test]
    fn metadata_names_are_lowercased_and_checked() {
        let map = metadata_map(&[("X-Tenant".into(), "a".into())]).unwrap();
        assert_eq!(map.get("x-tenant").unwrap(), "a");
        assert!(metadata_map(&[("bad name".into(), "v".into())]).is_err());
        assert!(metadata_map(&[("x".into(), "a\nb".into())]).is_err());
    }

    #[test]
    fn a_bare_host_port_gets_http() {
        assert_eq!(with_scheme("127.0.0.1:4317"), "http://127.0.0.1:4317");
        assert_eq!(with_scheme("https://c:4317"), "https://c:4317");
    }
}
