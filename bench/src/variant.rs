//! The exporters under test, one table row each. Adding a variant is one entry in
//! [`VARIANTS`] plus the function that builds its pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};

use crate::sys::Preload;

/// The tracepoint the upstream trace crate writes for [`UPSTREAM_TRACE_PROVIDER`]: one
/// EventHeader event per span, `<provider>_L4K1` (level 4 informational, keyword 1).
pub const UPSTREAM_TRACE_TRACEPOINT: &str = "ue_bench_L4K1";
/// The EventHeader provider name the upstream trace processor is built with.
pub const UPSTREAM_TRACE_PROVIDER: &str = "ue_bench";
/// The tracepoint the upstream metrics crate writes (fixed by that crate).
pub const UPSTREAM_METRICS_TRACEPOINT: &str = "otlp_metrics";

/// What a variant's pipeline needs to know about the workload.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Series per instrument: the SDK's cardinality limit is raised above it, so that every
    /// series is exported instead of folding into the overflow series past 2,000.
    pub series: usize,
    /// Spans per round: batch processors queue at least this many, so none is dropped.
    pub spans_per_round: usize,
    /// Base URL of the OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`.
    pub endpoint: Option<String>,
}

/// What an exporter says it wrote, as far as it can be known from inside the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Data points or spans written.
    pub items: Option<u64>,
    /// Events (tracepoint writes) or requests.
    pub events: Option<u64>,
}

/// Reads [`Written`] at any time.
pub type Probe = Box<dyn Fn() -> Written>;

/// A meter provider whose reader exports only when flushed, and its probe.
pub struct MetricsPipeline {
    /// The provider; `force_flush` collects and exports.
    pub provider: SdkMeterProvider,
    /// What the exporter wrote so far.
    pub written: Probe,
}

/// A tracer provider with the variant's processor, and its probe.
pub struct SpanPipeline {
    /// The provider; `force_flush` exports whatever is queued.
    pub provider: SdkTracerProvider,
    /// What the exporter wrote so far.
    pub written: Probe,
    /// The tracer the workload starts its spans with.
    pub tracer: TracerKind,
}

/// Which tracer the span workload uses.
pub enum TracerKind {
    /// The provider's own.
    Sdk,
    /// The provider's, wrapped in a [`otlp_user_events::ListenerAwareTracer`].
    ListenerAware(otlp_user_events::Listener),
    /// The API's no-op tracer: what the application's own code costs, the floor of any
    /// tracer.
    Noop,
}

/// One exporter under test.
pub struct Variant {
    /// Name on the command line and in the results.
    pub name: &'static str,
    /// One line for the table's legend.
    pub about: &'static str,
    /// Whether it writes user_events, so that a "nobody listening" run means something.
    pub user_events: bool,
    /// Whether it records what the workload makes, so that "everything exported" can be
    /// checked (false for a sampler that drops every span).
    pub records: bool,
    /// Whether it sends OTLP/HTTP: the driver starts a receiver on 127.0.0.1 for each of
    /// its runs and passes `--endpoint`.
    pub receiver: bool,
    /// Metrics pipeline, if the variant has one.
    pub metrics: Option<fn(&Setup) -> Result<MetricsPipeline>>,
    /// Span pipeline, if the variant has one.
    pub spans: Option<fn(&Setup) -> Result<SpanPipeline>>,
    /// The SDK-alone variant with the same SDK machinery (reader, processor) that drops
    /// everything: subtracted to get this exporter's own share, per signal.
    pub metrics_baseline: Option<&'static str>,
    /// See `metrics_baseline`.
    pub spans_baseline: Option<&'static str>,
}

/// Every variant, in the order runs alternate and the table lists them.
///
/// The exporter work of issue 9 adds rows here: `ours-processor` (the crate's own span
/// processor, baseline `sdk-only-sync`) and listener-aware variants (the sampler and the
/// metrics reader that skip work while nobody listens).
pub static VARIANTS: &[Variant] = &[
    Variant {
        name: "ours",
        about: "otlp-user-events: MetricsExporter in a PeriodicReader, SpanExporter in the SDK batch processor",
        user_events: true,
        records: true,
        receiver: false,
        metrics: Some(ours_metrics),
        spans: Some(ours_spans),
        metrics_baseline: Some("sdk-only"),
        spans_baseline: Some("sdk-only"),
    },
    Variant {
        name: "ours-processor",
        about: "otlp-user-events: UserEventsSpanProcessor (encodes each span into a packing buffer in on_end, no queue)",
        user_events: true,
        records: true,
        receiver: false,
        metrics: None,
        spans: Some(ours_processor_spans),
        metrics_baseline: None,
        spans_baseline: Some("sdk-only-sync"),
    },
    Variant {
        name: "ours-aware",
        about: "otlp-user-events, listener-aware: MetricsExporter in a ListenerAwareReader; UserEventsSpanProcessor under a ListenerAwareSampler(AlwaysOn)",
        user_events: true,
        records: true,
        receiver: false,
        metrics: Some(ours_aware_metrics),
        spans: Some(ours_aware_spans),
        metrics_baseline: Some("sdk-only"),
        spans_baseline: Some("sdk-only-sync"),
    },
    Variant {
        name: "ours-aware-tracer",
        about: "otlp-user-events, listener-aware: UserEventsSpanProcessor behind a ListenerAwareTracerProvider (no SDK call while nobody listens)",
        user_events: true,
        records: true,
        receiver: false,
        metrics: None,
        spans: Some(ours_aware_tracer_spans),
        metrics_baseline: None,
        spans_baseline: Some("sdk-only-sync"),
    },
    Variant {
        name: "upstream",
        about: "opentelemetry-user-events-metrics 0.14 in a PeriodicReader; opentelemetry-user-events-trace 0.6 Processor (synchronous, one event per span)",
        user_events: true,
        records: true,
        receiver: false,
        metrics: Some(upstream_metrics),
        spans: Some(upstream_spans),
        metrics_baseline: Some("sdk-only"),
        spans_baseline: Some("sdk-only-sync"),
    },
    Variant {
        name: "otlp-http",
        about: "opentelemetry-otlp 0.33, HTTP/protobuf, blocking reqwest client, to otlp-receiver on 127.0.0.1; spans through the SDK batch processor",
        user_events: false,
        records: true,
        receiver: true,
        metrics: Some(otlp_metrics),
        spans: Some(otlp_spans),
        metrics_baseline: Some("sdk-only"),
        spans_baseline: Some("sdk-only"),
    },
    Variant {
        name: "sdk-only",
        about: "the SDK alone: a PeriodicReader / batch processor whose exporter drops everything",
        user_events: false,
        records: true,
        receiver: false,
        metrics: Some(sdk_only_metrics),
        spans: Some(sdk_only_spans),
        metrics_baseline: None,
        spans_baseline: None,
    },
    Variant {
        name: "sdk-always-off",
        about: "the SDK alone with Sampler::AlwaysOff: every span non-recording, the floor of any sampler that drops spans",
        user_events: false,
        records: false,
        receiver: false,
        metrics: None,
        spans: Some(sdk_always_off_spans),
        metrics_baseline: None,
        spans_baseline: None,
    },
    Variant {
        name: "api-noop",
        about: "the API's no-op tracer: the application's own span code and nothing else, the floor of any tracer",
        user_events: false,
        records: false,
        receiver: false,
        metrics: None,
        spans: Some(api_noop_spans),
        metrics_baseline: None,
        spans_baseline: None,
    },
    Variant {
        name: "sdk-only-sync",
        about: "the SDK alone with a span processor that drops each span in on_end (the baseline of synchronous processors)",
        user_events: false,
        records: true,
        receiver: false,
        metrics: None,
        spans: Some(sdk_only_sync_spans),
        metrics_baseline: None,
        spans_baseline: None,
    },
];

impl Variant {
    /// Whether it has a pipeline for workloads of `kind`.
    pub fn runs(&self, kind: crate::Kind) -> bool {
        match kind {
            crate::Kind::Spans => self.spans.is_some(),
            _ => self.metrics.is_some(),
        }
    }
}

/// The variant called `name`.
pub fn variant(name: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.name == name)
}

/// The names of all variants, for messages.
pub fn variant_names() -> Vec<&'static str> {
    VARIANTS.iter().map(|v| v.name).collect()
}

fn resource() -> Resource {
    Resource::builder().with_service_name("ue-bench").build()
}

/// A meter provider around `exporter` in a PeriodicReader that never fires by itself (one
/// hour), delta temporality, every instrument's cardinality limit above `setup.series`.
fn meter_provider<E: PushMetricExporter>(exporter: E, setup: &Setup) -> SdkMeterProvider {
    let limit = setup.series + 16;
    SdkMeterProvider::builder()
        .with_resource(resource())
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

/// A tracer provider around `exporter` in the SDK's batch processor, its queue large enough
/// for a whole round so that nothing is dropped.
fn batch_provider<E: SpanExporter + 'static>(exporter: E, setup: &Setup) -> SdkTracerProvider {
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(setup.spans_per_round.max(2048))
        .build();
    SdkTracerProvider::builder()
        .with_resource(resource())
        .with_span_processor(BatchSpanProcessor::new(exporter, config))
        .build()
}

fn preload_probe(tracepoint: &'static str) -> Probe {
    match Preload::get() {
        // Both upstream crates write one item per event.
        Some(p) => Box::new(move || {
            let n = p.writes_of(tracepoint);
            Written {
                items: Some(n),
                events: Some(n),
            }
        }),
        None => Box::new(Written::default),
    }
}

fn ours_metrics(setup: &Setup) -> Result<MetricsPipeline> {
    let exporter = otlp_user_events::MetricsExporter::builder()
        .with_temporality(Temporality::Delta)
        .build()
        .context("otlp_user_events::MetricsExporter")?;
    let stats = exporter.stats();
    Ok(MetricsPipeline {
        provider: meter_provider(exporter, setup),
        written: Box::new(move || {
            let s = stats.snapshot();
            Written {
                items: Some(s.items_written),
                events: Some(s.events_written),
            }
        }),
    })
}

fn ours_spans(setup: &Setup) -> Result<SpanPipeline> {
    let exporter = otlp_user_events::SpanExporter::builder()
        .build()
        .context("otlp_user_events::SpanExporter")?;
    let stats = exporter.stats();
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        provider: batch_provider(exporter, setup),
        written: Box::new(move || {
            let s = stats.snapshot();
            Written {
                items: Some(s.items_written),
                events: Some(s.events_written),
            }
        }),
    })
}

fn stats_probe(stats: otlp_user_events::ExporterStats) -> Probe {
    Box::new(move || {
        let s = stats.snapshot();
        Written {
            items: Some(s.items_written),
            events: Some(s.events_written),
        }
    })
}

fn ours_processor(setup: &Setup) -> Result<otlp_user_events::UserEventsSpanProcessor> {
    // The delay only bounds how long a partly filled event waits; rounds end in force_flush.
    let _ = setup;
    otlp_user_events::UserEventsSpanProcessor::builder()
        .build()
        .context("otlp_user_events::UserEventsSpanProcessor")
}

fn ours_processor_spans(setup: &Setup) -> Result<SpanPipeline> {
    let processor = ours_processor(setup)?;
    let written = stats_probe(processor.stats());
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(processor)
            .build(),
        written,
    })
}

fn ours_aware_spans(setup: &Setup) -> Result<SpanPipeline> {
    let processor = ours_processor(setup)?;
    let written = stats_probe(processor.stats());
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_sampler(otlp_user_events::ListenerAwareSampler::new(
                processor.listener(),
                opentelemetry_sdk::trace::Sampler::AlwaysOn,
            ))
            .with_span_processor(processor)
            .build(),
        written,
    })
}

fn ours_aware_tracer_spans(setup: &Setup) -> Result<SpanPipeline> {
    let processor = ours_processor(setup)?;
    let written = stats_probe(processor.stats());
    let listener = processor.listener();
    Ok(SpanPipeline {
        tracer: TracerKind::ListenerAware(listener),
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(processor)
            .build(),
        written,
    })
}

fn ours_aware_metrics(setup: &Setup) -> Result<MetricsPipeline> {
    let exporter = otlp_user_events::MetricsExporter::builder()
        .with_temporality(Temporality::Delta)
        .build()
        .context("otlp_user_events::MetricsExporter")?;
    let written = stats_probe(exporter.stats());
    let reader = otlp_user_events::ListenerAwareReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build()
        .context("otlp_user_events::ListenerAwareReader")?;
    let limit = setup.series + 16;
    Ok(MetricsPipeline {
        provider: SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(reader)
            .with_view(move |_: &Instrument| {
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .build(),
        written,
    })
}

fn upstream_metrics(setup: &Setup) -> Result<MetricsPipeline> {
    let exporter = opentelemetry_user_events_metrics::MetricsExporter::new();
    Ok(MetricsPipeline {
        provider: meter_provider(exporter, setup),
        written: preload_probe(UPSTREAM_METRICS_TRACEPOINT),
    })
}

fn upstream_spans(_setup: &Setup) -> Result<SpanPipeline> {
    let processor = opentelemetry_user_events_trace::Processor::builder(UPSTREAM_TRACE_PROVIDER)
        .build()
        .map_err(|e| anyhow::anyhow!("opentelemetry_user_events_trace::Processor: {e}"))?;
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(processor)
            .build(),
        written: preload_probe(UPSTREAM_TRACE_TRACEPOINT),
    })
}

fn endpoint(setup: &Setup, path: &str) -> Result<String> {
    let base = setup
        .endpoint
        .as_deref()
        .context("otlp-http needs --endpoint (the URL of an OTLP/HTTP receiver)")?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

fn otlp_metrics(setup: &Setup) -> Result<MetricsPipeline> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint(setup, "/v1/metrics")?)
        .with_temporality(Temporality::Delta)
        .build()
        .context("opentelemetry_otlp::MetricExporter")?;
    Ok(MetricsPipeline {
        provider: meter_provider(exporter, setup),
        // The receiver counts what arrived; the driver reads its totals.
        written: Box::new(Written::default),
    })
}

fn otlp_spans(setup: &Setup) -> Result<SpanPipeline> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint(setup, "/v1/traces")?)
        .build()
        .context("opentelemetry_otlp::SpanExporter")?;
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        provider: batch_provider(exporter, setup),
        written: Box::new(Written::default),
    })
}

/// Counts what it is handed and drops it.
#[derive(Clone, Debug, Default)]
struct Counter {
    items: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Counter {
    fn add(&self, items: usize) {
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn probe(&self) -> Probe {
        let c = self.clone();
        Box::new(move || Written {
            items: Some(c.items.load(Ordering::Relaxed)),
            events: Some(c.calls.load(Ordering::Relaxed)),
        })
    }
}

/// A metrics exporter that drops everything, counting the data points.
#[derive(Debug)]
struct DropMetrics(Counter);

fn points<T>(data: &MetricData<T>) -> usize {
    match data {
        MetricData::Gauge(g) => g.data_points().count(),
        MetricData::Sum(s) => s.data_points().count(),
        MetricData::Histogram(h) => h.data_points().count(),
        MetricData::ExponentialHistogram(h) => h.data_points().count(),
    }
}

impl PushMetricExporter for DropMetrics {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let n = metrics
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| match m.data() {
                AggregatedMetrics::F64(d) => points(d),
                AggregatedMetrics::U64(d) => points(d),
                AggregatedMetrics::I64(d) => points(d),
            })
            .sum();
        self.0.add(n);
        Ok(())
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

/// A span exporter that drops every batch, counting the spans.
#[derive(Debug)]
struct DropSpans(Counter);

impl SpanExporter for DropSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.add(batch.len());
        Ok(())
    }
}

/// A span processor that drops each span as it ends, counting them.
#[derive(Debug)]
struct DropProcessor(Counter);

impl SpanProcessor for DropProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, _span: SpanData) {
        self.0.add(1);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn sdk_only_metrics(setup: &Setup) -> Result<MetricsPipeline> {
    let counter = Counter::default();
    Ok(MetricsPipeline {
        written: counter.probe(),
        provider: meter_provider(DropMetrics(counter), setup),
    })
}

fn sdk_only_spans(setup: &Setup) -> Result<SpanPipeline> {
    let counter = Counter::default();
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        written: counter.probe(),
        provider: batch_provider(DropSpans(counter), setup),
    })
}

fn sdk_always_off_spans(_setup: &Setup) -> Result<SpanPipeline> {
    let counter = Counter::default();
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        // Records nothing by design: there is no "every item exported" to check.
        written: Box::new(Written::default),
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .with_span_processor(DropProcessor(counter))
            .build(),
    })
}

fn api_noop_spans(_setup: &Setup) -> Result<SpanPipeline> {
    Ok(SpanPipeline {
        tracer: TracerKind::Noop,
        // Records nothing by design.
        written: Box::new(Written::default),
        provider: SdkTracerProvider::builder().build(),
    })
}

fn sdk_only_sync_spans(_setup: &Setup) -> Result<SpanPipeline> {
    let counter = Counter::default();
    Ok(SpanPipeline {
        tracer: TracerKind::Sdk,
        written: counter.probe(),
        provider: SdkTracerProvider::builder()
            .with_resource(resource())
            .with_span_processor(DropProcessor(counter))
            .build(),
    })
}
