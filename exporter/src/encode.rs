//! Splits OTLP export requests into events: pure functions from protobuf messages to encoded
//! buffers, no I/O.

use std::mem;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, SummaryDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use crate::pack::{Packer, field_len};

/// Items that could not be packed because even alone they exceed the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Oversize {
    /// `(metric or span name, items dropped)`, in the order first seen.
    pub dropped: Vec<(String, usize)>,
}

impl Oversize {
    fn add(&mut self, name: &str) {
        match self.dropped.last_mut() {
            Some((n, count)) if n == name => *count += 1,
            _ => self.dropped.push((name.to_owned(), 1)),
        }
    }

    /// How many items were dropped in all.
    pub fn total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// A kind of metric data point and where it lives inside `Metric::data`.
trait Point: Message + Sized {
    fn take(data: &mut Data) -> Vec<Self>;
    fn push(data: &mut Data, point: Self);
}

macro_rules! point_kind {
    ($point:ty, $($variant:ident),+) => {
        impl Point for $point {
            fn take(data: &mut Data) -> Vec<Self> {
                match data {
                    $(Data::$variant(d) => mem::take(&mut d.data_points),)+
                    _ => unreachable!("dispatched on the variant"),
                }
            }
            fn push(data: &mut Data, point: Self) {
                match data {
                    $(Data::$variant(d) => d.data_points.push(point),)+
                    _ => unreachable!("dispatched on the variant"),
                }
            }
        }
    };
}
point_kind!(NumberDataPoint, Sum, Gauge);
point_kind!(HistogramDataPoint, Histogram);
point_kind!(ExponentialHistogramDataPoint, ExponentialHistogram);
point_kind!(SummaryDataPoint, Summary);

/// Nesting levels of a metrics event: the request, ResourceMetrics, ScopeMetrics, Metric, and
/// the data body (Sum, Gauge, ...) that holds the points.
const METRIC_LEVELS: usize = 5;
type MetricsPacker<'b, F> = Packer<'b, ExportMetricsServiceRequest, METRIC_LEVELS, F>;

/// Packs the data points of `req` into as few requests of at most `limit` bytes as possible,
/// calling `emit(bytes, points)` for each. Points keep their order; a metric's points may be
/// split over several requests, each carrying the full resource, scope and metric metadata.
/// `buf` is scratch space, reused across calls to save allocations.
///
/// This is what [`MetricsExporter`](crate::MetricsExporter) does with each export; it is
/// public for writers of pre-built OTLP and for benchmarks.
pub fn pack_metrics<F: FnMut(&[u8], usize)>(
    req: ExportMetricsServiceRequest,
    limit: usize,
    buf: &mut Vec<u8>,
    emit: F,
) -> Oversize {
    let mut packer = MetricsPacker::new(limit, buf, emit);
    let mut oversize = Oversize::default();
    // The outermost level not yet open in the current request for the next item placed.
    let mut pending = 1;
    for mut rm in req.resource_metrics {
        let scopes = mem::take(&mut rm.scope_metrics);
        pending = pending.min(1);
        for mut sm in scopes {
            let metrics = mem::take(&mut sm.metrics);
            pending = pending.min(2);
            for mut metric in metrics {
                pending = pending.min(3);
                let Some(data) = metric.data.as_mut() else {
                    continue;
                };
                match data {
                    Data::Sum(_) | Data::Gauge(_) => pack_points::<NumberDataPoint, F>(
                        &mut packer,
                        &rm,
                        &sm,
                        metric,
                        &mut pending,
                        &mut oversize,
                    ),
                    Data::Histogram(_) => pack_points::<HistogramDataPoint, F>(
                        &mut packer,
                        &rm,
                        &sm,
                        metric,
                        &mut pending,
                        &mut oversize,
                    ),
                    Data::ExponentialHistogram(_) => {
                        pack_points::<ExponentialHistogramDataPoint, F>(
                            &mut packer,
                            &rm,
                            &sm,
                            metric,
                            &mut pending,
                            &mut oversize,
                        )
                    }
                    Data::Summary(_) => pack_points::<SummaryDataPoint, F>(
                        &mut packer,
                        &rm,
                        &sm,
                        metric,
                        &mut pending,
                        &mut oversize,
                    ),
                }
            }
        }
    }
    packer.flush();
    oversize
}

fn pack_points<P: Point, F: FnMut(&[u8], usize)>(
    packer: &mut MetricsPacker<'_, F>,
    rm: &ResourceMetrics,
    sm: &ScopeMetrics,
    mut metric: Metric,
    pending: &mut usize,
    oversize: &mut Oversize,
) {
    let data = metric.data.as_mut().expect("caller matched Some");
    let points = P::take(data);
    let body = data_body_len(data);
    let fixed = [
        0,
        rm.encoded_len(),
        sm.encoded_len(),
        metric.encoded_len() - field_len(body),
        body,
    ];
    for point in points {
        let Some(open) = packer.reserve(*pending, &fixed, point.encoded_len()) else {
            oversize.add(&metric.name);
            continue;
        };
        // The shells were emptied of their children above, so these clones copy metadata only.
        let req = packer.request();
        if open <= 1 {
            req.resource_metrics.push(rm.clone());
        }
        let rm_out = req.resource_metrics.last_mut().expect("opened above");
        if open <= 2 {
            rm_out.scope_metrics.push(sm.clone());
        }
        let sm_out = rm_out.scope_metrics.last_mut().expect("opened above");
        if open <= 3 {
            sm_out.metrics.push(metric.clone());
        }
        let metric_out = sm_out.metrics.last_mut().expect("opened above");
        P::push(
            metric_out.data.as_mut().expect("shell keeps its data"),
            point,
        );
        *pending = METRIC_LEVELS;
    }
}

/// Encoded length of the data message (Sum, Gauge, ...) without its data points.
fn data_body_len(data: &Data) -> usize {
    match data {
        Data::Sum(d) => d.encoded_len(),
        Data::Gauge(d) => d.encoded_len(),
        Data::Histogram(d) => d.encoded_len(),
        Data::ExponentialHistogram(d) => d.encoded_len(),
        Data::Summary(d) => d.encoded_len(),
    }
}

/// Nesting levels of a traces event: the request, ResourceSpans, ScopeSpans.
const SPAN_LEVELS: usize = 3;

/// Packs the spans of `resource_spans` into as few requests of at most `limit` bytes as
/// possible, calling `emit(bytes, spans)` for each; see [`pack_metrics`].
pub fn pack_spans<F: FnMut(&[u8], usize)>(
    resource_spans: Vec<ResourceSpans>,
    limit: usize,
    buf: &mut Vec<u8>,
    emit: F,
) -> Oversize {
    let mut packer = Packer::<ExportTraceServiceRequest, SPAN_LEVELS, F>::new(limit, buf, emit);
    let mut oversize = Oversize::default();
    let mut pending = 1;
    for mut rs in resource_spans {
        let scopes = mem::take(&mut rs.scope_spans);
        pending = pending.min(1);
        for mut ss in scopes {
            let spans = mem::take(&mut ss.spans);
            pending = pending.min(2);
            let fixed = [0, rs.encoded_len(), ss.encoded_len()];
            for span in spans {
                let Some(open) = packer.reserve(pending, &fixed, span.encoded_len()) else {
                    oversize.add(&span.name);
                    continue;
                };
                // The shells were emptied of their children above: these clones copy metadata.
                let req = packer.request();
                if open <= 1 {
                    req.resource_spans.push(rs.clone());
                }
                let rs_out = req.resource_spans.last_mut().expect("opened above");
                if open <= 2 {
                    rs_out.scope_spans.push(ss.clone());
                }
                rs_out
                    .scope_spans
                    .last_mut()
                    .expect("opened above")
                    .spans
                    .push(span);
                pending = SPAN_LEVELS;
            }
        }
    }
    packer.flush();
    oversize
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        Exemplar, ExponentialHistogram, Gauge, Histogram, Sum, Summary, exemplar,
        exponential_histogram_data_point::Buckets, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, span};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        }
    }

    fn resource(name: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", name)],
            ..Default::default()
        })
    }

    fn scope(name: &str) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: name.into(),
            version: "1.2.3".into(),
            attributes: vec![kv("scope.attr", "x")],
            ..Default::default()
        })
    }

    fn exemplar(i: usize) -> Exemplar {
        Exemplar {
            filtered_attributes: vec![kv("user", &format!("u{i}"))],
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            value: Some(exemplar::Value::AsDouble(i as f64 * 0.5)),
            span_id: vec![7; 8],
            trace_id: vec![9; 16],
        }
    }

    fn number_point(i: usize) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![
                kv("host", &format!("h{i}")),
                kv("region", "eu-west-1"),
                kv("status", "ok"),
            ],
            start_time_unix_nano: 1,
            time_unix_nano: 2 + i as u64,
            value: Some(number_data_point::Value::AsInt(i as i64)),
            exemplars: if i.is_multiple_of(7) {
                vec![exemplar(i)]
            } else {
                vec![]
            },
            flags: 0,
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            description: format!("{name} description"),
            unit: "By".into(),
            data: Some(data),
            metadata: vec![],
        }
    }

    fn sum_metric(name: &str, points: usize) -> Metric {
        metric(
            name,
            Data::Sum(Sum {
                data_points: (0..points).map(number_point).collect(),
                aggregation_temporality: 1,
                is_monotonic: true,
            }),
        )
    }

    /// Every kind of metric, with exemplars, over two resources and three scopes.
    fn mixed_request() -> ExportMetricsServiceRequest {
        let hist = |i: usize| HistogramDataPoint {
            attributes: vec![kv("route", &format!("/r{i}"))],
            count: 10,
            sum: Some(f64::NAN),
            bucket_counts: vec![1; 11 + i % 30],
            explicit_bounds: (0..10 + i % 30).map(|b| b as f64).collect(),
            exemplars: vec![exemplar(i)],
            min: Some(f64::NEG_INFINITY),
            max: Some(f64::INFINITY),
            ..Default::default()
        };
        let exp = |i: usize| ExponentialHistogramDataPoint {
            attributes: vec![kv("ünïcødé", "値")],
            count: 3,
            scale: -2,
            positive: Some(Buckets {
                offset: -3,
                bucket_counts: vec![1; i % 50],
            }),
            negative: Some(Buckets {
                offset: 2,
                bucket_counts: vec![2; 3],
            }),
            exemplars: vec![exemplar(i), exemplar(i + 1)],
            ..Default::default()
        };
        let summary = |i: usize| SummaryDataPoint {
            count: i as u64,
            sum: 1.5,
            ..Default::default()
        };
        let gauge = |i: usize| NumberDataPoint {
            value: Some(number_data_point::Value::AsDouble(i as f64 / 3.0)),
            ..number_point(i)
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![
                ResourceMetrics {
                    resource: resource("a"),
                    scope_metrics: vec![
                        ScopeMetrics {
                            scope: scope("s1"),
                            metrics: vec![
                                sum_metric("requests", 300),
                                metric(
                                    "latency",
                                    Data::Histogram(Histogram {
                                        data_points: (0..80).map(hist).collect(),
                                        aggregation_temporality: 2,
                                    }),
                                ),
                            ],
                            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                        },
                        ScopeMetrics {
                            scope: scope("s2"),
                            metrics: vec![
                                metric(
                                    "temp",
                                    Data::Gauge(Gauge {
                                        data_points: (0..120).map(gauge).collect(),
                                    }),
                                ),
                                metric("empty", Data::Sum(Sum::default())),
                                metric(
                                    "exp",
                                    Data::ExponentialHistogram(ExponentialHistogram {
                                        data_points: (0..60).map(exp).collect(),
                                        aggregation_temporality: 1,
                                    }),
                                ),
                            ],
                            schema_url: String::new(),
                        },
                    ],
                    schema_url: String::new(),
                },
                ResourceMetrics {
                    resource: resource("b"),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope("s3"),
                        metrics: vec![
                            metric(
                                "summary",
                                Data::Summary(Summary {
                                    data_points: (0..40).map(summary).collect(),
                                }),
                            ),
                            sum_metric("more", 50),
                        ],
                        schema_url: String::new(),
                    }],
                    schema_url: "https://example.test/schema".into(),
                },
            ],
        }
    }

    /// One entry per data point: its resource, scope and metric metadata and the point,
    /// encoded, so requests compare equal whatever the split (and NaN compares by bits).
    fn flatten_metrics(req: &ExportMetricsServiceRequest) -> Vec<Vec<u8>> {
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
                    let data = shell.data.as_mut().unwrap();
                    let points: Vec<Vec<u8>> = match data {
                        Data::Sum(_) | Data::Gauge(_) => NumberDataPoint::take(data)
                            .iter()
                            .map(Message::encode_to_vec)
                            .collect(),
                        Data::Histogram(_) => HistogramDataPoint::take(data)
                            .iter()
                            .map(Message::encode_to_vec)
                            .collect(),
                        Data::ExponentialHistogram(_) => ExponentialHistogramDataPoint::take(data)
                            .iter()
                            .map(Message::encode_to_vec)
                            .collect(),
                        Data::Summary(_) => SummaryDataPoint::take(data)
                            .iter()
                            .map(Message::encode_to_vec)
                            .collect(),
                    };
                    let m_shell = shell.encode_to_vec();
                    for p in points {
                        out.push([&rm_shell[..], &sm_shell, &m_shell, &p].concat());
                    }
                }
            }
        }
        out
    }

    fn pack_all(
        req: ExportMetricsServiceRequest,
        limit: usize,
    ) -> (Vec<(Vec<u8>, usize)>, Oversize) {
        let mut events = Vec::new();
        let mut buf = Vec::new();
        let oversize = pack_metrics(req, limit, &mut buf, |b, n| events.push((b.to_vec(), n)));
        (events, oversize)
    }

    fn decode_metrics(events: &[(Vec<u8>, usize)]) -> ExportMetricsServiceRequest {
        let mut all = ExportMetricsServiceRequest::default();
        for (bytes, points) in events {
            let req = ExportMetricsServiceRequest::decode(&bytes[..]).expect("every event decodes");
            assert_eq!(
                flatten_metrics(&req).len(),
                *points,
                "reported point count is exact"
            );
            all.resource_metrics.extend(req.resource_metrics);
        }
        all
    }

    #[test]
    fn thousands_of_small_points_fill_events_to_the_limit() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("svc"),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope("lib"),
                    metrics: vec![sum_metric("a", 3000), sum_metric("b", 2000)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let expected = flatten_metrics(&req);
        let limit = crate::layout::DEFAULT_MAX_BUFFER;
        let (events, oversize) = pack_all(req, limit);
        assert!(oversize.dropped.is_empty());
        assert!(events.iter().all(|(b, _)| b.len() <= limit));
        let fill = events.iter().map(|(b, _)| b.len()).sum::<usize>() as f64
            / (events.len() * limit) as f64;
        assert!(
            fill >= 0.9,
            "average fill {fill:.3} over {} events",
            events.len()
        );
        // Full events are nearly full: only the last may be short.
        for (b, _) in &events[..events.len() - 1] {
            assert!(
                b.len() > limit - 200,
                "event of {} bytes closed early",
                b.len()
            );
        }
        assert_eq!(flatten_metrics(&decode_metrics(&events)), expected);
    }

    #[test]
    fn every_kind_splits_without_loss_or_duplication_at_any_limit() {
        let expected = flatten_metrics(&mixed_request());
        for limit in [1200, 1500, 4096, 8168, 65_360] {
            let (events, oversize) = pack_all(mixed_request(), limit);
            assert!(oversize.dropped.is_empty(), "limit {limit}: {oversize:?}");
            assert!(
                events.iter().all(|(b, _)| b.len() <= limit),
                "limit {limit}"
            );
            assert_eq!(
                flatten_metrics(&decode_metrics(&events)),
                expected,
                "limit {limit}"
            );
        }
    }

    #[test]
    fn exact_limit_fits_and_one_byte_less_splits() {
        let one = |n| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("svc"),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope("lib"),
                    metrics: vec![sum_metric("m", n)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let whole = one(2).encoded_len();
        let (events, _) = pack_all(one(2), whole);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].0.len(),
            whole,
            "an event of exactly the limit is written"
        );
        let (events, oversize) = pack_all(one(2), whole - 1);
        assert_eq!(events.len(), 2, "one byte less splits the two points");
        assert!(oversize.dropped.is_empty());

        let single = one(1).encoded_len();
        let (events, _) = pack_all(one(1), single);
        assert_eq!(events.len(), 1);
        let (events, oversize) = pack_all(one(1), single - 1);
        assert!(events.is_empty());
        assert_eq!(oversize.dropped, vec![("m".to_owned(), 1)]);
    }

    #[test]
    fn an_oversize_point_is_dropped_alone_and_named() {
        let mut req = mixed_request();
        let Some(Data::Histogram(h)) =
            &mut req.resource_metrics[0].scope_metrics[0].metrics[1].data
        else {
            unreachable!()
        };
        h.data_points[5].bucket_counts = vec![1; 5000];
        h.data_points[5].explicit_bounds = vec![0.5; 4999];
        let mut expected = flatten_metrics(&mixed_request());
        let (events, oversize) = pack_all(req, 8168);
        assert_eq!(oversize.dropped, vec![("latency".to_owned(), 1)]);
        // Everything else arrives: the expected list minus the dropped point (index 300 + 5).
        expected.remove(305);
        assert_eq!(flatten_metrics(&decode_metrics(&events)), expected);
    }

    fn span(i: usize) -> Span {
        Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![i as u8; 8],
            trace_state: "k=v".into(),
            parent_span_id: vec![1; 8],
            flags: 0x301,
            name: format!("span-{i}"),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes: (0..6).map(|a| kv(&format!("a{a}"), "value")).collect(),
            events: vec![span::Event {
                time_unix_nano: 15,
                name: "ev".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn flatten_spans(rss: &[ResourceSpans]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for rs in rss {
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

    #[test]
    fn spans_pack_by_scope_and_split_without_loss() {
        let rss = vec![ResourceSpans {
            resource: resource("svc"),
            scope_spans: (0..3)
                .map(|s| ScopeSpans {
                    scope: scope(&format!("scope{s}")),
                    spans: (0..400).map(span).collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        }];
        let expected = flatten_spans(&rss);
        for limit in [500, 8168] {
            let mut events = Vec::new();
            let mut buf = Vec::new();
            let oversize = pack_spans(rss.clone(), limit, &mut buf, |b, n| {
                events.push((b.to_vec(), n))
            });
            assert!(oversize.dropped.is_empty());
            let mut all = Vec::new();
            for (b, n) in &events {
                assert!(b.len() <= limit);
                let req = ExportTraceServiceRequest::decode(&b[..]).unwrap();
                assert_eq!(flatten_spans(&req.resource_spans).len(), *n);
                all.extend(req.resource_spans);
            }
            assert_eq!(flatten_spans(&all), expected, "limit {limit}");
            if limit == 8168 {
                let fill = events.iter().map(|(b, _)| b.len()).sum::<usize>() as f64
                    / (events.len() * limit) as f64;
                assert!(fill >= 0.9, "average fill {fill:.3}");
            }
        }
    }

    #[test]
    fn an_oversize_span_is_dropped_and_named() {
        let mut big = span(1);
        big.name = "huge".into();
        big.attributes.push(kv("blob", &"x".repeat(9000)));
        let rss = vec![ResourceSpans {
            resource: resource("svc"),
            scope_spans: vec![ScopeSpans {
                scope: scope("s"),
                spans: vec![span(0), big, span(2)],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }];
        let mut events = Vec::new();
        let mut buf = Vec::new();
        let oversize = pack_spans(rss, 8168, &mut buf, |b, n| events.push((b.to_vec(), n)));
        assert_eq!(oversize.dropped, vec![("huge".to_owned(), 1)]);
        assert_eq!(events.iter().map(|e| e.1).sum::<usize>(), 2);
    }
}
