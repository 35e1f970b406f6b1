//! Registering a user_events tracepoint with the [`layout`] and writing events to it: the
//! only place any crate of the project registers or writes a tracepoint, and this crate's
//! only `unsafe`.
//!
//! The kernel keeps a tracepoint while any registration of it is open, sets the
//! registration's enable bit while anyone listens, and drops the event when the last
//! registration closes. Writers check [`Tracepoint::enabled`] (one relaxed load) before
//! encoding anything.

use std::ffi::CString;
use std::fmt;
use std::pin::Pin;

use tracepoint::{EventDataDescriptor, TracepointState};

use crate::layout;

/// errno values, spelled out so the crate builds without `libc` (Linux's numbers).
mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EACCES: i32 = 13;
    pub const EINVAL: i32 = 22;
    pub const ENOTSUP: i32 = 95;
    pub const EADDRINUSE: i32 = 98;
}

/// What a refused registration's errno means, and how to fix it.
pub fn register_hint(errno: i32) -> &'static str {
    match errno {
        errno::ENOTSUP => {
            "no tracefs is mounted; mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
        }
        errno::ENOENT => {
            "tracefs has no user_events_data: the kernel is built without CONFIG_USER_EVENTS; \
             use a kernel with it (Linux 6.4 or later), e.g. the project's VM `scripts/vm.sh`"
        }
        errno::EACCES | errno::EPERM => {
            "permission denied on <tracefs>/user_events_data (mode 0640, root's): run as root, \
             grant CAP_DAC_OVERRIDE, or give this user write access to it (mount tracefs with \
             gid=GROUP and `chmod g+w` the file); a reader can also attach without registering \
             (ue-decoder run --no-register)"
        }
        errno::EADDRINUSE => {
            "the name is already registered with another field layout by another program; \
             use another tracepoint name"
        }
        errno::EINVAL => "the kernel rejected the tracepoint definition",
        _ => "user_events registration failed",
    }
}

/// A user_events tracepoint registered by this process. Dropping it unregisters.
pub struct Tracepoint {
    definition: String,
    state: Pin<Box<TracepointState>>,
}

impl Tracepoint {
    /// Registers `name` with the exporters' fields ([`layout::definition`]). On failure
    /// returns the errno of the failed open or ioctl ([`register_hint`] explains it);
    /// EINVAL for a name [`layout::validate_name`] refuses.
    pub fn register(name: &str) -> Result<Self, i32> {
        if layout::validate_name(name).is_err() {
            return Err(errno::EINVAL);
        }
        Self::register_definition(&layout::definition(name))
    }

    /// Registers `definition` (`"<name> <fields>"`) as given, whatever its fields: for tests
    /// that need a tracepoint of another layout. Returns the errno on failure.
    pub fn register_definition(definition: &str) -> Result<Self, i32> {
        let c_definition = CString::new(definition).map_err(|_| errno::EINVAL)?;
        let state = Box::pin(TracepointState::new(0));
        // SAFETY: `register` requires that the state is unregistered before its memory is
        // freed. The state is pinned in a Box owned by the returned Tracepoint and
        // `TracepointState` is `!Unpin`, so it is not moved; its Drop, which runs before
        // the Box frees it, unregisters it.
        match unsafe { state.as_ref().register(&c_definition) } {
            0 => Ok(Self {
                definition: definition.to_owned(),
                state,
            }),
            errno => Err(errno),
        }
    }

    /// The definition it was registered with.
    pub fn definition(&self) -> &str {
        &self.definition
    }

    /// True while some perf event or ftrace instance listens: one relaxed atomic load.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.state.enabled()
    }

    /// Writes one event whose buffer is `otlp`: the [`layout::header`] and the bytes, in
    /// one `writev`. Returns the errno on failure; EBADF means nobody listens (any more).
    ///
    /// # Panics
    /// If `otlp` is longer than [`layout::FTRACE_MAX_BUFFER`].
    pub fn write(&self, otlp: &[u8]) -> Result<(), i32> {
        let header = layout::header(otlp.len());
        let mut data = [
            EventDataDescriptor::zero(),
            EventDataDescriptor::from_bytes(&header),
            EventDataDescriptor::from_bytes(otlp),
        ];
        match self.state.write(&mut data) {
            0 => Ok(()),
            errno => Err(errno),
        }
    }

    /// Writes `fields` as the event's fields, byte for byte, in one `writev`: for tests
    /// that write events of another layout, or malformed ones. Returns the errno on failure.
    pub fn write_fields(&self, fields: &[u8]) -> Result<(), i32> {
        let mut data = [
            EventDataDescriptor::zero(),
            EventDataDescriptor::from_bytes(fields),
        ];
        match self.state.write(&mut data) {
            0 => Ok(()),
            errno => Err(errno),
        }
    }

    /// Unregisters now, before the drop; later writes do nothing.
    pub fn unregister(&self) {
        self.state.unregister();
    }
}

impl fmt::Debug for Tracepoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracepoint")
            .field("definition", &self.definition)
            .field("enabled", &self.enabled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_fix() {
        assert!(register_hint(errno::ENOENT).contains("CONFIG_USER_EVENTS"));
        assert!(register_hint(errno::EADDRINUSE).contains("another field layout"));
        assert!(register_hint(errno::EACCES).contains("permission"));
        assert!(register_hint(errno::ENOTSUP).contains("tracefs"));
    }

    #[test]
    fn invalid_names_are_refused_before_the_kernel() {
        assert_eq!(
            Tracepoint::register("has space").unwrap_err(),
            errno::EINVAL
        );
        assert_eq!(
            Tracepoint::register_definition("nul\0byte").unwrap_err(),
            errno::EINVAL
        );
    }
}
