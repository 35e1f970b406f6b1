//! What the metrics and span exporters share: configuration, the tracepoint writer, the
//! counters, shutdown, and turning packed events into writes.

use std::sync::Mutex;
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

/// Settings common to both exporters' builders.
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
            writer,
            stats: ExporterStats::default(),
            shutdown: AtomicBool::new(false),
            buf: Mutex::new(Vec::with_capacity(self.max_buffer)),
        })
    }
}

/// A registered tracepoint with its counters and limit.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: String,
    pub(crate) max_buffer: usize,
    writer: Writer,
    pub(crate) stats: ExporterStats,
    shutdown: AtomicBool,
    /// Encoding scratch, reused across exports (the SDK calls export from one thread at a time).
    buf: Mutex<Vec<u8>>,
}

impl Core {
    pub(crate) fn registration(&self) -> &Registration {
        self.writer.registration()
    }

    pub(crate) fn listening(&self) -> bool {
        self.writer.enabled()
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
    #[inline]
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

    /// Runs `pack` with the scratch buffer and a sink that writes each event, then reports
    /// what was lost as the export's result.
    pub(crate) fn write_packed(
        &self,
        what: &str,
        pack: impl FnOnce(usize, &mut Vec<u8>, &mut dyn FnMut(&[u8], usize)) -> Oversize,
    ) -> OTelSdkResult {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed: Vec<(i32, usize)> = Vec::new();
        let mut sink = |event: &[u8], items: usize| match self.writer.write(event) {
            Ok(()) => self.stats.written(event.len(), items),
            Err(errno) => {
                self.stats.write_failed(errno, items);
                failed.push((errno, items));
            }
        };
        let oversize = pack(self.max_buffer, &mut buf, &mut sink);
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
