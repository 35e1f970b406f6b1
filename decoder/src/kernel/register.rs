//! Registering a tracepoint from the reader's side, so the reader can attach before any
//! application starts and the tracepoint outlives the applications that write it.

use ue_wire::{Tracepoint, layout};

use crate::kernel::ReaderError;

/// The fields of every EventHeader tracepoint, as the `eventheader` crate registers them.
pub(crate) const EVENTHEADER_FIELDS: &str =
    "u8 eventheader_flags; u8 version; u16 id; u16 tag; u8 opcode; u8 level";

/// A user_events tracepoint registered with exactly the exporters' layout
/// ([`layout::definition`]). The kernel keeps the tracepoint while any registration of it
/// is open, so holding one keeps the event (and the reader's perf events on it) alive
/// across application restarts. Dropping it unregisters.
///
/// The kernel finds user_events through the tracefs listed in `/proc/mounts` (the
/// `tracepoint` crate's lookup), whatever tracefs path the reader was given.
#[derive(Debug)]
pub struct Registration {
    name: String,
    tracepoint: Tracepoint,
}

impl Registration {
    /// Registers `name` with the fields `u32 protocol;char[8] version;__rel_loc u8[] buffer`.
    ///
    /// Fails if the kernel has no user_events, if the caller may not write
    /// `user_events_data`, or if the name is registered with another layout.
    pub fn register(name: &str) -> Result<Self, ReaderError> {
        layout::validate_name(name).map_err(|e| ReaderError::Config {
            problem: e.to_string(),
        })?;
        let tracepoint = Tracepoint::register(name).map_err(|errno| ReaderError::Register {
            tracepoint: name.to_owned(),
            errno,
        })?;
        Ok(Self {
            name: name.to_owned(),
            tracepoint,
        })
    }

    /// Registers `name` (`<provider>_L<level>K<keyword>`) with the EventHeader fields
    /// `u8 eventheader_flags; u8 version; u16 id; u16 tag; u8 opcode; u8 level`, exactly
    /// as the `eventheader` crate does, so that the applications' registrations match it.
    pub fn register_eventheader(name: &str) -> Result<Self, ReaderError> {
        let definition = format!("{name} {EVENTHEADER_FIELDS}");
        let tracepoint = Tracepoint::register_definition(&definition).map_err(|errno| {
            ReaderError::Register {
                tracepoint: name.to_owned(),
                errno,
            }
        })?;
        Ok(Self {
            name: name.to_owned(),
            tracepoint,
        })
    }

    /// The tracepoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether some perf event or ftrace instance is listening to the tracepoint now
    /// (the kernel's enable bit for this registration).
    pub fn listened_to(&self) -> bool {
        self.tracepoint.enabled()
    }
}
