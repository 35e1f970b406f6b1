//! `ue-ladder-writer`: writes metric data points through the project's metrics exporter at
//! a steady rate, for the rate ladder (`scripts/ladder.sh`), which reads them with
//! `ue-decoder run` and `perf record` side by side.
//!
//! Every 10 ms it adds 1 to each of `rate / 100` counter series and flushes: one export,
//! packed into as many events as it takes. It prints the points it wrote and how long
//! writing took, so a writer that could not keep its rate is seen.
//!
//! ```sh
//! ue-ladder-writer --rate 100000 --secs 3
//! ```

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use otlp_user_events::MetricsExporter;

/// Writes counter points at a steady rate.
#[derive(Parser, Debug)]
#[command(name = "ue-ladder-writer")]
struct Args {
    /// Data points per second.
    #[arg(long)]
    rate: u64,
    /// For how long.
    #[arg(long, default_value_t = 3)]
    secs: u64,
}

const TICK: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    let args = Args::parse();
    let exporter = MetricsExporter::builder()
        .with_temporality(Temporality::Delta)
        .build()?;
    let stats = exporter.stats();
    let provider = SdkMeterProvider::builder()
        .with_resource(Resource::builder().with_service_name("ladder").build())
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let counter = provider.meter("ladder").u64_counter("requests").build();
    let series = (args.rate / 100).max(1);
    // Built once: the attributes are the writer's, not what is measured.
    let attributes: Vec<[KeyValue; 2]> = (0..series)
        .map(|s| {
            [
                KeyValue::new("series", s as i64),
                KeyValue::new("route", "/checkout"),
            ]
        })
        .collect();
    let ticks = args.secs * 1000 / TICK.as_millis() as u64;
    let start = Instant::now();
    for tick in 0..ticks {
        for a in &attributes {
            counter.add(1, a);
        }
        provider.force_flush()?;
        let next = start + TICK * (tick as u32 + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let took = start.elapsed();
    provider.shutdown()?;
    let points = series * ticks;
    println!(
        "wrote {points} points in {:.2} s ({:.0} points/s, asked {}): {:?}",
        took.as_secs_f64(),
        points as f64 / took.as_secs_f64(),
        args.rate,
        stats.snapshot()
    );
    Ok(())
}
