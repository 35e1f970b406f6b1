//! The archive sink end to end: spans, log records and data points written to the daemon,
//! archived as gzip'd OTLP/JSON objects in a directory and in a real S3-compatible server
//! (moto's, from PyPI, installed by `scripts/install-moto.sh` when missing), read back,
//! decompressed and parsed: every item exactly once, spans grouped per service and trace,
//! keys as the README lays them out, one notification per object.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::Value as Json;
use tests::daemon::Daemon;
use tests::otlp;
use ue_decoder::proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_decoder::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_decoder::proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_decoder::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ue_decoder::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use ue_decoder::proto::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use ue_decoder::proto::resource::v1::Resource;
use ue_decoder::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use ue_decoder::{
    ArchiveConfig, MemorySource, PerfDataReader, RetryConfig, Signal, SinkConfig, TracepointNames,
};

// ---------------------------------------------------------------------------------------
// What the tests write.

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service), kv("host.name", "h1")],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: "1.0".into(),
        ..Default::default()
    })
}

/// Trace `n`'s id.
fn trace_id(n: u8) -> Vec<u8> {
    let mut id = vec![0x7a; 16];
    id[15] = n;
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span of trace `trace` named `name` (names are unique across a test).
fn span(trace: u8, name: &str) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: name.bytes().chain(std::iter::repeat(0)).take(8).collect(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        ..Default::default()
    }
}

/// An encoded traces request: `spans` of `service` from scope `scope_name`.
fn traces(service: &str, scope_name: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                scope: scope(scope_name),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// An encoded logs request with a resource per `(service, bodies)`.
fn logs(per_service: &[(&str, &[&str])]) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: per_service
            .iter()
            .map(|(service, bodies)| ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs {
                    scope: scope("log"),
                    log_records: bodies
                        .iter()
                        .map(|b| LogRecord {
                            time_unix_nano: 1_700_000_000_000_000_000,
                            severity_number: 9,
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue((*b).into())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// An encoded metrics request of `service`: one gauge per name, one point each.
fn metrics(service: &str, names: &[&str]) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("meter"),
                metrics: names
                    .iter()
                    .map(|n| Metric {
                        name: (*n).into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000,
                                value: Some(number_data_point::Value::AsDouble(1.5)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

// ---------------------------------------------------------------------------------------
// Reading the archive back.

/// One object read back: its key's parts and its parsed contents.
#[derive(Debug)]
struct Object {
    key: String,
    signal: String,
    /// `YYYY/MM/DD/HH`.
    hour: String,
    /// The service segment as in the key (escaped).
    service: String,
    /// The trace id or batch id.
    name: String,
    sequence: u32,
    size: u64,
    json: Json,
}

/// Parses `key` (after the prefix) and the gzip'd `body` of an object.
fn object(key: &str, relative: &str, body: &[u8]) -> Object {
    let parts: Vec<&str> = relative.split('/').collect();
    assert_eq!(
        parts.len(),
        7,
        "key {key} is not signal/YYYY/MM/DD/HH/service/file"
    );
    for (part, len) in parts[1..5].iter().zip([4, 2, 2, 2]) {
        assert!(
            part.len() == len && part.bytes().all(|b| b.is_ascii_digit()),
            "key {key}: {part} is not a date part"
        );
    }
    let file = parts[6]
        .strip_suffix(".json.gz")
        .unwrap_or_else(|| panic!("key {key} does not end in .json.gz"));
    let (name, sequence) = match file.split_once('.') {
        Some((name, n)) => (name, n.parse().expect("a sequence number")),
        None => (file, 0),
    };
    let mut json = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut json)
        .unwrap_or_else(|e| panic!("{key}: not gzip'd text: {e}"));
    Object {
        key: key.to_owned(),
        signal: parts[0].to_owned(),
        hour: parts[1..5].join("/"),
        service: parts[5].to_owned(),
        name: name.to_owned(),
        sequence,
        size: body.len() as u64,
        json: serde_json::from_str(&json).unwrap_or_else(|e| panic!("{key}: not JSON: {e}")),
    }
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
}

/// Every object under `dir`, with keys relative to it; read once the daemon stopped, so
/// that no object is half written.
fn read_dir_archive(dir: &Path) -> Vec<Object> {
    let files = files(dir);
    files
        .iter()
        .map(|path| {
            let key = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
            object(&key, &key, &std::fs::read(path).unwrap())
        })
        .collect()
}

/// The `service.name` of every resource in an object, checked to be the key's service.
fn check_service(o: &Object, resources: &str) {
    for r in o.json[resources].as_array().expect("resources") {
        let service = r["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
            .unwrap();
        assert_eq!(escape(&service), o.service, "{}", o.key);
    }
}

/// A service name as the README says keys escape it.
fn escape(service: &str) -> String {
    service
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The object's request, parsed back from its OTLP/JSON into the protobuf types.
fn traces_of(o: &Object) -> ExportTraceServiceRequest {
    serde_json::from_value(o.json.clone()).unwrap_or_else(|e| panic!("{}: {e}", o.key))
}

fn logs_of(o: &Object) -> ExportLogsServiceRequest {
    serde_json::from_value(o.json.clone()).unwrap_or_else(|e| panic!("{}: {e}", o.key))
}

fn metrics_of(o: &Object) -> ExportMetricsServiceRequest {
    serde_json::from_value(o.json.clone()).unwrap_or_else(|e| panic!("{}: {e}", o.key))
}

/// Span names in a traces request.
fn span_names(r: &ExportTraceServiceRequest) -> Vec<String> {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

/// Counts of each item, to compare as multisets.
fn counted<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------
// The notification receiver and moto's server.

/// An HTTP server taking the archive's notifications: it answers 503 to the first
/// `failures` requests, then 200, and keeps the bodies it accepted.
struct Hooks {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Json>>>,
    refused: Arc<Mutex<usize>>,
}

impl Hooks {
    fn start(failures: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (a, r) = (Arc::clone(&accepted), Arc::clone(&refused));
        // Ends with the test process; it only ever answers 127.0.0.1.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(body) = read_post(&stream) else {
                    continue;
                };
                let mut refused = r.lock().unwrap();
                let status = if *refused < failures {
                    *refused += 1;
                    "503 Service Unavailable"
                } else {
                    a.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).expect("a JSON notice"));
                    "200 OK"
                };
                drop(refused);
                let _ = (&stream).write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Self {
            addr,
            accepted,
            refused,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/archived", self.addr)
    }

    fn accepted(&self) -> Vec<Json> {
        self.accepted.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 POST's body.
fn read_post(stream: &TcpStream) -> Option<Vec<u8>> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST /archived ") {
        return None;
    }
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// moto's S3-compatible server on 127.0.0.1, killed when dropped, even when the test fails.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

/// The Python that has moto, installed by the project's script if missing.
fn moto_python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-moto.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An address on 127.0.0.1 that nothing listens on (the port is released for the caller).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Moto {
    /// Starts the server on `addr` and waits until it answers.
    fn start(addr: SocketAddr) -> Self {
        let python = moto_python();
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(addr.port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
        let moto = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(addr, "GET", "/", b"").is_err() {
            assert!(Instant::now() < deadline, "moto did not answer on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn create_bucket(&self, bucket: &str) {
        let status = http(self.addr, "PUT", &format!("/{bucket}"), b"").unwrap();
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// Every object under `prefix/` in `bucket`, through object_store's own S3 client.
    fn read(&self, bucket: &str, prefix: &str) -> Vec<Object> {
        use object_store::{ObjectStore as _, ObjectStoreExt as _};
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        let rt = tests::runtime();
        rt.block_on(async {
            use futures_util::TryStreamExt as _;
            let prefix_path = object_store::path::Path::from(prefix);
            let mut listed: Vec<_> = store
                .list(Some(&prefix_path))
                .try_collect::<Vec<_>>()
                .await
                .unwrap();
            listed.sort_by(|a, b| a.location.cmp(&b.location));
            let mut objects = Vec::new();
            for meta in listed {
                let key = meta.location.to_string();
                let body = store
                    .get(&meta.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let relative = key.strip_prefix(&format!("{prefix}/")).unwrap().to_owned();
                objects.push(object(&key, &relative, &body));
            }
            objects
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request without a body's content type: the status.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {response}"))
}

// ---------------------------------------------------------------------------------------
// The daemon.

/// Retries quick enough for a test.
fn fast_retry(max_elapsed: Duration) -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(500),
        max_elapsed,
        multiplier: 1.5,
        randomization: 0.2,
    }
}

/// Waits up to 20 s for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn a_directory_archive_holds_every_item_once_grouped_per_service_and_trace() {
    let rt = tests::runtime();
    let dir = std::env::temp_dir().join(format!("ue-archive-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The first two notifications are refused: they are retried, not lost.
    let hooks = Hooks::start(2);
    let source = MemorySource::new(1000);
    let archive = ArchiveConfig {
        trace_idle: Duration::from_millis(300),
        trace_max_age: Duration::from_secs(30),
        max_open_traces: 4,
        retry: fast_retry(Duration::from_secs(10)),
        notify_url: Some(hooks.url()),
        notify_retry: fast_retry(Duration::from_secs(10)),
        ..ArchiveConfig::new(format!("file://{}", dir.display()))
    };
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Archive(archive),
        Duration::from_secs(30),
    );

    // Trace 1 of checkout over three events, two CPUs and two scopes; trace 1 of payments
    // (the same trace, another service); trace 2 of checkout; trace 3 of a service whose
    // name needs escaping.
    let odd = "shop/cart é";
    let mut names = Vec::new();
    let mut write = |cpu, service: &str, scope_name: &str, spans: Vec<Span>| {
        names.extend(spans.iter().map(|s| s.name.clone()));
        assert!(source.write(cpu, Signal::Traces, &traces(service, scope_name, spans)));
    };
    write(0, "checkout", "http", vec![span(1, "c1a"), span(2, "c2a")]);
    write(1, "checkout", "db", vec![span(1, "c1b")]);
    write(0, "payments", "http", vec![span(1, "p1a"), span(1, "p1b")]);
    write(1, odd, "http", vec![span(3, "o3a")]);
    write(0, "checkout", "http", vec![span(1, "c1c"), span(2, "c2b")]);
    assert!(source.write(
        0,
        Signal::Logs,
        &logs(&[("checkout", &["l1", "l2"]), ("payments", &["l3"])])
    ));
    assert!(source.write(1, Signal::Metrics, &metrics("checkout", &["m1", "m2"])));

    // Trace 1 of checkout is written once idle; a span of it after that is a late span.
    let first = format!("checkout/{}.json.gz", hex(&trace_id(1)));
    wait_for("trace 1's object", || {
        dir.exists()
            && read_dir_archive(&dir)
                .iter()
                .any(|o| o.key.ends_with(&first))
    });
    write(1, "checkout", "http", vec![span(1, "c1-late")]);
    // Five traces at once with room for four open: the oldest are written early.
    write(
        0,
        "burst",
        "http",
        (10..15).map(|t| span(t, &format!("b{t}"))).collect(),
    );
    wait_for("every event to be read", || source.pending() == 0);
    std::thread::sleep(Duration::from_millis(100));
    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];

    let objects = read_dir_archive(&dir);
    let mut archived_spans = Vec::new();
    for o in objects.iter().filter(|o| o.signal == "traces") {
        check_service(o, "resourceSpans");
        let request = traces_of(o);
        for s in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            assert_eq!(
                hex(&s.trace_id),
                o.name,
                "{}: a span of another trace",
                o.key
            );
        }
        archived_spans.extend(span_names(&request));
    }
    assert_eq!(
        counted(archived_spans),
        counted(names.iter().cloned()),
        "every span exactly once: {sink}\n{:#?}",
        objects.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    let of = |service: &str, trace: u8| -> Vec<&Object> {
        objects
            .iter()
            .filter(|o| {
                o.signal == "traces" && o.service == service && o.name == hex(&trace_id(trace))
            })
            .collect()
    };
    let checkout1 = of("checkout", 1);
    assert_eq!(checkout1.len(), 2, "{checkout1:?}");
    let late = checkout1
        .iter()
        .find(|o| o.sequence == 1)
        .expect("a .1 object");
    assert_eq!(span_names(&traces_of(late)), ["c1-late"]);
    // Trace 1 of checkout: two scopes of one resource, spans of one event kept together.
    let first_object = traces_of(checkout1.iter().find(|o| o.sequence == 0).unwrap());
    assert_eq!(span_names(&first_object).len(), 3);
    assert_eq!(first_object.resource_spans.len(), 1);
    assert_eq!(first_object.resource_spans[0].scope_spans.len(), 2);
    assert_eq!(span_names(&traces_of(of("payments", 1)[0])).len(), 2);
    assert_eq!(span_names(&traces_of(of("checkout", 2)[0])), ["c2a", "c2b"]);
    let escaped = of("shop%2Fcart%20%C3%A9", 3);
    assert_eq!(escaped.len(), 1, "{objects:?}");
    assert_eq!(escape(odd), "shop%2Fcart%20%C3%A9");
    for t in 10..15 {
        assert_eq!(of("burst", t).len(), 1, "burst trace {t}");
    }

    // Logs: one object per service of the batch; metrics likewise.
    let log_objects: Vec<&Object> = objects.iter().filter(|o| o.signal == "logs").collect();
    assert_eq!(log_objects.len(), 2, "{log_objects:?}");
    let mut bodies = Vec::new();
    for o in &log_objects {
        check_service(o, "resourceLogs");
        let r = logs_of(o);
        bodies.extend(
            r.resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|l| format!("{:?}", l.body)),
        );
    }
    assert_eq!(bodies.len(), 3);
    assert_eq!(counted(bodies.iter()).len(), 3, "each record once");
    assert_ne!(
        log_objects[0].name, log_objects[1].name,
        "batch ids are unique"
    );
    let metric_objects: Vec<&Object> = objects.iter().filter(|o| o.signal == "metrics").collect();
    assert_eq!(metric_objects.len(), 1);
    check_service(metric_objects[0], "resourceMetrics");
    let points: Vec<String> = metrics_of(metric_objects[0])
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(points, ["m1", "m2"]);

    // The counters agree with what is in the directory.
    let items = names.len() as u64 + 3 + 2;
    assert_eq!(sink.items_sent, items, "{sink}");
    assert_eq!((sink.dropped_total(), sink.held_items), (0, 0), "{sink}");
    let a = sink.archive.as_ref().expect("archive counters");
    assert_eq!(a.objects, objects.len() as u64);
    assert_eq!(a.object_bytes, objects.iter().map(|o| o.size).sum::<u64>());
    assert_eq!(a.late_objects, 1);
    assert!(
        a.traces_flushed.get("max_traces").copied().unwrap_or(0) >= 2,
        "{a:?}"
    );
    assert_eq!(a.traces_flushed.values().sum::<u64>(), 10, "{a:?}");
    assert_eq!((a.open_traces, a.buffered_bytes), (0, 0));

    // One accepted notification per object, saying what the object is.
    assert_eq!(*hooks.refused.lock().unwrap(), 2);
    assert_eq!(a.notification_retries, 2);
    assert_eq!(a.notifications_sent, objects.len() as u64);
    let notices = hooks.accepted();
    assert_eq!(notices.len(), objects.len());
    let by_key: BTreeMap<&str, &Json> = notices
        .iter()
        .map(|n| (n["key"].as_str().unwrap(), n))
        .collect();
    assert_eq!(by_key.len(), objects.len(), "one notification per object");
    for o in &objects {
        let n = by_key
            .get(o.key.as_str())
            .unwrap_or_else(|| panic!("no notice of {}", o.key));
        assert_eq!(n["size"], o.size, "{n}");
        assert_eq!(n["signal"], o.signal.as_str());
        assert_eq!(n["url"], format!("file://{}/{}", dir.display(), o.key));
        assert_eq!(escape(n["service"].as_str().unwrap()), o.service);
        assert_eq!(n["sequence"], o.sequence);
        let items = match o.signal.as_str() {
            "traces" => {
                assert_eq!(n["trace_id"], o.name.as_str());
                span_names(&traces_of(o)).len()
            }
            "logs" => {
                assert!(n["trace_id"].is_null());
                otlp::log_records(&logs_of(o)).len()
            }
            _ => otlp::metric_points(&metrics_of(o)).len(),
        };
        assert_eq!(n["items"], items as u64, "{n}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_notification_that_cannot_be_sent_is_counted_and_loses_no_object() {
    let rt = tests::runtime();
    let dir = std::env::temp_dir().join(format!("ue-archive-nonotify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Nothing listens there.
    let nowhere = free_addr();
    let source = MemorySource::new(100);
    let archive = ArchiveConfig {
        notify_url: Some(format!("http://{nowhere}/archived")),
        notify_retry: fast_retry(Duration::from_millis(600)),
        ..ArchiveConfig::new(format!("file://{}", dir.display()))
    };
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Archive(archive),
        Duration::from_secs(30),
    );
    assert!(source.write(0, Signal::Traces, &traces("a", "s", vec![span(1, "x")])));
    assert!(source.write(0, Signal::Logs, &logs(&[("a", &["l1", "l2"])])));
    wait_for("every event to be read", || source.pending() == 0);
    std::thread::sleep(Duration::from_millis(100));
    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    let objects = read_dir_archive(&dir);
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!((sink.items_sent, sink.dropped_total()), (3, 0), "{sink}");
    let a = sink.archive.as_ref().unwrap();
    assert_eq!(a.notifications_sent, 0);
    assert_eq!(
        a.notifications_failed.get("retries_exhausted"),
        Some(&2),
        "{a:?}"
    );
    assert!(a.notification_retries >= 2, "{a:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn on_s3_late_spans_and_a_restarted_decoder_never_overwrite_an_object() {
    let rt = tests::runtime();
    let moto = Moto::start(free_addr());
    moto.create_bucket("ue-archive");
    let archive = ArchiveConfig {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        options: vec![
            ("aws_access_key_id".into(), "test".into()),
            ("aws_secret_access_key".into(), "test".into()),
        ],
        trace_idle: Duration::from_millis(200),
        retry: fast_retry(Duration::from_secs(10)),
        ..ArchiveConfig::new("s3://ue-archive/in/process")
    };
    let trace = hex(&trace_id(1));
    let count = || {
        moto.read("ue-archive", "in/process")
            .iter()
            .filter(|o| o.name == trace)
            .count()
    };

    let source = MemorySource::new(100);
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Archive(archive.clone()),
        Duration::from_secs(30),
    );
    assert!(source.write(0, Signal::Traces, &traces("a", "s", vec![span(1, "first")])));
    wait_for("the trace's object", || count() == 1);
    assert!(source.write(0, Signal::Traces, &traces("a", "s", vec![span(1, "late")])));
    wait_for("the late span to be read", || source.pending() == 0);
    std::thread::sleep(Duration::from_millis(100));
    let first_run = daemon.stop(&rt);
    assert_eq!(first_run.sinks[0].items_sent, 2, "{}", first_run.sinks[0]);

    // A new decoder knows nothing of the trace: the store refuses the taken keys.
    let source = MemorySource::new(100);
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Archive(archive),
        Duration::from_secs(30),
    );
    assert!(source.write(
        0,
        Signal::Traces,
        &traces("a", "s", vec![span(1, "restarted")])
    ));
    wait_for("the span to be read", || source.pending() == 0);
    std::thread::sleep(Duration::from_millis(100));
    let second_run = daemon.stop(&rt);
    let sink = &second_run.sinks[0];
    assert_eq!((sink.items_sent, sink.dropped_total()), (1, 0), "{sink}");

    let objects: Vec<Object> = moto
        .read("ue-archive", "in/process")
        .into_iter()
        .filter(|o| o.name == trace)
        .collect();
    assert_eq!(objects.len(), 3, "{objects:?}");
    let spans: Vec<(u32, Vec<String>)> = objects
        .iter()
        .map(|o| (o.sequence, span_names(&traces_of(o))))
        .collect();
    // Keys are per hour: numbered in order within the hour each object was written in.
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let mut order: Vec<&Object> = objects.iter().collect();
    order.sort_by_key(|o| {
        let names = span_names(&traces_of(o));
        ["first", "late", "restarted"]
            .iter()
            .position(|n| names == [*n])
            .unwrap_or_else(|| panic!("unexpected spans {spans:?}"))
    });
    for o in order {
        let n = seen.entry(o.hour.as_str()).or_default();
        assert_eq!(o.sequence, *n, "{}: {spans:?}", o.key);
        *n += 1;
        assert!(o.key.starts_with("in/process/traces/"), "{}", o.key);
        assert_eq!(o.service, "a");
    }
}

#[test]
fn a_capture_decoded_into_s3_survives_the_server_starting_late() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/examples.perf.data");
    let mut reader = PerfDataReader::open(&fixture, &TracepointNames::default()).unwrap();
    let (mut want_points, mut want_spans) = (Vec::new(), Vec::new());
    while let Some(event) = reader.next_event().unwrap() {
        match &event.request {
            ue_decoder::Request::Metrics(r) => want_points.extend(otlp::metric_points(r)),
            ue_decoder::Request::Traces(r) => want_spans.extend(otlp::spans(r)),
            ue_decoder::Request::Logs(r) => panic!("no logs in this capture: {r:?}"),
        }
    }
    assert!(!want_points.is_empty() && !want_spans.is_empty());

    let hooks = Hooks::start(0);
    let addr = free_addr();
    let started = Instant::now();
    let decoder = Command::new(tests::built("ue-decoder"))
        .arg("decode")
        .arg(&fixture)
        .args(["--archive-url", "s3://ue-archive/capture"])
        .args(["--archive-endpoint", &format!("http://{addr}")])
        .args(["--archive-notify-url", &hooks.url()])
        .args([
            "--retry-initial-ms",
            "200",
            "--retry-max-interval-ms",
            "1000",
        ])
        .args(["--retry-max-elapsed-secs", "60", "--shutdown-secs", "90"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing listens yet: every write fails and is retried.
    std::thread::sleep(Duration::from_secs(3));
    let moto = Moto::start(addr);
    moto.create_bucket("ue-archive");
    let out = decoder.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() > Duration::from_secs(3));
    let sink_line = stderr
        .lines()
        .find(|l| l.starts_with("ue-decoder: sink archive s3://ue-archive/capture"))
        .unwrap_or_else(|| panic!("no sink line: {stderr}"));
    let retries: u64 = sink_line
        .split("retries ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no retries in {sink_line}"));
    assert!(retries > 0, "the outage was retried: {sink_line}");
    assert!(
        sink_line.contains("dropped {}"),
        "nothing dropped: {sink_line}"
    );

    let objects = moto.read("ue-archive", "capture");
    let (mut got_points, mut got_spans) = (Vec::new(), Vec::new());
    for o in &objects {
        match o.signal.as_str() {
            "traces" => {
                check_service(o, "resourceSpans");
                let r = traces_of(o);
                for s in r
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    assert_eq!(hex(&s.trace_id), o.name, "{}", o.key);
                }
                got_spans.extend(otlp::spans(&r));
            }
            "metrics" => {
                check_service(o, "resourceMetrics");
                got_points.extend(otlp::metric_points(&metrics_of(o)));
            }
            other => panic!("{}: a {other} object", o.key),
        }
    }
    assert_eq!(
        counted(got_spans),
        counted(want_spans),
        "every span exactly once"
    );
    assert_eq!(
        counted(got_points),
        counted(want_points),
        "every point exactly once"
    );
    let traces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.signal == "traces")
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(
        traces.len(),
        objects.iter().filter(|o| o.signal == "traces").count(),
        "one object per trace"
    );

    let notices = hooks.accepted();
    let keys: BTreeSet<&str> = notices.iter().map(|n| n["key"].as_str().unwrap()).collect();
    let stored: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(notices.len(), objects.len());
    assert_eq!(keys, stored, "one notification per object");
    for n in &notices {
        assert!(
            n["url"]
                .as_str()
                .unwrap()
                .starts_with("s3://ue-archive/capture/"),
            "{n}"
        );
    }
}
