//! Registers the metrics exporter with the OpenTelemetry SDK and records a few instruments.
//!
//! ```text
//! cargo run -p otlp-user-events --example metrics -- [ROUNDS] [SERIES]
//! ```
//!
//! Each round adds 1 to a counter in each of SERIES series, records a histogram value and a
//! gauge, and flushes (one export). With a reader attached (`ue-decoder run`, or
//! `perf record -e user_events:otlp_metrics`), the data points arrive as OTLP; without one,
//! nothing is encoded. The exporter's counters are printed at the end.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use otlp_user_events::MetricsExporter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let rounds = args.next().transpose()?.unwrap_or(3);
    let series = args.next().transpose()?.unwrap_or(10);

    let exporter = MetricsExporter::builder().build()?;
    eprintln!("otlp_metrics: {}", exporter.registration());
    // Opt-in, for scripts that start a reader after this example registered its
    // tracepoint (scripts/make-fixture.sh): wait up to UE_WAIT_FOR_LISTENER_SECS seconds
    // for a listener, then 1 s more, because the enable bit turns on when perf opens the
    // event, before perf enables it, and events written in between are lost.
    if let Some(secs) = std::env::var("UE_WAIT_FOR_LISTENER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        exporter.wait_for_listener(std::time::Duration::from_secs(secs));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let stats = exporter.stats();
    let provider = SdkMeterProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("example-metrics")
                .build(),
        )
        // Exports happen when this example flushes, not on a timer.
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();

    let meter = provider.meter("example");
    let requests = meter
        .u64_counter("example.requests")
        .with_unit("{request}")
        .build();
    let latency = meter
        .f64_histogram("example.latency")
        .with_unit("s")
        .build();
    let queue = meter.i64_gauge("example.queue_depth").build();
    for round in 0..rounds {
        for s in 0..series {
            requests.add(
                1,
                &[
                    KeyValue::new("series", s as i64),
                    KeyValue::new("route", "/checkout"),
                ],
            );
        }
        latency.record(
            0.002 * (round + 1) as f64,
            &[KeyValue::new("route", "/checkout")],
        );
        queue.record(round as i64, &[]);
        provider.force_flush()?;
    }
    provider.shutdown()?;
    println!("{:?}", stats.snapshot());
    Ok(())
}
