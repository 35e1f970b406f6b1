//! The benchmark's programs on tiny workloads, hermetically: every variant's worker under the
//! LD_PRELOAD stand-in prints a sane result line and exported exactly what it recorded (or,
//! with nobody listening, nothing); otlp-http against a real receiver on 127.0.0.1; and the
//! driver end to end. Numbers are not checked: CPU time is not a test.

use std::process::Command;

use ue_bench::{Kind, Measurement, PRELOAD, UPSTREAM_TRACE_TRACEPOINT, VARIANTS};
use ue_decoder::Signal;

const WORKER: &str = env!("CARGO_BIN_EXE_ue-bench-worker");
const DRIVER: &str = env!("CARGO_BIN_EXE_ue-bench");

fn worker(workload: Kind, variant: &str, listening: bool, endpoint: Option<&str>) -> Measurement {
    let mut cmd = Command::new(WORKER);
    cmd.args([
        "--workload",
        workload.name(),
        "--size",
        "40",
        "--variant",
        variant,
    ])
    .args(["--rounds", "2", "--warmup", "1"])
    .env("LD_PRELOAD", PRELOAD)
    .env("UE_PRELOAD_LISTEN", if listening { "1" } else { "0" });
    if let Some(e) = endpoint {
        cmd.args(["--endpoint", e]);
    }
    let out = cmd.output().expect("run ue-bench-worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{variant} on {workload}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let m: Measurement = serde_json::from_str(stdout.trim()).expect("a Measurement");
    assert_eq!(m.variant, variant);
    assert_eq!(m.workload.kind, workload);
    assert_eq!((m.items, m.items_total), (80, 120));
    assert_eq!(
        m.preload_listening,
        Some(listening),
        "the stand-in was loaded"
    );
    assert!(m.cpu_ns > 0 && m.wall_ns > 0 && m.max_rss_kib > 0, "{m:?}");
    assert!(m.cpu_ns_per_item.is_finite() && m.cpu_ns_per_item > 0.0);
    m
}

#[test]
fn every_variant_runs_every_workload_and_exports_everything_it_recorded() {
    assert!(!PRELOAD.is_empty(), "build.rs built the stand-in");
    for kind in Kind::ALL {
        for v in VARIANTS.iter().filter(|v| !v.receiver) {
            if !v.runs(kind) {
                continue;
            }
            let m = worker(kind, v.name, true, None);
            if !v.records {
                assert_eq!(m.check(), None, "{} records nothing to check", v.name);
                continue;
            }
            assert_eq!(m.check(), Some(Ok(())), "{} on {kind}: {m:?}", v.name);
            assert_eq!(m.exported, Some(80), "{} on {kind}", v.name);
            let preload = m.preload.expect("the stand-in's counters");
            assert_eq!(preload.bad_writes, 0);
            if v.user_events {
                assert!(preload.writes > 0, "{} wrote events: {m:?}", v.name);
                assert!(preload.bytes > 0);
            } else {
                assert_eq!(preload.writes, 0, "{} writes no user_events", v.name);
            }
        }
    }
}

#[test]
fn ours_packs_many_items_per_event_where_upstream_writes_one_each() {
    let ours = worker(Kind::Counter, "ours", true, None);
    let upstream = worker(Kind::Counter, "upstream", true, None);
    assert_eq!(upstream.events, Some(80), "one event per data point");
    assert!(ours.events.unwrap() < 10, "{ours:?}");
    let spans = worker(Kind::Spans, "upstream", true, None);
    assert_eq!(
        spans.events,
        Some(80),
        "one {UPSTREAM_TRACE_TRACEPOINT} event per span"
    );
}

#[test]
fn with_nobody_listening_nothing_is_written() {
    for kind in Kind::ALL {
        for v in VARIANTS.iter().filter(|v| v.user_events) {
            if !v.runs(kind) {
                continue;
            }
            let m = worker(kind, v.name, false, None);
            assert_eq!(m.check(), Some(Ok(())), "{} on {kind}: {m:?}", v.name);
            assert_eq!(m.preload.unwrap().writes, 0, "{} on {kind}", v.name);
        }
    }
}

#[test]
fn otlp_http_reaches_a_real_receiver() {
    let rt = tests::runtime();
    let receiver = rt.block_on(tests::receiver::Receiver::builder().grpc(None).start());
    let receiver = receiver.expect("a receiver on 127.0.0.1");
    let endpoint = receiver.http_endpoint();
    worker(Kind::Counter, "otlp-http", true, Some(&endpoint));
    worker(Kind::Histogram, "otlp-http", true, Some(&endpoint));
    assert_eq!(receiver.accepted_items(Signal::Metrics), 240);
    worker(Kind::Spans, "otlp-http", true, Some(&endpoint));
    assert_eq!(receiver.accepted_items(Signal::Traces), 120);
}

#[test]
fn the_driver_alternates_processes_and_prints_the_tables() {
    let dir = std::env::temp_dir().join(format!("ue-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = dir.join("results.jsonl");
    let out = Command::new(DRIVER)
        .args([
            "--reps",
            "2",
            "--sizes",
            "30",
            "--spans",
            "30",
            "--span-rounds",
            "1",
        ])
        .args([
            "--points",
            "30",
            "--variants",
            "ours,upstream",
            "--worker",
            WORKER,
        ])
        .arg("--results")
        .arg(&results)
        .output()
        .expect("run ue-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "| counter 30 ",
        "| histogram 30 ",
        "| spans (30/round) ",
        "upstream/ours share",
        "ours, nobody listening",
        "all items",
    ] {
        assert!(stdout.contains(want), "{want:?} in:\n{stdout}");
    }
    // 3 workloads x (ours, upstream, their baselines, 2 idle runs) x 2 repetitions.
    let lines = std::fs::read_to_string(&results).unwrap();
    let runs: Vec<Measurement> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2 * (5 + 5 + 6));
    // Alternated: the first repetition of a workload is done before the second starts.
    let first: Vec<&str> = runs[..5].iter().map(|m| m.variant.as_str()).collect();
    assert_eq!(first, ["ours", "upstream", "sdk-only", "ours", "upstream"]);
    assert_eq!(runs[5].variant, "ours");
    let _ = std::fs::remove_dir_all(&dir);
}
