//! The span exporter.

use std::fmt;
use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as SdkSpanExporter};

use crate::core::{Config, Core};
use crate::encode::trace::{self, LEVELS};
use crate::error::BuildError;
use crate::layout;
use crate::pack::Packer;
use crate::stats::ExporterStats;
use crate::writer::Registration;

/// Writes spans as OTLP protobuf to a user_events tracepoint (`otlp_traces` by default),
/// packing as many spans into each event as fit under the buffer limit, grouped by
/// instrumentation scope.
///
/// Works with the SDK's batch and simple span processors; see the crate docs.
pub struct SpanExporter {
    core: Core,
    resource: Resource,
    /// Encoding buffers, reused across exports.
    packer: Mutex<Packer<LEVELS>>,
}

impl fmt::Debug for SpanExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanExporter")
            .field("tracepoint", &self.core.name)
            .field("max_buffer", &self.core.max_buffer)
            .field("registration", self.core.registration())
            .finish()
    }
}

impl SpanExporter {
    /// A builder with the defaults: tracepoint `otlp_traces`, 8,168-byte buffers.
    pub fn builder() -> SpanExporterBuilder {
        SpanExporterBuilder {
            config: Config::new(layout::TRACES_TRACEPOINT),
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
    fn write(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut packer = self.packer.lock().unwrap_or_else(|e| e.into_inner());
        self.core.write_packed("spans", |sink| {
            trace::pack(&mut packer, &self.resource, &batch, sink)
        })
    }
}

impl SdkSpanExporter for SpanExporter {
    #[inline]
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        // All work is synchronous (a few writev calls); nothing is held across an await.
        ready(match self.core.should_export() {
            Ok(true) => self.write(batch),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.core.shutdown()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// Configures a [`SpanExporter`].
#[derive(Debug)]
pub struct SpanExporterBuilder {
    config: Config,
}

impl SpanExporterBuilder {
    crate::core::tracepoint_settings!("otlp_traces");

    /// Validates the settings and registers the tracepoint. A failed registration is not an
    /// error: the exporter is then disabled, says why once, and reports it in
    /// [`SpanExporter::registration`].
    pub fn build(self) -> Result<SpanExporter, BuildError> {
        let core = self.config.build("traces")?;
        Ok(SpanExporter {
            packer: Mutex::new(Packer::new(core.max_buffer)),
            core,
            resource: Resource::builder_empty().build(),
        })
    }
}
