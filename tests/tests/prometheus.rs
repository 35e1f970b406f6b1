//! The Prometheus sink end to end: known metrics written to the daemon's in-memory source,
//! served by the sink, scraped every second by a real Prometheus server (Debian's package,
//! installed by `scripts/install-prometheus.sh` when missing) and read back through its
//! query API, values and labels exactly.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde_json::Value as Json;
use tests::daemon::Daemon;
use ue_decoder::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_decoder::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ue_decoder::proto::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
};
use ue_decoder::proto::resource::v1::Resource;
use ue_decoder::{MemorySource, PrometheusConfig, Signal, SinkConfig};

/// A series' labels (`__name__` included) and its value, as the query API returns them.
type Sample = (BTreeMap<String, String>, f64);

/// A Prometheus server on a free port, killed when dropped, even when the test fails.
struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl PrometheusServer {
    /// Starts `binary` scraping `target` every second, with `honor_labels` so the sink's
    /// own `job` and `instance` labels are kept, as the Collector's exporter documents.
    fn start(binary: &Path, target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("ue-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ue-decoder\n    honor_labels: true\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self { child, addr, dir }
    }

    /// The instant vector `query` evaluates to now: each series' labels and value; an
    /// error while the server is not up yet.
    fn query(&self, query: &str) -> Result<Vec<Sample>, String> {
        let body = http_get(self.addr, &format!("/api/v1/query?query={}", encode(query)))?;
        let json: Json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if json["status"] != "success" {
            return Err(body);
        }
        let series = json["data"]["result"]
            .as_array()
            .ok_or_else(|| body.clone())?;
        Ok(series
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .expect("a series' labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("a label value").to_owned()))
                    .collect();
                let value = r["value"][1].as_str().expect("a sample value");
                (labels, value.parse().expect("a number"))
            })
            .collect())
    }

    /// What the server logged, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A GET over HTTP/1.0 (the connection closes after the response): the body.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(format!("no HTTP body: {response}")),
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An address on 127.0.0.1 that nothing listens on (the port is released for the caller).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Debian's Prometheus server, installed by the project's script if missing.
fn prometheus_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-prometheus.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn s(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// An encoded request of `metrics` from service shop/checkout, instance i-1, scope app 2.0.
fn request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "checkout"),
                    s("service.namespace", "shop"),
                    s("service.instance.id", "i-1"),
                    s("host.name", "test-host"),
                ],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    version: "2.0".into(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn number(start: u64, time: u64, v: i64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(v)),
        ..NumberDataPoint::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} for the test"),
        data: Some(data),
        ..Metric::default()
    }
}

fn sum(delta: bool, points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality(delta),
        is_monotonic: true,
    })
}

fn temporality(delta: bool) -> i32 {
    if delta {
        AggregationTemporality::Delta as i32
    } else {
        AggregationTemporality::Cumulative as i32
    }
}

fn histogram(start: u64, time: u64, counts: Vec<u64>, sum: f64) -> Data {
    Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: vec![s("http.route", "/pay")],
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts,
            explicit_bounds: vec![0.1, 0.5, 1.0],
            ..HistogramDataPoint::default()
        }],
        aggregation_temporality: temporality(true),
    })
}

/// The labels every series of the test's resource and scope has, plus `extra`.
fn labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    [
        ("__name__", name),
        ("job", "shop/checkout"),
        ("instance", "i-1"),
        ("otel_scope_name", "app"),
        ("otel_scope_version", "2.0"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Polls `query` until it returns `want` (in any order), up to 60 s.
fn eventually(prom: &PrometheusServer, query: &str, want: &[Sample]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut want = want.to_vec();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    loop {
        let got = prom.query(query).map(|mut got| {
            got.sort_by(|a, b| a.0.cmp(&b.0));
            got
        });
        if got.as_ref() == Ok(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: got {got:?}\nwant {want:?}\nprometheus log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_what_the_applications_wrote() {
    let binary = prometheus_binary();
    let rt = tests::runtime();
    let sink_addr = free_addr();
    let source = MemorySource::new(1000);
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Prometheus(PrometheusConfig {
            max_series: 10,
            ..PrometheusConfig::new(sink_addr)
        }),
        Duration::from_secs(10),
    );

    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let sec = 1_000_000_000;
    let get = || vec![s("http.request.method", "GET")];
    let write = |metrics| assert!(source.write(0, Signal::Metrics, &request(metrics)));
    // A delta counter: 5 + 7 + 11, and a repeat of the second interval, which must not
    // count twice.
    write(vec![metric(
        "http.server.requests",
        "{request}",
        sum(true, vec![number(t0, t0 + sec, 5, get())]),
    )]);
    write(vec![metric(
        "http.server.requests",
        "{request}",
        sum(true, vec![number(t0 + sec, t0 + 2 * sec, 7, get())]),
    )]);
    write(vec![metric(
        "http.server.requests",
        "{request}",
        sum(true, vec![number(t0 + sec, t0 + 2 * sec, 7, get())]),
    )]);
    write(vec![metric(
        "http.server.requests",
        "{request}",
        sum(true, vec![number(t0 + 3 * sec, t0 + 4 * sec, 11, get())]),
    )]);
    // A cumulative counter and a gauge (its later value wins).
    write(vec![
        metric(
            "network.io",
            "By",
            sum(false, vec![number(t0, t0 + sec, 4096, vec![])]),
        ),
        metric(
            "queue.depth",
            "{item}",
            Data::Gauge(Gauge {
                data_points: vec![number(0, t0 + sec, 20, vec![])],
            }),
        ),
    ]);
    write(vec![metric(
        "queue.depth",
        "{item}",
        Data::Gauge(Gauge {
            data_points: vec![number(0, t0 + 2 * sec, 17, vec![])],
        }),
    )]);
    // A delta histogram in two intervals: buckets 1+2, 2+0, 0+1, 1+0.
    write(vec![metric(
        "request.duration",
        "s",
        histogram(t0, t0 + sec, vec![1, 2, 0, 1], 1.25),
    )]);
    write(vec![metric(
        "request.duration",
        "s",
        histogram(t0 + sec, t0 + 2 * sec, vec![2, 0, 1, 0], 0.75),
    )]);
    // An exponential histogram at scale 0: one observation in (1, 2], two in (2, 4].
    write(vec![metric(
        "payload.size",
        "By",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                start_time_unix_nano: t0,
                time_unix_nano: t0 + sec,
                count: 3,
                sum: Some(7.0),
                scale: 0,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![1, 2],
                }),
                ..ExponentialHistogramDataPoint::default()
            }],
            aggregation_temporality: temporality(false),
        }),
    )]);
    // Six new series where four fit: six series so far (target_info included), ten at most.
    let shards = (0..6)
        .map(|i| number(0, t0 + sec, i, vec![s("shard", &i.to_string())]))
        .collect();
    write(vec![metric(
        "shard.load",
        "",
        Data::Gauge(Gauge {
            data_points: shards,
        }),
    )]);

    // A span: the sink takes metrics only, so it never sees it.
    let span = tests::otlp::traces_request("work", 1).encode_to_vec();
    assert!(source.write(0, Signal::Traces, &span));

    let prom = PrometheusServer::start(&binary, sink_addr);
    let get_labels = [("http_request_method", "GET")];
    eventually(
        &prom,
        "http_server_requests_total",
        &[(labels("http_server_requests_total", &get_labels), 23.0)],
    );
    eventually(
        &prom,
        "network_io_bytes_total",
        &[(labels("network_io_bytes_total", &[]), 4096.0)],
    );
    eventually(&prom, "queue_depth", &[(labels("queue_depth", &[]), 17.0)]);
    let route = ("http_route", "/pay");
    let buckets: Vec<_> = [("0.1", 3.0), ("0.5", 5.0), ("1", 6.0), ("+Inf", 7.0)]
        .into_iter()
        .map(|(le, v)| {
            (
                labels("request_duration_seconds_bucket", &[route, ("le", le)]),
                v,
            )
        })
        .collect();
    eventually(&prom, "request_duration_seconds_bucket", &buckets);
    eventually(
        &prom,
        "request_duration_seconds_sum",
        &[(labels("request_duration_seconds_sum", &[route]), 2.0)],
    );
    eventually(
        &prom,
        "request_duration_seconds_count",
        &[(labels("request_duration_seconds_count", &[route]), 7.0)],
    );
    let exp: Vec<_> = [("0", 0.0), ("2", 1.0), ("4", 3.0), ("+Inf", 3.0)]
        .into_iter()
        .map(|(le, v)| (labels("payload_size_bytes_bucket", &[("le", le)]), v))
        .collect();
    eventually(&prom, "payload_size_bytes_bucket", &exp);
    eventually(
        &prom,
        "payload_size_bytes_count",
        &[(labels("payload_size_bytes_count", &[]), 3.0)],
    );
    // The resource's other attributes, the writer the decoder stamped among them (this
    // process: the in-memory source's events carry its pid).
    let pid = std::process::id().to_string();
    let target: BTreeMap<String, String> = [
        ("__name__", "target_info"),
        ("job", "shop/checkout"),
        ("instance", "i-1"),
        ("host_name", "test-host"),
        ("process_pid", &pid),
        ("user_events_writer_pid", &pid),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    eventually(&prom, "target_info", &[(target, 1.0)]);
    eventually(&prom, "count(shard_load)", &[(BTreeMap::new(), 4.0)]);
    // The scrape itself succeeded every time: `up` of the scrape job's own target.
    let up: BTreeMap<String, String> = [
        ("__name__", "up"),
        ("job", "ue-decoder"),
        ("instance", sink_addr.to_string().as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    eventually(&prom, "up", &[(up, 1.0)]);
    drop(prom);

    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    assert_eq!(sink.name, format!("prometheus http://{sink_addr}/metrics"));
    // 4 + 1 + 2 + 2 + 1 + 6 points (the span not among them); one repeat and two series
    // over the limit dropped.
    assert_eq!(sink.dropped("out_of_order"), 1, "{sink}");
    assert_eq!(sink.dropped("series_limit"), 2, "{sink}");
    assert_eq!(sink.dropped_total(), 3, "{sink}");
    assert_eq!(sink.items_sent, 16 - 3, "{sink}");
    assert!(sink.dropped_batches.is_empty(), "{sink}");
}
