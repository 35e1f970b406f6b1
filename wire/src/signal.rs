//! The OTLP signals the tracepoints carry.

use std::fmt;

use crate::layout;

/// An OTLP signal, and so the request type a tracepoint's events carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Metrics (`ExportMetricsServiceRequest`), from the `otlp_metrics` tracepoint.
    Metrics,
    /// Spans (`ExportTraceServiceRequest`), from the `otlp_traces` tracepoint.
    Traces,
}

impl Signal {
    /// Both signals.
    pub const ALL: [Signal; 2] = [Signal::Metrics, Signal::Traces];

    /// Lower-case name, as in `--signals metrics,traces`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Traces => "traces",
        }
    }

    /// The tracepoint this signal is written to unless configured otherwise.
    pub fn default_tracepoint(self) -> &'static str {
        match self {
            Self::Metrics => layout::METRICS_TRACEPOINT,
            Self::Traces => layout::TRACES_TRACEPOINT,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
