//! The `ue-decoder` binary run from a configuration file on the real kernel: its reader
//! settings (tracepoint names, signals) come from the file, and its two routed sinks get
//! exactly their signals and what their filters keep.

use std::time::Duration;

use prost::Message as _;
use tests::kernel::{self, DecoderProcess, RawWriter};
use tests::otlp;
use tests::receiver::Receiver;
use ue_decoder::Signal;

#[test]
fn the_daemon_configured_by_a_file_routes_each_signal_through_its_filter() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let dir = std::env::temp_dir().join(format!("ue-k-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let (metrics_tp, traces_tp) = ("ue_k_cfg_metrics", "ue_k_cfg_traces");
    let config = dir.join("ue-decoder.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[reader]
signals = ["metrics", "traces"]
metrics_tracepoint = "{metrics_tp}"
traces_tracepoint = "{traces_tp}"
ring_kib = 256

[batch]
delay_ms = 50

[[sinks.otlp]]
name = "collector"
endpoint = "{}"
compression = "none"
signals = ["metrics"]
filter = {{ metrics = ["keep.*"] }}

[[sinks.file]]
name = "spans"
path = "{}"
signals = ["traces"]
filter = {{ exclude_spans = ["healthz*"] }}
"#,
            receiver.http_endpoint(),
            spans_file.display()
        ),
    )
    .unwrap();

    let decoder = DecoderProcess::start(DecoderProcess::command(&[
        "run",
        "--config",
        config.to_str().unwrap(),
    ]));

    let metrics = RawWriter::register(metrics_tp);
    let traces = RawWriter::register(traces_tp);
    assert!(metrics.enabled() && traces.enabled(), "the daemon listens");
    for i in 0..10 {
        let name = if i % 2 == 0 {
            "keep.requests"
        } else {
            "drop.requests"
        };
        assert_eq!(
            metrics.write(&otlp::metrics_request(name, 3).encode_to_vec()),
            0
        );
        let name = if i % 2 == 0 { "GET /cart" } else { "healthz" };
        assert_eq!(
            traces.write(&otlp::traces_request(name, 2).encode_to_vec()),
            0
        );
    }
    // Five `keep.requests` events of 3 points each reach the collector, nothing else.
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter().map(|x| x.items()).sum::<u64>() >= 15
    }));
    let (status, log) = decoder.stop();
    assert!(arrived && status.success(), "{status}: {log:#?}");

    let received = receiver.received();
    assert!(received.iter().all(|r| r.signal() == Signal::Metrics));
    assert_eq!(receiver.accepted_items(Signal::Metrics), 15);
    let mut names: Vec<String> = received
        .iter()
        .flat_map(|r| match &r.request {
            ue_decoder::Request::Metrics(m) => m
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| m.name.clone())
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect();
    names.dedup();
    assert_eq!(names, ["keep.requests"]);

    // The file: the 5 `GET /cart` events' 10 spans, no health check, no metric.
    let text = std::fs::read_to_string(&spans_file).unwrap();
    let mut spans = 0;
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let request = &line["request"];
        assert!(request.get("resourceMetrics").is_none(), "{line}");
        for name in request["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
            .flat_map(|s| s["spans"].as_array().into_iter().flatten())
            .map(|s| s["name"].as_str().unwrap().to_owned())
        {
            assert!(name.starts_with("GET /cart-"), "{name}");
            spans += 1;
        }
    }
    assert_eq!(spans, 10, "{text}");
    let counters = log.join("\n");
    assert!(
        counters.contains("sink spans: sent") && counters.contains("filtered out 10 items"),
        "the file sink counts the 10 health-check spans it left out: {counters}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
