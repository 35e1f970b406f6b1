//! The configuration file: the example in `deploy/` (and the README, which shows it) is
//! valid with every sink kind; mistakes are refused naming the file, line and field;
//! `run --config` refuses other flags; and routing works end to end: each sink gets the
//! signals and items its filter keeps, with a dead collector next to them holding up none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use prost::Message as _;
use tests::daemon::Daemon;
use tests::otlp;
use ue_decoder::{AgentConfig, MemorySource, Signal};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ue-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ue-decoder ARGS`: exit status, stdout, stderr.
fn decoder(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tests::built("ue-decoder"))
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The example with its secret files (`/etc/ue-decoder/...`) made in `dir`.
fn example_in(dir: &Path) -> PathBuf {
    let pki = tests::tls::Pki::new(&dir.join("pki"), "config-test");
    std::fs::copy(&pki.ca, dir.join("ca.pem")).unwrap();
    std::fs::write(dir.join("headers"), "authorization: Bearer secret\n").unwrap();
    std::fs::write(dir.join("clickhouse-password"), "hunter2\n").unwrap();
    let example = std::fs::read_to_string(repo_file("deploy/ue-decoder.toml")).unwrap();
    let local = example.replace("/etc/ue-decoder/", &format!("{}/", dir.display()));
    let path = dir.join("ue-decoder.toml");
    std::fs::write(&path, local).unwrap();
    path
}

#[test]
fn the_readme_shows_the_example_file() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let example = std::fs::read_to_string(repo_file("deploy/ue-decoder.toml")).unwrap();
    let marker = "<!-- deploy/ue-decoder.toml";
    let after = &readme[readme.find(marker).expect("the README marks the example")..];
    let block = after
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a toml block after the marker")
        .0;
    assert_eq!(block, example, "README and deploy/ue-decoder.toml differ");
}

#[test]
fn the_example_sets_up_every_sink_kind_with_its_routes() {
    let dir = scratch("example");
    let path = example_in(&dir);
    let (ok, stdout, stderr) = decoder(&["check-config", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let sinks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  sink "))
        .collect();
    assert_eq!(
        sinks,
        [
            "collector: metrics,traces,logs (filter Filter { metrics: [], exclude_metrics: [], spans: [], exclude_spans: [\"GET /healthz\", \"GET /readyz\"], resource: [] })",
            "checkout-tenant: traces (filter Filter { metrics: [], exclude_metrics: [], spans: [], exclude_spans: [], resource: [(\"service.name\", [\"checkout*\"])] })",
            "prometheus http://0.0.0.0:9465/metrics: metrics (filter Filter { metrics: [\"http.*\", \"rpc.*\"], exclude_metrics: [], spans: [], exclude_spans: [], resource: [] })",
            "dogstatsd udp 127.0.0.1:8125: metrics",
            "clickhouse http://127.0.0.1:8123: traces,logs",
            "archive s3://telemetry-archive/otlp: traces",
            &format!(
                "file {}: logs (filter Filter {{ metrics: [], exclude_metrics: [], spans: [], exclude_spans: [], resource: [(\"service.name\", [\"payments\"])] }})",
                "/var/log/ue-decoder/payments-logs.jsonl"
            ),
            "errors-to-journal: logs (filter Filter { metrics: [], exclude_metrics: [], spans: [], exclude_spans: [], resource: [(\"deployment.environment\", [\"staging\", \"dev-*\"])] })",
        ]
    );
    // What the file says, down to the settings of the flags it replaces.
    let agent = AgentConfig::from_file(&path).unwrap();
    assert_eq!(agent.reader.eventheader_providers, ["myprovider"]);
    assert_eq!(
        agent.run.admin.as_ref().map(|a| a.addr.to_string()),
        Some("127.0.0.1:9464".into())
    );
    let ue_decoder::SinkConfig::Otlp(collector) = &agent.run.forward.sinks[0].config else {
        panic!("the first sink is OTLP")
    };
    assert_eq!(
        collector.headers,
        [("authorization".into(), "Bearer secret".into())]
    );
    assert!(collector.tls.ca.is_some());
    assert_eq!(collector.compression, ue_decoder::Compression::Zstd);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mistakes_are_refused_naming_the_line_and_the_field() {
    let dir = scratch("errors");
    let cases: &[(&str, &str)] = &[
        (
            "[[sinks.otlp]]\nendpoint = \"http://a:4318\"\ncompresion = \"zstd\"\n",
            ":3:1: unknown field `compresion`",
        ),
        (
            "[reader]\nring_kib = \"big\"\n[[sinks.stdout]]\n",
            ":2:12: invalid type",
        ),
        ("[batch]\nitems = 10\n", ":1: sinks: no sink"),
        (
            "[[sinks.stdout]]\n\n[[sinks.otlp]]\nendpoint = \"ftp://a:4318\"\n",
            ":4: sinks.otlp[0].endpoint: \"ftp://a:4318\": expected http:// or https://",
        ),
        (
            "[[sinks.prometheus]]\naddr = \"localhost\"\n",
            ":2: sinks.prometheus[0].addr: \"localhost\" is not an IP address and port",
        ),
        (
            "[[sinks.prometheus]]\naddr = \"127.0.0.1:9\"\nsignals = [\"metrics\", \"traces\"]\n",
            ":3: sinks.prometheus[0].signals: this sink takes metrics only, not traces",
        ),
        (
            "[[sinks.stdout]]\nfilter = { spans = [\"a[b\"] }\n",
            ":2: sinks.stdout[0].filter.spans: pattern \"a[b\"",
        ),
        (
            "[[sinks.otlp]]\nendpoint = \"https://a:4318\"\nca_file = \"/nonexistent/ca.pem\"\n",
            ":3: sinks.otlp[0].ca_file: cannot read /nonexistent/ca.pem: No such file",
        ),
        (
            "[[sinks.otlp]]\nendpoint = \"http://a:4318\"\nretry = { initial_ms = 0 }\n",
            ":3: sinks.otlp[0].retry: initial_interval must be more than zero",
        ),
        (
            "[queue]\nsync = \"sometimes\"\n[[sinks.stdout]]\n",
            ":2: queue.sync: expected milliseconds, `batch` or `never`",
        ),
        (
            "[[sinks.file]]\npath = \"/tmp/a\"\n[[sinks.file]]\npath = \"/tmp/a\"\n",
            ":3: sinks.file[1]: the name \"file /tmp/a\" is sinks.file[0]'s too",
        ),
        (
            "[[sinks.statsd]]\n",
            ":1: sinks.statsd[0]: give `addr` (UDP host:port) or `socket`",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("case-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (ok, _, stderr) = decoder(&["check-config", path.to_str().unwrap()]);
        assert!(!ok, "case {i} is refused: {text}");
        let want = format!("ue-decoder: {}{want}", path.display());
        assert!(
            stderr.starts_with(&want),
            "case {i}:\n{stderr}\nwant: {want}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_with_a_config_refuses_other_flags() {
    let dir = scratch("flags");
    let path = dir.join("c.toml");
    std::fs::write(&path, "[[sinks.stdout]]\n").unwrap();
    let (ok, _, stderr) = decoder(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--endpoint",
        "http://127.0.0.1:4318",
        "--ring-kib",
        "64",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("takes every setting from the file: move --endpoint, --ring-kib into it"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every line of a file sink's output: `{"signal": ..., "request": OTLP/JSON}`.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The names of the spans or metrics in OTLP/JSON lines, sorted, with the service of each.
fn names(lines: &[serde_json::Value], resources: &str, scopes: &str, items: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        for r in line["request"][resources].as_array().into_iter().flatten() {
            let service = r["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                .unwrap_or_default();
            for s in r[scopes].as_array().into_iter().flatten() {
                for item in s[items].as_array().into_iter().flatten() {
                    out.push(format!("{service}/{}", item["name"].as_str().unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn each_sink_takes_its_signals_and_what_its_filter_keeps_next_to_a_dead_collector() {
    let dir = scratch("routes");
    let (spans_file, metrics_file, all_file) = (
        dir.join("spans.jsonl"),
        dir.join("checkout-http.jsonl"),
        dir.join("all.jsonl"),
    );
    // Port 9 (discard) on loopback: nothing listens, every attempt is refused and retried.
    let text = format!(
        r#"
[batch]
delay_ms = 3600000
[daemon]
shutdown_secs = 2

[[sinks.otlp]]
name = "dead"
endpoint = "http://127.0.0.1:9"
compression = "none"

[[sinks.file]]
name = "spans-but-health"
path = "{}"
signals = ["traces"]
filter = {{ exclude_spans = ["health*"] }}

[[sinks.file]]
name = "checkout-http"
path = "{}"
filter = {{ metrics = ["http.*"], resource = {{ "service.name" = "checkout*" }} }}

[[sinks.file]]
name = "all"
path = "{}"
"#,
        spans_file.display(),
        metrics_file.display(),
        all_file.display()
    );
    let agent = AgentConfig::parse(&text, Path::new("routes.toml")).unwrap();

    let rt = tests::runtime();
    let source = MemorySource::new(10_000);
    let daemon = Daemon::start(&rt, &source, agent.run);
    let services = ["checkout-eu", "search"];
    for (i, service) in services.iter().enumerate() {
        for name in ["http.server.duration", "db.calls"] {
            let mut m = otlp::metrics_request(name, 3);
            m.resource_metrics[0].resource = otlp::resource(service);
            assert!(source.write(i as u32, Signal::Metrics, &m.encode_to_vec()));
        }
        for name in ["GET /cart", "healthz"] {
            let mut t = otlp::traces_request(name, 2);
            t.resource_spans[0].resource = otlp::resource(service);
            assert!(source.write(i as u32, Signal::Traces, &t.encode_to_vec()));
        }
        let mut l = otlp::logs_request(service, 4);
        l.resource_logs[0].resource = otlp::resource(service);
        assert!(source.write(i as u32, Signal::Logs, &l.encode_to_vec()));
    }
    std::thread::sleep(Duration::from_millis(200));
    let snapshot = daemon.stop(&rt);

    // Everything: 2 services x (2 metrics x 3 points + 2 names x 2 spans + 4 records).
    let all = json_lines(&all_file);
    assert_eq!(all.len(), 3, "one batch per signal: {all:#?}");
    assert_eq!(names(&all, "resourceSpans", "scopeSpans", "spans").len(), 8);
    assert_eq!(
        names(&all, "resourceMetrics", "scopeMetrics", "metrics").len(),
        4
    );
    // Spans only, health checks left out.
    let spans = json_lines(&spans_file);
    assert_eq!(
        names(&spans, "resourceSpans", "scopeSpans", "spans"),
        [
            "checkout-eu/GET /cart-0",
            "checkout-eu/GET /cart-1",
            "search/GET /cart-0",
            "search/GET /cart-1"
        ]
    );
    assert!(
        spans
            .iter()
            .all(|l| l["request"].get("resourceSpans").is_some()),
        "traces only: {spans:#?}"
    );
    // HTTP metrics of checkout services; their spans and logs by resource alone.
    let checkout = json_lines(&metrics_file);
    assert_eq!(
        names(&checkout, "resourceMetrics", "scopeMetrics", "metrics"),
        ["checkout-eu/http.server.duration"]
    );
    assert_eq!(
        names(&checkout, "resourceSpans", "scopeSpans", "spans"),
        [
            "checkout-eu/GET /cart-0",
            "checkout-eu/GET /cart-1",
            "checkout-eu/healthz-0",
            "checkout-eu/healthz-1"
        ]
    );

    let sink = |name: &str| {
        snapshot
            .sinks
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("sink {name} in {:?}", snapshot.sinks))
    };
    let (spans_sink, checkout_sink, all_sink, dead) = (
        sink("spans-but-health"),
        sink("checkout-http"),
        sink("all"),
        sink("dead"),
    );
    assert_eq!((spans_sink.items_sent, spans_sink.filtered_items), (4, 4));
    // Left out: search's 6 + 6 points, checkout's 3 db.calls points, search's 4 spans and 4
    // records; kept: 3 points, 4 spans, 4 records.
    assert_eq!(
        (checkout_sink.items_sent, checkout_sink.filtered_items),
        (11, 17)
    );
    assert_eq!((all_sink.items_sent, all_sink.filtered_items), (28, 0));
    for s in [spans_sink, checkout_sink, all_sink] {
        assert_eq!(s.dropped_total(), 0, "{s}");
    }
    // The dead collector got nothing through, and says so; it held up no one.
    assert_eq!(dead.items_sent, 0);
    assert_eq!(dead.dropped_total(), 28, "{dead}");
    assert!(dead.last_error.is_some(), "{dead}");
    std::fs::remove_dir_all(&dir).unwrap();
}
