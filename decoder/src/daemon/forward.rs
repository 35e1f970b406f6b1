//! The one forwarding path: decoded requests into a batching task, batches into the sinks,
//! and the shutdown that flushes both. [`run`](crate::run) feeds it from the reading
//! thread, [`forward_capture`] from a perf.data file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::stats::Stats;
use crate::batch::{Batch, BatchConfig, Batcher, Incoming};
use crate::capture::{PerfDataError, PerfDataReader};
use crate::sink::{DiskQueueConfig, SinkConfig, SinkError, SinkSet, SinkSnapshot};

/// Requests in flight between the producer (the reading thread) and the batcher; bounded so
/// that a stalled batcher shows up as loss the kernel counts, not as unbounded memory.
const CHANNEL_REQUESTS: usize = 4096;

/// How requests are batched and where the batches go.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardConfig {
    /// When batches are sent.
    pub batch: BatchConfig,
    /// Where batches go.
    pub sinks: Vec<SinkConfig>,
    /// The most bytes each sink may hold queued in memory.
    pub queue_bytes: usize,
    /// Each sink's queue on disk instead (`--queue-dir`), kept across restarts.
    pub disk_queue: Option<DiskQueueConfig>,
    /// How long shutdown may spend sending what is queued and in flight.
    pub shutdown_deadline: Duration,
}

impl Default for ForwardConfig {
    /// The Collector's batching, 64 MiB per sink queue, 10 s to shut down, and no sink yet.
    fn default() -> Self {
        Self {
            batch: BatchConfig::default(),
            sinks: Vec::new(),
            queue_bytes: 64 << 20,
            disk_queue: None,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// The batching task and the sinks, started on the current tokio runtime.
#[derive(Debug)]
pub(crate) struct Forwarder {
    tx: mpsc::Sender<Incoming>,
    batching: JoinHandle<()>,
    sinks: Arc<SinkSet>,
    shutdown_deadline: Duration,
}

impl Forwarder {
    /// Starts the sinks and the batching task; `stats` counts the batches.
    pub(crate) fn start(config: &ForwardConfig, stats: Arc<Stats>) -> Result<Self, SinkError> {
        let sinks = Arc::new(SinkSet::start_with_disk(
            config.sinks.clone(),
            config.queue_bytes,
            config.disk_queue.as_ref(),
            &tokio::runtime::Handle::current(),
        )?);
        let (tx, rx) = mpsc::channel(CHANNEL_REQUESTS);
        let batching = tokio::spawn(batch_loop(rx, config.batch, stats, Arc::clone(&sinks)));
        Ok(Self {
            tx,
            batching,
            sinks,
            shutdown_deadline: config.shutdown_deadline,
        })
    }

    /// Where requests go in; the batcher flushes and ends once every sender is dropped.
    pub(crate) fn sender(&self) -> mpsc::Sender<Incoming> {
        self.tx.clone()
    }

    /// The sinks, for their counters and for batches that need no batching.
    pub(crate) fn sinks(&self) -> &SinkSet {
        &self.sinks
    }

    /// Resolves if the batching task ends while senders remain: they all went away.
    pub(crate) async fn batching_ended(&mut self) {
        let _ = (&mut self.batching).await;
    }

    /// Flushes: drops this side's sender, waits for the batcher's final flush (once the
    /// other senders are gone too), then gives the sinks until the deadline to send what
    /// they hold. Returns the sinks' final counters.
    pub(crate) async fn finish(self) -> Vec<SinkSnapshot> {
        let Self {
            tx,
            batching,
            sinks,
            shutdown_deadline,
        } = self;
        drop(tx);
        if !batching.is_finished() {
            let _ = batching.await;
        }
        tracing::debug!("batches flushed; waiting for the sinks");
        let sinks = Arc::into_inner(sinks).expect("the batcher, the only other owner, has ended");
        sinks.shutdown(shutdown_deadline).await
    }
}

/// The batching task: merge requests, send due batches, flush at the end.
async fn batch_loop(
    mut rx: mpsc::Receiver<Incoming>,
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

/// Why a capture could not be forwarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// A sink could not start.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The capture could not be read to its end (what was read before was forwarded).
    #[error(transparent)]
    Capture(#[from] PerfDataError),
}

/// `ue-decoder decode --endpoint`: forwards every request of the capture through the
/// daemon's forwarding path (batched, each sink behind its queue) and waits for the sinks
/// up to the deadline. Returns the sinks' final counters; `reader`'s stats say what the
/// capture held.
pub async fn forward_capture(
    reader: &mut PerfDataReader,
    config: &ForwardConfig,
) -> Result<Vec<SinkSnapshot>, ForwardError> {
    let forwarder = Forwarder::start(config, Arc::new(Stats::default()))?;
    let tx = forwarder.sender();
    let mut read = Ok(());
    loop {
        match reader.next_event() {
            Ok(Some(event)) => {
                if tx.send(event.request.into()).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                read = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let sinks = forwarder.finish().await;
    read?;
    Ok(sinks)
}
