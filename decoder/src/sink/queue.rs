//! One sink's queue, bounded in bytes, and its counters, behind one lock so a snapshot is
//! consistent. The reader's thread pushes without ever waiting on the network; the sink's
//! worker pops.
//!
//! The queue is in memory, or on disk ([`DiskQueue`], `--queue-dir`): then a push appends
//! the batch to the sink's files, a pop reads the oldest one back, and a batch leaves the
//! files only once sent (or dropped for good), so a shutdown leaves the rest for the next
//! start instead of dropping it. Memory then holds only the batch in flight.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::ArchiveSnapshot;
use super::disk::{AppendError, DiskQueue, DiskSnapshot, is_disk_full};
use crate::batch::Batch;

/// A point-in-time copy of one sink's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkSnapshot {
    /// The sink's name, e.g. `otlp-http http://127.0.0.1:4318`.
    pub name: String,
    /// Batches the receiver accepted, partially or wholly.
    pub batches_sent: u64,
    /// Data points or spans the receiver accepted (a partial success's rejected ones are
    /// in `rejected_items` instead).
    pub items_sent: u64,
    /// Protobuf bytes of the batches sent, before compression.
    pub bytes_sent: u64,
    /// Attempts that failed in a retryable way and were tried again.
    pub retries: u64,
    /// Items the receiver reported rejected in a partial success (never retried).
    pub rejected_items: u64,
    /// Items the sink's filter left out (not dropped: the sink was configured not to take
    /// them).
    pub filtered_items: u64,
    /// Items dropped, by reason: `queue_full`, `retries_exhausted`, `permanent_error`,
    /// `shutdown`, `encode` (the archive's items too, when it could not write them); the Prometheus sink's points by its own reasons
    /// (`series_limit`, `out_of_order`, `type_conflict`, `delta_updown`, `invalid`), without
    /// dropping their batch.
    pub dropped_items: BTreeMap<&'static str, u64>,
    /// Batches dropped, by the same reasons.
    pub dropped_batches: BTreeMap<&'static str, u64>,
    /// Bytes queued, waiting to be sent (the batches in flight not included); on disk for a
    /// queue on disk.
    pub queue_bytes: u64,
    /// The on-disk queue's own counters, if the sink has one.
    pub disk: Option<DiskSnapshot>,
    /// Items the sink took from its queue and holds, not yet written nor dropped (the
    /// archive's open traces and the objects it is writing).
    pub held_items: u64,
    /// The archive's own counters, for an archive sink.
    pub archive: Option<ArchiveSnapshot>,
    /// The last failure, retried or not, or the last partial success's message.
    pub last_error: Option<String>,
    /// How long every attempt has failed since the last success (`None`: the last attempt
    /// succeeded, or none was made).
    pub failing_for: Option<std::time::Duration>,
}

impl SinkSnapshot {
    /// Items dropped for `reason` (zero if none).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped_items.get(reason).copied().unwrap_or(0)
    }

    /// Items dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_items.values().sum()
    }
}

impl std::fmt::Display for SinkSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sink {}: sent {} batches, {} items, {} bytes; retries {}; rejected {}; dropped {:?}; queued {} bytes",
            self.name,
            self.batches_sent,
            self.items_sent,
            self.bytes_sent,
            self.retries,
            self.rejected_items,
            self.dropped_items,
            self.queue_bytes,
        )?;
        if self.filtered_items > 0 {
            write!(f, "; filtered out {} items", self.filtered_items)?;
        }
        if let Some(d) = &self.disk {
            write!(
                f,
                "; on disk {} bytes in {}, replayed {} batches ({} items), possible duplicates {} batches ({} items), corrupt {} records ({} bytes), torn tail {} bytes",
                d.file_bytes,
                d.dir.display(),
                d.replayed_batches,
                d.replayed_items,
                d.possible_duplicate_batches,
                d.possible_duplicate_items,
                d.corrupt_records,
                d.corrupt_bytes,
                d.truncated_bytes,
            )?;
        }
        if self.held_items > 0 {
            write!(f, "; held {} items", self.held_items)?;
        }
        if let Some(a) = &self.archive {
            write!(
                f,
                "; archived {} objects ({} bytes, {} of late spans), traces written {:?}, open {} traces ({} spans, {} bytes), notifications sent {} failed {:?}",
                a.objects,
                a.object_bytes,
                a.late_objects,
                a.traces_flushed,
                a.open_traces,
                a.buffered_spans,
                a.buffered_bytes,
                a.notifications_sent,
                a.notifications_failed,
            )?;
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {e}")?;
        }
        Ok(())
    }
}

/// Why a batch was dropped: the keys of [`SinkSnapshot::dropped_items`].
pub(crate) mod reason {
    /// The sink's queue had no room.
    pub(crate) const QUEUE_FULL: &str = "queue_full";
    /// Retryable failures until `max_elapsed` (or retries disabled).
    pub(crate) const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// A failure that retrying cannot fix (HTTP 400, gRPC INVALID_ARGUMENT, a write error).
    pub(crate) const PERMANENT_ERROR: &str = "permanent_error";
    /// Still queued or in flight when the shutdown deadline passed.
    pub(crate) const SHUTDOWN: &str = "shutdown";
    /// The batch could not be encoded for this sink.
    pub(crate) const ENCODE: &str = "encode";
    /// The disk of the sink's on-disk queue is full (`ENOSPC`, `EDQUOT`).
    pub(crate) const DISK_FULL: &str = "disk_full";
    /// Any other failure to write to the sink's on-disk queue.
    pub(crate) const DISK_ERROR: &str = "disk_error";
}

/// A sink's queue and counters, shared by [`super::SinkSet`] and the sink's worker.
#[derive(Debug)]
pub(crate) struct SinkQueue {
    name: String,
    limit: usize,
    state: Mutex<State>,
    /// Wakes the worker on a push or on close.
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<Batch>>,
    queued_bytes: usize,
    /// Popped and not yet finished: counted as dropped if the worker is stopped.
    in_flight: Vec<Arc<Batch>>,
    /// Where the batches are kept instead of `queue`, if on disk.
    disk: Option<DiskQueue>,
    closed: bool,
    /// Whether the last push was dropped, so a run of drops warns once.
    dropping: bool,
    /// Items taken in by a sink that writes them later, not yet written nor lost.
    held: u64,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    batches_sent: u64,
    items_sent: u64,
    bytes_sent: u64,
    retries: u64,
    rejected_items: u64,
    filtered_items: u64,
    dropped_items: BTreeMap<&'static str, u64>,
    dropped_batches: BTreeMap<&'static str, u64>,
    last_error: Option<String>,
    /// The first failure since the last success.
    failing_since: Option<std::time::Instant>,
}

impl State {
    /// `batch` is no longer in flight. A queue on disk, which its sink works with one batch
    /// in flight, acknowledges it in its files.
    fn finished(&mut self, batch: &Batch) {
        if let Some(i) = self
            .in_flight
            .iter()
            .position(|b| std::ptr::eq(&**b, batch))
        {
            self.in_flight.swap_remove(i);
        }
        if let Some(disk) = &mut self.disk {
            disk.ack();
        }
    }
}

impl Stats {
    fn failed(&mut self, error: String) {
        self.last_error = Some(error);
        self.failing_since
            .get_or_insert_with(std::time::Instant::now);
    }

    fn drop_batch(&mut self, batch: &Batch, reason: &'static str) {
        *self.dropped_items.entry(reason).or_default() += batch.items;
        *self.dropped_batches.entry(reason).or_default() += 1;
    }
}

impl SinkQueue {
    /// An empty queue holding at most `limit` bytes of batches.
    pub(crate) fn new(name: String, limit: usize) -> Self {
        Self {
            name,
            limit,
            state: Mutex::default(),
            notify: Notify::new(),
        }
    }

    /// A queue kept in `disk`, which bounds its bytes; memory holds the batch in flight.
    pub(crate) fn on_disk(name: String, disk: DiskQueue) -> Self {
        let queue = Self::new(name, 0);
        queue.lock().disk = Some(disk);
        if !queue.lock().disk.as_ref().is_some_and(DiskQueue::is_empty) {
            queue.notify.notify_one();
        }
        queue
    }

    /// The sink's name, as in its snapshot.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a panic elsewhere while
        // holding the lock (there is none) would not make the counters wrong.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch`, or counts it dropped (`queue_full`, or `shutdown` once closed) if
    /// its bytes would take the queue past its limit. A batch larger than the whole limit
    /// still goes into an empty queue: refusing it would make it unsendable forever, and
    /// memory stays bounded by one batch.
    pub(crate) fn push(&self, batch: Arc<Batch>) -> bool {
        let mut s = self.lock();
        if s.closed {
            s.stats.drop_batch(&batch, reason::SHUTDOWN);
            return false;
        }
        if let Some(disk) = &mut s.disk {
            let appended = disk.append(&batch);
            return self.appended(s, &batch, appended);
        }
        if !s.queue.is_empty() && s.queued_bytes + batch.bytes > self.limit {
            s.stats.drop_batch(&batch, reason::QUEUE_FULL);
            let first = !s.dropping;
            s.dropping = true;
            let queued = s.queued_bytes;
            drop(s);
            if first {
                tracing::warn!(
                    sink = %self.name,
                    queued_bytes = queued,
                    limit = self.limit,
                    "sink queue full, dropping batches until it drains"
                );
            }
            return false;
        }
        let recovered = std::mem::take(&mut s.dropping);
        s.queued_bytes += batch.bytes;
        s.queue.push_back(batch);
        drop(s);
        self.notify.notify_one();
        if recovered {
            tracing::info!(sink = %self.name, "sink queue accepting batches again");
        }
        true
    }

    /// Counts the outcome of appending `batch` to the queue on disk, warning once per run
    /// of drops.
    fn appended(
        &self,
        mut s: MutexGuard<'_, State>,
        batch: &Batch,
        appended: Result<(), AppendError>,
    ) -> bool {
        let error = match appended {
            Ok(()) => {
                let recovered = std::mem::take(&mut s.dropping);
                drop(s);
                self.notify.notify_one();
                if recovered {
                    tracing::info!(sink = %self.name, "sink queue on disk accepting batches again");
                }
                return true;
            }
            Err(e) => e,
        };
        let reason = match &error {
            AppendError::Full => reason::QUEUE_FULL,
            AppendError::Io(e) if is_disk_full(e) => reason::DISK_FULL,
            AppendError::Io(_) => reason::DISK_ERROR,
        };
        s.stats.drop_batch(batch, reason);
        let first = !std::mem::replace(&mut s.dropping, true);
        let queued = s.disk.as_ref().map_or(0, DiskQueue::pending_bytes);
        drop(s);
        if first {
            match error {
                AppendError::Full => tracing::warn!(
                    sink = %self.name,
                    queued_bytes = queued,
                    "sink queue on disk full (its --queue-max-bytes), dropping batches until it drains"
                ),
                AppendError::Io(e) => tracing::warn!(
                    sink = %self.name,
                    error = %e,
                    reason,
                    "cannot append to the sink's queue on disk, dropping batches until it can (nothing is kept in memory instead)"
                ),
            }
        }
        false
    }

    /// Whether the batches are kept on disk.
    pub(crate) fn is_on_disk(&self) -> bool {
        self.lock().disk.is_some()
    }

    /// Waits for the next batch and marks it in flight; `None` once closed and empty.
    pub(crate) async fn pop(&self) -> Option<Arc<Batch>> {
        loop {
            {
                let mut s = self.lock();
                if let Some(disk) = &mut s.disk {
                    if let Some(batch) = disk.next() {
                        let batch = Arc::new(batch);
                        s.in_flight.push(Arc::clone(&batch));
                        return Some(batch);
                    }
                } else if let Some(batch) = s.queue.pop_front() {
                    s.queued_bytes -= batch.bytes;
                    s.in_flight.push(Arc::clone(&batch));
                    return Some(batch);
                }
                if s.closed {
                    return None;
                }
            }
            // A push between the unlock and here leaves a permit, so this cannot miss it.
            self.notify.notified().await;
        }
    }

    /// Stops accepting batches; the worker still drains what is queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// The in-flight batch was accepted, `rejected` of its items refused by the receiver.
    pub(crate) fn sent(&self, batch: &Batch, rejected: u64) {
        let mut s = self.lock();
        s.finished(batch);
        s.stats.batches_sent += 1;
        s.stats.items_sent += batch.items.saturating_sub(rejected);
        s.stats.bytes_sent += batch.bytes as u64;
        s.stats.rejected_items += rejected;
        s.stats.failing_since = None;
    }

    /// The in-flight batch was taken in by a sink that keeps state, but for the items in
    /// `dropped`, which are counted dropped by reason (the batch is not).
    pub(crate) fn taken(&self, batch: &Batch, dropped: &BTreeMap<&'static str, u64>) {
        let lost: u64 = dropped.values().sum();
        let mut s = self.lock();
        s.finished(batch);
        s.stats.batches_sent += 1;
        s.stats.items_sent += batch.items.saturating_sub(lost);
        s.stats.bytes_sent += batch.bytes as u64;
        for (reason, items) in dropped {
            *s.stats.dropped_items.entry(reason).or_default() += items;
        }
        s.stats.failing_since = None;
    }

    /// The in-flight batch was taken in by a sink that writes its `items` later, and
    /// counts them then ([`written`](Self::written), [`lost`](Self::lost)); counted among
    /// the batches sent, its bytes too.
    pub(crate) fn hold(&self, batch: &Batch, items: u64) {
        let mut s = self.lock();
        s.finished(batch);
        s.stats.batches_sent += 1;
        s.stats.bytes_sent += batch.bytes as u64;
        s.held += items;
    }

    /// `items` held were written.
    pub(crate) fn written(&self, items: u64) {
        let mut s = self.lock();
        s.held = s.held.saturating_sub(items);
        s.stats.items_sent += items;
        s.stats.failing_since = None;
    }

    /// `items` held were dropped for `reason` after `error`.
    pub(crate) fn lost(&self, items: u64, reason: &'static str, error: String) {
        let mut s = self.lock();
        s.held = s.held.saturating_sub(items);
        *s.stats.dropped_items.entry(reason).or_default() += items;
        s.stats.failed(error);
    }

    /// The in-flight batch was dropped for `reason` after `error`.
    pub(crate) fn dropped(&self, batch: &Batch, reason: &'static str, error: String) {
        let mut s = self.lock();
        s.finished(batch);
        s.stats.drop_batch(batch, reason);
        s.stats.failed(error);
    }

    /// The in-flight batch will be tried again after `error`.
    pub(crate) fn retrying(&self, error: String) {
        let mut s = self.lock();
        s.stats.retries += 1;
        s.stats.failed(error);
    }

    /// The sink's filter left out `items` of a batch.
    pub(crate) fn filtered(&self, items: u64) {
        self.lock().stats.filtered_items += items;
    }

    /// Keeps `error` as the last one without changing a count (a partial success).
    pub(crate) fn note_error(&self, error: String) {
        self.lock().stats.last_error = Some(error);
    }

    /// Counts everything still queued or in flight as dropped at shutdown; call once the
    /// worker has stopped. A queue on disk keeps it all for the next start instead, and
    /// counts nothing.
    pub(crate) fn abandon(&self) -> u64 {
        let mut s = self.lock();
        s.closed = true;
        // What a sink held in memory is gone, whether or not the queue is on disk.
        let held = std::mem::take(&mut s.held);
        if held > 0 {
            *s.stats.dropped_items.entry(reason::SHUTDOWN).or_default() += held;
        }
        if s.disk.is_some() {
            s.in_flight.clear();
        }
        if let Some(disk) = &mut s.disk {
            disk.release();
            let left = disk.pending_bytes();
            if left > 0 {
                tracing::info!(
                    sink = %self.name,
                    bytes = left,
                    "batches not sent stay queued on disk for the next start"
                );
            }
            return held;
        }
        let mut left: Vec<Arc<Batch>> = std::mem::take(&mut s.in_flight);
        left.extend(s.queue.drain(..));
        s.queued_bytes = 0;
        let mut items = held;
        for batch in &left {
            s.stats.drop_batch(batch, reason::SHUTDOWN);
            items += batch.items;
        }
        items
    }

    /// The sink's counters now.
    pub(crate) fn snapshot(&self) -> SinkSnapshot {
        let s = self.lock();
        SinkSnapshot {
            name: self.name.clone(),
            batches_sent: s.stats.batches_sent,
            items_sent: s.stats.items_sent,
            bytes_sent: s.stats.bytes_sent,
            retries: s.stats.retries,
            rejected_items: s.stats.rejected_items,
            filtered_items: s.stats.filtered_items,
            dropped_items: s.stats.dropped_items.clone(),
            dropped_batches: s.stats.dropped_batches.clone(),
            queue_bytes: s
                .disk
                .as_ref()
                .map_or(s.queued_bytes as u64, DiskQueue::pending_bytes),
            disk: s.disk.as_ref().map(DiskQueue::snapshot),
            held_items: s.held,
            archive: None,
            last_error: s.stats.last_error.clone(),
            failing_for: s.stats.failing_since.map(|t| t.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::decode::Request;

    /// A batch of `spans` spans whose byte size is set to `bytes`, to make limits exact.
    fn batch(spans: usize, bytes: usize) -> Arc<Batch> {
        let request = Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); spans],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let mut b = Batch::new(request);
        b.bytes = bytes;
        Arc::new(b)
    }

    #[test]
    fn accepts_up_to_the_limit_then_counts_queue_full() {
        let q = SinkQueue::new("t".into(), 100);
        assert!(q.push(batch(1, 40)));
        assert!(q.push(batch(2, 60)));
        assert_eq!(q.snapshot().queue_bytes, 100);
        assert!(!q.push(batch(3, 1)));
        assert!(!q.push(batch(4, 50)));
        let s = q.snapshot();
        assert_eq!(s.queue_bytes, 100, "drops do not count as queued");
        assert_eq!(s.dropped_items[reason::QUEUE_FULL], 7);
        assert_eq!(s.dropped_batches[reason::QUEUE_FULL], 2);
    }

    #[tokio::test]
    async fn popping_frees_bytes_and_marks_in_flight() {
        let q = SinkQueue::new("t".into(), 100);
        q.push(batch(1, 70));
        q.push(batch(1, 30));
        let first = q.pop().await.unwrap();
        assert_eq!(first.bytes, 70);
        assert_eq!(q.snapshot().queue_bytes, 30);
        assert!(q.push(batch(5, 70)), "room again once popped");
        q.sent(&first, 0);
        let s = q.snapshot();
        assert_eq!((s.batches_sent, s.items_sent, s.bytes_sent), (1, 1, 70));
    }

    #[test]
    fn an_oversized_batch_enters_only_an_empty_queue() {
        let q = SinkQueue::new("t".into(), 10);
        assert!(q.push(batch(1, 500)));
        assert!(!q.push(batch(1, 500)));
        assert!(!q.push(batch(1, 1)), "over the limit already");
        assert_eq!(q.snapshot().dropped_batches[reason::QUEUE_FULL], 2);
    }

    #[tokio::test]
    async fn partial_success_splits_items() {
        let q = SinkQueue::new("t".into(), 100);
        q.push(batch(10, 10));
        let b = q.pop().await.unwrap();
        q.sent(&b, 3);
        let s = q.snapshot();
        assert_eq!((s.items_sent, s.rejected_items), (7, 3));
    }

    #[tokio::test]
    async fn close_lets_the_worker_drain_then_stops_it() {
        let q = SinkQueue::new("t".into(), 100);
        q.push(batch(1, 10));
        q.close();
        assert!(!q.push(batch(2, 10)));
        assert_eq!(q.snapshot().dropped_items[reason::SHUTDOWN], 2);
        assert!(q.pop().await.is_some());
        assert!(q.pop().await.is_none());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = Arc::new(SinkQueue::new("t".into(), 100));
        let worker = tokio::spawn({
            let q = Arc::clone(&q);
            async move { q.pop().await.map(|b| b.items) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!worker.is_finished());
        q.push(batch(4, 1));
        assert_eq!(worker.await.unwrap(), Some(4));
    }

    #[tokio::test]
    async fn abandon_counts_queued_and_in_flight() {
        let q = SinkQueue::new("t".into(), 100);
        q.push(batch(1, 10));
        q.push(batch(2, 10));
        q.push(batch(4, 10));
        let _in_flight = q.pop().await.unwrap();
        assert_eq!(q.abandon(), 7);
        let s = q.snapshot();
        assert_eq!(s.dropped_items[reason::SHUTDOWN], 7);
        assert_eq!(s.dropped_batches[reason::SHUTDOWN], 3);
        assert_eq!(s.queue_bytes, 0);
    }

    #[test]
    fn drops_and_retries_keep_the_last_error() {
        let q = SinkQueue::new("t".into(), 100);
        let b = batch(2, 10);
        q.retrying("503".into());
        q.retrying("503 again".into());
        q.dropped(&b, reason::RETRIES_EXHAUSTED, "gave up".into());
        let s = q.snapshot();
        assert_eq!(s.retries, 2);
        assert_eq!(s.dropped_items[reason::RETRIES_EXHAUSTED], 2);
        assert_eq!(s.last_error.as_deref(), Some("gave up"));
    }
}
