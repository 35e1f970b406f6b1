//! Where the daemon's events come from: the [`EventSource`] seam, and [`PerfSource`], the
//! kernel's perf rings behind it.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use crate::decode::{Signal, TracepointNames};
use crate::kernel::{Event, ReaderConfig, ReaderError, TracepointReader};

/// A source of tracepoint events for [`run`](crate::run): the perf rings ([`PerfSource`]),
/// or memory in tests (`MemorySource`, feature `testing`). The daemon's reading thread
/// calls [`wait`](Self::wait) and [`drain`](Self::drain) in turn, and reads the loss
/// counters after each drain.
pub trait EventSource: Send + 'static {
    /// Sleeps until events may be ready or `timeout` passes. An error ends the daemon.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// Calls `f` with every event read so far and the signal its tracepoint carries (for
    /// an EventHeader event, [`Event::eventheader`], the signal is decided by its content);
    /// events that cannot be read are counted in
    /// [`malformed_records`](Self::malformed_records).
    fn drain(&mut self, f: &mut dyn FnMut(Signal, Event<'_>));

    /// Records the source dropped because nobody drained it in time (the kernel's
    /// `PERF_RECORD_LOST`), per CPU, so far.
    fn lost_by_cpu(&self) -> Vec<(u32, u64)>;

    /// Records that could not be parsed, by reason, so far.
    fn malformed_records(&self) -> BTreeMap<&'static str, u64>;
}

/// The perf reader as an [`EventSource`]: each tracepoint's events carry the signal that
/// [`TracepointNames`] gives its name.
#[derive(Debug)]
pub struct PerfSource {
    reader: TracepointReader,
    signals: Vec<Signal>,
}

impl PerfSource {
    /// Opens a perf reader on the tracepoints of `signals`, named by `names`, with the rest
    /// of `config` (tracefs, ring size, wakeup, registration). Once it returns, every event
    /// written to them is read or counted as lost.
    pub fn open(
        mut config: ReaderConfig,
        names: &TracepointNames,
        signals: &[Signal],
    ) -> Result<Self, ReaderError> {
        let mut unique = Vec::new();
        for s in signals {
            if !unique.contains(s) {
                unique.push(*s);
            }
        }
        config.tracepoints = unique.iter().map(|s| names.get(*s).to_owned()).collect();
        Ok(Self {
            reader: TracepointReader::open(&config)?,
            signals: unique,
        })
    }

    /// The reader, e.g. for its tracepoints and CPUs.
    pub fn reader(&self) -> &TracepointReader {
        &self.reader
    }
}

impl EventSource for PerfSource {
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.wait(timeout).map(drop)
    }

    fn drain(&mut self, f: &mut dyn FnMut(Signal, Event<'_>)) {
        let signals = &self.signals;
        // EventHeader tracepoints come after the OTLP ones; their signal is in the event.
        self.reader.drain(|event| {
            f(
                signals.get(event.index).copied().unwrap_or(Signal::Logs),
                event,
            )
        });
    }

    fn lost_by_cpu(&self) -> Vec<(u32, u64)> {
        self.reader.lost_by_cpu()
    }

    fn malformed_records(&self) -> BTreeMap<&'static str, u64> {
        self.reader.malformed_records().clone()
    }
}
