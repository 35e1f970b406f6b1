//! The exporters (metrics, spans, logs) driven by the real OpenTelemetry SDK, writing into the capture seam: what
//! the SDK hands over arrives in the events, whole and exactly once.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer, TracerProvider as _};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _};
use otlp_user_events::{
    BuildError, EventCapture, LogExporter, MetricsExporter, Registration, SpanExporter,
};
use tests::block_on;
use tests::otlp::{
    decode_events, metric_points, metric_points_of_events, records_of_events, span_names, spans,
    spans_of_events,
};
use tests::sdk::{full_span, provider_with, record_everything, record_series};
use tests::tee::{TeeMetrics, TeeSpans};
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_proto::common::v1::any_value;
use ue_proto::metrics::v1::{metric::Data, number_data_point};
use ue_wire::layout;

fn capture_metrics(temporality: Temporality) -> (MetricsExporter, EventCapture) {
    let capture = EventCapture::new();
    let exporter = MetricsExporter::builder()
        .with_capture(capture.clone())
        .with_temporality(temporality)
        .build()
        .unwrap();
    (exporter, capture)
}

#[test]
fn every_instrument_and_number_type_round_trips_in_both_temporalities() {
    for temporality in [Temporality::Delta, Temporality::Cumulative] {
        let (exporter, capture) = capture_metrics(temporality);
        let stats = exporter.stats();
        let (tee, seen) = TeeMetrics::new(vec![exporter]);
        let provider = provider_with(tee);
        record_everything(&provider);

        let events = capture.take();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.results[0], vec![Ok(())]);
        let expected = metric_points(&seen.reference[0]);
        // The SDK itself drops the non-finite measurements (c.f64's infinity, g.f64's NaN and
        // -inf); non-finite values that reach the exporter are covered by the unit tests.
        assert_eq!(expected.len(), 12, "one point per series the SDK kept");
        assert_eq!(
            metric_points_of_events(&events),
            expected,
            "{temporality:?}"
        );

        let s = stats.snapshot();
        assert_eq!(s.items_written, 12);
        assert_eq!(s.events_written as usize, events.len());
        assert_eq!(events.len(), 1, "12 small points fit in one event");
        assert_eq!(
            s.bytes_written as usize,
            events
                .iter()
                .map(|e| e.len() - layout::HEADER_LEN)
                .sum::<usize>()
        );

        // Spot checks against the SDK input itself, not only against the reference conversion.
        let req: Vec<ExportMetricsServiceRequest> = decode_events(&events);
        let rm = &req[0].resource_metrics[0];
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "inventaire-überall");
        assert_eq!(sm.scope.as_ref().unwrap().version, "2.0.1");
        assert_eq!(sm.scope.as_ref().unwrap().attributes[0].key, "scope.kind");
        let metric = |name: &str| sm.metrics.iter().find(|m| m.name == name).unwrap();
        let mut names: Vec<&str> = sm.metrics.iter().map(|m| m.name.as_str()).collect();
        names.dedup();
        assert_eq!(
            names,
            [
                "c.u64", "udc.i64", "udc.f64", "g.u64", "g.i64", "g.f64", "h.f64", "h.u64",
                "e.f64", "oc.u64", "og.f64"
            ]
        );
        let want = if temporality == Temporality::Delta {
            1
        } else {
            2
        };
        let Some(Data::Sum(sum)) = &metric("c.u64").data else {
            panic!("c.u64 is a sum")
        };
        assert_eq!(sum.aggregation_temporality, want);
        assert!(sum.is_monotonic);
        assert_eq!(metric("c.u64").description, "Zähler");
        assert_eq!(metric("c.u64").unit, "{req}");
        let total: i64 = sm
            .metrics
            .iter()
            .filter(|m| m.name == "c.u64")
            .flat_map(|m| match &m.data {
                Some(Data::Sum(s)) => s.data_points.clone(),
                _ => panic!("c.u64 is a sum"),
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                _ => panic!("integer counter"),
            })
            .sum();
        assert_eq!(total, 43);
        let Some(Data::Gauge(g)) = &metric("g.f64").data else {
            panic!("g.f64 is a gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(f64::MIN_POSITIVE))
        );
        let Some(Data::Gauge(g)) = &metric("g.i64").data else {
            panic!("g.i64 is a gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(i64::MIN))
        );
        let Some(Data::ExponentialHistogram(e)) = &metric("e.f64").data else {
            panic!("e.f64 is exponential")
        };
        assert_eq!(e.data_points[0].count, 4);
        let Some(Data::Histogram(h)) = &metric("h.f64").data else {
            panic!("h.f64 is a histogram")
        };
        assert_eq!(h.data_points[0].count, 4);
        assert_eq!(h.data_points[0].max, Some(1e9));
        drop(seen); // shutdown exports once more, through the tee
        provider.shutdown().unwrap();
    }
}

#[test]
fn thousands_of_series_pack_into_full_events_without_loss() {
    let (exporter, capture) = capture_metrics(Temporality::Delta);
    let (tee, seen) = TeeMetrics::new(vec![exporter]);
    let provider = provider_with(tee);
    // Below the SDK's default cardinality limit of 2,000 series per metric.
    record_series(&provider, &[("a", 1900), ("b", 1500), ("c", 700)]);
    let events = capture.take();
    let seen = seen.lock().unwrap();
    let expected = metric_points(&seen.reference[0]);
    assert_eq!(expected.len(), 4100);
    assert_eq!(metric_points_of_events(&events), expected);
    let limit = layout::DEFAULT_MAX_BUFFER;
    let sizes: Vec<usize> = events
        .iter()
        .map(|e| e.len() - layout::HEADER_LEN)
        .collect();
    assert!(sizes.iter().all(|&s| s <= limit));
    let fill = sizes.iter().sum::<usize>() as f64 / (sizes.len() * limit) as f64;
    assert!(
        fill >= 0.9,
        "average fill {fill:.3} over {} events",
        sizes.len()
    );
}

#[test]
fn nothing_is_encoded_while_nobody_listens() {
    let (exporter, capture) = capture_metrics(Temporality::Delta);
    capture.set_listening(false);
    let stats = exporter.stats();
    let (tee, seen) = TeeMetrics::new(vec![exporter]);
    let provider = provider_with(tee);
    record_everything(&provider);
    record_everything(&provider);
    assert!(capture.events().is_empty());
    let s = stats.snapshot();
    assert_eq!(s.exports_skipped_no_listener, 2);
    assert_eq!((s.events_written, s.items_written), (0, 0));
    assert_eq!(seen.lock().unwrap().results[0], vec![Ok(()), Ok(())]);
}

#[test]
fn an_oversize_point_is_dropped_counted_and_named_while_the_rest_is_written() {
    let (exporter, capture) = capture_metrics(Temporality::Delta);
    let stats = exporter.stats();
    let (tee, seen) = TeeMetrics::new(vec![exporter]);
    let bounds: Vec<f64> = (0..1500).map(f64::from).collect();
    let provider = SdkMeterProvider::builder()
        .with_view(move |i: &Instrument| {
            (i.name() == "huge").then(|| {
                Stream::builder()
                    .with_aggregation(Aggregation::ExplicitBucketHistogram {
                        boundaries: bounds.clone(),
                        record_min_max: true,
                    })
                    .build()
                    .unwrap()
            })
        })
        .with_reader(PeriodicReader::builder(tee).build())
        .build();
    let meter = provider.meter("m");
    meter.f64_histogram("huge").build().record(3.0, &[]);
    meter.u64_counter("small").build().add(5, &[]);
    provider.force_flush().unwrap();

    let seen = seen.lock().unwrap();
    let err = seen.results[0][0].as_ref().unwrap_err();
    assert!(err.contains("\"huge\"") && err.contains("8168"), "{err}");
    let s = stats.snapshot();
    assert_eq!((s.items_dropped_oversize, s.items_written), (1, 1));
    let got = metric_points_of_events(&capture.take());
    assert_eq!(got.len(), 1);
    assert_eq!(
        got,
        metric_points(&seen.reference[0])[1..],
        "the small counter arrives"
    );
}

#[test]
fn export_after_shutdown_is_refused() {
    let (exporter, _capture) = capture_metrics(Temporality::Delta);
    exporter.shutdown().unwrap();
    assert!(matches!(
        block_on(exporter.export(&ResourceMetrics::default())),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    assert!(matches!(
        exporter.shutdown(),
        Err(OTelSdkError::AlreadyShutdown)
    ));

    let spans = SpanExporter::builder()
        .with_capture(EventCapture::new())
        .build()
        .unwrap();
    spans.shutdown().unwrap();
    assert!(matches!(
        block_on(spans.export(vec![])),
        Err(OTelSdkError::AlreadyShutdown)
    ));
}

#[test]
fn builder_enforces_the_size_limits_and_names() {
    let build = |n| {
        MetricsExporter::builder()
            .with_capture(EventCapture::new())
            .with_max_buffer_size(n)
            .build()
    };
    assert!(build(65_360).is_ok(), "ftrace-only limit is accepted");
    assert!(build(8169).is_ok());
    assert!(matches!(
        build(65_361),
        Err(BuildError::BufferTooLarge {
            requested: 65_361,
            max: 65_360
        })
    ));
    assert!(matches!(build(10), Err(BuildError::BufferTooSmall { .. })));
    let msg = build(100_000).unwrap_err().to_string();
    assert!(msg.contains("8168") && msg.contains("65360"), "{msg}");
    let bad = SpanExporter::builder()
        .with_tracepoint_name("bad name")
        .build();
    assert!(matches!(bad, Err(BuildError::InvalidName(_))));
    let named = SpanExporter::builder()
        .with_capture(EventCapture::new())
        .with_tracepoint_name("my_traces")
        .build()
        .unwrap();
    assert_eq!(named.registration(), &Registration::Capture);
}

#[test]
fn a_failed_registration_disables_the_exporter_and_says_why() {
    // This host's kernel has no user_events (see README); where it has, the registration works
    // and this test checks that instead.
    let exporter = MetricsExporter::builder()
        .with_tracepoint_name("otlp_metrics_reg_test")
        .build()
        .unwrap();
    match exporter.registration() {
        Registration::Registered => {}
        failed @ Registration::Failed { .. } => {
            let why = failed.to_string();
            assert!(
                why.contains("CONFIG_USER_EVENTS")
                    || why.contains("tracefs")
                    || why.contains("permission"),
                "{why}"
            );
            let stats = exporter.stats();
            let t = std::time::Instant::now();
            assert!(!exporter.wait_for_listener(std::time::Duration::from_secs(5)));
            assert!(
                t.elapsed() < std::time::Duration::from_secs(1),
                "no waiting on a tracepoint that cannot be enabled"
            );
            assert!(block_on(exporter.export(&ResourceMetrics::default())).is_ok());
            assert_eq!(stats.snapshot().exports_skipped_no_listener, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn spans_with_every_field_round_trip_grouped_by_scope() {
    let capture = EventCapture::new();
    let mut exporter = SpanExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    exporter.set_resource(
        &Resource::builder()
            .with_service_name("checkout")
            .with_attribute(KeyValue::new("k8s.pod", "p-1"))
            .build(),
    );
    let stats = exporter.stats();
    let (mut tee, seen) = TeeSpans::new(vec![exporter]);
    tee.set_resource(
        &Resource::builder()
            .with_service_name("checkout")
            .with_attribute(KeyValue::new("k8s.pod", "p-1"))
            .build(),
    );
    let scopes = [
        InstrumentationScope::builder("http")
            .with_version("1.0")
            .with_attributes([KeyValue::new("a", 1_i64)])
            .build(),
        InstrumentationScope::builder("db").build(),
    ];
    let batch: Vec<SpanData> = (0..600)
        .map(|i| full_span(i, &scopes[(i % 2) as usize]))
        .collect();
    assert!(block_on(tee.export(batch)).is_ok());

    let events = capture.take();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.results[0], vec![Ok(())]);
    assert_eq!(spans_of_events(&events), spans(&seen.reference[0]));
    assert!(events.len() > 1, "600 full spans need several events");
    assert_eq!(stats.snapshot().items_written, 600);

    let reqs: Vec<ExportTraceServiceRequest> = decode_events(&events);
    let rs = &reqs[0].resource_spans[0];
    assert!(
        rs.resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .any(|kv| kv.key == "k8s.pod")
    );
    // Spans are grouped by scope: each scope appears once per event, and both arrive.
    let mut scope_names = Vec::new();
    for r in &reqs {
        let names: Vec<&str> = r.resource_spans[0]
            .scope_spans
            .iter()
            .map(|ss| ss.scope.as_ref().unwrap().name.as_str())
            .collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique);
        scope_names.extend(names);
    }
    scope_names.dedup();
    assert_eq!(scope_names, ["http", "db"]);
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!(
        s.trace_id,
        0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10_u128.to_be_bytes()
    );
    assert_eq!(s.parent_span_id, 0xBB00_u64.to_be_bytes());
    assert_eq!(s.trace_state, "vendor=v1");
    assert_eq!(s.flags, 0x301, "sampled, parent is remote");
    assert_eq!(s.name, "GET /ä/0");
    assert_eq!(
        (
            s.dropped_attributes_count,
            s.dropped_events_count,
            s.dropped_links_count
        ),
        (3, 4, 5)
    );
    assert_eq!(s.attributes.len(), 8);
    assert_eq!(s.events[0].dropped_attributes_count, 1);
    assert_eq!(s.links[0].attributes[0].key, "link.kind");
    assert_eq!(s.links[0].dropped_attributes_count, 2);
    let status = s.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "upstream timed out")
    );
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
}

#[test]
fn works_with_the_simple_and_the_batch_span_processor() {
    for batch in [false, true] {
        let capture = EventCapture::new();
        let exporter = SpanExporter::builder()
            .with_capture(capture.clone())
            .build()
            .unwrap();
        let builder = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("proc").build());
        let provider = if batch {
            builder.with_batch_exporter(exporter)
        } else {
            builder.with_simple_exporter(exporter)
        }
        .build();
        let tracer = provider.tracer("proc-test");
        for i in 0..250 {
            tracer.in_span(format!("op-{i}"), |_| {});
        }
        provider.force_flush().unwrap();
        let events = capture.take();
        let reqs: Vec<ExportTraceServiceRequest> = decode_events(&events);
        let names = span_names(&events);
        let mut want: Vec<String> = (0..250).map(|i| format!("op-{i}")).collect();
        want.sort();
        assert_eq!(names, want, "batch processor: {batch}");
        let service = &reqs[0].resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert!(
            service.iter().any(|kv| kv.key == "service.name"),
            "resource reaches the events"
        );
        provider.shutdown().unwrap();
    }
}

#[test]
fn an_oversize_span_is_dropped_counted_and_named() {
    let capture = EventCapture::new();
    let exporter = SpanExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    let stats = exporter.stats();
    let scope = InstrumentationScope::builder("s").build();
    let mut big = full_span(1, &scope);
    big.name = "bulk-upload".into();
    big.attributes
        .push(KeyValue::new("payload", "x".repeat(9000)));
    let err = block_on(exporter.export(vec![full_span(0, &scope), big, full_span(2, &scope)]))
        .unwrap_err();
    assert!(err.to_string().contains("\"bulk-upload\""), "{err}");
    let s = stats.snapshot();
    assert_eq!((s.items_dropped_oversize, s.items_written), (1, 2));
    assert_eq!(spans_of_events(&capture.take()).len(), 2);
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

fn capture_logs() -> (LogExporter, EventCapture) {
    let capture = EventCapture::new();
    let exporter = LogExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    (exporter, capture)
}

fn string_value(v: &ue_proto::common::v1::AnyValue) -> &str {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("a string, not {other:?}"),
    }
}

#[test]
fn log_records_with_every_field_round_trip_through_the_sdk() {
    for batch in [false, true] {
        let (exporter, capture) = capture_logs();
        let stats = exporter.stats();
        let builder = SdkLoggerProvider::builder().with_resource(
            Resource::builder()
                .with_service_name("checkout")
                .with_attribute(KeyValue::new("k8s.pod", "p-1"))
                .build(),
        );
        let provider = if batch {
            builder.with_batch_exporter(exporter)
        } else {
            builder.with_simple_exporter(exporter)
        }
        .build();
        let logger = provider.logger_with_scope(
            InstrumentationScope::builder("payments")
                .with_version("3.1")
                .with_attributes([KeyValue::new("scope.kind", "lib")])
                .build(),
        );
        let tracer_provider = SdkTracerProvider::builder().build();
        let tracer = tracer_provider.tracer("t");
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let mut span_ids = Vec::new();
        for i in 0..300_i64 {
            let mut r = logger.create_log_record();
            r.set_event_name("payment.settled");
            r.set_timestamp(t0 + Duration::from_nanos(i as u64));
            r.set_severity_number(Severity::Warn2);
            r.set_severity_text("WARN");
            r.set_body(AnyValue::Map(Box::new(HashMap::from([
                (Key::from("order"), AnyValue::Int(i)),
                (
                    Key::from("lines"),
                    AnyValue::ListAny(Box::new(vec![
                        AnyValue::from("book"),
                        AnyValue::Double(9.5),
                        AnyValue::Bytes(Box::new(vec![0, 1, 255])),
                    ])),
                ),
            ]))));
            r.add_attribute("user.id", format!("u-{i}"));
            r.add_attribute("retry", AnyValue::Boolean(i % 2 == 0));
            tracer.in_span("settle", |cx| {
                span_ids.push(cx.span().span_context().span_id());
                logger.emit(r);
            });
        }
        provider.force_flush().unwrap();

        let events = capture.take();
        assert!(events.len() > 1, "300 records need several events");
        let records = records_of_events(&events);
        assert_eq!(records.len(), 300, "batch processor: {batch}");
        assert_eq!(stats.snapshot().items_written, 300);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.time_unix_nano, 1_700_000_000_123_456_789 + i as u64);
            assert!(r.observed_time_unix_nano > 0, "the SDK sets it");
            assert_eq!((r.severity_number, r.severity_text.as_str()), (14, "WARN"));
            assert_eq!(r.event_name, "payment.settled");
            assert_eq!(r.span_id, span_ids[i].to_bytes());
            assert_eq!(r.trace_id.len(), 16);
            assert_eq!(r.flags, 1, "sampled");
            assert_eq!(r.attributes[0].key, "user.id");
            assert_eq!(
                string_value(r.attributes[0].value.as_ref().unwrap()),
                format!("u-{i}")
            );
            assert_eq!(
                r.attributes[1].value.as_ref().unwrap().value,
                Some(any_value::Value::BoolValue(i % 2 == 0))
            );
            let Some(any_value::Value::KvlistValue(body)) = &r.body.as_ref().unwrap().value else {
                panic!("a map body")
            };
            let field = |k: &str| {
                body.values
                    .iter()
                    .find(|kv| kv.key == k)
                    .and_then(|kv| kv.value.clone())
                    .and_then(|v| v.value)
                    .unwrap()
            };
            assert_eq!(field("order"), any_value::Value::IntValue(i as i64));
            let any_value::Value::ArrayValue(lines) = field("lines") else {
                panic!("a list")
            };
            let lines: Vec<_> = lines.values.into_iter().map(|v| v.value.unwrap()).collect();
            assert_eq!(
                lines,
                [
                    any_value::Value::StringValue("book".into()),
                    any_value::Value::DoubleValue(9.5),
                    any_value::Value::BytesValue(vec![0, 1, 255]),
                ]
            );
        }
        let reqs: Vec<ExportLogsServiceRequest> = decode_events(&events);
        for req in &reqs {
            let rl = &req.resource_logs[0];
            let resource = &rl.resource.as_ref().unwrap().attributes;
            assert!(resource.iter().any(|kv| kv.key == "k8s.pod"));
            assert!(resource.iter().any(|kv| kv.key == "service.name"));
            assert_eq!(rl.scope_logs.len(), 1);
            let scope = rl.scope_logs[0].scope.as_ref().unwrap();
            assert_eq!(
                (scope.name.as_str(), scope.version.as_str()),
                ("payments", "3.1")
            );
            assert_eq!(scope.attributes[0].key, "scope.kind");
        }
        provider.shutdown().unwrap();
    }
}

#[test]
fn nothing_is_encoded_while_nobody_listens_and_the_sdk_is_told() {
    let (exporter, capture) = capture_logs();
    capture.set_listening(false);
    let stats = exporter.stats();
    let provider = SdkLoggerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let logger = provider.logger("quiet");
    assert!(
        !logger.event_enabled(Severity::Error, "app", None),
        "the simple processor asks the exporter"
    );
    let mut r = logger.create_log_record();
    r.set_body("dropped".into());
    logger.emit(r);
    assert!(capture.events().is_empty());
    let s = stats.snapshot();
    assert_eq!(s.exports_skipped_no_listener, 1);
    assert_eq!((s.events_written, s.items_written), (0, 0));

    capture.set_listening(true);
    assert!(logger.event_enabled(Severity::Error, "app", None));
    let mut r = logger.create_log_record();
    r.set_body("kept".into());
    logger.emit(r);
    let records = records_of_events(&capture.take());
    assert_eq!(records.len(), 1);
    assert_eq!(string_value(records[0].body.as_ref().unwrap()), "kept");
}

#[test]
fn an_oversize_log_record_is_dropped_counted_and_named() {
    let (exporter, capture) = capture_logs();
    let stats = exporter.stats();
    let provider = SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let logger = provider.logger("bulk");
    for (i, body) in ["a".to_owned(), "x".repeat(9000), "c".to_owned()]
        .into_iter()
        .enumerate()
    {
        let mut r = logger.create_log_record();
        if i == 1 {
            r.set_event_name("bulk.upload");
        }
        r.set_body(body.into());
        logger.emit(r);
    }
    // The export's error names the record by its event name, as for spans and points.
    let err = provider.force_flush().unwrap_err().to_string();
    assert!(err.contains("bulk.upload") && err.contains("8168"), "{err}");
    let s = stats.snapshot();
    assert_eq!((s.items_dropped_oversize, s.items_written), (1, 2));
    let bodies: Vec<_> = records_of_events(&capture.take())
        .iter()
        .map(|r| string_value(r.body.as_ref().unwrap()).to_owned())
        .collect();
    assert_eq!(bodies, ["a", "c"]);

    // Without an event name, by the scope it is exported under.
    let (exporter, _capture) = capture_logs();
    let scope = InstrumentationScope::builder("s").build();
    let mut big = SdkLoggerProvider::builder()
        .build()
        .logger("s")
        .create_log_record();
    big.set_body("y".repeat(9000).into());
    let err = block_on(exporter.export(LogBatch::new(&[(&big, &scope)]))).unwrap_err();
    assert!(
        err.to_string().contains("\"s\"") && err.to_string().contains("8168"),
        "{err}"
    );
}

#[test]
fn the_log_exporter_shares_the_builder_settings_and_shutdown() {
    let logs = LogExporter::builder()
        .with_capture(EventCapture::new())
        .with_tracepoint_name("my_logs")
        .with_max_buffer_size(4096)
        .build()
        .unwrap();
    assert_eq!(logs.registration(), &Registration::Capture);
    assert!(format!("{logs:?}").contains("my_logs"));
    assert!(matches!(
        LogExporter::builder()
            .with_tracepoint_name("bad name")
            .build(),
        Err(BuildError::InvalidName(_))
    ));
    assert!(matches!(
        LogExporter::builder()
            .with_capture(EventCapture::new())
            .with_max_buffer_size(65_361)
            .build(),
        Err(BuildError::BufferTooLarge { .. })
    ));
    logs.shutdown().unwrap();
    assert!(matches!(
        block_on(logs.export(LogBatch::new(&[]))),
        Err(OTelSdkError::AlreadyShutdown)
    ));
}
