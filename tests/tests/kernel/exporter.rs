//! The exporters through the real kernel: what a perf reader receives is byte for byte what
//! the capture seam records for the same export, nothing is written without a reader, and
//! the default size limit keeps every event within reach of perf.

use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::SpanExporter as _;
use otlp_user_events::{EventCapture, MetricsExporter, Registration, SpanExporter};
use tests::block_on;
use tests::kernel::{self, Got};
use tests::otlp::{metric_points, metric_points_of_events, spans, spans_of_events};
use tests::sdk::{full_span, provider_with, record_everything, record_series};
use tests::tee::{TeeMetrics, TeeSpans};
use ue_wire::layout;

fn metrics_exporter(name: &str, max_buffer: usize) -> MetricsExporter {
    let e = MetricsExporter::builder()
        .with_tracepoint_name(name)
        .with_max_buffer_size(max_buffer)
        .build()
        .unwrap();
    assert_eq!(e.registration(), &Registration::Registered, "{name}");
    e
}

fn capture_metrics(max_buffer: usize) -> (MetricsExporter, EventCapture) {
    let capture = EventCapture::new();
    let e = MetricsExporter::builder()
        .with_capture(capture.clone())
        .with_max_buffer_size(max_buffer)
        .with_temporality(Temporality::Delta)
        .build()
        .unwrap();
    (e, capture)
}

fn read(reader: &mut ue_decoder::TracepointReader, want: usize) -> Vec<Got> {
    kernel::read(reader, want, Duration::from_secs(30))
}

#[test]
fn without_a_reader_nothing_is_written_and_the_skip_is_counted() {
    kernel::require();
    let name = "ue_k_idle_metrics";
    let exporter = metrics_exporter(name, layout::DEFAULT_MAX_BUFFER);
    assert!(!exporter.listening(), "nobody listens yet");
    let stats = exporter.stats();
    let (tee, seen) = TeeMetrics::new(vec![exporter]);
    let provider = provider_with(tee);
    record_everything(&provider);
    let s = stats.snapshot();
    assert_eq!((s.exports_skipped_no_listener, s.events_written), (1, 0));
    assert_eq!(seen.lock().unwrap().results[0], vec![Ok(())]);

    // A reader attached now sees nothing of that export: nothing was written or kept.
    let mut reader = kernel::reader(&[name], 256);
    assert!(read(&mut reader, 1).is_empty());
    assert_eq!(reader.lost_total(), 0);
    drop(reader);
    provider.shutdown().unwrap();
}

#[test]
fn the_enable_bit_follows_the_reader() {
    kernel::require();
    let name = "ue_k_bit_traces";
    let exporter = SpanExporter::builder()
        .with_tracepoint_name(name)
        .build()
        .unwrap();
    assert_eq!(exporter.registration(), &Registration::Registered);
    assert!(!exporter.listening());
    assert!(!exporter.wait_for_listener(Duration::from_millis(100)));
    let reader = kernel::reader(&[name], 64);
    assert!(
        exporter.listening(),
        "the kernel set the bit when the reader attached"
    );
    assert!(exporter.wait_for_listener(Duration::from_secs(1)));
    drop(reader);
    assert!(!exporter.listening(), "and cleared it when the reader left");
}

#[test]
fn metrics_reach_a_perf_reader_byte_for_byte_as_captured() {
    kernel::require();
    // The default name and limit: what applications and readers use.
    let mut reader = kernel::reader(&[layout::METRICS_TRACEPOINT], 1024);
    let exporter = MetricsExporter::builder().build().unwrap();
    assert!(exporter.listening());
    let stats = exporter.stats();
    let (capturing, capture) = capture_metrics(layout::DEFAULT_MAX_BUFFER);
    let (tee, seen) = TeeMetrics::new(vec![exporter, capturing]);
    let provider = provider_with(tee);
    record_everything(&provider);
    record_series(&provider, &[("a", 1900), ("b", 1500)]);

    let captured = capture.take();
    assert!(captured.len() > 10, "{} events", captured.len());
    let got = read(&mut reader, captured.len());
    assert_eq!(reader.lost_total(), 0);
    assert!(reader.malformed_records().is_empty());
    let fields: Vec<Vec<u8>> = got.iter().map(|g| g.fields.clone()).collect();
    assert_eq!(fields.len(), captured.len(), "every event arrived, no more");
    assert!(
        fields == captured,
        "events differ from the capture seam's bytes"
    );
    assert!(got.iter().all(|g| g.pid == std::process::id()));

    let seen = seen.lock().unwrap();
    assert!(seen.results.iter().flatten().all(Result::is_ok));
    let expected: Vec<Vec<u8>> = seen.reference.iter().flat_map(metric_points).collect();
    assert_eq!(metric_points_of_events(&fields), expected);
    let s = stats.snapshot();
    assert_eq!(s.events_written as usize, got.len());
    assert_eq!(s.items_written as usize, expected.len());
    drop(seen);
    provider.shutdown().unwrap();
}

#[test]
fn spans_reach_a_perf_reader_byte_for_byte_as_captured() {
    kernel::require();
    let mut reader = kernel::reader(&[layout::TRACES_TRACEPOINT], 1024);
    let exporter = SpanExporter::builder().build().unwrap();
    assert!(exporter.listening());
    let capture = EventCapture::new();
    let capturing = SpanExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    let (mut tee, seen) = TeeSpans::new(vec![exporter, capturing]);
    tee.set_resource(
        &opentelemetry_sdk::Resource::builder()
            .with_service_name("kernel-spans")
            .build(),
    );
    let scopes = [
        InstrumentationScope::builder("http")
            .with_version("1.0")
            .build(),
        InstrumentationScope::builder("db").build(),
    ];
    let batch = (0..500)
        .map(|i| full_span(i, &scopes[(i % 2) as usize]))
        .collect();
    block_on(tee.export(batch)).unwrap();

    let captured = capture.take();
    let got = read(&mut reader, captured.len());
    assert_eq!(reader.lost_total(), 0);
    let fields: Vec<Vec<u8>> = got.iter().map(|g| g.fields.clone()).collect();
    assert_eq!(fields.len(), captured.len());
    assert!(
        fields == captured,
        "events differ from the capture seam's bytes"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.results, vec![vec![Ok(())], vec![Ok(())]]);
    assert_eq!(spans_of_events(&fields), spans(&seen.reference[0]));
}

/// Finds a number of series whose single-event encoding is just above the perf limit.
fn series_just_over_the_limit() -> (u64, usize) {
    for series in 60.. {
        let (exporter, capture) = capture_metrics(layout::FTRACE_MAX_BUFFER);
        let provider = provider_with(exporter);
        record_series(&provider, &[("edge", series)]);
        let events = capture.take();
        assert_eq!(events.len(), 1);
        let len = events[0].len() - layout::HEADER_LEN;
        if len > layout::PERF_MAX_BUFFER {
            provider.shutdown().unwrap();
            return (series, len);
        }
    }
    unreachable!()
}

#[test]
fn an_export_just_over_the_limit_arrives_split_while_one_event_of_it_is_lost() {
    kernel::require();
    let (series, one_event_len) = series_just_over_the_limit();
    assert!(
        one_event_len <= layout::PERF_MAX_BUFFER + 200,
        "{one_event_len}"
    );

    // The default limit splits the export into two events, and both arrive.
    let name = "ue_k_edge_default";
    let mut reader = kernel::reader(&[name, "ue_k_edge_ftrace"], 1024);
    let exporter = metrics_exporter(name, layout::DEFAULT_MAX_BUFFER);
    let stats = exporter.stats();
    let (tee, seen) = TeeMetrics::new(vec![exporter]);
    let provider = provider_with(tee);
    record_series(&provider, &[("edge", series)]);
    let got = read(&mut reader, 2);
    assert_eq!(
        got.len(),
        2,
        "{one_event_len} bytes of points arrive as two events"
    );
    assert!(got.iter().all(|g| g.otlp.len() <= layout::PERF_MAX_BUFFER));
    let expected = metric_points(&seen.lock().unwrap().reference[0]);
    let fields: Vec<Vec<u8>> = got.iter().map(|g| g.fields.clone()).collect();
    assert_eq!(metric_points_of_events(&fields), expected);
    assert_eq!(stats.snapshot().items_written, series);
    provider.shutdown().unwrap();

    // The same export with the ftrace-only limit is one event, which writev accepts and the
    // perf path drops without a trace: what the default limit prevents.
    let exporter = metrics_exporter("ue_k_edge_ftrace", layout::FTRACE_MAX_BUFFER);
    let stats = exporter.stats();
    let provider = provider_with(exporter);
    record_series(&provider, &[("edge", series)]);
    let s = stats.snapshot();
    assert_eq!(
        (s.events_written, s.bytes_written as usize),
        (1, one_event_len),
        "writev reported success"
    );
    assert!(
        read(&mut reader, 1).is_empty(),
        "an event of {one_event_len} bytes never reaches perf"
    );
    assert_eq!(
        reader.lost_total(),
        0,
        "and perf does not count it as lost either"
    );
    provider.shutdown().unwrap();
}

#[test]
fn captured_and_kernel_events_agree_on_the_layout_the_kernel_reports() {
    kernel::require();
    let reader = kernel::reader(&[layout::METRICS_TRACEPOINT, layout::TRACES_TRACEPOINT], 64);
    let tracefs = reader.tracefs();
    for name in [layout::METRICS_TRACEPOINT, layout::TRACES_TRACEPOINT] {
        let format = tracefs.event_format(name).unwrap();
        format.check_otlp_layout().unwrap();
        let buffer = format.field("buffer").unwrap();
        assert_eq!(
            buffer.offset,
            layout::TRACE_ENTRY_LEN + layout::REL_LOC_OFFSET
        );
        assert_eq!(buffer.size, 4);
    }
}
