//! Reads the OTLP events that the `otlp-user-events` exporters write to Linux user_events
//! tracepoints, live, through perf ring buffers.
//!
//! [`TracepointReader`] opens one perf event per online CPU and tracepoint (`otlp_metrics`
//! and `otlp_traces` by default), all of a CPU's events sharing one ring buffer, and hands
//! out each event's fields; [`Event::payload`] decodes them with the layout the exporters
//! share ([`ue_wire::layout`]). It can register the tracepoints itself
//! ([`Registration`]) so it attaches before any application starts. Reading needs a kernel
//! with `CONFIG_USER_EVENTS` (Linux 6.4+), tracefs, and root or CAP_PERFMON; every error
//! says which is missing and how to fix it.
//!
//! ```no_run
//! use std::time::Duration;
//! use ue_decoder::{ReaderConfig, TracepointReader};
//!
//! let mut reader = TracepointReader::open(&ReaderConfig::default())?;
//! // From here on, every event written is captured or counted as lost.
//! loop {
//!     reader.wait(Duration::from_millis(500))?;
//!     reader.drain(|event| match event.payload() {
//!         Ok(p) => println!("{} cpu {}: {} bytes of OTLP", event.tracepoint, event.cpu, p.buffer.len()),
//!         Err(e) => eprintln!("{}: {e}", event.tracepoint),
//!     });
//!     if reader.lost_total() > 0 {
//!         eprintln!("lost: {:?}", reader.lost_by_cpu());
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pieces are usable alone: [`parse_format`] and [`Tracefs`] read a tracepoint's
//! format, [`Sample::parse`] parses a `PERF_RECORD_SAMPLE` body.

mod batcher;
mod decode;
mod error;
mod json;
mod perf;
mod perfdata;
mod pipeline;
mod reader;
mod register;
mod ring;
mod sample;
mod signal;
mod sink;
mod stats;
mod status;
mod sys;
mod tracefs;

pub use batcher::{BatchConfig, Batcher};
pub use decode::{Malformed, decode_event};
pub use error::ReaderError;
pub use json::otlp_json_line;
pub use perfdata::{
    PerfDataDecoded, PerfDataError, PerfDataEvent, PerfDataReader, PerfDataStats, TracepointNames,
    decode_perf_data,
};
pub use pipeline::{RunConfig, RunError, run};
pub use reader::{Event, ReaderConfig, TracepointReader};
pub use register::Registration;
pub use sample::{SAMPLE_TYPE, Sample, SampleError};
pub use signal::{Batch, Request, Signal};
pub use sink::{GrpcConfig, HttpConfig, RetryConfig, SinkConfig, SinkError, SinkSet, SinkSnapshot};
pub use stats::{Snapshot, Stats};
pub use status::{Check, host_status};
pub use tracefs::{
    Format, FormatError, FormatField, LayoutMismatch, Tracefs, find_mount, parse_format,
};
