//! The running sinks: one worker task per sink, each sending its queue's batches, a few at
//! a time, with retries, and [`SinkSet`], which feeds and stops them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::archive::ArchiveStats;
use super::disk::{DiskQueue, sink_dir_name};
use super::queue::{SinkQueue, reason};
use super::retry::{Backoff, Rng};
use super::route::{Filter, RoutedSink};
use super::transport::{Outcome, Transport};
use super::{DiskQueueConfig, RetryConfig, SinkConfig, SinkError, SinkSnapshot};
use crate::batch::Batch;
use crate::decode::Signal;

/// A sink's worker: sends its queue's batches, up to `max_inflight` at once (each with
/// its own retries, acknowledged in any order), until the queue is closed and empty.
async fn work(
    queue: Arc<SinkQueue>,
    transport: Transport,
    retry: RetryConfig,
    mut rng: Rng,
    max_inflight: usize,
) {
    let transport = Arc::new(transport);
    let permits = Arc::new(Semaphore::new(max_inflight.max(1)));
    // Dropped with the worker: aborting it aborts the sends in flight.
    let mut sending = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let Some(batch) = queue.pop().await else {
            break;
        };
        let (queue, transport, retry) = (Arc::clone(&queue), Arc::clone(&transport), retry.clone());
        let rng = Rng::seeded(rng.next_u64());
        sending.spawn(async move {
            send(&queue, &transport, &retry, rng, batch).await;
            drop(permit);
        });
        // Reap what finished, so the set holds only what is in flight.
        while sending.try_join_next().is_some() {}
    }
    while sending.join_next().await.is_some() {}
    transport.close().await;
}

/// Sends one batch, retrying as configured, and counts the outcome.
async fn send(
    queue: &SinkQueue,
    transport: &Transport,
    retry: &RetryConfig,
    rng: Rng,
    batch: Arc<Batch>,
) {
    let sink = queue.name();
    let payload = match transport.encode(&batch) {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(%sink, items = batch.items, %error, "dropping a batch: cannot encode it");
            queue.dropped(&batch, reason::ENCODE, error);
            return;
        }
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(retry, rng);
    // The parts of the payload already delivered, for a sink that sends one in several
    // requests: a retry resumes after them.
    let mut done = 0;
    loop {
        match transport.send(&batch, &payload, &mut done).await {
            Outcome::Sent { rejected, message } => {
                if rejected > 0 {
                    tracing::warn!(%sink, rejected, %message, "the receiver rejected part of a batch");
                    queue.note_error(format!("partial success: {rejected} rejected: {message}"));
                }
                queue.sent(&batch, rejected);
                return;
            }
            Outcome::Taken { dropped } => {
                queue.taken(&batch, &dropped);
                return;
            }
            // The sink counted the batch as held, and counts its items as it goes.
            Outcome::Held => return,
            Outcome::Permanent(error) => {
                tracing::warn!(%sink, items = batch.items, %error, "dropping a batch: not retryable");
                queue.dropped(&batch, reason::PERMANENT_ERROR, error);
                return;
            }
            Outcome::Retry { error, after } => match backoff.next(started.elapsed(), after) {
                Some(wait) => {
                    tracing::debug!(%sink, ?wait, %error, "retrying a batch");
                    queue.retrying(error);
                    tokio::time::sleep(wait).await;
                }
                None => {
                    tracing::warn!(
                        %sink,
                        items = batch.items,
                        elapsed = ?started.elapsed(),
                        %error,
                        "dropping a batch: retries exhausted"
                    );
                    queue.dropped(&batch, reason::RETRIES_EXHAUSTED, error);
                    return;
                }
            },
        }
    }
}

struct Running {
    queue: Arc<SinkQueue>,
    worker: JoinHandle<()>,
    /// The archive's own counters, for an archive sink.
    archive: Option<ArchiveStats>,
}

impl Running {
    fn snapshot(&self) -> SinkSnapshot {
        let mut snapshot = self.queue.snapshot();
        snapshot.archive = self.archive.as_ref().map(ArchiveStats::snapshot);
        snapshot
    }
}

/// The running sinks. [`submit`](Self::submit) hands a batch to every one without waiting;
/// [`shutdown`](Self::shutdown) flushes them. Dropping the set without shutting it down
/// abandons whatever the sinks still hold.
pub struct SinkSet {
    sinks: Vec<Running>,
    /// Whether each sink takes batches of each signal, in [`Signal::ALL`]'s order.
    takes: Vec<[bool; Signal::ALL.len()]>,
    /// Each sink's filter of items.
    filters: Vec<Filter>,
}

impl fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| s.queue.name()))
            .finish()
    }
}

impl SinkSet {
    /// Starts one worker per sink on `rt`, each with a queue of at most `queue_bytes`
    /// bytes of batches. Nothing connects yet; a configuration that cannot work (a bad
    /// URL, header or retry setting, a file that cannot be opened) starts no sink.
    pub fn start(
        sinks: impl IntoIterator<Item = impl Into<RoutedSink>>,
        queue_bytes: usize,
        rt: &tokio::runtime::Handle,
    ) -> Result<SinkSet, SinkError> {
        Self::start_with_disk(sinks, queue_bytes, None, rt)
    }

    /// As [`start`](Self::start), with each sink's queue on disk if `disk` is given: in a
    /// subdirectory of `disk.dir` named after the sink, where a queue left by an earlier
    /// run is picked up and sent first. `queue_bytes` then bounds nothing: memory holds the
    /// batch in flight only.
    pub fn start_with_disk(
        sinks: impl IntoIterator<Item = impl Into<RoutedSink>>,
        queue_bytes: usize,
        disk: Option<&DiskQueueConfig>,
        rt: &tokio::runtime::Handle,
    ) -> Result<SinkSet, SinkError> {
        let sinks: Vec<RoutedSink> = sinks.into_iter().map(Into::into).collect();
        // tonic's lazy channel spawns its connection task where it is built.
        let _guard = rt.enter();
        let mut built = Vec::with_capacity(sinks.len());
        for sink in &sinks {
            let config = &sink.config;
            let (retry, max_inflight) = match config {
                SinkConfig::Otlp(c) => (c.retry.clone(), c.max_inflight),
                SinkConfig::ClickHouse(c) => (c.retry.clone(), c.max_inflight),
                // The archive retries each object itself (its config's retry), since a
                // batch it took in is not sent again.
                SinkConfig::Archive(c) => (
                    RetryConfig {
                        enabled: false,
                        ..RetryConfig::default()
                    },
                    c.max_inflight,
                ),
                // A write error is not a collector's backpressure: no retry.
                // Lines are written in order, one at a time; DogStatsD and Prometheus take
                // batches in order too. None has a failure worth retrying.
                SinkConfig::Stdout
                | SinkConfig::File(_)
                | SinkConfig::Statsd(_)
                | SinkConfig::Prometheus(_) => (
                    RetryConfig {
                        enabled: false,
                        ..RetryConfig::default()
                    },
                    1,
                ),
            };
            retry.validate().map_err(|reason| SinkError::InvalidRetry {
                sink: sink.name(),
                reason,
            })?;
            built.push((sink.name(), Transport::new(config)?, retry, max_inflight));
        }
        let mut queues = Vec::with_capacity(built.len());
        let mut dirs: Vec<String> = Vec::new();
        for (name, _, _, _) in &built {
            let Some(disk) = disk else {
                queues.push(SinkQueue::new(name.clone(), queue_bytes));
                continue;
            };
            // Two sinks of the same name (the same endpoint twice) each get their own.
            let base = sink_dir_name(name);
            let mut dir = base.clone();
            let mut n = 1;
            while dirs.contains(&dir) {
                n += 1;
                dir = format!("{base}-{n}");
            }
            let queue = DiskQueue::open(name, disk.dir.join(&dir), disk)?;
            dirs.push(dir);
            queues.push(SinkQueue::on_disk(name.clone(), queue));
        }
        let mut seeds = Rng::from_entropy();
        let running = built
            .into_iter()
            .zip(queues)
            .map(|((_, transport, retry, max_inflight), queue)| {
                // A queue on disk acknowledges its batches in order: one in flight.
                let max_inflight = if queue.is_on_disk() { 1 } else { max_inflight };
                let queue = Arc::new(queue);
                transport.bind(&queue);
                let archive = transport.archive_stats();
                let rng = Rng::seeded(seeds.next_u64());
                let worker = rt.spawn(work(
                    Arc::clone(&queue),
                    transport,
                    retry,
                    rng,
                    max_inflight,
                ));
                Running {
                    queue,
                    worker,
                    archive,
                }
            })
            .collect();
        let takes = sinks
            .iter()
            .map(|c| Signal::ALL.map(|s| c.takes(s)))
            .collect();
        let filters = sinks.into_iter().map(|s| s.route.filter).collect();
        Ok(SinkSet {
            sinks: running,
            takes,
            filters,
        })
    }

    /// Queues `batch` on every sink that takes its signal, never waiting: a sink whose
    /// queue it would take past its byte limit counts it dropped (`queue_full`) instead. A
    /// sink with a filter gets what its filter keeps, and counts what it left out.
    pub fn submit(&self, batch: Arc<Batch>) {
        let signal = Signal::ALL.iter().position(|s| *s == batch.signal());
        for ((sink, takes), filter) in self.sinks.iter().zip(&self.takes).zip(&self.filters) {
            if signal.is_some_and(|i| !takes[i]) {
                continue;
            }
            let (kept, left_out) = filter.apply(&batch);
            if left_out > 0 {
                sink.queue.filtered(left_out);
            }
            if let Some(kept) = kept {
                sink.queue.push(kept);
            }
        }
    }

    /// Stops accepting batches and lets every sink send what it holds, retries included,
    /// until `deadline` from now; whatever is still queued or in flight then is counted
    /// dropped (`shutdown`). Returns the final counters.
    pub async fn shutdown(mut self, deadline: Duration) -> Vec<SinkSnapshot> {
        let mut sinks = std::mem::take(&mut self.sinks);
        for sink in &sinks {
            sink.queue.close();
        }
        let until = Instant::now() + deadline;
        for sink in &mut sinks {
            tracing::debug!(sink = %sink.queue.name(), "waiting for the sink's worker");
            if tokio::time::timeout_at(until, &mut sink.worker)
                .await
                .is_err()
            {
                sink.worker.abort();
                // Wait for the abort to land so the worker no longer touches the queue.
                let _ = (&mut sink.worker).await;
            }
            tracing::debug!(sink = %sink.queue.name(), "worker done");
            let left = sink.queue.abandon();
            if left > 0 {
                tracing::warn!(
                    sink = %sink.queue.name(),
                    items = left,
                    "shutdown deadline passed: dropping what the sink still held"
                );
            }
        }
        sinks.iter().map(Running::snapshot).collect()
    }

    /// Every sink's counters now, in the order of the configurations.
    pub fn snapshot(&self) -> Vec<SinkSnapshot> {
        self.sinks.iter().map(Running::snapshot).collect()
    }
}

impl Drop for SinkSet {
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.queue.close();
            sink.worker.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::decode::Request;
    use crate::sink::{OtlpConfig, Protocol};

    #[test]
    fn names_say_kind_and_destination() {
        assert_eq!(
            SinkConfig::Otlp(OtlpConfig::default()).name(),
            "otlp-http http://localhost:4318"
        );
        assert_eq!(
            SinkConfig::Otlp(OtlpConfig::new(Protocol::Grpc)).name(),
            "otlp-grpc http://localhost:4317"
        );
        assert_eq!(SinkConfig::Stdout.name(), "stdout");
        assert_eq!(
            SinkConfig::File("/tmp/x.jsonl".into()).name(),
            "file /tmp/x.jsonl"
        );
    }

    #[tokio::test]
    async fn a_bad_config_starts_nothing() {
        let rt = tokio::runtime::Handle::current();
        let bad_retry = SinkConfig::Otlp(OtlpConfig {
            retry: RetryConfig {
                multiplier: 0.0,
                ..RetryConfig::default()
            },
            ..OtlpConfig::default()
        });
        let err = SinkSet::start(vec![SinkConfig::Stdout, bad_retry], 1000, &rt).unwrap_err();
        assert!(matches!(err, SinkError::InvalidRetry { .. }), "{err}");
        let bad_url = SinkConfig::Otlp(OtlpConfig {
            endpoint: "http://bad host:1".into(),
            ..OtlpConfig::new(Protocol::Grpc)
        });
        let err = SinkSet::start(vec![bad_url], 1000, &rt).unwrap_err();
        assert!(err.to_string().contains("bad host"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_queued() {
        let dir = std::env::temp_dir().join(format!("ue-decoder-sinkset-{}", std::process::id()));
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Handle::current();
        let set = SinkSet::start(vec![SinkConfig::File(path.clone())], 1 << 20, &rt).unwrap();
        let batch = Arc::new(Batch::new(Request::Traces(
            ExportTraceServiceRequest::default(),
        )));
        for _ in 0..3 {
            set.submit(Arc::clone(&batch));
        }
        let snaps = set.shutdown(Duration::from_secs(5)).await;
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].batches_sent, 3);
        assert_eq!(snaps[0].dropped_total(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
