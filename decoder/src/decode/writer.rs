//! Who wrote an event, as the kernel saw it, stamped on the resources of the request the
//! event carries.
//!
//! Any local process may write `service.name=payments` into its payload; what it cannot
//! choose is the pid and cgroup the kernel records with its sample. Those are added to
//! every resource of the request as `user_events.writer.pid` and
//! `user_events.writer.cgroup_id` (and `process.pid` when the payload has none), and any
//! attribute a payload carries under the reserved `user_events.writer.` prefix is removed
//! first, and counted.
//!
//! Without decoding the request: protobuf merges a second occurrence of an embedded
//! message field into the first, so appending an encoded `resource { attributes: [...] }`
//! to each `ResourceMetrics`/`ResourceSpans`/`ResourceLogs` (and rewriting its length
//! prefix) adds the attributes and leaves every other byte as it was. Only the resources'
//! attribute keys are looked at; a resource is rewritten only when it carries a forged
//! attribute.

use prost::encoding::{
    WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
};

use super::validate::Invalid;

/// The prefix of the attributes only the decoder may write.
pub const WRITER_PREFIX: &str = "user_events.writer.";
/// The writing process's id, from the kernel's sample.
pub const WRITER_PID: &str = "user_events.writer.pid";
/// The id of the writing task's cgroup, from the kernel's sample: the inode number of its
/// directory in the hierarchy the perf_event controller is bound to (cgroup v2 on current
/// systems, where a task reports the root, 1, until some controller has been enabled at
/// the root, as systemd does at boot).
pub const WRITER_CGROUP_ID: &str = "user_events.writer.cgroup_id";
/// The semantic-convention process id, added when the payload's resource has none.
const PROCESS_PID: &str = "process.pid";

/// The writer of one event, from the kernel's sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Process id (`PERF_SAMPLE_TID`'s pid).
    pub pid: u32,
    /// Cgroup id (`PERF_SAMPLE_CGROUP`), when the sample carries one.
    pub cgroup_id: Option<u64>,
}

/// Appends `request` (an encoded export request of any signal, checked by
/// [`validate_request`](super::validate_request)) to `out` with `writer` stamped on each of
/// its resources. Returns how many forged `user_events.writer.*` attributes were removed.
/// On an error `out` holds part of the request: truncate it.
pub fn stamp_writer(request: &[u8], writer: Writer, out: &mut Vec<u8>) -> Result<u64, Invalid> {
    out.reserve(request.len() + 64);
    let mut forged = 0;
    let mut buf = request;
    while !buf.is_empty() {
        let field = buf;
        let (tag, wire_type) = key(&mut buf)?;
        if tag == 1 && wire_type == WireType::LengthDelimited {
            let resource_x = delimited(&mut buf)?;
            forged += stamp_resource_x(resource_x, writer, out)?;
        } else {
            skip(wire_type, &mut buf)?;
            out.extend_from_slice(&field[..field.len() - buf.len()]);
        }
    }
    Ok(forged)
}

/// What a scan of a `ResourceX`'s resources found.
#[derive(Default)]
struct Scan {
    forged: u64,
    has_process_pid: bool,
}

/// Writes one `ResourceMetrics`/`ResourceSpans`/`ResourceLogs` (field 1 of the request,
/// `body` its contents) with the writer's resource appended.
fn stamp_resource_x(body: &[u8], writer: Writer, out: &mut Vec<u8>) -> Result<u64, Invalid> {
    let mut scan = Scan::default();
    each_field(body, |tag, wire_type, value, _| {
        if tag == 1 && wire_type == WireType::LengthDelimited {
            scan_resource(value, &mut scan)?;
        }
        Ok(())
    })?;
    let extra = writer_resource(writer, !scan.has_process_pid);
    if scan.forged == 0 {
        write_delimited(out, 1, body.len() + extra.len());
        out.extend_from_slice(body);
    } else {
        // Rare: rewrite the resources without the forged attributes.
        let mut clean = Vec::with_capacity(body.len());
        each_field(body, |tag, wire_type, value, field| {
            if tag == 1 && wire_type == WireType::LengthDelimited {
                let resource = strip_forged(value)?;
                write_delimited(&mut clean, 1, resource.len());
                clean.extend_from_slice(&resource);
            } else {
                clean.extend_from_slice(field);
            }
            Ok(())
        })?;
        write_delimited(out, 1, clean.len() + extra.len());
        out.extend_from_slice(&clean);
    }
    out.extend_from_slice(&extra);
    Ok(scan.forged)
}

/// Looks at a `Resource`'s attribute keys.
fn scan_resource(resource: &[u8], scan: &mut Scan) -> Result<(), Invalid> {
    each_field(resource, |tag, wire_type, value, _| {
        if tag == 1 && wire_type == WireType::LengthDelimited {
            match attribute_key(value)? {
                Some(k) if k.starts_with(WRITER_PREFIX.as_bytes()) => scan.forged += 1,
                Some(k) if k == PROCESS_PID.as_bytes() => scan.has_process_pid = true,
                _ => {}
            }
        }
        Ok(())
    })
}

/// A `Resource` without its `user_events.writer.*` attributes.
fn strip_forged(resource: &[u8]) -> Result<Vec<u8>, Invalid> {
    let mut out = Vec::with_capacity(resource.len());
    each_field(resource, |tag, wire_type, value, field| {
        let forged = tag == 1
            && wire_type == WireType::LengthDelimited
            && attribute_key(value)?.is_some_and(|k| k.starts_with(WRITER_PREFIX.as_bytes()));
        if !forged {
            out.extend_from_slice(field);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A `KeyValue`'s key: its last `key` field, as decoding would keep it.
fn attribute_key(key_value: &[u8]) -> Result<Option<&[u8]>, Invalid> {
    let mut found = None;
    each_field(key_value, |tag, wire_type, value, _| {
        if tag == 1 && wire_type == WireType::LengthDelimited {
            found = Some(value);
        }
        Ok(())
    })?;
    Ok(found)
}

/// The encoded `resource { attributes: [...] }` (field 1 of a `ResourceX`) that names the
/// writer.
fn writer_resource(writer: Writer, process_pid: bool) -> Vec<u8> {
    let mut attributes = Vec::with_capacity(96);
    if process_pid {
        int_attribute(&mut attributes, PROCESS_PID, i64::from(writer.pid));
    }
    int_attribute(&mut attributes, WRITER_PID, i64::from(writer.pid));
    if let Some(id) = writer.cgroup_id {
        // OTLP has no unsigned integer; ids are inode numbers, far below 2^63.
        int_attribute(&mut attributes, WRITER_CGROUP_ID, id as i64);
    }
    let mut out = Vec::with_capacity(attributes.len() + 4);
    write_delimited(&mut out, 1, attributes.len());
    out.extend_from_slice(&attributes);
    out
}

/// Appends `attributes { key: key, value { int_value: value } }` (field 1 of a `Resource`).
fn int_attribute(out: &mut Vec<u8>, key: &str, value: i64) {
    // AnyValue { int_value = 3 }
    let any_len = 1 + encoded_len_varint(value as u64);
    // KeyValue { key = 1, value = 2 }
    let kv_len = 1 + encoded_len_varint(key.len() as u64) + key.len() + 1 + 1 + any_len;
    write_delimited(out, 1, kv_len);
    write_delimited(out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    write_delimited(out, 2, any_len);
    encode_key(3, WireType::Varint, out);
    encode_varint(value as u64, out);
}

fn write_delimited(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// Calls `f(tag, wire type, value, whole field)` for each field of a message; `value` is
/// the contents of a length-delimited field and empty for the others.
fn each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, WireType, &'a [u8], &'a [u8]) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    while !buf.is_empty() {
        let field = buf;
        let (tag, wire_type) = key(&mut buf)?;
        let value = if wire_type == WireType::LengthDelimited {
            delimited(&mut buf)?
        } else {
            skip(wire_type, &mut buf)?;
            &[]
        };
        f(tag, wire_type, value, &field[..field.len() - buf.len()])?;
    }
    Ok(())
}

fn key(buf: &mut &[u8]) -> Result<(u32, WireType), Invalid> {
    decode_key(buf).map_err(|_| Invalid::new("bad field key"))
}

fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Invalid> {
    let len = decode_varint(buf).map_err(|_| Invalid::new("bad length"))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|n| *n <= buf.len())
        .ok_or(Invalid::new("length past the end"))?;
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

/// Skips a field that is not length-delimited (those are read by [`delimited`]).
fn skip(wire_type: WireType, buf: &mut &[u8]) -> Result<(), Invalid> {
    let n = match wire_type {
        WireType::Varint => {
            decode_varint(buf).map_err(|_| Invalid::new("bad varint"))?;
            0
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => {
            delimited(buf)?;
            0
        }
        WireType::StartGroup | WireType::EndGroup => return Err(Invalid::new("group")),
    };
    if buf.len() < n {
        return Err(Invalid::new("field past the end"));
    }
    *buf = &buf[n..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Request, Signal, validate_request};
    use prost::Message;
    use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
    use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::common::v1::{AnyValue, KeyValue, any_value::Value};
    use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use ue_proto::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics};
    use ue_proto::resource::v1::Resource;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, Value::StringValue(v.into()))
    }

    fn i(key: &str, v: i64) -> KeyValue {
        kv(key, Value::IntValue(v))
    }

    fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
        Some(Resource {
            attributes,
            ..Default::default()
        })
    }

    fn traces(resources: Vec<Option<Resource>>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: resources
                .into_iter()
                .map(|resource| ResourceSpans {
                    resource,
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            name: "s".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    schema_url: "https://opentelemetry.io/schemas/1.0".into(),
                })
                .collect(),
        }
    }

    fn stamp(signal: Signal, bytes: &[u8], writer: Writer) -> (Request, u64) {
        let mut out = b"before".to_vec();
        let forged = stamp_writer(bytes, writer, &mut out).unwrap();
        assert_eq!(&out[..6], b"before", "appends");
        let items = validate_request(signal, &out[6..]).expect("a stamped request checks");
        let request = Request::decode(signal, &out[6..]).unwrap();
        assert_eq!(items, request.items());
        (request, forged)
    }

    const WRITER: Writer = Writer {
        pid: 4242,
        cgroup_id: Some(9876),
    };

    #[test]
    fn every_resource_gets_the_writer_and_nothing_else_changes() {
        let req = traces(vec![
            resource(vec![s("service.name", "payments")]),
            None,
            resource(vec![s("service.name", "b"), i("process.pid", 7)]),
        ]);
        let (Request::Traces(got), forged) = stamp(Signal::Traces, &req.encode_to_vec(), WRITER)
        else {
            panic!("traces")
        };
        assert_eq!(forged, 0);
        let mut want = req.clone();
        let writer = [i(WRITER_PID, 4242), i(WRITER_CGROUP_ID, 9876)];
        fn attrs(rs: &mut ResourceSpans) -> &mut Vec<KeyValue> {
            &mut rs.resource.get_or_insert_with(Default::default).attributes
        }
        attrs(&mut want.resource_spans[0]).push(i("process.pid", 4242));
        attrs(&mut want.resource_spans[0]).extend(writer.clone());
        attrs(&mut want.resource_spans[1]).push(i("process.pid", 4242));
        attrs(&mut want.resource_spans[1]).extend(writer.clone());
        // The payload's own process.pid stays; the writer's pid is beside it.
        attrs(&mut want.resource_spans[2]).extend(writer);
        assert_eq!(got, want);
    }

    #[test]
    fn forged_writer_attributes_are_replaced_and_counted() {
        let mut forged_resource = Resource {
            attributes: vec![
                i(WRITER_PID, 1),
                s("service.name", "payments"),
                s(WRITER_CGROUP_ID, "root"),
                s("user_events.writer.anything", "x"),
            ],
            dropped_attributes_count: 3,
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(forged_resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".into(),
                        data: Some(ue_proto::metrics::v1::metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default()],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let writer = Writer {
            pid: 10,
            cgroup_id: None,
        };
        let (Request::Metrics(got), forged) = stamp(Signal::Metrics, &req.encode_to_vec(), writer)
        else {
            panic!("metrics")
        };
        assert_eq!(forged, 3);
        forged_resource.attributes = vec![
            s("service.name", "payments"),
            i("process.pid", 10),
            i(WRITER_PID, 10),
        ];
        assert_eq!(got.resource_metrics[0].resource, Some(forged_resource));
        assert_eq!(
            got.resource_metrics[0].scope_metrics,
            req.resource_metrics[0].scope_metrics
        );
    }

    #[test]
    fn a_key_given_twice_is_judged_by_the_one_decoding_keeps() {
        // KeyValue { key: "innocent", key: "user_events.writer.pid", value: 1 }: prost keeps
        // the last key, so this is a forged attribute.
        let mut kv_bytes = Vec::new();
        write_delimited(&mut kv_bytes, 1, 8);
        kv_bytes.extend_from_slice(b"innocent");
        write_delimited(&mut kv_bytes, 1, WRITER_PID.len());
        kv_bytes.extend_from_slice(WRITER_PID.as_bytes());
        let mut resource_bytes = Vec::new();
        write_delimited(&mut resource_bytes, 1, kv_bytes.len());
        resource_bytes.extend_from_slice(&kv_bytes);
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // Prepend the hostile resource inside the ResourceLogs.
        let inner = logs.resource_logs[0].encode_to_vec();
        let mut resource_logs = Vec::new();
        write_delimited(&mut resource_logs, 1, resource_bytes.len());
        resource_logs.extend_from_slice(&resource_bytes);
        resource_logs.extend_from_slice(&inner);
        let mut req = Vec::new();
        write_delimited(&mut req, 1, resource_logs.len());
        req.extend_from_slice(&resource_logs);
        let decoded = ExportLogsServiceRequest::decode(&req[..]).unwrap();
        let resource = decoded.resource_logs[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, WRITER_PID);

        let (Request::Logs(got), forged) = stamp(Signal::Logs, &req, WRITER) else {
            panic!("logs")
        };
        assert_eq!(forged, 1);
        let keys: Vec<&str> = got.resource_logs[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["process.pid", WRITER_PID, WRITER_CGROUP_ID]);
    }

    #[test]
    fn concatenated_requests_are_stamped_each() {
        let a = traces(vec![resource(vec![s("service.name", "a")])]).encode_to_vec();
        let b = traces(vec![None, None]).encode_to_vec();
        let (Request::Traces(got), _) = stamp(Signal::Traces, &[a, b].concat(), WRITER) else {
            panic!("traces")
        };
        assert_eq!(got.resource_spans.len(), 3);
        for rs in &got.resource_spans {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            assert!(attrs.contains(&i(WRITER_PID, 4242)), "{attrs:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_a_request_are_refused() {
        let mut out = Vec::new();
        assert!(stamp_writer(&[0x0a, 0x05, 0x01], WRITER, &mut out).is_err());
        assert!(stamp_writer(&[0x0b], WRITER, &mut out).is_err());
    }
}
