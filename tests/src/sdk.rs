//! Inputs for the exporters through the real SDK: one of every instrument, and spans with
//! every field set, shared by the hermetic and the kernel tests.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// Records one of every instrument kind and number type, including NaN, infinities, empty
/// attributes and non-ASCII text, then flushes.
pub fn record_everything(provider: &SdkMeterProvider) {
    let scope = InstrumentationScope::builder("inventaire-überall")
        .with_version("2.0.1")
        .with_attributes([KeyValue::new("scope.kind", "测试")])
        .build();
    let meter = provider.meter_with_scope(scope);
    let attrs = [
        KeyValue::new("host", "h1"),
        KeyValue::new("città", "Zürich 🚀"),
    ];

    meter
        .u64_counter("c.u64")
        .with_description("Zähler")
        .with_unit("{req}")
        .build()
        .add(42, &attrs);
    meter.u64_counter("c.u64").build().add(1, &[]);
    meter
        .f64_counter("c.f64")
        .build()
        .add(f64::INFINITY, &attrs);
    meter.i64_up_down_counter("udc.i64").build().add(-7, &attrs);
    meter.f64_up_down_counter("udc.f64").build().add(-0.25, &[]);
    meter
        .u64_gauge("g.u64")
        .build()
        .record(u64::MAX >> 1, &attrs);
    meter.i64_gauge("g.i64").build().record(i64::MIN, &attrs);
    let g = meter.f64_gauge("g.f64").build();
    g.record(f64::NAN, &[KeyValue::new("v", "nan")]);
    g.record(f64::NEG_INFINITY, &[KeyValue::new("v", "-inf")]);
    g.record(f64::MIN_POSITIVE, &[]);
    let h = meter.f64_histogram("h.f64").with_unit("s").build();
    for v in [0.001, 0.5, 3.0, 1e9] {
        h.record(v, &attrs);
    }
    meter.u64_histogram("h.u64").build().record(17, &[]);
    let e = meter.f64_histogram("e.f64").build();
    for v in [0.1, 1.0, 10.0, 1000.0] {
        e.record(v, &attrs);
    }
    let _observed = meter
        .u64_observable_counter("oc.u64")
        .with_callback(|o| o.observe(99, &[KeyValue::new("observed", true)]))
        .build();
    let _observed_gauge = meter
        .f64_observable_gauge("og.f64")
        .with_callback(|o| o.observe(2.5, &[]))
        .build();
    provider.force_flush().unwrap();
}

fn exponential_view(i: &Instrument) -> Option<Stream> {
    (i.name() == "e.f64").then(|| {
        Stream::builder()
            .with_aggregation(Aggregation::Base2ExponentialHistogram {
                max_size: 160,
                max_scale: 20,
                record_min_max: true,
            })
            .build()
            .unwrap()
    })
}

/// A meter provider with a service name, an exponential-histogram view for `e.f64`, and a
/// periodic reader over `exporter` that exports only when flushed.
pub fn provider_with(exporter: impl PushMetricExporter) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_resource(Resource::builder().with_service_name("round-trip").build())
        .with_view(exponential_view)
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build()
}

/// Adds 1 to `series` series of each of `metrics` counters (3 attributes each) and flushes.
pub fn record_series(provider: &SdkMeterProvider, metrics: &[(&'static str, u64)]) {
    let meter = provider.meter("packing");
    for &(name, series) in metrics {
        let counter = meter.u64_counter(name).build();
        for i in 0..series {
            counter.add(
                i,
                &[
                    KeyValue::new("host", format!("host-{i}")),
                    KeyValue::new("dc", "eu"),
                    KeyValue::new("ok", true),
                ],
            );
        }
    }
    provider.force_flush().unwrap();
}

/// A span with every field the OTLP span has set, and attributes of every value type.
pub fn full_span(i: u64, scope: &InstrumentationScope) -> SpanData {
    let trace_id = TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128 + u128::from(i));
    let ctx = |span: u64, remote| {
        SpanContext::new(
            trace_id,
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            TraceState::from_key_value([("vendor", "v1")]).unwrap(),
        )
    };
    let mut events = SpanEvents::default();
    events.events = vec![Event::new(
        "retry",
        SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_466_789 + i),
        vec![KeyValue::new("attempt", 2_i64)],
        1,
    )];
    events.dropped_count = 4;
    let mut links = SpanLinks::default();
    links.links = vec![Link::new(
        ctx(0xCC00 + i, true),
        vec![KeyValue::new("link.kind", "follows")],
        2,
    )];
    links.dropped_count = 5;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + i);
    SpanData {
        span_context: ctx(0xAA00 + i, false),
        parent_span_id: SpanId::from(0xBB00 + i),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("GET /ä/{i}")),
        start_time: t0,
        end_time: t0 + Duration::from_micros(1500),
        attributes: vec![
            KeyValue::new("s", "string ✓"),
            KeyValue::new("b", true),
            KeyValue::new("i", -42_i64),
            KeyValue::new("f", f64::NAN),
            KeyValue::new(
                "as",
                Value::Array(Array::String(vec!["x".into(), "y".into()])),
            ),
            KeyValue::new("ab", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ai", Value::Array(Array::I64(vec![1, -2, 3]))),
            KeyValue::new("af", Value::Array(Array::F64(vec![0.5, f64::INFINITY]))),
        ],
        dropped_attributes_count: 3,
        events,
        links,
        status: Status::error("upstream timed out"),
        instrumentation_scope: scope.clone(),
    }
}
