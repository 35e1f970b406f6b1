//! The span processor: each ended span is encoded at once into a packing buffer, and an event
//! is written when the next span would not fit, or when the oldest span in a partly filled
//! event has waited the configured delay. No queue, no channel, no copy of the span.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use opentelemetry::{Context, InstrumentationScope, otel_warn};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::background::Background;
use crate::core::{Config, Core};
use crate::encode::Oversize;
use crate::encode::trace::{self, LEVELS};
use crate::error::BuildError;
use crate::layout;
use crate::pack::Packer;
use crate::stats::ExporterStats;
use crate::writer::Registration;

/// The default bound on how long a span waits in a partly filled event.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1);

/// A span processor that writes spans as OTLP protobuf to a user_events tracepoint
/// (`otlp_traces` by default), packing as many as fit into each event.
///
/// Unlike the SDK's batch processor with an exporter, it has no queue and no export thread:
/// `on_end` encodes the span straight into one of a few packing buffers (one per CPU by
/// default, picked per thread, so application threads rarely wait on each other) and writes
/// the event when the next span would not fit. A background thread writes a partly filled
/// event once its oldest span has waited [`with_max_delay`](UserEventsSpanProcessorBuilder::with_max_delay)
/// (1 s by default), so spans of a thread that went quiet still go out. `force_flush` and
/// `shutdown` write everything pending. Memory is bounded: about three buffers of the event
/// size per shard.
///
/// While nobody listens, `on_end` returns after one atomic load; pair it with
/// [`ListenerAwareSampler`](crate::ListenerAwareSampler) so the SDK does not even record the
/// spans.
///
/// ```
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use otlp_user_events::UserEventsSpanProcessor;
///
/// let processor = UserEventsSpanProcessor::builder().build()?;
/// let provider = SdkTracerProvider::builder().with_span_processor(processor).build();
/// # provider.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UserEventsSpanProcessor {
    shared: Arc<Shared>,
    /// Writes partly filled events once they are due.
    flusher: Background,
}

struct Shared {
    core: Core,
    shards: Box<[Mutex<Shard>]>,
    max_delay: Duration,
}

/// One packing buffer and the event being filled in it.
struct Shard {
    packer: Packer<LEVELS>,
    /// The scope of the spans being added; `None` before the first.
    scope: Option<InstrumentationScope>,
    /// When the first span of the pending event was added.
    since: Option<Instant>,
}

impl fmt::Debug for UserEventsSpanProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEventsSpanProcessor")
            .field("tracepoint", &self.shared.core.name)
            .field("max_buffer", &self.shared.core.max_buffer)
            .field("shards", &self.shared.shards.len())
            .field("max_delay", &self.shared.max_delay)
            .field("registration", self.shared.core.registration())
            .finish()
    }
}

impl UserEventsSpanProcessor {
    /// A builder with the defaults: tracepoint `otlp_traces`, 8,168-byte events, one shard
    /// per CPU, 1 s maximum delay.
    pub fn builder() -> UserEventsSpanProcessorBuilder {
        UserEventsSpanProcessorBuilder {
            config: Config::new(layout::TRACES_TRACEPOINT),
            shards: None,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }

    /// A handle on this processor's counters, usable after it moved into the SDK.
    pub fn stats(&self) -> ExporterStats {
        self.shared.core.stats.clone()
    }

    /// Whether a reader listens right now: the kernel's enable bit for the tracepoint.
    pub fn listening(&self) -> bool {
        self.shared.core.listening()
    }

    /// A handle that tells whether a reader listens, for [`ListenerAwareSampler`](crate::ListenerAwareSampler).
    pub fn listener(&self) -> crate::Listener {
        self.shared.core.listener()
    }

    /// Blocks until a reader listens or `timeout` passes; see
    /// [`SpanExporter::wait_for_listener`](crate::SpanExporter::wait_for_listener).
    pub fn wait_for_listener(&self, timeout: Duration) -> bool {
        self.shared.core.wait_for_listener(timeout)
    }

    /// Whether the tracepoint registered, and if not, why.
    pub fn registration(&self) -> &Registration {
        self.shared.core.registration()
    }
}

thread_local! {
    /// The shard this thread starts with, assigned round-robin on first use.
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

impl Shared {
    /// This thread's shard, or the first free one after it when it is busy.
    fn shard(&self) -> MutexGuard<'_, Shard> {
        let n = self.shards.len();
        let home = HOME.with(|h| {
            if h.get() == usize::MAX {
                h.set(NEXT_HOME.fetch_add(1, Ordering::Relaxed));
            }
            h.get()
        }) % n;
        for i in 0..n {
            match self.shards[(home + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.shards[home].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, span: &SpanData) {
        let mut shard = self.shard();
        let shard = &mut *shard;
        if !shard
            .scope
            .as_ref()
            .is_some_and(|open| trace::same_scope(open, &span.instrumentation_scope))
        {
            trace::begin_scope(&mut shard.packer, &span.instrumentation_scope);
            shard.scope = Some(span.instrumentation_scope.clone());
        }
        let mut oversize = Oversize::default();
        trace::add_span(
            &mut shard.packer,
            span,
            &mut self.core.sink(),
            &mut oversize,
        );
        if shard.packer.pending() == 1 {
            // A new event starts with this span (the previous one, if any, was written).
            shard.since = Some(Instant::now());
        }
        if !oversize.dropped.is_empty() {
            self.core.stats.oversize(oversize.total());
            otel_warn!(
                name: "UserEvents.SpanTooLarge",
                tracepoint = self.core.name.as_str(),
                span = span.name.as_ref(),
                max_buffer = self.core.max_buffer
            );
        }
    }

    fn flush_shard(&self, shard: &mut Shard) {
        shard.packer.flush(&mut self.core.sink());
        shard.since = None;
    }

    fn flush_all(&self) {
        for i in 0..self.shards.len() {
            self.flush_shard(&mut self.lock(i));
        }
    }

    /// The flusher's work: writes each partly filled event whose oldest span has waited
    /// `max_delay`; how long until the next one is due.
    fn flush_due(&self) -> Duration {
        let now = Instant::now();
        let mut next = now + self.max_delay;
        for i in 0..self.shards.len() {
            let mut shard = self.lock(i);
            if let Some(since) = shard.since {
                let due = since + self.max_delay;
                if due <= now {
                    self.flush_shard(&mut shard);
                } else {
                    next = next.min(due);
                }
            }
        }
        next.saturating_duration_since(Instant::now())
    }
}

impl SpanProcessor for UserEventsSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !self.shared.core.listening() || self.shared.core.is_shut_down() {
            return;
        }
        self.shared.add(&span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.shared.core.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.shared.flush_all();
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shared.core.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.flusher.stop();
        self.shared.flush_all();
        self.shared.core.shutdown()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Spans pending under the old resource go out with it first.
        for i in 0..self.shared.shards.len() {
            let mut shard = self.shared.lock(i);
            self.shared.flush_shard(&mut shard);
            trace::begin_resource(&mut shard.packer, resource);
            shard.scope = None;
        }
    }
}

impl Drop for UserEventsSpanProcessor {
    fn drop(&mut self) {
        // Dropped without shutdown (the provider normally shuts it down): still write what
        // is pending rather than lose it, and do not leave the thread behind.
        self.flusher.stop();
        if !self.shared.core.is_shut_down() {
            self.shared.flush_all();
        }
    }
}

/// Configures a [`UserEventsSpanProcessor`].
#[derive(Debug)]
pub struct UserEventsSpanProcessorBuilder {
    config: Config,
    shards: Option<usize>,
    max_delay: Duration,
}

impl UserEventsSpanProcessorBuilder {
    crate::core::tracepoint_settings!("otlp_traces");

    /// How long a span may wait in a partly filled event before the event is written
    /// (default 1 s). Shorter means fresher data and more, smaller events.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The number of packing buffers (default: the number of CPUs). Each thread starts at
    /// its own and moves to the next free one when it is busy; memory is about three events'
    /// worth per buffer.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// Validates the settings, registers the tracepoint and starts the flusher thread. A
    /// failed registration is not an error: the processor is then disabled, says why once,
    /// and reports it in [`UserEventsSpanProcessor::registration`].
    pub fn build(self) -> Result<UserEventsSpanProcessor, BuildError> {
        if self.max_delay.is_zero() {
            return Err(BuildError::ZeroDelay);
        }
        let core = self.config.build("traces")?;
        let shards = self
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let empty = Resource::builder_empty().build();
        let shards = (0..shards)
            .map(|_| {
                let mut packer = Packer::new(core.max_buffer);
                trace::begin_resource(&mut packer, &empty);
                Mutex::new(Shard {
                    packer,
                    scope: None,
                    since: None,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            core,
            shards,
            max_delay: self.max_delay,
        });
        let flusher = {
            let shared = shared.clone();
            Background::spawn("otlp-user-events-spans", self.max_delay, move || {
                shared.flush_due()
            })
            .map_err(BuildError::Thread)?
        };
        Ok(UserEventsSpanProcessor { shared, flusher })
    }
}
