//! `validate_request` against prost: on valid requests of every shape and on many random
//! mutations of them, checking without decoding must give exactly decoding's answer, and
//! the same item count.

use proptest::prelude::*;
use prost::Message;
use ue_decoder::{Request, Signal, validate_request};
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_proto::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use ue_proto::metrics::v1::{
    self as m, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data,
    summary_data_point::ValueAtQuantile,
};
use ue_proto::resource::v1::Resource;
use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Attributes of every value kind, arrays and maps included.
fn attrs() -> Vec<KeyValue> {
    vec![
        kv("s", Value::StringValue("ünïcødé".into())),
        kv("b", Value::BoolValue(true)),
        kv("i", Value::IntValue(-7)),
        kv("d", Value::DoubleValue(1.5)),
        kv("y", Value::BytesValue(vec![0, 255, 7])),
        kv(
            "a",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::IntValue(1)),
                }],
            }),
        ),
        kv(
            "m",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", Value::StringValue("x".into()))],
            }),
        ),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: attrs(),
        dropped_attributes_count: 2,
        entity_refs: vec![EntityRef {
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            ..Default::default()
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1.0".into(),
        attributes: attrs(),
        dropped_attributes_count: 1,
    })
}

fn exemplar() -> Exemplar {
    Exemplar {
        filtered_attributes: attrs(),
        time_unix_nano: 3,
        span_id: vec![1; 8],
        trace_id: vec![2; 16],
        value: Some(m::exemplar::Value::AsInt(-4)),
    }
}

/// A metrics request with every kind of metric: 2 + 1 + 1 + 1 + 1 points.
fn metrics_request() -> ExportMetricsServiceRequest {
    let number = |v: f64| NumberDataPoint {
        attributes: attrs(),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: vec![exemplar()],
        flags: 1,
        value: Some(m::number_data_point::Value::AsDouble(v)),
    };
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "1".into(),
        metadata: attrs(),
        data: Some(data),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![
                    metric(
                        "sum",
                        Data::Sum(Sum {
                            data_points: vec![number(1.0), number(2.0)],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "gauge",
                        Data::Gauge(Gauge {
                            data_points: vec![number(-1.0)],
                        }),
                    ),
                    metric(
                        "hist",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs(),
                                count: 3,
                                sum: Some(4.5),
                                bucket_counts: vec![1, 2, 0],
                                explicit_bounds: vec![1.0, 2.0],
                                exemplars: vec![exemplar()],
                                min: Some(0.5),
                                max: Some(3.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "exp",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                attributes: attrs(),
                                count: 9,
                                scale: -3,
                                zero_count: 1,
                                positive: Some(Buckets {
                                    offset: -2,
                                    bucket_counts: vec![1, 300, 70_000],
                                }),
                                negative: Some(Buckets {
                                    offset: 5,
                                    bucket_counts: vec![4],
                                }),
                                exemplars: vec![exemplar()],
                                zero_threshold: 0.001,
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                    metric(
                        "summary",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                attributes: attrs(),
                                count: 2,
                                sum: 3.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.5,
                                    value: 1.0,
                                }],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                schema_url: "https://example.test/s".into(),
            }],
            schema_url: "https://example.test/r".into(),
        }],
    }
}

/// A traces request of 3 spans with every field.
fn traces_request() -> ExportTraceServiceRequest {
    let s = |name: &str| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        trace_state: "k=v".into(),
        parent_span_id: vec![3; 8],
        flags: 0x301,
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 10,
        end_time_unix_nano: 20,
        attributes: attrs(),
        dropped_attributes_count: 1,
        events: vec![span::Event {
            time_unix_nano: 15,
            name: "e".into(),
            attributes: attrs(),
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 1,
        links: vec![span::Link {
            trace_id: vec![4; 16],
            span_id: vec![5; 8],
            trace_state: "a=b".into(),
            attributes: attrs(),
            dropped_attributes_count: 1,
            flags: 0x100,
        }],
        dropped_links_count: 1,
        status: Some(Status {
            message: "m".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![s("a"), s("b"), s("c")],
                schema_url: "https://example.test/s".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A logs request of 2 records with every field, a map body among them.
fn logs_request() -> ExportLogsServiceRequest {
    let record = |body: Value| LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue { value: Some(body) }),
        attributes: attrs(),
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        event_name: "login".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![
                    record(Value::StringValue("hello".into())),
                    record(Value::KvlistValue(KeyValueList { values: attrs() })),
                ],
                schema_url: String::new(),
            }],
            schema_url: "https://example.test/r".into(),
        }],
    }
}

/// What prost says about `bytes`: the item count, or that they do not decode.
fn decoded(signal: Signal, bytes: &[u8]) -> Option<u64> {
    Request::decode(signal, bytes).ok().map(|r| r.items())
}

fn seeds() -> Vec<(Signal, Vec<u8>)> {
    let metrics = metrics_request().encode_to_vec();
    let traces = traces_request().encode_to_vec();
    // Two requests of a signal concatenated are one request holding both.
    let both = [metrics.clone(), metrics.clone()].concat();
    vec![
        (Signal::Metrics, metrics),
        (Signal::Traces, traces),
        (Signal::Metrics, both),
        (Signal::Metrics, Vec::new()),
        (Signal::Logs, logs_request().encode_to_vec()),
    ]
}

#[test]
fn valid_requests_validate_with_their_item_counts() {
    let expected = [6, 3, 12, 0, 2];
    for ((signal, bytes), want) in seeds().into_iter().zip(expected) {
        assert_eq!(decoded(signal, &bytes), Some(want));
        assert_eq!(validate_request(signal, &bytes), Ok(want));
    }
    // The other signal's schema gives the other answer prost gives.
    let (_, traces) = &seeds()[1];
    assert_eq!(
        validate_request(Signal::Metrics, traces).ok(),
        decoded(Signal::Metrics, traces)
    );
}

/// An `AnyValue` nested `depth` arrays deep, as a resource attribute.
fn nested(depth: usize) -> Vec<u8> {
    let mut v = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..depth {
        v = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "deep".into(),
                    value: Some(v),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn the_nesting_limit_is_prosts() {
    let mut saw = (false, false);
    for depth in 40..60 {
        let bytes = nested(depth);
        let got = validate_request(Signal::Metrics, &bytes).ok();
        assert_eq!(got, decoded(Signal::Metrics, &bytes), "depth {depth}");
        if got.is_some() {
            saw.0 = true;
        } else {
            saw.1 = true;
        }
    }
    assert_eq!(saw, (true, true), "both sides of the limit were tried");
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..8).prop_map(|(p, n)| Mutation::Delete(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
    match m {
        Mutation::Set(p, b) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes[i] = *b;
        }
        Mutation::Flip(p, bit) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::Truncate(p) => bytes.truncate(at(*p, bytes.len() + 1)),
        Mutation::Insert(p, b) => {
            let i = at(*p, bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Delete(p, n) if !bytes.is_empty() => {
            let i = at(*p, bytes.len());
            bytes.drain(i..(i + n).min(bytes.len()));
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_validate_exactly_as_they_decode(
        seed in 0usize..5,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (signal, mut bytes) = seeds().swap_remove(seed);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        prop_assert_eq!(validate_request(signal, &bytes).ok(), decoded(signal, &bytes));
    }
}

/// A traces request whose one resource holds one attribute with the body `kv`.
fn with_attribute_body(kv: &[u8]) -> Vec<u8> {
    let mut resource = vec![0x0a, kv.len() as u8];
    resource.extend_from_slice(kv);
    let mut resource_spans = vec![0x0a, resource.len() as u8];
    resource_spans.extend_from_slice(&resource);
    let mut request = vec![0x0a, resource_spans.len() as u8];
    request.extend_from_slice(&resource_spans);
    request
}

#[test]
fn attributes_in_every_layout_validate_as_they_decode() {
    // The checker takes a fast path for attributes laid out as writers lay them out; these
    // are that layout and its near misses, each of which must get prost's answer.
    let bodies: &[&[u8]] = &[
        b"\x0a\x01k\x12\x03\x0a\x01v",                // string value
        b"\x0a\x01k\x12\x02\x0a\x00",                 // empty string value
        b"\x0a\x00\x12\x02\x10\x01",                  // empty key, bool
        b"\x0a\x01k\x12\x03\x18\x96\x01",             // int 150
        b"\x0a\x01k\x12\x09\x21\0\0\0\0\0\0\xf0\x3f", // double 1.0
        b"\x0a\x01k\x12\x00",                         // empty AnyValue
        b"\x0a\x01k",                                 // no value
        b"\x0a\x01k\x12\x03\x0a\x01\xff",             // not UTF-8
        b"\x0a\x02\xc3\xa9\x12\x03\x0a\x01v",         // non-ASCII key, valid UTF-8
        b"\x0a\x01\xff\x12\x03\x0a\x01v",             // key not UTF-8
        b"\x0a\x01k\x12\x03\x0a\x02v",                // string longer than its value
        b"\x0a\x01k\x12\x03\x18\x96\x81",             // varint runs past the value
        b"\x0a\x01k\x12\x0b\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // 10-byte int -1
        b"\x0a\x01k\x12\x0b\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", // 10-byte overflow
        b"\x0a\x01k\x12\x08\x21\0\0\0\0\0\0\xf0",     // double cut short
        b"\x0a\x01k\x12\x05\x0a\x01v\x10\x01",        // two values: the last one wins
        b"\x0a\x01k\x12\x03\x0a\x01v\x18\x01",        // a field after the value
        b"\x12\x03\x0a\x01v\x0a\x01k",                // value before key
        b"\x0a\x01k\x12\x03\x0b\x01v",                // wrong wire type for the value
        b"\x0a\x01k\x12\x02\x28\x01",                 // unknown value field
    ];
    for body in bodies {
        let request = with_attribute_body(body);
        assert_eq!(
            validate_request(Signal::Traces, &request).ok(),
            decoded(Signal::Traces, &request),
            "attribute body {body:02x?}"
        );
    }
}
