//! The decoder's one text format: OTLP/JSON, one request per line.
//!
//! Every output that prints requests (`ue-decoder decode`, the stdout and file sinks, the
//! archive sink's objects) goes through [`otlp_json`], so they all agree byte for byte.

use crate::decode::Request;

/// Formats one request as a single line of JSON (no trailing newline):
/// `{"signal":"metrics","request":{...}}`, `{"signal":"traces",...}` or `{"signal":"logs",...}`.
///
/// `request` is the OTLP/JSON encoding of the `ExportMetricsServiceRequest`,
/// `ExportTraceServiceRequest` or `ExportLogsServiceRequest`, as `opentelemetry-proto` maps it (the OTLP specification's
/// JSON mapping: lowerCamelCase field names, trace and span ids as hex, 64-bit integers
/// as strings, enums as numbers; most fields are written even at their default value,
/// which receivers accept), so it can be sent as is to an OTLP/HTTP JSON endpoint of the
/// same signal.
pub fn otlp_json_line(request: &Request) -> String {
    format!(
        r#"{{"signal":"{}","request":{}}}"#,
        request.signal().as_str(),
        otlp_json(request)
    )
}

/// The OTLP/JSON encoding of the request alone, as [`otlp_json_line`] embeds it: the body
/// an OTLP/HTTP JSON endpoint of the request's signal takes, and what the archive sink
/// stores.
pub fn otlp_json(request: &Request) -> String {
    // Serializing to a String cannot fail for these types: every map key is a string and
    // the OTLP serializers never return errors (NaN and infinities become strings).
    match request {
        Request::Metrics(r) => serde_json::to_string(r),
        Request::Traces(r) => serde_json::to_string(r),
        Request::Logs(r) => serde_json::to_string(r),
    }
    .expect("OTLP messages serialize to JSON without error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
    use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn empty_requests() {
        assert_eq!(
            otlp_json_line(&Request::Metrics(ExportMetricsServiceRequest::default())),
            r#"{"signal":"metrics","request":{"resourceMetrics":[]}}"#
        );
        assert_eq!(
            otlp_json_line(&Request::Traces(ExportTraceServiceRequest::default())),
            r#"{"signal":"traces","request":{"resourceSpans":[]}}"#
        );
        assert_eq!(
            otlp_json_line(&Request::Logs(ExportLogsServiceRequest::default())),
            r#"{"signal":"logs","request":{"resourceLogs":[]}}"#
        );
    }

    #[test]
    fn follows_the_otlp_json_mapping() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
            name: "GET /".into(),
            start_time_unix_nano: 1_700_000_000_000_000_001,
            attributes: vec![KeyValue {
                key: "n".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(-5)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let line = otlp_json_line(&request);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let span = &v["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "ab".repeat(16));
        assert_eq!(span["spanId"], "0102030405060708");
        assert_eq!(span["startTimeUnixNano"], "1700000000000000001");
        assert_eq!(span["attributes"][0]["value"]["intValue"], "-5");
    }

    #[test]
    fn log_records_follow_the_otlp_json_mapping() {
        use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let record = LogRecord {
            time_unix_nano: 1_700_000_000_000_000_002,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::BytesValue(vec![1, 2, 255])),
            }),
            trace_id: vec![0xcd; 16],
            span_id: vec![0x11; 8],
            event_name: "login".into(),
            ..Default::default()
        };
        let request = Request::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let v: serde_json::Value = serde_json::from_str(&otlp_json_line(&request)).unwrap();
        assert_eq!(v["signal"], "logs");
        let record = &v["request"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["timeUnixNano"], "1700000000000000002");
        assert_eq!(record["severityNumber"], 9);
        assert_eq!(record["severityText"], "INFO");
        assert_eq!(record["body"]["bytesValue"], "AQL/");
        assert_eq!(record["traceId"], "cd".repeat(16));
        assert_eq!(record["spanId"], "11".repeat(8));
        assert_eq!(record["eventName"], "login");
    }
}
