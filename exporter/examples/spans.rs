//! Registers the span exporter with the OpenTelemetry SDK's batch processor and records spans.
//!
//! ```text
//! cargo run -p otlp-user-events --example spans -- [TRACES]
//! ```
//!
//! Each trace is a server span with two children, attributes, an event and an error status.
//! With a reader attached (`ue-decoder run`, or `perf record -e user_events:otlp_traces`),
//! the spans arrive as OTLP; without one, nothing is encoded. The exporter's counters are
//! printed at the end.

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use otlp_user_events::SpanExporter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let traces: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);

    let exporter = SpanExporter::builder().build()?;
    eprintln!("otlp_traces: {}", exporter.registration());
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
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("example-spans")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();

    let tracer = provider.tracer("example");
    for i in 0..traces {
        tracer.in_span("GET /checkout", |cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("http.request.method", "GET"));
            span.set_attribute(KeyValue::new("example.trace", i as i64));
            span.add_event(
                "cache miss",
                vec![KeyValue::new("key", format!("cart-{i}"))],
            );
            let mut db = tracer
                .span_builder("SELECT carts")
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new("db.system", "postgresql")])
                .start(&tracer);
            db.end();
            tracer.in_span("render", |cx| {
                cx.span().set_status(Status::error("template missing"));
            });
        });
    }
    provider.force_flush()?;
    provider.shutdown()?;
    println!("{:?}", stats.snapshot());
    Ok(())
}
