//! The log exporter.

use std::fmt;
use std::future::{Future, ready};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::logs::Severity;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as SdkLogExporter};

use crate::core::{Config, Core};
use crate::encode::logs::{self, LEVELS};
use crate::error::BuildError;
use crate::layout;
use crate::pack::Packer;
use crate::stats::ExporterStats;
use crate::writer::Registration;

/// Writes log records as OTLP protobuf to a user_events tracepoint (`otlp_logs` by default),
/// packing as many records into each event as fit under the buffer limit, grouped by
/// instrumentation scope (a record's target, such as the module path the `tracing` appender
/// sets, names its scope, as in OTLP exporters).
///
/// Works with the SDK's batch and simple log processors. With the simple processor, the SDK
/// asks the exporter whether a record is wanted before building it; while nobody listens the
/// answer is no, so a log statement then costs the SDK's check and one atomic load.
pub struct LogExporter {
    core: Core,
    resource: Resource,
    /// Encoding buffers, reused across exports.
    packer: Mutex<Packer<LEVELS>>,
}

impl fmt::Debug for LogExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogExporter")
            .field("tracepoint", &self.core.name)
            .field("max_buffer", &self.core.max_buffer)
            .field("registration", self.core.registration())
            .finish()
    }
}

impl LogExporter {
    /// A builder with the defaults: tracepoint `otlp_logs`, 8,168-byte buffers.
    pub fn builder() -> LogExporterBuilder {
        LogExporterBuilder {
            config: Config::new(layout::LOGS_TRACEPOINT),
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

    /// A handle that tells whether a reader listens.
    pub fn listener(&self) -> crate::Listener {
        self.core.listener()
    }

    /// Blocks until a reader listens or `timeout` passes; whether one listens. For short-lived
    /// programs whose output matters (batch jobs, tests). perf turns the enable bit on when
    /// it opens the event, a moment before it enables it: allow a short grace after this
    /// returns true before writing what must not be missed.
    pub fn wait_for_listener(&self, timeout: Duration) -> bool {
        self.core.wait_for_listener(timeout)
    }

    /// Whether the tracepoint registered, and if not, why.
    pub fn registration(&self) -> &Registration {
        self.core.registration()
    }

    /// Packs and writes an export. Out of line, so that [`export`](Self::export)'s check for
    /// a listener (all an export costs while nobody listens) inlines into its caller.
    #[inline(never)]
    fn write(&self, batch: &LogBatch<'_>) -> OTelSdkResult {
        let mut packer = self.packer.lock().unwrap_or_else(|e| e.into_inner());
        self.core.write_packed("log records", |sink| {
            logs::pack(&mut packer, &self.resource, batch, sink)
        })
    }
}

impl SdkLogExporter for LogExporter {
    #[inline]
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        // All work is synchronous (a few writev calls); nothing is held across an await.
        ready(match self.core.should_export() {
            Ok(true) => self.write(&batch),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.core.shutdown()
    }

    /// Whether a reader listens: nothing written while none does would reach anyone.
    #[inline]
    fn event_enabled(&self, _level: Severity, _target: &str, _name: Option<&str>) -> bool {
        self.core.listening()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// Configures a [`LogExporter`].
#[derive(Debug)]
pub struct LogExporterBuilder {
    config: Config,
}

impl LogExporterBuilder {
    crate::core::tracepoint_settings!("otlp_logs");

    /// Validates the settings and registers the tracepoint. A failed registration is not an
    /// error: the exporter is then disabled, says why once, and reports it in
    /// [`LogExporter::registration`].
    pub fn build(self) -> Result<LogExporter, BuildError> {
        let core = self.config.build("logs")?;
        Ok(LogExporter {
            packer: Mutex::new(Packer::new(core.max_buffer)),
            core,
            resource: Resource::builder_empty().build(),
        })
    }
}
