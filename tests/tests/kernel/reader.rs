//! The perf reader against the real kernel. Each test uses its own tracepoint names, so
//! tests can share a kernel; the writer is a raw tracepoint with the exporters' layout, to
//! control sizes exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use tests::kernel::{self, Got, RawWriter};
use ue_decoder::{ReaderConfig, ReaderError, TracepointReader};
use ue_wire::layout;

fn config(names: &[&str], ring_kib: usize) -> ReaderConfig {
    ReaderConfig {
        tracepoints: names.iter().map(|n| n.to_string()).collect(),
        ring_kib,
        ..ReaderConfig::default()
    }
}

fn read(reader: &mut TracepointReader, want: usize) -> Vec<Got> {
    kernel::read(reader, want, Duration::from_secs(10))
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn events_written_after_open_arrive_whole_and_attributed() {
    kernel::require();
    let names = ["ue_dec_basic_metrics", "ue_dec_basic_traces"];
    let mut reader = kernel::reader(&names, 1024);
    let writers = names.map(RawWriter::register);
    assert!(
        writers.iter().all(RawWriter::enabled),
        "reader is listening"
    );

    let sizes = [0, 1, 7, 8, 100, 4096, layout::PERF_MAX_BUFFER];
    let mut sent = Vec::new();
    for (i, &len) in sizes.iter().cycle().take(40).enumerate() {
        let which = i % 2;
        let data = payload(i, len);
        assert_eq!(writers[which].write(&data), 0);
        sent.push((names[which].to_owned(), data));
    }

    let got = read(&mut reader, sent.len());
    assert_eq!(got.len(), sent.len(), "lost: {:?}", reader.lost_by_cpu());
    // One thread wrote them, but it may have moved between CPUs: order by time.
    let mut by_time = got.clone();
    by_time.sort_by_key(|g| g.time_ns);
    let got_pairs: Vec<_> = by_time
        .iter()
        .map(|g| (g.tracepoint.clone(), g.otlp.clone()))
        .collect();
    assert_eq!(got_pairs, sent);
    let cpus = reader.cpus();
    for g in &got {
        assert_eq!(g.pid, std::process::id());
        assert_eq!(g.tid, kernel::gettid());
        assert!(cpus.contains(&g.cpu));
        assert!(g.time_ns > 0);
    }
    assert_eq!(reader.lost_total(), 0);
    assert!(reader.malformed_records().is_empty());
}

#[test]
fn buffers_over_the_perf_limit_vanish_without_a_lost_record() {
    kernel::require();
    let names = ["ue_dec_limit"];
    let mut reader = kernel::reader(&names, 1024);
    let w = RawWriter::register(names[0]);
    // writev succeeds for both; only the first reaches perf (KERNEL.md).
    assert_eq!(w.write(&payload(1, layout::PERF_MAX_BUFFER + 1)), 0);
    assert_eq!(w.write(&payload(2, layout::PERF_MAX_BUFFER)), 0);
    let got = read(&mut reader, 1);
    std::thread::sleep(Duration::from_millis(200));
    let mut late = 0;
    reader.drain(|_| late += 1);
    assert_eq!(got.len() + late, 1);
    assert_eq!(got[0].otlp.len(), layout::PERF_MAX_BUFFER);
    assert_eq!(reader.lost_total(), 0);
}

#[test]
fn a_full_ring_reports_every_dropped_event_as_lost() {
    kernel::require();
    let names = ["ue_dec_lost"];
    // One page of ring: about four 1000-byte events fit.
    let mut reader = kernel::reader(&names, 4);
    let w = RawWriter::register(names[0]);
    let cpu = reader.cpus()[0];
    kernel::pin_to_cpu(cpu);

    let total = 100;
    for i in 0..total {
        assert_eq!(w.write(&payload(i, 1000)), 0);
    }
    let mut received = read(&mut reader, 1).len();
    // The kernel writes the LOST record before the next event that fits.
    assert_eq!(w.write(&payload(total, 1000)), 0);
    received += read(&mut reader, 1).len();

    let lost: BTreeMap<u32, u64> = reader.lost_by_cpu().into_iter().collect();
    assert!(lost[&cpu] > 0, "a one-page ring dropped events: {lost:?}");
    assert_eq!(received as u64 + reader.lost_total(), total as u64 + 1);
    assert!(reader.malformed_records().is_empty());
}

#[test]
fn without_registration_an_unknown_tracepoint_is_named() {
    kernel::require();
    let cfg = ReaderConfig {
        register: false,
        ..config(&["ue_dec_nobody_registered_this"], 64)
    };
    match TracepointReader::open(&cfg) {
        Err(e @ ReaderError::NotRegistered { .. }) => {
            assert!(
                e.to_string().contains("ue_dec_nobody_registered_this"),
                "{e}"
            );
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
}

#[test]
fn a_name_taken_with_another_layout_is_refused() {
    kernel::require();
    let name = "ue_dec_other_layout";
    let _taken = RawWriter::register_raw(&format!("{name} u32 something"));

    let err = TracepointReader::open(&config(&[name], 64)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ReaderError::Register { errno, .. } if errno == libc::EADDRINUSE),
        "{text}"
    );
    assert!(text.contains("another field layout"), "{text}");

    let cfg = ReaderConfig {
        register: false,
        ..config(&[name], 64)
    };
    let err = TracepointReader::open(&cfg).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            ReaderError::LayoutMismatch {
                field: "protocol",
                ..
            }
        ),
        "{text}"
    );
}
