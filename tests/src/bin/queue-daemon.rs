//! The decoder's daemon (`ue_decoder::run`) over an in-memory event source, with each sink's
//! queue on disk, as a process of its own: what tests/disk_queue.rs SIGKILLs and restarts.
//! The live `ue-decoder run` needs perf rings; everything after them is the same code.
//!
//! It writes `--events` metrics events of `--points` points each, named `m<i>` (from
//! `--first`), at `--rate` per second, then runs until its stdin closes, and prints the
//! final counters of its one sink as `key=value` lines on stdout.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use prost::Message as _;
use tests::otlp;
use ue_decoder::{
    BatchConfig, DiskQueueConfig, ForwardConfig, MemorySource, OtlpConfig, RetryConfig, RunConfig,
    Signal, SinkConfig, SyncPolicy,
};

#[derive(Parser, Debug)]
struct Args {
    /// The collector's OTLP/HTTP endpoint.
    #[arg(long)]
    endpoint: String,
    /// The --queue-dir.
    #[arg(long)]
    queue_dir: PathBuf,
    /// Metrics events to write.
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// The number of the first event (its metric is named `m<first>`).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Data points per event.
    #[arg(long, default_value_t = 10)]
    points: usize,
    /// Events per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Items per batch.
    #[arg(long, default_value_t = 100)]
    batch_items: u64,
    /// The queue's bound on disk, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_bytes: u64,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("UE_LOG").unwrap_or_else(|_| "info".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
    let config = RunConfig {
        forward: ForwardConfig {
            batch: BatchConfig {
                max_items: args.batch_items,
                max_delay: Duration::from_millis(20),
                ..BatchConfig::default()
            },
            sinks: vec![
                SinkConfig::Otlp(OtlpConfig {
                    endpoint: args.endpoint.clone(),
                    timeout: Duration::from_secs(2),
                    retry: RetryConfig {
                        initial_interval: Duration::from_millis(100),
                        max_interval: Duration::from_millis(300),
                        max_elapsed: Duration::ZERO,
                        ..RetryConfig::default()
                    },
                    ..OtlpConfig::default()
                })
                .into(),
            ],
            disk_queue: Some(DiskQueueConfig {
                sync: SyncPolicy::Interval(Duration::from_millis(100)),
                max_bytes: args.max_bytes,
                ..DiskQueueConfig::new(&args.queue_dir)
            }),
            shutdown_deadline: Duration::from_secs(5),
            ..ForwardConfig::default()
        },
        stats_interval: Duration::from_secs(3600),
        self_metrics: false,
        admin: None,
        writer_identity: true,
    };
    let source = MemorySource::new(100_000);
    let writer = {
        let source = source.clone();
        std::thread::spawn(move || {
            let gap = Duration::from_secs(1) / args.rate.max(1) as u32;
            let start = std::time::Instant::now();
            for n in 0..args.events {
                let i = args.first + n;
                let request = otlp::metrics_request(&format!("m{i}"), args.points);
                while !source.write(0, Signal::Metrics, &request.encode_to_vec()) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // On a schedule, so the rate holds whatever each write took.
                let next = start + gap * (n + 1) as u32;
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
        })
    };
    let rt = tests::runtime();
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
    };
    let snapshot = rt
        .block_on(ue_decoder::run(source, config, stdin_closed, || {
            eprintln!("queue-daemon: ready");
        }))
        .expect("the daemon runs");
    let _ = writer.join();
    let sink = &snapshot.sinks[0];
    let disk = sink.disk.as_ref().expect("the sink's queue is on disk");
    println!("items_sent={}", sink.items_sent);
    println!("dropped={}", sink.dropped_total());
    println!("replayed_items={}", disk.replayed_items);
    println!("possible_duplicate_items={}", disk.possible_duplicate_items);
    println!("corrupt_records={}", disk.corrupt_records);
    println!("truncated_bytes={}", disk.truncated_bytes);
}
