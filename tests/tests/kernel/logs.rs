//! Log records through the real kernel: the log exporter writes `otlp_logs` events,
//! `ue-decoder` reads them from the perf rings and forwards them to a real OTLP receiver over
//! HTTP and gRPC; every record arrives exactly once, intact, with nothing lost in the kernel.
//! The example programs do the same through the `ue-decoder` binary.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger, LoggerProvider as _, Severity};
use opentelemetry::{InstrumentationScope, Key, SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};
use otlp_user_events::{EventCapture, LogExporter};
use tests::block_on;
use tests::kernel::{self, DecoderProcess};
use tests::otlp::{log_records, log_records_of_events};
use tests::receiver::{Protocol, Received, Receiver};
use ue_decoder::{
    Compression, OtlpConfig, Protocol as Transport, Request, Signal, SinkConfig, TracepointNames,
};
use ue_proto::common::v1::any_value;
use ue_wire::layout;

use crate::pipeline::{Decoder, retry};

/// Flattened log records of the accepted requests that came in over `protocol`, sorted: a
/// multiset, since batching regroups records across events.
fn arrived(received: &[Received], protocol: Protocol) -> Vec<Vec<u8>> {
    let cgroup = kernel::own_cgroup_id();
    let mut out: Vec<Vec<u8>> = received
        .iter()
        .filter(|r| r.protocol == protocol && r.accepted())
        .flat_map(|r| {
            // This process wrote them all: that, and the rest as written.
            let mut request = r.request.clone();
            kernel::strip_writer(&mut request, std::process::id(), cgroup);
            match &request {
                Request::Logs(l) => log_records(l),
                _ => vec![],
            }
        })
        .collect();
    out.sort();
    out
}

/// Record `i` of the load: every field set, a nested body, distinct content.
fn record(logger: &impl Logger<LogRecord = SdkLogRecord>, i: u64) -> SdkLogRecord {
    let mut r = logger.create_log_record();
    r.set_event_name("load.record");
    r.set_target(if i.is_multiple_of(3) {
        "load::db"
    } else {
        "load::http"
    });
    r.set_timestamp(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + i));
    r.set_observed_timestamp(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_001_000 + i));
    r.set_severity_number(Severity::Info3);
    r.set_severity_text("INFO");
    r.set_body(AnyValue::Map(Box::new(HashMap::from([
        (Key::from("seq"), AnyValue::Int(i as i64)),
        (
            Key::from("parts"),
            AnyValue::ListAny(Box::new(vec![
                AnyValue::Double(i as f64 / 3.0),
                AnyValue::Bytes(Box::new(i.to_le_bytes().to_vec())),
                AnyValue::Boolean(i.is_multiple_of(2)),
            ])),
        ),
    ]))));
    r.add_attribute("user.id", format!("user-{}", i % 97));
    r.add_attribute("attempt", (i % 4) as i64);
    r.set_trace_context(
        TraceId::from(u128::from(i) + 1),
        SpanId::from(i + 1),
        Some(TraceFlags::SAMPLED),
    );
    r
}

#[test]
fn log_records_reach_a_perf_reader_byte_for_byte_as_captured() {
    kernel::require();
    let mut reader = kernel::reader(&[layout::LOGS_TRACEPOINT], 1024);
    let resource = Resource::builder().with_service_name("kernel-logs").build();
    let mut exporter = LogExporter::builder().build().unwrap();
    assert!(exporter.listening());
    exporter.set_resource(&resource);
    let capture = EventCapture::new();
    let mut capturing = LogExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    capturing.set_resource(&resource);

    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("unused");
    let scopes = [
        InstrumentationScope::builder("http")
            .with_version("1.0")
            .build(),
        InstrumentationScope::builder("db").build(),
    ];
    let records: Vec<SdkLogRecord> = (0..500).map(|i| record(&logger, i)).collect();
    let pairs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r, &scopes[i % 2]))
        .collect();
    block_on(exporter.export(LogBatch::new(&pairs))).unwrap();
    block_on(capturing.export(LogBatch::new(&pairs))).unwrap();

    let captured = capture.take();
    assert!(captured.len() > 1, "500 records need several events");
    let got = kernel::read(&mut reader, captured.len(), Duration::from_secs(30));
    assert_eq!(reader.lost_total(), 0);
    let fields: Vec<Vec<u8>> = got.iter().map(|g| g.fields.clone()).collect();
    assert!(
        fields == captured,
        "events differ from the capture seam's bytes"
    );
    assert_eq!(log_records_of_events(&fields).len(), 500);
    assert_eq!(exporter.stats().snapshot().items_written, 500);
}

#[test]
fn every_log_record_arrives_once_intact_over_http_and_grpc() {
    kernel::require();
    const EXPORTS: u64 = 10;
    const RECORDS: u64 = 300;
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let names = TracepointNames {
        metrics: "ue_k_logs_metrics".into(),
        traces: "ue_k_logs_traces".into(),
        logs: "ue_k_logs".into(),
    };
    let decoder = Decoder::start(
        &rt,
        &names,
        &[Signal::Logs],
        vec![
            SinkConfig::Otlp(OtlpConfig {
                endpoint: receiver.http_endpoint(),
                compression: Compression::Gzip,
                retry: retry(),
                ..OtlpConfig::default()
            }),
            SinkConfig::Otlp(OtlpConfig {
                endpoint: receiver.grpc_endpoint(),
                retry: retry(),
                ..OtlpConfig::new(Transport::Grpc)
            }),
        ],
    );

    let resource = Resource::builder().with_service_name("kernel-logs").build();
    let mut exporter = LogExporter::builder()
        .with_tracepoint_name(&names.logs)
        .build()
        .unwrap();
    assert!(
        exporter.listening(),
        "the decoder registered and attached first"
    );
    exporter.set_resource(&resource);
    let stats = exporter.stats();
    // The same batches through the capture seam: what must arrive.
    let capture = EventCapture::new();
    let mut reference = LogExporter::builder()
        .with_capture(capture.clone())
        .build()
        .unwrap();
    reference.set_resource(&resource);

    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("unused");
    let scope = InstrumentationScope::builder("load")
        .with_version("1")
        .build();
    let started = Instant::now();
    for e in 0..EXPORTS {
        let records: Vec<SdkLogRecord> = (0..RECORDS)
            .map(|i| record(&logger, e * RECORDS + i))
            .collect();
        let pairs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
        block_on(exporter.export(LogBatch::new(&pairs))).unwrap();
        block_on(reference.export(LogBatch::new(&pairs))).unwrap();
    }
    let total = EXPORTS * RECORDS;
    let elapsed = started.elapsed();
    let s = stats.snapshot();
    eprintln!(
        "wrote {total} log records in {} events in {:.2} s ({:.0} records/s)",
        s.events_written,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(s.items_written, total);
    assert!(
        s.events_written > EXPORTS,
        "{s:?}: records were packed under the 8 KB limit"
    );

    let complete = rt.block_on(receiver.wait_until(Duration::from_secs(120), |r| {
        [Protocol::Http, Protocol::Grpc].iter().all(|&p| {
            r.iter()
                .filter(|x| x.protocol == p && x.signal() == Signal::Logs && x.accepted())
                .map(Received::items)
                .sum::<u64>()
                >= total
        })
    }));
    let snapshot = decoder.stop(&rt);
    assert!(complete, "every record arrived at both sinks");
    assert_eq!(
        snapshot.kernel_lost_total(),
        0,
        "the kernel dropped nothing"
    );
    assert!(snapshot.malformed.is_empty() && snapshot.corrupt_records.is_empty());
    assert_eq!(snapshot.events[&Signal::Logs], s.events_written);
    assert_eq!(snapshot.items[&Signal::Logs], total);
    for sink in &snapshot.sinks {
        assert_eq!(
            (sink.items_sent, sink.dropped_total()),
            (total, 0),
            "{}",
            sink.name
        );
    }

    let mut want = log_records_of_events(&capture.take());
    want.sort();
    assert_eq!(want.len() as u64, total);
    let received = receiver.received();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        assert!(
            arrived(&received, protocol) == want,
            "{protocol:?}: log records arrive exactly once, intact"
        );
    }
}

#[test]
fn the_log_examples_reach_the_receiver_through_the_ue_decoder_binary() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let decoder = DecoderProcess::start(DecoderProcess::command(&[
        "run",
        "--endpoint",
        &receiver.grpc_endpoint(),
        "--protocol",
        "grpc",
        "--signals",
        "logs",
        "--stats-secs",
        "1",
    ]));

    let (records, events) = (40u64, 25u64);
    for (name, n) in [("logs", records), ("tracing_logs", events)] {
        let out = Command::new(tests::built(&format!("examples/{name}")))
            .arg(n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats = String::from_utf8_lossy(&out.stdout);
        assert!(
            stats.contains(&format!("items_written: {n},")),
            "{name}: {stats}"
        );
    }
    let done = rt.block_on(receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter().map(Received::items).sum::<u64>() >= records + events
    }));
    let (status, log) = decoder.stop();
    assert!(
        done,
        "every record arrived; decoder log:\n{}",
        log.join("\n")
    );
    assert!(status.success(), "exit status {status}");
    assert!(log.iter().any(|l| l.contains("kernel lost 0")), "{log:?}");

    let received = receiver.accepted(Signal::Logs);
    assert!(received.iter().all(|r| r.protocol == Protocol::Grpc));
    // By each resource's service: one request may carry both examples' events (the decoder
    // sends the events' requests one after another in a batch).
    let service_of = |rl: &ue_proto::logs::v1::ResourceLogs| {
        rl.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
        })
    };
    let by_service = |service: &str| {
        let mut out = Vec::new();
        for r in &received {
            let Request::Logs(l) = &r.request else {
                unreachable!()
            };
            for rl in &l.resource_logs {
                if service_of(rl).as_deref() != Some(service) {
                    continue;
                }
                for sl in &rl.scope_logs {
                    let scope = sl
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for lr in &sl.log_records {
                        out.push((scope.clone(), lr.clone()));
                    }
                }
            }
        }
        out
    };

    // The logs API example: every record once, in order, with its body and fields.
    let api = by_service("example-logs");
    assert_eq!(api.len() as u64, records, "exactly once");
    for (i, (scope, r)) in api.iter().enumerate() {
        assert_eq!(scope, "example.payments");
        assert_eq!(r.event_name, "payment.settled");
        let Some(any_value::Value::KvlistValue(body)) = &r.body.as_ref().unwrap().value else {
            panic!("a map body")
        };
        let seq = body
            .values
            .iter()
            .find(|kv| kv.key == "payment")
            .and_then(|kv| kv.value.clone()?.value);
        assert_eq!(seq, Some(any_value::Value::IntValue(i as i64)));
        let error = i % 10 == 9;
        assert_eq!(r.severity_number, if error { 17 } else { 9 });
        assert_eq!(r.trace_id.len(), if error { 16 } else { 0 }, "record {i}");
    }

    // The tracing example: the appender's mapping, every event once.
    let traced = by_service("example-tracing-logs");
    assert_eq!(traced.len() as u64, events, "exactly once");
    let mut bodies: Vec<String> = Vec::new();
    for (scope, r) in &traced {
        let Some(any_value::Value::StringValue(body)) = &r.body.as_ref().unwrap().value else {
            panic!("a string body")
        };
        bodies.push(body.clone());
        if r.event_name == "cart.slow" {
            assert_eq!(
                (scope.as_str(), r.severity_text.as_str()),
                ("shop::cart", "WARN")
            );
        } else {
            assert_eq!(r.event_name, "order.placed");
            assert_eq!((scope.as_str(), r.severity_number), ("tracing_logs", 9));
            assert!(r.attributes.iter().any(|kv| kv.key == "customer"));
        }
    }
    // The batcher groups records by scope: order is kept within a scope, not across them.
    bodies.sort();
    let mut want: Vec<String> = (0..events)
        .map(|i| {
            if i % 5 == 4 {
                format!("cart {i} took long")
            } else {
                format!("order {i} placed")
            }
        })
        .collect();
    want.sort();
    assert_eq!(bodies, want);
}
