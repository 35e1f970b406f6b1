//! The span processor and the listener-aware sampler and reader through the real kernel:
//! nothing is recorded or collected while no reader listens, and everything arrives once
//! one attaches.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use otlp_user_events::{
    ListenerAwareReader, ListenerAwareSampler, ListenerAwareTracerProvider, MetricsExporter,
    Registration, UserEventsSpanProcessor,
};
use tests::kernel::{self, Got};
use tests::otlp::{int_sum_total, span_names};

/// perf turns the enable bit on when it opens the event, a moment before it enables it.
const GRACE: Duration = Duration::from_millis(200);

fn read(reader: &mut ue_decoder::TracepointReader, want: usize) -> Vec<Got> {
    kernel::read(reader, want, Duration::from_secs(30))
}

/// The events' fields (layout header and OTLP), as the capture seam records them.
fn fields(got: &[Got]) -> Vec<Vec<u8>> {
    got.iter().map(|g| g.fields.clone()).collect()
}

fn make_spans(provider: &SdkTracerProvider, prefix: &str, n: usize) {
    spans_through(&provider.tracer("kernel-listener-aware"), prefix, n);
}

fn spans_through<T: Tracer>(tracer: &T, prefix: &str, n: usize) {
    for i in 0..n {
        let mut span = tracer.start(format!("{prefix}-{i}"));
        for a in 0..6 {
            span.set_attribute(KeyValue::new(format!("attr.{a}"), i as i64));
        }
        span.add_event("checkpoint", vec![]);
        span.end();
    }
}

fn processor(name: &str) -> UserEventsSpanProcessor {
    let p = UserEventsSpanProcessor::builder()
        .with_tracepoint_name(name)
        .with_max_delay(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(p.registration(), &Registration::Registered, "{name}");
    p
}

#[test]
fn the_span_processor_delivers_every_span_from_many_threads() {
    kernel::require();
    let name = "ue_k_proc_traces";
    let mut reader = kernel::reader(&[name], 1024);
    let p = processor(name);
    assert!(p.wait_for_listener(Duration::from_secs(5)));
    std::thread::sleep(GRACE);
    let stats = p.stats();
    let provider = SdkTracerProvider::builder().with_span_processor(p).build();
    std::thread::scope(|s| {
        for t in 0..4 {
            let provider = &provider;
            s.spawn(move || make_spans(provider, &format!("t{t}"), 200));
        }
    });
    provider.force_flush().unwrap();
    let written = stats.snapshot();
    let got = read(&mut reader, written.events_written as usize);
    assert_eq!(reader.lost_total(), 0);
    assert_eq!(got.len() as u64, written.events_written);
    let mut want: Vec<String> = (0..4)
        .flat_map(|t| (0..200).map(move |i| format!("t{t}-{i}")))
        .collect();
    want.sort();
    assert_eq!(span_names(&fields(&got)), want, "every span once");
    assert!(
        got.len() < 200,
        "packed: {} events for 800 spans",
        got.len()
    );
    provider.shutdown().unwrap();
}

#[test]
fn under_the_listener_aware_sampler_nothing_is_recorded_until_a_reader_attaches() {
    kernel::require();
    let name = "ue_k_sampled_traces";
    let p = processor(name);
    let stats = p.stats();
    assert!(!p.listening());
    let provider = SdkTracerProvider::builder()
        .with_sampler(ListenerAwareSampler::new(p.listener(), Sampler::AlwaysOn))
        .with_span_processor(p)
        .build();
    let tracer = provider.tracer("t");
    assert!(!tracer.start("unheard").is_recording());
    make_spans(&provider, "before", 100);
    provider.force_flush().unwrap();
    let s = stats.snapshot();
    assert_eq!((s.events_written, s.items_written), (0, 0));

    let mut reader = kernel::reader(&[name], 1024);
    std::thread::sleep(GRACE);
    assert!(
        tracer.start("heard").is_recording(),
        "recording once a reader listens"
    );
    make_spans(&provider, "after", 100);
    provider.force_flush().unwrap();
    let got = read(&mut reader, stats.snapshot().events_written as usize);
    assert_eq!(reader.lost_total(), 0);
    let names = span_names(&fields(&got));
    assert_eq!(names.len(), 101, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n == "heard" || n.starts_with("after-"))
    );
    provider.shutdown().unwrap();
}

#[test]
fn under_the_listener_aware_tracer_nothing_reaches_the_sdk_until_a_reader_attaches() {
    kernel::require();
    let name = "ue_k_tracer_traces";
    let p = processor(name);
    let stats = p.stats();
    let listener = p.listener();
    let provider = ListenerAwareTracerProvider::new(
        SdkTracerProvider::builder().with_span_processor(p).build(),
        listener,
    );
    let tracer = provider.tracer("t");
    assert!(!tracer.start("unheard").is_recording());
    spans_through(&tracer, "before", 100);
    provider.sdk().force_flush().unwrap();
    let s = stats.snapshot();
    assert_eq!((s.events_written, s.items_written), (0, 0));

    let mut reader = kernel::reader(&[name], 1024);
    std::thread::sleep(GRACE);
    assert!(
        tracer.start("heard").is_recording(),
        "recording once a reader listens"
    );
    spans_through(&tracer, "after", 100);
    provider.sdk().force_flush().unwrap();
    let got = read(&mut reader, stats.snapshot().events_written as usize);
    assert_eq!(reader.lost_total(), 0);
    let names = span_names(&fields(&got));
    assert_eq!(names.len(), 101, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n == "heard" || n.starts_with("after-"))
    );
    provider.sdk().shutdown().unwrap();
}

#[test]
fn the_listener_aware_reader_collects_nothing_until_a_reader_attaches_and_loses_nothing() {
    kernel::require();
    let name = "ue_k_lazy_metrics";
    let exporter = MetricsExporter::builder()
        .with_tracepoint_name(name)
        .build()
        .unwrap();
    assert_eq!(exporter.registration(), &Registration::Registered);
    let stats = exporter.stats();
    let provider = SdkMeterProvider::builder()
        .with_reader(
            ListenerAwareReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .build();
    let counter = provider.meter("m").u64_counter("requests").build();
    counter.add(5, &[KeyValue::new("route", "/a")]);
    provider.force_flush().unwrap();
    let s = stats.snapshot();
    assert_eq!(
        (s.events_written, s.exports_skipped_no_listener),
        (0, 0),
        "not even collected, so not exported"
    );

    let mut reader = kernel::reader(&[name], 256);
    std::thread::sleep(GRACE);
    counter.add(7, &[KeyValue::new("route", "/a")]);
    provider.force_flush().unwrap();
    let got = read(&mut reader, 1);
    assert_eq!(reader.lost_total(), 0);
    assert_eq!(
        int_sum_total(&fields(&got)),
        12,
        "what was recorded while nobody listened arrives with the first export"
    );
    provider.shutdown().unwrap();
}
