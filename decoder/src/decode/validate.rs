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
    /// An embedded `KeyValue`: most of what an item holds, checked by [`attribute`]'s fast
    /// path when laid out as every OTLP writer lays it out.
    Attribute,
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
    /// A repeated varint's packed form (only in [`Schema::by_key`]).
    PackedVarint,
    /// A repeated 8-byte scalar's packed form (only in [`Schema::by_key`]).
    PackedFixed64,
}

impl Kind {
    /// What a field of this kind holds when its key has wire type `wire_type`, or `None`
    /// when a field of this kind cannot have that wire type.
    const fn with_wire_type(self, wire_type: u8) -> Option<Kind> {
        const VARINT: u8 = WireType::Varint as u8;
        const FIXED64: u8 = WireType::SixtyFourBit as u8;
        const LEN: u8 = WireType::LengthDelimited as u8;
        const FIXED32: u8 = WireType::ThirtyTwoBit as u8;
        match (self, wire_type) {
            (
                Message(_) | Item(_) | Attribute | Str | Bytes | PackedVarint | PackedFixed64,
                LEN,
            )
            | (Varint, VARINT)
            | (Fixed64, FIXED64)
            | (Fixed32, FIXED32) => Some(self),
            (RepeatedVarint, LEN) => Some(PackedVarint),
            (RepeatedVarint, VARINT) => Some(Varint),
            (RepeatedFixed64, LEN) => Some(PackedFixed64),
            (RepeatedFixed64, FIXED64) => Some(Fixed64),
            _ => None,
        }
    }
}

/// The known fields of a message type, indexed by field number (every OTLP field number
/// the checker knows is below [`MAX_TAG`]): one load per field instead of a search.
#[derive(Debug)]
struct Schema {
    by_tag: [Option<Kind>; MAX_TAG],
    /// What to check for each one-byte key (a field number below 16 and a wire type),
    /// `None` where that is not a known field with a wire type it can have: the walk's
    /// common case is one load, with no key decoding and no wire type check.
    by_key: [Option<Kind>; 128],
}

/// One more than the highest field number of any schema here.
const MAX_TAG: usize = 17;

impl Schema {
    /// The table for these `(field number, kind)` pairs.
    const fn new(fields: &[(u32, Kind)]) -> Self {
        let mut by_tag = [None; MAX_TAG];
        let mut by_key = [None; 128];
        let mut i = 0;
        while i < fields.len() {
            let (tag, kind) = fields[i];
            by_tag[tag as usize] = Some(kind);
            let mut wire_type = 0;
            while tag < 16 && wire_type < 8 {
                by_key[(tag << 3 | wire_type) as usize] = kind.with_wire_type(wire_type as u8);
                wire_type += 1;
            }
            i += 1;
        }
        Self { by_tag, by_key }
    }

    #[inline]
    fn field(&self, tag: u32) -> Option<Kind> {
        self.by_tag.get(tag as usize).copied().flatten()
    }
}

use Kind::{
    Attribute, Bytes, Fixed32, Fixed64, Item, Message, PackedFixed64, PackedVarint,
    RepeatedFixed64, RepeatedVarint, Str, Varint,
};

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
static KEY_VALUE_LIST: Schema = Schema::new(&[(1, Attribute)]);
static KEY_VALUE: Schema = Schema::new(&[(1, Str), (2, Message(&ANY_VALUE)), (3, Varint)]);
static ENTITY_REF: Schema = Schema::new(&[(1, Str), (2, Str), (3, Str), (4, Str)]);
static RESOURCE: Schema = Schema::new(&[(1, Attribute), (2, Varint), (3, Message(&ENTITY_REF))]);
static SCOPE: Schema = Schema::new(&[(1, Str), (2, Str), (3, Attribute), (4, Varint)]);

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
    (12, Attribute),
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
    (7, Attribute),
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
    (9, Attribute),
    (10, Varint),
    (11, Fixed64),
    (12, Fixed64),
]);
static EXPONENTIAL_POINT: Schema = Schema::new(&[
    (1, Attribute),
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
    (7, Attribute),
    (8, Varint),
]);
static QUANTILE: Schema = Schema::new(&[(1, Fixed64), (2, Fixed64)]);
static EXEMPLAR: Schema = Schema::new(&[
    (2, Fixed64),
    (3, Fixed64),
    (4, Bytes),
    (5, Bytes),
    (6, Fixed64),
    (7, Attribute),
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
    (9, Attribute),
    (10, Varint),
    (11, Message(&SPAN_EVENT)),
    (12, Varint),
    (13, Message(&SPAN_LINK)),
    (14, Varint),
    (15, Message(&STATUS)),
    (16, Fixed32),
]);
static SPAN_EVENT: Schema = Schema::new(&[(1, Fixed64), (2, Str), (3, Attribute), (4, Varint)]);
static SPAN_LINK: Schema = Schema::new(&[
    (1, Bytes),
    (2, Bytes),
    (3, Str),
    (4, Attribute),
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
    (6, Attribute),
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
    while let Some(&b) = buf.first() {
        // A one-byte key of a known field with a wire type it can have: nearly every field.
        if let Some(kind) = schema.by_key.get(usize::from(b)).copied().flatten() {
            buf = &buf[1..];
            field(kind, &mut buf, depth, items)?;
            continue;
        }
        let (tag, wire_type) = key(&mut buf)?;
        let Some(kind) = schema.field(tag) else {
            skip(wire_type, tag, &mut buf, depth)?;
            continue;
        };
        match kind.with_wire_type(wire_type as u8) {
            Some(kind) => field(kind, &mut buf, depth, items)?,
            None => return Err(Invalid("wrong wire type for a known field")),
        }
    }
    Ok(())
}

/// Checks the value of a field of `kind` (its wire type already checked), the key read.
#[inline(always)]
fn field(kind: Kind, buf: &mut &[u8], depth: u32, items: &mut u64) -> Result<(), Invalid> {
    match kind {
        Message(inner) | Item(inner) => {
            if depth == 0 {
                return Err(Invalid("nested too deep"));
            }
            let body = delimited(buf)?;
            walk(inner, body, depth - 1, items)?;
            if matches!(kind, Item(_)) {
                *items += 1;
            }
        }
        Attribute => {
            if depth == 0 {
                return Err(Invalid("nested too deep"));
            }
            let body = delimited(buf)?;
            // The fast path checks the value's message too: it needs a level below.
            if depth < 2 || !attribute(body) {
                walk(&KEY_VALUE, body, depth - 1, items)?;
            }
        }
        Str => utf8(delimited(buf)?)?,
        Bytes => {
            delimited(buf)?;
        }
        Varint | RepeatedVarint => {
            varint(buf)?;
        }
        Fixed64 | RepeatedFixed64 => take(buf, 8)?,
        Fixed32 => take(buf, 4)?,
        PackedVarint => {
            let mut packed = delimited(buf)?;
            while !packed.is_empty() {
                varint(&mut packed)?;
            }
        }
        PackedFixed64 => {
            if !delimited(buf)?.len().is_multiple_of(8) {
                return Err(Invalid("packed length not a multiple of 8"));
            }
        }
    }
    Ok(())
}

/// Whether `body` is a valid `KeyValue` laid out as every OTLP writer lays one out: an
/// ASCII key, then a value holding one ASCII string, integer, bool or double, each length
/// one byte. `false` says only that the general walk must decide, which is exact for
/// every layout; whatever this accepts, prost decodes.
#[inline(always)]
fn attribute(body: &[u8]) -> bool {
    let [0x0a, key_len, rest @ ..] = body else {
        return false;
    };
    let key_len = usize::from(*key_len);
    if key_len >= 0x80 || rest.len() < key_len {
        return false;
    }
    let (key, rest) = rest.split_at(key_len);
    // The AnyValue ends the KeyValue: its length is all that is left.
    let [0x12, value_len, tag, value @ ..] = rest else {
        return false;
    };
    if usize::from(*value_len) != value.len() + 1 || !ascii(key) {
        return false;
    }
    match *tag {
        // string_value: its length, then exactly that many ASCII bytes.
        0x0a => matches!(value, [len, s @ ..] if usize::from(*len) == s.len() && ascii(s)),
        // bool_value or int_value: one varint of at most 9 bytes filling the rest (a 10th
        // byte could overflow, which the general walk judges).
        0x10 | 0x18 => match value.split_last() {
            Some((last, init)) => *last < 0x80 && init.len() < 9 && init.iter().all(|b| *b >= 0x80),
            None => false,
        },
        // double_value.
        0x21 => value.len() == 8,
        _ => false,
    }
}

/// Whether every byte is ASCII, a word at a time.
#[inline(always)]
fn ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        if u64::from_ne_bytes(w.try_into().expect("8 bytes")) & 0x8080_8080_8080_8080 != 0 {
            return false;
        }
    }
    words.remainder().iter().all(u8::is_ascii)
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

/// Checks that a string is UTF-8: ASCII a word at a time, `from_utf8` when it is not.
#[inline]
fn utf8(bytes: &[u8]) -> Result<(), Invalid> {
    if ascii(bytes) {
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
