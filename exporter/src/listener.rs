//! Costing nothing while nobody listens, across the whole path: a sampler that makes spans
//! non-recording while the traces tracepoint is off, and a periodic metric reader that does
//! not even collect while the metrics tracepoint is off.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

use crate::background::Background;
use crate::core::Listener;
use crate::error::BuildError;
use crate::metrics::MetricsExporter;

/// A sampler that drops every span while nobody listens to the traces tracepoint, and asks
/// the wrapped sampler otherwise.
///
/// A dropped span is non-recording: the SDK allocates nothing for it, collects no
/// attributes or events, and calls no processor, so an instrumented request costs little
/// more than with tracing off. The trade-offs, while nobody listens:
/// - the span context this process propagates is not sampled, so downstream services whose
///   sampler follows the parent (`ParentBased`, the SDK's default) drop their spans too;
/// - spans that started before a reader attached stay unrecorded when they end.
///
/// ```
/// use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
/// use otlp_user_events::{ListenerAwareSampler, UserEventsSpanProcessor};
///
/// let processor = UserEventsSpanProcessor::builder().build()?;
/// let provider = SdkTracerProvider::builder()
///     .with_sampler(ListenerAwareSampler::new(processor.listener(), Sampler::AlwaysOn))
///     .with_span_processor(processor)
///     .build();
/// # provider.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ListenerAwareSampler<S> {
    listener: Listener,
    inner: S,
}

impl<S: ShouldSample + Clone + 'static> ListenerAwareSampler<S> {
    /// Wraps `inner`, consulting `listener` (from
    /// [`UserEventsSpanProcessor::listener`](crate::UserEventsSpanProcessor::listener) or
    /// [`SpanExporter::listener`](crate::SpanExporter::listener)) for every new span.
    pub fn new(listener: Listener, inner: S) -> Self {
        Self { listener, inner }
    }
}

impl<S: ShouldSample + Clone + 'static> ShouldSample for ListenerAwareSampler<S> {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if self.listener.listening() {
            return self.inner.should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            );
        }
        SamplingResult {
            decision: SamplingDecision::Drop,
            attributes: Vec::new(),
            // Keep the parent's trace state so it still propagates.
            trace_state: match parent_context {
                Some(cx) if cx.has_active_span() => cx.span().span_context().trace_state().clone(),
                _ => TraceState::NONE,
            },
        }
    }
}

/// The default interval of [`ListenerAwareReader`], the SDK `PeriodicReader`'s default.
pub const DEFAULT_READER_INTERVAL: Duration = Duration::from_secs(60);

/// A periodic metric reader for [`MetricsExporter`] that collects and exports only while a
/// reader listens to the metrics tracepoint: while nobody does, the SDK's aggregation is not
/// even read, so a collection cycle costs one atomic load.
///
/// Measurements are still aggregated in the meantime (the SDK offers no way to skip that),
/// and nothing is lost by not collecting, only postponed:
/// - **Delta** temporality: the first collection after a reader attaches reports everything
///   recorded since the last collection, as one longer interval (its start time is that of
///   the last collection); the SDK keeps each series seen since then in memory until that
///   collection, bounded by its cardinality limit.
/// - **Cumulative** temporality: every collection reports totals since the start anyway; the
///   skipped ones are simply not exported.
///
/// `force_flush` and `shutdown` collect and export at once, if a reader listens.
///
/// ```
/// use opentelemetry_sdk::metrics::SdkMeterProvider;
/// use otlp_user_events::{ListenerAwareReader, MetricsExporter};
///
/// let exporter = MetricsExporter::builder().build()?;
/// let provider = SdkMeterProvider::builder()
///     .with_reader(ListenerAwareReader::builder(exporter).build()?)
///     .build();
/// # provider.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ListenerAwareReader {
    shared: Arc<ReaderShared>,
    /// Collects and exports every interval.
    ticker: Background,
}

struct ReaderShared {
    manual: ManualReader,
    exporter: MetricsExporter,
    listener: Listener,
    interval: Duration,
    /// Reused across collections.
    metrics: Mutex<ResourceMetrics>,
    skipped: AtomicU64,
}

impl fmt::Debug for ListenerAwareReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerAwareReader")
            .field("exporter", &self.shared.exporter)
            .field("interval", &self.shared.interval)
            .finish()
    }
}

impl ListenerAwareReader {
    /// A builder around `exporter`, collecting every 60 s.
    pub fn builder(exporter: MetricsExporter) -> ListenerAwareReaderBuilder {
        ListenerAwareReaderBuilder {
            exporter,
            interval: DEFAULT_READER_INTERVAL,
        }
    }

    /// Collections skipped because nobody listened.
    pub fn skipped_collections(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }
}

impl ReaderShared {
    fn collect_and_export(&self) -> OTelSdkResult {
        if !self.listener.listening() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        self.manual.collect(&mut metrics)?;
        // The exporter's future is ready at once: it writes synchronously.
        let mut export = pin!(self.exporter.export(&metrics));
        match export
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result,
            Poll::Pending => Err(OTelSdkError::InternalFailure(
                "the metrics exporter did not complete synchronously".into(),
            )),
        }
    }

    /// The timer's work: one collection and export, its failure logged.
    fn tick(&self) {
        if let Err(e) = self.collect_and_export() {
            opentelemetry::otel_debug!(
                name: "UserEvents.ReaderExportFailed",
                error = e.to_string()
            );
        }
    }
}

impl MetricReader for ListenerAwareReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.shared.manual.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.shared.manual.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.shared.collect_and_export()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ticker.stop();
        let last = self.shared.collect_and_export();
        let reader = self.shared.manual.shutdown_with_timeout(timeout);
        let exporter = self.shared.exporter.shutdown_with_timeout(timeout);
        last.and(reader).and(exporter)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.shared.manual.temporality(kind)
    }
}

/// Configures a [`ListenerAwareReader`].
#[derive(Debug)]
pub struct ListenerAwareReaderBuilder {
    exporter: MetricsExporter,
    interval: Duration,
}

impl ListenerAwareReaderBuilder {
    /// How often to collect and export while a reader listens (default 60 s).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Starts the reader's timer thread.
    pub fn build(self) -> Result<ListenerAwareReader, BuildError> {
        if self.interval.is_zero() {
            return Err(BuildError::ZeroDelay);
        }
        let shared = Arc::new(ReaderShared {
            manual: ManualReader::builder()
                .with_temporality(self.exporter.temporality())
                .build(),
            listener: self.exporter.listener(),
            exporter: self.exporter,
            interval: self.interval,
            metrics: Mutex::new(ResourceMetrics::default()),
            skipped: AtomicU64::new(0),
        });
        let ticker = {
            let shared = shared.clone();
            let interval = self.interval;
            Background::spawn("otlp-user-events-metrics", interval, move || {
                shared.tick();
                interval
            })
            .map_err(BuildError::Thread)?
        };
        Ok(ListenerAwareReader { shared, ticker })
    }
}
