//! The `otlp-grpc` sink: OTLP/gRPC with tonic, sending each batch's protobuf bytes as
//! they are.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, EncodeBuf, Encoder};
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
    client: Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    trust: Trust,
}

/// The OTLP services' export methods.
const PATHS: [&str; 3] = [
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
];

/// A codec that sends an already encoded request as it is and decodes the response with
/// prost. The generated stubs take a decoded message and encode it again for every
/// attempt; a batch is already its encoding.
struct Passthrough<R>(PhantomData<R>);

impl<R: prost::Message + Default + Send + 'static> Codec for Passthrough<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder::default()
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
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
        let mut client = Grpc::new(endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        match config.compression {
            Compression::Gzip => client = client.send_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => client = client.send_compressed(CompressionEncoding::Zstd),
            _ => {}
        }
        Ok(Self {
            client,
            metadata: metadata_map(&config.headers)?,
            timeout: config.timeout,
            trust: Trust::new(&config.tls).over_https(https),
        })
    }

    /// One attempt at sending `protobuf`, an encoded `signal` request.
    pub(crate) async fn send(&self, signal: Signal, protobuf: Bytes) -> Outcome {
        let trust = &self.trust;
        match signal {
            Signal::Metrics => outcome(
                self.call::<ExportMetricsServiceResponse>(0, protobuf).await,
                trust,
            ),
            Signal::Traces => outcome(
                self.call::<ExportTraceServiceResponse>(1, protobuf).await,
                trust,
            ),
            Signal::Logs => outcome(
                self.call::<ExportLogsServiceResponse>(2, protobuf).await,
                trust,
            ),
        }
    }

    /// The unary call the generated client's `export` makes, with the bytes as they are.
    async fn call<R: prost::Message + Default + Send + 'static>(
        &self,
        path: usize,
        protobuf: Bytes,
    ) -> Result<tonic::Response<R>, Status> {
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
        client
            .unary(
                self.request(protobuf),
                PathAndQuery::from_static(PATHS[path]),
                Passthrough::<R>(PhantomData),
            )
            .await
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        request
    }
}

/// What a call's result calls for: a partial success's rejected items, or what its failure
/// calls for, led by what a failed TLS handshake means.
fn outcome<R: PartialSuccess>(
    result: Result<tonic::Response<R>, Status>,
    trust: &Trust,
) -> Outcome {
    match result {
        Ok(response) => response.into_inner().outcome(),
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
