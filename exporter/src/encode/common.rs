//! The OTLP messages both signals share: attributes, values, resource, scope, timestamps.
//! Field numbers are those of `opentelemetry/proto/common/v1` and `resource/v1`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;

use crate::protobuf::{bytes, bytes_always, concat_framed, double_always, message, varint_always};

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

/// A `KeyValue` as field `field` (below 16) of the enclosing message.
///
/// Attributes are most of what an item holds. Scalar and string values with a key and value
/// short enough that every length is one byte (nearly all) are written in one
/// [`concat_framed`] of four header bytes, the key, the value's three or four header bytes
/// and the value; the rest go through [`message`]'s length fix-up.
#[inline]
pub(crate) fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    debug_assert!(field < 16, "one-byte keys");
    let key = key.as_bytes();
    // With a key and value of at most 112 bytes together, every length below is under 128.
    if !key.is_empty() && key.len() <= 112 {
        let room = 112 - key.len();
        let mut varint = [0u8; 10];
        // The AnyValue's field key and length, the value's key (and the string's length),
        // then its payload.
        let (mid, mid_len, payload): ([u8; 4], usize, &[u8]) = match value {
            Value::String(v) if v.as_str().len() <= room => {
                let v = v.as_str().as_bytes();
                ([0x12, 2 + v.len() as u8, 1 << 3 | 2, v.len() as u8], 4, v)
            }
            Value::I64(v) => {
                let n = varint_into(&mut varint, *v as u64);
                ([0x12, 1 + n as u8, 3 << 3, 0], 3, &varint[..n])
            }
            Value::Bool(v) => {
                varint[0] = u8::from(*v);
                ([0x12, 2, 2 << 3, 0], 3, &varint[..1])
            }
            Value::F64(v) => {
                varint[..8].copy_from_slice(&v.to_le_bytes());
                ([0x12, 9, 4 << 3 | 1, 0], 3, &varint[..8])
            }
            _ => return key_value_slow(buf, field, key, value),
        };
        let body = 2 + key.len() + mid_len + payload.len();
        let head = [
            (field << 3 | 2) as u8,
            body as u8,
            1 << 3 | 2,
            key.len() as u8,
        ];
        concat_framed(buf, (head, 4), key, (mid, mid_len), payload);
        return;
    }
    key_value_slow(buf, field, key, value);
}

/// [`key_value`] for empty or long keys and values, and arrays.
#[cold]
fn key_value_slow(buf: &mut Vec<u8>, field: u32, key: &[u8], value: &Value) {
    message(buf, field, |buf| {
        bytes(buf, 1, key);
        message(buf, 2, |buf| any_value(buf, value));
    });
}

/// `value` as a varint at the start of `out`; returns its length.
#[inline(always)]
fn varint_into(out: &mut [u8; 10], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, KeyValue as ProtoKeyValue, any_value::Value as ProtoValue,
    };

    /// The attribute as a field of a message holding only it, as prost writes it.
    fn expected(field: u32, key: &str, value: &Value) -> Vec<u8> {
        let value = match value {
            Value::Bool(v) => ProtoValue::BoolValue(*v),
            Value::I64(v) => ProtoValue::IntValue(*v),
            Value::F64(v) => ProtoValue::DoubleValue(*v),
            Value::String(v) => ProtoValue::StringValue(v.to_string()),
            _ => unreachable!(),
        };
        let kv = ProtoKeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        };
        let mut buf = Vec::new();
        prost::encoding::message::encode(field, &kv, &mut buf);
        buf
    }

    #[test]
    fn key_values_match_prost_on_both_sides_of_every_length_boundary() {
        let text = "k".repeat(300);
        for key_len in (0..=130).chain([200, 300]) {
            let key = &text[..key_len];
            let mut values: Vec<Value> = vec![
                Value::Bool(false),
                Value::Bool(true),
                Value::I64(0),
                Value::I64(-1),
                Value::I64(127),
                Value::I64(128),
                Value::I64(i64::MAX),
                Value::F64(0.0),
                Value::F64(-2.5),
                Value::F64(f64::NAN),
            ];
            values.extend(
                [
                    0, 1, 3, 4, 7, 8, 16, 17, 32, 33, 100, 112, 113, 125, 126, 200,
                ]
                .map(|n| Value::from("v".repeat(n))),
            );
            for value in &values {
                let mut got = vec![0xAA];
                key_value(&mut got, 9, key, value);
                assert_eq!(got[0], 0xAA, "what was there before stays");
                assert_eq!(
                    got[1..],
                    expected(9, key, value),
                    "key {key_len} bytes, value {value:?}"
                );
            }
        }
    }
}
