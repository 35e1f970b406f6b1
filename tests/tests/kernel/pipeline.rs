//! The whole pipeline through the real kernel: exporters write, `ue-decoder` reads the perf
//! rings, batches and forwards to a real OTLP receiver over HTTP and gRPC; every data point
//! and span arrives exactly once, intact, with nothing lost in the kernel.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::SpanExporter as _;
use otlp_user_events::{EventCapture, MetricsExporter, SpanExporter};
use tests::block_on;
use tests::kernel::{self, DecoderProcess};
use tests::otlp::{metric_points, spans};
use tests::receiver::{Protocol, Received, Receiver};
use tests::sdk::{full_span, provider_with, record_series};
use tests::tee::{TeeMetrics, TeeSpans};
use ue_decoder::{
    Compression, ForwardConfig, OtlpConfig, PerfSource, Protocol as Transport, ReaderConfig,
    Request, RetryConfig, RunConfig, Signal, SinkConfig, TracepointNames,
};
use ue_proto::metrics::v1::{metric::Data, number_data_point};

pub(crate) fn retry() -> RetryConfig {
    RetryConfig {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(1),
        max_elapsed: Duration::from_secs(60),
        ..RetryConfig::default()
    }
}

/// Flattened entries of the accepted requests that came in over `protocol`, sorted: a
/// multiset, since batching regroups items across events.
fn arrived(received: &[Received], protocol: Protocol, signal: Signal) -> Vec<Vec<u8>> {
    let cgroup = kernel::own_cgroup_id();
    let mut out: Vec<Vec<u8>> = received
        .iter()
        .filter(|r| r.protocol == protocol && r.accepted())
        .flat_map(|r| {
            // This process wrote them all: that, and the rest as written.
            let mut request = r.request.clone();
            kernel::strip_writer(&mut request, std::process::id(), cgroup);
            match (&request, signal) {
                (Request::Metrics(m), Signal::Metrics) => metric_points(m),
                (Request::Traces(t), Signal::Traces) => spans(t),
                _ => vec![],
            }
        })
        .collect();
    out.sort();
    out
}

/// A running decoder inside a test's runtime: its task and the sender that stops it.
pub(crate) struct Decoder {
    task: tokio::task::JoinHandle<Result<ue_decoder::Snapshot, ue_decoder::RunError>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Decoder {
    /// Starts `ue_decoder::run` on the tracepoints `names` gives `signals`; returns once it
    /// is attached to the kernel and reading (its sinks started).
    pub(crate) fn start(
        rt: &tokio::runtime::Runtime,
        names: &TracepointNames,
        signals: &[Signal],
        sinks: Vec<SinkConfig>,
    ) -> Self {
        let source = PerfSource::open(ReaderConfig::default(), names, signals)
            .expect("the decoder attaches");
        let config = RunConfig {
            forward: ForwardConfig {
                sinks: sinks.into_iter().map(Into::into).collect(),
                shutdown_deadline: Duration::from_secs(30),
                ..ForwardConfig::default()
            },
            stats_interval: Duration::from_secs(5),
            self_metrics: false,
            admin: None,
            writer_identity: true,
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let task = rt.spawn(ue_decoder::run(
            source,
            config,
            async {
                let _ = stop_rx.await;
            },
            move || ready_tx.send(()).unwrap(),
        ));
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the decoder starts reading");
        Self { task, stop }
    }

    /// Stops it as SIGTERM would and returns its final counters.
    pub(crate) fn stop(self, rt: &tokio::runtime::Runtime) -> ue_decoder::Snapshot {
        self.stop.send(()).unwrap();
        let snapshot = rt.block_on(self.task).unwrap().unwrap();
        eprint!("{snapshot}");
        snapshot
    }
}

#[test]
fn every_point_and_span_arrives_once_intact_under_sustained_load() {
    kernel::require();
    let rounds_env = std::env::var("UE_LOAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok());
    let rounds: u64 = rounds_env.unwrap_or(20);
    const SERIES: u64 = 500;
    const SPANS: u64 = 200;
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let names = TracepointNames {
        metrics: "ue_k_pipe_metrics".into(),
        traces: "ue_k_pipe_traces".into(),
        logs: "ue_k_pipe_logs".into(),
    };
    let decoder = Decoder::start(
        &rt,
        &names,
        &Signal::ALL,
        vec![
            SinkConfig::Otlp(OtlpConfig {
                endpoint: receiver.http_endpoint(),
                compression: Compression::Gzip,
                retry: retry(),
                ..OtlpConfig::default()
            }),
            SinkConfig::Otlp(OtlpConfig {
                endpoint: receiver.grpc_endpoint(),
                compression: Compression::Gzip,
                retry: retry(),
                ..OtlpConfig::new(Transport::Grpc)
            }),
        ],
    );

    // The load: ROUNDS exports of SERIES data points and SPANS spans each.
    let capture = EventCapture::new();
    let metrics = MetricsExporter::builder()
        .with_tracepoint_name(&names.metrics)
        .build()
        .unwrap();
    assert!(metrics.listening());
    let metrics_stats = metrics.stats();
    let reference_metrics = MetricsExporter::builder()
        .with_capture(capture.clone())
        .with_temporality(Temporality::Delta)
        .build()
        .unwrap();
    let (tee, seen_metrics) = TeeMetrics::new(vec![metrics, reference_metrics]);
    let provider = provider_with(tee);
    let mut span_tee = {
        let spans = SpanExporter::builder()
            .with_tracepoint_name(&names.traces)
            .build()
            .unwrap();
        let reference = SpanExporter::builder()
            .with_capture(EventCapture::new())
            .build()
            .unwrap();
        TeeSpans::new(vec![spans, reference])
    };
    span_tee.0.set_resource(
        &opentelemetry_sdk::Resource::builder()
            .with_service_name("pipeline")
            .build(),
    );
    let scope = InstrumentationScope::builder("load")
        .with_version("1")
        .build();
    let started = Instant::now();
    for round in 0..rounds {
        record_series(&provider, &[("load.requests", SERIES)]);
        let batch = (0..SPANS)
            .map(|i| full_span(round * SPANS + i, &scope))
            .collect();
        block_on(span_tee.0.export(batch)).unwrap();
    }
    let elapsed = started.elapsed();
    let (points, spans_total) = (rounds * SERIES, rounds * SPANS);
    eprintln!(
        "wrote {points} data points and {spans_total} spans in {:.2} s ({:.0} points/s, {:.0} spans/s) in {} events",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64(),
        spans_total as f64 / elapsed.as_secs_f64(),
        metrics_stats.snapshot().events_written,
    );

    let complete = rt.block_on(receiver.wait_until(Duration::from_secs(120), |r| {
        let items = |p: Protocol, s: Signal| {
            r.iter()
                .filter(|x| x.protocol == p && x.signal() == s && x.accepted())
                .map(Received::items)
                .sum::<u64>()
        };
        [Protocol::Http, Protocol::Grpc].iter().all(|&p| {
            items(p, Signal::Metrics) >= points && items(p, Signal::Traces) >= spans_total
        })
    }));
    eprintln!(
        "arrived: {complete} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let snapshot = decoder.stop(&rt);
    assert!(complete, "everything arrived at both sinks");
    assert_eq!(
        snapshot.kernel_lost_total(),
        0,
        "the kernel dropped nothing at this rate with the default ring"
    );
    assert!(snapshot.malformed.is_empty() && snapshot.corrupt_records.is_empty());
    for sink in &snapshot.sinks {
        assert_eq!(sink.dropped_total(), 0, "{}", sink.name);
        assert_eq!(sink.items_sent, points + spans_total, "{}", sink.name);
    }

    let mut want_points: Vec<Vec<u8>> = seen_metrics
        .lock()
        .unwrap()
        .reference
        .iter()
        .flat_map(metric_points)
        .collect();
    want_points.sort();
    let mut want_spans: Vec<Vec<u8>> = span_tee
        .1
        .lock()
        .unwrap()
        .reference
        .iter()
        .flat_map(spans)
        .collect();
    want_spans.sort();
    assert_eq!(want_points.len() as u64, points);
    let received = receiver.received();
    for protocol in [Protocol::Http, Protocol::Grpc] {
        assert!(
            arrived(&received, protocol, Signal::Metrics) == want_points,
            "{protocol:?}: data points arrive exactly once, intact"
        );
        assert!(
            arrived(&received, protocol, Signal::Traces) == want_spans,
            "{protocol:?}: spans arrive exactly once, intact"
        );
    }
    // Batching gathered the many events into few requests.
    let requests = received
        .iter()
        .filter(|r| r.protocol == Protocol::Http)
        .count();
    let events = metrics_stats.snapshot().events_written;
    eprintln!("{events} metrics events and the span events arrived in {requests} HTTP requests");
    drop(provider);
}

/// A span's name, id and parent id.
type SpanIds = (String, Vec<u8>, Vec<u8>);

#[test]
fn the_ue_decoder_binary_forwards_the_example_programs_and_stops_cleanly_on_sigterm() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let decoder = DecoderProcess::start(DecoderProcess::command(&[
        "run",
        "--endpoint",
        &receiver.http_endpoint(),
        "--stats-secs",
        "1",
        "--shutdown-secs",
        "20",
    ]));

    let (rounds, series, traces) = (10u64, 50u64, 20u64);
    for (name, args) in [
        ("metrics", vec![rounds.to_string(), series.to_string()]),
        ("spans", vec![traces.to_string()]),
    ] {
        let out = Command::new(tests::built(&format!("examples/{name}")))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Each round adds 1 to every series: the delta sums add up to rounds x series.
    let requests_total = |r: &[Received]| -> i64 {
        r.iter()
            .filter_map(|x| match &x.request {
                Request::Metrics(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| &m.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == "example.requests")
            .flat_map(|m| match &m.data {
                Some(Data::Sum(s)) => s.data_points.clone(),
                _ => vec![],
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                _ => 0,
            })
            .sum()
    };
    let done = rt.block_on(receiver.wait_until(Duration::from_secs(60), |r| {
        requests_total(r) >= (rounds * series) as i64
            && r.iter()
                .filter(|x| x.signal() == Signal::Traces)
                .map(Received::items)
                .sum::<u64>()
                >= traces * 3
    }));

    // SIGTERM: the decoder drains, flushes, prints its counters and exits 0.
    let (status, log) = decoder.stop();
    assert!(
        done,
        "every point and span arrived; decoder log:\n{}",
        log.join("\n")
    );
    assert!(status.success(), "exit status {status}");
    assert!(log.iter().any(|l| l.contains("final counters")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("kernel lost 0")), "{log:?}");

    let received = receiver.received();
    assert_eq!(
        requests_total(&received),
        (rounds * series) as i64,
        "exactly once"
    );
    // Every trace has its three spans, linked to the root.
    let mut traces_seen: BTreeMap<Vec<u8>, Vec<SpanIds>> = BTreeMap::new();
    for r in &received {
        if let Request::Traces(t) = &r.request {
            for s in t
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                traces_seen.entry(s.trace_id.clone()).or_default().push((
                    s.name.clone(),
                    s.span_id.clone(),
                    s.parent_span_id.clone(),
                ));
            }
        }
    }
    assert_eq!(traces_seen.len() as u64, traces);
    for spans in traces_seen.values() {
        assert_eq!(spans.len(), 3);
        let root = spans
            .iter()
            .find(|s| s.0 == "GET /checkout")
            .expect("root span");
        assert!(root.2.is_empty());
        assert!(
            spans
                .iter()
                .filter(|s| s.0 != "GET /checkout")
                .all(|s| s.2 == root.1),
            "children point at the root"
        );
    }
}

/// The rate the burst test holds: data points per second, in events of about 100 points
/// (under the VM's software emulation; a real host reads far faster).
const BURST_POINTS_PER_SEC: u64 = 5_000;

#[test]
fn a_paced_burst_of_5k_points_per_second_arrives_whole_with_no_kernel_loss() {
    kernel::require();
    // Encode first (the SDK is slow under emulation), then write the events at the rate.
    let (capturing, capture) = {
        let c = EventCapture::new();
        let e = MetricsExporter::builder()
            .with_capture(c.clone())
            .build()
            .unwrap();
        (e, c)
    };
    let (tee, seen) = TeeMetrics::new(vec![capturing]);
    let provider = provider_with(tee);
    for round in 0..40 {
        let name: &'static str = Box::leak(format!("burst.{round}").into_boxed_str());
        record_series(&provider, &[(name, 1000)]);
    }
    let events = capture.take();
    let mut want: Vec<Vec<u8>> = seen
        .lock()
        .unwrap()
        .reference
        .iter()
        .flat_map(metric_points)
        .collect();
    want.sort();
    let points = want.len() as u64;
    assert_eq!(points, 40_000);

    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let name = "ue_k_burst_metrics";
    let http = OtlpConfig {
        endpoint: receiver.http_endpoint(),
        retry: retry(),
        ..OtlpConfig::default()
    };
    let names = TracepointNames {
        metrics: name.into(),
        ..TracepointNames::default()
    };
    let decoder = Decoder::start(
        &rt,
        &names,
        &[Signal::Metrics],
        vec![SinkConfig::Otlp(http)],
    );

    let writer = kernel::RawWriter::register(name);
    assert!(writer.enabled());
    let per_event = points as f64 / events.len() as f64;
    let interval = Duration::from_secs_f64(per_event / BURST_POINTS_PER_SEC as f64);
    let started = Instant::now();
    for (i, e) in events.iter().enumerate() {
        // Paced against the start, so a slow write is made up for, not accumulated.
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        assert_eq!(writer.write(&e[ue_wire::layout::HEADER_LEN..]), 0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} events, {points} data points in {elapsed:.2} s: {:.0} points/s, {:.0} KiB/s",
        events.len(),
        points as f64 / elapsed,
        events.iter().map(Vec::len).sum::<usize>() as f64 / 1024.0 / elapsed
    );
    let complete = rt.block_on(receiver.wait_until(Duration::from_secs(120), |r| {
        r.iter()
            .filter(|x| x.accepted())
            .map(Received::items)
            .sum::<u64>()
            >= points
    }));
    let snapshot = decoder.stop(&rt);
    let read = snapshot.events.get(&Signal::Metrics).copied().unwrap_or(0);
    assert_eq!(
        read + snapshot.kernel_lost_total(),
        events.len() as u64,
        "every event written was read or counted lost"
    );
    assert!(complete);
    assert_eq!(
        snapshot.kernel_lost_total(),
        0,
        "no loss at {BURST_POINTS_PER_SEC} points/s with the default 1 MiB rings"
    );
    assert!(
        arrived(&receiver.received(), Protocol::Http, Signal::Metrics) == want,
        "every point exactly once"
    );
    drop(provider);
}
