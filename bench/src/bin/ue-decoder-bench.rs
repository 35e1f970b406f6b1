//! `ue-decoder-bench`: the decoder's forwarding cost per item, in this process.
//!
//! Events are made by the project's own exporters (counter points with 3 attributes, spans
//! with 6 attributes and an event, log records with 3 attributes), packed into 8,168-byte
//! events as on a real host, and written to the daemon's in-memory event source; the daemon
//! (`ue_decoder::run`, the same code as `ue-decoder run` past the perf rings) checks, batches
//! and sends them to an `otlp-receiver` process over OTLP/HTTP or gRPC. Reported: items per
//! second of decoder CPU (this process's CPU, all threads, minus the thread that writes the
//! events into the source), and this process's peak RSS.
//!
//! ```sh
//! otlp-receiver --http 127.0.0.1:4318 --grpc 127.0.0.1:4317 &
//! ue-decoder-bench --signal metrics --protocol http --items 2000000
//! ```

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use opentelemetry::KeyValue;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use otlp_user_events::{EventCapture, LogExporter, MetricsExporter, UserEventsSpanProcessor};
use ue_decoder::{
    BatchConfig, Compression, DiskQueueConfig, ForwardConfig, MemorySource, OtlpConfig, Protocol,
    RunConfig, Signal, SinkConfig, SyncPolicy,
};

/// Measures the decoder forwarding one signal's events.
#[derive(Parser, Debug)]
#[command(name = "ue-decoder-bench")]
struct Args {
    /// metrics, traces or logs.
    #[arg(long, default_value = "metrics")]
    signal: String,
    /// http or grpc.
    #[arg(long, default_value = "http")]
    protocol: String,
    /// The receiver: http://127.0.0.1:4318 for HTTP, http://127.0.0.1:4317 for gRPC.
    #[arg(long)]
    endpoint: Option<String>,
    /// Items to forward in all.
    #[arg(long, default_value_t = 1_000_000)]
    items: u64,
    /// none, gzip or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Decode and merge (`ue-decoder run --merge`) instead of forwarding the bytes.
    #[arg(long)]
    merge: bool,
    /// The sink's queue bound in MiB. The events come faster than one connection to the
    /// receiver takes them; a large queue keeps the run free of drops, so that every item
    /// is counted (the peak RSS then includes what waited in it).
    #[arg(long, default_value_t = 1024)]
    queue_mib: usize,
    /// Queue on disk in this directory (`ue-decoder run --queue-dir`), up to 8 GiB.
    #[arg(long)]
    queue_dir: Option<std::path::PathBuf>,
    /// With --queue-dir: fdatasync every N ms, `batch` (after each batch) or `never`.
    #[arg(long, default_value = "100")]
    queue_sync: String,
    /// Requests in flight at once per sink (`ue-decoder run --max-inflight`).
    #[arg(long, default_value_t = 4)]
    max_inflight: usize,
    /// Compression threads (`ue-decoder run --compression-threads`).
    #[arg(long, default_value_t = 2)]
    compression_threads: usize,
    /// Write at most this many items per second (0: as fast as the decoder drains), to
    /// see the memory of a steady load the receiver keeps up with.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Forward the payloads as written, without stamping each event's resources with its
    /// writer (`ue-decoder run --no-writer-identity`), to see what stamping costs.
    #[arg(long)]
    no_writer_identity: bool,
}

/// The events of one round: each event's fields, and the items in all of them.
fn events(signal: Signal) -> Result<(Vec<Vec<u8>>, u64)> {
    let capture = EventCapture::new();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("host.name", "web-17"),
        ])
        .build();
    let items = match signal {
        Signal::Metrics => {
            let exporter = MetricsExporter::builder()
                .with_capture(capture.clone())
                .with_temporality(Temporality::Delta)
                .build()?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_reader(
                    PeriodicReader::builder(exporter)
                        .with_interval(Duration::from_secs(3600))
                        .build(),
                )
                .build();
            let counter = provider.meter("bench").u64_counter("requests").build();
            let n = 2_000;
            for i in 0..n {
                counter.add(
                    1,
                    &[
                        KeyValue::new("http.route", format!("/api/v1/item/{i}")),
                        KeyValue::new("http.method", "GET"),
                        KeyValue::new("status", "200"),
                    ],
                );
            }
            provider.force_flush()?;
            provider.shutdown()?;
            n
        }
        Signal::Traces => {
            let processor = UserEventsSpanProcessor::builder()
                .with_capture(capture.clone())
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_span_processor(processor)
                .build();
            let n: u64 = 10_000;
            // The exporter benchmark's span workload, once.
            ue_bench::span_round(provider.tracer("bench"), n as usize)(0);
            provider.force_flush()?;
            provider.shutdown()?;
            n
        }
        Signal::Logs => {
            let exporter = LogExporter::builder()
                .with_capture(capture.clone())
                .build()?;
            let provider = SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_log_processor(BatchLogProcessor::builder(exporter).build())
                .build();
            let logger = provider.logger("bench");
            let n = 10_000;
            for i in 0..n {
                let mut record = logger.create_log_record();
                record.set_severity_number(Severity::Info);
                record.set_severity_text("INFO");
                record.set_body(format!("request {i} served").into());
                record.add_attribute("http.route", "/api/users/{id}");
                record.add_attribute("user.id", i as i64 % 1000);
                record.add_attribute("cache.hit", i % 3 == 0);
                logger.emit(record);
            }
            provider.force_flush()?;
            provider.shutdown()?;
            n
        }
    };
    let events = capture.take();
    // What the events hold, as the decoder counts it (the SDK caps a metric's series at
    // its cardinality limit).
    let mut held = 0;
    for event in &events {
        held += ue_decoder::check_event(signal, event)?.1;
    }
    if events.is_empty() || held > items {
        bail!(
            "the exporter wrote {} events holding {held} items",
            events.len()
        );
    }
    Ok((events, held))
}

fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes one rusage into the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn peak_rss_kib() -> i64 {
    // SAFETY: as in `cpu_time`.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss
    }
}

/// This process's resident set now (VmRSS), KiB.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let signal: Signal = match args.signal.as_str() {
        "metrics" => Signal::Metrics,
        "traces" => Signal::Traces,
        "logs" => Signal::Logs,
        s => bail!("unknown signal {s:?}: metrics, traces or logs"),
    };
    let protocol = match args.protocol.as_str() {
        "http" => Protocol::HttpProtobuf,
        "grpc" => Protocol::Grpc,
        p => bail!("unknown protocol {p:?}: http or grpc"),
    };
    let (events, per_round) = events(signal)?;
    let rounds = args.items.div_ceil(per_round);
    let bytes: usize = events.iter().map(Vec::len).sum();

    let mut otlp = OtlpConfig::new(protocol);
    otlp.endpoint = args
        .endpoint
        .unwrap_or_else(|| protocol.default_endpoint().into());
    otlp.compression = match args.compression.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        c => bail!("unknown compression {c:?}: none, gzip or zstd"),
    };
    let disk_queue = match &args.queue_dir {
        None => None,
        Some(dir) => Some(DiskQueueConfig {
            dir: dir.clone(),
            max_bytes: 8 << 30,
            sync: args
                .queue_sync
                .parse::<SyncPolicy>()
                .map_err(|e| anyhow::anyhow!("--queue-sync: {e}"))?,
        }),
    };
    otlp.max_inflight = args.max_inflight;
    let config = RunConfig {
        forward: ForwardConfig {
            batch: BatchConfig {
                merge: args.merge,
                ..BatchConfig::default()
            },
            sinks: vec![SinkConfig::Otlp(otlp).into()],
            queue_bytes: args.queue_mib << 20,
            disk_queue,
            compression_threads: args.compression_threads,
            ..ForwardConfig::default()
        },
        stats_interval: Duration::from_secs(3600),
        self_metrics: false,
        admin: None,
        writer_identity: !args.no_writer_identity,
    };

    // As many events as 8 perf rings of 1 MiB hold.
    let capacity = 1024;
    let source = MemorySource::new(capacity);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let daemon = {
        let source = source.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(ue_decoder::run(
                source,
                config,
                async {
                    let _ = stop_rx.await;
                },
                move || {
                    let _ = ready_tx.send(());
                },
            ))
        })
    };
    ready_rx.recv().context("the daemon did not start")?;
    // What the process holds before forwarding: the runtime, the sinks, and this thread's
    // events (which the decoder does not hold).
    let rss_start = rss_kib();
    let mut rss_max = rss_start;
    let mut rss_checked = Instant::now();

    let cpu_before = cpu_time(libc::RUSAGE_SELF);
    let wall = Instant::now();
    // This thread stands in for the kernel writing into the rings; its CPU is not the
    // decoder's and is taken out below.
    let writer_before = cpu_time(libc::RUSAGE_THREAD);
    let events = Arc::new(events);
    let per_event = per_round as f64 / events.len() as f64;
    let mut written = 0.0;
    for round in 0..rounds {
        for (i, event) in events.iter().enumerate() {
            if args.rate > 0 {
                written += per_event;
                let due = wall + Duration::from_secs_f64(written / args.rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            while source.pending() >= capacity / 2 {
                thread::sleep(Duration::from_micros(200));
            }
            if rss_checked.elapsed() >= Duration::from_millis(50) {
                rss_max = rss_max.max(rss_kib());
                rss_checked = Instant::now();
            }
            source.write_fields((round as usize + i) as u32 % 8, signal, event.clone());
        }
    }
    while source.pending() > 0 {
        thread::sleep(Duration::from_millis(1));
    }
    let writer = cpu_time(libc::RUSAGE_THREAD) - writer_before;
    let _ = stop_tx.send(());
    let snapshot = daemon
        .join()
        .map_err(|_| anyhow::anyhow!("the daemon panicked"))??;
    let elapsed = wall.elapsed();
    let cpu = cpu_time(libc::RUSAGE_SELF) - cpu_before - writer;

    let items = rounds * per_round;
    let sent: u64 = snapshot.sinks.iter().map(|s| s.items_sent).sum();
    let dropped: u64 = snapshot.sinks.iter().map(|s| s.dropped_total()).sum();
    let queue = match &args.queue_dir {
        Some(_) => format!(", disk queue, sync {}", args.queue_sync),
        None => String::new(),
    };
    println!(
        "{signal} over {} ({}, merge {}{queue}): {items} items in {} events of {:.0} bytes \
         ({:.1} MB), sent {sent}, dropped {dropped}, lost {}\n  decoder CPU {:.3} s \
         (wall {:.3} s): {:.0} items/s per core, {:.0} ns per item; peak RSS {} KiB \
         (RSS {} KiB before forwarding, {} KiB at most while forwarding; the in-memory \
         rings hold at most {} KiB of events)",
        args.protocol,
        args.compression,
        args.merge,
        rounds as usize * events.len(),
        bytes as f64 / events.len() as f64,
        (bytes as u64 * rounds) as f64 / 1e6,
        source.lost(),
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
        items as f64 / cpu.as_secs_f64(),
        cpu.as_nanos() as f64 / items as f64,
        peak_rss_kib(),
        rss_start,
        rss_max,
        (capacity / 2 * bytes / events.len()) / 1024,
    );
    if sent != items || source.lost() > 0 {
        bail!(
            "not everything arrived: {sent} of {items} sent, {} lost",
            source.lost()
        );
    }
    Ok(())
}
