//! OpenTelemetry metrics, span and log exporters that write OTLP protobuf to Linux
//! [user_events](https://docs.kernel.org/trace/user_events.html) tracepoints.
//!
//! An application registers [`MetricsExporter`], [`SpanExporter`] and [`LogExporter`] with
//! the OpenTelemetry SDK like any other exporter. Each export becomes a few `writev` calls to
//! the tracepoints `otlp_metrics`, `otlp_traces` and `otlp_logs`; a reader with perf privileges (the project's
//! `ue-decoder`, or `perf record`) turns them back into OTLP. No sockets, no threads, and
//! while nobody listens an export costs two atomic loads.
//!
//! Data points, spans and log records are encoded straight from the SDK's data into the events, once each.
//! For spans, [`UserEventsSpanProcessor`] does this in `on_end`, without the batch
//! processor's queue and thread. [`ListenerAwareSampler`] and [`ListenerAwareReader`] make the
//! SDK skip recording spans and collecting metrics while nobody listens;
//! [`ListenerAwareTracerProvider`] skips the SDK altogether for spans started then.
//!
//! Every event is one complete `ExportMetricsServiceRequest`, `ExportTraceServiceRequest` or
//! `ExportLogsServiceRequest` holding as many data points, spans or log records as fit in the buffer limit, 8,168 bytes by default:
//! the most that reaches a perf reader (larger events are dropped by the kernel's perf path
//! while `writev` still reports success). The field layout is that of the upstream
//! `opentelemetry-user-events-metrics` crate, defined once in [`layout`] (the `ue-wire` crate,
//! which the decoder shares).
//!
//! ```
//! use opentelemetry::global;
//! use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
//! use opentelemetry::trace::Tracer as _;
//! use opentelemetry_sdk::logs::SdkLoggerProvider;
//! use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use otlp_user_events::{LogExporter, MetricsExporter, SpanExporter};
//!
//! let metrics = MetricsExporter::builder().build()?;
//! let metrics_stats = metrics.stats();
//! let meter_provider = SdkMeterProvider::builder()
//!     .with_reader(PeriodicReader::builder(metrics).build())
//!     .build();
//! global::set_meter_provider(meter_provider.clone());
//!
//! let spans = SpanExporter::builder().build()?;
//! let tracer_provider = SdkTracerProvider::builder().with_batch_exporter(spans).build();
//! global::set_tracer_provider(tracer_provider.clone());
//!
//! let logs = LogExporter::builder().build()?;
//! let logger_provider = SdkLoggerProvider::builder().with_batch_exporter(logs).build();
//!
//! global::meter("checkout").u64_counter("orders").build().add(1, &[]);
//! global::tracer("checkout").in_span("place-order", |_cx| {});
//! let logger = logger_provider.logger("checkout");
//! let mut record = logger.create_log_record();
//! record.set_body("order placed".into());
//! logger.emit(record);
//!
//! meter_provider.shutdown()?;
//! tracer_provider.shutdown()?;
//! logger_provider.shutdown()?;
//! // Without a listener (or without user_events in the kernel) nothing was written.
//! println!("{:?}", metrics_stats.snapshot());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod background;
mod core;
mod encode;
mod error;
mod listener;
mod logs;
mod metrics;
mod pack;
mod processor;
mod protobuf;
mod stats;
mod tracer;
mod traces;
mod writer;

pub use core::Listener;
pub use encode::{Oversize, pack_logs, pack_metrics, pack_spans};
pub use error::BuildError;
pub use listener::{
    DEFAULT_READER_INTERVAL, ListenerAwareReader, ListenerAwareReaderBuilder, ListenerAwareSampler,
};
pub use logs::{LogExporter, LogExporterBuilder};
pub use metrics::{MetricsExporter, MetricsExporterBuilder};
pub use processor::{DEFAULT_MAX_DELAY, UserEventsSpanProcessor, UserEventsSpanProcessorBuilder};
pub use stats::{ExporterStats, StatsSnapshot};
pub use tracer::{ListenerAwareSpan, ListenerAwareTracer, ListenerAwareTracerProvider};
pub use traces::{SpanExporter, SpanExporterBuilder};
pub use writer::{EventCapture, Registration};

/// The wire contract both sides share: tracepoint names, field layout, rel_loc, size limits.
pub use ue_wire::layout;
