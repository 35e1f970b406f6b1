//! The span processor, the listener-aware sampler and the listener-aware metric reader, driven
//! by the real SDK into the capture seam.

use std::time::{Duration, Instant};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanProcessor as _};
use otlp_user_events::{
    EventCapture, ListenerAwareReader, ListenerAwareSampler, ListenerAwareTracerProvider,
    MetricsExporter, UserEventsSpanProcessor, layout,
};
use tests::otlp::{decode_events, int_sum_total, span_names};
use tests::sdk::full_span;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;

fn processor(capture: &EventCapture, delay: Duration, shards: usize) -> UserEventsSpanProcessor {
    UserEventsSpanProcessor::builder()
        .with_capture(capture.clone())
        .with_max_delay(delay)
        .with_shards(shards)
        .build()
        .unwrap()
}

/// Spans with 6 attributes and 1 event, named `t{thread}-{i}`.
fn make_spans(provider: &SdkTracerProvider, thread: usize, n: usize) {
    spans_through(&provider.tracer("listener-aware-test"), thread, n);
}

fn spans_through<T: Tracer>(tracer: &T, thread: usize, n: usize) {
    for i in 0..n {
        let mut span = tracer.start(format!("t{thread}-{i}"));
        for a in 0..6 {
            span.set_attribute(KeyValue::new(format!("attr.{a}"), format!("value-{i}")));
        }
        span.add_event("checkpoint", vec![]);
        span.end();
    }
}

#[test]
fn the_processor_writes_every_span_exactly_once_from_many_threads() {
    let capture = EventCapture::new();
    let p = processor(&capture, Duration::from_secs(30), 3);
    let stats = p.stats();
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("threads").build())
        .with_span_processor(p)
        .build();
    std::thread::scope(|s| {
        for t in 0..8 {
            let provider = &provider;
            s.spawn(move || make_spans(provider, t, 500));
        }
    });
    provider.force_flush().unwrap();
    let events = capture.take();
    let mut want: Vec<String> = (0..8)
        .flat_map(|t| (0..500).map(move |i| format!("t{t}-{i}")))
        .collect();
    want.sort();
    assert_eq!(span_names(&events), want);
    assert!(
        events
            .iter()
            .all(|e| e.len() <= layout::HEADER_LEN + layout::DEFAULT_MAX_BUFFER)
    );
    let s = stats.snapshot();
    assert_eq!(
        (s.items_written, s.events_written),
        (4000, events.len() as u64)
    );
    // Packed, not one span per event: at most a partly filled event per shard at the flush.
    let per_event = 4000 / events.len();
    assert!(per_event >= 20, "{per_event} spans per event");
    let reqs: Vec<ExportTraceServiceRequest> = decode_events(&events);
    assert!(reqs.iter().all(|r| {
        r.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .any(|kv| kv.key == "service.name")
    }));
    provider.shutdown().unwrap();
}

#[test]
fn a_partly_filled_event_goes_out_after_the_delay_without_a_flush() {
    let capture = EventCapture::new();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor(&capture, Duration::from_millis(300), 2))
        .build();
    let ended = Instant::now();
    make_spans(&provider, 0, 3);
    assert!(
        capture.events().is_empty(),
        "three spans do not fill an event"
    );
    let deadline = ended + Duration::from_secs(10);
    while capture.events().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(span_names(&capture.take()), ["t0-0", "t0-1", "t0-2"]);
    provider.shutdown().unwrap();
}

#[test]
fn shutdown_writes_what_is_pending_and_later_spans_are_ignored() {
    let capture = EventCapture::new();
    let p = processor(&capture, Duration::from_secs(30), 1);
    let scope = InstrumentationScope::builder("s").build();
    p.on_end(full_span(1, &scope));
    p.on_end(full_span(2, &scope));
    assert!(capture.events().is_empty());
    p.shutdown().unwrap();
    assert_eq!(span_names(&capture.take()).len(), 2);
    p.on_end(full_span(3, &scope));
    assert!(p.force_flush().is_err(), "after shutdown");
    assert!(capture.events().is_empty());
    assert!(p.shutdown().is_err(), "a second shutdown is refused");
}

#[test]
fn an_oversize_span_is_dropped_and_counted_by_the_processor() {
    let capture = EventCapture::new();
    let p = processor(&capture, Duration::from_secs(30), 1);
    let stats = p.stats();
    let scope = InstrumentationScope::builder("s").build();
    let mut big = full_span(1, &scope);
    big.attributes.push(KeyValue::new("blob", "x".repeat(9000)));
    p.on_end(full_span(0, &scope));
    p.on_end(big);
    p.on_end(full_span(2, &scope));
    p.force_flush().unwrap();
    let s = stats.snapshot();
    assert_eq!((s.items_written, s.items_dropped_oversize), (2, 1));
    assert_eq!(span_names(&capture.take()).len(), 2);
}

#[test]
fn while_nobody_listens_the_sampler_records_nothing_and_spans_flow_once_a_reader_attaches() {
    let capture = EventCapture::new();
    capture.set_listening(false);
    let p = processor(&capture, Duration::from_secs(30), 1);
    let stats = p.stats();
    let provider = SdkTracerProvider::builder()
        .with_sampler(ListenerAwareSampler::new(p.listener(), Sampler::AlwaysOn))
        .with_span_processor(p)
        .build();
    let tracer = provider.tracer("t");
    let span = tracer.start("unheard");
    assert!(!span.is_recording(), "non-recording while nobody listens");
    drop(span);
    make_spans(&provider, 0, 50);
    provider.force_flush().unwrap();
    assert!(capture.events().is_empty());
    assert_eq!(stats.snapshot().items_written, 0);

    capture.set_listening(true);
    let span = tracer.start("heard");
    assert!(span.is_recording());
    drop(span);
    make_spans(&provider, 1, 50);
    provider.force_flush().unwrap();
    let names = span_names(&capture.take());
    assert_eq!(names.len(), 51);
    assert!(names.iter().all(|n| n == "heard" || n.starts_with("t1-")));
    provider.shutdown().unwrap();
}

#[test]
fn while_nobody_listens_the_tracer_skips_the_sdk_and_spans_flow_once_a_reader_attaches() {
    let capture = EventCapture::new();
    capture.set_listening(false);
    let p = processor(&capture, Duration::from_secs(30), 1);
    let stats = p.stats();
    let listener = p.listener();
    let sdk = SdkTracerProvider::builder().with_span_processor(p).build();
    let provider = ListenerAwareTracerProvider::new(sdk, listener);
    let tracer = provider.tracer("t");
    let remote = SpanContext::new(
        TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
        SpanId::from(0x1112_1314_1516_1718),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let parent = Context::new().with_remote_span_context(remote.clone());

    // Off: nothing reaches the SDK; a span carries its parent's context, a root none.
    let mut child = tracer.start_with_context("unheard-child", &parent);
    assert!(!child.is_recording());
    assert_eq!(child.span_context(), &remote);
    child.set_attribute(KeyValue::new("k", "v"));
    child.set_status(Status::error("ignored"));
    child.update_name("renamed");
    child.add_link(remote.clone(), vec![]);
    child.record_error(&std::fmt::Error);
    child.end();
    let root = tracer.start("unheard");
    assert!(!root.is_recording());
    assert!(!root.span_context().is_valid());
    drop(root);
    spans_through(&tracer, 0, 50);
    provider.sdk().force_flush().unwrap();
    assert!(capture.events().is_empty());
    assert_eq!(stats.snapshot().items_written, 0);

    // On: the SDK's spans, with the parent they were given.
    capture.set_listening(true);
    let child = tracer.start_with_context("heard-child", &parent);
    assert!(child.is_recording());
    assert_eq!(child.span_context().trace_id(), remote.trace_id());
    assert_ne!(child.span_context().span_id(), remote.span_id());
    drop(child);
    spans_through(&tracer, 1, 50);
    provider.sdk().force_flush().unwrap();
    let events = capture.take();
    let names = span_names(&events);
    assert_eq!(names.len(), 51, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n == "heard-child" || n.starts_with("t1-"))
    );
    let spans: Vec<_> = decode_events::<ExportTraceServiceRequest>(&events)
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect();
    let heard = spans.iter().find(|s| s.name == "heard-child").unwrap();
    assert_eq!(heard.parent_span_id, remote.span_id().to_bytes());
    assert!(
        spans
            .iter()
            .all(|s| s.attributes.len() == 6 || s.name == "heard-child")
    );
    provider.sdk().shutdown().unwrap();
}

#[test]
fn the_sampler_asks_the_wrapped_sampler_while_listening() {
    let capture = EventCapture::new();
    let p = processor(&capture, Duration::from_secs(30), 1);
    let provider = SdkTracerProvider::builder()
        .with_sampler(ListenerAwareSampler::new(p.listener(), Sampler::AlwaysOff))
        .with_span_processor(p)
        .build();
    assert!(!provider.tracer("t").start("off").is_recording());
    provider.shutdown().unwrap();
}

#[test]
fn the_reader_skips_collection_while_nobody_listens_and_loses_nothing() {
    for temporality in [Temporality::Delta, Temporality::Cumulative] {
        let capture = EventCapture::new();
        capture.set_listening(false);
        let exporter = MetricsExporter::builder()
            .with_capture(capture.clone())
            .with_temporality(temporality)
            .build()
            .unwrap();
        let reader = ListenerAwareReader::builder(exporter)
            .with_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let counter = provider.meter("m").u64_counter("requests").build();

        counter.add(5, &[KeyValue::new("route", "/a")]);
        provider.force_flush().unwrap();
        assert!(
            capture.events().is_empty(),
            "{temporality:?}: nothing while nobody listens"
        );

        capture.set_listening(true);
        counter.add(7, &[KeyValue::new("route", "/a")]);
        provider.force_flush().unwrap();
        assert_eq!(
            int_sum_total(&capture.take()),
            12,
            "{temporality:?}: what was recorded while nobody listened arrives with the first export"
        );
        counter.add(1, &[KeyValue::new("route", "/a")]);
        provider.force_flush().unwrap();
        let want = match temporality {
            Temporality::Delta => 1,
            _ => 13,
        };
        assert_eq!(int_sum_total(&capture.take()), want, "{temporality:?}");
        provider.shutdown().unwrap();
    }
}

#[test]
fn the_reader_collects_on_its_interval_while_listening() {
    let capture = EventCapture::new();
    let exporter = MetricsExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    let provider = SdkMeterProvider::builder()
        .with_reader(
            ListenerAwareReader::builder(exporter)
                .with_interval(Duration::from_millis(100))
                .build()
                .unwrap(),
        )
        .build();
    provider.meter("m").u64_counter("ticks").build().add(3, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while capture.events().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(int_sum_total(&capture.take()), 3);
    provider.shutdown().unwrap();
}
