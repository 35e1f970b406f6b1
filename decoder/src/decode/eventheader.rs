//! EventHeader events (tracepoints named `<provider>_L<level>K<keyword>`) to OTLP requests.
//!
//! The EventHeader format itself (header, metadata, field types, arrays, nested structs)
//! is decoded by Microsoft's `tracepoint_decode` enumerator: this module only walks its
//! items into a tree of OTLP values. The Common Schema 4.0 -> OTLP mapping below is
//! written by hand; it covers every field the upstream `opentelemetry-user-events-logs`
//! (0.18) and `opentelemetry-user-events-trace` (0.6) crates write:
//!
//! | Common Schema | OTLP |
//! |---|---|
//! | provider name (from the tracepoint name) | scope name |
//! | EventHeader level, keyword | attributes `eventheader.level`, `eventheader.keyword` |
//! | EventHeader event name, when not the PartB `_typeName` | attribute `eventheader.name` |
//! | PartA `time` (RFC 3339) | log `time_unix_nano`; span `end_time_unix_nano` |
//! | PartA `ext_dt_traceId`, `ext_dt_spanId` (hex) | `trace_id`, `span_id` |
//! | PartA `ext_dt_traceFlags` | `flags` |
//! | PartA `ext_cloud_role`, `ext_cloud_roleInstance` | resource `service.name`, `service.instance.id` |
//! | PartB `_typeName` `Log`: `body` | `body` (any type) |
//! | `severityNumber`, `severityText` | `severity_number`, `severity_text` (no `severityNumber`: from the level) |
//! | `name` or `eventName` | `event_name` |
//! | `eventId` | attribute `event_id` |
//! | PartB `_typeName` `Span`: `name`, `startTime` | `name`, `start_time_unix_nano` |
//! | `kind` (0 internal .. 4 consumer) | `kind` (that + 1) |
//! | `parentId` | `parent_span_id` |
//! | `links` (JSON `[{"toTraceId","toSpanId"}]`) | `links` |
//! | `success` false, `statusMessage`, `statusCode` (OTLP code) | `status` (`success` true: unset; Ok and Unset are written alike) |
//! | `httpMethod`, `httpUrl`, `httpStatusCode`, `dbSystem`, `dbName`, `dbStatement`, `messagingSystem`, `messagingDestination`, `messagingUrl`, `rpcSystem`, `rpcGrpcStatusCode` | the semantic-convention attributes they were made from |
//! | PartC fields (scalars, arrays, structs) | attributes (arrays: `array_value`, structs: `kvlist_value`) |
//!
//! Anything else is kept as an attribute (other PartA/PartB fields as `PartA.<name>` /
//! `PartB.<name>`, other top-level fields by their name, a `__csver__` other than 0x400
//! as `__csver__`) and counted in [`EventHeaderEvent::unmapped`]. An event without
//! `__csver__`, or with a PartB `_typeName` other than `Log` and `Span`, is not Common
//! Schema: it becomes a log record named after the event, every field an attribute, the
//! severity from the level (counted once in `unmapped`).

use std::fmt::Write as _;

use eventheader_types::{FieldEncoding, FieldFormat, HeaderFlags};
use tracepoint_decode::{
    EventHeaderEnumeratorContext, EventHeaderEnumeratorError, EventHeaderEnumeratorState,
    EventHeaderEventInfo, PerfItemValue,
};
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_proto::common::v1::any_value::Value;
use ue_proto::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use ue_proto::resource::v1::Resource;
use ue_proto::trace::v1::span::Link;
use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::decode::Request;

/// The Common Schema version the upstream crates write in `__csver__` (4.0).
const CS_VERSION: i64 = 0x400;

/// One decoded EventHeader event: the request it maps to, and how much of it had no OTLP
/// field.
#[derive(Clone, Debug, PartialEq)]
pub struct EventHeaderEvent {
    /// A logs request with one record, or a traces request with one span.
    pub request: Request,
    /// Fields (or whole events, for events that are not Common Schema) kept as attributes
    /// because no OTLP field fits them.
    pub unmapped: u64,
}

/// Why an EventHeader event did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventHeaderError {
    /// The enumerator refused the event (bad header, unknown flags or types, out-of-range
    /// data, too deep nesting, too many items).
    #[error("EventHeader event does not decode: {0}")]
    Format(EventHeaderEnumeratorError),
}

impl EventHeaderError {
    /// A short, stable label for counting skips by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Format(EventHeaderEnumeratorError::NotSupported) => "eventheader_not_supported",
            Self::Format(EventHeaderEnumeratorError::ImplementationLimit) => {
                "eventheader_too_many_items"
            }
            Self::Format(EventHeaderEnumeratorError::StackOverflow) => "eventheader_too_deep",
            Self::Format(_) => "eventheader_invalid",
        }
    }
}

/// Whether a tracepoint name (with or without the `user_events:` system) follows the
/// EventHeader naming rule `<provider>_L<level>K<keyword>[options]`: level and keyword in
/// lowercase hex, the provider made of ASCII letters, digits and `_`.
pub fn is_eventheader_tracepoint(name: &str) -> bool {
    let name = name.strip_prefix("user_events:").unwrap_or(name);
    if name.contains(':') {
        return false;
    }
    let Some(at) = name.rfind("_L") else {
        return false;
    };
    let (provider, rest) = (&name[..at], &name[at + 2..]);
    let hex = |s: &str| -> usize {
        s.bytes()
            .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .count()
    };
    let level = hex(rest);
    let Some(after) = rest[level..].strip_prefix('K') else {
        return false;
    };
    let keyword = hex(after);
    !provider.is_empty()
        && provider
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && level > 0
        && keyword > 0
        && after[keyword..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Decodes EventHeader events, reusing the enumerator's state between events.
#[derive(Debug)]
pub struct EventHeaderDecoder {
    context: EventHeaderEnumeratorContext,
}

impl Default for EventHeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHeaderDecoder {
    /// A decoder.
    pub const fn new() -> Self {
        Self {
            context: EventHeaderEnumeratorContext::new(),
        }
    }

    /// Decodes one event: `tracepoint` is its name (`user_events:` optional), `fields` the
    /// bytes after `trace_entry` (trailing padding allowed).
    pub fn decode(
        &mut self,
        tracepoint: &str,
        fields: &[u8],
    ) -> Result<EventHeaderEvent, EventHeaderError> {
        let tracepoint = tracepoint
            .strip_prefix("user_events:")
            .unwrap_or(tracepoint);
        let mut e = self
            .context
            .enumerate_with_name_and_data(
                tracepoint,
                fields,
                EventHeaderEnumeratorContext::MOVE_NEXT_LIMIT_DEFAULT,
            )
            .map_err(EventHeaderError::Format)?;
        let info = e.event_info();
        check_metadata(&info)?;
        let header = Header {
            provider: info.provider_name().to_owned(),
            event_name: String::from_utf8_lossy(info.name_bytes()).into_owned(),
            level: info.header().level.as_int(),
            keyword: info.keyword(),
            id: info.header().id,
            tag: info.header().tag,
            activity_id: info.activity_id().map(|id| const_hex_lower(id)),
            related_activity_id: info.related_activity_id().map(|id| const_hex_lower(id)),
        };

        // The items, as a tree: each open struct or array is a frame on the stack.
        let mut stack: Vec<Frame> = vec![Frame::Struct(String::new(), Vec::new())];
        while e.move_next() {
            let item = e.item_info();
            let name = String::from_utf8_lossy(item.name_bytes()).into_owned();
            match e.state() {
                EventHeaderEnumeratorState::Value => push(&mut stack, name, scalar(item.value())),
                EventHeaderEnumeratorState::StructBegin => {
                    stack.push(Frame::Struct(name, Vec::new()));
                }
                EventHeaderEnumeratorState::ArrayBegin => {
                    stack.push(Frame::Array(name, Vec::new()));
                }
                EventHeaderEnumeratorState::StructEnd | EventHeaderEnumeratorState::ArrayEnd
                    if stack.len() > 1 =>
                {
                    let (name, value) = stack.pop().map(Frame::finish).unwrap_or_default();
                    push(&mut stack, name, value);
                }
                _ => {}
            }
        }
        if e.state() == EventHeaderEnumeratorState::Error {
            return Err(EventHeaderError::Format(e.last_error()));
        }
        let fields = match stack.into_iter().next() {
            Some(Frame::Struct(_, fields)) => fields,
            _ => Vec::new(),
        };
        Ok(map_common_schema(header, fields))
    }
}

/// Refuses the field types `tracepoint_decode` 0.5 lets through but asserts against when
/// it describes an item (`PerfItemMetadata::new`: a panic in builds with debug assertions,
/// an event decoded from inconsistent metadata in the others): both array flags at once (a
/// reserved encoding it refuses only in structs it skips) and arrays of structs with no
/// field (refused for a single struct). The metadata is a flat list of fields, walked the
/// way the enumerator reads each one; where it is cut short the enumerator reports that
/// itself.
fn check_metadata(info: &EventHeaderEventInfo<'_, '_>) -> Result<(), EventHeaderError> {
    let data = info.event_data();
    let little_endian = info.header().flags.has_flag(HeaderFlags::LittleEndian);
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = data.get(at..at + 2)?.try_into().ok()?;
        Some(if little_endian {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    // The metadata extension starts with the event's name; its size is in the extension
    // header (size, kind) just before it.
    let start = info.name_start() as usize;
    let Some(size) = start.checked_sub(4).and_then(u16_at) else {
        return Ok(());
    };
    let end = (start + usize::from(size)).min(data.len());
    let mut pos = start + info.name_len() as usize + 1;
    while pos < end {
        let Some(name_len) = data[pos..end].iter().position(|&b| b == 0) else {
            break;
        };
        pos += name_len + 1;
        let Some(&encoding) = data.get(pos).filter(|_| pos < end) else {
            break;
        };
        pos += 1;
        let mut format = 0;
        if encoding & FieldEncoding::ChainFlag != 0 {
            let Some(&f) = data.get(pos).filter(|_| pos < end) else {
                break;
            };
            format = f;
            pos += 1;
            if format & FieldFormat::ChainFlag != 0 {
                pos += 2;
            }
        }
        let flags = encoding & FieldEncoding::ArrayFlagMask;
        if flags == FieldEncoding::ArrayFlagMask {
            return Err(EventHeaderError::Format(
                EventHeaderEnumeratorError::NotSupported,
            ));
        }
        if encoding & FieldEncoding::ValueMask == FieldEncoding::Struct.as_int()
            && format & FieldFormat::ValueMask == 0
        {
            return Err(EventHeaderError::Format(
                EventHeaderEnumeratorError::InvalidData,
            ));
        }
        if flags == FieldEncoding::CArrayFlag {
            // The array's length.
            pos += 2;
        }
    }
    Ok(())
}

/// The EventHeader facts of an event that are not fields.
#[derive(Debug)]
struct Header {
    provider: String,
    event_name: String,
    level: u8,
    keyword: u64,
    id: u16,
    tag: u16,
    activity_id: Option<String>,
    related_activity_id: Option<String>,
}

enum Frame {
    Struct(String, Vec<KeyValue>),
    Array(String, Vec<AnyValue>),
}

impl Frame {
    fn finish(self) -> (String, Option<Value>) {
        match self {
            Self::Struct(name, values) => (name, Some(Value::KvlistValue(KeyValueList { values }))),
            Self::Array(name, values) => (name, Some(Value::ArrayValue(ArrayValue { values }))),
        }
    }
}

fn push(stack: &mut [Frame], name: String, value: Option<Value>) {
    let value = AnyValue { value };
    match stack.last_mut() {
        Some(Frame::Array(_, values)) => values.push(value),
        Some(Frame::Struct(_, fields)) => fields.push(KeyValue {
            key: name,
            value: Some(value),
            ..Default::default()
        }),
        None => {}
    }
}

fn const_hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One EventHeader value (a scalar field or an array element) as an OTLP value: integers,
/// floats, booleans, strings and bytes as themselves; anything else (GUIDs, IP addresses,
/// ports, times, errnos...) as the enumerator's text for it.
fn scalar(v: &PerfItemValue<'_>) -> Option<Value> {
    let meta = v.metadata();
    let encoding = meta.encoding().without_flags();
    let format = meta.format().without_flags();
    let text = || {
        let mut s = String::new();
        let _ = v.write_to(&mut s, Default::default());
        Some(Value::StringValue(s))
    };
    let string = || {
        let mut s = String::new();
        let _ = v.write_string_to(&mut s);
        Some(Value::StringValue(s))
    };
    let bytes = || Some(Value::BytesValue(v.bytes().to_vec()));
    let size = v.bytes().len();
    match encoding {
        FieldEncoding::Value8
        | FieldEncoding::Value16
        | FieldEncoding::Value32
        | FieldEncoding::Value64 => {
            let unsigned = || match size {
                1 => Some(u64::from(v.to_u8(0))),
                2 => Some(u64::from(v.to_u16(0))),
                4 => Some(u64::from(v.to_u32(0))),
                8 => Some(v.to_u64(0)),
                _ => None,
            };
            let signed = || match size {
                1 => Some(i64::from(v.to_i8(0))),
                2 => Some(i64::from(v.to_i16(0))),
                4 => Some(i64::from(v.to_i32(0))),
                8 => Some(v.to_i64(0)),
                _ => None,
            };
            match format {
                FieldFormat::Boolean => unsigned().map(|n| Value::BoolValue(n != 0)),
                FieldFormat::Float if size == 4 => Some(Value::DoubleValue(f64::from(v.to_f32(0)))),
                FieldFormat::Float if size == 8 => Some(Value::DoubleValue(v.to_f64(0))),
                FieldFormat::SignedInt | FieldFormat::Pid => signed().map(Value::IntValue),
                FieldFormat::Default | FieldFormat::UnsignedInt | FieldFormat::HexInt => {
                    match unsigned().map(i64::try_from) {
                        Some(Ok(n)) => Some(Value::IntValue(n)),
                        // Above i64::MAX: OTLP has no unsigned integer; the decimal text.
                        Some(Err(_)) => unsigned().map(|n| Value::StringValue(n.to_string())),
                        None => bytes(),
                    }
                }
                FieldFormat::HexBytes => bytes(),
                _ => text(),
            }
        }
        FieldEncoding::ZStringChar8
        | FieldEncoding::ZStringChar16
        | FieldEncoding::ZStringChar32
        | FieldEncoding::StringLength16Char8
        | FieldEncoding::StringLength16Char16
        | FieldEncoding::StringLength16Char32 => match format {
            FieldFormat::HexBytes => bytes(),
            _ => string(),
        },
        FieldEncoding::BinaryLength16Char8 => match format {
            FieldFormat::Default | FieldFormat::HexBytes => bytes(),
            FieldFormat::String8
            | FieldFormat::StringUtf
            | FieldFormat::StringUtfBom
            | FieldFormat::StringXml
            | FieldFormat::StringJson => string(),
            _ => text(),
        },
        FieldEncoding::Value128 => match format {
            FieldFormat::Default | FieldFormat::HexBytes => bytes(),
            _ => text(),
        },
        _ => text(),
    }
}

/// The Common Schema -> OTLP mapping (written by hand; see the module's table).
fn map_common_schema(header: Header, fields: Vec<KeyValue>) -> EventHeaderEvent {
    let mut unmapped = 0;
    let mut csver = None;
    let mut part_a = None;
    let mut part_b = None;
    let mut part_c = Vec::new();
    let mut other = Vec::new();
    for field in fields {
        match (field.key.as_str(), &field.value) {
            (
                "__csver__",
                Some(AnyValue {
                    value: Some(Value::IntValue(v)),
                }),
            ) if csver.is_none() => {
                csver = Some(*v);
            }
            (
                "PartA",
                Some(AnyValue {
                    value: Some(Value::KvlistValue(_)),
                }),
            ) if part_a.is_none() => {
                part_a = Some(kvlist(field));
            }
            (
                "PartB",
                Some(AnyValue {
                    value: Some(Value::KvlistValue(_)),
                }),
            ) if part_b.is_none() => {
                part_b = Some(kvlist(field));
            }
            (
                "PartC",
                Some(AnyValue {
                    value: Some(Value::KvlistValue(_)),
                }),
            ) => {
                part_c.extend(kvlist(field));
            }
            _ => other.push(field),
        }
    }
    let type_name = part_b.as_ref().and_then(|b| {
        b.iter()
            .find(|kv| kv.key == "_typeName")
            .and_then(|kv| as_str(kv.value.as_ref()))
            .map(str::to_owned)
    });
    let kind = match (csver, type_name.as_deref()) {
        (Some(_), Some("Log")) => Kind::Log,
        (Some(_), Some("Span")) => Kind::Span,
        _ => Kind::Other,
    };
    if kind == Kind::Other {
        // Not Common Schema (or a PartB type with no OTLP signal): every field, in
        // order, becomes an attribute of a log record named after the event.
        let mut fields = Vec::new();
        if let Some(v) = csver {
            fields.push(kv("__csver__", Value::IntValue(v)));
        }
        for (name, part) in [("PartA", part_a), ("PartB", part_b)] {
            if let Some(values) = part {
                fields.push(kv(name, Value::KvlistValue(KeyValueList { values })));
            }
        }
        if !part_c.is_empty() {
            fields.push(kv(
                "PartC",
                Value::KvlistValue(KeyValueList { values: part_c }),
            ));
        }
        fields.extend(other);
        let mut attributes = header_attributes(&header, None);
        attributes.extend(fields);
        let record = LogRecord {
            severity_number: severity_of_level(header.level),
            event_name: header.event_name.clone(),
            attributes,
            ..Default::default()
        };
        return EventHeaderEvent {
            request: logs_request(&header, Resource::default(), record),
            unmapped: 1,
        };
    }
    let type_name = type_name.unwrap_or_default();

    let mut extra = Vec::new();
    if csver != Some(CS_VERSION) {
        unmapped += 1;
        extra.push(kv("__csver__", Value::IntValue(csver.unwrap_or_default())));
    }
    for field in other {
        unmapped += 1;
        extra.push(field);
    }

    // PartA.
    let mut time = 0;
    let mut trace_id = Vec::new();
    let mut span_id = Vec::new();
    let mut flags = 0;
    let mut resource = Vec::new();
    for field in part_a.unwrap_or_default() {
        let value = field.value.as_ref();
        let done = match field.key.as_str() {
            "time" => as_str(value)
                .and_then(parse_rfc3339)
                .map(|t| time = t)
                .is_some(),
            "ext_dt_traceId" => as_str(value)
                .and_then(hex_id::<16>)
                .map(|id| trace_id = id)
                .is_some(),
            "ext_dt_spanId" => as_str(value)
                .and_then(hex_id::<8>)
                .map(|id| span_id = id)
                .is_some(),
            "ext_dt_traceFlags" => as_int(value)
                .and_then(|f| u32::try_from(f).ok())
                .map(|f| flags = f)
                .is_some(),
            "ext_cloud_role" => {
                resource.push(renamed("service.name", field.value.clone()));
                true
            }
            "ext_cloud_roleInstance" => {
                resource.push(renamed("service.instance.id", field.value.clone()));
                true
            }
            _ => false,
        };
        if !done {
            unmapped += 1;
            extra.push(prefixed("PartA.", field));
        }
    }
    let resource = Resource {
        attributes: resource,
        ..Default::default()
    };

    let mut attributes = header_attributes(&header, Some(&type_name));
    let mut part_b = part_b.unwrap_or_default();
    part_b.retain(|kv| kv.key != "_typeName");
    let request = if kind == Kind::Log {
        let mut record = LogRecord {
            time_unix_nano: time,
            trace_id,
            span_id,
            flags,
            ..Default::default()
        };
        let mut severity = None;
        for field in part_b {
            let value = field.value.as_ref();
            let done = match field.key.as_str() {
                "body" => {
                    record.body = field.value.clone();
                    true
                }
                "severityNumber" => as_int(value)
                    .and_then(|n| i32::try_from(n).ok())
                    .map(|n| severity = Some(n))
                    .is_some(),
                "severityText" => as_str(value)
                    .map(|s| record.severity_text = s.to_owned())
                    .is_some(),
                "name" | "eventName" => as_str(value)
                    .map(|s| record.event_name = s.to_owned())
                    .is_some(),
                "eventId" => {
                    attributes.push(renamed("event_id", field.value.clone()));
                    true
                }
                _ => false,
            };
            if !done {
                unmapped += 1;
                extra.push(prefixed("PartB.", field));
            }
        }
        record.severity_number = severity.unwrap_or_else(|| severity_of_level(header.level));
        attributes.extend(part_c);
        attributes.extend(extra);
        record.attributes = attributes;
        logs_request(&header, resource, record)
    } else {
        let mut span = Span {
            trace_id,
            span_id,
            flags,
            end_time_unix_nano: time,
            ..Default::default()
        };
        let mut status = Status::default();
        let mut semconv = Vec::new();
        for field in part_b {
            let value = field.value.as_ref();
            let done = match field.key.as_str() {
                "name" => as_str(value).map(|s| span.name = s.to_owned()).is_some(),
                "startTime" => as_str(value)
                    .and_then(parse_rfc3339)
                    .map(|t| span.start_time_unix_nano = t)
                    .is_some(),
                "kind" => as_int(value)
                    .filter(|k| (0..=4).contains(k))
                    .map(|k| span.kind = k as i32 + 1)
                    .is_some(),
                "parentId" => as_str(value)
                    .and_then(hex_id::<8>)
                    .map(|id| span.parent_span_id = id)
                    .is_some(),
                "links" => as_str(value)
                    .and_then(parse_links)
                    .map(|l| span.links = l)
                    .is_some(),
                "success" => match value.and_then(|v| v.value.as_ref()) {
                    Some(Value::BoolValue(ok)) => {
                        if !ok {
                            status.code = 2; // STATUS_CODE_ERROR
                        }
                        true
                    }
                    _ => false,
                },
                "statusMessage" => as_str(value)
                    .map(|s| status.message = s.to_owned())
                    .is_some(),
                "statusCode" => as_int(value)
                    .filter(|c| (0..=2).contains(c))
                    .map(|c| status.code = c as i32)
                    .is_some(),
                key => match SEMCONV.iter().find(|(cs, _)| *cs == key) {
                    Some((_, otel)) => {
                        semconv.push(renamed(otel, field.value.clone()));
                        true
                    }
                    None => false,
                },
            };
            if !done {
                unmapped += 1;
                extra.push(prefixed("PartB.", field));
            }
        }
        if !status.message.is_empty() && status.code == 0 {
            status.code = 2;
        }
        span.status = (status != Status::default()).then_some(status);
        attributes.extend(semconv);
        attributes.extend(part_c);
        attributes.extend(extra);
        span.attributes = attributes;
        Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope(&header)),
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    };
    EventHeaderEvent { request, unmapped }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Log,
    Span,
    Other,
}

/// The Common Schema PartB names the trace crate gives these semantic-convention
/// attributes, and the attributes they were made from.
const SEMCONV: [(&str, &str); 11] = [
    ("dbSystem", "db.system.name"),
    ("dbName", "db.namespace"),
    ("dbStatement", "db.query.text"),
    ("httpMethod", "http.request.method"),
    ("httpUrl", "url.full"),
    ("httpStatusCode", "http.response.status_code"),
    ("messagingSystem", "messaging.system"),
    ("messagingDestination", "messaging.destination.name"),
    ("messagingUrl", "messaging.url"),
    ("rpcSystem", "rpc.system.name"),
    ("rpcGrpcStatusCode", "rpc.response.status_code"),
];

fn scope(header: &Header) -> InstrumentationScope {
    InstrumentationScope {
        name: header.provider.clone(),
        ..Default::default()
    }
}

fn logs_request(header: &Header, resource: Resource, record: LogRecord) -> Request {
    Request::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope(header)),
                log_records: vec![record],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

/// The EventHeader facts no OTLP field holds: level and keyword always; the event's name
/// when it is not the PartB type's; id, tag and activity ids when set.
fn header_attributes(header: &Header, type_name: Option<&str>) -> Vec<KeyValue> {
    let mut attributes = vec![
        kv(
            "eventheader.level",
            Value::IntValue(i64::from(header.level)),
        ),
        // Keywords are a 64-bit mask: kept bit for bit.
        kv(
            "eventheader.keyword",
            Value::IntValue(header.keyword as i64),
        ),
    ];
    if type_name.is_some_and(|t| t != header.event_name) {
        attributes.push(kv(
            "eventheader.name",
            Value::StringValue(header.event_name.clone()),
        ));
    }
    if header.id != 0 {
        attributes.push(kv("eventheader.id", Value::IntValue(i64::from(header.id))));
    }
    if header.tag != 0 {
        attributes.push(kv(
            "eventheader.tag",
            Value::IntValue(i64::from(header.tag)),
        ));
    }
    if let Some(id) = &header.activity_id {
        attributes.push(kv(
            "eventheader.activity_id",
            Value::StringValue(id.clone()),
        ));
    }
    if let Some(id) = &header.related_activity_id {
        attributes.push(kv(
            "eventheader.related_activity_id",
            Value::StringValue(id.clone()),
        ));
    }
    attributes
}

/// OTLP severity numbers for EventHeader levels 1 (critical) to 5 (verbose), as the logs
/// crate maps them (the lowest number of each range).
fn severity_of_level(level: u8) -> i32 {
    match level {
        1 => 21, // FATAL
        2 => 17, // ERROR
        3 => 13, // WARN
        4 => 9,  // INFO
        5 => 5,  // DEBUG
        _ => 0,
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn renamed(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    }
}

fn prefixed(prefix: &str, field: KeyValue) -> KeyValue {
    KeyValue {
        key: format!("{prefix}{}", field.key),
        value: field.value,
        ..Default::default()
    }
}

fn kvlist(field: KeyValue) -> Vec<KeyValue> {
    match field.value.and_then(|v| v.value) {
        Some(Value::KvlistValue(list)) => list.values,
        _ => Vec::new(),
    }
}

fn as_str(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn as_int(value: Option<&AnyValue>) -> Option<i64> {
    match value?.value.as_ref()? {
        Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// A trace (N = 16) or span (N = 8) id from its 2N lowercase or uppercase hex digits.
fn hex_id<const N: usize>(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Links as the trace crate writes them: `[{"toTraceId":"<32 hex>","toSpanId":"<16 hex>"},...]`.
fn parse_links(s: &str) -> Option<Vec<Link>> {
    let json: serde_json::Value = serde_json::from_str(s).ok()?;
    json.as_array()?
        .iter()
        .map(|link| {
            Some(Link {
                trace_id: hex_id::<16>(link.get("toTraceId")?.as_str()?)?,
                span_id: hex_id::<8>(link.get("toSpanId")?.as_str()?)?,
                ..Default::default()
            })
        })
        .collect()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time, `2026-01-02T03:04:05.123456789Z`
/// (fraction optional, any number of digits up to 9; `Z` or `+hh:mm`/`-hh:mm`).
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut pos = 19;
    let mut nanos = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = pos - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(start, digits)? * 10i64.pow(9 - digits as u32);
    }
    let offset = match b.get(pos..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(pos + 1, 2)? * 60 + num(pos + 4, 2)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Field encodings and formats, as the EventHeader spec numbers them.
    const STRUCT: u8 = 1;
    const VALUE8: u8 = 2;
    const VALUE16: u8 = 3;
    const VALUE32: u8 = 4;
    const VALUE64: u8 = 5;
    const VALUE128: u8 = 6;
    const STR8: u8 = 10; // StringLength16Char8
    const BIN8: u8 = 13; // BinaryLength16Char8
    const CARRAY: u8 = 0x20;
    const VARRAY: u8 = 0x40;
    const SIGNED: u8 = 2;
    const BOOLEAN: u8 = 7;
    const FLOAT: u8 = 8;
    const HEXBYTES: u8 = 9;
    const UUID: u8 = 15;

    /// A little EventHeader encoder for tests: metadata and data written side by side.
    struct Ev {
        meta: Vec<u8>,
        data: Vec<u8>,
    }

    impl Ev {
        fn new(name: &str) -> Self {
            let mut meta = name.as_bytes().to_vec();
            meta.push(0);
            Self {
                meta,
                data: Vec::new(),
            }
        }

        /// A field's metadata: name, encoding, and format if not the default.
        fn meta(&mut self, name: &str, encoding: u8, format: u8) -> &mut Self {
            self.meta.extend_from_slice(name.as_bytes());
            self.meta.push(0);
            if format == 0 {
                self.meta.push(encoding);
            } else {
                self.meta.extend_from_slice(&[encoding | 0x80, format]);
            }
            self
        }

        fn data(&mut self, bytes: &[u8]) -> &mut Self {
            self.data.extend_from_slice(bytes);
            self
        }

        fn str(&mut self, name: &str, value: &str) -> &mut Self {
            self.meta(name, STR8, 0);
            self.data(&(value.len() as u16).to_le_bytes())
                .data(value.as_bytes())
        }

        fn int(&mut self, name: &str, value: i64) -> &mut Self {
            self.meta(name, VALUE64, SIGNED).data(&value.to_le_bytes())
        }

        /// A struct of `fields` fields: they follow.
        fn begin(&mut self, name: &str, fields: u8) -> &mut Self {
            self.meta(name, STRUCT, fields)
        }

        /// The event's bytes as perf hands them over after `trace_entry`, with padding.
        fn bytes(&self, level: u8) -> Vec<u8> {
            let mut b = vec![0x07, 0, 0, 0, 0, 0, 0, level];
            b.extend_from_slice(&(self.meta.len() as u16).to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes()); // extension kind: metadata
            b.extend_from_slice(&self.meta);
            b.extend_from_slice(&self.data);
            b.extend_from_slice(&[0; 4]);
            b
        }
    }

    fn decode(tracepoint: &str, ev: &Ev, level: u8) -> EventHeaderEvent {
        EventHeaderDecoder::new()
            .decode(tracepoint, &ev.bytes(level))
            .expect("decodes")
    }

    fn log_record(event: &EventHeaderEvent) -> (&InstrumentationScope, &LogRecord) {
        let Request::Logs(request) = &event.request else {
            panic!("not logs: {:?}", event.request)
        };
        let scope_logs = &request.resource_logs[0].scope_logs[0];
        (
            scope_logs.scope.as_ref().unwrap(),
            &scope_logs.log_records[0],
        )
    }

    fn s(v: &str) -> Option<Value> {
        Some(Value::StringValue(v.to_owned()))
    }

    fn i(v: i64) -> Option<Value> {
        Some(Value::IntValue(v))
    }

    fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        let found: Vec<_> = attributes.iter().filter(|kv| kv.key == key).collect();
        assert!(found.len() <= 1, "{key} twice in {attributes:?}");
        found.first()?.value.as_ref()?.value.as_ref()
    }

    #[test]
    fn any_eventheader_event_keeps_every_field_and_type() {
        let mut ev = Ev::new("Checkout");
        ev.meta("i8", VALUE8, SIGNED).data(&[0xfe]);
        ev.meta("u16", VALUE16, 0).data(&65535u16.to_le_bytes());
        ev.meta("u64", VALUE64, 0).data(&u64::MAX.to_le_bytes());
        ev.meta("f32", VALUE32, FLOAT).data(&1.5f32.to_le_bytes());
        ev.meta("f64", VALUE64, FLOAT)
            .data(&(-0.25f64).to_le_bytes());
        ev.meta("flag", VALUE8, BOOLEAN).data(&[1]);
        ev.meta("blob", BIN8, HEXBYTES)
            .data(&3u16.to_le_bytes())
            .data(&[1, 2, 3]);
        ev.meta("id", VALUE128, UUID).data(&[0x11; 16]);
        ev.meta("ints", VALUE32 | VARRAY, SIGNED)
            .data(&2u16.to_le_bytes())
            .data(&(-1i32).to_le_bytes())
            .data(&7i32.to_le_bytes());
        ev.meta("names", STR8 | VARRAY, 0)
            .data(&2u16.to_le_bytes())
            .data(&1u16.to_le_bytes())
            .data(b"a")
            .data(&2u16.to_le_bytes())
            .data(b"bc");
        ev.begin("outer", 2)
            .int("n", 5)
            .begin("inner", 1)
            .str("deep", "yes");
        let event = decode("user_events:shop_L2K1f", &ev, 2);
        assert_eq!(event.unmapped, 1, "not Common Schema: counted once");
        let (scope, record) = log_record(&event);
        assert_eq!(scope.name, "shop");
        assert_eq!(record.event_name, "Checkout");
        assert_eq!(record.severity_number, 17, "level 2 is an error");
        assert_eq!(record.time_unix_nano, 0);
        let a = &record.attributes;
        assert_eq!(attr(a, "eventheader.level"), i(2).as_ref());
        assert_eq!(attr(a, "eventheader.keyword"), i(0x1f).as_ref());
        assert_eq!(attr(a, "i8"), i(-2).as_ref());
        assert_eq!(attr(a, "u16"), i(65535).as_ref());
        assert_eq!(attr(a, "u64"), s("18446744073709551615").as_ref());
        assert_eq!(attr(a, "f32"), Some(&Value::DoubleValue(1.5)));
        assert_eq!(attr(a, "f64"), Some(&Value::DoubleValue(-0.25)));
        assert_eq!(attr(a, "flag"), Some(&Value::BoolValue(true)));
        assert_eq!(attr(a, "blob"), Some(&Value::BytesValue(vec![1, 2, 3])));
        assert_eq!(
            attr(a, "id"),
            s("11111111-1111-1111-1111-111111111111").as_ref()
        );
        let array = |values: Vec<Option<Value>>| {
            Value::ArrayValue(ArrayValue {
                values: values.into_iter().map(|value| AnyValue { value }).collect(),
            })
        };
        assert_eq!(attr(a, "ints"), Some(&array(vec![i(-1), i(7)])));
        assert_eq!(attr(a, "names"), Some(&array(vec![s("a"), s("bc")])));
        let Some(Value::KvlistValue(outer)) = attr(a, "outer") else {
            panic!("outer is not a struct: {a:?}")
        };
        assert_eq!(attr(&outer.values, "n"), i(5).as_ref());
        let Some(Value::KvlistValue(inner)) = attr(&outer.values, "inner") else {
            panic!("inner is not a struct: {outer:?}")
        };
        assert_eq!(attr(&inner.values, "deep"), s("yes").as_ref());
        assert_eq!(a.len(), 2 + 11, "{a:?}");
    }

    #[test]
    fn common_schema_logs_map_to_their_otlp_fields_and_keep_the_rest() {
        let mut ev = Ev::new("Audit");
        ev.meta("__csver__", VALUE32, 0)
            .data(&0x400u32.to_le_bytes());
        ev.begin("PartA", 5)
            .str("time", "2026-01-02T03:04:05.5Z")
            .str("ext_dt_traceId", "0af7651916cd43dd8448eb211c80319c")
            .str("ext_dt_spanId", "b7ad6b7169203331")
            .str("ext_cloud_role", "svc")
            .str("ext_weird", "kept");
        ev.begin("PartC", 2).int("n", 1);
        ev.begin("nested", 1).str("k", "v");
        ev.begin("PartB", 5)
            .str("_typeName", "Log")
            .meta("body", STRUCT, 1)
            .str("msg", "structured")
            .meta("severityNumber", VALUE16, SIGNED)
            .data(&10i16.to_le_bytes())
            .str("eventName", "audit.login")
            .str("mood", "odd");
        ev.str("stray", "top");
        let event = decode("acme_L4K2", &ev, 4);
        assert_eq!(event.unmapped, 3, "PartA.ext_weird, PartB.mood, stray");
        let (scope, record) = log_record(&event);
        assert_eq!(scope.name, "acme");
        assert_eq!(record.time_unix_nano, 1_767_323_045_500_000_000);
        assert_eq!(
            record.trace_id,
            hex_id::<16>("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(record.span_id, hex_id::<8>("b7ad6b7169203331").unwrap());
        assert_eq!(record.severity_number, 10);
        assert_eq!(record.event_name, "audit.login");
        let Some(Value::KvlistValue(body)) = record.body.as_ref().and_then(|b| b.value.as_ref())
        else {
            panic!("body is not a struct: {:?}", record.body)
        };
        assert_eq!(attr(&body.values, "msg"), s("structured").as_ref());
        let a = &record.attributes;
        assert_eq!(attr(a, "eventheader.name"), s("Audit").as_ref());
        assert_eq!(attr(a, "eventheader.keyword"), i(2).as_ref());
        assert_eq!(attr(a, "n"), i(1).as_ref());
        assert!(matches!(attr(a, "nested"), Some(Value::KvlistValue(_))));
        assert_eq!(attr(a, "PartA.ext_weird"), s("kept").as_ref());
        assert_eq!(attr(a, "PartB.mood"), s("odd").as_ref());
        assert_eq!(attr(a, "stray"), s("top").as_ref());
        let Request::Logs(request) = &event.request else {
            unreachable!()
        };
        let resource = request.resource_logs[0].resource.as_ref().unwrap();
        assert_eq!(
            attr(&resource.attributes, "service.name"),
            s("svc").as_ref()
        );
    }

    #[test]
    fn common_schema_spans_map_status_kind_parent_and_links() {
        let mut ev = Ev::new("Span");
        ev.meta("__csver__", VALUE32, 0)
            .data(&0x400u32.to_le_bytes());
        ev.begin("PartA", 3)
            .str("time", "1970-01-01T00:00:02Z")
            .str("ext_dt_traceId", "0af7651916cd43dd8448eb211c80319c")
            .str("ext_dt_spanId", "b7ad6b7169203331");
        ev.begin("PartB", 9)
            .str("_typeName", "Span")
            .str("name", "GET /")
            .str("startTime", "1970-01-01T00:00:01Z")
            .meta("success", VALUE8, BOOLEAN)
            .data(&[0])
            .meta("kind", VALUE32, 0)
            .data(&1u32.to_le_bytes())
            .str("parentId", "00f067aa0ba902b7")
            .str(
                "links",
                r#"[{"toTraceId":"0af7651916cd43dd8448eb211c80319c","toSpanId":"00f067aa0ba902b8"}]"#,
            )
            .str("statusMessage", "boom")
            .str("httpMethod", "GET");
        let event = decode("web_L4K1", &ev, 4);
        assert_eq!(event.unmapped, 0);
        let Request::Traces(request) = &event.request else {
            panic!("not traces: {:?}", event.request)
        };
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "GET /");
        assert_eq!(span.kind, 2, "Common Schema 1 (server) is OTLP 2");
        assert_eq!(
            (span.start_time_unix_nano, span.end_time_unix_nano),
            (1_000_000_000, 2_000_000_000)
        );
        assert_eq!(
            span.parent_span_id,
            hex_id::<8>("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(span.links.len(), 1);
        assert_eq!(
            span.links[0].span_id,
            hex_id::<8>("00f067aa0ba902b8").unwrap()
        );
        assert_eq!(
            span.status,
            Some(Status {
                message: "boom".into(),
                code: 2
            })
        );
        assert_eq!(
            attr(&span.attributes, "http.request.method"),
            s("GET").as_ref()
        );
        assert_eq!(attr(&span.attributes, "eventheader.name"), None);
    }

    #[test]
    fn broken_events_are_refused_with_a_reason() {
        let ev = Ev::new("E");
        let mut decoder = EventHeaderDecoder::new();
        let reason = |decoder: &mut EventHeaderDecoder, name: &str, bytes: &[u8]| {
            decoder.decode(name, bytes).unwrap_err().reason()
        };
        assert_eq!(
            reason(&mut decoder, "p_L4K1", &[0x07, 0]),
            "eventheader_invalid"
        );
        let mut bad_flags = ev.bytes(4);
        bad_flags[0] = 0xff;
        assert_eq!(
            reason(&mut decoder, "p_L4K1", &bad_flags),
            "eventheader_not_supported"
        );
        assert_eq!(
            reason(&mut decoder, "not_eventheader", &ev.bytes(4)),
            "eventheader_not_supported"
        );
        // A field whose data is missing.
        let mut short = Ev::new("E");
        short.meta("n", VALUE64, 0).data(&[1, 2]);
        let mut bytes = short.bytes(4);
        bytes.truncate(bytes.len() - 4);
        assert_eq!(
            reason(&mut decoder, "p_L4K1", &bytes),
            "eventheader_invalid"
        );
        // The decoder is still good for the next event.
        assert!(decoder.decode("p_L4K1", &ev.bytes(4)).is_ok());
    }

    #[test]
    fn field_types_the_enumerator_asserts_against_are_refused() {
        let mut decoder = EventHeaderDecoder::new();
        // Both array flags: a reserved encoding (found by the eventheader fuzz target).
        let mut both = Ev::new("E");
        both.str("before", "x")
            .meta("n", STR8 | CARRAY | VARRAY, 0)
            .data(&[1, 0, 1, 0, b'y']);
        let err = decoder.decode("p_L4K1", &both.bytes(4)).unwrap_err();
        assert_eq!(err.reason(), "eventheader_not_supported");
        // An array of structs with no field, behind a field with a tag and a constant
        // length array (what the walk of the metadata must step over).
        let mut empty = Ev::new("E");
        empty.meta("tagged", VALUE64 | 0x80, SIGNED | 0x80);
        empty.meta.extend_from_slice(&7u16.to_le_bytes());
        empty
            .data(&1i64.to_le_bytes())
            .meta("pair", VALUE64 | CARRAY, 0);
        empty.meta.extend_from_slice(&2u16.to_le_bytes());
        empty
            .data(&[0; 16])
            .meta("structs", STRUCT | VARRAY, 0)
            .data(&1u16.to_le_bytes());
        let err = decoder.decode("p_L4K1", &empty.bytes(4)).unwrap_err();
        assert_eq!(err.reason(), "eventheader_invalid");
        // Without the last field the same event decodes.
        let mut ok = Ev::new("E");
        ok.meta("tagged", VALUE64 | 0x80, SIGNED | 0x80);
        ok.meta.extend_from_slice(&7u16.to_le_bytes());
        ok.data(&1i64.to_le_bytes())
            .meta("pair", VALUE64 | CARRAY, 0);
        ok.meta.extend_from_slice(&2u16.to_le_bytes());
        ok.data(&[0; 16]);
        assert!(decoder.decode("p_L4K1", &ok.bytes(4)).is_ok());
    }

    #[test]
    fn rfc3339_times_parse_to_unix_nanos() {
        assert_eq!(
            parse_rfc3339("2026-01-02T03:04:05.123456789Z"),
            Some(1_767_323_045_123_456_789)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00"), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.Z"), None);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("not a time at all!!"), None);
    }

    #[test]
    fn ids_and_links_parse_from_hex() {
        assert_eq!(
            hex_id::<8>("00f067aa0ba902b7"),
            Some(vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(hex_id::<8>("00f067aa0ba902b"), None);
        assert_eq!(hex_id::<8>("00f067aa0ba902bx"), None);
        let links = parse_links(
            r#"[{"toTraceId":"0af7651916cd43dd8448eb211c80319c","toSpanId":"b7ad6b7169203331"}]"#,
        )
        .unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].span_id, hex_id::<8>("b7ad6b7169203331").unwrap());
        assert_eq!(parse_links("[]"), Some(vec![]));
        assert_eq!(parse_links(r#"[{"toTraceId":"x"}]"#), None);
    }

    #[test]
    fn eventheader_names_are_recognised() {
        assert!(is_eventheader_tracepoint("user_events:ue_eh_logs_L4K1"));
        assert!(is_eventheader_tracepoint("myprovider_L5K1"));
        assert!(is_eventheader_tracepoint("my_provider_L1Kff00Gmygroup"));
        assert!(!is_eventheader_tracepoint("user_events:otlp_logs"));
        assert!(!is_eventheader_tracepoint("user_events:x_L4"));
        assert!(!is_eventheader_tracepoint("_L4K1"));
        assert!(!is_eventheader_tracepoint("sched:x_L4K1"));
        assert!(!is_eventheader_tracepoint("x_LAK1"));
    }
}
