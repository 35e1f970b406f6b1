//! `ue-export-probe`: the CPU time of the metrics exporter's `export` call alone, per data
//! point, for the histogram workload. A diagnostic next to `ue-bench`, whose whole-process
//! shares are noisy on a shared machine: here the exporter's own call is timed with the
//! thread's CPU clock, round by round, in one process, and the median round is printed.
//! It leaves out what the exporter changes outside its call (the SDK's drop of the data
//! after the export, the allocator's state), which `ue-bench` does count.
//!
//! ```sh
//! LD_PRELOAD=$(ue-bench --print-preload) ue-export-probe --variant ours --size 10000 --rounds 30
//! ```

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};

/// Times the metrics exporter's export call.
#[derive(Parser, Debug)]
#[command(name = "ue-export-probe")]
struct Args {
    /// ours, upstream or none (an exporter that does nothing).
    #[arg(long, default_value = "ours")]
    variant: String,
    /// Series of the histogram.
    #[arg(long, default_value_t = 10_000)]
    size: usize,
    /// Measured rounds.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
}

/// Thread CPU time, ns.
fn thread_ns() -> u64 {
    ue_bench::thread_cpu().as_nanos() as u64
}

/// Polls a future that is expected to be ready at once (both exporters' are).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the export future was not ready"),
    }
}

/// Wraps an exporter and records the thread CPU time of each export.
#[derive(Debug)]
struct Timed<E> {
    inner: Option<E>,
    times: Arc<Mutex<Vec<u64>>>,
}

impl<E: PushMetricExporter> PushMetricExporter for Timed<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let start = thread_ns();
        let result = match &self.inner {
            Some(e) => now(e.export(metrics)),
            None => Ok(()),
        };
        let took = thread_ns() - start;
        self.times.lock().unwrap().push(took);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Delta
    }
}

fn provider<E: PushMetricExporter>(exporter: E, size: usize) -> SdkMeterProvider {
    let limit = size + 16;
    SdkMeterProvider::builder()
        .with_resource(Resource::builder().with_service_name("ue-bench").build())
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .with_view(move |_: &Instrument| {
            Stream::builder().with_cardinality_limit(limit).build().ok()
        })
        .build()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let times = Arc::new(Mutex::new(Vec::new()));
    let provider = match args.variant.as_str() {
        "ours" => provider(
            Timed {
                inner: Some(
                    otlp_user_events::MetricsExporter::builder()
                        .with_temporality(Temporality::Delta)
                        .build()?,
                ),
                times: times.clone(),
            },
            args.size,
        ),
        "upstream" => provider(
            Timed {
                inner: Some(opentelemetry_user_events_metrics::MetricsExporter::new()),
                times: times.clone(),
            },
            args.size,
        ),
        "none" => provider(
            Timed::<otlp_user_events::MetricsExporter> {
                inner: None,
                times: times.clone(),
            },
            args.size,
        ),
        v => bail!("unknown variant {v:?}: ours, upstream or none"),
    };
    const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
    let attributes: Vec<[KeyValue; 3]> = (0..args.size)
        .map(|i| {
            [
                KeyValue::new("series.id", i as i64),
                KeyValue::new("cloud.region", REGIONS[i % REGIONS.len()]),
                KeyValue::new("host.name", format!("host-{:02}", i % 50)),
            ]
        })
        .collect();
    let histogram = provider
        .meter("ue-bench")
        .f64_histogram("ue_bench.latency")
        .with_unit("ms")
        .build();
    for r in 0..args.rounds + 1 {
        for (i, a) in attributes.iter().enumerate() {
            histogram.record(((i * 37 + r * 11) % 12_000) as f64 * 0.9, a);
        }
        provider.force_flush()?;
    }
    let mut times = times.lock().unwrap().split_off(1);
    times.sort_unstable();
    let per = |ns: u64| ns as f64 / args.size as f64;
    println!(
        "{} histogram {}: export call ns/point median {:.1} [q1 {:.1}, q3 {:.1}, min {:.1}] over {} rounds",
        args.variant,
        args.size,
        per(times[times.len() / 2]),
        per(times[times.len() / 4]),
        per(times[times.len() * 3 / 4]),
        per(times[0]),
        times.len()
    );
    Ok(())
}
