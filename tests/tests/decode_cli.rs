//! `ue-decoder decode FILE --endpoint URL`: a `perf record` capture forwarded to a real OTLP
//! receiver, batched, with every item arriving.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::receiver::Receiver;
use ue_decoder::{PerfDataReader, Signal, TracepointNames};

#[test]
fn a_capture_is_forwarded_over_otlp_http_with_every_item() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/examples.perf.data");
    let mut reader = PerfDataReader::open(&fixture, &TracepointNames::default()).unwrap();
    let progress = reader.progress();
    let total = std::fs::metadata(&fixture).unwrap().len();
    assert_eq!(progress.total(), total);
    let (mut points, mut spans) = (0, 0);
    while let Some(event) = reader.next_event().unwrap() {
        match event.request.signal() {
            Signal::Metrics => points += event.request.items(),
            Signal::Traces => spans += event.request.items(),
            Signal::Logs => unreachable!("this capture was recorded without otlp_logs"),
        }
    }
    assert!(points > 0 && spans > 0);
    // Read through the data section, which ends before the file's trailing sections.
    assert!(
        progress.read() > total / 2 && progress.read() <= total,
        "{} of {total}",
        progress.read()
    );

    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let out = Command::new(tests::built("ue-decoder"))
        .arg("decode")
        .arg(&fixture)
        .args([
            "--endpoint",
            &receiver.http_endpoint(),
            "--header",
            "x-tenant=t1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "forwarding prints no OTLP on stdout");
    // Not a terminal: no progress bar, only the summary lines.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with("ue-decoder: ")) && !stderr.contains('\r'),
        "{stderr}"
    );
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(10), |_| true));
    assert!(arrived);
    assert_eq!(receiver.accepted_items(Signal::Metrics), points);
    assert_eq!(receiver.accepted_items(Signal::Traces), spans);
    let received = receiver.received();
    assert!(received.iter().all(|r| r.header("x-tenant") == Some("t1")));
    // Batching gathered the capture's events: one request per signal.
    assert_eq!(received.len(), 2, "{received:?}");
}

#[test]
fn a_capture_of_log_records_is_forwarded_over_otlp_grpc() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs.perf.data");
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let out = Command::new(tests::built("ue-decoder"))
        .arg("decode")
        .arg(&fixture)
        .args([
            "--endpoint",
            &receiver.grpc_endpoint(),
            "--protocol",
            "grpc",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = receiver.accepted(Signal::Logs);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        receiver.accepted_items(Signal::Logs),
        12,
        "the example's 12 records"
    );
    assert_eq!(received[0].service_name().as_deref(), Some("example-logs"));
}
