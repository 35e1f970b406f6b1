//! Encode-and-pack cost per data point and per span, against the one-item-per-event encoding
//! of the upstream opentelemetry-user-events crates, on the same input in the same run; and
//! the cost of an export while nobody listens. Events go to a do-nothing sink, so the numbers
//! are encoding alone (the `writev` per event comes on top, and there are far fewer events).
//!
//! `scripts/bench.sh` runs this and prints the ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use otlp_user_events::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use otlp_user_events::proto::collector::trace::v1::ExportTraceServiceRequest;
use otlp_user_events::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use otlp_user_events::proto::metrics::v1::{
    Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics as ProtoResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use otlp_user_events::proto::resource::v1::Resource;
use otlp_user_events::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use otlp_user_events::{MetricsExporter, layout, pack_metrics, pack_spans};
use prost::Message;

const ITEMS: usize = 1000;

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        key_strindex: 0,
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", "checkout".into()),
            kv("service.version", "1.4.2".into()),
            kv("host.name", "web-17".into()),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "checkout.http".into(),
        version: "0.9.0".into(),
        ..Default::default()
    })
}

fn attrs(i: usize) -> Vec<KeyValue> {
    vec![
        kv("http.route", format!("/api/v1/item/{i}")),
        kv("http.method", "GET".into()),
        kv("status", "200".into()),
    ]
}

fn metrics_request(data: Data) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ProtoResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![Metric {
                    name: "http.server.requests".into(),
                    description: "Requests served".into(),
                    unit: "{request}".into(),
                    data: Some(data),
                    metadata: vec![],
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A Sum with `ITEMS` series of 3 attributes each.
fn sum_request() -> ExportMetricsServiceRequest {
    metrics_request(Data::Sum(Sum {
        data_points: (0..ITEMS)
            .map(|i| NumberDataPoint {
                attributes: attrs(i),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                time_unix_nano: 1_700_000_060_000_000_000,
                value: Some(number_data_point::Value::AsInt(i as i64)),
                ..Default::default()
            })
            .collect(),
        aggregation_temporality: 1,
        is_monotonic: true,
    }))
}

/// A Histogram with `ITEMS` series, 10 buckets each.
fn histogram_request() -> ExportMetricsServiceRequest {
    metrics_request(Data::Histogram(Histogram {
        data_points: (0..ITEMS)
            .map(|i| HistogramDataPoint {
                attributes: attrs(i),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                time_unix_nano: 1_700_000_060_000_000_000,
                count: 100,
                sum: Some(12.5),
                bucket_counts: vec![10; 10],
                explicit_bounds: vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
                min: Some(0.001),
                max: Some(3.0),
                ..Default::default()
            })
            .collect(),
        aggregation_temporality: 1,
    }))
}

/// `ITEMS` spans with 6 attributes and 1 event each.
fn spans_request() -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: resource(),
        scope_spans: vec![ScopeSpans {
            scope: scope(),
            spans: (0..ITEMS)
                .map(|i| Span {
                    trace_id: (i as u128).to_be_bytes().to_vec(),
                    span_id: (i as u64).to_be_bytes().to_vec(),
                    parent_span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    flags: 0x101,
                    name: "GET /api/v1/item".into(),
                    kind: 2,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_001_000_000,
                    attributes: [attrs(i), attrs(i + 1)].concat(),
                    events: vec![span::Event {
                        time_unix_nano: 1_700_000_000_000_500_000,
                        name: "cache miss".into(),
                        attributes: vec![kv("key", format!("k{i}"))],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }]
}

/// The upstream crates' encoding: every data point becomes its own request, with the
/// resource, scope and metric metadata cloned around it, encoded into a fresh Vec.
fn one_point_per_event(req: &ExportMetricsServiceRequest, sink: &mut impl FnMut(&[u8])) {
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let single = |data: Data| ExportMetricsServiceRequest {
                    resource_metrics: vec![ProtoResourceMetrics {
                        resource: rm.resource.clone(),
                        scope_metrics: vec![ScopeMetrics {
                            scope: sm.scope.clone(),
                            metrics: vec![Metric {
                                data: Some(data),
                                ..m.clone_shell()
                            }],
                            schema_url: sm.schema_url.clone(),
                        }],
                        schema_url: rm.schema_url.clone(),
                    }],
                };
                let mut write = |r: ExportMetricsServiceRequest| {
                    let mut v = Vec::new();
                    r.encode(&mut v).unwrap();
                    sink(&v);
                };
                match m.data.as_ref().unwrap() {
                    Data::Sum(s) => s.data_points.iter().for_each(|p| {
                        write(single(Data::Sum(Sum {
                            data_points: vec![p.clone()],
                            ..s.clone_shell()
                        })))
                    }),
                    Data::Histogram(h) => h.data_points.iter().for_each(|p| {
                        write(single(Data::Histogram(Histogram {
                            data_points: vec![p.clone()],
                            aggregation_temporality: h.aggregation_temporality,
                        })))
                    }),
                    _ => unreachable!("benchmarked kinds only"),
                }
            }
        }
    }
}

/// The upstream span encoding: one request per span.
fn one_span_per_event(rss: &[ResourceSpans], sink: &mut impl FnMut(&[u8])) {
    for rs in rss {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let single = ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: ss.scope.clone(),
                            spans: vec![s.clone()],
                            schema_url: ss.schema_url.clone(),
                        }],
                        schema_url: rs.schema_url.clone(),
                    }],
                };
                let mut v = Vec::new();
                single.encode(&mut v).unwrap();
                sink(&v);
            }
        }
    }
}

trait CloneShell {
    fn clone_shell(&self) -> Self;
}
impl CloneShell for Metric {
    fn clone_shell(&self) -> Self {
        // Field by field: `..self.clone()` would clone every data point too.
        Metric {
            name: self.name.clone(),
            description: self.description.clone(),
            unit: self.unit.clone(),
            metadata: self.metadata.clone(),
            data: None,
        }
    }
}
impl CloneShell for Sum {
    fn clone_shell(&self) -> Self {
        Sum {
            data_points: vec![],
            ..*self
        }
    }
}

fn bench_metrics(c: &mut Criterion, name: &str, input: fn() -> ExportMetricsServiceRequest) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(ITEMS as u64));
    let mut buf = Vec::new();
    g.bench_function("packed", |b| {
        b.iter_batched(
            input,
            |req| {
                let mut events = 0;
                pack_metrics(req, layout::DEFAULT_MAX_BUFFER, &mut buf, |bytes, _| {
                    black_box(bytes);
                    events += 1;
                });
                events
            },
            BatchSize::LargeInput,
        )
    });
    let req = input();
    g.bench_function("one_per_event", |b| {
        b.iter(|| {
            let mut events = 0;
            one_point_per_event(&req, &mut |bytes| {
                black_box(bytes);
                events += 1;
            });
            events
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    bench_metrics(c, "sum_3_attrs", sum_request);
    bench_metrics(c, "histogram_10_buckets", histogram_request);

    let mut g = c.benchmark_group("span_6_attrs_1_event");
    g.throughput(Throughput::Elements(ITEMS as u64));
    let mut buf = Vec::new();
    g.bench_function("packed", |b| {
        b.iter_batched(
            spans_request,
            |rss| {
                let mut events = 0;
                pack_spans(rss, layout::DEFAULT_MAX_BUFFER, &mut buf, |bytes, _| {
                    black_box(bytes);
                    events += 1;
                });
                events
            },
            BatchSize::LargeInput,
        )
    });
    let rss = spans_request();
    g.bench_function("one_per_event", |b| {
        b.iter(|| {
            let mut events = 0;
            one_span_per_event(&rss, &mut |bytes| {
                black_box(bytes);
                events += 1;
            });
            events
        })
    });
    g.finish();
}

/// An export while no reader listens: the kernel-backed exporter, whose enable bit is clear
/// (on a kernel without user_events the registration failed; with one, nobody attached).
fn export_without_listener(c: &mut Criterion) {
    let exporter = MetricsExporter::builder()
        .with_tracepoint_name("otlp_metrics_bench_idle")
        .build()
        .unwrap();
    let metrics = ResourceMetrics::default();
    let waker = std::task::Waker::noop();
    c.bench_function("export_no_listener", |b| {
        b.iter(|| {
            let mut fut = std::pin::pin!(exporter.export(black_box(&metrics)));
            let polled = fut
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(polled.is_ready());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = encode, export_without_listener
}
criterion_main!(benches);
