//! The sinks against a real OTLP receiver on 127.0.0.1: delivery, retries as the OTLP
//! specification has them, drops and their reasons, queues that keep a slow sink from
//! holding up a fast one, and shutdown. Retry intervals are milliseconds so every test
//! ends in a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tests::otlp;
use tests::receiver::{Protocol, Received, Receiver, Respond};
use tonic::Code;
use ue_decoder::{
    Batch, Compression, OtlpConfig, Protocol as Transport, Request, RetryConfig, Signal,
    SinkConfig, SinkSet, SinkSnapshot,
};

/// Waits this long at most for anything the tests expect to happen.
const PATIENCE: Duration = Duration::from_secs(5);

/// Retries in milliseconds rather than seconds, without jitter so gaps are predictable.
fn fast_retry() -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(50),
        max_interval: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(10),
        multiplier: 2.0,
        randomization: 0.0,
    }
}

fn http(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        protocol: Transport::HttpProtobuf,
        endpoint,
        headers: Vec::new(),
        timeout: Duration::from_secs(2),
        compression: Compression::None,
        retry: fast_retry(),
        // One at a time: the tests script the receiver's answers in order.
        max_inflight: 1,
        ..OtlpConfig::default()
    }
}

fn grpc(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        protocol: Transport::Grpc,
        endpoint,
        headers: Vec::new(),
        timeout: Duration::from_secs(2),
        compression: Compression::None,
        retry: fast_retry(),
        // One at a time: the tests script the receiver's answers in order.
        max_inflight: 1,
        ..OtlpConfig::default()
    }
}

fn start(configs: Vec<SinkConfig>, queue_bytes: usize) -> SinkSet {
    SinkSet::start(configs, queue_bytes, &tokio::runtime::Handle::current()).unwrap()
}

/// `spans` spans named `<tag>-<i>`, with distinct ids.
fn traces(tag: &str, spans: usize) -> Arc<Batch> {
    Arc::new(Batch::new(Request::Traces(otlp::traces_request(
        tag, spans,
    ))))
}

/// One counter named `<tag>` with `points` data points.
fn metrics(tag: &str, points: usize) -> Arc<Batch> {
    Arc::new(Batch::new(Request::Metrics(otlp::metrics_request(
        tag, points,
    ))))
}

/// `records` log records whose bodies are `<tag>-<i>`.
fn logs(tag: &str, records: usize) -> Arc<Batch> {
    Arc::new(Batch::new(Request::Logs(otlp::logs_request(tag, records))))
}

/// Polls the set until `done` holds for sink `index`, or panics after [`PATIENCE`].
async fn wait_for(
    set: &SinkSet,
    index: usize,
    done: impl Fn(&SinkSnapshot) -> bool,
) -> SinkSnapshot {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snap = set.snapshot().swap_remove(index);
        if done(&snap) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting; sink is at {snap:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gaps(received: &[Received]) -> Vec<Duration> {
    received.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_delivers_batches_with_headers_plain_gzip_and_zstd() {
    let receiver = Receiver::start().await.unwrap();
    let plain = OtlpConfig {
        headers: vec![("x-tenant".into(), "plain".into())],
        ..http(receiver.http_endpoint())
    };
    let gzip = OtlpConfig {
        headers: vec![("Authorization".into(), "Bearer gz".into())],
        compression: Compression::Gzip,
        ..http(receiver.http_endpoint())
    };
    let zstd = OtlpConfig {
        headers: vec![("x-tenant".into(), "zstd".into())],
        compression: Compression::Zstd,
        ..http(receiver.http_endpoint())
    };
    let set = start(
        vec![
            SinkConfig::Otlp(plain),
            SinkConfig::Otlp(gzip),
            SinkConfig::Otlp(zstd),
        ],
        1 << 20,
    );
    let (t, m) = (traces("http", 3), metrics("http", 2));
    set.submit(Arc::clone(&t));
    set.submit(Arc::clone(&m));
    for i in 0..3 {
        let s = wait_for(&set, i, |s| s.batches_sent == 2).await;
        assert_eq!(s.items_sent, 5);
        assert_eq!(s.bytes_sent, (t.bytes + m.bytes) as u64);
        assert_eq!((s.retries, s.dropped_total(), s.queue_bytes), (0, 0, 0));
        assert_eq!(s.last_error, None);
    }
    assert!(
        set.snapshot()[0]
            .name
            .starts_with("otlp-http http://127.0.0.1:")
    );

    let received = receiver.received();
    assert_eq!(received.len(), 6);
    for r in &received {
        assert_eq!(r.protocol, Protocol::Http);
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        let sent = if r.signal() == Signal::Traces { &t } else { &m };
        assert_eq!(
            &r.request,
            sent.request().unwrap(),
            "decodes to exactly what was sent"
        );
        let encoding = r.header("content-encoding");
        match (r.header("x-tenant"), r.header("authorization")) {
            (Some("plain"), None) => assert_eq!(encoding, None),
            (Some("zstd"), None) => assert_eq!(encoding, Some("zstd")),
            (None, Some("Bearer gz")) => assert_eq!(encoding, Some("gzip")),
            other => panic!("headers mixed up: {other:?}"),
        }
    }
    assert_eq!(
        received
            .iter()
            .filter(|r| r.header("content-encoding").is_some())
            .count(),
        4
    );
    assert_eq!(receiver.accepted_items(Signal::Traces), 9);
    assert_eq!(receiver.accepted_items(Signal::Metrics), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_delivers_batches_with_metadata_plain_gzip_and_zstd() {
    let receiver = Receiver::start().await.unwrap();
    let plain = OtlpConfig {
        headers: vec![("X-Tenant".into(), "plain".into())],
        ..grpc(receiver.grpc_endpoint())
    };
    let gzip = OtlpConfig {
        headers: vec![("x-tenant".into(), "gz".into())],
        compression: Compression::Gzip,
        ..grpc(receiver.grpc_endpoint())
    };
    let zstd = OtlpConfig {
        headers: vec![("x-tenant".into(), "zstd".into())],
        compression: Compression::Zstd,
        ..grpc(receiver.grpc_endpoint())
    };
    let set = start(
        vec![
            SinkConfig::Otlp(plain),
            SinkConfig::Otlp(gzip),
            SinkConfig::Otlp(zstd),
        ],
        1 << 20,
    );
    let (t, m) = (traces("grpc", 4), metrics("grpc", 3));
    set.submit(Arc::clone(&t));
    set.submit(Arc::clone(&m));
    for i in 0..3 {
        let s = wait_for(&set, i, |s| s.batches_sent == 2).await;
        assert_eq!((s.items_sent, s.retries, s.dropped_total()), (7, 0, 0));
    }
    let received = receiver.received();
    assert_eq!(received.len(), 6);
    for r in &received {
        assert_eq!(r.protocol, Protocol::Grpc);
        let sent = if r.signal() == Signal::Traces { &t } else { &m };
        assert_eq!(&r.request, sent.request().unwrap());
        match r.header("x-tenant") {
            Some("plain") => assert_eq!(r.header("grpc-encoding"), None),
            Some("gz") => assert_eq!(r.header("grpc-encoding"), Some("gzip")),
            Some("zstd") => assert_eq!(r.header("grpc-encoding"), Some("zstd")),
            other => panic!("metadata lost: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_with_retry_after_waits_that_long_then_delivers_once() {
    let receiver = Receiver::start().await.unwrap();
    receiver.script(Signal::Traces, [Respond::status(503).retry_after(1)]);
    let set = start(
        vec![SinkConfig::Otlp(http(receiver.http_endpoint()))],
        1 << 20,
    );
    let batch = traces("ra", 2);
    set.submit(Arc::clone(&batch));
    let s = wait_for(&set, 0, |s| s.batches_sent == 1).await;
    assert_eq!((s.retries, s.items_sent, s.dropped_total()), (1, 2, 0));
    assert!(s.last_error.as_deref().unwrap().contains("503"), "{s:?}");

    // Nothing more arrives: delivered exactly once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert!(!received[0].accepted() && received[1].accepted());
    assert_eq!(&received[1].request, batch.request().unwrap());
    let gap = gaps(&received)[0];
    // The backoff alone would have waited 50 ms.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert!(gap < Duration::from_millis(1800), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retry_after_as_a_date_is_honoured() {
    let receiver = Receiver::start().await.unwrap();
    let at = SystemTime::now() + Duration::from_millis(2500);
    receiver.script(Signal::Metrics, [Respond::status(429).retry_after_date(at)]);
    let set = start(
        vec![SinkConfig::Otlp(http(receiver.http_endpoint()))],
        1 << 20,
    );
    set.submit(metrics("date", 1));
    let s = wait_for(&set, 0, |s| s.batches_sent == 1).await;
    assert_eq!(s.retries, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    // HTTP-dates have whole seconds: the retry comes at the date sent, `at` cut down.
    let whole = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let sent_date = SystemTime::UNIX_EPOCH + Duration::from_secs(whole);
    assert!(
        received[1].wall + Duration::from_millis(20) >= sent_date,
        "retried before the date"
    );
    let gap = gaps(&received)[0];
    // The backoff alone would have waited 50 ms.
    assert!(gap >= Duration::from_millis(500), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_without_retry_after_backs_off_exponentially() {
    let receiver = Receiver::start().await.unwrap();
    receiver.script(
        Signal::Traces,
        [
            Respond::status(429),
            Respond::status(429),
            Respond::status(502),
        ],
    );
    let config = OtlpConfig {
        retry: RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(1),
            ..fast_retry()
        },
        ..http(receiver.http_endpoint())
    };
    let set = start(vec![SinkConfig::Otlp(config)], 1 << 20);
    set.submit(traces("backoff", 1));
    let s = wait_for(&set, 0, |s| s.batches_sent == 1).await;
    assert_eq!(s.retries, 3);
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(received.iter().filter(|r| r.accepted()).count(), 1);
    let gaps = gaps(&received);
    // 100, 200, 400 ms without jitter; the network adds, never subtracts.
    for (gap, want) in gaps.iter().zip([100, 200, 400]) {
        assert!(
            *gap >= Duration::from_millis(want - 5) && *gap < Duration::from_millis(want + 250),
            "gaps {gaps:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_is_dropped_at_once_as_permanent() {
    let receiver = Receiver::start().await.unwrap();
    receiver.script(
        Signal::Traces,
        [Respond::status(400).message("span 3 has no trace id")],
    );
    let set = start(
        vec![SinkConfig::Otlp(http(receiver.http_endpoint()))],
        1 << 20,
    );
    set.submit(traces("bad", 4));
    let s = wait_for(&set, 0, |s| s.dropped("permanent_error") == 4).await;
    assert_eq!(s.dropped_batches["permanent_error"], 1);
    assert_eq!((s.retries, s.batches_sent), (0, 0));
    let error = s.last_error.unwrap();
    assert!(
        error.contains("400") && error.contains("span 3 has no trace id"),
        "the google.rpc.Status message is kept: {error}"
    );

    // The sink goes on with the next batch.
    set.submit(traces("good", 1));
    let s = wait_for(&set, 0, |s| s.batches_sent == 1).await;
    assert_eq!(s.retries, 0);
    assert_eq!(receiver.received().len(), 2, "the 400 was not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_is_counted_and_not_retried() {
    let receiver = Receiver::start().await.unwrap();
    receiver.script(Signal::Traces, [Respond::partial(2, "2 spans too old")]);
    receiver.script(Signal::Metrics, [Respond::partial(1, "NaN point")]);
    let over_http = start(
        vec![SinkConfig::Otlp(http(receiver.http_endpoint()))],
        1 << 20,
    );
    let over_grpc = start(
        vec![SinkConfig::Otlp(grpc(receiver.grpc_endpoint()))],
        1 << 20,
    );
    over_http.submit(traces("partial", 5));
    over_grpc.submit(metrics("partial", 3));

    let s = wait_for(&over_http, 0, |s| s.batches_sent == 1).await;
    assert_eq!((s.items_sent, s.rejected_items, s.retries), (3, 2, 0));
    assert!(s.last_error.unwrap().contains("2 spans too old"));
    let s = wait_for(&over_grpc, 0, |s| s.batches_sent == 1).await;
    assert_eq!((s.items_sent, s.rejected_items, s.retries), (2, 1, 0));
    assert!(s.last_error.unwrap().contains("NaN point"));

    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one request each, none retried");
    assert_eq!(
        received
            .iter()
            .filter(|r| r.protocol == Protocol::Grpc)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retries_only_what_the_spec_says() {
    let receiver = Receiver::start().await.unwrap();
    let set = start(
        vec![SinkConfig::Otlp(grpc(receiver.grpc_endpoint()))],
        1 << 20,
    );

    // UNAVAILABLE: retried with backoff.
    receiver.script(Signal::Traces, [Respond::grpc(Code::Unavailable)]);
    set.submit(traces("unavailable", 2));
    let s = wait_for(&set, 0, |s| s.batches_sent == 1).await;
    assert_eq!(s.retries, 1);
    assert!(s.last_error.unwrap().contains("Unavailable"));

    // RESOURCE_EXHAUSTED without RetryInfo: permanent.
    receiver.script(Signal::Traces, [Respond::grpc(Code::ResourceExhausted)]);
    set.submit(traces("exhausted", 3));
    let s = wait_for(&set, 0, |s| s.dropped("permanent_error") == 3).await;
    assert_eq!(s.retries, 1, "not retried");

    // RESOURCE_EXHAUSTED with RetryInfo: retried after the given delay.
    receiver.script(
        Signal::Traces,
        [Respond::grpc(Code::ResourceExhausted).retry_info(Duration::from_millis(700))],
    );
    set.submit(traces("retry-info", 1));
    let s = wait_for(&set, 0, |s| s.batches_sent == 2).await;
    assert_eq!(s.retries, 2);

    // INVALID_ARGUMENT: permanent.
    receiver.script(
        Signal::Traces,
        [Respond::grpc(Code::InvalidArgument).message("bad")],
    );
    set.submit(traces("invalid", 1));
    let s = wait_for(&set, 0, |s| s.dropped("permanent_error") == 4).await;
    assert!(s.last_error.unwrap().contains("InvalidArgument"));

    let received = receiver.received();
    assert_eq!(received.len(), 6);
    let names: Vec<_> = received
        .iter()
        .map(|r| match &r.request {
            Request::Traces(t) => t.resource_spans[0].scope_spans[0].spans[0].name.clone(),
            Request::Metrics(_) | Request::Logs(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "unavailable-0",
            "unavailable-0",
            "exhausted-0",
            "retry-info-0",
            "retry-info-0",
            "invalid-0"
        ]
    );
    let gap = received[4].at - received[3].at;
    assert!(
        gap >= Duration::from_millis(680),
        "RetryInfo delay honoured: {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_is_retried_until_it_is_back() {
    let mut receiver = Receiver::start().await.unwrap();
    let set = start(
        vec![
            SinkConfig::Otlp(http(receiver.http_endpoint())),
            SinkConfig::Otlp(grpc(receiver.grpc_endpoint())),
        ],
        1 << 20,
    );
    // Connections are open and pooled before the outage.
    set.submit(metrics("before", 1));
    for i in 0..2 {
        wait_for(&set, i, |s| s.batches_sent == 1).await;
    }

    receiver.stop().await;
    let during = traces("during", 2);
    set.submit(Arc::clone(&during));
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.retries >= 2).await;
        assert_eq!(s.batches_sent, 1);
        assert!(s.last_error.is_some());
    }
    receiver.restart().await.unwrap();
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.batches_sent == 2).await;
        assert_eq!(s.dropped_total(), 0);
    }

    let received = receiver.received();
    assert_eq!(received.len(), 4, "one request per sink before, one after");
    let after: Vec<_> = received
        .iter()
        .filter(|r| r.signal() == Signal::Traces)
        .collect();
    assert_eq!(after.len(), 2);
    assert!(
        after
            .iter()
            .all(|r| &r.request == during.request().unwrap())
    );
    assert!(after.iter().any(|r| r.protocol == Protocol::Http));
    assert!(after.iter().any(|r| r.protocol == Protocol::Grpc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_elapsed_and_drop_the_batch() {
    let receiver = Receiver::start().await.unwrap();
    receiver.set_default(Signal::Traces, Respond::status(503));
    let config = OtlpConfig {
        retry: RetryConfig {
            max_elapsed: Duration::from_millis(700),
            ..fast_retry()
        },
        ..http(receiver.http_endpoint())
    };
    let started = Instant::now();
    let set = start(vec![SinkConfig::Otlp(config)], 1 << 20);
    set.submit(traces("doomed", 3));
    let s = wait_for(&set, 0, |s| s.dropped("retries_exhausted") == 3).await;
    let took = started.elapsed();
    assert_eq!(s.dropped_batches["retries_exhausted"], 1);
    assert_eq!(s.batches_sent, 0);
    assert!(s.last_error.unwrap().contains("503"));
    // Waits of 50, 100, 200 and 200 ms fit in 700 ms; a fifth of 200 ms would not.
    let received = receiver.received();
    assert_eq!(received.len(), 5, "first attempt and four retries");
    assert_eq!(s.retries, 4);
    assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_drops_on_a_full_queue_while_a_fast_one_gets_everything() {
    let slow = Receiver::start().await.unwrap();
    slow.set_default(Signal::Traces, Respond::Ok.after(Duration::from_secs(2)));
    let fast = Receiver::start().await.unwrap();
    let batches: Vec<_> = (0..20).map(|i| traces(&format!("b{i:02}"), 1)).collect();
    // Room for three batches queued.
    let queue_bytes = batches.iter().map(|b| b.bytes).max().unwrap() * 3;
    let set = start(
        vec![
            SinkConfig::Otlp(http(slow.http_endpoint())),
            SinkConfig::Otlp(grpc(fast.grpc_endpoint())),
        ],
        queue_bytes,
    );

    let mut slowest_submit = Duration::ZERO;
    for (i, b) in batches.iter().enumerate() {
        let submitting = Instant::now();
        set.submit(Arc::clone(b));
        slowest_submit = slowest_submit.max(submitting.elapsed());
        // In step with the fast sink, so its queue never fills whatever the machine's load;
        // the slow one, stuck on its first request, falls behind all the same.
        wait_for(&set, 1, |s| s.batches_sent == i as u64 + 1).await;
    }
    assert!(
        slowest_submit < Duration::from_millis(20),
        "submit waited {slowest_submit:?}"
    );

    let f = set.snapshot().swap_remove(1);
    assert_eq!((f.batches_sent, f.dropped_total()), (20, 0));
    let names: Vec<_> = fast
        .received()
        .iter()
        .map(|r| match &r.request {
            Request::Traces(t) => t.resource_spans[0].scope_spans[0].spans[0].name.clone(),
            Request::Metrics(_) | Request::Logs(_) => unreachable!(),
        })
        .collect();
    let want: Vec<_> = (0..20).map(|i| format!("b{i:02}-0")).collect();
    assert_eq!(names, want, "every batch, in order");

    let s = set.snapshot().swap_remove(0);
    assert_eq!(s.batches_sent, 0, "still on its first request");
    let full = s.dropped_batches.get("queue_full").copied().unwrap_or(0);
    // One in flight, three queued, the rest dropped.
    assert_eq!(full, 16, "{s:#?}");
    assert_eq!(s.dropped("queue_full"), 16);
    assert!(s.queue_bytes <= queue_bytes as u64);

    let snaps = set.shutdown(Duration::ZERO).await;
    let s = &snaps[0];
    assert_eq!(s.dropped_batches["shutdown"], 4);
    assert_eq!(s.batches_sent + s.dropped_batches.values().sum::<u64>(), 20);
    assert_eq!(slow.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_everything_it_has_time_for() {
    let receiver = Receiver::start().await.unwrap();
    let set = start(
        vec![
            SinkConfig::Otlp(http(receiver.http_endpoint())),
            SinkConfig::Otlp(grpc(receiver.grpc_endpoint())),
        ],
        1 << 20,
    );
    for i in 0..5 {
        set.submit(metrics(&format!("m{i}"), 2));
    }
    let started = Instant::now();
    let snaps = set.shutdown(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returned once flushed"
    );
    for s in &snaps {
        assert_eq!(
            (s.batches_sent, s.items_sent, s.dropped_total()),
            (5, 10, 0),
            "{s:?}"
        );
    }
    assert_eq!(receiver.accepted_items(Signal::Metrics), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_counts_what_is_left_as_shutdown() {
    let receiver = Receiver::start().await.unwrap();
    receiver.set_default(
        Signal::Traces,
        Respond::Ok.after(Duration::from_millis(400)),
    );
    let set = start(
        vec![SinkConfig::Otlp(http(receiver.http_endpoint()))],
        1 << 20,
    );
    let batches: Vec<_> = (0..10).map(|i| traces(&format!("s{i}"), 3)).collect();
    for b in &batches {
        set.submit(Arc::clone(b));
    }
    let started = Instant::now();
    let snaps = set.shutdown(Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
        "shutdown took {took:?}"
    );
    let s = &snaps[0];
    // 400 ms a request: two done within the second, the third cut off.
    assert!((1..=2).contains(&s.batches_sent), "{s:#?}");
    let cut = s.dropped_batches["shutdown"];
    assert_eq!(s.batches_sent + cut, 10);
    assert_eq!(s.dropped("shutdown"), cut * 3);
    assert_eq!(s.dropped_total(), cut * 3, "no other reason");
    assert_eq!(s.queue_bytes, 0);
    // The receiver may have taken the cut-off request too.
    let accepted = receiver.received().len() as u64;
    assert!(accepted == s.batches_sent || accepted == s.batches_sent + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_stdout_sinks_write_otlp_json_lines() {
    let dir = std::env::temp_dir().join(format!("sinks-test-{}", std::process::id()));
    let path = dir.join("out/requests.jsonl");
    let _ = std::fs::remove_dir_all(&dir);
    let set = start(
        vec![SinkConfig::File(path.clone()), SinkConfig::Stdout],
        1 << 20,
    );
    set.submit(traces("json", 2));
    set.submit(metrics("json", 1));
    let snaps = set.shutdown(Duration::from_secs(5)).await;
    for s in &snaps {
        assert_eq!(
            (s.batches_sent, s.items_sent, s.dropped_total()),
            (2, 3, 0),
            "{s:?}"
        );
    }
    assert_eq!(snaps[1].name, "stdout");

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["signal"], "traces");
    let span = &lines[0]["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
    assert_eq!(span["traceId"], "a1".repeat(16), "ids in hex");
    assert_eq!(span["spanId"], "0202020202020202");
    assert_eq!(
        span["startTimeUnixNano"], "1700000000000000001",
        "int64 as a string"
    );
    assert_eq!(lines[1]["signal"], "metrics");
    let point = &lines[1]["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]
        ["dataPoints"][0];
    assert_eq!(point["asInt"], "0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receiver_binary_prints_each_request_and_dumps_on_exit() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;

    /// Kills the receiver if the test fails before it exits by itself.
    struct Reap(Arc<Mutex<Child>>);
    impl Drop for Reap {
        fn drop(&mut self) {
            let mut child = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    let dump = std::env::temp_dir().join(format!("otlp-receiver-dump-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_otlp-receiver"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--exit-after-items",
            "5",
        ])
        .arg("--dump")
        .arg(&dump)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Arc::new(Mutex::new(child));
    let _reap = Reap(Arc::clone(&child));
    let listening = lines.next().unwrap().unwrap();
    let addr = |key: &str| {
        let word = listening
            .split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap();
        format!("http://{word}")
    };
    let set = start(
        vec![
            SinkConfig::Otlp(http(addr("http="))),
            SinkConfig::Otlp(grpc(addr("grpc="))),
        ],
        1 << 20,
    );
    // 2 spans and 1 point per sink: 6 items once both have sent, past the 5 to exit at.
    set.submit(traces("bin", 2));
    for i in 0..2 {
        wait_for(&set, i, |s| s.batches_sent == 1).await;
    }
    set.submit(metrics("bin", 1));
    let rest = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        // The end of its output is the receiver exiting.
        let status = child.lock().unwrap().wait().unwrap();
        (rest, status)
    });
    let (rest, status) = tokio::time::timeout(PATIENCE, rest).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let requests: Vec<_> = rest.iter().filter(|l| !l.starts_with("totals")).collect();
    assert!(requests.len() >= 3, "{rest:?}");
    for protocol in ["http", "grpc"] {
        let line = format!("{protocol} traces items=2 service.name=sinks-test answer=ok");
        assert!(rest.contains(&line), "no {line:?} in {rest:?}");
    }
    let totals = rest.last().unwrap();
    assert!(
        totals.starts_with("totals ") && totals.contains("spans=4"),
        "{totals}"
    );

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    assert_eq!(json["traces"].as_array().unwrap().len(), 2);
    let span = &json["traces"][0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "a0".repeat(16));
    assert_eq!(span["name"], "bin-0");
    std::fs::remove_file(&dump).unwrap();
    drop(set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_go_to_v1_logs_and_the_grpc_logs_service() {
    let receiver = Receiver::start().await.unwrap();
    receiver.script(
        Signal::Logs,
        [Respond::Ok, Respond::partial(1, "1 record too old")],
    );
    let set = start(
        vec![
            SinkConfig::Otlp(OtlpConfig {
                compression: Compression::Gzip,
                ..http(receiver.http_endpoint())
            }),
            SinkConfig::Otlp(grpc(receiver.grpc_endpoint())),
        ],
        1 << 20,
    );
    let batch = logs("logs", 4);
    set.submit(Arc::clone(&batch));
    for i in 0..2 {
        let s = wait_for(&set, i, |s| s.batches_sent == 1).await;
        assert_eq!(s.items_sent + s.rejected_items, 4);
        assert_eq!((s.retries, s.dropped_total()), (0, 0));
    }
    let snapshots = set.snapshot();
    assert_eq!(
        snapshots.iter().map(|s| s.rejected_items).sum::<u64>(),
        1,
        "the partial success of one of them is counted"
    );

    let received = receiver.received_of(Signal::Logs);
    assert_eq!(received.len(), 2);
    let mut protocols: Vec<_> = received.iter().map(|r| r.protocol).collect();
    protocols.sort_by_key(|p| *p == Protocol::Grpc);
    assert_eq!(protocols, [Protocol::Http, Protocol::Grpc]);
    for r in &received {
        assert_eq!(
            &r.request,
            batch.request().unwrap(),
            "decodes to exactly what was sent"
        );
        assert_eq!(r.service_name().as_deref(), Some("sinks-test"));
    }
    assert_eq!(receiver.accepted_items(Signal::Logs), 8);
    let dump = receiver.dump_json();
    assert_eq!(dump["logs"].as_array().unwrap().len(), 2);
    let record = &dump["logs"][0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][3];
    assert_eq!(record["body"]["stringValue"], "logs-3");
    assert_eq!(record["severityText"], "INFO");
}
