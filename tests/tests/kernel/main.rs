//! Tests against a real kernel with user_events: the exporters' events reach a perf reader,
//! byte for byte. Built with `--features kernel`; `scripts/test.sh` runs them in the
//! project's VM on hosts without user_events.
#![cfg(feature = "kernel")]

mod config;
mod eventheader;
mod exporter;
mod hostile;
mod listener_aware;
mod logs;
mod pipeline;
mod privilege;
mod reader;
mod upstream;
