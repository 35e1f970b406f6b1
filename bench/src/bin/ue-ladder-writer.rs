//! `ue-ladder-writer`: writes metric data points to the `otlp_metrics` tracepoint at a
//! steady rate, for the rate ladder (`scripts/ladder.sh`), which reads them with
//! `ue-decoder run` and `perf record` side by side.
//!
//! The events are made once by the project's metrics exporter (counter points with 3
//! attributes, packed into events of up to 8 KB as on a real host), then written again
//! and again at the pace asked for, so that the writer's own cost is one write per event
//! and the readers, not the SDK, are what the ladder finds the limit of. It prints the
//! points it wrote and how long writing took, so a writer that could not keep its rate
//! is seen.
//!
//! ```sh
//! ue-ladder-writer --rate 100000 --secs 3
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use otlp_user_events::{EventCapture, MetricsExporter};
use ue_wire::{Tracepoint, layout};

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

/// The OTLP requests of one export of 2,000 counter series, as the exporter packs them.
fn requests() -> Result<Vec<Vec<u8>>> {
    let capture = EventCapture::new();
    let exporter = MetricsExporter::builder()
        .with_capture(capture.clone())
        .with_temporality(Temporality::Delta)
        .build()?;
    let provider = SdkMeterProvider::builder()
        .with_resource(Resource::builder().with_service_name("ladder").build())
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let counter = provider.meter("ladder").u64_counter("requests").build();
    for i in 0..2_000 {
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
    capture
        .take()
        .iter()
        .map(|fields| {
            layout::decode(fields)
                .map(|p| p.buffer.to_vec())
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let requests = requests()?;
    if requests.is_empty() {
        bail!("the exporter wrote no events");
    }
    let per_event = 2_000 / requests.len() as u64;
    let tracepoint = Tracepoint::register(layout::METRICS_TRACEPOINT)
        .map_err(|errno| anyhow::anyhow!("{}", ue_wire::register_hint(errno)))
        .context("registering otlp_metrics")?;
    let events = args.rate * args.secs / per_event;
    let interval = Duration::from_secs_f64(per_event as f64 / args.rate as f64);
    let (mut written, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..events {
        let due = start + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now())
            && wait > Duration::from_micros(50)
        {
            std::thread::sleep(wait);
        }
        match tracepoint.write(&requests[i as usize % requests.len()]) {
            Ok(()) => written += 1,
            Err(_) => failed += 1,
        }
    }
    let took = start.elapsed();
    let points = written * per_event;
    println!(
        "wrote {points} points in {:.2} s ({:.0} points/s, asked {}), {written} events, {failed} failed writes",
        took.as_secs_f64(),
        points as f64 / took.as_secs_f64(),
        args.rate,
    );
    Ok(())
}
