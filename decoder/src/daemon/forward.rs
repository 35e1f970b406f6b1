//! The one forwarding path: batches, made by whoever reads (the reading thread of
//! [`run`](crate::run), or [`forward_capture`] from a perf.data file), compressed by a
//! small pool of threads off the reader, then queued on every sink; and the shutdown that
//! flushes them all.
//!
//! ```text
//! reader: check, append into a Batcher --> compression pool --> SinkSet --> sinks
//! ```

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::stats::Stats;
use crate::batch::{Batch, BatchConfig, Batcher, Incoming};
use crate::capture::{Next, PerfDataError, PerfDataReader};
use crate::sink::{
    Compression, DiskQueueConfig, RoutedSink, SinkConfig, SinkError, SinkSet, SinkSnapshot,
    compressed_body,
};

/// Batches waiting for a compression thread, per thread: enough to keep each busy while
/// the reader fills the next, few enough that memory stays a handful of batches.
const POOL_QUEUE_PER_THREAD: usize = 1;

/// How requests are batched and where the batches go.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardConfig {
    /// When batches are sent.
    pub batch: BatchConfig,
    /// Where batches go (a [`SinkConfig`] converts into a sink that takes everything).
    pub sinks: Vec<RoutedSink>,
    /// The most bytes each sink may hold queued in memory.
    pub queue_bytes: usize,
    /// Each sink's queue on disk instead (`--queue-dir`), kept across restarts.
    pub disk_queue: Option<DiskQueueConfig>,
    /// How long shutdown may spend sending what is queued and in flight.
    pub shutdown_deadline: Duration,
    /// Threads compressing batches for the sinks that compress, so that the reader never
    /// spends its time compressing (at least 1).
    pub compression_threads: usize,
}

impl Default for ForwardConfig {
    /// The Collector's batching, 64 MiB per sink queue, 10 s to shut down, 2 compression
    /// threads, and no sink yet.
    fn default() -> Self {
        Self {
            batch: BatchConfig::default(),
            sinks: Vec::new(),
            queue_bytes: 64 << 20,
            disk_queue: None,
            shutdown_deadline: Duration::from_secs(10),
            compression_threads: 2,
        }
    }
}

/// The compression pool and the sinks, started on the current tokio runtime.
#[derive(Debug)]
pub(crate) struct Forwarder {
    submitter: Submitter,
    pool: Vec<JoinHandle<()>>,
    sinks: Arc<SinkSet>,
    shutdown_deadline: Duration,
}

/// Where a reader hands its batches: to the compression pool, or straight to the sinks
/// when none compresses. Cloned into each reading thread.
#[derive(Clone, Debug)]
pub(crate) struct Submitter {
    pool: Option<SyncSender<Batch>>,
    sinks: Arc<SinkSet>,
    stats: Arc<Stats>,
}

impl Submitter {
    /// Counts `batch` and passes it on; waits (on a blocking thread) only while every
    /// compression thread is busy and their queue is full, which holds the reader back
    /// as a full ring would.
    pub(crate) fn submit(&self, batch: Batch) {
        self.stats.batched(batch.signal(), batch.items);
        match &self.pool {
            Some(pool) => {
                if let Err(TrySendError::Full(batch)) = pool.try_send(batch) {
                    let _ = pool.send(batch);
                }
            }
            None => self.sinks.submit(Arc::new(batch)),
        }
    }

    /// The sinks' bytes queued, the most of any sink.
    fn most_queued(&self) -> u64 {
        self.sinks
            .snapshot()
            .iter()
            .map(|s| s.queue_bytes)
            .max()
            .unwrap_or(0)
    }
}

/// A compression thread: compresses each batch once per algorithm the sinks use (the
/// sinks share the result), then queues it on every sink.
fn compress_loop(rx: &Mutex<Receiver<Batch>>, compressions: &[Compression], sinks: &SinkSet) {
    loop {
        let batch = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(batch) => batch,
            Err(_) => return, // every submitter is gone
        };
        for c in compressions {
            // A failure is the sink's to report, when it encodes the batch again.
            let _ = compressed_body(&batch, *c);
        }
        sinks.submit(Arc::new(batch));
    }
}

impl Forwarder {
    /// Starts the sinks and the compression threads; `stats` counts the batches.
    pub(crate) fn start(config: &ForwardConfig, stats: Arc<Stats>) -> Result<Self, SinkError> {
        let sinks = Arc::new(SinkSet::start_with_disk(
            config.sinks.clone(),
            config.queue_bytes,
            config.disk_queue.as_ref(),
            &tokio::runtime::Handle::current(),
        )?);
        let mut compressions = Vec::new();
        for sink in &config.sinks {
            if let SinkConfig::Otlp(c) = &sink.config
                && c.compression != Compression::None
                && !compressions.contains(&c.compression)
            {
                compressions.push(c.compression);
            }
        }
        let mut pool = Vec::new();
        let mut sender = None;
        if !compressions.is_empty() {
            let threads = config.compression_threads.max(1);
            let (tx, rx) = sync_channel(threads * POOL_QUEUE_PER_THREAD);
            let rx = Arc::new(Mutex::new(rx));
            let compressions = Arc::new(compressions);
            for i in 0..threads {
                let (rx, compressions, sinks) = (
                    Arc::clone(&rx),
                    Arc::clone(&compressions),
                    Arc::clone(&sinks),
                );
                let spawned = thread::Builder::new()
                    .name(format!("ue-compress-{i}"))
                    .spawn(move || compress_loop(&rx, &compressions, &sinks));
                match spawned {
                    Ok(handle) => pool.push(handle),
                    // Fewer threads still work; none at all is reported below.
                    Err(e) => tracing::warn!("cannot start a compression thread: {e}"),
                }
            }
            // With no thread at all, each sink compresses in its own worker.
            if !pool.is_empty() {
                sender = Some(tx);
            }
        }
        Ok(Self {
            submitter: Submitter {
                pool: sender,
                sinks: Arc::clone(&sinks),
                stats,
            },
            pool,
            sinks,
            shutdown_deadline: config.shutdown_deadline,
        })
    }

    /// Where readers hand their batches.
    pub(crate) fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// The sinks, for their counters and for batches that need no batching.
    pub(crate) fn sinks(&self) -> &SinkSet {
        &self.sinks
    }

    /// Flushes: once every other submitter is dropped (the readers have ended), lets the
    /// compression threads finish what they hold, then gives the sinks until the deadline
    /// to send what they hold. Returns the sinks' final counters.
    pub(crate) async fn finish(self) -> Vec<SinkSnapshot> {
        let Self {
            submitter,
            pool,
            sinks,
            shutdown_deadline,
        } = self;
        drop(submitter);
        let _ = tokio::task::spawn_blocking(move || {
            for handle in pool {
                let _ = handle.join();
            }
        })
        .await;
        tracing::debug!("batches compressed and queued; waiting for the sinks");
        match Arc::try_unwrap(sinks) {
            Ok(sinks) => sinks.shutdown(shutdown_deadline).await,
            // A reader still runs: only when the runtime itself is shutting down under
            // the daemon, which then cannot wait for anything.
            Err(sinks) => {
                tracing::warn!("a reader outlived the shutdown; not waiting for the sinks");
                sinks.snapshot()
            }
        }
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
/// daemon's forwarding path (checked, appended into batches without being decoded, each
/// sink behind its queue) and waits for the sinks up to the deadline. Reading waits while
/// a sink holds more than 8 MiB queued (on a multi-threaded runtime), so memory stays
/// bounded whatever the capture's size and however slow the receiver: a file, unlike a
/// ring, can wait. Returns the sinks' final counters; `reader`'s stats say what the capture
/// held.
pub async fn forward_capture(
    reader: &mut PerfDataReader,
    config: &ForwardConfig,
) -> Result<Vec<SinkSnapshot>, ForwardError> {
    let forwarder = Forwarder::start(config, Arc::new(Stats::default()))?;
    let submitter = forwarder.submitter();
    let batch_config = config.batch;
    // Reading and checking are CPU work, and waiting for the sinks blocks: off the
    // runtime's workers, which send. On a single-threaded runtime the sinks cannot run
    // while this reads, so it reads without waiting for them.
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let mut read_all = || {
        let mut batcher = Batcher::new(batch_config);
        let mut due = Vec::new();
        let read = loop {
            let more = reader.next_request(&mut |next| {
                let now = Instant::now();
                due.extend(match next {
                    Next::Checked {
                        signal,
                        request,
                        items,
                    } => batcher.push_protobuf(signal, request, items, now),
                    Next::Event(event) => batcher.push(Incoming::Decoded(event.request), now),
                });
            });
            for batch in due.drain(..) {
                while multi_thread && submitter.most_queued() > CAPTURE_QUEUE_BYTES {
                    thread::sleep(Duration::from_millis(2));
                }
                submitter.submit(batch);
            }
            match more {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        for batch in batcher.flush() {
            submitter.submit(batch);
        }
        read
    };
    let read = if multi_thread {
        tokio::task::block_in_place(read_all)
    } else {
        read_all()
    };
    drop(submitter);
    let sinks = forwarder.finish().await;
    read?;
    Ok(sinks)
}

/// The most bytes a sink may hold queued before [`forward_capture`] waits for it.
const CAPTURE_QUEUE_BYTES: u64 = 8 << 20;
