//! Registers the log exporter with the OpenTelemetry SDK's batch processor and emits log
//! records through the OpenTelemetry logs API directly.
//!
//! ```text
//! cargo run -p otlp-user-events --example logs -- [RECORDS]
//! ```
//!
//! Each record has a timestamp, a severity, an event name, a structured body (a map holding a
//! list and bytes) and attributes; every tenth is an error emitted inside a span, so it
//! carries that span's trace and span ids. With a reader attached (`ue-decoder run`, or
//! `perf record -e user_events:otlp_logs`), the records arrive as OTLP; without one, nothing
//! is encoded. The exporter's counters are printed at the end.
//!
//! Applications that log through `tracing` use the appender instead: see `tracing_logs.rs`.

use std::collections::HashMap;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry::{InstrumentationScope, Key};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otlp_user_events::LogExporter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);

    let exporter = LogExporter::builder().build()?;
    eprintln!("otlp_logs: {}", exporter.registration());
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
    let provider = SdkLoggerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("example-logs")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let logger = provider.logger_with_scope(
        InstrumentationScope::builder("example.payments")
            .with_version("1.0.0")
            .build(),
    );
    // Only to give some records a trace context; its spans go nowhere.
    let tracer = SdkTracerProvider::builder().build().tracer("example");

    for i in 0..records {
        let mut record = logger.create_log_record();
        record.set_timestamp(std::time::SystemTime::now());
        record.set_event_name("payment.settled");
        let error = i % 10 == 9;
        if error {
            record.set_severity_number(Severity::Error);
            record.set_severity_text("ERROR");
        } else {
            record.set_severity_number(Severity::Info);
            record.set_severity_text("INFO");
        }
        record.set_body(AnyValue::Map(Box::new(HashMap::from([
            (Key::from("payment"), AnyValue::Int(i)),
            (
                Key::from("items"),
                AnyValue::ListAny(Box::new(vec!["book".into(), "pen".into()])),
            ),
            (
                Key::from("receipt"),
                AnyValue::Bytes(Box::new(i.to_be_bytes().to_vec())),
            ),
        ]))));
        record.add_attribute("example.record", i);
        record.add_attribute("currency", "EUR");
        if error {
            // The logger takes the trace context from the active span.
            tracer.in_span("settle", |_cx| logger.emit(record));
        } else {
            logger.emit(record);
        }
    }
    provider.force_flush()?;
    provider.shutdown()?;
    println!("{:?}", stats.snapshot());
    Ok(())
}
