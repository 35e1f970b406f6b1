//! The daemon: a reading thread drains an [`EventSource`] (the perf rings) and decodes the
//! events, a task merges them into batches, and the sinks send them, each from its own
//! bounded queue ([`Forwarder`](super::forward::Forwarder)).
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
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::admin::{self, AdminConfig, AdminState};
use super::forward::{ForwardConfig, Forwarder};
use super::source::EventSource;
use super::stats::{Snapshot, Stats};
use crate::batch::{Batch, Incoming};
use crate::decode::{EventHeaderDecoder, Request, Signal, check_event};
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
}

impl Default for RunConfig {
    /// [`ForwardConfig::default`] (no sink yet), counters every 10 s, no self-metrics.
    fn default() -> Self {
        Self {
            forward: ForwardConfig::default(),
            stats_interval: Duration::from_secs(10),
            self_metrics: false,
            admin: None,
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
    let mut forwarder = Forwarder::start(&config.forward, Arc::clone(&stats))?;

    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let (stop, stats, tx) = (Arc::clone(&stop), Arc::clone(&stats), forwarder.sender());
        thread::Builder::new()
            .name("ue-reader".into())
            .spawn(move || read_loop(source, &stop, &stats, &tx))
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
            () = forwarder.batching_ended() => {
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
    // The reader drains what the source still holds, then drops its sender, which ends the
    // batcher after its final flush.
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

/// The reading thread: wait, drain, decode, hand on; after `stop`, one last drain.
fn read_loop(
    mut source: impl EventSource,
    stop: &AtomicBool,
    stats: &Stats,
    tx: &mpsc::Sender<Incoming>,
) {
    let mut eventheader = EventHeaderDecoder::new();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping && let Err(e) = source.wait(WAIT) {
            warn!("waiting on the event source failed: {e}");
            return;
        }
        let mut decoded = Vec::new();
        source.drain(&mut |signal, event| {
            if event.eventheader {
                return match eventheader.decode(event.tracepoint, event.fields) {
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
                        decoded.push(Incoming::Decoded(req));
                    }
                    Err(e) => {
                        stats.malformed(e.reason());
                        tracing::debug!(tracepoint = event.tracepoint, "skipped event: {e}");
                    }
                };
            }
            // Checked, not decoded: the batcher sends the requests' own bytes on.
            match check_event(signal, event.fields) {
                Ok((request, items)) => {
                    stats.decoded(signal, request.len(), items);
                    decoded.push(Incoming::Protobuf {
                        signal,
                        bytes: request.to_vec(),
                        items,
                    });
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
        stats.set_reader_counts(source.lost_by_cpu(), &source.malformed_records());
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
