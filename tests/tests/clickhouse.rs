//! The ClickHouse sink end to end: known spans, log records and metric points written to
//! the daemon's in-memory source, inserted by the sink into a real ClickHouse server
//! (Debian's package, installed by `scripts/install-clickhouse.sh` when missing; one
//! server per test, on a free port, with its own data directory) and read back with SQL:
//! rows per table, ids, attributes, bodies, sums of values. Then the failures: a server
//! that comes up late, a table dropped while the sink runs, a wrong password.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use tests::daemon::Daemon;
use tests::otlp;
use ue_decoder::proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_decoder::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_decoder::proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_decoder::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use ue_decoder::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use ue_decoder::proto::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use ue_decoder::proto::resource::v1::Resource;
use ue_decoder::proto::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, span::SpanKind, status::StatusCode,
};
use ue_decoder::{ClickHouseConfig, MemorySource, RetryConfig, Signal, SinkConfig};

/// The user the sink inserts as, besides the password-less `default` the test reads as.
const USER: &str = "ue";
const PASSWORD: &str = "s3cret";

/// A ClickHouse server on `addr`, killed and its directory removed when dropped, even
/// when the test fails.
struct ClickHouseServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl ClickHouseServer {
    /// Starts the server on `addr` (HTTP only) and waits until it answers.
    fn start(addr: SocketAddr) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let binary = clickhouse_binary();
        let dir = std::env::temp_dir().join(format!(
            "ue-clickhouse-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog></logger>
    <listen_host>{host}</listen_host>
    <http_port>{port}</http_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/data/tmp/</tmp_path>
    <user_files_path>{d}/data/user_files/</user_files_path>
    <format_schema_path>{d}/data/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <timezone>UTC</timezone>
</yandex>
"#,
                host = addr.ip(),
                port = addr.port(),
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
        <{USER}><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></{USER}>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let child = Command::new(&binary)
            .arg(format!(
                "--config-file={}",
                dir.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let server = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.query("SELECT 1").as_deref() != Ok("1\n") {
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer on {addr}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The result of `sql` as the default user, in the format it asks for (TSV if none).
    fn query(&self, sql: &str) -> Result<String, String> {
        let mut stream =
            TcpStream::connect(self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "POST / HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{sql}",
            self.addr,
            sql.len()
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| format!("read: {e}"))?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP body: {response}"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("{sql}: {body}"));
        }
        Ok(body.to_owned())
    }

    /// `sql`'s result, which must succeed, without its last newline.
    fn get(&self, sql: &str) -> String {
        let out = self.query(sql).unwrap_or_else(|e| panic!("{e}"));
        out.strip_suffix('\n').unwrap_or(&out).to_owned()
    }

    /// Polls `sql` until it returns `want`, up to 60 s.
    fn eventually(&self, sql: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.query(sql);
            if got.as_deref().map(|s| s.strip_suffix('\n').unwrap_or(s)) == Ok(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql}: got {got:?}, want {want:?}\nserver log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server logged, for failure messages.
    fn log(&self) -> String {
        ["server.err.log", "stderr.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's ClickHouse server, installed by the project's script if missing.
fn clickhouse_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-clickhouse.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An address on 127.0.0.1 that nothing listens on (the port is released for the caller).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The sink inserting into `addr` as [`USER`], retrying every 100 to 500 ms for 60 s.
fn sink_config(addr: SocketAddr) -> ClickHouseConfig {
    ClickHouseConfig {
        url: format!("http://{addr}"),
        database: "telemetry".into(),
        user: Some(USER.into()),
        password: Some(PASSWORD.into()),
        retry: RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(60),
            ..RetryConfig::default()
        },
        ..ClickHouseConfig::default()
    }
}

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value(v),
        ..KeyValue::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![s("service.name", "checkout"), s("host.name", "h1")],
        ..Resource::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "app".into(),
        version: "2.0".into(),
        attributes: vec![s("scope.tier", "gold")],
        ..InstrumentationScope::default()
    })
}

const T0: u64 = 1_700_000_000_123_456_789;
const TRACE: [u8; 16] = [0x5e; 16];
const ROOT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const CHILD: [u8; 8] = [0x7c; 8];

fn traces() -> ExportTraceServiceRequest {
    let root = Span {
        trace_id: TRACE.to_vec(),
        span_id: ROOT.to_vec(),
        name: "POST /pay".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 250_000_000,
        attributes: vec![
            s("http.route", "/pay"),
            kv("http.response.status_code", any_value::Value::IntValue(500)),
            kv("retried", any_value::Value::BoolValue(true)),
        ],
        status: Some(Status {
            message: "card declined".into(),
            code: StatusCode::Error as i32,
        }),
        ..Span::default()
    };
    let child = Span {
        trace_id: TRACE.to_vec(),
        span_id: CHILD.to_vec(),
        parent_span_id: ROOT.to_vec(),
        name: "charge".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: T0 + 1_000,
        end_time_unix_nano: T0 + 101_000,
        events: vec![span::Event {
            time_unix_nano: T0 + 2_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
            ..span::Event::default()
        }],
        links: vec![span::Link {
            trace_id: vec![0xcd; 16],
            span_id: vec![0x22; 8],
            trace_state: "k=v".into(),
            attributes: vec![s("link.kind", "follows")],
            ..span::Link::default()
        }],
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![root, child],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    let records = vec![
        LogRecord {
            time_unix_nano: T0,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: value(any_value::Value::StringValue("payment failed".into())),
            attributes: vec![s("order.id", "o-42")],
            flags: 1,
            trace_id: TRACE.to_vec(),
            span_id: ROOT.to_vec(),
            ..LogRecord::default()
        },
        // No timestamp: the observed one stands in.
        LogRecord {
            observed_time_unix_nano: T0 + 5_000_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: value(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("n", any_value::Value::IntValue(3))],
            })),
            ..LogRecord::default()
        },
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} for the test"),
        unit: "1".into(),
        data: Some(data),
        ..Metric::default()
    }
}

fn number(v: number_data_point::Value, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: T0 - 1_000_000_000,
        time_unix_nano: T0,
        value: Some(v),
        ..NumberDataPoint::default()
    }
}

fn sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 1,
            is_monotonic: true,
        }),
    )
}

fn summary(name: &str) -> Metric {
    metric(
        name,
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T0,
                count: 10,
                sum: 55.0,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 5.0,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 9.5,
                    },
                ],
                ..SummaryDataPoint::default()
            }],
        }),
    )
}

fn metrics_of(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// One metric of every kind: 2 sum points, 2 gauge points (one NaN), 1 histogram point
/// with an exemplar, 1 exponential histogram point, 1 summary point.
fn metrics() -> ExportMetricsServiceRequest {
    use number_data_point::Value::{AsDouble, AsInt};
    metrics_of(vec![
        sum(
            "http.requests",
            vec![
                number(AsInt(5), vec![s("method", "GET")]),
                number(AsInt(7), vec![s("method", "POST")]),
            ],
        ),
        metric(
            "temperature",
            Data::Gauge(Gauge {
                data_points: vec![
                    number(AsDouble(2.5), vec![]),
                    number(AsDouble(f64::NAN), vec![]),
                ],
            }),
        ),
        metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![s("http.route", "/pay")],
                    time_unix_nano: T0,
                    count: 4,
                    sum: Some(1.25),
                    bucket_counts: vec![1, 2, 0, 1],
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    min: Some(0.05),
                    max: Some(1.5),
                    exemplars: vec![Exemplar {
                        filtered_attributes: vec![s("user", "u1")],
                        time_unix_nano: T0,
                        value: Some(exemplar::Value::AsDouble(1.5)),
                        span_id: ROOT.to_vec(),
                        trace_id: TRACE.to_vec(),
                    }],
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "payload.size",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: T0,
                    count: 3,
                    sum: Some(7.0),
                    scale: 1,
                    zero_count: 0,
                    positive: Some(Buckets {
                        offset: 2,
                        bucket_counts: vec![1, 2],
                    }),
                    ..ExponentialHistogramDataPoint::default()
                }],
                aggregation_temporality: 2,
            }),
        ),
        summary("rpc.duration"),
    ])
}

#[test]
fn spans_logs_and_metric_points_become_rows_of_the_collectors_tables() {
    let server = ClickHouseServer::start(free_addr());
    let rt = tests::runtime();
    let source = MemorySource::new(1000);
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::ClickHouse(sink_config(server.addr)),
        Duration::from_secs(30),
    );

    assert!(source.write(0, Signal::Traces, &traces().encode_to_vec()));
    assert!(source.write(1, Signal::Logs, &logs().encode_to_vec()));
    assert!(source.write(0, Signal::Metrics, &metrics().encode_to_vec()));
    // More of each, from the project's shared fixtures.
    let bulk_traces = otlp::traces_request("bulk", 50);
    let bulk_logs = otlp::logs_request("bulk", 30);
    let bulk_metrics = otlp::metrics_request("bulk.counter", 40);
    assert!(source.write(1, Signal::Traces, &bulk_traces.encode_to_vec()));
    assert!(source.write(0, Signal::Logs, &bulk_logs.encode_to_vec()));
    assert!(source.write(1, Signal::Metrics, &bulk_metrics.encode_to_vec()));

    let count = |table: &str| format!("SELECT count() FROM telemetry.{table}");
    server.eventually(&count("otel_traces"), "52");
    server.eventually(&count("otel_logs"), "32");
    server.eventually(&count("otel_metrics_sum"), "42");
    server.eventually(&count("otel_metrics_gauge"), "2");
    server.eventually(&count("otel_metrics_histogram"), "1");
    server.eventually(&count("otel_metrics_exponential_histogram"), "1");
    server.eventually(&count("otel_metrics_summary"), "1");

    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    assert_eq!(sink.name, format!("clickhouse http://{}", server.addr));
    assert_eq!(sink.items_sent, 52 + 32 + 42 + 2 + 1 + 1 + 1, "{sink}");
    assert_eq!(sink.dropped_total(), 0, "{sink}");
    assert_eq!(sink.retries, 0, "{sink}");

    // The spans: ids in hex, the root's parent empty, kinds and statuses in words, the
    // duration in nanoseconds, attributes as text, events and links.
    let trace = "5e".repeat(16);
    assert_eq!(
        server.get(&format!(
            "SELECT SpanName, SpanId, ParentSpanId, SpanKind, StatusCode, StatusMessage, Duration, \
             ServiceName, ScopeName, ScopeVersion, \
             SpanAttributes.Values[indexOf(SpanAttributes.Keys, 'http.response.status_code')], \
             SpanAttributes.Values[indexOf(SpanAttributes.Keys, 'retried')], \
             ResourceAttributes.Values[indexOf(ResourceAttributes.Keys, 'host.name')], \
             TimestampNano, toUnixTimestamp(Timestamp) \
             FROM telemetry.otel_traces WHERE TraceId = '{trace}' ORDER BY TimestampNano"
        )),
        format!(
            "POST /pay\t0102030405060708\t\tServer\tError\tcard declined\t250000000\tcheckout\tapp\t2.0\t500\ttrue\th1\t{T0}\t1700000000\n\
             charge\t7c7c7c7c7c7c7c7c\t0102030405060708\tClient\tUnset\t\t100000\tcheckout\tapp\t2.0\t\t\th1\t{}\t1700000000",
            T0 + 1_000
        )
    );
    assert_eq!(
        server.get(
            "SELECT Events.Name, Events.TimestampNano, Events.AttributesKeys, Events.AttributesValues, \
             Links.TraceId, Links.SpanId, Links.TraceState, Links.AttributesValues \
             FROM telemetry.otel_traces WHERE SpanId = '7c7c7c7c7c7c7c7c'"
        ),
        format!(
            "['retry']\t[{}]\t[['attempt']]\t[['2']]\t['{}']\t['2222222222222222']\t['k=v']\t[['follows']]",
            T0 + 2_000,
            "cd".repeat(16)
        )
    );
    assert_eq!(
        server.get(
            "SELECT count(DISTINCT SpanId), sum(Duration), countIf(ParentSpanId = '') \
             FROM telemetry.otel_traces WHERE SpanName LIKE 'bulk-%' AND ServiceName = 'sinks-test'"
        ),
        "50\t25000000\t50"
    );

    // The log records: bodies as text (a map as JSON), severities, ids, attributes; the
    // record without a timestamp at its observed time.
    assert_eq!(
        server.get(
            "SELECT Body, SeverityText, SeverityNumber, TraceFlags, TraceId, SpanId, \
             LogAttributes.Values[indexOf(LogAttributes.Keys, 'order.id')], \
             ScopeAttributes.Values[indexOf(ScopeAttributes.Keys, 'scope.tier')], TimestampNano \
             FROM telemetry.otel_logs WHERE ServiceName = 'checkout' ORDER BY TimestampNano"
        ),
        format!(
            "payment failed\tERROR\t17\t1\t{trace}\t0102030405060708\to-42\tgold\t{T0}\n\
             {{\"n\":3}}\tINFO\t9\t0\t\t\t\tgold\t{}",
            T0 + 5_000_000_000
        )
    );
    assert_eq!(
        server.get(
            "SELECT count(), countIf(Body LIKE 'bulk-%'), min(SeverityNumber), \
             uniqExact(LogAttributes.Values[indexOf(LogAttributes.Keys, 'tag')]) \
             FROM telemetry.otel_logs WHERE ServiceName = 'sinks-test'"
        ),
        "30\t30\t9\t1"
    );

    // The metric points: values summed, by attribute; NaN kept; histogram, exponential
    // histogram and summary points whole.
    assert_eq!(
        server.get(
            "SELECT Attributes.Values[1], Value, AggregationTemporality, IsMonotonic, MetricUnit, \
             MetricDescription, StartTimeUnixNano FROM telemetry.otel_metrics_sum \
             WHERE MetricName = 'http.requests' ORDER BY Value"
        ),
        format!(
            "GET\t5\t1\t1\t1\thttp.requests for the test\t{start}\n\
             POST\t7\t1\t1\t1\thttp.requests for the test\t{start}",
            start = T0 - 1_000_000_000
        )
    );
    // 0 + 10 + ... + 390.
    assert_eq!(
        server.get(
            "SELECT sum(Value) FROM telemetry.otel_metrics_sum WHERE MetricName = 'bulk.counter'"
        ),
        "7800"
    );
    assert_eq!(
        server.get(
            "SELECT countIf(isNaN(Value)), sumIf(Value, NOT isNaN(Value)) FROM telemetry.otel_metrics_gauge"
        ),
        "1\t2.5"
    );
    assert_eq!(
        server.get(
            "SELECT Count, Sum, BucketCounts, ExplicitBounds, Min, Max, AggregationTemporality, \
             Exemplars.Value, Exemplars.TraceId, Exemplars.SpanId, Exemplars.FilteredAttributesValues \
             FROM telemetry.otel_metrics_histogram"
        ),
        format!(
            "4\t1.25\t[1,2,0,1]\t[0.1,0.5,1]\t0.05\t1.5\t2\t[1.5]\t['{trace}']\t['0102030405060708']\t[['u1']]"
        )
    );
    assert_eq!(
        server.get(
            "SELECT Count, Sum, Scale, PositiveOffset, PositiveBucketCounts, NegativeBucketCounts \
             FROM telemetry.otel_metrics_exponential_histogram"
        ),
        "3\t7\t1\t2\t[1,2]\t[]"
    );
    assert_eq!(
        server.get(
            "SELECT Count, Sum, ValueAtQuantiles.Quantile, ValueAtQuantiles.Value, ServiceName \
             FROM telemetry.otel_metrics_summary"
        ),
        "10\t55\t[0.5,0.99]\t[5,9.5]\tcheckout"
    );
}

#[test]
fn a_server_that_comes_up_late_and_a_dropped_table_lose_nothing() {
    let addr = free_addr();
    let rt = tests::runtime();
    let source = MemorySource::new(1000);
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::ClickHouse(sink_config(addr)),
        Duration::from_secs(30),
    );

    // Nothing listens yet: each signal's batch fails and waits for its retry.
    assert!(source.write(0, Signal::Traces, &traces().encode_to_vec()));
    assert!(source.write(0, Signal::Logs, &logs().encode_to_vec()));
    assert!(source.write(0, Signal::Metrics, &metrics().encode_to_vec()));
    std::thread::sleep(Duration::from_secs(2));
    let server = ClickHouseServer::start(addr);
    let count = |table: &str| format!("SELECT count() FROM telemetry.{table}");
    server.eventually(&count("otel_traces"), "2");
    server.eventually(&count("otel_logs"), "2");
    server.eventually(&count("otel_metrics_sum"), "2");
    server.eventually(&count("otel_metrics_summary"), "1");

    // A table dropped behind the sink's back: the next insert into it fails, the sink
    // creates the tables again and inserts the rest of the batch, not the tables it had
    // already inserted (the sum point comes before the summary point).
    server.get("DROP TABLE telemetry.otel_metrics_summary");
    let both = metrics_of(vec![
        sum(
            "after.drop",
            vec![number(number_data_point::Value::AsInt(3), vec![])],
        ),
        summary("after.drop.summary"),
    ]);
    assert!(source.write(0, Signal::Metrics, &both.encode_to_vec()));
    server.eventually(&count("otel_metrics_summary"), "1");
    server.eventually(
        "SELECT MetricName FROM telemetry.otel_metrics_summary",
        "after.drop.summary",
    );

    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    assert_eq!(sink.dropped_total(), 0, "{sink}");
    assert_eq!(sink.items_sent, 2 + 2 + 7 + 2, "{sink}");
    // Three batches refused while the server was down, one by the missing table.
    assert!(sink.retries >= 4, "{sink}");
    assert_eq!(
        server
            .get("SELECT count() FROM telemetry.otel_metrics_sum WHERE MetricName = 'after.drop'"),
        "1"
    );
    assert_eq!(server.get(&count("otel_metrics_sum")), "3");
    assert_eq!(server.get(&count("otel_traces")), "2");
}

#[test]
fn a_wrong_password_drops_batches_at_once_counted() {
    let server = ClickHouseServer::start(free_addr());
    let rt = tests::runtime();
    let source = MemorySource::new(1000);
    let sink = ClickHouseConfig {
        password: Some("wrong".into()),
        ..sink_config(server.addr)
    };
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::ClickHouse(sink),
        Duration::from_secs(30),
    );
    assert!(source.write(0, Signal::Logs, &logs().encode_to_vec()));
    assert!(source.write(0, Signal::Traces, &traces().encode_to_vec()));
    // Long enough for both batches to be tried (20 ms batching delay), not to be retried.
    std::thread::sleep(Duration::from_millis(1500));
    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    assert_eq!(sink.dropped("permanent_error"), 4, "{sink}");
    assert_eq!(sink.retries, 0, "{sink}");
    assert_eq!(sink.items_sent, 0, "{sink}");
    let error = sink.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("Code: 193") && error.contains("Wrong password"),
        "{error}"
    );
    assert_eq!(
        server.get("SELECT count() FROM system.databases WHERE name = 'telemetry'"),
        "0"
    );
}

/// The spans of the committed golden OTLP/JSON of a capture: `(span id, parent span id,
/// name)`, sorted.
fn golden_spans(json: &Path) -> Vec<(String, String, String)> {
    let mut spans = Vec::new();
    for line in std::fs::read_to_string(json).unwrap().lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in line["request"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| span[k].as_str().unwrap().to_owned();
                    spans.push((text("spanId"), text("parentSpanId"), text("name")));
                }
            }
        }
    }
    spans.sort();
    spans
}

#[test]
fn the_cli_forwards_a_capture_into_clickhouse_with_a_password_file() {
    let server = ClickHouseServer::start(free_addr());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let password = server.dir.join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let out = Command::new(tests::built("ue-decoder"))
        .arg("decode")
        .arg(fixtures.join("examples.perf.data"))
        .args(["--clickhouse-url", &format!("http://{}", server.addr)])
        .args(["--clickhouse-database", "capture"])
        .args(["--clickhouse-table-prefix", "ue"])
        .args(["--clickhouse-user", USER])
        .arg("--clickhouse-password-file")
        .arg(&password)
        .arg("--clickhouse-gzip")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sink clickhouse http://{}: sent 2 batches, 51 items",
            server.addr
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    // What the golden OTLP/JSON of the capture holds: 15 spans, 30 sum, 3 gauge and 3
    // histogram points.
    let count = |table: &str| server.get(&format!("SELECT count() FROM capture.ue_{table}"));
    assert_eq!(count("traces"), "15");
    assert_eq!(count("metrics_sum"), "30");
    assert_eq!(count("metrics_gauge"), "3");
    assert_eq!(count("metrics_histogram"), "3");
    assert_eq!(count("logs"), "0");
    let rows = server.get(
        "SELECT SpanId, ParentSpanId, SpanName FROM capture.ue_traces ORDER BY SpanId FORMAT TSV",
    );
    let got: Vec<(String, String, String)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    assert_eq!(got, golden_spans(&fixtures.join("examples.json")));
}
