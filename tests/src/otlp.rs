//! Flattening OTLP requests to one entry per data point or span, so that requests compare
//! equal however they were packed into events (and NaN compares by its bits).

use otlp_user_events::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otlp_user_events::proto::collector::trace::v1::ExportTraceServiceRequest;
use otlp_user_events::proto::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric::Data};
use otlp_user_events::proto::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use ue_wire::layout;

/// One entry per data point: its resource, scope and metric metadata and the point, each
/// encoded, in request order.
pub fn metric_points(req: &ExportMetricsServiceRequest) -> Vec<Vec<u8>> {
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
                let (shell, points) = split_metric(m);
                for p in points {
                    out.push([&rm_shell[..], &sm_shell, &shell, &p].concat());
                }
            }
        }
    }
    out
}

/// A metric's metadata without points, and its points, encoded.
fn split_metric(m: &Metric) -> (Vec<u8>, Vec<Vec<u8>>) {
    fn enc<M: Message>(v: &mut Vec<M>) -> Vec<Vec<u8>> {
        std::mem::take(v)
            .iter()
            .map(Message::encode_to_vec)
            .collect()
    }
    let mut shell = m.clone();
    let points = match shell.data.as_mut() {
        Some(Data::Sum(d)) => enc(&mut d.data_points),
        Some(Data::Gauge(d)) => enc(&mut d.data_points),
        Some(Data::Histogram(d)) => enc(&mut d.data_points),
        Some(Data::ExponentialHistogram(d)) => enc(&mut d.data_points),
        Some(Data::Summary(d)) => enc(&mut d.data_points),
        None => vec![],
    };
    (shell.encode_to_vec(), points)
}

/// One entry per span: its resource and scope metadata and the span, encoded.
pub fn spans(req: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
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
