//! Parsing the body of a `PERF_RECORD_SAMPLE` for the sample format the reader asks for.
//! Pure: bytes in, values out.

use std::fmt;

use perf_event_open_sys::bindings::{
    PERF_SAMPLE_CGROUP, PERF_SAMPLE_CPU, PERF_SAMPLE_IDENTIFIER, PERF_SAMPLE_RAW, PERF_SAMPLE_TID,
    PERF_SAMPLE_TIME,
};
use ue_wire::layout;

/// The `perf_event_attr.sample_type` the reader opens its events with, and that
/// [`Sample::parse`] expects: `IDENTIFIER | TID | TIME | CPU | RAW`, plus [`CGROUP`] where
/// the kernel has it.
pub(crate) const SAMPLE_TYPE: u64 = (PERF_SAMPLE_IDENTIFIER
    | PERF_SAMPLE_TID
    | PERF_SAMPLE_TIME
    | PERF_SAMPLE_CPU
    | PERF_SAMPLE_RAW) as u64;

/// `PERF_SAMPLE_CGROUP` (Linux 5.7): the id of the writing task's cgroup, after the
/// raw data. Older kernels refuse it with `EINVAL`; the reader then opens without it.
pub(crate) const CGROUP: u64 = PERF_SAMPLE_CGROUP as u64;

/// One tracepoint sample, borrowed from the record it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample<'a> {
    /// The sample id of the perf event that recorded it (`PERF_EVENT_IOC_ID`).
    pub(crate) id: u64,
    /// Process id of the writer.
    pub(crate) pid: u32,
    /// Thread id of the writer.
    pub(crate) tid: u32,
    /// Timestamp in nanoseconds, on the clock the event was opened with.
    pub(crate) time_ns: u64,
    /// CPU the event was written on.
    pub(crate) cpu: u32,
    /// The raw tracepoint record: the 8-byte `trace_entry`, the event's fields, and up to
    /// 7 bytes of padding the kernel adds to keep records 8-byte aligned.
    pub(crate) raw: &'a [u8],
    /// The writing task's cgroup id, when the events were opened with [`CGROUP`].
    pub(crate) cgroup_id: Option<u64>,
}

impl<'a> Sample<'a> {
    /// Parses a sample body (the record after its 8-byte header) written with
    /// [`SAMPLE_TYPE`], and [`CGROUP`] if `cgroup`. In the kernel's order: `u64 id;
    /// u32 pid, tid; u64 time; u32 cpu, res; u32 raw_size; u8 raw[raw_size]; u64 cgroup`.
    pub(crate) fn parse(body: &'a [u8], cgroup: bool) -> Result<Self, SampleError> {
        let mut r = Reader { body, pos: 0 };
        let id = r.u64("identifier")?;
        let pid = r.u32("pid")?;
        let tid = r.u32("tid")?;
        let time_ns = r.u64("time")?;
        let cpu = r.u32("cpu")?;
        let _res = r.u32("cpu")?;
        let raw_size = r.u32("raw size")? as usize;
        let available = body.len() - r.pos;
        if raw_size > available {
            return Err(SampleError::RawPastEnd {
                raw_size,
                available,
            });
        }
        let raw = &body[r.pos..r.pos + raw_size];
        if raw.len() < layout::TRACE_ENTRY_LEN {
            return Err(SampleError::RawTooShort { raw_size });
        }
        r.pos += raw_size;
        let cgroup_id = if cgroup { Some(r.u64("cgroup")?) } else { None };
        Ok(Self {
            id,
            pid,
            tid,
            time_ns,
            cpu,
            raw,
            cgroup_id,
        })
    }

    /// `trace_entry.common_type`: the tracepoint's id, as in tracefs's `id` file (0 if
    /// `raw` is too short, which [`parse`](Self::parse) never returns).
    pub(crate) fn common_type(&self) -> u16 {
        match self.raw {
            [a, b, ..] => u16::from_ne_bytes([*a, *b]),
            _ => 0,
        }
    }

    /// The event's fields: the raw record after the `trace_entry`, possibly followed by
    /// padding. Decode them with [`layout::decode`], which takes the buffer's length from
    /// its rel_loc and so ignores the padding.
    pub(crate) fn fields(&self) -> &'a [u8] {
        self.raw.get(layout::TRACE_ENTRY_LEN..).unwrap_or_default()
    }
}

impl fmt::Display for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id={} cpu={} time={} pid={} tid={} raw={}B",
            self.id,
            self.cpu,
            self.time_ns,
            self.pid,
            self.tid,
            self.raw.len()
        )?;
        match self.cgroup_id {
            Some(id) => write!(f, " cgroup={id}"),
            None => Ok(()),
        }
    }
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SampleError> {
        let bytes = self
            .body
            .get(self.pos..self.pos + N)
            .ok_or(SampleError::Truncated {
                field,
                len: self.body.len(),
            })?;
        self.pos += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SampleError> {
        self.take(field).map(u32::from_ne_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SampleError> {
        self.take(field).map(u64::from_ne_bytes)
    }
}

/// Why a sample record could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SampleError {
    /// The record ends before one of the fixed fields.
    #[error("sample record of {len} bytes ends inside its {field} field")]
    Truncated {
        /// The field that does not fit.
        field: &'static str,
        /// Length of the record body.
        len: usize,
    },
    /// The raw data's size points past the end of the record.
    #[error("sample raw size {raw_size} is larger than the {available} bytes left in the record")]
    RawPastEnd {
        /// The `raw_size` field.
        raw_size: usize,
        /// Bytes after it.
        available: usize,
    },
    /// The raw data is too short to hold a `trace_entry`.
    #[error("sample raw data of {raw_size} bytes is shorter than a trace_entry")]
    RawTooShort {
        /// The `raw_size` field.
        raw_size: usize,
    },
}

impl SampleError {
    /// A short, stable label for counting errors by reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "sample_truncated",
            Self::RawPastEnd { .. } => "sample_raw_past_end",
            Self::RawTooShort { .. } => "sample_raw_too_short",
        }
    }
}

/// A sample body as the kernel writes it for [`SAMPLE_TYPE`], for tests.
#[cfg(test)]
pub(crate) fn sample_body(id: u64, pid: u32, time_ns: u64, cpu: u32, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_ne_bytes());
    out.extend_from_slice(&pid.to_ne_bytes());
    out.extend_from_slice(&(pid + 1).to_ne_bytes());
    out.extend_from_slice(&time_ns.to_ne_bytes());
    out.extend_from_slice(&cpu.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // The kernel pads raw data so the whole record stays 8-byte aligned: u32 size + raw.
    let padded = (4 + raw.len()).next_multiple_of(8) - 4;
    out.extend_from_slice(&(padded as u32).to_ne_bytes());
    out.extend_from_slice(raw);
    out.resize(out.len() + padded - raw.len(), 0);
    out
}

/// A tracepoint raw record: `trace_entry` with `common_type`, then `fields`.
#[cfg(test)]
pub(crate) fn raw_event(common_type: u16, pid: i32, fields: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&common_type.to_ne_bytes());
    out.extend_from_slice(&[0, 0]); // flags, preempt_count
    out.extend_from_slice(&pid.to_ne_bytes());
    out.extend_from_slice(fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp_fields(otlp: &[u8]) -> Vec<u8> {
        let mut f = layout::header(otlp.len()).to_vec();
        f.extend_from_slice(otlp);
        f
    }

    #[test]
    fn parses_every_field_in_kernel_order() {
        let raw = raw_event(1234, 77, &otlp_fields(b"otlp bytes"));
        let body = sample_body(42, 77, 123_456_789, 3, &raw);
        let s = Sample::parse(&body, false).unwrap();
        assert_eq!(
            (s.id, s.pid, s.tid, s.time_ns, s.cpu),
            (42, 77, 78, 123_456_789, 3)
        );
        assert_eq!(s.common_type(), 1234);
        // raw includes the kernel's padding; the rel_loc still finds the exact buffer.
        assert!(s.raw.len() >= raw.len() && s.raw.len() < raw.len() + 8);
        assert_eq!(&s.raw[..raw.len()], &raw[..]);
        let payload = layout::decode(s.fields()).unwrap();
        assert_eq!(payload.buffer, b"otlp bytes");
    }

    #[test]
    fn the_cgroup_id_follows_the_raw_data() {
        let raw = raw_event(1234, 77, &otlp_fields(b"otlp"));
        let mut body = sample_body(42, 77, 5, 1, &raw);
        let s = Sample::parse(&body, false).unwrap();
        assert_eq!(s.cgroup_id, None);
        body.extend_from_slice(&0x1234_5678_9abcu64.to_ne_bytes());
        let s = Sample::parse(&body, true).unwrap();
        assert_eq!(s.cgroup_id, Some(0x1234_5678_9abc));
        assert_eq!(layout::decode(s.fields()).unwrap().buffer, b"otlp");
        assert!(s.to_string().ends_with("cgroup=20015998343868"), "{s}");
        let err = Sample::parse(&body[..body.len() - 1], true).unwrap_err();
        assert_eq!(
            err,
            SampleError::Truncated {
                field: "cgroup",
                len: body.len() - 1
            }
        );
    }

    #[test]
    fn sample_type_is_the_documented_set() {
        assert_eq!(CGROUP, 0x20_0000);
        assert_eq!(SAMPLE_TYPE, 0x10000 | 0x2 | 0x4 | 0x80 | 0x400);
    }

    #[test]
    fn truncated_bodies_name_the_missing_field() {
        let body = sample_body(1, 2, 3, 4, &raw_event(1, 2, &[]));
        let cases = [
            (0, "identifier"),
            (7, "identifier"),
            (8, "pid"),
            (12, "tid"),
            (16, "time"),
            (24, "cpu"),
            (32, "raw size"),
        ];
        for (len, field) in cases {
            let err = Sample::parse(&body[..len], false).unwrap_err();
            assert_eq!(err.reason(), "sample_truncated");
            assert_eq!(
                err,
                SampleError::Truncated { field, len },
                "body cut at {len}"
            );
        }
    }

    #[test]
    fn raw_size_past_end_is_rejected() {
        let mut body = sample_body(1, 2, 3, 4, &raw_event(1, 2, &[0; 8]));
        body[32..36].copy_from_slice(&1000u32.to_ne_bytes());
        let err = Sample::parse(&body, false).unwrap_err();
        assert_eq!(err.reason(), "sample_raw_past_end");
        assert_eq!(
            err,
            SampleError::RawPastEnd {
                raw_size: 1000,
                available: body.len() - 36
            }
        );
        assert!(err.to_string().contains("1000"));
    }

    #[test]
    fn raw_shorter_than_trace_entry_is_rejected() {
        let mut body = sample_body(1, 2, 3, 4, &[]);
        body.extend_from_slice(&[0; 8]);
        body[32..36].copy_from_slice(&4u32.to_ne_bytes());
        let err = Sample::parse(&body, false).unwrap_err();
        assert_eq!(err.reason(), "sample_raw_too_short");
    }

    #[test]
    fn bad_fields_surface_as_layout_errors() {
        // A sample that parses but whose rel_loc points past the record.
        let mut fields = layout::header(500).to_vec();
        fields.extend_from_slice(&[0; 10]);
        let body = sample_body(1, 2, 3, 4, &raw_event(1, 2, &fields));
        let s = Sample::parse(&body, false).unwrap();
        assert_eq!(
            layout::decode(s.fields()).unwrap_err().reason(),
            "bad_rel_loc"
        );
    }
}
