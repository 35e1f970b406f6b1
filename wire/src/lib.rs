//! The wire contract between the `otlp-user-events` exporters, which write OTLP protobuf to
//! Linux [user_events](https://docs.kernel.org/trace/user_events.html) tracepoints, and the
//! readers that take it back out (`ue-decoder`, `perf record`). Both sides use this crate,
//! and only this crate, for what they must agree on:
//!
//! - [`layout`]: tracepoint names, the field layout, the `__rel_loc` encoding and the size
//!   limits (pure: bytes in, values out);
//! - [`Signal`] and [`TracepointNames`]: which OTLP signal a tracepoint carries;
//! - [`Tracepoint`]: registering a tracepoint with that layout and writing events to it,
//!   with [`register_hint`] explaining a refused registration.
//!
//! It depends on no OpenTelemetry crate, so a reader does not pull in the SDK.
//!
//! ```
//! use ue_wire::{Signal, layout};
//!
//! // What an exporter writes after the write index: the 16-byte header, then the OTLP bytes.
//! let otlp = b"\x0a\x00"; // an ExportMetricsServiceRequest, encoded
//! let mut fields = layout::header(otlp.len()).to_vec();
//! fields.extend_from_slice(otlp);
//!
//! // What a reader gets back from the event's fields.
//! let payload = layout::decode(&fields)?;
//! assert_eq!(payload.buffer, otlp);
//! assert_eq!(Signal::Metrics.default_tracepoint(), layout::METRICS_TRACEPOINT);
//! # Ok::<(), layout::LayoutError>(())
//! ```

pub mod layout;
mod signal;
mod tracepoint;

pub use signal::{Signal, TracepointNames};
pub use tracepoint::{Tracepoint, register_hint};
