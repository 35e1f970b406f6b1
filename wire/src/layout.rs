//! The one definition of the user_events wire contract that the exporter writes and the
//! decoder reads: tracepoint names, the field layout, the `__rel_loc` encoding and the
//! size limits. Everything here is pure: bytes in, values out.
//!
//! The layout is byte-for-byte the one of the upstream `opentelemetry-user-events-metrics`
//! crate, so readers built for it keep working:
//!
//! ```text
//! otlp_metrics u32 protocol;char[8] version;__rel_loc u8[] buffer
//!
//! offset  size  field
//!      0     4  protocol   0 = OTLP protobuf
//!      4     8  version    "v0.19.00", not NUL-terminated
//!     12     4  buffer     __rel_loc: low 16 bits = offset of the data counted from the
//!                          end of this field, high 16 bits = length of the data
//!     16   len  (data)     one complete ExportMetricsServiceRequest / ExportTraceServiceRequest /
//!                          ExportLogsServiceRequest
//! ```
//!
//! Offsets are relative to the start of the event's own fields; a perf or ftrace record puts
//! the 8-byte `trace_entry` common header in front of them.

use std::fmt;

/// Default tracepoint name for metrics.
pub const METRICS_TRACEPOINT: &str = "otlp_metrics";
/// Default tracepoint name for spans.
pub const TRACES_TRACEPOINT: &str = "otlp_traces";
/// Default tracepoint name for log records.
pub const LOGS_TRACEPOINT: &str = "otlp_logs";

/// The user_events field list shared by every tracepoint (everything after the name).
pub const FIELDS: &str = "u32 protocol;char[8] version;__rel_loc u8[] buffer";

/// Value of the `protocol` field for OTLP protobuf.
pub const PROTOCOL_OTLP_PROTOBUF: u32 = 0;
/// Value of the `version` field: the OTLP protobuf definitions the payload follows.
pub const PROTOBUF_VERSION: [u8; 8] = *b"v0.19.00";

/// Offset of `protocol` within the event's fields.
pub const PROTOCOL_OFFSET: usize = 0;
/// Offset of `version` within the event's fields.
pub const VERSION_OFFSET: usize = 4;
/// Offset of the `buffer` rel_loc within the event's fields.
pub const REL_LOC_OFFSET: usize = 12;
/// Size of the fixed part in front of the buffer data: protocol + version + rel_loc.
pub const HEADER_LEN: usize = 16;

/// Size of the kernel's `struct trace_entry` that precedes the fields in every record.
pub const TRACE_ENTRY_LEN: usize = 8;
/// The kernel stages every tracepoint record for perf in a buffer of this size
/// (`PERF_MAX_TRACE_SIZE`); a larger record is dropped without an error to the writer.
pub const PERF_MAX_TRACE_SIZE: usize = 8192;

/// The largest buffer that reaches a perf reader: 8192 - 8 (trace_entry) - 16 (fields).
///
/// Verified on kernel 6.12: 8,168 bytes arrive, 8,169 are lost while `writev` succeeds.
pub const PERF_MAX_BUFFER: usize = PERF_MAX_TRACE_SIZE - TRACE_ENTRY_LEN - HEADER_LEN;
/// The default buffer limit of the exporters: the perf limit.
pub const DEFAULT_MAX_BUFFER: usize = PERF_MAX_BUFFER;
/// The largest buffer the exporters accept at all (ftrace readers only; the figure of the
/// upstream crates). Above [`PERF_MAX_BUFFER`] a perf reader never sees the event.
pub const FTRACE_MAX_BUFFER: usize = 65_360;

const _: () = assert!(PERF_MAX_BUFFER == 8168);
const _: () = assert!(FTRACE_MAX_BUFFER <= u16::MAX as usize);

/// The user_events registration command for a tracepoint named `name`:
/// `"<name> u32 protocol;char[8] version;__rel_loc u8[] buffer"`.
pub fn definition(name: &str) -> String {
    format!("{name} {FIELDS}")
}

/// Checks a tracepoint name: 1 to 128 ASCII letters, digits or underscores, not starting
/// with a digit (what the kernel and `perf -e user_events:NAME` accept without quoting).
pub fn validate_name(name: &str) -> Result<(), LayoutError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(LayoutError::InvalidName(name.to_owned()))
    }
}

/// A decoded `__rel_loc` (4-byte form) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelLoc {
    /// Offset of the data, counted from the end of the rel_loc field itself.
    pub offset: u16,
    /// Length of the data in bytes.
    pub len: u16,
}

impl RelLoc {
    /// Packs into the u32 the kernel expects: length in the high half, offset in the low.
    pub const fn to_u32(self) -> u32 {
        ((self.len as u32) << 16) | self.offset as u32
    }

    /// Unpacks the kernel's u32 form.
    pub const fn from_u32(raw: u32) -> Self {
        Self {
            offset: raw as u16,
            len: (raw >> 16) as u16,
        }
    }
}

/// The 16 bytes written in front of a buffer of `len` bytes (protocol, version, rel_loc).
/// The data follows immediately, so the rel_loc offset is 0.
///
/// # Panics
/// If `len` does not fit the 16-bit length of a rel_loc; callers enforce
/// [`FTRACE_MAX_BUFFER`] first.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    let len = u16::try_from(len).expect("buffer length is checked against FTRACE_MAX_BUFFER");
    let mut out = [0u8; HEADER_LEN];
    out[PROTOCOL_OFFSET..VERSION_OFFSET].copy_from_slice(&PROTOCOL_OTLP_PROTOBUF.to_ne_bytes());
    out[VERSION_OFFSET..REL_LOC_OFFSET].copy_from_slice(&PROTOBUF_VERSION);
    out[REL_LOC_OFFSET..HEADER_LEN]
        .copy_from_slice(&RelLoc { offset: 0, len }.to_u32().to_ne_bytes());
    out
}

/// One event's fields, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The `protocol` field.
    pub protocol: u32,
    /// The `version` field.
    pub version: [u8; 8],
    /// The OTLP bytes the rel_loc points at.
    pub buffer: &'a [u8],
}

/// Decodes the event's fields (the bytes after `trace_entry`), checking that the protocol and
/// version are ones this crate writes and that the rel_loc stays inside `fields`.
///
/// `fields` may be longer than the event (perf pads raw samples to 8 bytes): the buffer's
/// length is taken from the rel_loc, never from the end of `fields`.
pub fn decode(fields: &[u8]) -> Result<Payload<'_>, LayoutError> {
    if fields.len() < HEADER_LEN {
        return Err(LayoutError::Truncated {
            needed: HEADER_LEN,
            available: fields.len(),
        });
    }
    let protocol = u32::from_ne_bytes(fields[PROTOCOL_OFFSET..VERSION_OFFSET].try_into().unwrap());
    let version: [u8; 8] = fields[VERSION_OFFSET..REL_LOC_OFFSET].try_into().unwrap();
    let rel_loc = RelLoc::from_u32(u32::from_ne_bytes(
        fields[REL_LOC_OFFSET..HEADER_LEN].try_into().unwrap(),
    ));
    if protocol != PROTOCOL_OTLP_PROTOBUF {
        return Err(LayoutError::UnknownProtocol(protocol));
    }
    if version != PROTOBUF_VERSION {
        return Err(LayoutError::UnknownVersion(version));
    }
    let start = HEADER_LEN + usize::from(rel_loc.offset);
    let end = start + usize::from(rel_loc.len);
    if end > fields.len() {
        return Err(LayoutError::RelLocOutOfBounds {
            rel_loc,
            available: fields.len(),
        });
    }
    Ok(Payload {
        protocol,
        version,
        buffer: &fields[start..end],
    })
}

/// Why an event's fields could not be decoded, or a name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// Fewer bytes than the fixed fields need.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The rel_loc points outside the event.
    RelLocOutOfBounds {
        /// The rel_loc as read.
        rel_loc: RelLoc,
        /// Bytes of fields present.
        available: usize,
    },
    /// A `protocol` value this crate does not know.
    UnknownProtocol(u32),
    /// A `version` value this crate does not know.
    UnknownVersion([u8; 8]),
    /// A tracepoint name the kernel or perf would not take as is.
    InvalidName(String),
}

impl LayoutError {
    /// A short, stable label for counting errors by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::RelLocOutOfBounds { .. } => "bad_rel_loc",
            Self::UnknownProtocol(_) => "unknown_protocol",
            Self::UnknownVersion(_) => "unknown_version",
            Self::InvalidName(_) => "invalid_name",
        }
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => {
                write!(
                    f,
                    "event truncated: {available} bytes of fields, {needed} needed"
                )
            }
            Self::RelLocOutOfBounds { rel_loc, available } => write!(
                f,
                "rel_loc offset {} length {} points past the {available} bytes of the event",
                rel_loc.offset, rel_loc.len
            ),
            Self::UnknownProtocol(p) => {
                write!(f, "unknown protocol {p} (only 0, OTLP protobuf, is known)")
            }
            Self::UnknownVersion(v) => write!(
                f,
                "unknown version {:?} (expected {:?})",
                String::from_utf8_lossy(v),
                String::from_utf8_lossy(&PROTOBUF_VERSION)
            ),
            Self::InvalidName(n) => write!(
                f,
                "invalid tracepoint name {n:?}: use 1 to 128 ASCII letters, digits or '_', not starting with a digit"
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_matches_upstream_metrics_crate() {
        assert_eq!(
            definition(METRICS_TRACEPOINT),
            "otlp_metrics u32 protocol;char[8] version;__rel_loc u8[] buffer"
        );
    }

    #[test]
    fn header_then_decode_round_trips() {
        let data = b"hello otlp";
        let mut fields = header(data.len()).to_vec();
        fields.extend_from_slice(data);
        // perf pads raw samples; the padding must not leak into the buffer.
        fields.extend_from_slice(&[0xAA; 6]);
        let p = decode(&fields).unwrap();
        assert_eq!(p.buffer, data);
        assert_eq!(p.protocol, 0);
        assert_eq!(&p.version, b"v0.19.00");
    }

    #[test]
    fn rel_loc_packs_length_high_offset_low() {
        let r = RelLoc {
            offset: 3,
            len: 0x1234,
        };
        assert_eq!(r.to_u32(), 0x1234_0003);
        assert_eq!(RelLoc::from_u32(0x1234_0003), r);
    }

    #[test]
    fn decode_rejects_bad_input_by_reason() {
        assert_eq!(decode(&[0; 15]).unwrap_err().reason(), "truncated");
        let mut f = header(100).to_vec();
        f.extend_from_slice(&[0; 99]);
        assert_eq!(decode(&f).unwrap_err().reason(), "bad_rel_loc");
        let mut f = header(0).to_vec();
        f[0] = 1;
        assert_eq!(decode(&f).unwrap_err().reason(), "unknown_protocol");
        let mut f = header(0).to_vec();
        f[5] = b'9';
        assert_eq!(decode(&f).unwrap_err().reason(), "unknown_version");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("otlp_metrics").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("9lives").is_err());
        assert!(validate_name(&"a".repeat(129)).is_err());
    }
}
