//! The real upstream EventHeader crates through the real kernel: `ue-decoder run
//! --eventheader` registers the providers' tracepoints, attaches before the writer starts,
//! and forwards everything `eh-writer` logs and traces to a real OTLP receiver, each record
//! and span exactly once, with nothing lost.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::eventheader as content;
use tests::kernel::{self, DecoderProcess};
use tests::receiver::{Received, Receiver};
use ue_decoder::{Request, Signal};

#[test]
fn the_upstream_crates_reach_the_receiver_through_ue_decoder_run() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let decoder = DecoderProcess::start(DecoderProcess::command(&[
        "run",
        "--endpoint",
        &receiver.http_endpoint(),
        "--signals",
        "logs",
        "--eventheader",
        content::LOGS_PROVIDER,
        "--eventheader",
        content::TRACES_PROVIDER,
        "--stats-secs",
        "1",
    ]));
    let attached = decoder.attached.join("\n");
    for level in 1..=5 {
        assert!(
            attached.contains(&format!("{}_L{level}K1", content::LOGS_PROVIDER)),
            "{attached}"
        );
    }

    // The writer starts after the decoder attached, and does not wait for it.
    let repeat = 20u64;
    let started = Instant::now();
    let out = Command::new(tests::built("eh-writer"))
        .args(["--repeat", &repeat.to_string()])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "eh-writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (logs, spans) = (
        repeat * content::logs().len() as u64,
        repeat * content::SPANS as u64,
    );
    let items = |r: &[Received], signal| -> u64 {
        r.iter()
            .filter(|r| r.signal() == signal)
            .map(Received::items)
            .sum()
    };
    let done = rt.block_on(receiver.wait_until(Duration::from_secs(60), |r| {
        items(r, Signal::Logs) >= logs && items(r, Signal::Traces) >= spans
    }));
    let (status, log) = decoder.stop();
    assert!(done, "everything arrived; decoder log:\n{}", log.join("\n"));
    assert!(status.success(), "exit status {status}");
    assert!(log.iter().any(|l| l.contains("kernel lost 0")), "{log:?}");
    assert_eq!(receiver.accepted_items(Signal::Logs), logs);
    assert_eq!(receiver.accepted_items(Signal::Traces), spans);
    eprintln!(
        "{logs} log records and {spans} spans written in {took:?} ({:.0} items/s under emulation), all received",
        (logs + spans) as f64 / took.as_secs_f64()
    );

    // Exactly once: every span id (the writer's ids count up) once, each log record
    // `repeat` times, with its fields.
    let mut span_ids = BTreeSet::new();
    let mut by_body = BTreeMap::<String, u64>::new();
    for r in receiver.accepted(Signal::Traces) {
        let Request::Traces(t) = &r.request else {
            unreachable!()
        };
        for rs in &t.resource_spans {
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, content::TRACES_PROVIDER);
                for s in &ss.spans {
                    assert!(span_ids.insert(s.span_id.clone()), "span {} twice", s.name);
                }
            }
        }
    }
    assert_eq!(span_ids.len() as u64, spans);
    for r in receiver.accepted(Signal::Logs) {
        let Request::Logs(l) = &r.request else {
            unreachable!()
        };
        assert_eq!(r.service_name().as_deref(), Some(content::SERVICE_NAME));
        for rl in &l.resource_logs {
            for sl in &rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, content::LOGS_PROVIDER);
                for lr in &sl.log_records {
                    *by_body
                        .entry(format!("{} {:?}", lr.severity_number, lr.body))
                        .or_default() += 1;
                }
            }
        }
    }
    assert_eq!(by_body.len(), content::logs().len(), "{by_body:?}");
    assert!(by_body.values().all(|n| *n == repeat), "{by_body:?}");
}
