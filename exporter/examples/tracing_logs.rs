//! `tracing` events as OpenTelemetry log records, through `opentelemetry-appender-tracing`
//! and the log exporter: how most Rust services produce logs.
//!
//! ```text
//! cargo run -p otlp-user-events --example tracing_logs -- [EVENTS]
//! ```
//!
//! The appender maps each event's name to the record's event name, its level to the severity,
//! its `message` to the body, its other fields to attributes and its target (the module path
//! unless given) to the instrumentation scope. The SDK's simple processor asks the exporter
//! before building a record, so while no reader listens a `tracing` event costs the check and
//! nothing more. The exporter's counters are printed at the end.

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use otlp_user_events::LogExporter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);

    let exporter = LogExporter::builder().build()?;
    eprintln!("otlp_logs: {}", exporter.registration());
    // As in the other examples: opt-in waiting for a reader that attaches after start.
    if let Some(secs) = std::env::var("UE_WAIT_FOR_LISTENER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        exporter.wait_for_listener(std::time::Duration::from_secs(secs));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let stats = exporter.stats();
    let provider = SdkLoggerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("example-tracing-logs")
                .build(),
        )
        .with_simple_exporter(exporter)
        .build();
    // The OpenTelemetry crates log through `tracing` too (at shutdown, for instance): kept
    // out of the bridge, as the OpenTelemetry examples do, so the exporter does not export
    // its own SDK's chatter.
    let filter = EnvFilter::new("info").add_directive("opentelemetry=off".parse()?);
    tracing_subscriber::registry()
        .with(OpenTelemetryTracingBridge::new(&provider).with_filter(filter))
        .init();

    for i in 0..events {
        if i % 5 == 4 {
            tracing::warn!(
                name: "cart.slow",
                target: "shop::cart",
                cart_id = i,
                elapsed_ms = 250.5,
                "cart {i} took long"
            );
        } else {
            tracing::info!(
                name: "order.placed",
                order_id = i,
                customer = "c-42",
                express = i % 2 == 0,
                "order {i} placed"
            );
        }
    }
    provider.shutdown()?;
    println!("{:?}", stats.snapshot());
    Ok(())
}
