//! What `eh-writer` writes through the upstream EventHeader crates: fixed log records and
//! spans, ids and timestamps included, so that tests can check every decoded field.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord, Severity};
use opentelemetry::trace::{
    Link, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::IdGenerator;

/// The logs provider: tracepoints `ue_eh_logs_L1K1` (fatal) to `ue_eh_logs_L5K1` (debug).
pub const LOGS_PROVIDER: &str = "ue_eh_logs";
/// The traces provider: tracepoint `ue_eh_traces_L4K1`.
pub const TRACES_PROVIDER: &str = "ue_eh_traces";
/// The resource's `service.name`, written as PartA `ext_cloud_role`.
pub const SERVICE_NAME: &str = "eh-writer";
/// The resource's `service.instance.id`, written as PartA `ext_cloud_roleInstance`.
pub const SERVICE_INSTANCE: &str = "eh-writer-1";
/// One severity per EventHeader level the logs crate registers, level 1 to 5.
pub const LOG_SEVERITIES: [Severity; 5] = [
    Severity::Fatal,
    Severity::Error,
    Severity::Warn,
    Severity::Info,
    Severity::Debug,
];
/// Spans written per set ([`write_spans`]).
pub const SPANS: usize = 5;

/// The first trace id [`CountingIds`] hands out; each next one is one more.
pub const FIRST_TRACE_ID: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_3100;
/// The first span id [`CountingIds`] hands out; each next one is one more.
pub const FIRST_SPAN_ID: u64 = 0x00f0_67aa_0ba9_0200;
/// The trace context of the first log record.
pub const LOG_TRACE_ID: u128 = 0x5b8e_fff7_9803_8103_d269_b633_813f_c60c;
/// The span id of the first log record.
pub const LOG_SPAN_ID: u64 = 0xeee1_9b7e_c3c1_b174;
/// Every time written is this one plus a few milliseconds (2026-01-02T03:04:05.123456789Z).
pub const BASE_UNIX_NANOS: u64 = 1_767_323_045_123_456_789;

/// The time `ms` milliseconds after [`BASE_UNIX_NANOS`].
pub fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(BASE_UNIX_NANOS + ms * 1_000_000)
}

/// The resource both providers run with.
pub fn resource() -> Resource {
    Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new("service.instance.id", SERVICE_INSTANCE))
        .build()
}

/// Trace and span ids counting up from [`FIRST_TRACE_ID`] and [`FIRST_SPAN_ID`].
#[derive(Debug, Default)]
pub struct CountingIds {
    traces: AtomicU64,
    spans: AtomicU64,
}

impl IdGenerator for CountingIds {
    fn new_trace_id(&self) -> TraceId {
        let n = self.traces.fetch_add(1, Ordering::Relaxed);
        TraceId::from(FIRST_TRACE_ID + u128::from(n))
    }

    fn new_span_id(&self) -> SpanId {
        let n = self.spans.fetch_add(1, Ordering::Relaxed);
        SpanId::from(FIRST_SPAN_ID + n)
    }
}

/// One log record as the writer emits it.
#[derive(Clone, Debug)]
pub struct Log {
    /// Its severity.
    pub severity: Severity,
    /// Its severity text, if any.
    pub severity_text: Option<&'static str>,
    /// Its body.
    pub body: AnyValue,
    /// Its event name, if any.
    pub event_name: Option<&'static str>,
    /// Its timestamp, in milliseconds after [`BASE_UNIX_NANOS`]; `None`: only an observed
    /// timestamp, [`Log::observed_ms`].
    pub time_ms: Option<u64>,
    /// Its observed timestamp, in milliseconds after [`BASE_UNIX_NANOS`].
    pub observed_ms: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, AnyValue)>,
    /// Whether it carries [`LOG_TRACE_ID`] and [`LOG_SPAN_ID`].
    pub traced: bool,
}

impl Log {
    /// Sets the record's fields to this log's.
    pub fn fill(&self, record: &mut impl LogRecord) {
        record.set_severity_number(self.severity);
        if let Some(text) = self.severity_text {
            record.set_severity_text(text);
        }
        record.set_body(self.body.clone());
        if let Some(name) = self.event_name {
            record.set_event_name(name);
        }
        if let Some(ms) = self.time_ms {
            record.set_timestamp(at(ms));
        }
        record.set_observed_timestamp(at(self.observed_ms));
        for (key, value) in &self.attributes {
            record.add_attribute(*key, value.clone());
        }
        if self.traced {
            record.set_trace_context(
                TraceId::from(LOG_TRACE_ID),
                SpanId::from(LOG_SPAN_ID),
                Some(TraceFlags::SAMPLED),
            );
        }
    }
}

/// The log records, one or more at each severity level.
pub fn logs() -> Vec<Log> {
    let log = |severity, text, body, time_ms: Option<u64>| Log {
        severity,
        severity_text: text,
        body,
        event_name: None,
        time_ms,
        observed_ms: time_ms.unwrap_or(100) + 1,
        attributes: Vec::new(),
        traced: false,
    };
    vec![
        Log {
            event_name: Some("login"),
            attributes: vec![
                ("user", AnyValue::from("ann")),
                ("attempts", AnyValue::Int(3)),
                ("ratio", AnyValue::Double(0.25)),
                ("admin", AnyValue::Boolean(false)),
                // The logs crate writes this one as PartB eventId.
                ("event_id", AnyValue::Int(42)),
            ],
            traced: true,
            ..log(
                Severity::Info,
                Some("INFO"),
                AnyValue::from("user signed in"),
                Some(10),
            )
        },
        Log {
            attributes: vec![("code", AnyValue::Int(500))],
            ..log(Severity::Error, Some("ERROR"), AnyValue::Int(-7), Some(11))
        },
        Log {
            // The logs crate writes bytes, lists and maps as "".
            attributes: vec![("raw", AnyValue::Bytes(Box::new(vec![1, 2, 3])))],
            // No timestamp: the crate writes the observed one.
            ..log(Severity::Warn, None, AnyValue::Double(2.5), None)
        },
        Log {
            attributes: vec![(
                "list",
                AnyValue::ListAny(Box::new(vec![AnyValue::Int(1), AnyValue::Int(2)])),
            )],
            ..log(
                Severity::Debug,
                Some("DEBUG"),
                AnyValue::Boolean(true),
                Some(13),
            )
        },
        Log {
            event_name: Some("crash"),
            ..log(
                Severity::Fatal,
                Some("FATAL"),
                AnyValue::Map(Box::new(
                    [("k".into(), AnyValue::Int(1))].into_iter().collect(),
                )),
                Some(14),
            )
        },
        log(
            Severity::Trace,
            Some("TRACE"),
            AnyValue::from("héllo ✓"),
            Some(15),
        ),
    ]
}

/// Writes the [`SPANS`] spans: a server span `GET /cart` (trace 1) with three children
/// (`SELECT cart`, client, an error; `enqueue`, producer, linked to `SELECT cart`;
/// `compute`, internal) and a consumer span `dequeue` in a trace of its own, linked to
/// `enqueue`. They end, and so are written, in that order, the root after its children.
pub fn write_spans<T: Tracer>(tracer: &T)
where
    T::Span: Send + Sync + 'static,
{
    use opentelemetry::trace::Span as _;

    let mut root = tracer
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_start_time(at(20))
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.full", "http://shop.example/cart"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("cart.items", 3),
            KeyValue::new("cart.vip", true),
            KeyValue::new("cart.total", 12.5),
        ])
        .start(tracer);
    root.set_status(Status::Ok);
    let cx = Context::new().with_remote_span_context(root.span_context().clone());

    let mut db = tracer
        .span_builder("SELECT cart")
        .with_kind(SpanKind::Client)
        .with_start_time(at(21))
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", "shop"),
            KeyValue::new("db.query.text", "SELECT * FROM cart"),
            KeyValue::new("retries", 2),
        ])
        .start_with_context(tracer, &cx);
    db.set_status(Status::error("timeout"));
    let db_context = db.span_context().clone();
    db.end_with_timestamp(at(22));

    let enqueue = tracer
        .span_builder("enqueue")
        .with_kind(SpanKind::Producer)
        .with_start_time(at(23))
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders"),
            KeyValue::new("messaging.url", "kafka://broker:9092"),
        ])
        .with_links(vec![Link::with_context(db_context)])
        .start_with_context(tracer, &cx);
    let enqueue_context = enqueue.span_context().clone();
    let mut enqueue = enqueue;
    enqueue.end_with_timestamp(at(24));

    let mut compute = tracer
        .span_builder("compute")
        .with_kind(SpanKind::Internal)
        .with_start_time(at(25))
        .start_with_context(tracer, &cx);
    compute.end_with_timestamp(at(26));

    root.end_with_timestamp(at(27));

    let mut dequeue = tracer
        .span_builder("dequeue")
        .with_kind(SpanKind::Consumer)
        .with_start_time(at(30))
        .with_attributes([
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.response.status_code", 0),
            // The trace crate writes arrays as "".
            KeyValue::new(
                "tags",
                opentelemetry::Value::Array(
                    vec!["a", "b"]
                        .into_iter()
                        .map(Into::into)
                        .collect::<Vec<opentelemetry::StringValue>>()
                        .into(),
                ),
            ),
        ])
        .with_links(vec![Link::with_context(enqueue_context)])
        .start_with_context(tracer, &Context::new());
    dequeue.end_with_timestamp(at(31));
}
