//! The only place the exporter touches the kernel: registering a user_events tracepoint and
//! writing events to it. [`EventCapture`] replaces the kernel with memory, for tests and dry
//! runs; it receives exactly the bytes that `writev` would have sent after the write index.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracepoint::{EventDataDescriptor, TracepointState};

use crate::layout;

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
            Self::Failed { errno } => {
                let why = match *errno {
                    libc_errno::ENOTSUP => {
                        "no tracefs is mounted; mount it with \
                         `mount -t tracefs nodev /sys/kernel/tracing`"
                    }
                    libc_errno::ENOENT => {
                        "tracefs has no user_events_data: the kernel is built without \
                         CONFIG_USER_EVENTS (needs Linux 6.4 or later with it enabled)"
                    }
                    libc_errno::EACCES | libc_errno::EPERM => {
                        "permission denied on tracefs user_events_data: run as root or grant \
                         the process's user write access to <tracefs>/user_events_data"
                    }
                    libc_errno::EADDRINUSE => {
                        "a tracepoint of this name is already registered with another field \
                         layout; pick another name or remove the old one"
                    }
                    libc_errno::EINVAL => "the kernel rejected the tracepoint definition",
                    _ => "registration failed",
                };
                write!(f, "user_events registration failed (errno {errno}): {why}")
            }
        }
    }
}

/// errno values, spelled out here so the crate also builds where `libc` lacks them.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const EINVAL: i32 = 22;
    pub const ENOTSUP: i32 = 95;
    pub const EADDRINUSE: i32 = 98;
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
    Kernel(Pin<Box<TracepointState>>),
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
        let state = Box::pin(TracepointState::new(0));
        let definition = std::ffi::CString::new(layout::definition(name))
            .expect("validated names contain no NUL");
        // SAFETY: `register` requires that the state is not deallocated while registered.
        // It is pinned in a Box owned by this Writer, and TracepointState unregisters itself
        // in Drop before the Box frees it.
        let errno = unsafe { state.as_ref().register(&definition) };
        let registration = if errno == 0 {
            Registration::Registered
        } else {
            Registration::Failed { errno }
        };
        Self {
            backend: Backend::Kernel(state),
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
            Backend::Kernel(state) => state.enabled(),
            Backend::Capture(c) => c.0.listening.load(Ordering::Relaxed),
        }
    }

    /// Writes one event whose buffer is `otlp`. Returns the errno on failure; EBADF means
    /// the last reader went away since [`enabled`](Self::enabled) was checked.
    pub(crate) fn write(&self, otlp: &[u8]) -> Result<(), i32> {
        let header = layout::header(otlp.len());
        match &self.backend {
            Backend::Kernel(state) => {
                let mut data = [
                    EventDataDescriptor::zero(),
                    EventDataDescriptor::from_bytes(&header),
                    EventDataDescriptor::from_bytes(otlp),
                ];
                match state.write(&mut data) {
                    0 => Ok(()),
                    errno => Err(errno),
                }
            }
            Backend::Capture(c) => {
                if !c.0.listening.load(Ordering::Relaxed) {
                    return Err(9); // EBADF, as the kernel path reports a disabled tracepoint
                }
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
        if let Backend::Kernel(state) = &self.backend {
            state.unregister();
        }
    }
}
