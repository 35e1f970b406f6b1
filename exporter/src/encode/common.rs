//! The OTLP messages both signals share: attributes, values, resource, scope, timestamps.
//! Field numbers are those of `opentelemetry/proto/common/v1` and `resource/v1`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;

use crate::protobuf::{bytes, bytes_always, double_always, message, varint_always};

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
#[inline]
pub(crate) fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(buf, field, |buf| {
        bytes(buf, 1, key.as_bytes());
        message(buf, 2, |buf| any_value(buf, value));
    });
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
