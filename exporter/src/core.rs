//! What the metrics, span and log exporters share: configuration, the tracepoint writer, the
//! counters, shutdown, and turning packed events into writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::otel_warn;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use crate::encode::Oversize;
use crate::error::BuildError;
use crate::layout;
use crate::stats::ExporterStats;
use crate::writer::{EventCapture, Registration, Writer};

/// The smallest buffer limit accepted: room for a minimal request around one small item.
pub(crate) const MIN_MAX_BUFFER: usize = 64;

/// The settings every builder shares, each a method on a builder with a `config: Config`
/// field: written once here rather than once per builder.
macro_rules! tracepoint_settings {
    ($default_name:literal) => {
        #[doc = concat!("The tracepoint name (default `", $default_name, "`).")]
        pub fn with_tracepoint_name(mut self, name: impl Into<String>) -> Self {
            self.config.name = name.into();
            self
        }

        /// The largest OTLP buffer per event, in bytes (default 8,168).
        ///
        /// 8,168 is the most that reaches a perf reader: the kernel stages each event for perf
        /// in 8,192 bytes and silently drops larger ones while `writev` reports success. Values
        /// up to 65,360 are accepted but are safe only for ftrace readers; larger ones are
        /// refused.
        pub fn with_max_buffer_size(mut self, bytes: usize) -> Self {
            self.config.max_buffer = bytes;
            self
        }

        /// Writes into `capture` instead of the kernel (tests and dry runs).
        pub fn with_capture(mut self, capture: $crate::EventCapture) -> Self {
            self.config.capture = Some(capture);
            self
        }
    };
}
pub(crate) use tracepoint_settings;

/// Settings common to every exporter's builder.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) max_buffer: usize,
    pub(crate) capture: Option<EventCapture>,
}

impl Config {
    pub(crate) fn new(default_name: &str) -> Self {
        Self {
            name: default_name.to_owned(),
            max_buffer: layout::DEFAULT_MAX_BUFFER,
            capture: None,
        }
    }

    /// Validates the settings and registers the tracepoint.
    pub(crate) fn build(self, what: &'static str) -> Result<Core, BuildError> {
        layout::validate_name(&self.name)?;
        if self.max_buffer > layout::FTRACE_MAX_BUFFER {
            return Err(BuildError::BufferTooLarge {
                requested: self.max_buffer,
                max: layout::FTRACE_MAX_BUFFER,
            });
        }
        if self.max_buffer < MIN_MAX_BUFFER {
            return Err(BuildError::BufferTooSmall {
                requested: self.max_buffer,
                min: MIN_MAX_BUFFER,
            });
        }
        let writer = match self.capture {
            Some(capture) => Writer::capture(capture),
            None => Writer::register(&self.name),
        };
        if let Registration::Failed { .. } = writer.registration() {
            // Said once, here; exports then return Ok quietly and count the skip.
            otel_warn!(
                name: "UserEvents.RegistrationFailed",
                exporter = what,
                tracepoint = self.name.as_str(),
                reason = writer.registration().to_string()
            );
        }
        Ok(Core {
            name: self.name,
            max_buffer: self.max_buffer,
            writer: Arc::new(writer),
            stats: ExporterStats::default(),
            shutdown: AtomicBool::new(false),
        })
    }
}

/// A registered tracepoint with its counters and limit.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: String,
    pub(crate) max_buffer: usize,
    writer: Arc<Writer>,
    pub(crate) stats: ExporterStats,
    shutdown: AtomicBool,
}

impl Core {
    pub(crate) fn registration(&self) -> &Registration {
        self.writer.registration()
    }

    #[inline]
    pub(crate) fn listening(&self) -> bool {
        self.writer.enabled()
    }

    pub(crate) fn listener(&self) -> Listener {
        Listener(self.writer.clone())
    }

    #[inline]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Writes one event of `items` items and counts it, or its loss, in the stats.
    fn write_event(&self, event: &[u8], items: usize) -> Result<(), i32> {
        let written = self.writer.write(event);
        match written {
            Ok(()) => self.stats.written(event.len(), items),
            Err(errno) => self.stats.write_failed(errno, items),
        }
        written
    }

    /// A sink that writes each event; losses are counted in the stats.
    pub(crate) fn sink(&self) -> impl FnMut(&[u8], usize) + '_ {
        |event, items| {
            let _ = self.write_event(event, items);
        }
    }

    pub(crate) fn wait_for_listener(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.listening() {
            if std::time::Instant::now() >= deadline || !self.registration().is_active() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    /// Checks shutdown and the listener. `Ok(false)`: nothing to do, and the skip is counted.
    #[inline(always)]
    pub(crate) fn should_export(&self) -> Result<bool, OTelSdkError> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if !self.writer.enabled() {
            self.stats.skipped_no_listener();
            return Ok(false);
        }
        Ok(true)
    }

    /// Runs `pack` with a sink that writes each event, then reports what was lost as the
    /// export's result.
    pub(crate) fn write_packed(
        &self,
        what: &str,
        pack: impl FnOnce(&mut dyn FnMut(&[u8], usize)) -> Oversize,
    ) -> OTelSdkResult {
        let mut failed: Vec<(i32, usize)> = Vec::new();
        let mut sink = |event: &[u8], items: usize| {
            if let Err(errno) = self.write_event(event, items) {
                failed.push((errno, items));
            }
        };
        let oversize = pack(&mut sink);
        self.stats.oversize(oversize.total());
        if oversize.dropped.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let mut msg = String::new();
        for (name, n) in &oversize.dropped {
            msg += &format!(
                "dropped {n} {what} of {name:?}: each exceeds the {} byte limit of tracepoint {} even alone; ",
                self.max_buffer, self.name
            );
        }
        for (errno, items) in &failed {
            msg += &format!(
                "write to tracepoint {} failed with errno {errno}, losing {items} {what}; ",
                self.name
            );
        }
        Err(OTelSdkError::InternalFailure(
            msg.trim_end_matches("; ").to_owned(),
        ))
    }

    pub(crate) fn shutdown(&self) -> OTelSdkResult {
        if self.shutdown.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.writer.unregister();
        Ok(())
    }
}

/// Tells whether a reader listens to a tracepoint right now (the kernel's enable bit): what
/// [`ListenerAwareSampler`](crate::ListenerAwareSampler) and
/// [`ListenerAwareReader`](crate::ListenerAwareReader) consult. Cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct Listener(Arc<Writer>);

impl Listener {
    /// True while a reader listens: one relaxed atomic load.
    #[inline]
    pub fn listening(&self) -> bool {
        self.0.enabled()
    }
}
