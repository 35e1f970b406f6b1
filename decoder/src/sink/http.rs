//! The `otlp-http` sink: OTLP/HTTP with binary protobuf bodies.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use ue_proto::collector::logs::v1::ExportLogsServiceResponse;
use ue_proto::collector::metrics::v1::ExportMetricsServiceResponse;
use ue_proto::collector::trace::v1::ExportTraceServiceResponse;

use super::retry::parse_retry_after;
use super::tls::{self, Trust};
use super::transport::PartialSuccess;
use super::{Compression, OtlpConfig, Outcome, SinkError, error_chain};
use crate::batch::Batch;
use crate::decode::Signal;

/// What the OTLP specification says a response status calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpClass {
    /// 2xx: accepted, maybe partially.
    Success,
    /// 429, 502, 503, 504: try again later.
    Retryable,
    /// Anything else: the same request will fail the same way.
    Permanent,
}

/// Classifies a response status as the OTLP/HTTP specification does: only 429, 502, 503
/// and 504 are retryable.
pub(crate) fn classify_status(status: u16) -> HttpClass {
    match status {
        200..=299 => HttpClass::Success,
        429 | 502 | 503 | 504 => HttpClass::Retryable,
        _ => HttpClass::Permanent,
    }
}

/// The OTLP/HTTP path of a signal's requests.
fn http_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Metrics => "/v1/metrics",
        Signal::Traces => "/v1/traces",
        Signal::Logs => "/v1/logs",
    }
}

/// The sink's URL for each signal, in the order of [`Signal::ALL`], per the endpoint rules of
/// [`OtlpConfig::endpoint`].
pub(crate) fn signal_urls(endpoint: &str) -> Result<[Url; 3], String> {
    let base = Url::parse(endpoint).map_err(|e| e.to_string())?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", base.scheme()));
    }
    if base.cannot_be_a_base() || base.host().is_none() {
        return Err("no host".into());
    }
    let path = base.path().trim_end_matches('/');
    let prefix = Signal::ALL
        .iter()
        .find_map(|s| path.strip_suffix(http_path(*s)))
        .unwrap_or(path)
        .to_owned();
    Ok(Signal::ALL.map(|s| {
        let mut url = base.clone();
        url.set_path(&format!("{prefix}{}", http_path(s)));
        url
    }))
}

/// The user's request headers, each value marked sensitive (kept out of logs); `sink`
/// names the sink in the error for one that is not a valid header.
pub(crate) fn user_headers(
    sink: &'static str,
    headers: &[(String, String)],
) -> Result<HeaderMap, SinkError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = |reason: String| SinkError::InvalidHeader {
            sink,
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut v = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        v.set_sensitive(true);
        map.append(n, v);
    }
    Ok(map)
}

/// Builds the request headers: the user's, then the content type (which must be ours).
fn header_map(
    headers: &[(String, String)],
    compression: Compression,
) -> Result<HeaderMap, SinkError> {
    let mut map = user_headers("otlp-http", headers)?;
    map.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    match compression {
        Compression::Gzip => {
            map.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Compression::Zstd => {
            map.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        }
        _ => {
            map.remove(CONTENT_ENCODING);
        }
    }
    Ok(map)
}

/// An OTLP/HTTP client for every signal.
#[derive(Debug)]
pub(crate) struct HttpSink {
    client: reqwest::Client,
    urls: [Url; 3],
    headers: HeaderMap,
    timeout: Duration,
    compression: Compression,
    trust: Trust,
}

impl HttpSink {
    /// Checks the configuration and builds the client; connects only when sending.
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, SinkError> {
        let urls = signal_urls(&config.endpoint).map_err(|reason| SinkError::InvalidEndpoint {
            sink: "otlp-http",
            endpoint: config.endpoint.clone(),
            reason,
        })?;
        let https = urls[0].scheme() == "https";
        tls::require_https("otlp-http", &config.tls, https)?;
        tls::check("otlp-http", &config.tls)?;
        let builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .user_agent(concat!("ue-decoder/", env!("CARGO_PKG_VERSION")));
        let client = tls::reqwest_tls(builder, &config.tls)?
            .build()
            .map_err(SinkError::HttpClient)?;
        Ok(Self {
            client,
            urls,
            headers: header_map(&config.headers, config.compression)?,
            timeout: config.timeout,
            compression: config.compression,
            trust: Trust::new(&config.tls).over_https(https),
        })
    }

    /// The body for `batch`, encoded once for all its attempts and sinks.
    pub(crate) fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        super::compress::body(batch, self.compression)
    }

    /// One attempt at sending `body`, a `signal` request.
    pub(crate) async fn send(&self, signal: Signal, body: Bytes) -> Outcome {
        let url = match signal {
            Signal::Metrics => &self.urls[0],
            Signal::Traces => &self.urls[1],
            Signal::Logs => &self.urls[2],
        };
        let result = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body)
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            // A request that could not be built fails the same way every time; anything
            // else (refused, reset, timed out) is the network's, and retryable.
            Err(e) if e.is_builder() => {
                return Outcome::Permanent(format!("POST {url}: {}", error_chain(&e)));
            }
            Err(e) => {
                return Outcome::Retry {
                    error: format!("POST {url}: {}", self.trust.describe(&e)),
                    after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let protobuf = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-protobuf"));
        // The body of a success carries partial_success; that of a failure, the reason.
        // Reading it failing after the status arrived changes neither the decision.
        let body = response.bytes().await.unwrap_or_default();
        match classify_status(status.as_u16()) {
            HttpClass::Success => sent(signal, &body),
            HttpClass::Retryable => Outcome::Retry {
                error: describe_failure(url, status, protobuf, &body),
                after: retry_after,
            },
            HttpClass::Permanent => {
                Outcome::Permanent(describe_failure(url, status, protobuf, &body))
            }
        }
    }
}

/// A success response's outcome: what its body's partial_success reports rejected, or
/// nothing rejected if the body is empty or not an OTLP response.
pub(crate) fn sent(signal: Signal, body: &[u8]) -> Outcome {
    let decoded = match signal {
        Signal::Metrics => ExportMetricsServiceResponse::decode(body).map(|r| r.outcome()),
        Signal::Traces => ExportTraceServiceResponse::decode(body).map(|r| r.outcome()),
        Signal::Logs => ExportLogsServiceResponse::decode(body).map(|r| r.outcome()),
    };
    decoded.unwrap_or(Outcome::Sent {
        rejected: 0,
        message: String::new(),
    })
}

/// `POST <url>: HTTP 400 Bad Request: <message>`, the message from the body's
/// `google.rpc.Status` if it is one, else the body's text if it is short text.
fn describe_failure(url: &Url, status: StatusCode, protobuf: bool, body: &[u8]) -> String {
    let mut text = format!("POST {url}: HTTP {status}");
    if let Some(message) = failure_message(protobuf, body) {
        text.push_str(": ");
        text.push_str(&message);
    }
    text
}

/// The reason an OTLP/HTTP server gave for a failure, if any.
pub(crate) fn failure_message(protobuf: bool, body: &[u8]) -> Option<String> {
    const MAX: usize = 512;
    if body.is_empty() {
        return None;
    }
    let message = if protobuf {
        tonic_types::Status::decode(body).ok()?.message
    } else {
        String::from_utf8_lossy(body).trim().to_owned()
    };
    if message.is_empty() {
        return None;
    }
    let mut end = message.len().min(MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Some(message[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::logs::v1::ExportLogsPartialSuccess;
    use ue_proto::collector::metrics::v1::ExportMetricsPartialSuccess;
    use ue_proto::collector::trace::v1::ExportTracePartialSuccess;

    use super::*;

    #[test]
    fn only_the_specs_statuses_are_retryable() {
        for s in [429, 502, 503, 504] {
            assert_eq!(classify_status(s), HttpClass::Retryable, "{s}");
        }
        for s in [200, 202, 204] {
            assert_eq!(classify_status(s), HttpClass::Success, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 405, 408, 413, 415, 500, 501, 505] {
            assert_eq!(classify_status(s), HttpClass::Permanent, "{s}");
        }
    }

    fn urls(endpoint: &str) -> Vec<String> {
        signal_urls(endpoint)
            .unwrap()
            .iter()
            .map(Url::to_string)
            .collect()
    }

    #[test]
    fn signal_paths_are_appended_to_the_base() {
        assert_eq!(
            urls("http://127.0.0.1:4318"),
            [
                "http://127.0.0.1:4318/v1/metrics",
                "http://127.0.0.1:4318/v1/traces",
                "http://127.0.0.1:4318/v1/logs"
            ]
        );
        assert_eq!(
            urls("https://gw.example/otlp/"),
            [
                "https://gw.example/otlp/v1/metrics",
                "https://gw.example/otlp/v1/traces",
                "https://gw.example/otlp/v1/logs"
            ]
        );
        assert_eq!(
            urls("http://c:4318/x?tenant=a"),
            [
                "http://c:4318/x/v1/metrics?tenant=a",
                "http://c:4318/x/v1/traces?tenant=a",
                "http://c:4318/x/v1/logs?tenant=a"
            ]
        );
    }

    #[test]
    fn a_per_signal_url_is_kept_and_gives_its_sibling() {
        assert_eq!(
            urls("http://c:4318/v1/traces"),
            [
                "http://c:4318/v1/metrics",
                "http://c:4318/v1/traces",
                "http://c:4318/v1/logs"
            ]
        );
        assert_eq!(
            urls("http://c/p/v1/logs"),
            [
                "http://c/p/v1/metrics",
                "http://c/p/v1/traces",
                "http://c/p/v1/logs"
            ]
        );
    }

    #[test]
    fn bad_endpoints_say_why() {
        assert!(signal_urls("127.0.0.1:4318").is_err());
        assert!(signal_urls("ftp://c/").unwrap_err().contains("ftp"));
        assert!(signal_urls("not a url").is_err());
    }

    #[test]
    fn headers_keep_the_users_and_force_the_content_type() {
        let map = header_map(
            &[
                ("Authorization".into(), "Bearer x".into()),
                ("content-type".into(), "text/plain".into()),
                ("x-tenant".into(), "a".into()),
            ],
            Compression::Gzip,
        )
        .unwrap();
        assert_eq!(map["authorization"], "Bearer x");
        assert_eq!(map["x-tenant"], "a");
        assert_eq!(map[CONTENT_TYPE], "application/x-protobuf");
        assert_eq!(map[CONTENT_ENCODING], "gzip");
        assert_eq!(map.get_all(CONTENT_TYPE).iter().count(), 1);
        let err = header_map(&[("bad name".into(), "v".into())], Compression::None).unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
        assert!(header_map(&[("x".into(), "a\nb".into())], Compression::None).is_err());
        let zstd = header_map(
            &[("content-encoding".into(), "br".into())],
            Compression::Zstd,
        );
        assert_eq!(zstd.unwrap()[CONTENT_ENCODING], "zstd");
    }

    /// What a success response's body reports rejected.
    fn partial_success(signal: Signal, body: &[u8]) -> (u64, String) {
        match sent(signal, body) {
            Outcome::Sent { rejected, message } => (rejected, message),
            other => panic!("a success is sent, not {other:?}"),
        }
    }

    #[test]
    fn partial_success_is_read_from_either_response() {
        let metrics = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "bad points".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(Signal::Metrics, &metrics),
            (3, "bad points".into())
        );
        let traces = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: String::new(),
            }),
        }
        .encode_to_vec();
        assert_eq!(partial_success(Signal::Traces, &traces), (2, String::new()));
        assert_eq!(partial_success(Signal::Traces, b""), (0, String::new()));
        assert_eq!(partial_success(Signal::Traces, b"{}"), (0, String::new()));
        let logs = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 4,
                error_message: "bad records".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(Signal::Logs, &logs),
            (4, "bad records".into())
        );
    }

    #[test]
    fn failure_messages_come_from_a_status_or_text() {
        let status = tonic_types::Status {
            code: 3,
            message: "field resource_metrics is broken".into(),
            details: vec![],
        }
        .encode_to_vec();
        assert_eq!(
            failure_message(true, &status).as_deref(),
            Some("field resource_metrics is broken")
        );
        assert_eq!(failure_message(false, b" nope\n").as_deref(), Some("nope"));
        assert_eq!(failure_message(false, b""), None);
        let long = "é".repeat(400);
        let cut = failure_message(false, long.as_bytes()).unwrap();
        assert!(cut.len() <= 512 && cut.chars().all(|c| c == 'é'));
    }
}
