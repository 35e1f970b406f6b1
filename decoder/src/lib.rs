//! Reads the OTLP events that the `otlp-user-events` exporters write to Linux user_events
//! tracepoints, live, through perf ring buffers.
//!
//! [`TracepointReader`] opens one perf event per online CPU and tracepoint (`otlp_metrics`,
//! `otlp_traces` and `otlp_logs` by default), all of a CPU's events sharing one ring buffer, and hands
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
//! The crate is in layers, each a module with its own rules (see each `mod.rs`):
//!
//! | module | owns |
//! |---|---|
//! | `kernel` | tracefs, registration, perf events, rings, samples, dropping privileges: all syscalls and `unsafe` |
//! | `capture` | perf.data files from `perf record` |
//! | `decode` | event fields to OTLP requests (EventHeader's Common Schema too), and OTLP/JSON lines; pure |
//! | `batch` | merging requests into batches; pure |
//! | `sink` | OTLP/HTTP, OTLP/gRPC, stdout, file, DogStatsD, a Prometheus scrape endpoint, ClickHouse and object storage, each behind a bounded queue and its route (signals, filter) |
//! | `exposition` | the Prometheus text format and the HTTP server both `/metrics` endpoints use |
//! | `daemon` | `run`: the thread, tasks and shutdown around them; counters; `status` |
//! | `config` | the configuration file (`run --config`, `check-config`): every setting of `run`, sinks routed by signal and filter |

mod batch;
mod capture;
mod config;
mod daemon;
mod decode;
mod exposition;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod kernel;
mod sink;

pub use batch::{Batch, BatchConfig, Incoming};
pub use capture::{
    PerfDataDecoded, PerfDataError, PerfDataEvent, PerfDataReader, PerfDataStats, ReadProgress,
    decode_perf_data,
};
pub use config::{AgentConfig, ConfigError};
#[cfg(feature = "testing")]
pub use daemon::MemorySource;
pub use daemon::{
    AdminConfig, Check, EventSource, ForwardConfig, ForwardError, PerfSource, RunConfig, RunError,
    Snapshot, forward_capture, host_status, run,
};
pub use decode::{
    EventHeaderDecoder, EventHeaderError, EventHeaderEvent, Invalid, Malformed, Request, Signal,
    TracepointNames, WRITER_CGROUP_ID, WRITER_PID, WRITER_PREFIX, Writer, check_event,
    decode_event, is_eventheader_tracepoint, otlp_json, otlp_json_line, stamp_writer,
    validate_request,
};
pub use kernel::{
    Dropped, Event, Format, FormatError, FormatField, LayoutMismatch, PrivilegeError, ReaderConfig,
    ReaderError, Registration, Tracefs, TracepointReader, drop_privileges,
};
pub use sink::{
    ArchiveConfig, ArchiveSnapshot, ClickHouseConfig, Compression, DiskQueueConfig, DiskSnapshot,
    Filter, OtlpConfig, Patterns, PemFile, PrometheusConfig, Protocol, RetryConfig, Route,
    RoutedSink, SinkConfig, SinkError, SinkSet, SinkSnapshot, StatsdConfig, StatsdTarget,
    SyncPolicy, TlsConfig, read_headers_file,
};
/// The OTLP message types that [`Request`] carries.
pub use ue_proto as proto;
