//! The encoder alone, per data point, per span and per log record: the direct encoding of the SDK's data into
//! packed events, against opentelemetry-proto's transform followed by prost's encoding (the
//! path the upstream user_events crates and opentelemetry-otlp take, without their packing or
//! I/O), on the same SDK data in the same run; and an export while nobody listens. Events go
//! to a do-nothing sink. Whole-process comparisons against the real upstream crates and
//! opentelemetry-otlp are in `bench/` (`scripts/bench.sh`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{ManualReader, Pipeline, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use otlp_user_events::{MetricsExporter, layout, pack_logs, pack_metrics, pack_spans};
use prost::Message;

const ITEMS: usize = 1000;

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("service.version", "1.4.2"),
            KeyValue::new("host.name", "web-17"),
        ])
        .build()
}

fn attrs(i: usize) -> [KeyValue; 3] {
    [
        KeyValue::new("http.route", format!("/api/v1/item/{i}")),
        KeyValue::new("http.method", "GET"),
        KeyValue::new("status", "200"),
    ]
}

/// Lets the bench keep the reader it registers with the SDK.
#[derive(Debug, Clone)]
struct Shared(Arc<ManualReader>);

impl MetricReader for Shared {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: opentelemetry_sdk::metrics::InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// `ITEMS` series of a counter or a histogram (the SDK's default buckets), collected by the
/// real SDK (cumulative, so every series is there in the collected data).
fn collected(histogram: bool) -> ResourceMetrics {
    let reader = Shared(Arc::new(ManualReader::builder().build()));
    let provider = SdkMeterProvider::builder()
        .with_resource(resource())
        .with_reader(reader.clone())
        .build();
    let meter = provider.meter_with_scope(
        InstrumentationScope::builder("checkout.http")
            .with_version("0.9.0")
            .build(),
    );
    if histogram {
        let h = meter
            .f64_histogram("http.server.duration")
            .with_unit("ms")
            .build();
        (0..ITEMS).for_each(|i| h.record(i as f64 / 7.0, &attrs(i)));
    } else {
        let c = meter.u64_counter("http.server.requests").build();
        (0..ITEMS).for_each(|i| c.add(i as u64, &attrs(i)));
    }
    let mut rm = ResourceMetrics::default();
    reader.collect(&mut rm).unwrap();
    rm
}

fn spans() -> Vec<SpanData> {
    let scope = InstrumentationScope::builder("checkout.http")
        .with_version("0.9.0")
        .build();
    let now = SystemTime::now();
    (0..ITEMS)
        .map(|i| {
            let mut events = SpanEvents::default();
            events.events.push(Event::new("cache.miss", now, vec![], 0));
            SpanData {
                span_context: SpanContext::new(
                    TraceId::from(i as u128 + 1),
                    SpanId::from(i as u64 + 1),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::NONE,
                ),
                parent_span_id: SpanId::from(99),
                parent_span_is_remote: false,
                span_kind: SpanKind::Server,
                name: "GET /api/v1/item".into(),
                start_time: now,
                end_time: now + Duration::from_micros(350),
                attributes: vec![
                    KeyValue::new("http.route", format!("/api/v1/item/{i}")),
                    KeyValue::new("http.method", "GET"),
                    KeyValue::new("http.status_code", 200),
                    KeyValue::new("net.peer.name", "10.0.0.7"),
                    KeyValue::new("user.id", i as i64),
                    KeyValue::new("cache.hit", false),
                ],
                dropped_attributes_count: 0,
                events,
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope.clone(),
            }
        })
        .collect()
}

/// Log records as an application logs them: a message body, an event name, a severity, three
/// attributes and the trace context of the span it logged in.
fn log_records() -> Vec<SdkLogRecord> {
    let logger = SdkLoggerProvider::builder().build().logger("bench");
    (0..ITEMS)
        .map(|i| {
            let mut r = logger.create_log_record();
            r.set_timestamp(SystemTime::now());
            r.set_observed_timestamp(SystemTime::now());
            r.set_event_name("order.placed");
            r.set_severity_number(Severity::Info);
            r.set_severity_text("INFO");
            r.set_body(AnyValue::from(format!(
                "order {i} placed for customer c-{}",
                i % 97
            )));
            r.add_attribute("http.route", format!("/api/v1/item/{i}"));
            r.add_attribute("http.method", "GET");
            r.add_attribute("status", 200);
            r.set_trace_context(
                TraceId::from(i as u128 + 1),
                SpanId::from(i as u64 + 1),
                Some(TraceFlags::SAMPLED),
            );
            r
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    for (group, histogram) in [("sum_3_attrs", false), ("histogram_3_attrs", true)] {
        let rm = collected(histogram);
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(ITEMS as u64));
        g.bench_function("direct", |b| {
            b.iter(|| {
                let mut events = 0;
                pack_metrics(&rm, layout::DEFAULT_MAX_BUFFER, |bytes, _| {
                    black_box(bytes);
                    events += 1;
                });
                events
            })
        });
        let mut buf = Vec::new();
        g.bench_function("transform_prost", |b| {
            b.iter(|| {
                buf.clear();
                ExportMetricsServiceRequest::from(&rm)
                    .encode(&mut buf)
                    .unwrap();
                black_box(&buf);
            })
        });
        g.finish();
    }

    let spans = spans();
    let res = resource();
    let mut g = c.benchmark_group("span_6_attrs_1_event");
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("direct", |b| {
        b.iter(|| {
            let mut events = 0;
            pack_spans(&spans, &res, layout::DEFAULT_MAX_BUFFER, |bytes, _| {
                black_box(bytes);
                events += 1;
            });
            events
        })
    });
    let with_schema = ResourceAttributesWithSchema::from(&res);
    let mut buf = Vec::new();
    g.bench_function("transform_prost", |b| {
        // The SDK hands exporters owned spans: the clone is setup, not measured.
        b.iter_batched(
            || spans.clone(),
            |batch| {
                buf.clear();
                ExportTraceServiceRequest {
                    resource_spans: group_spans_by_resource_and_scope(batch, &with_schema),
                }
                .encode(&mut buf)
                .unwrap();
                black_box(&buf);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let records = log_records();
    let scope = InstrumentationScope::builder("bench").build();
    let pairs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
    let mut g = c.benchmark_group("log_record_3_attrs");
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("direct", |b| {
        b.iter(|| {
            let mut events = 0;
            pack_logs(
                &LogBatch::new(&pairs),
                &res,
                layout::DEFAULT_MAX_BUFFER,
                |bytes, _| {
                    black_box(bytes);
                    events += 1;
                },
            );
            events
        })
    });
    let mut buf = Vec::new();
    g.bench_function("transform_prost", |b| {
        b.iter(|| {
            buf.clear();
            ExportLogsServiceRequest {
                resource_logs: group_logs_by_resource_and_scope(
                    &LogBatch::new(&pairs),
                    &with_schema,
                ),
            }
            .encode(&mut buf)
            .unwrap();
            black_box(&buf);
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
    // The floor of this measurement: the same future type, already resolved, built and
    // polled the same way, with no exporter behind it.
    c.bench_function("export_no_listener_floor", |b| {
        b.iter(|| {
            let mut fut = std::pin::pin!(std::future::ready(black_box(
                opentelemetry_sdk::error::OTelSdkResult::Ok(())
            )));
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
