//! Checks that bytes are a well-formed OTLP export request, and counts its items, without
//! decoding it into messages.
//!
//! The forwarding path sends the events' own bytes on (the concatenation of requests of one
//! signal is itself a request), so what it must know about them is only what decoding
//! would have told it: whether a collector can decode them, and how many data points, spans
//! or log records they hold. This walks the wire format against the OTLP schema and gives
//! exactly the answer prost's decoding of the same bytes gives (the tests hold the two
//! together on valid and mutated requests): wire types of known fields, lengths, UTF-8 of
//! strings, varint limits, nesting depth; unknown fields are skipped as prost skips them.
//!
//! Written by hand: prost and the other protobuf crates validate only by decoding into
//! their generated structs, which allocates every string and attribute.

use prost::encoding::{WireType, decode_key, decode_varint};
use ue_wire::Signal;

/// What a known field holds, as far as checking it goes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// An embedded message.
    Message(&'static Schema),
    /// An embedded message that is one item (a data point, span or log record).
    Item(&'static Schema),
    /// A `string`: length-delimited, UTF-8.
    Str,
    /// A `bytes` field.
    Bytes,
    /// A varint scalar or enum.
    Varint,
    /// An 8-byte scalar.
    Fixed64,
    /// A 4-byte scalar.
    Fixed32,
    /// A repeated varint, packed or not.
    RepeatedVarint,
    /// A repeated 8-byte scalar, packed or not.
    RepeatedFixed64,
}

/// The known fields of a message type, indexed by field number (every OTLP field number
/// the checker knows is below [`MAX_TAG`]): one load per field instead of a search.
#[derive(Debug)]
struct Schema {
    by_tag: [Option<Kind>; MAX_TAG],
}

/// One more than the highest field number of any schema here.
const MAX_TAG: usize = 17;

impl Schema {
    /// The table for these `(field number, kind)` pairs.
    const fn new(fields: &[(u32, Kind)]) -> Self {
        let mut by_tag = [None; MAX_TAG];
        let mut i = 0;
        while i < fields.len() {
            by_tag[fields[i].0 as usize] = Some(fields[i].1);
            i += 1;
        }
        Self { by_tag }
    }

    #[inline]
    fn field(&self, tag: u32) -> Option<Kind> {
        self.by_tag.get(tag as usize).copied().flatten()
    }
}

use Kind::{Bytes, Fixed32, Fixed64, Item, Message, RepeatedFixed64, RepeatedVarint, Str, Varint};

// opentelemetry/proto/common/v1 and resource/v1.
static ANY_VALUE: Schema = Schema::new(&[
    (1, Str),
    (2, Varint),
    (3, Varint),
    (4, Fixed64),
    (5, Message(&ARRAY_VALUE)),
    (6, Message(&KEY_VALUE_LIST)),
    (7, Bytes),
    (8, Varint),
]);
static ARRAY_VALUE: Schema = Schema::new(&[(1, Message(&ANY_VALUE))]);
static KEY_VALUE_LIST: Schema = Schema::new(&[(1, Message(&KEY_VALUE))]);
static KEY_VALUE: Schema = Schema::new(&[(1, Str), (2, Message(&ANY_VALUE)), (3, Varint)]);
static ENTITY_REF: Schema = Schema::new(&[(1, Str), (2, Str), (3, Str), (4, Str)]);
static RESOURCE: Schema = Schema::new(&[
    (1, Message(&KEY_VALUE)),
    (2, Varint),
    (3, Message(&ENTITY_REF)),
]);
static SCOPE: Schema = Schema::new(&[(1, Str), (2, Str), (3, Message(&KEY_VALUE)), (4, Varint)]);

// opentelemetry/proto/metrics/v1.
/// `ExportMetricsServiceRequest`.
static METRICS_REQUEST: Schema = Schema::new(&[(1, Message(&RESOURCE_METRICS))]);
static RESOURCE_METRICS: Schema = Schema::new(&[
    (1, Message(&RESOURCE)),
    (2, Message(&SCOPE_METRICS)),
    (3, Str),
]);
static SCOPE_METRICS: Schema =
    Schema::new(&[(1, Message(&SCOPE)), (2, Message(&METRIC)), (3, Str)]);
static METRIC: Schema = Schema::new(&[
    (1, Str),
    (2, Str),
    (3, Str),
    (5, Message(&GAUGE)),
    (7, Message(&SUM)),
    (9, Message(&HISTOGRAM)),
    (10, Message(&EXPONENTIAL_HISTOGRAM)),
    (11, Message(&SUMMARY)),
    (12, Message(&KEY_VALUE)),
]);
static GAUGE: Schema = Schema::new(&[(1, Item(&NUMBER_POINT))]);
static SUM: Schema = Schema::new(&[(1, Item(&NUMBER_POINT)), (2, Varint), (3, Varint)]);
static HISTOGRAM: Schema = Schema::new(&[(1, Item(&HISTOGRAM_POINT)), (2, Varint)]);
static EXPONENTIAL_HISTOGRAM: Schema = Schema::new(&[(1, Item(&EXPONENTIAL_POINT)), (2, Varint)]);
static SUMMARY: Schema = Schema::new(&[(1, Item(&SUMMARY_POINT))]);
static NUMBER_POINT: Schema = Schema::new(&[
    (2, Fixed64),
    (3, Fixed64),
    (4, Fixed64),
    (5, Message(&EXEMPLAR)),
    (6, Fixed64),
    (7, Message(&KEY_VALUE)),
    (8, Varint),
]);
static HISTOGRAM_POINT: Schema = Schema::new(&[
    (2, Fixed64),
    (3, Fixed64),
    (4, Fixed64),
    (5, Fixed64),
    (6, RepeatedFixed64),
    (7, RepeatedFixed64),
    (8, Message(&EXEMPLAR)),
    (9, Message(&KEY_VALUE)),
    (10, Varint),
    (11, Fixed64),
    (12, Fixed64),
]);
static EXPONENTIAL_POINT: Schema = Schema::new(&[
    (1, Message(&KEY_VALUE)),
    (2, Fixed64),
    (3, Fixed64),
    (4, Fixed64),
    (5, Fixed64),
    (6, Varint),
    (7, Fixed64),
    (8, Message(&BUCKETS)),
    (9, Message(&BUCKETS)),
    (10, Varint),
    (11, Message(&EXEMPLAR)),
    (12, Fixed64),
    (13, Fixed64),
    (14, Fixed64),
]);
static BUCKETS: Schema = Schema::new(&[(1, Varint), (2, RepeatedVarint)]);
static SUMMARY_POINT: Schema = Schema::new(&[
    (2, Fixed64),
    (3, Fixed64),
    (4, Fixed64),
    (5, Fixed64),
    (6, Message(&QUANTILE)),
    (7, Message(&KEY_VALUE)),
    (8, Varint),
]);
static QUANTILE: Schema = Schema::new(&[(1, Fixed64), (2, Fixed64)]);
static EXEMPLAR: Schema = Schema::new(&[
    (2, Fixed64),
    (3, Fixed64),
    (4, Bytes),
    (5, Bytes),
    (6, Fixed64),
    (7, Message(&KEY_VALUE)),
]);

// opentelemetry/proto/trace/v1.
/// `ExportTraceServiceRequest`.
static TRACES_REQUEST: Schema = Schema::new(&[(1, Message(&RESOURCE_SPANS))]);
static RESOURCE_SPANS: Schema = Schema::new(&[
    (1, Message(&RESOURCE)),
    (2, Message(&SCOPE_SPANS)),
    (3, Str),
]);
static SCOPE_SPANS: Schema = Schema::new(&[(1, Message(&SCOPE)), (2, Item(&SPAN)), (3, Str)]);
static SPAN: Schema = Schema::new(&[
    (1, Bytes),
    (2, Bytes),
    (3, Str),
    (4, Bytes),
    (5, Str),
    (6, Varint),
    (7, Fixed64),
    (8, Fixed64),
    (9, Message(&KEY_VALUE)),
    (10, Varint),
    (11, Message(&SPAN_EVENT)),
    (12, Varint),
    (13, Message(&SPAN_LINK)),
    (14, Varint),
    (15, Message(&STATUS)),
    (16, Fixed32),
]);
static SPAN_EVENT: Schema = Schema::new(&[
    (1, Fixed64),
    (2, Str),
    (3, Message(&KEY_VALUE)),
    (4, Varint),
]);
static SPAN_LINK: Schema = Schema::new(&[
    (1, Bytes),
    (2, Bytes),
    (3, Str),
    (4, Message(&KEY_VALUE)),
    (5, Varint),
    (6, Fixed32),
]);
static STATUS: Schema = Schema::new(&[(2, Str), (3, Varint)]);

// opentelemetry/proto/logs/v1.
/// `ExportLogsServiceRequest`.
static LOGS_REQUEST: Schema = Schema::new(&[(1, Message(&RESOURCE_LOGS))]);
static RESOURCE_LOGS: Schema =
    Schema::new(&[(1, Message(&RESOURCE)), (2, Message(&SCOPE_LOGS)), (3, Str)]);
static SCOPE_LOGS: Schema = Schema::new(&[(1, Message(&SCOPE)), (2, Item(&LOG_RECORD)), (3, Str)]);
static LOG_RECORD: Schema = Schema::new(&[
    (1, Fixed64),
    (2, Varint),
    (3, Str),
    (5, Message(&ANY_VALUE)),
    (6, Message(&KEY_VALUE)),
    (7, Varint),
    (8, Fixed32),
    (9, Bytes),
    (10, Bytes),
    (11, Fixed64),
    (12, Str),
]);

/// Why bytes are not a well-formed request (prost's reason for the same bytes may be
/// worded differently; whether there is one is the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed OTLP request: {0}")]
pub struct Invalid(&'static str);

impl Invalid {
    /// A problem named by `what`.
    pub(crate) const fn new(what: &'static str) -> Self {
        Self(what)
    }
}

/// Checks that `bytes` are a well-formed export request of `signal`, exactly as decoding
/// them would; returns how many items (data points, spans, log records) it holds.
pub fn validate_request(signal: Signal, bytes: &[u8]) -> Result<u64, Invalid> {
    let schema = match signal {
        Signal::Metrics => &METRICS_REQUEST,
        Signal::Traces => &TRACES_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
    };
    validate(schema, bytes)
}

/// How deep messages may nest, as prost allows.
const RECURSION_LIMIT: u32 = 100;

/// Checks that `bytes` decode as the request `schema` describes; returns the items (data
/// points, spans or log records) in it.
fn validate(schema: &'static Schema, bytes: &[u8]) -> Result<u64, Invalid> {
    let mut items = 0;
    walk(schema, bytes, RECURSION_LIMIT, &mut items)?;
    Ok(items)
}

/// Checks the fields of one message; `depth` is what is left of the recursion limit, as
/// prost's `DecodeContext` counts it.
fn walk(schema: &Schema, mut buf: &[u8], depth: u32, items: &mut u64) -> Result<(), Invalid> {
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        let Some(kind) = schema.field(tag) else {
            skip(wire_type, tag, &mut buf, depth)?;
            continue;
        };
        match kind {
            Message(inner) | Item(inner) => {
                expect(wire_type, WireType::LengthDelimited)?;
                if depth == 0 {
                    return Err(Invalid("nested too deep"));
                }
                let body = delimited(&mut buf)?;
                walk(inner, body, depth - 1, items)?;
                if matches!(kind, Item(_)) {
                    *items += 1;
                }
            }
            Str => {
                expect(wire_type, WireType::LengthDelimited)?;
                utf8(delimited(&mut buf)?)?;
            }
            Bytes => {
                expect(wire_type, WireType::LengthDelimited)?;
                delimited(&mut buf)?;
            }
            Varint => {
                expect(wire_type, WireType::Varint)?;
                varint(&mut buf)?;
            }
            Fixed64 => {
                expect(wire_type, WireType::SixtyFourBit)?;
                take(&mut buf, 8)?;
            }
            Fixed32 => {
                expect(wire_type, WireType::ThirtyTwoBit)?;
                take(&mut buf, 4)?;
            }
            RepeatedVarint if wire_type == WireType::LengthDelimited => {
                let mut packed = delimited(&mut buf)?;
                while !packed.is_empty() {
                    varint(&mut packed)?;
                }
            }
            RepeatedVarint => {
                expect(wire_type, WireType::Varint)?;
                varint(&mut buf)?;
            }
            RepeatedFixed64 if wire_type == WireType::LengthDelimited => {
                if !delimited(&mut buf)?.len().is_multiple_of(8) {
                    return Err(Invalid("packed length not a multiple of 8"));
                }
            }
            RepeatedFixed64 => {
                expect(wire_type, WireType::SixtyFourBit)?;
                take(&mut buf, 8)?;
            }
        }
    }
    Ok(())
}

/// Skips an unknown field as prost's `skip_field` does, groups included.
fn skip(wire_type: WireType, tag: u32, buf: &mut &[u8], depth: u32) -> Result<(), Invalid> {
    if depth == 0 {
        return Err(Invalid("nested too deep"));
    }
    match wire_type {
        WireType::Varint => {
            varint(buf)?;
        }
        WireType::SixtyFourBit => take(buf, 8)?,
        WireType::ThirtyTwoBit => take(buf, 4)?,
        WireType::LengthDelimited => {
            delimited(buf)?;
        }
        WireType::StartGroup => loop {
            let (inner_tag, inner_type) = decode_key(buf).map_err(|_| Invalid("bad field key"))?;
            if inner_type == WireType::EndGroup {
                if inner_tag != tag {
                    return Err(Invalid("unmatched end of group"));
                }
                break;
            }
            skip(inner_type, inner_tag, buf, depth - 1)?;
        },
        WireType::EndGroup => return Err(Invalid("unmatched end of group")),
    }
    Ok(())
}

#[inline]
fn expect(got: WireType, want: WireType) -> Result<(), Invalid> {
    if got == want {
        Ok(())
    } else {
        Err(Invalid("wrong wire type for a known field"))
    }
}

/// A field's key: one byte for every known OTLP field (numbers below 16), prost's
/// decoding for anything longer.
#[inline(always)]
fn key(buf: &mut &[u8]) -> Result<(u32, WireType), Invalid> {
    if let Some(&b) = buf.first()
        && b < 0x80
    {
        // prost refuses field number 0 and wire types 6 and 7 in any key.
        let tag = u32::from(b >> 3);
        if let (true, Ok(wire_type)) = (tag != 0, WireType::try_from(u64::from(b & 7))) {
            *buf = &buf[1..];
            return Ok((tag, wire_type));
        }
    }
    decode_key(buf).map_err(|_| Invalid("bad field key"))
}

/// A varint: one or two bytes here (every length under 16 KiB), prost's decoding for
/// anything longer.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Invalid> {
    match **buf {
        [b, ..] if b < 0x80 => {
            *buf = &buf[1..];
            Ok(u64::from(b))
        }
        [b0, b1, ..] if b1 < 0x80 => {
            *buf = &buf[2..];
            Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
        }
        _ => decode_varint(buf).map_err(|_| Invalid("bad varint")),
    }
}

/// Checks that a string is UTF-8: ASCII a word at a time, `from_utf8` from the first
/// word that is not.
#[inline]
fn utf8(bytes: &[u8]) -> Result<(), Invalid> {
    let mut words = bytes.chunks_exact(8);
    let mut ascii = true;
    for w in &mut words {
        let w = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        if w & 0x8080_8080_8080_8080 != 0 {
            ascii = false;
            break;
        }
    }
    if ascii && words.remainder().iter().all(u8::is_ascii) {
        return Ok(());
    }
    std::str::from_utf8(bytes)
        .map(drop)
        .map_err(|_| Invalid("not UTF-8"))
}

#[inline]
fn take(buf: &mut &[u8], n: usize) -> Result<(), Invalid> {
    if buf.len() < n {
        return Err(Invalid("truncated"));
    }
    *buf = &buf[n..];
    Ok(())
}

/// A length-delimited field's body.
#[inline(always)]
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Invalid> {
    let len = varint(buf)?;
    if len > buf.len() as u64 {
        return Err(Invalid("truncated"));
    }
    let (body, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(body)
}
