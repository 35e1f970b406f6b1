//! The sinks' queue on disk (`--queue-dir`) through what it is for: a collector down for a
//! minute under steady load, a decoder SIGKILLed with a backlog and started again, queue
//! files damaged in the middle and at the end, a full disk and the queue's own bound. The
//! daemon runs over the in-memory event source, in this process or as the `queue-daemon`
//! program (tests/src/bin/queue-daemon.rs) where it must be killed; the collector is the
//! test receiver. The files are read back here independently of the decoder, from the
//! format documented in decoder/src/sink/disk.rs.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tests::daemon::Daemon;
use tests::otlp;
use tests::receiver::{Receiver, Respond};
use ue_decoder::{
    Batch, BatchConfig, DiskQueueConfig, ForwardConfig, MemorySource, OtlpConfig, Request,
    RetryConfig, RunConfig, Signal, SinkConfig, SinkSet, SyncPolicy,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ue-disk-queue-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A metrics event's request: one counter named `m<i>` with `points` points.
fn event(i: u64, points: usize) -> Vec<u8> {
    otlp::metrics_request(&format!("m{i}"), points).encode_to_vec()
}

/// OTLP/HTTP to `endpoint`, retrying every 100 to 300 ms for as long as it takes.
fn http(endpoint: String) -> SinkConfig {
    SinkConfig::Otlp(OtlpConfig {
        endpoint,
        timeout: Duration::from_secs(2),
        retry: RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(300),
            max_elapsed: Duration::ZERO,
            ..RetryConfig::default()
        },
        ..OtlpConfig::default()
    })
}

fn run_config(endpoint: String, queue: DiskQueueConfig, batch_items: u64) -> RunConfig {
    RunConfig {
        forward: ForwardConfig {
            batch: BatchConfig {
                max_items: batch_items,
                max_delay: Duration::from_millis(50),
                ..BatchConfig::default()
            },
            sinks: vec![http(endpoint).into()],
            queue_bytes: 1 << 20,
            disk_queue: Some(queue),
            shutdown_deadline: Duration::from_secs(1),
            ..ForwardConfig::default()
        },
        stats_interval: Duration::from_secs(3600),
        self_metrics: false,
        admin: None,
        writer_identity: true,
    }
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One valid record found in a queue file.
#[derive(Debug)]
struct OnDisk {
    segment: PathBuf,
    offset: usize,
    len: usize,
    items: u64,
}

/// Every valid record of every sink's queue under `dir`, oldest first, read as the format
/// says: `UEQSEG01`, then `UEQR | len u32 | CRC32C(len ++ payload) u32 | payload`, the
/// payload starting with the signal (u8) and the item count (u64). Reading stops at the
/// first damaged record of a segment (a record being appended, when the decoder runs).
fn records_on_disk(dir: &Path) -> Vec<OnDisk> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .flat_map(|sink| std::fs::read_dir(sink.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap_or_default();
        assert!(bytes.len() < 8 || &bytes[..8] == b"UEQSEG01", "{segment:?}");
        let mut at = 8;
        while let Some(header) = bytes.get(at..at + 12) {
            let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
            let Some(payload) = bytes.get(at + 12..at + 12 + len) else {
                break;
            };
            let computed = crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), payload);
            if &header[..4] != b"UEQR" || computed != crc || len < 9 {
                break;
            }
            out.push(OnDisk {
                segment: segment.clone(),
                offset: at,
                len: 12 + len,
                items: u64::from_le_bytes(payload[1..9].try_into().unwrap()),
            });
            at += 12 + len;
        }
    }
    out
}

fn items_on_disk(dir: &Path) -> u64 {
    records_on_disk(dir).iter().map(|r| r.items).sum()
}

/// The metric names of the accepted metrics requests, in the order they arrived.
fn accepted_names(receiver: &Receiver) -> Vec<String> {
    receiver
        .accepted(Signal::Metrics)
        .iter()
        .flat_map(|r| match &r.request {
            Request::Metrics(m) => m
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| m.name.clone())
                .collect::<Vec<_>>(),
            other => panic!("a metrics request, not {other:?}"),
        })
        .collect()
}

fn names(range: impl Iterator<Item = u64>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Process `pid`'s resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib << 10
}

/// Waits up to `limit` for `done`, panicking with `what` after.
fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_minute_long_outage_loses_nothing_and_stays_within_the_bounds() {
    const EVENTS: u64 = 24_000; // 400 a second for 60 s
    const POINTS: u64 = 20;
    let rt = tests::runtime();
    let mut receiver = rt.block_on(Receiver::start()).unwrap();
    let endpoint = receiver.http_endpoint();
    rt.block_on(receiver.stop());
    let dir = scratch("outage");
    let bound: u64 = 32 << 20;
    let (events, points, max) = (EVENTS.to_string(), POINTS.to_string(), bound.to_string());
    let daemon = queue_daemon(
        &endpoint,
        &dir,
        &[
            "--events",
            &events,
            "--points",
            &points,
            "--rate",
            "400",
            "--max-bytes",
            &max,
            "--batch-items",
            "2000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300)); // started up
    let rss_at_start = rss(daemon.id());
    let started = Instant::now();
    let (mut largest_dir, mut largest_rss) = (0u64, 0u64);
    let mut refusing = true;
    while started.elapsed() < Duration::from_secs(60) {
        if refusing && started.elapsed() >= Duration::from_secs(30) {
            // The second half: listening again, but answering 503 to everything.
            receiver.set_default(Signal::Metrics, Respond::status(503));
            rt.block_on(receiver.restart()).unwrap();
            refusing = false;
        }
        largest_dir = largest_dir.max(dir_size(&dir));
        largest_rss = largest_rss.max(rss(daemon.id()));
        assert!(largest_dir <= bound, "{largest_dir} bytes on disk");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receiver.accepted_items(Signal::Metrics), 0);
    assert!(
        receiver.received().len() > 10,
        "the 503s were tried: {}",
        receiver.received().len()
    );
    let backlog = dir_size(&dir);
    let expected = EVENTS * POINTS;

    receiver.set_default(Signal::Metrics, Respond::Ok);
    // What is checked is that nothing is lost, not how fast the backlog drains: a debug
    // build on a busy CI host took more than 40 s to send the minute's backlog.
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(240), |requests| {
        largest_dir = largest_dir.max(dir_size(&dir));
        let items: u64 = requests
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.items())
            .sum();
        items >= expected
    }));
    assert!(
        arrived,
        "{} of {expected} items arrived",
        receiver.accepted_items(Signal::Metrics)
    );
    std::thread::sleep(Duration::from_millis(300)); // nothing more comes
    let counters = finish(daemon);
    let grew = largest_rss.saturating_sub(rss_at_start);
    eprintln!(
        "backlog {backlog} bytes after 60 s, largest directory {largest_dir} bytes, the \
         decoder's resident memory {rss_at_start} bytes at start, {grew} more at most during \
         the outage; {counters:?}"
    );
    assert_eq!(receiver.accepted_items(Signal::Metrics), expected);
    assert_eq!(
        accepted_names(&receiver),
        names(0..EVENTS),
        "in order, once each"
    );
    assert_eq!((counters["items_sent"], counters["dropped"]), (expected, 0));
    assert_eq!(counters["corrupt_records"], 0);
    assert!(largest_dir <= bound);
    assert!(
        backlog > 8 << 20,
        "a minute of load was queued on disk: {backlog} bytes"
    );
    // Memory held nothing like the backlog: the batches waited on disk.
    assert!(
        grew < backlog / 4,
        "resident memory grew {grew} bytes for a backlog of {backlog}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `queue-daemon` program with `args`, its queue in `dir`.
fn queue_daemon(endpoint: &str, dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_queue-daemon"))
        .args(["--endpoint", endpoint])
        .arg("--queue-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("queue-daemon starts")
}

/// Closes the program's stdin, which stops it, and reads its `key=value` counters.
fn finish(mut child: Child) -> std::collections::BTreeMap<String, u64> {
    drop(child.stdin.take());
    let stdout = child.stdout.take().unwrap();
    let counters = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect();
    assert!(child.wait().unwrap().success());
    counters
}

#[test]
fn a_sigkilled_decoder_sends_everything_it_had_accepted_once_restarted() {
    let rt = tests::runtime();
    let mut receiver = rt.block_on(Receiver::start()).unwrap();
    let endpoint = receiver.http_endpoint();
    rt.block_on(receiver.stop());
    let dir = scratch("kill");

    // Killed in the middle of a steady load, with the collector down.
    let load = ["--events", "20000", "--points", "10", "--rate", "2000"];
    let mut first = queue_daemon(&endpoint, &dir, &load);
    eventually("half the load on disk", Duration::from_secs(30), || {
        items_on_disk(&dir) >= 50_000
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // What it had accepted: every whole record in its files (a record it was appending
    // when killed was not accepted yet).
    let on_disk = records_on_disk(&dir);
    let accepted: u64 = on_disk.iter().map(|r| r.items).sum();
    let events = accepted / 10;
    assert!(accepted < 200_000, "killed before the end of the load");

    rt.block_on(receiver.restart()).unwrap();
    let second = queue_daemon(&endpoint, &dir, &[]);
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(30), |requests| {
        let items: u64 = requests
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.items())
            .sum();
        items >= accepted
    }));
    assert!(
        arrived,
        "{} of {accepted} items arrived",
        receiver.accepted_items(Signal::Metrics)
    );
    std::thread::sleep(Duration::from_millis(300)); // nothing more comes
    let counters = finish(second);
    eprintln!("accepted before the kill: {accepted} items; after the restart: {counters:?}");
    // The collector was down, so none of it had reached it: exactly once, in order.
    assert_eq!(receiver.accepted_items(Signal::Metrics), accepted);
    assert_eq!(accepted_names(&receiver), names(0..events));
    assert_eq!(counters["replayed_items"], accepted);
    assert_eq!(counters["items_sent"], accepted);
    assert_eq!(counters["dropped"], 0);
    assert_eq!(counters["corrupt_records"], 0);
    // The batch being retried at the kill is reported as a possible duplicate.
    assert_eq!(counters["possible_duplicate_items"], on_disk[0].items);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_queue_files_are_reported_and_the_rest_replayed_without_a_crash_loop() {
    const POINTS: usize = 10;
    let rt = tests::runtime();
    let mut receiver = rt.block_on(Receiver::start()).unwrap();
    let endpoint = receiver.http_endpoint();
    rt.block_on(receiver.stop());
    let dir = scratch("damaged");
    let queue = DiskQueueConfig {
        sync: SyncPolicy::EveryBatch,
        ..DiskQueueConfig::new(&dir)
    };
    // One batch per event, so one record per event.
    let config = || run_config(endpoint.clone(), queue.clone(), POINTS as u64);

    let source = MemorySource::new(1000);
    let daemon = Daemon::start(&rt, &source, config());
    for i in 0..20 {
        assert!(source.write(0, Signal::Metrics, &event(i, POINTS)));
    }
    eventually("20 records on disk", Duration::from_secs(10), || {
        records_on_disk(&dir).len() == 20
    });
    let s = daemon.stop(&rt);
    assert_eq!(
        s.sinks[0].dropped_total(),
        0,
        "a stop leaves the backlog on disk"
    );

    // Garbage over the middle of the fifth record, and half of the last one cut off, as a
    // crash while appending would leave it.
    let records = records_on_disk(&dir);
    assert_eq!(records.len(), 20);
    let fifth = &records[4];
    let mut bytes = std::fs::read(&fifth.segment).unwrap();
    bytes[fifth.offset + fifth.len / 2..][..16].copy_from_slice(b"garbage-garbage!");
    std::fs::write(&fifth.segment, &bytes).unwrap();
    let last = &records[19];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.segment)
        .unwrap();
    file.set_len((last.offset + last.len / 2) as u64).unwrap();
    drop(file);

    rt.block_on(receiver.restart()).unwrap();
    let daemon = Daemon::start(&rt, &source, config());
    let expected = 18 * POINTS as u64;
    eventually(
        "the intact records to arrive",
        Duration::from_secs(10),
        || receiver.accepted_items(Signal::Metrics) >= expected,
    );
    let s = daemon.stop(&rt);
    let disk = s.sinks[0].disk.clone().unwrap();
    assert_eq!(receiver.accepted_items(Signal::Metrics), expected);
    let mut kept = names(0..19);
    kept.remove(4);
    assert_eq!(accepted_names(&receiver), kept);
    assert_eq!(
        (disk.corrupt_records, disk.replayed_items),
        (1, expected),
        "{disk:?}"
    );
    // What was left of the torn record: the first half, cut off.
    assert_eq!(disk.truncated_bytes as usize, last.len / 2);
    assert!(
        s.sinks[0].to_string().contains("corrupt 1 records"),
        "{}",
        s.sinks[0]
    );

    // Started again on the same directory: nothing left to report, and new batches flow.
    let daemon = Daemon::start(&rt, &source, config());
    for i in 100..105 {
        assert!(source.write(0, Signal::Metrics, &event(i, POINTS)));
    }
    eventually("the new batches", Duration::from_secs(10), || {
        receiver.accepted_items(Signal::Metrics) >= expected + 50
    });
    let s = daemon.stop(&rt);
    let disk = s.sinks[0].disk.clone().unwrap();
    assert_eq!(
        (
            disk.corrupt_records,
            disk.truncated_bytes,
            disk.replayed_items
        ),
        (0, 0, 0)
    );
    assert_eq!(receiver.accepted_items(Signal::Metrics), expected + 50);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tmpfs of `size` mounted at `path` for the life of the guard.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the tests run as root)"
        );
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn metrics_batch(i: u64, points: usize) -> Arc<Batch> {
    Arc::new(Batch::new(Request::Metrics(otlp::metrics_request(
        &format!("m{i}"),
        points,
    ))))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_and_counts_batches_and_the_sink_goes_on() {
    let mut receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.http_endpoint();
    receiver.stop().await;
    // A real ENOSPC: a 256 KiB tmpfs under a queue allowed 64 MiB.
    let mount = Tmpfs::mount(scratch("enospc"), "256k");
    let queue = DiskQueueConfig {
        max_bytes: 64 << 20,
        ..DiskQueueConfig::new(&mount.0)
    };
    let rt = tokio::runtime::Handle::current();
    let set = SinkSet::start_with_disk(vec![http(endpoint)], 1 << 20, Some(&queue), &rt).unwrap();
    for i in 0..600 {
        set.submit(metrics_batch(i, 20));
    }
    let s = &set.snapshot()[0];
    let full = s.dropped_batches.get("disk_full").copied().unwrap_or(0);
    assert!(full > 0, "{s}");
    assert_eq!(s.dropped_total(), s.dropped("disk_full"), "{s}");
    let kept = 600 - full;
    assert!(kept > 100, "{s}");

    receiver.restart().await.unwrap();
    wait_for("what fitted to arrive", || {
        receiver.accepted_items(Signal::Metrics) >= kept * 20
    })
    .await;
    // Once sent, the space is free again.
    // Once sent, the space is free again: each new batch, sent before the next comes,
    // finds room.
    for (n, i) in (1000..1010).enumerate() {
        wait_for("the queue to empty", || set.snapshot()[0].queue_bytes == 0).await;
        set.submit(metrics_batch(i, 20));
        wait_for("the new batch", || {
            receiver.accepted_items(Signal::Metrics) >= (kept + n as u64 + 1) * 20
        })
        .await;
    }
    let snaps = set.shutdown(Duration::from_secs(5)).await;
    let s = &snaps[0];
    assert_eq!(receiver.accepted_items(Signal::Metrics), (kept + 10) * 20);
    assert_eq!(s.dropped_batches["disk_full"], full, "{s}");
    let mut expected = names(0..kept);
    expected.extend(names(1000..1010));
    assert_eq!(
        accepted_names(&receiver),
        expected,
        "the first that fitted, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_on_disk_drops_and_counts_what_does_not_fit() {
    let mut receiver = Receiver::start().await.unwrap();
    let endpoint = receiver.http_endpoint();
    receiver.stop().await;
    let dir = scratch("bound");
    let bound = 256 << 10;
    let queue = DiskQueueConfig {
        max_bytes: bound,
        ..DiskQueueConfig::new(&dir)
    };
    let rt = tokio::runtime::Handle::current();
    let set = SinkSet::start_with_disk(vec![http(endpoint)], 1 << 20, Some(&queue), &rt).unwrap();
    for i in 0..600 {
        set.submit(metrics_batch(i, 20));
        assert!(dir_size(&dir) <= bound);
    }
    let s = &set.snapshot()[0];
    let full = s.dropped_batches["queue_full"];
    assert!(full > 0 && full < 600, "{s}");
    assert_eq!(s.dropped_items["queue_full"], full * 20);
    assert!(s.disk.as_ref().unwrap().file_bytes <= bound);
    receiver.restart().await.unwrap();
    let kept = 600 - full;
    wait_for("what fitted to arrive", || {
        receiver.accepted_items(Signal::Metrics) >= kept * 20
    })
    .await;
    set.shutdown(Duration::from_secs(5)).await;
    assert_eq!(accepted_names(&receiver), names(0..kept));
    std::fs::remove_dir_all(&dir).unwrap();
}
