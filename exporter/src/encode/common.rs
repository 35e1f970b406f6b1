//! The OTLP messages both signals share: attributes, values, resource, scope, timestamps.
//! Field numbers are those of `opentelemetry/proto/common/v1` and `resource/v1`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;

use prost::encoding::encoded_len_varint;

use crate::protobuf::{
    bytes, bytes_always, double_always, field_len, len_prefix, message, varint_always,
};

/// Nanoseconds since the Unix epoch; 0 before it, and modulo 2^64 after 2554, as the OTLP
/// transform does (in u64 arithmetic rather than its u128).
#[inline]
pub(crate) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(d.subsec_nanos()))
    })
}

/// A `KeyValue` as field `field` of the enclosing message.
///
/// Attributes are most of what an item holds, so scalar and string values, whose sizes are
/// known up front, take a path that reserves the exact space once and writes each length
/// directly; arrays go through [`message`]'s length fix-up.
#[inline]
pub(crate) fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
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

/// The body length of the `AnyValue` of a scalar or string value; `None` for arrays and
/// value kinds added after this crate.
#[inline]
fn scalar_value_len(value: &Value) -> Option<usize> {
    Some(match value {
        Value::Bool(_) => 2,
        Value::I64(v) => 1 + encoded_len_varint(*v as u64),
        Value::F64(_) => 9,
        Value::String(v) => field_len(v.as_str().len()),
        _ => return None,
    })
}

/// Every attribute of `attrs` as repeated field `field`.
#[inline]
pub(crate) fn attributes<'a>(
    buf: &mut Vec<u8>,
    field: u32,
    attrs: impl IntoIterator<Item = &'a KeyValue>,
) {
    for kv in attrs {
        key_value(buf, field, kv.key.as_str(), &kv.value);
    }
}

/// The body of an `AnyValue`.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => varint_always(buf, 2, u64::from(*v)),
        Value::I64(v) => varint_always(buf, 3, *v as u64),
        Value::F64(v) => double_always(buf, 4, *v),
        Value::String(v) => bytes_always(buf, 1, v.as_str().as_bytes()),
        Value::Array(array) => {
            message(buf, 5, |buf| match array {
                Array::Bool(vs) => array_values(buf, vs, |buf, v| {
                    varint_always(buf, 2, u64::from(*v));
                }),
                Array::I64(vs) => array_values(buf, vs, |buf, v| {
                    varint_always(buf, 3, *v as u64);
                }),
                Array::F64(vs) => array_values(buf, vs, |buf, v| double_always(buf, 4, *v)),
                Array::String(vs) => array_values(buf, vs, |buf, v| {
                    bytes_always(buf, 1, v.as_str().as_bytes());
                }),
                // A kind of array added to the API after this crate: an empty ArrayValue
                // rather than a panic in the application's export path.
                _ => {}
            });
        }
        // A kind of value added to the API after this crate: an empty AnyValue, as above.
        _ => {}
    }
}

/// The `values` of an `ArrayValue`, each an `AnyValue` whose body `one` writes.
fn array_values<T>(buf: &mut Vec<u8>, values: &[T], one: impl Fn(&mut Vec<u8>, &T)) {
    for v in values {
        message(buf, 1, |buf| one(buf, v));
    }
}

/// The body of a `Resource`.
pub(crate) fn resource(buf: &mut Vec<u8>, resource: &Resource) {
    for (key, value) in resource.iter() {
        key_value(buf, 1, key.as_str(), value);
    }
}

/// The body of an `InstrumentationScope`.
pub(crate) fn scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    bytes(buf, 1, scope.name().as_bytes());
    bytes(buf, 2, scope.version().unwrap_or_default().as_bytes());
    attributes(buf, 3, scope.attributes());
}
