//! `ue-decoder`: reads OTLP from user_events tracepoints (command line to come).

fn main() {}
