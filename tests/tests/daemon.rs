//! The daemon's orchestration without a kernel: `ue_decoder::run` over an in-memory event
//! source, with real sinks (a file, the test receiver). What the kernel tests show with perf
//! rings, shown here for the threads, channels, timers and shutdown around them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tests::daemon::Daemon;
use tests::otlp;
use tests::receiver::{Receiver, Respond};
use ue_decoder::{
    BatchConfig, ForwardConfig, MemorySource, OtlpConfig, RetryConfig, RunConfig, Signal,
    SinkConfig, Snapshot,
};

/// An encoded metrics request: one sum of `points` points.
fn metrics(points: usize) -> Vec<u8> {
    otlp::metrics_request("requests", points).encode_to_vec()
}

/// An encoded traces request with one span.
fn span() -> Vec<u8> {
    otlp::traces_request("work", 1).encode_to_vec()
}

/// An encoded logs request with `records` records.
fn log_records(records: usize) -> Vec<u8> {
    otlp::logs_request("app", records).encode_to_vec()
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ue-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("out.jsonl")
}

/// Forwarding to `sinks`, batches sent only when full (or at shutdown), counters every
/// `stats`.
fn config(sinks: Vec<SinkConfig>, batch: BatchConfig, stats: Duration) -> RunConfig {
    RunConfig {
        forward: ForwardConfig {
            batch,
            sinks: sinks.into_iter().map(Into::into).collect(),
            shutdown_deadline: Duration::from_secs(10),
            ..ForwardConfig::default()
        },
        stats_interval: stats,
        self_metrics: false,
        admin: None,
        writer_identity: true,
    }
}

/// Everything to the file at `path`, batches sent only at shutdown (or when full).
fn to_file(path: &Path) -> RunConfig {
    config(
        vec![SinkConfig::File(path.to_owned())],
        no_timed_batches(),
        Duration::from_secs(3600),
    )
}

fn no_timed_batches() -> BatchConfig {
    BatchConfig {
        max_delay: Duration::from_secs(3600),
        ..BatchConfig::default()
    }
}

/// Waits up to 10 s for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn items(snapshot: &Snapshot, signal: Signal) -> u64 {
    snapshot.items.get(&signal).copied().unwrap_or(0)
}

#[test]
fn what_was_written_before_the_stop_is_drained_batched_and_sent() {
    let rt = tests::runtime();
    let path = scratch_file("drain");
    let source = MemorySource::new(10_000);
    let daemon = Daemon::start(&rt, &source, to_file(&path));
    for i in 0..50 {
        assert!(source.write(i % 2, Signal::Metrics, &metrics(3)));
    }
    for i in 0..20 {
        assert!(source.write(i % 2, Signal::Traces, &span()));
    }
    // Stopped at once: no batch was due (no size reached, no delay), so whatever arrives
    // came through the last drain and the final flush.
    let (s, _) = daemon.stop_timed(&rt);
    assert_eq!(source.pending(), 0);
    assert_eq!(
        (items(&s, Signal::Metrics), items(&s, Signal::Traces)),
        (150, 20)
    );
    assert_eq!(
        s.batches.values().sum::<u64>(),
        2,
        "one flushed batch per signal"
    );
    assert_eq!(s.batched_items.values().sum::<u64>(), 170);
    assert_eq!(s.kernel_lost_total(), 0);
    let sink = &s.sinks[0];
    assert_eq!((sink.items_sent, sink.dropped_total()), (170, 0));
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn log_records_are_read_batched_and_sent_next_to_the_other_signals() {
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let path = scratch_file("logs");
    let source = MemorySource::new(10_000);
    let run = config(
        vec![
            SinkConfig::File(path.clone()),
            SinkConfig::Otlp(OtlpConfig {
                endpoint: receiver.http_endpoint(),
                ..OtlpConfig::default()
            }),
        ],
        no_timed_batches(),
        Duration::from_secs(3600),
    );
    let daemon = Daemon::start(&rt, &source, run);
    for i in 0..30 {
        assert!(source.write(i % 2, Signal::Logs, &log_records(4)));
    }
    assert!(source.write(0, Signal::Traces, &span()));
    let (s, _) = daemon.stop_timed(&rt);
    assert_eq!(
        (items(&s, Signal::Logs), items(&s, Signal::Traces)),
        (120, 1)
    );
    assert_eq!(s.events[&Signal::Logs], 30);
    assert_eq!(s.batches[&Signal::Logs], 1, "30 requests, one batch");
    assert_eq!(s.batched_items[&Signal::Logs], 120);
    assert!(s.to_string().contains("logs events 30"), "{s}");
    for sink in &s.sinks {
        assert_eq!(
            (sink.items_sent, sink.dropped_total()),
            (121, 0),
            "{sink:?}"
        );
    }

    let logs = receiver.accepted(Signal::Logs);
    assert_eq!(logs.len(), 1);
    let ue_decoder::Request::Logs(req) = &logs[0].request else {
        panic!("a logs request")
    };
    // The events' own requests one after another (nothing merged by default), in order.
    assert_eq!(req.resource_logs.len(), 30);
    let bodies: Vec<String> = req
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .map(|r| format!("{:?}", r.body.as_ref().unwrap().value))
        .collect();
    assert_eq!(bodies.len(), 120);
    assert!(bodies[1].contains("app-1"), "{}", bodies[1]);

    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"{"signal":"logs""#))
        .expect("a logs line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let records: Vec<&serde_json::Value> = v["request"]["resourceLogs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rl| rl["scopeLogs"][0]["logRecords"].as_array().unwrap())
        .collect();
    assert_eq!(records.len(), 120);
    assert_eq!(records[1]["body"]["stringValue"], "app-1");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn a_stalled_sink_never_holds_up_the_reader() {
    // One runtime worker, which the test blocks: the sink's worker cannot run, so its
    // queue fills; the reading thread, which batches by itself, goes on draining the
    // "kernel" rings, and what the queue cannot hold is dropped and counted by the sink,
    // not lost in the rings.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let path = scratch_file("stall");
    let source = MemorySource::new(64);
    let mut run = to_file(&path);
    run.forward.queue_bytes = 64 << 10;
    run.forward.batch.max_items = 100;
    let daemon = Daemon::start(&rt, &source, run);
    source.write(0, Signal::Metrics, &metrics(1));
    eventually("the reading thread to drain", || source.drained() == 1);

    let (stalled_tx, stalled) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    rt.spawn(async move {
        stalled_tx.send(()).unwrap();
        // Blocks the only worker until the test releases it.
        let _ = released.recv();
    });
    stalled.recv().unwrap();

    let mut written = 1;
    while written < 20_000 {
        source.write(0, Signal::Metrics, &metrics(1));
        written += 1;
        if written % 16 == 0 {
            eventually("the reader to keep up", || source.pending() == 0);
        }
    }
    eventually("the reader to drain", || source.pending() == 0);
    release.send(()).unwrap();
    let (s, _) = daemon.stop_timed(&rt);

    assert_eq!(source.lost(), 0, "the rings never filled: {s}");
    assert_eq!(s.kernel_lost_total(), 0, "{s}");
    assert_eq!(items(&s, Signal::Metrics), written, "{s}");
    let sink = &s.sinks[0];
    assert!(sink.dropped("queue_full") > 0, "{sink}");
    assert_eq!(sink.items_sent + sink.dropped_total(), written, "{sink}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn shutdown_gives_the_sinks_no_more_than_the_deadline() {
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    receiver.set_default(Signal::Metrics, Respond::Ok.after(Duration::from_secs(60)));
    let source = MemorySource::new(1000);
    let sink = OtlpConfig {
        endpoint: receiver.http_endpoint(),
        timeout: Duration::from_secs(120),
        retry: RetryConfig {
            enabled: false,
            ..RetryConfig::default()
        },
        ..OtlpConfig::default()
    };
    let mut run = config(
        vec![SinkConfig::Otlp(sink)],
        BatchConfig {
            max_delay: Duration::from_millis(20),
            ..BatchConfig::default()
        },
        Duration::from_secs(3600),
    );
    run.forward.shutdown_deadline = Duration::from_millis(300);
    let daemon = Daemon::start(&rt, &source, run);
    for _ in 0..10 {
        source.write(0, Signal::Metrics, &metrics(2));
    }
    assert!(rt.block_on(receiver.wait_for_requests(1, Duration::from_secs(10))));

    let (s, took) = daemon.stop_timed(&rt);
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(took >= Duration::from_millis(300), "shutdown took {took:?}");
    let sink = &s.sinks[0];
    assert_eq!(sink.items_sent, 0);
    assert_eq!(sink.dropped("shutdown"), 20, "{sink:?}");
    assert_eq!(items(&s, Signal::Metrics), 20);
}

#[test]
fn self_metrics_go_out_through_the_sinks() {
    let rt = tests::runtime();
    let path = scratch_file("self");
    let source = MemorySource::new(1000);
    let mut run = to_file(&path);
    run.stats_interval = Duration::from_millis(50);
    run.self_metrics = true;
    let daemon = Daemon::start(&rt, &source, run);
    for _ in 0..7 {
        source.write(1, Signal::Metrics, &metrics(1));
    }
    let about_the_decoder = |line: &str| line.contains("\"ue_decoder.events\"");
    eventually("a self-metrics line counting the 7 events", || {
        std::fs::read_to_string(&path).is_ok_and(|text| {
            text.lines()
                .any(|l| about_the_decoder(l) && l.contains(r#""asInt":"7""#))
        })
    });
    let (s, _) = daemon.stop_timed(&rt);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| about_the_decoder(l)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["signal"], "metrics");
    let resource = &v["request"]["resourceMetrics"][0]["resource"]["attributes"][0];
    assert_eq!(resource["value"]["stringValue"], "ue-decoder");
    // The decoder's own metrics are sent, never decoded from the source.
    assert_eq!(items(&s, Signal::Metrics), 7);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn a_slow_sink_drops_its_own_overflow_while_reading_and_the_other_sink_keep_up() {
    let rt = tests::runtime();
    let slow = rt.block_on(Receiver::start()).unwrap();
    slow.set_default(Signal::Metrics, Respond::Ok.after(Duration::from_secs(60)));
    let path = scratch_file("slow");
    let source = MemorySource::new(1000);
    let batch = BatchConfig {
        max_items: 10,
        ..no_timed_batches()
    };
    let one_batch =
        ue_decoder::Batch::new(ue_decoder::Request::decode(Signal::Metrics, &metrics(10)).unwrap())
            .bytes;
    let mut run = config(
        vec![
            SinkConfig::Otlp(OtlpConfig {
                endpoint: slow.http_endpoint(),
                timeout: Duration::from_secs(120),
                ..OtlpConfig::default()
            }),
            SinkConfig::File(path.clone()),
        ],
        batch,
        Duration::from_secs(3600),
    );
    // Room for two batches in each sink's queue.
    run.forward.queue_bytes = one_batch * 2;
    run.forward.shutdown_deadline = Duration::from_millis(200);
    let daemon = Daemon::start(&rt, &source, run);

    for round in 1..=20 {
        for _ in 0..10 {
            assert!(source.write(0, Signal::Metrics, &metrics(1)));
        }
        // In step with the fast sink, so its queue never fills whatever the machine's load;
        // the slow one, stuck on its first request, falls behind all the same.
        eventually("the fast sink to keep up", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == round)
        });
    }
    let (s, _) = daemon.stop_timed(&rt);
    assert_eq!(s.kernel_lost_total(), 0, "reading was never held up");
    assert_eq!(items(&s, Signal::Metrics), 200);
    let (slow_sink, fast_sink) = (&s.sinks[0], &s.sinks[1]);
    assert_eq!((fast_sink.items_sent, fast_sink.dropped_total()), (200, 0));
    assert!(slow_sink.dropped("queue_full") >= 150, "{slow_sink:?}");
    assert_eq!(
        slow_sink.items_sent + slow_sink.dropped_total(),
        200,
        "{slow_sink:?}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The value of the sample `series` (name and labels, as written) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_admin_endpoint_serves_counters_health_and_readiness() {
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let source = MemorySource::new(1000);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut run = config(
        vec![SinkConfig::Otlp(OtlpConfig {
            endpoint: receiver.http_endpoint(),
            retry: RetryConfig {
                initial_interval: Duration::from_millis(50),
                max_interval: Duration::from_millis(100),
                max_elapsed: Duration::from_secs(3600),
                ..RetryConfig::default()
            },
            ..OtlpConfig::default()
        })],
        BatchConfig {
            max_delay: Duration::from_millis(20),
            ..BatchConfig::default()
        },
        Duration::from_secs(3600),
    );
    run.admin = Some(ue_decoder::AdminConfig {
        addr,
        unhealthy_after: Duration::from_secs(1),
    });
    let daemon = Daemon::start(&rt, &source, run);
    eventually("/readyz answers 200", || {
        std::net::TcpStream::connect(addr).is_ok() && http_get(addr, "/readyz").0 == 200
    });
    assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_owned()));

    for _ in 0..5 {
        assert!(source.write(0, Signal::Metrics, &metrics(3)));
    }
    let sink = format!("otlp-http {}", receiver.http_endpoint());
    let sent = format!("ue_decoder_sink_items_sent_total{{sink=\"{sink}\"}}");
    eventually("/metrics counts the 15 points read and sent", || {
        let text = http_get(addr, "/metrics").1;
        sample(&text, "ue_decoder_items_total{signal=\"metrics\"}") == Some(15.0)
            && sample(&text, &sent) == Some(15.0)
    });
    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, "ue_decoder_events_total{signal=\"metrics\"}"),
        Some(5.0)
    );
    assert!(text.contains("# TYPE ue_decoder_sink_dropped_items_total counter"));

    // The collector fails every attempt: unhealthy once that lasts past the threshold,
    // healthy again after a success.
    receiver.set_default(Signal::Metrics, Respond::status(503));
    assert!(source.write(0, Signal::Metrics, &metrics(1)));
    eventually("/healthz fails, naming the sink", || {
        let (status, body) = http_get(addr, "/healthz");
        status == 503 && body.contains(&sink) && body.contains("503")
    });
    let failing = sample(
        &http_get(addr, "/metrics").1,
        &format!("ue_decoder_sink_failing_seconds{{sink=\"{sink}\"}}"),
    )
    .unwrap();
    assert!(failing > 1.0, "{failing}");
    receiver.set_default(Signal::Metrics, Respond::Ok);
    eventually("/healthz recovers once the retry goes through", || {
        http_get(addr, "/healthz").0 == 200
    });
    assert_eq!(http_get(addr, "/nope").0, 404);

    let (s, _) = daemon.stop_timed(&rt);
    assert_eq!(s.sinks[0].items_sent, 16);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the endpoint closes with the daemon"
    );
}

/// Sets every resource's service name and every scope's name in an encoded request.
fn relabel(signal: Signal, request: &[u8], service: &str, scope: &str) -> Vec<u8> {
    relabel_resource(signal, request, otlp::resource(service), scope)
}

/// A request as the daemon forwards it from the writer `pid`: `relabel`'s resource with
/// the writer's attributes after the payload's (no cgroup id: the in-memory source has
/// none).
fn as_forwarded(signal: Signal, request: &[u8], service: &str, scope: &str, pid: u32) -> Vec<u8> {
    let mut resource = otlp::resource(service).unwrap();
    for key in ["process.pid", ue_decoder::WRITER_PID] {
        resource.attributes.push(otlp::int(key, i64::from(pid)));
    }
    relabel_resource(signal, request, Some(resource), scope)
}

/// Sets every resource and every scope's name in an encoded request.
fn relabel_resource(
    signal: Signal,
    request: &[u8],
    resource: Option<ue_decoder::proto::resource::v1::Resource>,
    scope: &str,
) -> Vec<u8> {
    use ue_decoder::proto::collector::{logs, metrics, trace};
    let scope = Some(ue_decoder::proto::common::v1::InstrumentationScope {
        name: scope.into(),
        version: "1.0".into(),
        ..Default::default()
    });
    match signal {
        Signal::Metrics => {
            let mut r = metrics::v1::ExportMetricsServiceRequest::decode(request).unwrap();
            for rm in &mut r.resource_metrics {
                rm.resource.clone_from(&resource);
                for sm in &mut rm.scope_metrics {
                    sm.scope.clone_from(&scope);
                }
            }
            r.encode_to_vec()
        }
        Signal::Traces => {
            let mut r = trace::v1::ExportTraceServiceRequest::decode(request).unwrap();
            for rs in &mut r.resource_spans {
                rs.resource.clone_from(&resource);
                for ss in &mut rs.scope_spans {
                    ss.scope.clone_from(&scope);
                }
            }
            r.encode_to_vec()
        }
        Signal::Logs => {
            let mut r = logs::v1::ExportLogsServiceRequest::decode(request).unwrap();
            for rl in &mut r.resource_logs {
                rl.resource.clone_from(&resource);
                for sl in &mut rl.scope_logs {
                    sl.scope.clone_from(&scope);
                }
            }
            r.encode_to_vec()
        }
    }
}

/// Every item of `signal` in these requests, flattened with its resource and scope, sorted.
fn flat(signal: Signal, requests: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    use ue_decoder::proto::collector::{logs, metrics, trace};
    let mut out: Vec<Vec<u8>> = requests
        .into_iter()
        .flat_map(|r| match signal {
            Signal::Metrics => otlp::metric_points(
                &metrics::v1::ExportMetricsServiceRequest::decode(&r[..]).unwrap(),
            ),
            Signal::Traces => {
                otlp::spans(&trace::v1::ExportTraceServiceRequest::decode(&r[..]).unwrap())
            }
            Signal::Logs => {
                otlp::log_records(&logs::v1::ExportLogsServiceRequest::decode(&r[..]).unwrap())
            }
        })
        .collect();
    out.sort();
    out
}

/// The fast path (events checked, their bytes appended into batches, compressed once for
/// all sinks, several requests in flight, acknowledged in any order) delivers exactly what
/// was written: every data point, span and log record, with its own resource (and the
/// writer's pid added to it) and scope, once, to each sink, over HTTP and gRPC, compressed
/// or not.
#[test]
fn the_receiver_gets_exactly_what_the_applications_wrote() {
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let source = MemorySource::new(100_000);
    let sink = |protocol, endpoint: String, compression| {
        SinkConfig::Otlp(OtlpConfig {
            protocol,
            endpoint,
            compression,
            max_inflight: 4,
            ..OtlpConfig::default()
        })
    };
    use ue_decoder::{Compression, Protocol};
    let sinks = vec![
        sink(
            Protocol::HttpProtobuf,
            receiver.http_endpoint(),
            Compression::Zstd,
        ),
        sink(Protocol::Grpc, receiver.grpc_endpoint(), Compression::Zstd),
        sink(
            Protocol::HttpProtobuf,
            receiver.http_endpoint(),
            Compression::Gzip,
        ),
        sink(Protocol::Grpc, receiver.grpc_endpoint(), Compression::None),
    ];
    let sink_count = sinks.len();
    // Small batches: many of them, in flight together, arriving in any order.
    let batch = BatchConfig {
        max_items: 50,
        ..no_timed_batches()
    };
    let daemon = Daemon::start(
        &rt,
        &source,
        config(sinks, batch, Duration::from_secs(3600)),
    );
    // What the daemon forwards: each request with its writer's pid on every resource.
    let mut written: Vec<(Signal, Vec<u8>)> = Vec::new();
    for i in 0..300usize {
        let service = ["checkout", "cart", "web"][i % 3];
        let scope = ["http", "db"][i % 2];
        let (signal, request) = match i % 3 {
            0 => (Signal::Metrics, metrics(1 + i % 7)),
            1 => (
                Signal::Traces,
                otlp::traces_request(&format!("op-{i}"), 1 + i % 5).encode_to_vec(),
            ),
            _ => (
                Signal::Logs,
                otlp::logs_request(&format!("l{i}"), 1 + i % 4).encode_to_vec(),
            ),
        };
        assert!(source.write(
            (i % 4) as u32,
            signal,
            &relabel(signal, &request, service, scope)
        ));
        let pid = std::process::id();
        written.push((signal, as_forwarded(signal, &request, service, scope, pid)));
    }
    let (s, _) = daemon.stop_timed(&rt);
    assert_eq!(s.kernel_lost_total(), 0);
    for sink in &s.sinks {
        assert_eq!(sink.dropped_total(), 0, "{sink}");
    }
    let received = receiver.received();
    for signal in Signal::ALL {
        let wrote = flat(
            signal,
            written
                .iter()
                .filter(|(s, _)| *s == signal)
                .map(|(_, r)| r.clone()),
        );
        assert!(!wrote.is_empty());
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for _ in 0..sink_count {
            expected.extend(wrote.iter().cloned());
        }
        expected.sort();
        let got = flat(
            signal,
            received
                .iter()
                .filter(|r| r.signal() == signal)
                .map(|r| r.request.encode_to_vec()),
        );
        assert_eq!(got.len(), expected.len(), "{signal:?}: items received");
        assert!(
            got == expected,
            "{signal:?}: what arrived differs from what was written"
        );
    }
    // Each sink's encoding came through as configured.
    let encodings: std::collections::BTreeSet<(String, Option<String>)> = received
        .iter()
        .map(|r| {
            (
                format!("{:?}", r.protocol),
                r.header("content-encoding")
                    .or(r.header("grpc-encoding"))
                    .map(str::to_owned),
            )
        })
        .collect();
    assert!(encodings.len() >= 3, "{encodings:?}");
}
