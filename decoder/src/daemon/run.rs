//! The daemon: a reading thread drains an [`EventSource`] (the perf rings), checks each
//! event and appends its bytes straight from the ring into its signal's batch; a small
//! pool compresses the batches; and the sinks send them, each from its own bounded queue
//! ([`Forwarder`](super::forward::Forwarder)).
//!
//! ```text
//! perf rings --(reader thread: drain, check, append)--> compression pool --> SinkSet --> sinks
//! ```
//!
//! The reader never waits on the network nor compresses: if compression falls behind,
//! its bounded queue blocks the reader, the kernel's rings fill and the kernel counts what
//! it drops, which is reported (`kernel lost`). Sinks drop, and count, what overflows
//! their queues.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::admin::{self, AdminConfig, AdminState};
use super::forward::{ForwardConfig, Forwarder, Submitter};
use super::source::EventSource;
use super::stats::{Snapshot, Stats};
use crate::batch::{Batch, BatchConfig, Batcher, Incoming};
use crate::decode::{EventHeaderDecoder, Request, Signal, Writer, check_event, stamp_writer};
use crate::kernel::ReaderError;
use crate::sink::SinkError;

/// Everything [`run`] needs besides its source.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// Batching, sinks and the shutdown deadline.
    pub forward: ForwardConfig,
    /// How often the counters are logged (and exported, with `self_metrics`).
    pub stats_interval: Duration,
    /// Also send the decoder's counters as OTLP metrics through the sinks.
    pub self_metrics: bool,
    /// Serve the counters, liveness and readiness over HTTP.
    pub admin: Option<AdminConfig>,
    /// Stamp each event's resources with its writer as the kernel saw it (pid, cgroup id),
    /// replacing whatever a payload claims under the reserved `user_events.writer.` names
    /// (see [`stamp_writer`]).
    pub writer_identity: bool,
}

impl Default for RunConfig {
    /// [`ForwardConfig::default`] (no sink yet), counters every 10 s, no self-metrics,
    /// writers stamped.
    fn default() -> Self {
        Self {
            forward: ForwardConfig::default(),
            stats_interval: Duration::from_secs(10),
            self_metrics: false,
            admin: None,
            writer_identity: true,
        }
    }
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

/// How long the reading thread sleeps in the source at most, and so how soon it sees a stop.
const WAIT: Duration = Duration::from_millis(100);

/// Forwards what `source` yields until `shutdown` resolves; then stops reading, drains the
/// source, flushes every batch, waits for the sinks up to the deadline and returns the
/// final counters.
///
/// `ready` is called once the sinks are started and the reading thread drains the source.
/// Until then a perf source only buffers events in its rings, which hold a bounded amount:
/// a writer that must not lose events waits for `ready`.
pub async fn run(
    source: impl EventSource,
    config: RunConfig,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<Snapshot, RunError> {
    if config.forward.sinks.is_empty() {
        return Err(RunError::Config(
            "no sink: give an endpoint, --stdout or --file".into(),
        ));
    }
    let started = SystemTime::now();
    // Bound first, so that a taken address fails the start, not a later scrape.
    let admin = match &config.admin {
        None => None,
        Some(a) => {
            let listener = admin::bind(a.addr).await.map_err(|e| {
                RunError::Config(format!("cannot listen on --admin-addr {}: {e}", a.addr))
            })?;
            let state = Arc::new(AdminState::new(a.unhealthy_after, started));
            let server = tokio::spawn(admin::serve(listener, Arc::clone(&state)));
            Some((state, AbortOnDrop(server)))
        }
    };
    let stats = Arc::new(Stats::default());
    let forwarder = Forwarder::start(&config.forward, Arc::clone(&stats))?;

    let stop = Arc::new(AtomicBool::new(false));
    // Dropped when the reading thread ends, by itself (a fatal read error) or when told.
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel::<()>();
    let reading = {
        let (stop, stats, submitter) =
            (Arc::clone(&stop), Arc::clone(&stats), forwarder.submitter());
        let batch = config.forward.batch;
        let writer_identity = config.writer_identity;
        thread::Builder::new()
            .name("ue-reader".into())
            .spawn(move || {
                read_loop(source, &stop, &stats, batch, writer_identity, &submitter);
                drop(ended_tx);
            })
            .map_err(|e| RunError::Config(format!("cannot start the reader thread: {e}")))?
    };
    ready();
    if let Some((state, _)) = &admin {
        state.update(stats.snapshot(forwarder.sinks().snapshot()));
        state.set_ready(true);
    }

    let mut ticker = tokio::time::interval(config.stats_interval);
    ticker.tick().await;
    let mut refresh = tokio::time::interval(admin::REFRESH);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = refresh.tick(), if admin.is_some() => {
                if let Some((state, _)) = &admin {
                    state.update(stats.snapshot(forwarder.sinks().snapshot()));
                }
            }
            _ = ticker.tick() => {
                let snap = stats.snapshot(forwarder.sinks().snapshot());
                log_snapshot(&snap);
                if config.self_metrics {
                    let req = Request::Metrics(snap.to_otlp(started, SystemTime::now()));
                    forwarder.sinks().submit(Arc::new(Batch::new(req)));
                }
            }
            // The reading thread ended by itself: a fatal read error, logged there.
            _ = &mut ended => {
                if let Some((state, _)) = &admin {
                    state.reader_stopped();
                }
                warn!("reading stopped; shutting down");
                break;
            }
        }
    }

    if let Some((state, _)) = &admin {
        state.set_ready(false);
    }
    info!("shutting down: draining the source and flushing batches");
    stop.store(true, Ordering::Release);
    // The reader drains what the source still holds and flushes its batches.
    let _ = tokio::task::spawn_blocking(move || reading.join()).await;
    tracing::debug!("reader stopped");
    let sink_snapshots = forwarder.finish().await;
    if let Some((_, server)) = admin {
        // Closed before returning: a caller that starts another daemon on the same address
        // finds it free.
        server.stop().await;
    }
    Ok(stats.snapshot(sink_snapshots))
}

/// Aborts the task when dropped: the admin endpoint lives as long as [`run`].
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reading thread: wait, drain, check (and stamp with the writer) and batch, hand due
/// batches on; after `stop`, one last drain and a flush.
fn read_loop(
    mut source: impl EventSource,
    stop: &AtomicBool,
    stats: &Stats,
    batch: BatchConfig,
    writer_identity: bool,
    submitter: &Submitter,
) {
    let mut eventheader = EventHeaderDecoder::new();
    let mut batcher = Batcher::new(batch);
    // The stamped request, reused from event to event.
    let mut stamped = Vec::new();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping {
            // Wake for the next batch's deadline too, even if no event comes.
            let timeout = batcher.next_deadline().map_or(WAIT, |t| {
                t.saturating_duration_since(Instant::now()).min(WAIT)
            });
            if let Err(e) = source.wait(timeout) {
                warn!("waiting on the event source failed: {e}");
                for b in batcher.flush() {
                    submitter.submit(b);
                }
                return;
            }
        }
        let now = Instant::now();
        source.drain(&mut |signal, event| {
            let writer = writer_identity.then_some(Writer {
                pid: event.pid,
                cgroup_id: event.cgroup_id,
            });
            let due = if event.eventheader {
                match eventheader.decode(event.tracepoint, event.fields) {
                    Ok(eh) => {
                        let req = eh.request;
                        stats.decoded(req.signal(), event.fields.len(), req.items());
                        if eh.unmapped > 0 {
                            stats.eventheader_unmapped(eh.unmapped);
                            tracing::debug!(
                                tracepoint = event.tracepoint,
                                unmapped = eh.unmapped,
                                "EventHeader fields kept as attributes"
                            );
                        }
                        match writer {
                            Some(writer) => {
                                let (signal, items) = (req.signal(), req.items());
                                let Some(request) =
                                    stamp(&req.encode_to_vec(), writer, &mut stamped, stats)
                                else {
                                    return;
                                };
                                batcher.push_protobuf(signal, request, items, now)
                            }
                            None => batcher.push(Incoming::Decoded(req), now),
                        }
                    }
                    Err(e) => {
                        stats.malformed(e.reason());
                        tracing::debug!(tracepoint = event.tracepoint, "skipped event: {e}");
                        return;
                    }
                }
            } else {
                // Checked, not decoded: the request's bytes go from the ring into the
                // batch (through the stamping buffer, when writers are stamped).
                match check_event(signal, event.fields) {
                    Ok((request, items)) => {
                        stats.decoded(signal, request.len(), items);
                        let request = match writer {
                            Some(writer) => match stamp(request, writer, &mut stamped, stats) {
                                Some(stamped) => stamped,
                                None => return,
                            },
                            None => request,
                        };
                        batcher.push_protobuf(signal, request, items, now)
                    }
                    Err(e) => {
                        stats.malformed(e.reason());
                        tracing::debug!(
                            tracepoint = event.tracepoint,
                            cpu = event.cpu,
                            "skipped event: {e}"
                        );
                        return;
                    }
                }
            };
            for b in due {
                submitter.submit(b);
            }
        });
        stats.set_reader_counts(source.lost_by_cpu(), &source.malformed_records());
        for b in batcher.poll(Instant::now()) {
            submitter.submit(b);
        }
        if stopping {
            for b in batcher.flush() {
                submitter.submit(b);
            }
            return;
        }
    }
}

/// `request` stamped with `writer` into `out` (see [`stamp_writer`]), forged attributes
/// counted; `None`, counted as `invalid_otlp`, for bytes that are not a request (which the
/// check before lets through only if the two disagree).
fn stamp<'a>(
    request: &[u8],
    writer: Writer,
    out: &'a mut Vec<u8>,
    stats: &Stats,
) -> Option<&'a [u8]> {
    out.clear();
    match stamp_writer(request, writer, out) {
        Ok(forged) => {
            if forged > 0 {
                stats.forged_writer_attributes(forged);
                tracing::debug!(
                    pid = writer.pid,
                    forged,
                    "payload carried reserved user_events.writer.* attributes; replaced"
                );
            }
            Some(out)
        }
        Err(e) => {
            stats.malformed("invalid_otlp");
            tracing::debug!(pid = writer.pid, "skipped event: {e}");
            None
        }
    }
}

fn log_snapshot(s: &Snapshot) {
    let get = |m: &std::collections::BTreeMap<Signal, u64>, sig| m.get(&sig).copied().unwrap_or(0);
    info!(
        metrics_events = get(&s.events, Signal::Metrics),
        metrics_items = get(&s.items, Signal::Metrics),
        traces_events = get(&s.events, Signal::Traces),
        traces_items = get(&s.items, Signal::Traces),
        logs_events = get(&s.events, Signal::Logs),
        logs_items = get(&s.items, Signal::Logs),
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
