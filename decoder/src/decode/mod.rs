//! Decoding: from an event's fields to the OTLP request it carries, and the one text form
//! of a request (OTLP/JSON lines), and EventHeader events (Common Schema) to OTLP.
//!
//! Pure: bytes in, values out, every failure with a stable reason label. No I/O, no
//! clocks, no knowledge of where the bytes came from (a ring, a perf.data file) or where
//! the requests go.

mod event;
mod eventheader;
mod json;
mod request;
mod validate;
mod writer;

pub use event::{Malformed, check_event, decode_event};
pub use eventheader::{
    EventHeaderDecoder, EventHeaderError, EventHeaderEvent, is_eventheader_tracepoint,
};
pub use json::{otlp_json, otlp_json_line};
pub use request::{Request, Signal, TracepointNames};
pub(crate) use request::{logs_items, metrics_items, traces_items};
pub use validate::{Invalid, validate_request};
pub use writer::{WRITER_CGROUP_ID, WRITER_PID, WRITER_PREFIX, Writer, stamp_writer};
