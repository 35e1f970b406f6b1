//! The direct encoding against its oracle, opentelemetry-proto's transform of the same SDK
//! data: byte for byte when everything fits in one event, and item for item (nothing lost,
//! nothing duplicated, every item with its resource, scope and metric metadata) at any limit.
//!
//! Log records come from the real SDK's logger (`create_log_record`, every field set through
//! the API) and are handed over as the SDK's `LogBatch`.
//!
//! Metrics come from the real SDK (instruments recorded, then collected), since the SDK's
//! metric data cannot be built by hand. The SDK never fills exemplars in 0.33, so the
//! exemplar encoding has no input to be checked on here.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics as SdkResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message;

use otlp_user_events::{Oversize, pack_logs, pack_metrics, pack_spans};
use tests::otlp::{metric_points, scoped_log_records, spans as span_entries};

type Events = Vec<(Vec<u8>, usize)>;

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// What one export produced: our events at each limit, and the oracle's request.
#[derive(Default)]
struct MetricsRun {
    ours: Vec<(usize, Events, Oversize)>,
    oracle: Option<ExportMetricsServiceRequest>,
}

/// A push exporter that runs both encodings on the very `ResourceMetrics` the SDK hands over.
#[derive(Clone)]
struct Both {
    limits: Vec<usize>,
    temporality: Temporality,
    runs: Arc<Mutex<Vec<MetricsRun>>>,
}

impl std::fmt::Debug for Both {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Both")
    }
}

impl PushMetricExporter for Both {
    async fn export(&self, metrics: &SdkResourceMetrics) -> OTelSdkResult {
        let mut run = MetricsRun {
            oracle: Some(ExportMetricsServiceRequest::from(metrics)),
            ..Default::default()
        };
        for &limit in &self.limits {
            let mut events = Vec::new();
            let oversize = pack_metrics(metrics, limit, |b, n| events.push((b.to_vec(), n)));
            run.ours.push((limit, events, oversize));
        }
        self.runs.lock().unwrap().push(run);
        Ok(())
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        self.temporality
    }
}

/// Decodes every event, checking each one's reported item count, into one request.
fn decode_metrics(events: &Events) -> ExportMetricsServiceRequest {
    let mut all = ExportMetricsServiceRequest::default();
    for (bytes, points) in events {
        let req = ExportMetricsServiceRequest::decode(&bytes[..]).expect("every event decodes");
        assert_eq!(
            metric_points(&req).len(),
            *points,
            "reported count is exact"
        );
        all.resource_metrics.extend(req.resource_metrics);
    }
    all
}

/// Checks every run: nothing lost or duplicated at any limit, no event over its limit, and
/// byte equality with the oracle whenever it fits one event.
fn check_metrics(runs: &[MetricsRun]) {
    for run in runs {
        let oracle = run.oracle.as_ref().unwrap();
        let expected = metric_points(oracle);
        for (limit, events, oversize) in &run.ours {
            assert!(
                events.iter().all(|(b, _)| b.len() <= *limit),
                "limit {limit}"
            );
            let got = metric_points(&decode_metrics(events));
            if oversize.dropped.is_empty() {
                assert_same(
                    &got,
                    &expected,
                    |b| format!("{:?}", ExportMetricsServiceRequest::decode(b)),
                    *limit,
                );
            } else {
                assert_eq!(
                    got.len() + oversize.total(),
                    expected.len(),
                    "limit {limit}"
                );
            }
            if !expected.is_empty() && oracle.encoded_len() <= *limit {
                assert_eq!(events.len(), 1, "limit {limit}: one event when all fits");
                assert_eq!(
                    events[0].0,
                    oracle.encode_to_vec(),
                    "limit {limit}: same bytes"
                );
            }
        }
    }
}

/// Item lists equal, or a panic showing the first item that differs, decoded.
fn assert_same(
    got: &[Vec<u8>],
    expected: &[Vec<u8>],
    show: impl Fn(&[u8]) -> String,
    limit: usize,
) {
    assert_eq!(got.len(), expected.len(), "limit {limit}: item count");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
        panic!(
            "limit {limit}: item {i} differs\n got:      {}\n expected: {}",
            show(&got[i]),
            show(&expected[i])
        );
    }
}

#[derive(Clone, Debug)]
enum Kind {
    CounterU64,
    CounterF64,
    UpDownI64,
    UpDownF64,
    GaugeU64,
    GaugeI64,
    GaugeF64,
    HistogramU64,
    HistogramF64,
    ExponentialF64,
}

#[derive(Clone, Debug)]
struct Instr {
    kind: Kind,
    name: String,
    unit: String,
    description: String,
    /// (value, attribute set index)
    records: Vec<(f64, usize)>,
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::CounterU64),
        Just(Kind::CounterF64),
        Just(Kind::UpDownI64),
        Just(Kind::UpDownF64),
        Just(Kind::GaugeU64),
        Just(Kind::GaugeI64),
        Just(Kind::GaugeF64),
        Just(Kind::HistogramU64),
        Just(Kind::HistogramF64),
        Just(Kind::ExponentialF64),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => any::<f64>(),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z.]{1,12}",
        "\\PC{0,8}",
        Just("ünïcødé 値 🚀".to_owned()),
        // Pairs of these cross the lengths where an attribute's encoding changes form.
        "[a-z]{40,70}",
        "[a-z]{150,200}",
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        any_f64().prop_map(Value::F64),
        any_text().prop_map(Value::from),
        prop::collection::vec(any::<bool>(), 0..4).prop_map(|v| Value::Array(Array::Bool(v))),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(any_f64(), 0..4).prop_map(|v| Value::Array(Array::F64(v))),
        prop::collection::vec(any_text(), 0..4).prop_map(|v| Value::Array(Array::String(
            v.into_iter().map(StringValue::from).collect()
        ))),
    ]
}

fn any_attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((any_text(), any_value()), 0..5)
        .prop_map(|kvs| kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
}

fn any_instr() -> impl Strategy<Value = Instr> {
    (
        any_kind(),
        "[a-z][a-z_.]{0,20}",
        prop_oneof![
            Just(String::new()),
            Just("ms".to_owned()),
            Just("By".to_owned())
        ],
        any_text(),
        prop::collection::vec((any_f64(), 0usize..6), 0..40),
    )
        .prop_map(|(kind, name, unit, description, records)| Instr {
            kind,
            name,
            unit,
            description,
            records,
        })
}

/// A recorded value as an integer small enough that the SDK's sums cannot overflow.
fn int(v: f64) -> i64 {
    if v.is_finite() {
        v.clamp(-1e12, 1e12) as i64
    } else {
        0
    }
}

/// Records `instrs` in a real SDK pipeline and exports twice (the second export sees the
/// state after a second round of recording), returning both encodings of each export.
fn run_metrics(
    resource: Resource,
    scopes: &[InstrumentationScope],
    instrs: &[Instr],
    attr_sets: &[Vec<KeyValue>],
    temporality: Temporality,
    limits: Vec<usize>,
) -> Vec<MetricsRun> {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let exporter = Both {
        limits,
        temporality,
        runs: runs.clone(),
    };
    let provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .with_view(|i: &Instrument| {
            i.name().starts_with("exp").then(|| {
                Stream::builder()
                    .with_aggregation(Aggregation::Base2ExponentialHistogram {
                        max_size: 20,
                        max_scale: 5,
                        record_min_max: true,
                    })
                    .build()
                    .unwrap()
            })
        })
        .build();
    use opentelemetry::metrics::MeterProvider as _;
    for _round in 0..2 {
        for (n, instr) in instrs.iter().enumerate() {
            let meter = provider.meter_with_scope(scopes[n % scopes.len()].clone());
            // Names must be unique per scope and valid; the index keeps them apart.
            let name = match instr.kind {
                Kind::ExponentialF64 => format!("exp{n}_{}", instr.name),
                _ => format!("m{n}_{}", instr.name),
            };
            let attrs = |i: usize| attr_sets[i % attr_sets.len()].as_slice();
            macro_rules! build {
                ($b:expr) => {
                    $b.with_unit(instr.unit.clone())
                        .with_description(instr.description.clone())
                        .build()
                };
            }
            match instr.kind {
                Kind::CounterU64 => {
                    let c = build!(meter.u64_counter(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| c.add(int(*v).unsigned_abs(), attrs(*a)));
                }
                Kind::CounterF64 => {
                    let c = build!(meter.f64_counter(name));
                    instr.records.iter().for_each(|(v, a)| c.add(*v, attrs(*a)));
                }
                Kind::UpDownI64 => {
                    let c = build!(meter.i64_up_down_counter(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| c.add(int(*v), attrs(*a)));
                }
                Kind::UpDownF64 => {
                    let c = build!(meter.f64_up_down_counter(name));
                    instr.records.iter().for_each(|(v, a)| c.add(*v, attrs(*a)));
                }
                Kind::GaugeU64 => {
                    let g = build!(meter.u64_gauge(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| g.record(int(*v).unsigned_abs(), attrs(*a)));
                }
                Kind::GaugeI64 => {
                    let g = build!(meter.i64_gauge(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| g.record(int(*v), attrs(*a)));
                }
                Kind::GaugeF64 => {
                    let g = build!(meter.f64_gauge(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| g.record(*v, attrs(*a)));
                }
                Kind::HistogramU64 => {
                    let h = build!(meter.u64_histogram(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| h.record(int(*v).unsigned_abs(), attrs(*a)));
                }
                Kind::HistogramF64 | Kind::ExponentialF64 => {
                    let h = build!(meter.f64_histogram(name));
                    instr
                        .records
                        .iter()
                        .for_each(|(v, a)| h.record(*v, attrs(*a)));
                }
            }
        }
        provider.force_flush().unwrap();
    }
    provider.shutdown().unwrap();
    Arc::try_unwrap(runs)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_else(|a| std::mem::take(&mut *a.lock().unwrap()))
}

fn scope(
    name: &str,
    version: Option<&str>,
    attrs: Vec<KeyValue>,
    schema: Option<&str>,
) -> InstrumentationScope {
    let mut b = InstrumentationScope::builder(name.to_owned()).with_attributes(attrs);
    if let Some(v) = version {
        b = b.with_version(v.to_owned());
    }
    if let Some(s) = schema {
        b = b.with_schema_url(s.to_owned());
    }
    b.build()
}

fn any_scope() -> impl Strategy<Value = InstrumentationScope> {
    (
        "[a-z.]{1,16}",
        prop::option::of("[0-9.]{1,6}"),
        any_attrs(),
        prop::option::of(Just("https://opentelemetry.io/schemas/1.30.0")),
    )
        .prop_map(|(n, v, a, s)| scope(&n, v.as_deref(), a, s))
}

fn any_resource() -> impl Strategy<Value = Resource> {
    (
        any_attrs(),
        prop::option::of(Just("https://example.test/schema")),
    )
        .prop_map(|(attrs, schema)| match schema {
            Some(s) => Resource::builder_empty().with_schema_url(attrs, s).build(),
            None => Resource::builder_empty().with_attributes(attrs).build(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn metrics_encode_as_the_transform_does(
        resource in any_resource(),
        scopes in prop::collection::vec(any_scope(), 1..3),
        instrs in prop::collection::vec(any_instr(), 1..8),
        attr_sets in prop::collection::vec(any_attrs(), 1..6),
        cumulative in any::<bool>(),
    ) {
        let temporality = if cumulative { Temporality::Cumulative } else { Temporality::Delta };
        let runs = run_metrics(resource, &scopes, &instrs, &attr_sets, temporality,
            vec![65_360, 8_168, 900]);
        check_metrics(&runs);
    }
}

/// `n` series of a counter with three attributes, exported once.
fn counter_series(n: usize, limits: Vec<usize>) -> Vec<MetricsRun> {
    let instr = Instr {
        kind: Kind::CounterU64,
        name: "requests".into(),
        unit: "1".into(),
        description: "requests served".into(),
        records: (0..n).map(|i| (i as f64, i)).collect(),
    };
    let attr_sets: Vec<Vec<KeyValue>> = (0..n)
        .map(|i| {
            vec![
                KeyValue::new("host", format!("h{i}")),
                KeyValue::new("region", "eu-west-1"),
                KeyValue::new("status", "ok"),
            ]
        })
        .collect();
    let resource = Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "svc")])
        .build();
    let runs = run_metrics(
        resource,
        &[scope("lib", Some("1.2.3"), vec![], None)],
        &[instr],
        &attr_sets,
        Temporality::Cumulative,
        limits,
    );
    check_metrics(&runs);
    runs
}

/// Histograms of more points than the encoder fetches ahead at once (8), at counts on and
/// around the batch boundaries: the bytes are the transform's, whatever the look-ahead does.
#[test]
fn histograms_of_many_series_encode_as_the_transform_does() {
    for n in [1, 7, 8, 9, 16, 17, 203] {
        let instr = Instr {
            kind: Kind::HistogramF64,
            name: "latency".into(),
            unit: "ms".into(),
            description: String::new(),
            records: (0..n).map(|i| (i as f64 * 37.5, i)).collect(),
        };
        let attr_sets: Vec<Vec<KeyValue>> = (0..n)
            .map(|i| {
                vec![
                    KeyValue::new("series.id", i as i64),
                    KeyValue::new("cloud.region", "eu-west-1"),
                    KeyValue::new("host.name", format!("host-{i:02}")),
                ]
            })
            .collect();
        let runs = run_metrics(
            Resource::builder_empty().build(),
            &[scope("lib", None, vec![], None)],
            &[instr],
            &attr_sets,
            Temporality::Delta,
            vec![65_360, 8_168, 900],
        );
        check_metrics(&runs);
    }
}

#[test]
fn thousands_of_small_points_fill_events_to_the_limit() {
    let limit = otlp_user_events::layout::DEFAULT_MAX_BUFFER;
    let runs = counter_series(1_900, vec![limit]);
    let (_, events, oversize) = &runs[0].ours[0];
    assert!(oversize.dropped.is_empty());
    assert!(events.len() > 10);
    // Full events are nearly full: only the last may be short.
    for (b, _) in &events[..events.len() - 1] {
        assert!(
            b.len() > limit - 120,
            "event of {} bytes closed early",
            b.len()
        );
    }
}

#[test]
fn exact_limit_fits_and_one_byte_less_splits() {
    let whole = counter_series(2, vec![65_360])[0]
        .oracle
        .as_ref()
        .unwrap()
        .encoded_len();
    let runs = counter_series(2, vec![whole, whole - 1]);
    let (_, at_limit, _) = &runs[0].ours[0];
    assert_eq!(at_limit.len(), 1);
    assert_eq!(
        at_limit[0].0.len(),
        whole,
        "an event of exactly the limit is written"
    );
    let (_, under, oversize) = &runs[0].ours[1];
    assert_eq!(under.len(), 2, "one byte less splits the two points");
    assert!(oversize.dropped.is_empty());

    let single = counter_series(1, vec![65_360])[0]
        .oracle
        .as_ref()
        .unwrap()
        .encoded_len();
    let runs = counter_series(1, vec![single, single - 1]);
    assert_eq!(runs[0].ours[0].1.len(), 1);
    let (_, none, oversize) = &runs[0].ours[1];
    assert!(none.is_empty());
    assert_eq!(oversize.dropped.len(), 1);
    assert!(oversize.dropped[0].0.ends_with("requests"), "{oversize:?}");
}

// ---------------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------------

fn pack_spans_all(spans: &[SpanData], resource: &Resource, limit: usize) -> (Events, Oversize) {
    let mut events = Vec::new();
    let oversize = pack_spans(spans, resource, limit, |b, n| events.push((b.to_vec(), n)));
    (events, oversize)
}

fn check_spans(spans: Vec<SpanData>, resource: &Resource, limits: &[usize]) {
    let oracle = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans.clone(),
            &ResourceAttributesWithSchema::from(resource),
        ),
    };
    let expected = span_entries(&oracle);
    for &limit in limits {
        let (events, oversize) = pack_spans_all(&spans, resource, limit);
        let mut all = Vec::new();
        for (b, n) in &events {
            assert!(b.len() <= limit, "limit {limit}");
            let req = ExportTraceServiceRequest::decode(&b[..]).expect("every event decodes");
            assert_eq!(span_entries(&req).len(), *n);
            all.extend(req.resource_spans);
        }
        let got = span_entries(&ExportTraceServiceRequest {
            resource_spans: all,
        });
        if oversize.dropped.is_empty() {
            assert_same(
                &got,
                &expected,
                |b| {
                    format!(
                        "{:?}",
                        ExportTraceServiceRequest::decode(b).map(|r| r.resource_spans)
                    )
                },
                limit,
            );
        } else {
            assert_eq!(
                got.len() + oversize.total(),
                expected.len(),
                "limit {limit}"
            );
        }
        if !spans.is_empty() && oracle.encoded_len() <= limit {
            assert_eq!(events.len(), 1);
            assert_eq!(
                events[0].0,
                oracle.encode_to_vec(),
                "limit {limit}: same bytes"
            );
        }
    }
}

fn any_time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        8 => (0u64..4_000_000_000_000_000_000).prop_map(|n| UNIX_EPOCH + Duration::from_nanos(n)),
        1 => Just(UNIX_EPOCH),
        1 => (1u64..1_000_000).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
    ]
}

fn any_context() -> impl Strategy<Value = SpanContext> {
    (
        any::<u128>(),
        any::<u64>(),
        any::<u8>(),
        any::<bool>(),
        prop::option::of(("[a-z]{1,5}", "[a-z0-9]{1,5}")),
    )
        .prop_map(|(t, s, f, remote, state)| {
            let state = match state {
                Some((k, v)) => TraceState::from_key_value([(k, v)]).unwrap(),
                None => TraceState::NONE,
            };
            SpanContext::new(
                TraceId::from(t),
                SpanId::from(s),
                TraceFlags::new(f),
                remote,
                state,
            )
        })
}

fn any_span(scopes: Vec<InstrumentationScope>) -> impl Strategy<Value = SpanData> {
    let kind = prop_oneof![
        Just(SpanKind::Internal),
        Just(SpanKind::Server),
        Just(SpanKind::Client),
        Just(SpanKind::Producer),
        Just(SpanKind::Consumer),
    ];
    let status = prop_oneof![
        Just(Status::Unset),
        Just(Status::Ok),
        any_text().prop_map(Status::error),
    ];
    let event = (any_text(), any_time(), any_attrs(), 0u32..3)
        .prop_map(|(n, t, a, d)| Event::new(n, t, a, d));
    let link = (any_context(), any_attrs(), 0u32..3).prop_map(|(cx, a, d)| {
        let mut l = Link::with_context(cx);
        l.attributes = a;
        l.dropped_attributes_count = d;
        l
    });
    (
        (
            any_context(),
            prop_oneof![Just(0u64), any::<u64>()],
            any::<bool>(),
            kind,
            any_text(),
        ),
        (any_time(), any_time(), any_attrs(), 0u32..4),
        (
            prop::collection::vec(event, 0..3),
            0u32..3,
            prop::collection::vec(link, 0..3),
            0u32..3,
        ),
        (status, 0..scopes.len()),
    )
        .prop_map(
            move |(
                (cx, parent, remote, kind, name),
                (start, end, attrs, dropped),
                (events, de, links, dl),
                (status, sc),
            )| {
                SpanData {
                    span_context: cx,
                    parent_span_id: SpanId::from(parent),
                    parent_span_is_remote: remote,
                    span_kind: kind,
                    name: Cow::Owned(name),
                    start_time: start,
                    end_time: end,
                    attributes: attrs,
                    dropped_attributes_count: dropped,
                    events: span_events(events, de),
                    links: span_links(links, dl),
                    status,
                    instrumentation_scope: scopes[sc].clone(),
                }
            },
        )
}

fn span_events(events: Vec<Event>, dropped: u32) -> SpanEvents {
    let mut e = SpanEvents::default();
    e.events = events;
    e.dropped_count = dropped;
    e
}

fn span_links(links: Vec<Link>, dropped: u32) -> SpanLinks {
    let mut l = SpanLinks::default();
    l.links = links;
    l.dropped_count = dropped;
    l
}

fn any_spans() -> impl Strategy<Value = Vec<SpanData>> {
    prop::collection::vec(any_scope(), 1..4)
        .prop_flat_map(|scopes| prop::collection::vec(any_span(scopes), 0..40))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn spans_encode_as_the_transform_does(resource in any_resource(), spans in any_spans()) {
        check_spans(spans, &resource, &[65_360, 8_168, 700]);
    }
}

fn simple_span(i: usize, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(i as u128 + 1),
            SpanId::from(i as u64 + 1),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::from(7),
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("span-{i}")),
        start_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        end_time: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        attributes: (0..6)
            .map(|a| KeyValue::new(format!("a{a}"), "value"))
            .collect(),
        dropped_attributes_count: 0,
        events: span_events(
            vec![Event::new(
                "ev",
                UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                vec![],
                0,
            )],
            0,
        ),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

#[test]
fn interleaved_scopes_group_and_fill_events() {
    let scopes: Vec<_> = (0..3)
        .map(|s| scope(&format!("scope{s}"), Some("1"), vec![], None))
        .collect();
    let spans: Vec<_> = (0..1200).map(|i| simple_span(i, &scopes[i % 3])).collect();
    let resource = Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "svc")])
        .build();
    check_spans(spans.clone(), &resource, &[500, 8168]);
    let (events, _) = pack_spans_all(&spans, &resource, 8168);
    let fill =
        events.iter().map(|(b, _)| b.len()).sum::<usize>() as f64 / (events.len() * 8168) as f64;
    assert!(fill >= 0.9, "average fill {fill:.3}");
}

#[test]
fn an_oversize_span_is_dropped_and_named() {
    let sc = scope("s", None, vec![], None);
    let mut big = simple_span(1, &sc);
    big.name = "huge".into();
    big.attributes.push(KeyValue::new("blob", "x".repeat(9000)));
    let spans = vec![simple_span(0, &sc), big, simple_span(2, &sc)];
    let (events, oversize) = pack_spans_all(&spans, &Resource::builder_empty().build(), 8168);
    assert_eq!(oversize.dropped, vec![("huge".to_owned(), 1)]);
    assert_eq!(events.iter().map(|e| e.1).sum::<usize>(), 2);
    check_spans(spans, &Resource::builder_empty().build(), &[8168]);
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// A log record's content, kept apart from the SDK's record so that proptest can show it.
#[derive(Clone, Debug)]
struct LogSpec {
    scope: usize,
    target: Option<String>,
    event_name: Option<String>,
    timestamp: Option<SystemTime>,
    observed: SystemTime,
    severity: Option<Severity>,
    severity_text: Option<String>,
    body: Option<AnyValue>,
    attributes: Vec<(String, AnyValue)>,
    /// Trace id, span id, flags.
    trace: Option<(u128, u64, Option<u8>)>,
}

/// The API takes event names and severity texts as `&'static str`: a test leaks its few.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// An SDK log record with `spec`'s content, set through the logs API.
fn sdk_record(spec: &LogSpec) -> SdkLogRecord {
    static PROVIDER: std::sync::OnceLock<SdkLoggerProvider> = std::sync::OnceLock::new();
    let logger = PROVIDER
        .get_or_init(|| SdkLoggerProvider::builder().build())
        .logger("oracle");
    let mut r = logger.create_log_record();
    if let Some(t) = &spec.target {
        r.set_target(t.clone());
    }
    if let Some(n) = &spec.event_name {
        r.set_event_name(leak(n));
    }
    if let Some(t) = spec.timestamp {
        r.set_timestamp(t);
    }
    // The SDK sets it on every emitted record; the transform requires it.
    r.set_observed_timestamp(spec.observed);
    if let Some(s) = spec.severity {
        r.set_severity_number(s);
    }
    if let Some(t) = &spec.severity_text {
        r.set_severity_text(leak(t));
    }
    if let Some(b) = &spec.body {
        r.set_body(b.clone());
    }
    for (k, v) in &spec.attributes {
        r.add_attribute(k.clone(), v.clone());
    }
    if let Some((t, s, f)) = spec.trace {
        r.set_trace_context(TraceId::from(t), SpanId::from(s), f.map(TraceFlags::new));
    }
    r
}

fn pack_logs_all(batch: &LogBatch<'_>, resource: &Resource, limit: usize) -> (Events, Oversize) {
    let mut events = Vec::new();
    let oversize = pack_logs(batch, resource, limit, |b, n| events.push((b.to_vec(), n)));
    (events, oversize)
}

/// Entries in an order both encodings agree on: the transform groups scopes through a hash
/// map, so scope groups come in any order; within a scope, records keep the batch's order.
fn log_entries(req: &impl Message) -> Vec<Vec<u8>> {
    let mut entries = scoped_log_records(req);
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(shell, record)| [shell, record].concat())
        .collect()
}

fn check_logs(
    specs: &[LogSpec],
    scopes: &[InstrumentationScope],
    resource: &Resource,
    limits: &[usize],
) {
    let records: Vec<SdkLogRecord> = specs.iter().map(sdk_record).collect();
    let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> = records
        .iter()
        .zip(specs)
        .map(|(r, spec)| (r, &scopes[spec.scope]))
        .collect();
    let batch = LogBatch::new(&pairs);
    let oracle = ExportLogsServiceRequest {
        resource_logs: group_logs_by_resource_and_scope(
            &batch,
            &ResourceAttributesWithSchema::from(resource),
        ),
    };
    let expected = log_entries(&oracle);
    assert_eq!(expected.len(), specs.len());
    for &limit in limits {
        let (events, oversize) = pack_logs_all(&batch, resource, limit);
        let mut all = Vec::new();
        for (b, n) in &events {
            assert!(b.len() <= limit, "limit {limit}");
            let req = ExportLogsServiceRequest::decode(&b[..]).expect("every event decodes");
            assert_eq!(
                scoped_log_records(&req).len(),
                *n,
                "limit {limit}: count per event"
            );
            all.extend(req.resource_logs);
        }
        let got = log_entries(&ExportLogsServiceRequest { resource_logs: all });
        if oversize.dropped.is_empty() {
            assert_same(
                &got,
                &expected,
                |b| {
                    format!(
                        "{:?}",
                        ExportLogsServiceRequest::decode(b).map(|r| r.resource_logs)
                    )
                },
                limit,
            );
        } else {
            assert_eq!(
                got.len() + oversize.total(),
                expected.len(),
                "limit {limit}"
            );
        }
        let one_scope = oracle.resource_logs[0].scope_logs.len() == 1;
        if one_scope && oracle.encoded_len() <= limit {
            assert_eq!(events.len(), 1);
            assert_eq!(
                events[0].0,
                oracle.encode_to_vec(),
                "limit {limit}: same bytes"
            );
        }
    }
}

fn any_log_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(AnyValue::Int),
        any_f64().prop_map(AnyValue::Double),
        any_text().prop_map(AnyValue::from),
        any::<bool>().prop_map(AnyValue::Boolean),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| AnyValue::Bytes(Box::new(b))),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| AnyValue::ListAny(Box::new(v))),
            prop::collection::hash_map(any_text(), inner, 0..4).prop_map(|m| {
                AnyValue::Map(Box::new(
                    m.into_iter()
                        .map(|(k, v)| (opentelemetry::Key::from(k), v))
                        .collect(),
                ))
            }),
        ]
    })
}

fn any_severity() -> impl Strategy<Value = Severity> {
    use Severity::*;
    prop::sample::select(vec![
        Trace, Trace2, Trace3, Trace4, Debug, Debug2, Debug3, Debug4, Info, Info2, Info3, Info4,
        Warn, Warn2, Warn3, Warn4, Error, Error2, Error3, Error4, Fatal, Fatal2, Fatal3, Fatal4,
    ])
}

fn any_log(scopes: usize) -> impl Strategy<Value = LogSpec> {
    (
        (
            0..scopes,
            prop::option::of(prop_oneof![Just("app::db".to_owned()), "[a-z:]{1,12}"]),
            prop::option::of(any_text()),
            prop::option::of(any_time()),
            any_time(),
        ),
        (
            prop::option::of(any_severity()),
            prop::option::of(any_text()),
            prop::option::of(any_log_value()),
            prop::collection::vec((any_text(), any_log_value()), 0..5),
            prop::option::of((any::<u128>(), any::<u64>(), prop::option::of(any::<u8>()))),
        ),
    )
        .prop_map(
            |(
                (scope, target, event_name, timestamp, observed),
                (severity, severity_text, body, attributes, trace),
            )| LogSpec {
                scope,
                target,
                event_name,
                timestamp,
                observed,
                severity,
                severity_text,
                body,
                attributes,
                trace,
            },
        )
}

/// Scope attributes without NaN: a scope never equal to itself is grouped once per record by
/// both encodings, but the transform's hash map then orders those groups at random.
fn without_nan(attrs: Vec<KeyValue>) -> Vec<KeyValue> {
    attrs
        .into_iter()
        .map(|kv| match kv.value {
            Value::F64(v) if v.is_nan() => KeyValue::new(kv.key, 0.5),
            Value::Array(Array::F64(vs)) => KeyValue::new(
                kv.key,
                Value::Array(Array::F64(
                    vs.into_iter()
                        .map(|v| if v.is_nan() { 0.5 } else { v })
                        .collect(),
                )),
            ),
            _ => kv,
        })
        .collect()
}

fn any_log_scope() -> impl Strategy<Value = InstrumentationScope> {
    (
        "[a-z.]{1,16}",
        prop::option::of("[0-9.]{1,6}"),
        any_attrs().prop_map(without_nan),
        prop::option::of(Just("https://opentelemetry.io/schemas/1.30.0")),
    )
        .prop_map(|(n, v, a, s)| scope(&n, v.as_deref(), a, s))
}

fn any_logs() -> impl Strategy<Value = (Vec<InstrumentationScope>, Vec<LogSpec>)> {
    prop::collection::vec(any_log_scope(), 1..4).prop_flat_map(|scopes| {
        let n = scopes.len();
        (Just(scopes), prop::collection::vec(any_log(n), 0..40))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn logs_encode_as_the_transform_does(resource in any_resource(), (scopes, logs) in any_logs()) {
        check_logs(&logs, &scopes, &resource, &[65_360, 8_168, 700]);
    }
}

fn simple_log(i: usize, scope: usize) -> LogSpec {
    LogSpec {
        scope,
        target: None,
        event_name: Some("checkout.done".to_owned()),
        timestamp: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        observed: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        severity: Some(Severity::Info),
        severity_text: Some("INFO".to_owned()),
        body: Some(AnyValue::from(format!("order {i} placed"))),
        attributes: (0..4)
            .map(|a| (format!("a{a}"), AnyValue::Int(i as i64 * 10 + a)))
            .collect(),
        trace: Some((i as u128 + 1, i as u64 + 1, Some(1))),
    }
}

#[test]
fn log_records_of_interleaved_scopes_group_and_fill_events() {
    let scopes: Vec<_> = (0..3)
        .map(|s| scope(&format!("scope{s}"), Some("1"), vec![], None))
        .collect();
    let logs: Vec<_> = (0..1500).map(|i| simple_log(i, i % 3)).collect();
    let resource = Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "svc")])
        .build();
    check_logs(&logs, &scopes, &resource, &[500, 8168]);

    let records: Vec<_> = logs.iter().map(sdk_record).collect();
    let pairs: Vec<_> = records
        .iter()
        .zip(&logs)
        .map(|(r, l)| (r, &scopes[l.scope]))
        .collect();
    let (events, _) = pack_logs_all(&LogBatch::new(&pairs), &resource, 8168);
    assert_eq!(events.iter().map(|e| e.1).sum::<usize>(), 1500);
    let fill =
        events.iter().map(|(b, _)| b.len()).sum::<usize>() as f64 / (events.len() * 8168) as f64;
    assert!(fill >= 0.9, "average fill {fill:.3}");
}

#[test]
fn a_target_names_the_scope_and_splits_the_group() {
    let scopes = vec![scope(
        "logger",
        Some("2.0"),
        vec![KeyValue::new("k", 1)],
        None,
    )];
    let mut logs: Vec<_> = (0..4).map(|i| simple_log(i, 0)).collect();
    logs[1].target = Some("app::db".to_owned());
    logs[3].target = Some("app::db".to_owned());
    check_logs(&logs, &scopes, &Resource::builder_empty().build(), &[8168]);

    let records: Vec<_> = logs.iter().map(sdk_record).collect();
    let pairs: Vec<_> = records.iter().map(|r| (r, &scopes[0])).collect();
    let (events, _) = pack_logs_all(
        &LogBatch::new(&pairs),
        &Resource::builder_empty().build(),
        8168,
    );
    let req = ExportLogsServiceRequest::decode(&events[0].0[..]).unwrap();
    let scopes: Vec<_> = req.resource_logs[0]
        .scope_logs
        .iter()
        .map(|sl| {
            let sc = sl.scope.as_ref().unwrap();
            (sc.name.as_str(), sc.version.as_str(), sl.log_records.len())
        })
        .collect();
    assert_eq!(scopes, [("logger", "2.0", 2), ("app::db", "2.0", 2)]);
}

#[test]
fn an_oversize_log_record_is_dropped_and_named() {
    let scopes = vec![scope("s", None, vec![], None)];
    let mut logs: Vec<_> = (0..3).map(|i| simple_log(i, 0)).collect();
    logs[1].event_name = Some("huge".to_owned());
    logs[1].body = Some(AnyValue::from("x".repeat(9000)));
    let records: Vec<_> = logs.iter().map(sdk_record).collect();
    let pairs: Vec<_> = records.iter().map(|r| (r, &scopes[0])).collect();
    let (events, oversize) = pack_logs_all(
        &LogBatch::new(&pairs),
        &Resource::builder_empty().build(),
        8168,
    );
    assert_eq!(oversize.dropped, vec![("huge".to_owned(), 1)]);
    assert_eq!(events.iter().map(|e| e.1).sum::<usize>(), 2);
    check_logs(&logs, &scopes, &Resource::builder_empty().build(), &[8168]);
}

#[test]
fn a_scope_with_a_nan_attribute_groups_each_record_alone_as_the_transform_does() {
    let scopes = vec![scope("nan", None, vec![KeyValue::new("x", f64::NAN)], None)];
    // Identical records: the transform orders its groups at random, the entries compare equal.
    let logs: Vec<_> = (0..3).map(|_| simple_log(7, 0)).collect();
    check_logs(&logs, &scopes, &Resource::builder_empty().build(), &[8168]);
    let records: Vec<_> = logs.iter().map(sdk_record).collect();
    let pairs: Vec<_> = records.iter().map(|r| (r, &scopes[0])).collect();
    let (events, _) = pack_logs_all(
        &LogBatch::new(&pairs),
        &Resource::builder_empty().build(),
        8168,
    );
    let req = ExportLogsServiceRequest::decode(&events[0].0[..]).unwrap();
    assert_eq!(req.resource_logs[0].scope_logs.len(), 3);
}
