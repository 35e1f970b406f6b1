//! The daemon: a reader thread drains the perf rings and decodes events, a task merges them
//! into batches, and the sinks send them, each from its own bounded queue.
//!
//! ```text
//! perf rings --(reader thread: drain, decode)--> channel --(batcher task)--> SinkSet --> sinks
//! ```
//!
//! The reader never waits on the network: if batching falls behind, the bounded channel
//! blocks the reader, the kernel's rings fill and the kernel counts what it drops, which is
//! reported (`kernel lost`). Sinks drop, and count, what overflows their queues.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::batch::Batch;
use crate::batch::{BatchConfig, Batcher};
use crate::daemon::stats::{Snapshot, Stats};
use crate::decode::decode_event;
use crate::decode::{Request, Signal};
use crate::kernel::ReaderError;
use crate::kernel::{ReaderConfig, TracepointReader};
use crate::sink::{SinkConfig, SinkError, SinkSet};

/// Everything `ue-decoder run` needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Which tracepoints to read, and how.
    pub reader: ReaderConfig,
    /// The signal each of `reader.tracepoints` carries, in the same order.
    pub signals: Vec<Signal>,
    /// When batches are sent.
    pub batch: BatchConfig,
    /// Where batches go.
    pub sinks: Vec<SinkConfig>,
    /// The most bytes each sink may hold queued.
    pub queue_bytes: usize,
    /// How long shutdown may spend sending what is queued and in flight.
    pub shutdown_deadline: Duration,
    /// How often the counters are logged (and exported, with `self_metrics`).
    pub stats_interval: Duration,
    /// Also send the decoder's counters as OTLP metrics through the sinks.
    pub self_metrics: bool,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The perf reader could not start (what is missing, and the fix, is in the message).
    #[error(transparent)]
    Reader(#[from] ReaderError),
    /// A sink could not start.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The configuration does not hold together.
    #[error("{0}")]
    Config(String),
}

/// Requests in flight between the reader thread and the batcher; bounded so that a stalled
/// batcher shows up as kernel-counted loss, not as unbounded memory.
const CHANNEL_REQUESTS: usize = 4096;

/// Opens the reader and the sinks, then forwards until `shutdown` resolves; then stops
/// reading, drains the rings, flushes every batch, waits for the sinks up to the deadline
/// and returns the final counters.
///
/// `ready` is called once the reader is attached: every event written after that is read or
/// counted as lost by the kernel.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&TracepointReader),
) -> Result<Snapshot, RunError> {
    if config.reader.tracepoints.len() != config.signals.len() {
        return Err(RunError::Config("one signal per tracepoint".into()));
    }
    if config.sinks.is_empty() {
        return Err(RunError::Config(
            "no sink: give an endpoint, --stdout or --file".into(),
        ));
    }
    let started = SystemTime::now();
    let stats = Arc::new(Stats::default());
    let sinks = Arc::new(SinkSet::start(
        config.sinks.clone(),
        config.queue_bytes,
        &tokio::runtime::Handle::current(),
    )?);
    let reader = TracepointReader::open(&config.reader)?;
    ready(&reader);

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(CHANNEL_REQUESTS);
    let reading = {
        let (stop, stats, signals) = (
            Arc::clone(&stop),
            Arc::clone(&stats),
            config.signals.clone(),
        );
        thread::Builder::new()
            .name("ue-reader".into())
            .spawn(move || read_loop(reader, &signals, &stop, &stats, &tx))
            .map_err(|e| RunError::Config(format!("cannot start the reader thread: {e}")))?
    };

    let mut batching = tokio::spawn(batch_loop(
        rx,
        config.batch,
        Arc::clone(&stats),
        Arc::clone(&sinks),
    ));
    let mut ticker = tokio::time::interval(config.stats_interval);
    ticker.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {
                let snap = stats.snapshot(sinks.snapshot());
                log_snapshot(&snap);
                if config.self_metrics {
                    let req = Request::Metrics(snap.to_otlp(started, SystemTime::now()));
                    sinks.submit(Arc::new(Batch::new(req)));
                }
            }
            // The reader thread ended by itself: a fatal read error, logged there.
            _ = &mut batching => {
                warn!("reading stopped; shutting down");
                break;
            }
        }
    }

    info!("shutting down: draining the rings and flushing batches");
    stop.store(true, Ordering::Release);
    // The reader drains what the rings still hold, then drops its sender, which ends the
    // batcher after its final flush.
    let _ = tokio::task::spawn_blocking(move || reading.join()).await;
    tracing::debug!("reader stopped");
    if !batching.is_finished() {
        let _ = batching.await;
    }
    tracing::debug!("batches flushed; waiting for the sinks");
    let sinks = Arc::into_inner(sinks).expect("the batcher, the only other owner, has ended");
    let sink_snapshots = sinks.shutdown(config.shutdown_deadline).await;
    Ok(stats.snapshot(sink_snapshots))
}

/// The reader thread: wait, drain, decode, hand on; after `stop`, one last drain.
fn read_loop(
    mut reader: TracepointReader,
    signals: &[Signal],
    stop: &AtomicBool,
    stats: &Stats,
    tx: &mpsc::Sender<Request>,
) {
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping && let Err(e) = reader.wait(Duration::from_millis(100)) {
            warn!("waiting on the perf rings failed: {e}");
            return;
        }
        let mut decoded = Vec::new();
        reader.drain(|event| {
            let signal = signals[event.index];
            match decode_event(signal, event.fields) {
                Ok(req) => {
                    let bytes = event.payload().map_or(0, |p| p.buffer.len());
                    stats.decoded(signal, bytes, req.items());
                    decoded.push(req);
                }
                Err(e) => {
                    stats.malformed(e.reason());
                    tracing::debug!(
                        tracepoint = event.tracepoint,
                        cpu = event.cpu,
                        "skipped event: {e}"
                    );
                }
            }
        });
        stats.set_reader_counts(reader.lost_by_cpu(), reader.malformed_records());
        for req in decoded {
            if tx.blocking_send(req).is_err() {
                return; // the batcher is gone: shutting down
            }
        }
        if stopping {
            return;
        }
    }
}

/// The batching task: merge requests, send due batches, flush at the end.
async fn batch_loop(
    mut rx: mpsc::Receiver<Request>,
    config: BatchConfig,
    stats: Arc<Stats>,
    sinks: Arc<SinkSet>,
) {
    let mut batcher = Batcher::new(config);
    let send = |batches: Vec<Batch>| {
        for b in batches {
            stats.batched(b.signal(), b.items);
            sinks.submit(Arc::new(b));
        }
    };
    loop {
        let deadline = batcher.next_deadline();
        tokio::select! {
            req = rx.recv() => match req {
                Some(req) => send(batcher.push(req, Instant::now())),
                None => break,
            },
            () = sleep_until(deadline) => send(batcher.poll(Instant::now())),
        }
    }
    send(batcher.flush());
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn log_snapshot(s: &Snapshot) {
    let get = |m: &std::collections::BTreeMap<Signal, u64>, sig| m.get(&sig).copied().unwrap_or(0);
    info!(
        metrics_events = get(&s.events, Signal::Metrics),
        metrics_items = get(&s.items, Signal::Metrics),
        traces_events = get(&s.events, Signal::Traces),
        traces_items = get(&s.items, Signal::Traces),
        malformed = s.malformed.values().sum::<u64>(),
        kernel_lost = s.kernel_lost_total(),
        sent_items = s.sinks.iter().map(|k| k.items_sent).sum::<u64>(),
        dropped_items = s
            .sinks
            .iter()
            .flat_map(|k| k.dropped_items.values())
            .sum::<u64>(),
        "counters"
    );
}
