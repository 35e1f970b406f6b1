//! The DogStatsD sink through the daemon: every line a DogStatsD server receives, parsed
//! and compared with what the metrics say, datagrams within the configured size.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use prost::Message as _;
use tests::daemon::Daemon;
use tests::otlp;
use ue_decoder::{
    ForwardConfig, MemorySource, RunConfig, Signal, SinkConfig, StatsdConfig, StatsdTarget,
};
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
use ue_proto::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric::Data, number_data_point::Value,
};
use ue_proto::resource::v1::Resource;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn point(value: Value, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(value),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("deployment.environment", "prod"),
                    kv("host.name", "h1"),
                    kv("cloud.region", "not-a-tag"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, v: f64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![point(Value::AsDouble(v), vec![])],
        })),
        ..Default::default()
    }
}

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;
const TAGS: &str = "service:checkout,env:prod,host:h1";

#[test]
fn metrics_arrive_as_dogstatsd_lines_and_other_signals_do_not() {
    let rt = tests::runtime();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let source = MemorySource::new(1000);
    let mut statsd = StatsdConfig::new(StatsdTarget::Udp(server.local_addr().unwrap()));
    statsd.max_datagram = 128;
    let daemon = Daemon::with_sink(
        &rt,
        &source,
        SinkConfig::Statsd(statsd),
        Duration::from_secs(10),
    );

    let first = request(vec![
        sum(
            "http.requests",
            DELTA,
            true,
            vec![point(
                Value::AsInt(5),
                vec![kv("method", "GET"), kv("route", "/a|b,c")],
            )],
        ),
        gauge("queue.depth", 2.5),
        sum(
            "bytes.total",
            CUMULATIVE,
            true,
            vec![point(Value::AsInt(100), vec![])],
        ),
        sum(
            "inflight",
            CUMULATIVE,
            false,
            vec![point(Value::AsInt(-3), vec![])],
        ),
        Metric {
            name: "latency".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: 3,
                    sum: Some(7.5),
                    bucket_counts: vec![1, 1, 1],
                    explicit_bounds: vec![1.0, 5.0],
                    min: Some(0.5),
                    max: Some(6.0),
                    ..Default::default()
                }],
                aggregation_temporality: DELTA,
            })),
            ..Default::default()
        },
        gauge("temperature", f64::NAN),
    ]);
    assert!(source.write(0, Signal::Metrics, &first));
    assert!(source.write(
        0,
        Signal::Traces,
        &otlp::traces_request("not-a-metric", 3).encode_to_vec()
    ));
    let second = request(vec![sum(
        "bytes.total",
        CUMULATIVE,
        true,
        vec![point(Value::AsInt(130), vec![])],
    )]);
    assert!(source.write(1, Signal::Metrics, &second));

    let expected: Vec<String> = [
        format!("http.requests:5|c|#{TAGS},method:GET,route:/a_b_c"),
        format!("queue.depth:2.5|g|#{TAGS}"),
        format!("inflight:-3|g|#{TAGS}"),
        format!("latency.count:3|c|#{TAGS}"),
        format!("latency.sum:7.5|c|#{TAGS}"),
        format!("latency.bucket:1|c|#{TAGS},lower_bound:-inf,upper_bound:1"),
        format!("latency.bucket:1|c|#{TAGS},lower_bound:1,upper_bound:5"),
        format!("latency.bucket:1|c|#{TAGS},lower_bound:5,upper_bound:inf"),
        format!("latency.min:0.5|g|#{TAGS}"),
        format!("latency.max:6|g|#{TAGS}"),
        // The cumulative counter's increase; its first point only set the baseline.
        format!("bytes.total:30|c|#{TAGS}"),
    ]
    .into_iter()
    .collect();

    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Ok(n) = server.recv(&mut buf) {
            assert!(n <= 128, "a datagram of {n} bytes");
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            got.extend(text.split('\n').map(str::to_owned));
        }
    }
    let count = |v: &[String]| {
        let mut m = BTreeMap::new();
        for l in v {
            *m.entry(l.clone()).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(count(&got), count(&expected));

    let snapshot = daemon.stop(&rt);
    let sink = &snapshot.sinks[0];
    // 7 points; the NaN gauge is refused; the spans never reach this sink.
    assert_eq!((sink.items_sent, sink.rejected_items), (6, 1), "{sink:?}");
    assert_eq!(sink.dropped_total(), 0);
    // Nothing more arrived.
    assert!(server.recv(&mut buf).is_err());
}

#[test]
fn a_unix_datagram_socket_works_like_udp() {
    let rt = tests::runtime();
    let path = std::env::temp_dir().join(format!("ue-statsd-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let source = MemorySource::new(100);
    let config = RunConfig {
        forward: ForwardConfig {
            sinks: vec![
                SinkConfig::Statsd(StatsdConfig::new(StatsdTarget::Unix(path.clone()))).into(),
            ],
            ..ForwardConfig::default()
        },
        ..RunConfig::default()
    };
    let daemon = Daemon::start(&rt, &source, config);
    assert!(source.write(0, Signal::Metrics, &request(vec![gauge("g", 1.0)])));
    let mut buf = [0u8; 8192];
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], format!("g:1|g|#{TAGS}").as_bytes());
    let snapshot = daemon.stop(&rt);
    assert_eq!(snapshot.sinks[0].items_sent, 1);
    std::fs::remove_file(&path).unwrap();
}
