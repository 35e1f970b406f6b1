//! The benchmark's claim that both sides really write, checked against a real kernel: the
//! `ue-bench-worker` program runs this project's exporters and the upstream crates
//! (`opentelemetry-user-events-metrics` 0.14, `opentelemetry-user-events-trace` 0.6) on the
//! same small workload under `perf record`, and every data point and span of both arrives.
//!
//! perf runs the worker as its workload, so the events are enabled before the worker starts
//! (no race with the enable bit); the tracepoints are registered beforehand by the test,
//! because perf can only open events that exist.

use std::path::PathBuf;
use std::process::Command;

use otlp_user_events::layout;
use tests::kernel::{self, RawWriter};
use ue_decoder::{PerfDataDecoded, Request, Signal, TracepointNames, decode_perf_data};
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::common::v1::any_value::Value as AnyValue;
use ue_proto::metrics::v1::{metric::Data, number_data_point};

/// Series per metric and spans per round: small, the VM emulates every instruction.
const SERIES: usize = 500;
const SPANS: usize = 200;
/// The worker measures 1 round after 1 warm-up round: 2 rounds are written.
const ROUNDS: u64 = 2;

/// The upstream trace crate's tracepoint for the worker's provider `ue_bench`
/// (`ue_bench::UPSTREAM_TRACE_TRACEPOINT`), and its EventHeader definition as
/// `eventheader` 0.5 registers it.
const UPSTREAM_TRACES: &str = "ue_bench_L4K1";
const EVENTHEADER_FIELDS: &str =
    "u8 eventheader_flags; u8 version; u16 id; u16 tag; u8 opcode; u8 level";

/// What one worker run printed, and what perf captured of it.
struct Captured {
    worker: serde_json::Value,
    perf: PerfDataDecoded,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("ue-kernel-upstream");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs `ue-bench-worker` for `variant` on `workload` as the workload of a system-wide
/// `perf record` of `tracepoints`, and decodes the capture with the project's decoder.
fn capture(tracepoints: &[&str], variant: &str, workload: &str, size: usize) -> Captured {
    let data = scratch(&format!("{variant}-{workload}.perf.data"));
    let mut perf = Command::new("perf");
    perf.arg("record");
    for t in tracepoints {
        perf.args(["-e", &format!("user_events:{t}")]);
    }
    let out = perf
        .args(["-a", "-B", "--synth=no", "-m", "1024", "-o"])
        .arg(&data)
        .arg("--")
        .arg(tests::built("ue-bench-worker"))
        .args(["--workload", workload, "--size", &size.to_string()])
        .args(["--variant", variant, "--rounds", "1", "--warmup", "1"])
        .output()
        .expect("run perf record (Debian's linux-perf, which scripts/vm.sh installs)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "perf record -- ue-bench-worker --variant {variant}: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("the worker printed no result: {stdout}\n{stderr}"));
    let worker: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        worker["preload_listening"],
        serde_json::Value::Null,
        "the real kernel, not the benchmark's stand-in"
    );
    let perf = decode_perf_data(&data, &TracepointNames::default())
        .unwrap_or_else(|e| panic!("decode {}: {e}", data.display()));
    assert_eq!(
        perf.stats.lost_total(),
        0,
        "perf lost nothing: {:?}",
        perf.stats
    );
    assert_eq!(perf.stats.malformed_total(), 0, "{:?}", perf.stats);
    let _ = std::fs::remove_file(&data);
    Captured { worker, perf }
}

/// Each data point as (metric, attributes, value), sorted: what both exporters must agree
/// on, whatever their timestamps and packing.
fn points(captured: &Captured) -> Vec<String> {
    let mut out: Vec<String> = captured
        .perf
        .events
        .iter()
        .filter_map(|e| match &e.request {
            Request::Metrics(m) => Some(m),
            _ => None,
        })
        .flat_map(|m: &ExportMetricsServiceRequest| &m.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .flat_map(|m| {
            let name = &m.name;
            let describe = |attrs: &[ue_proto::common::v1::KeyValue]| {
                let mut kv: Vec<String> = attrs
                    .iter()
                    .map(|a| {
                        let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(s)) => s.clone(),
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            other => format!("{other:?}"),
                        };
                        format!("{}={v}", a.key)
                    })
                    .collect();
                kv.sort();
                kv.join(",")
            };
            match &m.data {
                Some(Data::Sum(s)) => s
                    .data_points
                    .iter()
                    .map(|p| {
                        let v = match p.value {
                            Some(number_data_point::Value::AsInt(v)) => v.to_string(),
                            Some(number_data_point::Value::AsDouble(v)) => v.to_string(),
                            None => "none".to_owned(),
                        };
                        format!("{name} {} sum={v}", describe(&p.attributes))
                    })
                    .collect::<Vec<_>>(),
                Some(Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .map(|p| {
                        format!(
                            "{name} {} count={} sum={} buckets={:?} bounds={:?}",
                            describe(&p.attributes),
                            p.count,
                            p.sum.unwrap_or(f64::NAN),
                            p.bucket_counts,
                            p.explicit_bounds
                        )
                    })
                    .collect(),
                other => vec![format!("{name} unexpected {other:?}")],
            }
        })
        .collect();
    out.sort();
    out
}

fn metrics_arrive_alike(workload: &str) {
    // Keeps otlp_metrics registered (with the shared layout) so that perf can open it
    // before the worker registers it.
    let _keep = RawWriter::register(layout::METRICS_TRACEPOINT);
    let metrics = [layout::METRICS_TRACEPOINT];
    let ours = capture(&metrics, "ours", workload, SERIES);
    let upstream = capture(&metrics, "upstream", workload, SERIES);
    let want = SERIES as u64 * ROUNDS;

    for (name, c) in [("ours", &ours), ("upstream", &upstream)] {
        assert_eq!(
            c.worker["items_total"].as_u64(),
            Some(want),
            "{name}: {}",
            c.worker
        );
        assert_eq!(
            c.perf.stats.items.get(&Signal::Metrics).copied(),
            Some(want),
            "{name} on {workload}: every data point arrived, once: {:?}",
            c.perf.stats
        );
    }
    // Ours counts what it wrote; the kernel delivered exactly that.
    assert_eq!(ours.worker["exported_total"].as_u64(), Some(want));
    // One event per data point upstream; ours packs them.
    let events = |c: &Captured| c.perf.stats.requests.get(&Signal::Metrics).copied();
    assert_eq!(events(&upstream), Some(want));
    assert!(events(&ours).unwrap() < want / 10, "{:?}", ours.perf.stats);

    let (a, b) = (points(&ours), points(&upstream));
    assert_eq!(a.len() as u64, want);
    assert!(
        a == b,
        "the same data points on both sides; first difference: {:?}",
        a.iter().zip(&b).find(|(x, y)| x != y)
    );
    eprintln!(
        "{workload}: {want} data points arrived from each: ours in {} events, upstream in {}",
        events(&ours).unwrap(),
        events(&upstream).unwrap()
    );
}

#[test]
fn ours_and_upstream_counters_arrive_at_perf_with_the_same_data_points() {
    kernel::require();
    metrics_arrive_alike("counter");
}

#[test]
fn ours_and_upstream_histograms_arrive_at_perf_with_the_same_data_points() {
    kernel::require();
    metrics_arrive_alike("histogram");
}

#[test]
fn ours_and_upstream_spans_arrive_at_perf_one_for_one() {
    kernel::require();
    let want = SPANS as u64 * ROUNDS;

    let _keep = RawWriter::register(layout::TRACES_TRACEPOINT);
    let ours = capture(&[layout::TRACES_TRACEPOINT], "ours", "spans", SPANS);
    assert_eq!(ours.worker["exported_total"].as_u64(), Some(want));
    assert_eq!(
        ours.perf.stats.items.get(&Signal::Traces).copied(),
        Some(want),
        "{:?}",
        ours.perf.stats
    );
    let spans: Vec<_> = ours
        .perf
        .events
        .iter()
        .filter_map(|e| match &e.request {
            Request::Traces(t) => Some(t),
            _ => None,
        })
        .flat_map(|t| &t.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(spans.len() as u64, want);
    assert!(spans.iter().all(|s| s.name == "GET /api/users/{id}"
        && s.attributes.len() == 6
        && s.events.len() == 1));

    // The upstream trace crate writes EventHeader events, one per span, which the decoder
    // finds in the capture by their name and maps to OTLP spans: one sample and one span
    // per span written. otlp_traces is recorded too, and stays empty.
    let _keep = RawWriter::register_raw(&format!("{UPSTREAM_TRACES} {EVENTHEADER_FIELDS}"));
    let upstream = capture(
        &[UPSTREAM_TRACES, layout::TRACES_TRACEPOINT],
        "upstream",
        "spans",
        SPANS,
    );
    assert_eq!(upstream.worker["items_total"].as_u64(), Some(want));
    assert_eq!(
        upstream.perf.stats.items.get(&Signal::Traces).copied(),
        Some(want),
        "{:?}",
        upstream.perf.stats
    );
    let samples: u64 = upstream
        .perf
        .stats
        .events
        .iter()
        .filter(|(name, _)| name.ends_with(UPSTREAM_TRACES))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        samples, want,
        "one {UPSTREAM_TRACES} event per span arrived: {:?}",
        upstream.perf.stats
    );
    assert!(
        upstream.perf.stats.malformed.is_empty(),
        "{:?}",
        upstream.perf.stats
    );
    let names: Vec<_> = upstream
        .perf
        .events
        .iter()
        .filter_map(|e| match &e.request {
            Request::Traces(t) => Some(t),
            _ => None,
        })
        .flat_map(|t| &t.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names.len() as u64, want);
    assert!(
        names.iter().all(|n| *n == "GET /api/users/{id}"),
        "{names:?}"
    );
    eprintln!(
        "spans: {want} from each: ours in {} events, upstream in {samples}",
        ours.perf.stats.requests.get(&Signal::Traces).unwrap()
    );
}
