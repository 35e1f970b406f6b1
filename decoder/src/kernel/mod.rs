//! Reading the kernel: finding tracefs, registering the tracepoints, opening one perf event
//! per CPU and tracepoint, and parsing the ring buffers' records into [`Event`]s.
//!
//! This layer owns every syscall and all of the crate's `unsafe` (in `sys`, each block with
//! its SAFETY comment); no other layer touches the kernel. It must not decode OTLP, batch or
//! send: it hands out each event's fields and counts what the kernel lost.

mod error;
mod perf;
mod privilege;
mod reader;
mod register;
mod ring;
mod sample;
mod sys;
mod tracefs;

pub use error::ReaderError;
pub use privilege::{Dropped, PrivilegeError, drop_privileges};
pub use reader::{Event, ReaderConfig, TracepointReader};
pub use register::Registration;
#[cfg(feature = "fuzzing")]
pub(crate) use ring::{Record, Ring};
pub(crate) use sample::Sample;
#[cfg(feature = "fuzzing")]
pub(crate) use sys::RingMemory;
pub(crate) use sys::try_lock_exclusive;
pub use tracefs::{Format, FormatError, FormatField, LayoutMismatch, Tracefs};
