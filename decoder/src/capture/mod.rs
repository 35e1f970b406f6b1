//! Captures: the OTLP events of a `perf record` file (perf.data), read for
//! `ue-decoder decode` and the tests.
//!
//! This layer finds the samples of the OTLP tracepoints in a file (`reader`), checks the
//! file before trusting its counts (`check`), and counts what it skips and what perf lost.
//! It reads files only, never the kernel, and leaves turning an event's fields into a
//! request to `decode`.

mod check;
mod reader;
mod records;

pub(crate) use reader::Next;
pub use reader::{
    PerfDataDecoded, PerfDataError, PerfDataEvent, PerfDataReader, PerfDataStats, ReadProgress,
    decode_perf_data,
};
