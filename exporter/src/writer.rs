//! The only place the exporter touches the kernel: a tracepoint registered and written
//! through [`ue_wire::Tracepoint`], or [`EventCapture`], which replaces the kernel with
//! memory for tests and dry runs; it receives exactly the bytes that `writev` would have
//! sent after the write index.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ue_wire::Tracepoint;

use crate::layout;

/// EBADF, what the kernel path reports for a tracepoint nobody listens to.
const EBADF: i32 = 9;

/// Outcome of registering a tracepoint with the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Registration {
    /// The kernel accepted the tracepoint; events flow whenever a reader listens.
    Registered,
    /// Writing to an in-memory [`EventCapture`] instead of the kernel.
    Capture,
    /// The kernel refused; the exporter stays disabled and costs nothing.
    Failed {
        /// errno of the failed open or ioctl.
        errno: i32,
    },
}

impl Registration {
    /// Whether events can reach a reader at all.
    pub fn is_active(&self) -> bool {
        !matches!(self, Self::Failed { .. })
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registered => f.write_str("registered"),
            Self::Capture => f.write_str("writing to an in-memory capture"),
            Self::Failed { errno } => write!(
                f,
                "user_events registration failed (errno {errno}): {}",
                ue_wire::register_hint(*errno)
            ),
        }
    }
}

/// An in-memory stand-in for the kernel: records every event an exporter writes.
///
/// Each recorded event is the event's fields exactly as `writev` would send them after the
/// 4-byte write index: protocol, version, rel_loc, then the OTLP bytes. Decode one with
/// [`layout::decode`](crate::layout::decode). A capture starts out listening; switch it off
/// with [`set_listening`](Self::set_listening) to see what an exporter does with no reader.
#[derive(Clone, Debug)]
pub struct EventCapture(Arc<CaptureInner>);

#[derive(Debug)]
struct CaptureInner {
    listening: AtomicBool,
    events: Mutex<Vec<Vec<u8>>>,
}

impl Default for EventCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl EventCapture {
    /// A capture that listens and holds no events.
    pub fn new() -> Self {
        Self(Arc::new(CaptureInner {
            listening: AtomicBool::new(true),
            events: Mutex::new(Vec::new()),
        }))
    }

    /// Turns the simulated reader on or off (what the kernel's enable bit would say).
    pub fn set_listening(&self, listening: bool) {
        self.0.listening.store(listening, Ordering::Relaxed);
    }

    /// A copy of the events recorded so far.
    pub fn events(&self) -> Vec<Vec<u8>> {
        self.0
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes and returns the events recorded so far.
    pub fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

enum Backend {
    /// Registered with the kernel, or `None` when the kernel refused.
    Kernel(Option<Tracepoint>),
    Capture(EventCapture),
}

/// One registered tracepoint with the exporters' field layout.
pub(crate) struct Writer {
    backend: Backend,
    registration: Registration,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Registers `name` with the kernel. Failure is not an error here: the writer then
    /// reports [`Registration::Failed`] and stays disabled.
    pub(crate) fn register(name: &str) -> Self {
        let (tracepoint, registration) = match Tracepoint::register(name) {
            Ok(t) => (Some(t), Registration::Registered),
            Err(errno) => (None, Registration::Failed { errno }),
        };
        Self {
            backend: Backend::Kernel(tracepoint),
            registration,
        }
    }

    /// A writer that records into `capture` instead of the kernel.
    pub(crate) fn capture(capture: EventCapture) -> Self {
        Self {
            backend: Backend::Capture(capture),
            registration: Registration::Capture,
        }
    }

    pub(crate) fn registration(&self) -> &Registration {
        &self.registration
    }

    /// True while a reader listens: one relaxed atomic load on the kernel path.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        match &self.backend {
            Backend::Kernel(tracepoint) => tracepoint.as_ref().is_some_and(Tracepoint::enabled),
            Backend::Capture(c) => c.0.listening.load(Ordering::Relaxed),
        }
    }

    /// Writes one event whose buffer is `otlp`. Returns the errno on failure; EBADF means
    /// the last reader went away since [`enabled`](Self::enabled) was checked.
    pub(crate) fn write(&self, otlp: &[u8]) -> Result<(), i32> {
        match &self.backend {
            Backend::Kernel(Some(tracepoint)) => tracepoint.write(otlp),
            Backend::Kernel(None) => Err(EBADF),
            Backend::Capture(c) => {
                if !c.0.listening.load(Ordering::Relaxed) {
                    return Err(EBADF);
                }
                let header = layout::header(otlp.len());
                let mut event = Vec::with_capacity(header.len() + otlp.len());
                event.extend_from_slice(&header);
                event.extend_from_slice(otlp);
                c.0.events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(event);
                Ok(())
            }
        }
    }

    /// Unregisters from the kernel; later writes do nothing.
    pub(crate) fn unregister(&self) {
        if let Backend::Kernel(Some(tracepoint)) = &self.backend {
            tracepoint.unregister();
        }
    }
}
