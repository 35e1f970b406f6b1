//! Flattening OTLP requests to one entry per data point, span or log record, so that requests compare
//! equal however they were packed into events (and NaN compares by its bits); and small
//! requests for the decoder's tests.
//!
//! The flatteners take a request of either family of OTLP types, the exporter's
//! (`opentelemetry-proto`, what the SDK converts to) or the decoder's (`ue-proto`): they
//! compare by encoding, which is the same for both.

use prost::Message;
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use ue_proto::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use ue_proto::resource::v1::Resource;
use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use ue_wire::layout;

/// `req` as the decoder's type `T`, through its encoding.
fn recode<T: Message + Default>(req: &impl Message) -> T {
    T::decode(req.encode_to_vec().as_slice()).expect("the same OTLP message, re-encoded")
}

/// One entry per data point: its resource, scope and metric metadata and the point, each
/// encoded, in request order. `req` is an `ExportMetricsServiceRequest` of either family.
pub fn metric_points(req: &impl Message) -> Vec<Vec<u8>> {
    let req: ExportMetricsServiceRequest = recode(req);
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let rm_shell = ResourceMetrics {
            scope_metrics: vec![],
            ..rm.clone()
        }
        .encode_to_vec();
        for sm in &rm.scope_metrics {
            let sm_shell = ScopeMetrics {
                metrics: vec![],
                ..sm.clone()
            }
            .encode_to_vec();
            for m in &sm.metrics {
                let mut shell = m.clone();
                shell.take_points();
                let shell = shell.encode_to_vec();
                for p in m.encoded_points() {
                    out.push([&rm_shell[..], &sm_shell, &shell, &p].concat());
                }
            }
        }
    }
    out
}

/// One entry per span: its resource and scope metadata and the span, encoded. `req` is an
/// `ExportTraceServiceRequest` of either family.
pub fn spans(req: &impl Message) -> Vec<Vec<u8>> {
    let req: ExportTraceServiceRequest = recode(req);
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let rs_shell = ResourceSpans {
            scope_spans: vec![],
            ..rs.clone()
        }
        .encode_to_vec();
        for ss in &rs.scope_spans {
            let ss_shell = ScopeSpans {
                spans: vec![],
                ..ss.clone()
            }
            .encode_to_vec();
            for s in &ss.spans {
                out.push([&rs_shell[..], &ss_shell, &s.encode_to_vec()].concat());
            }
        }
    }
    out
}

/// One entry per log record: `(its resource and scope metadata, the record)`, each encoded,
/// in request order. `req` is an `ExportLogsServiceRequest` of either family.
pub fn scoped_log_records(req: &impl Message) -> Vec<(Vec<u8>, Vec<u8>)> {
    let req: ExportLogsServiceRequest = recode(req);
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let rl_shell = ResourceLogs {
            scope_logs: vec![],
            ..rl.clone()
        }
        .encode_to_vec();
        for sl in &rl.scope_logs {
            let sl_shell = ScopeLogs {
                log_records: vec![],
                ..sl.clone()
            }
            .encode_to_vec();
            let shell = [&rl_shell[..], &sl_shell].concat();
            for r in &sl.log_records {
                out.push((shell.clone(), r.encode_to_vec()));
            }
        }
    }
    out
}

/// One entry per log record: its resource and scope metadata and the record, encoded.
pub fn log_records(req: &impl Message) -> Vec<Vec<u8>> {
    scoped_log_records(req)
        .into_iter()
        .map(|(shell, record)| [shell, record].concat())
        .collect()
}

/// Decodes events as an exporter writes them (the fields after the write index) into the
/// requests they carry, checking the layout of each.
pub fn decode_events<M: Message + Default>(events: &[Vec<u8>]) -> Vec<M> {
    events
        .iter()
        .map(|e| {
            let payload = layout::decode(e).expect("event has the exporter layout");
            M::decode(payload.buffer).expect("event carries one complete OTLP request")
        })
        .collect()
}

/// All data points of metric events, flattened.
pub fn metric_points_of_events(events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    decode_events::<ExportMetricsServiceRequest>(events)
        .iter()
        .flat_map(metric_points)
        .collect()
}

/// All spans of trace events, flattened.
pub fn spans_of_events(events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    decode_events::<ExportTraceServiceRequest>(events)
        .iter()
        .flat_map(spans)
        .collect()
}

/// All log records of logs events, flattened.
pub fn log_records_of_events(events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    decode_events::<ExportLogsServiceRequest>(events)
        .iter()
        .flat_map(log_records)
        .collect()
}

/// Every log record of logs events (as an exporter writes them), decoded, in order.
pub fn records_of_events(events: &[Vec<u8>]) -> Vec<LogRecord> {
    decode_events::<ExportLogsServiceRequest>(events)
        .into_iter()
        .flat_map(|r| r.resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .collect()
}

/// A logs request: `records` records whose bodies are `<tag>-<i>`.
pub fn logs_request(tag: &str, records: usize) -> ExportLogsServiceRequest {
    let log_records = (0..records)
        .map(|i| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            observed_time_unix_nano: 1_700_000_000_000_000_100 + i as u64,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("{tag}-{i}"))),
            }),
            attributes: vec![string("tag", tag)],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("sinks-test"),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A string attribute.
pub fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A resource with this service name.
pub fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("service.name", service)],
        ..Default::default()
    })
}

/// A traces request: `spans` spans named `<tag>-<i>`, with distinct ids.
pub fn traces_request(tag: &str, spans: usize) -> ExportTraceServiceRequest {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: vec![0xa0 | i as u8; 16],
            span_id: vec![i as u8 + 1; 8],
            name: format!("{tag}-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64,
            attributes: vec![string("tag", tag)],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("sinks-test"),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A metrics request: one counter named `<tag>` with `points` data points.
pub fn metrics_request(tag: &str, points: usize) -> ExportMetricsServiceRequest {
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            value: Some(number_data_point::Value::AsInt(i as i64 * 10)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("sinks-test"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: tag.into(),
                    data: Some(Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The names of every span in trace events (as an exporter writes them), sorted.
pub fn span_names(events: &[Vec<u8>]) -> Vec<String> {
    let mut names: Vec<String> = decode_events::<ExportTraceServiceRequest>(events)
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

/// The sum of every integer `Sum` point in metric events (as an exporter writes them).
pub fn int_sum_total(events: &[Vec<u8>]) -> i64 {
    decode_events::<ExportMetricsServiceRequest>(events)
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => Some(s.data_points.iter()),
            _ => None,
        })
        .flatten()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            _ => panic!("an integer sum"),
        })
        .sum()
}

/// A capture's golden text: each decoded event as one OTLP/JSON line, in file order, as
/// `tests/fixtures/*.json` hold them (written by `cargo run -p tests --bin bless-golden`).
pub fn golden_json(capture: &std::path::Path) -> String {
    ue_decoder::decode_perf_data(capture, &ue_decoder::TracepointNames::default())
        .unwrap_or_else(|e| panic!("{} decodes: {e}", capture.display()))
        .events
        .iter()
        .map(|e| ue_decoder::otlp_json_line(&e.request) + "\n")
        .collect()
}
