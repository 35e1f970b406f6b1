//! The metrics exporter.

use std::fmt;
use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::core::{Config, Core};
use crate::encode::metrics::{self, LEVELS};
use crate::error::BuildError;
use crate::layout;
use crate::pack::Packer;
use crate::stats::ExporterStats;
use crate::writer::Registration;

/// Writes metrics as OTLP protobuf to a user_events tracepoint (`otlp_metrics` by default),
/// packing as many data points into each event as fit under the buffer limit.
///
/// Register it with the SDK through a `PeriodicReader`; see the crate docs.
pub struct MetricsExporter {
    core: Core,
    temporality: Temporality,
    /// Encoding buffers, reused across exports (the SDK exports from one thread at a time).
    packer: Mutex<Packer<LEVELS>>,
}

impl fmt::Debug for MetricsExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsExporter")
            .field("tracepoint", &self.core.name)
            .field("max_buffer", &self.core.max_buffer)
            .field("temporality", &self.temporality)
            .field("registration", self.core.registration())
            .finish()
    }
}

impl MetricsExporter {
    /// A builder with the defaults: tracepoint `otlp_metrics`, 8,168-byte buffers, delta
    /// temporality.
    pub fn builder() -> MetricsExporterBuilder {
        MetricsExporterBuilder {
            config: Config::new(layout::METRICS_TRACEPOINT),
            temporality: Temporality::Delta,
        }
    }

    /// A handle on this exporter's counters, usable after the exporter moved into the SDK.
    pub fn stats(&self) -> ExporterStats {
        self.core.stats.clone()
    }

    /// Whether a reader listens right now: the kernel's enable bit for the tracepoint.
    pub fn listening(&self) -> bool {
        self.core.listening()
    }

    /// A handle that tells whether a reader listens, for the listener-aware sampler and reader.
    pub fn listener(&self) -> crate::Listener {
        self.core.listener()
    }

    /// Blocks until a reader listens or `timeout` passes; whether one listens. For short-lived
    /// programs whose output matters (batch jobs, tests). perf turns the enable bit on when
    /// it opens the event, a moment before it enables it: allow a short grace after this
    /// returns true before writing what must not be missed.
    pub fn wait_for_listener(&self, timeout: std::time::Duration) -> bool {
        self.core.wait_for_listener(timeout)
    }

    /// Whether the tracepoint registered, and if not, why.
    pub fn registration(&self) -> &Registration {
        self.core.registration()
    }

    /// Packs and writes an export. Out of line, so that [`export`](Self::export)'s check for
    /// a listener (all an export costs while nobody listens) inlines into its caller.
    #[inline(never)]
    fn write(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut packer = self.packer.lock().unwrap_or_else(|e| e.into_inner());
        self.core.write_packed("data points", |sink| {
            metrics::pack(&mut packer, metrics, sink)
        })
    }
}

impl PushMetricExporter for MetricsExporter {
    #[inline]
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        // All work is synchronous (a few writev calls); nothing is held across an await.
        ready(match self.core.should_export() {
            Ok(true) => self.write(metrics),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Every export writes its events before returning; nothing is buffered.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.core.shutdown()
    }

    fn temporality(&self) -> Temporality {
        self.temporality
    }
}

/// Configures a [`MetricsExporter`].
#[derive(Debug)]
pub struct MetricsExporterBuilder {
    config: Config,
    temporality: Temporality,
}

impl MetricsExporterBuilder {
    crate::core::tracepoint_settings!("otlp_metrics");

    /// Delta (the default, as the upstream crate) or cumulative temporality.
    pub fn with_temporality(mut self, temporality: Temporality) -> Self {
        self.temporality = temporality;
        self
    }

    /// Validates the settings and registers the tracepoint. A failed registration is not an
    /// error: the exporter is then disabled, says why once, and reports it in
    /// [`MetricsExporter::registration`].
    pub fn build(self) -> Result<MetricsExporter, BuildError> {
        let core = self.config.build("metrics")?;
        Ok(MetricsExporter {
            packer: Mutex::new(Packer::new(core.max_buffer)),
            core,
            temporality: self.temporality,
        })
    }
}
