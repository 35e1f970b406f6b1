//! Decoding a real `perf record` capture: the committed fixture decodes to the committed
//! golden OTLP/JSON, holds everything the exporter examples wrote, and broken files give
//! clear errors instead of panics.
//!
//! The fixture, `tests/fixtures/examples.perf.data`, was captured in the project VM by
//! `scripts/make-fixture.sh` while `examples/metrics 3 10` and `examples/spans 5` ran;
//! `tests/fixtures/examples.expected.txt` holds the stats line each example printed, and
//! `tests/fixtures/examples.z.perf.data` the same events captured at the same time by
//! `perf record -z` (zstd-compressed records). `tests/fixtures/lossy.perf.data` (with
//! `lossy.expected.txt`) was captured with a ring too small for the metrics events: its
//! loss records must be counted. `tests/fixtures/logs.perf.data` (with `logs.expected.txt`)
//! holds what `perf record -e user_events:otlp_logs` captured while `examples/logs 12` ran.
//! The golden file `tests/fixtures/examples.json` is one [`otlp_json_line`] per decoded
//! event. After a change of the fixture or of the JSON format, regenerate it with
//!
//! ```text
//! cargo run -p tests --bin bless-golden examples logs
//! ```
//!
//! (`scripts/make-fixture.sh` does that after a new capture) and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ue_decoder::{
    PerfDataDecoded, PerfDataError, PerfDataEvent, PerfDataReader, Request, Signal,
    TracepointNames, WRITER_PID, decode_perf_data, otlp_json_line,
};
use ue_proto::resource::v1::Resource;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/examples.perf.data");
const FIXTURE_Z: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/examples.z.perf.data");
const LOSSY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lossy.perf.data");
const LOSSY_EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/lossy.expected.txt");
const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/logs.perf.data");
const LOGS_EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/logs.expected.txt");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/examples.json");
const EXPECTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/examples.expected.txt"
);

fn decode_fixture() -> PerfDataDecoded {
    decode_perf_data(Path::new(FIXTURE), &TracepointNames::default()).expect("fixture decodes")
}

/// The request as the application wrote it: the writer's attributes the reader appends to
/// each resource from the sample's pid (`process.pid`, as the examples set none, then
/// `user_events.writer.pid`) checked, then removed.
fn as_written(event: &PerfDataEvent) -> Request {
    let pid = i64::from(event.pid.expect("perf record records the writer's pid"));
    let mut request = event.request.clone();
    let resources: Vec<&mut Option<Resource>> = match &mut request {
        Request::Metrics(r) => r
            .resource_metrics
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
        Request::Traces(r) => r
            .resource_spans
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
        Request::Logs(r) => r
            .resource_logs
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
    };
    assert!(!resources.is_empty());
    for resource in resources {
        let attributes = &mut resource.as_mut().expect("a resource").attributes;
        let writer = attributes.split_off(attributes.len().saturating_sub(2));
        assert_eq!(
            writer,
            [
                tests::otlp::int("process.pid", pid),
                tests::otlp::int(WRITER_PID, pid)
            ]
        );
        assert!(
            !attributes.is_empty(),
            "the SDK's resource attributes are kept"
        );
    }
    request
}

fn json_lines(decoded: &PerfDataDecoded) -> String {
    decoded
        .events
        .iter()
        .map(|e| otlp_json_line(&e.request) + "\n")
        .collect()
}

/// A scratch file for one test.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("perf_data-{name}"));
    std::fs::write(&path, contents).unwrap();
    path
}

/// What one example printed: `events_written`, `bytes_written`, `items_written`...
fn expected_stats(file: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (example, snapshot) = line
            .split_once(": ")
            .expect("`EXAMPLE ARGS: StatsSnapshot`");
        let example = example.split_whitespace().next().unwrap().to_owned();
        let body = snapshot
            .strip_prefix("StatsSnapshot { ")
            .expect("a StatsSnapshot");
        let counters = body
            .split(", ")
            .filter_map(|kv| kv.split_once(": "))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect();
        out.insert(example, counters);
    }
    out
}

#[test]
fn fixture_decodes_to_the_golden_json() {
    let actual = tests::otlp::golden_json(Path::new(FIXTURE));
    let golden = std::fs::read_to_string(GOLDEN).expect(
        "tests/fixtures/examples.json missing: `cargo run -p tests --bin bless-golden examples`",
    );
    // Compare line by line first, so a failure shows the first differing request.
    for (i, (a, g)) in actual.lines().zip(golden.lines()).enumerate() {
        assert_eq!(a, g, "line {} of {GOLDEN} differs", i + 1);
    }
    assert_eq!(actual, golden, "{GOLDEN}: a different number of lines");
}

/// The golden OTLP/JSON of the logs capture, like `examples.json` for the other two.
const LOGS_GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/logs.json");

#[test]
fn the_logs_capture_decodes_to_its_golden_json() {
    let actual = tests::otlp::golden_json(Path::new(LOGS));
    let golden = std::fs::read_to_string(LOGS_GOLDEN)
        .expect("tests/fixtures/logs.json missing: `cargo run -p tests --bin bless-golden logs`");
    assert!(!golden.is_empty() && golden.contains(r#""signal":"logs""#));
    assert_eq!(actual, golden, "{LOGS_GOLDEN}");
}

#[test]
fn golden_lines_are_otlp_json() {
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let mut signals = Vec::new();
    for line in golden.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let signal = v["signal"].as_str().unwrap().to_owned();
        let request = &v["request"];
        match signal.as_str() {
            "metrics" => {
                let rm = &request["resourceMetrics"][0];
                assert!(rm["scopeMetrics"][0]["metrics"].is_array());
                let attrs = rm["resource"]["attributes"].as_array().unwrap();
                assert!(attrs.iter().any(|a| a["key"] == "service.name"
                    && a["value"]["stringValue"] == "example-metrics"));
            }
            "traces" => {
                let span = &request["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
                let trace_id = span["traceId"].as_str().unwrap();
                assert_eq!(trace_id.len(), 32, "hex trace id: {trace_id}");
                assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
                assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
                // 64-bit integers are strings in OTLP/JSON.
                assert!(span["startTimeUnixNano"].is_string());
            }
            other => panic!("unknown signal {other}"),
        }
        signals.push(signal);
    }
    assert!(signals.contains(&"metrics".to_owned()));
    assert!(signals.contains(&"traces".to_owned()));
}

#[test]
fn fixture_holds_everything_the_examples_wrote() {
    let decoded = decode_fixture();
    let stats = &decoded.stats;
    let expected = expected_stats(EXPECTED);
    let (metrics, spans) = (&expected["metrics"], &expected["spans"]);

    assert_eq!(stats.lost_total(), 0, "the capture lost events: {stats:?}");
    assert!(stats.malformed.is_empty(), "malformed: {stats:?}");
    assert!(stats.skipped.is_empty(), "other samples: {stats:?}");
    assert_eq!(
        stats.events,
        BTreeMap::from([
            (
                "user_events:otlp_metrics".to_owned(),
                metrics["events_written"]
            ),
            (
                "user_events:otlp_traces".to_owned(),
                spans["events_written"]
            ),
        ])
    );
    assert_eq!(
        stats.requests,
        BTreeMap::from([
            (Signal::Metrics, metrics["events_written"]),
            (Signal::Traces, spans["events_written"]),
        ])
    );
    assert_eq!(
        stats.items,
        BTreeMap::from([
            (Signal::Metrics, metrics["items_written"]),
            (Signal::Traces, spans["items_written"]),
        ])
    );
    // The example's own arithmetic: 3 rounds of 10 counter series, a histogram and a
    // gauge; 5 traces of 3 spans.
    assert_eq!(metrics["items_written"], 3 * (10 + 1 + 1));
    assert_eq!(spans["items_written"], 5 * 3);

    // Every OTLP byte arrived: re-encoding, without the writer's attributes the reader
    // added, gives the examples' byte counts.
    for (signal, example) in [(Signal::Metrics, metrics), (Signal::Traces, spans)] {
        let bytes: usize = decoded
            .events
            .iter()
            .filter(|e| e.request.signal() == signal)
            .map(|e| as_written(e).encoded_len())
            .sum();
        assert_eq!(bytes as u64, example["bytes_written"], "{signal}");
    }
}

#[test]
fn without_writer_identity_the_requests_are_as_written() {
    for capture in [FIXTURE, LOGS] {
        let stamped = decode_perf_data(Path::new(capture), &TracepointNames::default()).unwrap();
        let mut reader = PerfDataReader::open(Path::new(capture), &TracepointNames::default())
            .expect("the capture opens");
        reader.set_writer_identity(false);
        let mut plain = Vec::new();
        while let Some(event) = reader.next_event().unwrap() {
            plain.push(event.request);
        }
        let unstamped: Vec<Request> = stamped.events.iter().map(as_written).collect();
        assert_eq!(plain.len(), stamped.events.len(), "{capture}");
        assert!(
            plain == unstamped,
            "{capture}: the writer's attributes are all that differ"
        );
        assert_eq!(stamped.stats.forged_writer_attributes, 0);
    }
}

#[test]
fn a_compressed_capture_decodes_the_same() {
    let plain = decode_fixture();
    let compressed = decode_perf_data(Path::new(FIXTURE_Z), &TracepointNames::default())
        .expect("perf record -z output decodes");
    assert_eq!(json_lines(&compressed), json_lines(&plain));
    assert_eq!(compressed.stats, plain.stats);
}

#[test]
fn lost_events_are_counted() {
    let decoded = decode_perf_data(Path::new(LOSSY), &TracepointNames::default()).unwrap();
    let stats = &decoded.stats;
    let expected = expected_stats(LOSSY_EXPECTED);
    let (metrics, spans) = (&expected["metrics"], &expected["spans"]);
    // The capture's premise: every metrics event was larger than the 4 KiB ring.
    assert!(metrics["bytes_written"] / metrics["events_written"] > 4096);

    // The spans arrived, the metrics were all lost, and the file says so.
    assert_eq!(
        stats.items.get(&Signal::Traces),
        Some(&spans["items_written"])
    );
    assert_eq!(stats.requests.get(&Signal::Metrics), None);
    assert_eq!(
        stats.lost_samples,
        BTreeMap::from([(
            "user_events:otlp_metrics".to_owned(),
            metrics["events_written"]
        )])
    );
    assert_eq!(stats.lost, metrics["events_written"]);
    assert_eq!(stats.lost_total(), metrics["events_written"]);
    assert!(stats.malformed.is_empty(), "{stats:?}");
}

#[test]
fn events_carry_the_samples_metadata() {
    let decoded = decode_fixture();
    assert!(!decoded.events.is_empty());
    let mut pids = BTreeMap::new();
    let mut last_time = 0;
    for e in &decoded.events {
        assert_eq!(
            e.tracepoint,
            format!("user_events:{}", e.request.signal().default_tracepoint())
        );
        // Captured on the VM's single CPU.
        assert_eq!(e.cpu, Some(0));
        let time = e.time.expect("perf record -a samples carry TIME");
        assert!(time >= last_time, "events come in time order");
        last_time = time;
        let pid = e.pid.expect("samples carry TID");
        assert!(pid > 1);
        assert!(e.tid.is_some());
        pids.entry(e.request.signal()).or_insert(pid);
        assert_eq!(
            pids[&e.request.signal()],
            pid,
            "one example process per signal"
        );
    }
    assert_ne!(pids[&Signal::Metrics], pids[&Signal::Traces]);
}

#[test]
fn the_streaming_reader_gives_the_same_events() {
    let decoded = decode_fixture();
    let mut reader = PerfDataReader::open(Path::new(FIXTURE), &TracepointNames::default())
        .expect("fixture opens");
    assert_eq!(
        reader.event_names().collect::<Vec<_>>(),
        [
            "user_events:otlp_metrics",
            "user_events:otlp_traces",
            "dummy:HG"
        ]
    );
    let events: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(events, decoded.events);
    assert_eq!(reader.stats(), &decoded.stats);
    assert!(reader.next().is_none(), "stays at the end");
}

#[test]
fn names_select_the_tracepoints() {
    // Only metrics: the traces samples are counted as skipped, not lost.
    let names = TracepointNames {
        metrics: "user_events:otlp_metrics".into(),
        traces: "not_there".into(),
        logs: "not_there_either".into(),
    };
    let decoded = decode_perf_data(Path::new(FIXTURE), &names).unwrap();
    let all = decode_fixture();
    assert!(
        decoded
            .events
            .iter()
            .all(|e| e.request.signal() == Signal::Metrics)
    );
    assert_eq!(
        decoded.stats.requests[&Signal::Metrics],
        all.stats.requests[&Signal::Metrics]
    );
    assert_eq!(
        decoded.stats.skipped,
        BTreeMap::from([(
            "user_events:otlp_traces".to_owned(),
            all.stats.requests[&Signal::Traces]
        )])
    );

    // Neither: the error lists what the file has.
    let names = TracepointNames {
        metrics: "my_metrics".into(),
        traces: "my_spans".into(),
        logs: "my_logs".into(),
    };
    let err = decode_perf_data(Path::new(FIXTURE), &names).unwrap_err();
    let PerfDataError::NoOtlpTracepoints { events, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        events,
        &[
            "user_events:otlp_metrics",
            "user_events:otlp_traces",
            "dummy:HG"
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no my_metrics, my_spans or my_logs events"),
        "{msg}"
    );
    assert!(msg.contains("user_events:otlp_traces"), "{msg}");
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("perf_data-does-not-exist");
    let err = decode_perf_data(&path, &TracepointNames::default()).unwrap_err();
    assert!(
        matches!(&err, PerfDataError::NotFound { path: p } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("no such file"));
}

#[test]
fn other_files_are_not_perf_data() {
    for (name, contents) in [
        ("empty", &b""[..]),
        ("text", b"perf.data? no, just some text\n"),
        ("zeros", &[0u8; 4096]),
    ] {
        let path = scratch(name, contents);
        let err = decode_perf_data(&path, &TracepointNames::default()).unwrap_err();
        assert!(
            matches!(err, PerfDataError::NotPerfData { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("not a perf.data file"), "{err}");
    }
}

#[test]
fn unsupported_perf_data_is_named() {
    let full = std::fs::read(FIXTURE).unwrap();
    let names = TracepointNames::default();

    // The pipe form (perf record -o -): the header is only magic and size 16.
    let mut pipe = full[..8].to_vec();
    pipe.extend_from_slice(&16u64.to_ne_bytes());
    pipe.extend_from_slice(&full[104..1024]);
    let err = decode_perf_data(&scratch("pipe", &pipe), &names).unwrap_err();
    assert!(matches!(err, PerfDataError::PipeMode { .. }), "{err:?}");
    assert!(err.to_string().contains("perf record -o FILE"), "{err}");

    // A file perf record never finished: the header's data size is still 0.
    let mut unfinished = full.clone();
    unfinished[48..56].copy_from_slice(&0u64.to_ne_bytes());
    let err = decode_perf_data(&scratch("unfinished", &unfinished), &names).unwrap_err();
    assert!(matches!(err, PerfDataError::Unfinished { .. }), "{err:?}");

    // Written on a machine of the other byte order.
    let mut foreign = full;
    foreign[..8].reverse();
    let err = decode_perf_data(&scratch("foreign", &foreign), &names).unwrap_err();
    assert!(
        matches!(err, PerfDataError::ForeignEndian { .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_copies_fail_cleanly() {
    let complete = decode_fixture().events.len();
    for fixture in [FIXTURE, FIXTURE_Z, LOSSY] {
        let full = std::fs::read(fixture).unwrap();
        // Every cut in the header, then every 13 bytes through the rest.
        let cuts = (0..256).chain((256..full.len()).step_by(13));
        for cut in cuts {
            let path = scratch("truncated", &full[..cut]);
            match decode_perf_data(&path, &TracepointNames::default()) {
                Ok(decoded) => assert!(decoded.events.len() <= complete, "cut at {cut}"),
                Err(
                    PerfDataError::NotPerfData { .. }
                    | PerfDataError::Truncated { .. }
                    | PerfDataError::Corrupt { .. },
                ) => {}
                Err(e) => panic!("{fixture} cut at {cut}: unexpected {e:?}"),
            }
        }
    }
    let full = std::fs::read(FIXTURE).unwrap();
    // Cut inside the data section: the header says how long it should be.
    let path = scratch("truncated-half", &full[..full.len() / 2]);
    let err = decode_perf_data(&path, &TracepointNames::default()).unwrap_err();
    assert!(
        matches!(err, PerfDataError::Truncated { actual, .. } if actual == (full.len() / 2) as u64),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut outcomes = BTreeMap::<&str, u32>::new();
    for fixture in [FIXTURE, FIXTURE_Z, LOSSY] {
        let full = std::fs::read(fixture).unwrap();
        for (i, at) in (0..full.len()).step_by(11).enumerate() {
            let mut copy = full.clone();
            copy[at] ^= [0xff, 0x80, 0x01, 0x7f][i % 4];
            let path = scratch("corrupted", &copy);
            // Any outcome but a panic: decoded (maybe with malformed events) or an error.
            let outcome = match PerfDataReader::open(&path, &TracepointNames::default()) {
                Err(_) => "refused",
                Ok(mut reader) => {
                    let failed = reader.by_ref().any(|event| event.is_err());
                    match (failed, reader.stats().malformed_total()) {
                        (true, _) => "failed while reading",
                        (false, 0) => "decoded",
                        (false, _) => "decoded with malformed events",
                    }
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    // The flips reach every path: the header checks, the record reader, and the
    // per-sample decoding that counts malformed events.
    for outcome in [
        "refused",
        "failed while reading",
        "decoded",
        "decoded with malformed events",
    ] {
        assert!(outcomes.contains_key(outcome), "{outcomes:?}");
    }
}

#[test]
fn a_capture_of_log_records_holds_every_record_the_example_wrote() {
    use ue_proto::common::v1::any_value::Value;

    let decoded = decode_perf_data(Path::new(LOGS), &TracepointNames::default()).unwrap();
    let stats = &decoded.stats;
    let logs = &expected_stats(LOGS_EXPECTED)["logs"];
    assert_eq!(stats.lost_total(), 0, "the capture lost events: {stats:?}");
    assert!(
        stats.malformed.is_empty() && stats.skipped.is_empty(),
        "{stats:?}"
    );
    assert_eq!(
        stats.events,
        BTreeMap::from([("user_events:otlp_logs".to_owned(), logs["events_written"])])
    );
    assert_eq!(
        stats.items,
        BTreeMap::from([(Signal::Logs, logs["items_written"])])
    );
    assert_eq!(logs["items_written"], 12, "the example's argument");
    let bytes: usize = decoded
        .events
        .iter()
        .map(|e| as_written(e).encoded_len())
        .sum();
    assert_eq!(
        bytes as u64, logs["bytes_written"],
        "every OTLP byte arrived"
    );

    // The records, in order, with what the example put in them.
    let records: Vec<_> = decoded
        .events
        .iter()
        .flat_map(|e| match &e.request {
            Request::Logs(r) => r.resource_logs.clone(),
            other => panic!("only logs in this capture, not {other:?}"),
        })
        .flat_map(|rl| rl.scope_logs)
        .inspect(|sl| assert_eq!(sl.scope.as_ref().unwrap().name, "example.payments"))
        .flat_map(|sl| sl.log_records)
        .collect();
    assert_eq!(records.len(), 12);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.event_name, "payment.settled");
        let Some(Value::KvlistValue(body)) = r.body.as_ref().and_then(|b| b.value.clone()) else {
            panic!("record {i}: a map body")
        };
        let field = |k: &str| {
            body.values
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone()?.value)
        };
        assert_eq!(field("payment"), Some(Value::IntValue(i as i64)));
        assert_eq!(
            field("receipt"),
            Some(Value::BytesValue((i as i64).to_be_bytes().to_vec()))
        );
        let error = i % 10 == 9;
        assert_eq!(r.severity_text, if error { "ERROR" } else { "INFO" });
        assert_eq!(r.span_id.len(), if error { 8 } else { 0 }, "record {i}");
    }
    let line = otlp_json_line(&decoded.events[0].request);
    assert!(
        line.starts_with(r#"{"signal":"logs","request":{"resourceLogs":"#),
        "{line}"
    );
}
