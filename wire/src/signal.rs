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
    /// Log records (`ExportLogsServiceRequest`), from the `otlp_logs` tracepoint.
    Logs,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Traces, Signal::Logs];

    /// Lower-case name, as in `--signals metrics,traces,logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Traces => "traces",
            Self::Logs => "logs",
        }
    }

    /// The tracepoint this signal is written to unless configured otherwise.
    pub fn default_tracepoint(self) -> &'static str {
        match self {
            Self::Metrics => layout::METRICS_TRACEPOINT,
            Self::Traces => layout::TRACES_TRACEPOINT,
            Self::Logs => layout::LOGS_TRACEPOINT,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tracepoint each signal is read from (or was recorded from).
///
/// A name matches a perf event name either exactly (`user_events:otlp_metrics`) or after
/// the `user_events:` system prefix (`otlp_metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointNames {
    /// The metrics tracepoint, `otlp_metrics` by default.
    pub metrics: String,
    /// The traces tracepoint, `otlp_traces` by default.
    pub traces: String,
    /// The logs tracepoint, `otlp_logs` by default.
    pub logs: String,
}

/// The tracefs system, and perf event name prefix, of user_events tracepoints.
const USER_EVENTS_SYSTEM: &str = "user_events";

impl Default for TracepointNames {
    fn default() -> Self {
        Self {
            metrics: layout::METRICS_TRACEPOINT.to_owned(),
            traces: layout::TRACES_TRACEPOINT.to_owned(),
            logs: layout::LOGS_TRACEPOINT.to_owned(),
        }
    }
}

impl TracepointNames {
    /// The tracepoint of `signal`.
    pub fn get(&self, signal: Signal) -> &str {
        match signal {
            Signal::Metrics => &self.metrics,
            Signal::Traces => &self.traces,
            Signal::Logs => &self.logs,
        }
    }

    /// The signal a tracepoint or perf event name (`user_events:otlp_metrics`) carries, if
    /// any.
    pub fn signal_of(&self, event_name: &str) -> Option<Signal> {
        let matches = |name: &str| {
            event_name == name
                || event_name
                    .strip_prefix(USER_EVENTS_SYSTEM)
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(name)
        };
        Signal::ALL.into_iter().find(|s| matches(self.get(*s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_or_without_the_system() {
        let names = TracepointNames::default();
        assert_eq!(
            names.signal_of("user_events:otlp_metrics"),
            Some(Signal::Metrics)
        );
        assert_eq!(names.signal_of("otlp_traces"), Some(Signal::Traces));
        assert_eq!(names.signal_of("user_events:otlp_tracesx"), None);
        assert_eq!(names.signal_of("sched:otlp_traces"), None);
        assert_eq!(names.signal_of("user_events:otlp_logs"), Some(Signal::Logs));
        let custom = TracepointNames {
            metrics: "my_metrics".into(),
            traces: "user_events:my_spans".into(),
            logs: "my_logs".into(),
        };
        assert_eq!(
            custom.signal_of("user_events:my_metrics"),
            Some(Signal::Metrics)
        );
        assert_eq!(
            custom.signal_of("user_events:my_spans"),
            Some(Signal::Traces)
        );
        assert_eq!(custom.signal_of("my_logs"), Some(Signal::Logs));
        assert_eq!(custom.signal_of("user_events:otlp_metrics"), None);
        assert_eq!(custom.get(Signal::Metrics), "my_metrics");
    }
}
