//! The daemon, `ue_decoder::run`, over an in-memory event source on a test's runtime: what
//! the hermetic tests of the sinks and of the daemon start and stop.

use std::time::{Duration, Instant};

use ue_decoder::{
    BatchConfig, ForwardConfig, MemorySource, RoutedSink, RunConfig, RunError, Snapshot,
};

/// A daemon running over a [`MemorySource`], and the sender that stops it as SIGTERM would.
pub struct Daemon {
    task: tokio::task::JoinHandle<Result<Snapshot, RunError>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Daemon {
    /// Starts `config` on `rt`, reading `source`.
    pub fn start(rt: &tokio::runtime::Runtime, source: &MemorySource, config: RunConfig) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(ue_decoder::run(
            source.clone(),
            config,
            async {
                let _ = stopped.await;
            },
            || {},
        ));
        Self { task, stop }
    }

    /// Starts a daemon sending to `sink` alone ([`to_sink`]).
    pub fn with_sink(
        rt: &tokio::runtime::Runtime,
        source: &MemorySource,
        sink: impl Into<RoutedSink>,
        shutdown: Duration,
    ) -> Self {
        Self::start(rt, source, to_sink(sink, shutdown))
    }

    /// Stops it and returns its final counters.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> Snapshot {
        self.stop_timed(rt).0
    }

    /// Stops it; its final counters, and how long the stop took.
    pub fn stop_timed(self, rt: &tokio::runtime::Runtime) -> (Snapshot, Duration) {
        let asked = Instant::now();
        // The daemon may have ended on its own (an error), which the task's result tells.
        let _ = self.stop.send(());
        let snapshot = rt
            .block_on(self.task)
            .expect("the daemon's task does not panic")
            .expect("the daemon runs");
        (snapshot, asked.elapsed())
    }
}

/// Forwarding to `sink` alone: batches sent 20 ms after their first item, `shutdown` to
/// send what is left, counters never logged.
pub fn to_sink(sink: impl Into<RoutedSink>, shutdown: Duration) -> RunConfig {
    RunConfig {
        forward: ForwardConfig {
            batch: BatchConfig {
                max_delay: Duration::from_millis(20),
                ..BatchConfig::default()
            },
            sinks: vec![sink.into()],
            shutdown_deadline: shutdown,
            ..ForwardConfig::default()
        },
        stats_interval: Duration::from_secs(3600),
        ..RunConfig::default()
    }
}
