//! `SdkLogRecord`s from the SDK straight into `ExportLogsServiceRequest` events. Field numbers
//! are those of `opentelemetry/proto/logs/v1/logs.proto` and `common/v1/common.proto`; values
//! map as opentelemetry-proto's transform maps them (the tests hold the two equal).
//!
//! Log records carry their own value type, `opentelemetry::logs::AnyValue` (with bytes, lists
//! of any values and maps, nested at will), not the `opentelemetry::Value` of span and metric
//! attributes, so bodies and record attributes have their encoder here.

use opentelemetry::logs::AnyValue;
use opentelemetry::{Array, InstrumentationScope, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogBatch, SdkLogRecord};
use prost::encoding::encoded_len_varint;

use super::common::{attributes, nanos, resource};
use super::{Oversize, level};
use crate::pack::Packer;
use crate::protobuf::{
    bytes, bytes_always, double_always, field_len, fixed32, fixed64, len_prefix, message, varint,
    varint_always,
};

/// Nesting levels of a logs event: the request, ResourceLogs, ScopeLogs.
pub(crate) const LEVELS: usize = 3;

/// Field number of the log records in `ScopeLogs`.
const LOG_RECORDS: u32 = 2;

/// A record as the SDK hands it over, with the scope of the logger that emitted it.
type Entry<'a> = (&'a SdkLogRecord, &'a InstrumentationScope);

/// The name of the scope a record is exported under: its target (for the `tracing` and `log`
/// appenders, the module path) if it has one, else its logger's scope name.
fn scope_name<'a>((record, scope): Entry<'a>) -> &'a str {
    record.target().map_or(scope.name(), |t| t.as_ref())
}

/// Whether two records are exported under the same scope: the OTLP transform's grouping, by
/// exported name, version, schema URL and attributes in any order. Compared field by field,
/// without building the scope it keys its map by.
///
/// `b_reflexive`: `b`'s scope equals itself ([`reflexive`]). Records of one logger share its
/// scope, so the common case is the very same scope and no target, decided without comparing
/// a byte.
#[inline]
fn same_scope(a: Entry<'_>, b: Entry<'_>, b_reflexive: bool) -> bool {
    let (sa, sb) = (a.1, b.1);
    let (na, nb) = (scope_name(a), scope_name(b));
    let same_name = na.len() == nb.len() && (std::ptr::eq(na, nb) || na == nb);
    if !same_name {
        return false;
    }
    if std::ptr::eq(sa, sb) && b_reflexive {
        return true;
    }
    sa.version().unwrap_or_default() == sb.version().unwrap_or_default()
        && sa.schema_url().unwrap_or_default() == sb.schema_url().unwrap_or_default()
        && (sa.attributes().eq(sb.attributes())
            || (sa.attributes().count() == sb.attributes().count()
                && sa.attributes().all(|kv| sb.attributes().any(|o| o == kv))))
}

/// Whether a scope equals itself: not when an attribute holds a NaN, which the transform's
/// grouping then never matches, giving each record a group of its own.
fn reflexive(scope: &InstrumentationScope) -> bool {
    scope.attributes().all(|kv| match &kv.value {
        Value::F64(v) => !v.is_nan(),
        Value::Array(Array::F64(vs)) => !vs.iter().any(|v| v.is_nan()),
        _ => true,
    })
}

/// Opens the resource level for the records that follow.
fn begin_resource(packer: &mut Packer<LEVELS>, res: &Resource) {
    let shell = packer.begin(level::RESOURCE, 1);
    message(&mut shell.prefix, 1, |b| resource(b, res));
    bytes(
        &mut shell.suffix,
        3,
        res.schema_url().unwrap_or_default().as_bytes(),
    );
}

/// Opens the scope level for the records that follow, named as [`scope_name`] says.
fn begin_scope(packer: &mut Packer<LEVELS>, entry: Entry<'_>) {
    let sc = entry.1;
    let shell = packer.begin(level::SCOPE, 2);
    message(&mut shell.prefix, 1, |b| {
        bytes(b, 1, scope_name(entry).as_bytes());
        bytes(b, 2, sc.version().unwrap_or_default().as_bytes());
        attributes(b, 3, sc.attributes());
    });
    bytes(
        &mut shell.suffix,
        3,
        sc.schema_url().unwrap_or_default().as_bytes(),
    );
}

/// Adds one record under the open resource and scope, flushing full events to `emit`.
fn add_record(
    packer: &mut Packer<LEVELS>,
    entry: Entry<'_>,
    emit: &mut dyn FnMut(&[u8], usize),
    oversize: &mut Oversize,
) {
    let record = entry.0;
    if packer
        .item(LOG_RECORDS, true, |b| record_body(b, record), emit)
        .is_err()
    {
        oversize.add(record.event_name().unwrap_or_else(|| scope_name(entry)));
    }
}

/// Packs the records of `batch`, grouped by the scope they are exported under in the order
/// each scope first appears, into events of at most the packer's limit, handing each to
/// `emit`.
pub(crate) fn pack(
    packer: &mut Packer<LEVELS>,
    res: &Resource,
    batch: &LogBatch<'_>,
    emit: &mut dyn FnMut(&[u8], usize),
) -> Oversize {
    let mut oversize = Oversize::default();
    begin_resource(packer, res);
    // As for spans: batches hold few scopes, most often one, so a scan per scope beats
    // hashing every record's scope; a scope never equal to itself (a NaN attribute) gets a
    // group of its own per record, as in the OTLP transform's grouping.
    let first = batch.iter().next();
    let one_scope = first.is_some_and(|first| {
        let reflexive = reflexive(first.1);
        batch.iter().all(|e| same_scope(e, first, reflexive))
    });
    match first {
        None => {}
        Some(first) if one_scope => {
            begin_scope(packer, first);
            for entry in batch.iter() {
                add_record(packer, entry, emit, &mut oversize);
            }
        }
        Some(_) => {
            let mut done = vec![false; batch.iter().count()];
            for (i, lead) in batch.iter().enumerate() {
                if done[i] {
                    continue;
                }
                begin_scope(packer, lead);
                add_record(packer, lead, emit, &mut oversize);
                let lead_reflexive = reflexive(lead.1);
                for (j, entry) in batch.iter().enumerate().skip(i + 1) {
                    if !done[j] && same_scope(entry, lead, lead_reflexive) {
                        add_record(packer, entry, emit, &mut oversize);
                        done[j] = true;
                    }
                }
            }
        }
    }
    packer.flush(emit);
    oversize
}

/// The body of a `LogRecord`, fields in number order as prost writes them.
fn record_body(buf: &mut Vec<u8>, record: &SdkLogRecord) {
    fixed64(buf, 1, record.timestamp().map_or(0, nanos));
    // The API's severities are numbered as OTLP's SeverityNumber (1 = TRACE ... 24 = FATAL4).
    varint(buf, 2, record.severity_number().map_or(0, |s| s as u64));
    bytes(
        buf,
        3,
        record.severity_text().unwrap_or_default().as_bytes(),
    );
    if let Some(body) = record.body() {
        message(buf, 5, |buf| any_value(buf, body));
    }
    for (key, value) in record.attributes_iter() {
        key_value(buf, 6, key.as_str(), value);
    }
    // 7, dropped_attributes_count: the SDK does not count the attributes it drops.
    if let Some(cx) = record.trace_context() {
        fixed32(buf, 8, cx.trace_flags.map_or(0, |f| u32::from(f.to_u8())));
        bytes(buf, 9, &cx.trace_id.to_bytes());
        bytes(buf, 10, &cx.span_id.to_bytes());
    }
    fixed64(buf, 11, record.observed_timestamp().map_or(0, nanos));
    bytes(buf, 12, record.event_name().unwrap_or_default().as_bytes());
}

/// A `KeyValue` holding a log `AnyValue`, as field `field` of the enclosing message.
///
/// Scalar and string values, most of what records carry, have sizes known up front: their
/// lengths are written directly, once. Bytes, lists and maps go through [`message`]'s length
/// fix-up.
#[inline]
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &AnyValue) {
    let Some(value_len) = scalar_value_len(value) else {
        message(buf, field, |buf| {
            bytes(buf, 1, key.as_bytes());
            message(buf, 2, |buf| any_value(buf, value));
        });
        return;
    };
    let key_len = if key.is_empty() {
        0
    } else {
        field_len(key.len())
    };
    let body = key_len + field_len(value_len);
    buf.reserve(field_len(body) + 1);
    len_prefix(buf, field, body);
    bytes(buf, 1, key.as_bytes());
    len_prefix(buf, 2, value_len);
    any_value(buf, value);
}

/// The body length of the `AnyValue` of a scalar or string value; `None` for the others.
#[inline]
fn scalar_value_len(value: &AnyValue) -> Option<usize> {
    Some(match value {
        AnyValue::Boolean(_) => 2,
        AnyValue::Int(v) => 1 + encoded_len_varint(*v as u64),
        AnyValue::Double(_) => 9,
        AnyValue::String(v) => field_len(v.as_str().len()),
        _ => return None,
    })
}

/// The body of an `AnyValue`; lists and maps recurse.
fn any_value(buf: &mut Vec<u8>, value: &AnyValue) {
    match value {
        AnyValue::String(v) => bytes_always(buf, 1, v.as_str().as_bytes()),
        AnyValue::Boolean(v) => varint_always(buf, 2, u64::from(*v)),
        AnyValue::Int(v) => varint_always(buf, 3, *v as u64),
        AnyValue::Double(v) => double_always(buf, 4, *v),
        AnyValue::ListAny(values) => {
            message(buf, 5, |buf| {
                for v in values.iter() {
                    message(buf, 1, |buf| any_value(buf, v));
                }
            });
        }
        AnyValue::Map(map) => {
            // The map's own iteration order, which the transform's clone of it keeps too.
            message(buf, 6, |buf| {
                for (k, v) in map.iter() {
                    key_value(buf, 1, k.as_str(), v);
                }
            });
        }
        AnyValue::Bytes(v) => bytes_always(buf, 7, v),
        // A kind of value added to the API after this crate: an empty AnyValue rather than a
        // panic in the application's export path.
        _ => {}
    }
}
