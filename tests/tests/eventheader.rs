//! EventHeader events of the real upstream crates, decoded to OTLP.
//!
//! `tests/fixtures/eventheader.perf.data` was captured in the project VM by
//! `scripts/make-fixture.sh` while `eh-writer` wrote fixed log records through
//! `opentelemetry-user-events-logs` and fixed spans through `opentelemetry-user-events-trace`
//! (`tests/src/eventheader.rs` is that content; `eventheader.expected.txt` the line it
//! printed). Every field of every record and span is checked against what was written, as
//! far as the upstream crates write it (they write bytes, lists and maps as "", no span
//! events, no trace flags; Ok and Unset statuses alike). The golden file
//! `tests/fixtures/eventheader.json` is regenerated with
//!
//! ```text
//! cargo run -p tests --bin bless-golden eventheader
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opentelemetry::logs::{AnyValue as SdkValue, Severity};
use tests::eventheader as content;
use tests::receiver::Receiver;
use ue_decoder::proto::common::v1::any_value::Value;
use ue_decoder::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use ue_decoder::proto::logs::v1::LogRecord;
use ue_decoder::proto::resource::v1::Resource;
use ue_decoder::proto::trace::v1::span::Link;
use ue_decoder::proto::trace::v1::{Span, Status};
use ue_decoder::{PerfDataDecoded, Request, Signal, TracepointNames, decode_perf_data};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/eventheader.perf.data"
);
const EXPECTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/eventheader.expected.txt"
);
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/eventheader.json");

fn decode_fixture() -> PerfDataDecoded {
    decode_perf_data(Path::new(FIXTURE), &TracepointNames::default())
        .expect("the EventHeader fixture decodes without being asked for its tracepoints")
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn nanos(ms: u64) -> u64 {
    content::BASE_UNIX_NANOS + ms * 1_000_000
}

/// The resource the writer's events carry, and after it the writer `pid` the decoder adds
/// from the capture's samples.
fn resource(pid: Option<i32>) -> Resource {
    let pid = i64::from(pid.expect("perf record records the writer's pid"));
    Resource {
        attributes: vec![
            kv("service.name", string(content::SERVICE_NAME)),
            kv("service.instance.id", string(content::SERVICE_INSTANCE)),
            kv("process.pid", Value::IntValue(pid)),
            kv(ue_decoder::WRITER_PID, Value::IntValue(pid)),
        ],
        ..Default::default()
    }
}

/// What a value written by the logs or trace crate decodes to: scalars as themselves,
/// anything else as "" (what those crates write for it).
fn written(value: &SdkValue) -> Value {
    match value {
        SdkValue::Int(n) => Value::IntValue(*n),
        SdkValue::Double(d) => Value::DoubleValue(*d),
        SdkValue::Boolean(b) => Value::BoolValue(*b),
        SdkValue::String(s) => string(s.as_str()),
        _ => string(""),
    }
}

/// The EventHeader level the logs crate writes a severity at.
fn level(severity: Severity) -> i64 {
    match severity as i32 {
        21..=24 => 1,
        17..=20 => 2,
        13..=16 => 3,
        9..=12 => 4,
        _ => 5,
    }
}

/// Each log record as it must decode: built from what `eh-writer` wrote, field by field.
fn expected_logs() -> Vec<LogRecord> {
    content::logs()
        .into_iter()
        .map(|log| {
            let mut attributes = vec![
                kv("eventheader.level", Value::IntValue(level(log.severity))),
                kv("eventheader.keyword", Value::IntValue(1)),
            ];
            // `event_id` travels as PartB eventId and comes back first.
            attributes.extend(
                log.attributes
                    .iter()
                    .filter(|(k, _)| *k == "event_id")
                    .map(|(k, v)| kv(k, written(v))),
            );
            attributes.extend(
                log.attributes
                    .iter()
                    .filter(|(k, _)| *k != "event_id")
                    .map(|(k, v)| kv(k, written(v))),
            );
            let (trace_id, span_id) = if log.traced {
                (
                    content::LOG_TRACE_ID.to_be_bytes().to_vec(),
                    content::LOG_SPAN_ID.to_be_bytes().to_vec(),
                )
            } else {
                (Vec::new(), Vec::new())
            };
            LogRecord {
                time_unix_nano: nanos(log.time_ms.unwrap_or(log.observed_ms)),
                severity_number: log.severity as i32,
                severity_text: log.severity_text.unwrap_or_default().to_owned(),
                body: Some(AnyValue {
                    value: Some(written(&log.body)),
                }),
                attributes,
                trace_id,
                span_id,
                event_name: log.event_name.unwrap_or_default().to_owned(),
                ..Default::default()
            }
        })
        .collect()
}

fn trace_id(n: u128) -> Vec<u8> {
    (content::FIRST_TRACE_ID + n).to_be_bytes().to_vec()
}

fn span_id(n: u64) -> Vec<u8> {
    (content::FIRST_SPAN_ID + n).to_be_bytes().to_vec()
}

/// The spans as they must decode, in the order they were written (ended).
fn expected_spans() -> Vec<Span> {
    let eh = || {
        vec![
            kv("eventheader.level", Value::IntValue(4)),
            kv("eventheader.keyword", Value::IntValue(1)),
        ]
    };
    let with = |extra: Vec<KeyValue>| {
        let mut a = eh();
        a.extend(extra);
        a
    };
    let link = |trace: u128, span: u64| Link {
        trace_id: trace_id(trace),
        span_id: span_id(span),
        ..Default::default()
    };
    // Span ids in creation order: root 0, SELECT cart 1, enqueue 2, compute 3, dequeue 4.
    let span = |id: u64, parent: Option<u64>, name: &str, kind: i32, start: u64, end: u64| Span {
        trace_id: trace_id(u128::from(id == 4)),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.to_owned(),
        kind,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        ..Default::default()
    };
    vec![
        Span {
            attributes: with(vec![
                kv("db.system.name", string("postgresql")),
                kv("db.namespace", string("shop")),
                kv("db.query.text", string("SELECT * FROM cart")),
                kv("retries", Value::IntValue(2)),
            ]),
            status: Some(Status {
                message: "timeout".into(),
                code: 2,
            }),
            ..span(1, Some(0), "SELECT cart", 3, 21, 22)
        },
        Span {
            attributes: with(vec![
                kv("messaging.system", string("kafka")),
                kv("messaging.destination.name", string("orders")),
                kv("messaging.url", string("kafka://broker:9092")),
            ]),
            links: vec![link(0, 1)],
            ..span(2, Some(0), "enqueue", 4, 23, 24)
        },
        Span {
            attributes: eh(),
            ..span(3, Some(0), "compute", 1, 25, 26)
        },
        Span {
            // Status Ok is written as success = true, like Unset: it decodes as unset.
            attributes: with(vec![
                kv("http.request.method", string("GET")),
                kv("url.full", string("http://shop.example/cart")),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("cart.items", Value::IntValue(3)),
                kv("cart.vip", Value::BoolValue(true)),
                kv("cart.total", Value::DoubleValue(12.5)),
            ]),
            ..span(0, None, "GET /cart", 2, 20, 27)
        },
        Span {
            attributes: with(vec![
                kv("rpc.system.name", string("grpc")),
                kv("rpc.response.status_code", Value::IntValue(0)),
                kv("tags", string("")),
            ]),
            links: vec![link(0, 2)],
            ..span(4, None, "dequeue", 5, 30, 31)
        },
    ]
}

#[test]
fn every_log_record_arrives_with_every_field_written() {
    let decoded = decode_fixture();
    let mut records = Vec::new();
    for event in &decoded.events {
        let Request::Logs(request) = &event.request else {
            continue;
        };
        assert_eq!(request.resource_logs.len(), 1);
        let rl = &request.resource_logs[0];
        assert_eq!(rl.resource.as_ref(), Some(&resource(event.pid)));
        assert_eq!(rl.scope_logs.len(), 1);
        assert_eq!(
            rl.scope_logs[0].scope.as_ref(),
            Some(&InstrumentationScope {
                name: content::LOGS_PROVIDER.into(),
                ..Default::default()
            })
        );
        records.extend(rl.scope_logs[0].log_records.iter().cloned());
    }
    let expected = expected_logs();
    assert_eq!(records.len(), expected.len());
    for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "log record {i}");
    }
}

#[test]
fn every_span_arrives_with_its_parent_links_and_status() {
    let decoded = decode_fixture();
    let mut spans = Vec::new();
    for event in &decoded.events {
        let Request::Traces(request) = &event.request else {
            continue;
        };
        let rs = &request.resource_spans[0];
        assert_eq!(rs.resource.as_ref(), Some(&resource(event.pid)));
        assert_eq!(
            rs.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()),
            Some(content::TRACES_PROVIDER)
        );
        spans.extend(rs.scope_spans[0].spans.iter().cloned());
    }
    let expected = expected_spans();
    assert_eq!(spans.len(), content::SPANS);
    for (got, want) in spans.iter().zip(&expected) {
        assert_eq!(got, want, "span {}", want.name);
    }
    // Each child's parent is its root's span id, in the root's trace.
    let root = spans.iter().find(|s| s.name == "GET /cart").unwrap();
    let children: Vec<_> = spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty())
        .collect();
    assert_eq!(children.len(), 3);
    for child in children {
        assert_eq!(child.parent_span_id, root.span_id, "{}", child.name);
        assert_eq!(child.trace_id, root.trace_id, "{}", child.name);
    }
}

#[test]
fn the_capture_is_complete_and_nothing_is_unmapped() {
    let decoded = decode_fixture();
    let stats = &decoded.stats;
    let written = std::fs::read_to_string(EXPECTED).unwrap();
    assert!(
        written.contains(&format!(
            "wrote {} log records and {} spans",
            content::logs().len(),
            content::SPANS
        )),
        "{written}"
    );
    assert_eq!(
        stats.items,
        BTreeMap::from([
            (Signal::Traces, content::SPANS as u64),
            (Signal::Logs, content::logs().len() as u64)
        ])
    );
    let events: BTreeMap<_, _> = [
        ("user_events:ue_eh_logs_L1K1", 1),
        ("user_events:ue_eh_logs_L2K1", 1),
        ("user_events:ue_eh_logs_L3K1", 1),
        ("user_events:ue_eh_logs_L4K1", 1),
        // Debug and trace records.
        ("user_events:ue_eh_logs_L5K1", 2),
        ("user_events:ue_eh_traces_L4K1", 5),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(stats.events, events);
    assert!(stats.malformed.is_empty(), "{stats}");
    assert_eq!(
        stats.unmapped, 0,
        "every field the crates write has an OTLP home"
    );
    assert_eq!(stats.lost_total(), 0);
}

#[test]
fn fixture_decodes_to_the_golden_json() {
    let actual = tests::otlp::golden_json(Path::new(FIXTURE));
    let golden = std::fs::read_to_string(GOLDEN).expect(
        "tests/fixtures/eventheader.json missing: `cargo run -p tests --bin bless-golden eventheader`",
    );
    assert_eq!(actual, golden);
}

#[test]
fn the_cli_forwards_the_upstream_crates_events_over_otlp_http() {
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let out = Command::new(tests::built("ue-decoder"))
        .args(["decode", FIXTURE, "--endpoint", &receiver.http_endpoint()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = content::logs().len() as u64;
    let spans = content::SPANS as u64;
    let items = |received: &[tests::receiver::Received], signal| -> u64 {
        received
            .iter()
            .filter(|r| r.signal() == signal)
            .map(tests::receiver::Received::items)
            .sum()
    };
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(10), |r| {
        items(r, Signal::Logs) >= logs && items(r, Signal::Traces) >= spans
    }));
    assert!(arrived, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(receiver.accepted_items(Signal::Logs), logs);
    assert_eq!(receiver.accepted_items(Signal::Traces), spans);
}

#[test]
fn the_cli_prints_them_as_otlp_json() {
    let out = Command::new(tests::built("ue-decoder"))
        .args(["decode", FIXTURE])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, std::fs::read_to_string(GOLDEN).unwrap());
}
