//! The daemon's own HTTP endpoint (`--admin-addr`): its counters in the Prometheus text
//! format on `/metrics`, liveness on `/healthz` and readiness on `/readyz`, as an SRE's
//! scraper and orchestrator expect of an agent.
//!
//! The counters served are those of the last refresh, which the daemon makes every second
//! ([`REFRESH`]), so a scrape never waits on the reader or a sink.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tracing::info;

use super::stats::Snapshot;
use crate::decode::Signal;
use crate::exposition::{self, text};

/// How often the daemon refreshes what the endpoint serves.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// Where the endpoint listens and when it calls the daemon unhealthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// The address to listen on, e.g. `127.0.0.1:9464`.
    pub addr: SocketAddr,
    /// `/healthz` fails once a sink has failed (every attempt since its last success) for
    /// longer than this.
    pub unhealthy_after: Duration,
}

/// What the endpoint serves; the daemon updates it.
#[derive(Debug)]
pub(crate) struct AdminState {
    unhealthy_after: Duration,
    started: SystemTime,
    latest: Mutex<Snapshot>,
    /// The sinks are up and the reader drains the source.
    ready: AtomicBool,
    /// The reading thread still runs.
    reading: AtomicBool,
}

impl AdminState {
    pub(crate) fn new(unhealthy_after: Duration, started: SystemTime) -> Self {
        Self {
            unhealthy_after,
            started,
            latest: Mutex::new(Snapshot::default()),
            ready: AtomicBool::new(false),
            reading: AtomicBool::new(true),
        }
    }

    pub(crate) fn update(&self, snapshot: Snapshot) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub(crate) fn reader_stopped(&self) {
        self.reading.store(false, Ordering::Release);
        self.set_ready(false);
    }

    fn snapshot(&self) -> Snapshot {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the daemon is unhealthy, if it is.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.reading.load(Ordering::Acquire) {
            problems.push("the reader stopped".to_owned());
        }
        for sink in self.snapshot().sinks {
            if let Some(failing) = sink.failing_for.filter(|d| *d > self.unhealthy_after) {
                problems.push(format!(
                    "sink {} has failed for {}s (last error: {})",
                    sink.name,
                    failing.as_secs(),
                    sink.last_error.as_deref().unwrap_or("none recorded")
                ));
            }
        }
        problems
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => exposition::metrics(prometheus(&self.snapshot(), self.started)),
            "/healthz" => match self.problems() {
                p if p.is_empty() => text(StatusCode::OK, "ok\n".into()),
                p => text(StatusCode::SERVICE_UNAVAILABLE, p.join("\n") + "\n"),
            },
            "/readyz" => {
                if self.ready.load(Ordering::Acquire) {
                    text(StatusCode::OK, "ready\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: starting or shutting down\n".into(),
                    )
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

/// Binds `addr`; the returned listener is served by [`serve`].
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `listener` until the task is dropped (aborted with the daemon).
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    if let Ok(addr) = listener.local_addr() {
        info!("admin endpoint on http://{addr} (/metrics, /healthz, /readyz)");
    }
    exposition::serve(listener, "admin endpoint", move |req| state.respond(req)).await;
}

/// The counters in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn prometheus(s: &Snapshot, started: SystemTime) -> String {
    let mut out = String::new();
    let signals = |m: &BTreeMap<Signal, u64>| -> Vec<(Vec<(&str, String)>, u64)> {
        m.iter()
            .map(|(sig, v)| (vec![("signal", sig.to_string())], *v))
            .collect()
    };
    let reasons = |m: &BTreeMap<&'static str, u64>| -> Vec<(Vec<(&str, String)>, u64)> {
        m.iter()
            .map(|(r, v)| (vec![("reason", (*r).to_owned())], *v))
            .collect()
    };
    let start = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    family(
        &mut out,
        "ue_decoder_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
        &[(vec![], start)],
    );
    counter(
        &mut out,
        "ue_decoder_events_total",
        "Events read and checked, by signal.",
        &signals(&s.events),
    );
    counter(
        &mut out,
        "ue_decoder_event_bytes_total",
        "OTLP bytes in those events, by signal.",
        &signals(&s.bytes),
    );
    counter(
        &mut out,
        "ue_decoder_items_total",
        "Data points, spans and log records in those events, by signal.",
        &signals(&s.items),
    );
    counter(
        &mut out,
        "ue_decoder_batches_total",
        "Batches handed to the sinks, by signal.",
        &signals(&s.batches),
    );
    counter(
        &mut out,
        "ue_decoder_batched_items_total",
        "Items in those batches, by signal.",
        &signals(&s.batched_items),
    );
    counter(
        &mut out,
        "ue_decoder_malformed_events_total",
        "Events skipped because they were not what their tracepoint promises, by reason.",
        &reasons(&s.malformed),
    );
    counter(
        &mut out,
        "ue_decoder_kernel_lost_total",
        "Records the kernel dropped because a ring was full, by CPU.",
        &s.kernel_lost
            .iter()
            .map(|(cpu, v)| (vec![("cpu", cpu.to_string())], *v))
            .collect::<Vec<_>>(),
    );
    counter(
        &mut out,
        "ue_decoder_corrupt_records_total",
        "Ring records the reader could not parse, by reason.",
        &reasons(&s.corrupt_records),
    );
    counter(
        &mut out,
        "ue_decoder_eventheader_unmapped_fields_total",
        "EventHeader fields that no OTLP field fits, kept as attributes.",
        &[(vec![], s.eventheader_unmapped)],
    );
    counter(
        &mut out,
        "ue_decoder_forged_writer_attributes_total",
        "Attributes under the reserved user_events.writer. prefix that payloads carried, removed.",
        &[(vec![], s.forged_writer_attributes)],
    );
    let per_sink = |f: &dyn Fn(&super::super::sink::SinkSnapshot) -> u64| {
        s.sinks
            .iter()
            .map(|k| (vec![("sink", k.name.clone())], f(k)))
            .collect::<Vec<_>>()
    };
    counter(
        &mut out,
        "ue_decoder_sink_batches_sent_total",
        "Batches each sink's receiver accepted.",
        &per_sink(&|k| k.batches_sent),
    );
    counter(
        &mut out,
        "ue_decoder_sink_items_sent_total",
        "Items each sink's receiver accepted.",
        &per_sink(&|k| k.items_sent),
    );
    counter(
        &mut out,
        "ue_decoder_sink_bytes_sent_total",
        "Protobuf bytes each sink sent, before compression.",
        &per_sink(&|k| k.bytes_sent),
    );
    counter(
        &mut out,
        "ue_decoder_sink_retries_total",
        "Attempts that failed in a retryable way and were tried again.",
        &per_sink(&|k| k.retries),
    );
    counter(
        &mut out,
        "ue_decoder_sink_rejected_items_total",
        "Items a receiver refused in a partial success.",
        &per_sink(&|k| k.rejected_items),
    );
    counter(
        &mut out,
        "ue_decoder_sink_filtered_items_total",
        "Items each sink's filter left out, as configured.",
        &per_sink(&|k| k.filtered_items),
    );
    let dropped = |m: fn(&super::super::sink::SinkSnapshot) -> &BTreeMap<&'static str, u64>| {
        s.sinks
            .iter()
            .flat_map(|k| {
                m(k).iter().map(|(r, v)| {
                    (
                        vec![("sink", k.name.clone()), ("reason", (*r).to_owned())],
                        *v,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    counter(
        &mut out,
        "ue_decoder_sink_dropped_items_total",
        "Items each sink dropped, by reason.",
        &dropped(|k| &k.dropped_items),
    );
    counter(
        &mut out,
        "ue_decoder_sink_dropped_batches_total",
        "Batches each sink dropped, by reason.",
        &dropped(|k| &k.dropped_batches),
    );
    family(
        &mut out,
        "ue_decoder_sink_queue_bytes",
        "gauge",
        "Bytes queued in each sink, waiting to be sent.",
        &per_sink(&|k| k.queue_bytes)
            .into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "ue_decoder_sink_failing_seconds",
        "gauge",
        "How long each sink has failed every attempt since its last success (0: it is not failing).",
        &s.sinks
            .iter()
            .map(|k| {
                (
                    vec![("sink", k.name.clone())],
                    k.failing_for.map_or(0.0, |d| d.as_secs_f64()),
                )
            })
            .collect::<Vec<_>>(),
    );
    // The on-disk queues (`--queue-dir`), for the sinks that have one.
    let per_disk = |f: &dyn Fn(&crate::sink::DiskSnapshot) -> u64| {
        s.sinks
            .iter()
            .filter_map(|k| Some((vec![("sink", k.name.clone())], f(k.disk.as_ref()?))))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "ue_decoder_sink_disk_bytes",
        "gauge",
        "Bytes of each sink's queue files (what --queue-max-bytes bounds).",
        &per_disk(&|d| d.file_bytes)
            .into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect::<Vec<_>>(),
    );
    counter(
        &mut out,
        "ue_decoder_sink_disk_replayed_items_total",
        "Items found in each sink's queue files at start and sent on.",
        &per_disk(&|d| d.replayed_items),
    );
    counter(
        &mut out,
        "ue_decoder_sink_disk_possible_duplicate_items_total",
        "Items in flight when the decoder last stopped, sent again.",
        &per_disk(&|d| d.possible_duplicate_items),
    );
    counter(
        &mut out,
        "ue_decoder_sink_disk_corrupt_records_total",
        "Corrupt stretches skipped in each sink's queue files (their items unknown).",
        &per_disk(&|d| d.corrupt_records),
    );
    counter(
        &mut out,
        "ue_decoder_sink_disk_corrupt_bytes_total",
        "Bytes of those stretches, of unreadable segment files, and of torn records cut off.",
        &per_disk(&|d| d.corrupt_bytes.saturating_add(d.truncated_bytes)),
    );
    family(
        &mut out,
        "ue_decoder_sink_held_items",
        "gauge",
        "Items a sink took from its queue and holds, not yet written (the archive's open traces).",
        &per_sink(&|k| k.held_items)
            .into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect::<Vec<_>>(),
    );
    archive_families(&mut out, s);
    out
}

/// The archive sinks' own counters (`--archive-url`).
fn archive_families(out: &mut String, s: &Snapshot) {
    let per_archive = |f: &dyn Fn(&crate::sink::ArchiveSnapshot) -> u64| {
        s.sinks
            .iter()
            .filter_map(|k| Some((vec![("sink", k.name.clone())], f(k.archive.as_ref()?))))
            .collect::<Vec<_>>()
    };
    let by_reason = |m: fn(&crate::sink::ArchiveSnapshot) -> &BTreeMap<&'static str, u64>| {
        s.sinks
            .iter()
            .filter_map(|k| Some((k, k.archive.as_ref()?)))
            .flat_map(|(k, a)| {
                m(a).iter().map(|(r, v)| {
                    (
                        vec![("sink", k.name.clone()), ("reason", (*r).to_owned())],
                        *v,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let gauge = |v: Vec<(Vec<(&'static str, String)>, u64)>| {
        v.into_iter()
            .map(|(l, v)| (l, v as f64))
            .collect::<Vec<_>>()
    };
    counter(
        out,
        "ue_decoder_archive_objects_total",
        "Objects each archive sink wrote.",
        &per_archive(&|a| a.objects),
    );
    counter(
        out,
        "ue_decoder_archive_object_bytes_total",
        "Bytes of the objects each archive sink wrote, compressed.",
        &per_archive(&|a| a.object_bytes),
    );
    counter(
        out,
        "ue_decoder_archive_late_objects_total",
        "Objects of late spans: a trace's second and later objects.",
        &per_archive(&|a| a.late_objects),
    );
    counter(
        out,
        "ue_decoder_archive_traces_flushed_total",
        "Traces written, by why (max_traces and max_bytes: early, to stay within the bounds).",
        &by_reason(|a| &a.traces_flushed),
    );
    family(
        out,
        "ue_decoder_archive_open_traces",
        "gauge",
        "Traces each archive sink holds open.",
        &gauge(per_archive(&|a| a.open_traces)),
    );
    family(
        out,
        "ue_decoder_archive_buffered_bytes",
        "gauge",
        "Bytes of spans each archive sink holds open (what --archive-buffer-mib bounds).",
        &gauge(per_archive(&|a| a.buffered_bytes)),
    );
    counter(
        out,
        "ue_decoder_archive_notifications_sent_total",
        "Notifications of objects written that the receiver accepted.",
        &per_archive(&|a| a.notifications_sent),
    );
    counter(
        out,
        "ue_decoder_archive_notifications_failed_total",
        "Notifications given up, by reason (the objects are written).",
        &by_reason(|a| &a.notifications_failed),
    );
    counter(
        out,
        "ue_decoder_archive_notification_retries_total",
        "Notification attempts that failed and were tried again.",
        &per_archive(&|a| a.notification_retries),
    );
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(Vec<(&str, String)>, u64)]) {
    let samples: Vec<_> = samples
        .iter()
        .map(|(l, v)| (l.clone(), *v as f64))
        .collect();
    family(out, name, "counter", help, &samples);
}

/// One metric family: HELP, TYPE and a line per sample.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Vec<(&str, String)>, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", exposition::escape_label_value(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkSnapshot;

    #[test]
    fn the_text_format_has_every_family_once_and_escapes_label_values() {
        let mut s = Snapshot::default();
        s.events.insert(Signal::Traces, 7);
        s.malformed.insert("bad_otlp", 2);
        s.kernel_lost.insert(1, 3);
        s.sinks.push(SinkSnapshot {
            name: "otlp-http \"a\"\\b".into(),
            items_sent: 40,
            filtered_items: 11,
            failing_for: Some(Duration::from_millis(2500)),
            dropped_items: [("queue_full", 5)].into_iter().collect(),
            disk: Some(crate::sink::DiskSnapshot {
                file_bytes: 4096,
                corrupt_bytes: 10,
                truncated_bytes: 3,
                ..Default::default()
            }),
            ..SinkSnapshot::default()
        });
        s.sinks.push(SinkSnapshot {
            name: "archive s3://b/p".into(),
            held_items: 6,
            archive: Some(crate::sink::ArchiveSnapshot {
                objects: 9,
                traces_flushed: [("max_traces", 2)].into_iter().collect(),
                open_traces: 3,
                ..Default::default()
            }),
            ..SinkSnapshot::default()
        });
        let text = prometheus(&s, SystemTime::UNIX_EPOCH + Duration::from_secs(10));
        assert!(
            text.contains("ue_decoder_events_total{signal=\"traces\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("ue_decoder_malformed_events_total{reason=\"bad_otlp\"} 2\n"));
        assert!(text.contains("ue_decoder_kernel_lost_total{cpu=\"1\"} 3\n"));
        assert!(
            text.contains(
                "ue_decoder_sink_items_sent_total{sink=\"otlp-http \\\"a\\\"\\\\b\"} 40\n"
            )
        );
        assert!(text.contains(
            "ue_decoder_sink_dropped_items_total{sink=\"otlp-http \\\"a\\\"\\\\b\",reason=\"queue_full\"} 5\n"
        ));
        assert!(
            text.contains(
                "ue_decoder_sink_failing_seconds{sink=\"otlp-http \\\"a\\\"\\\\b\"} 2.5\n"
            )
        );
        assert!(text.contains("ue_decoder_start_time_seconds 10\n"));
        assert!(text.contains(
            "ue_decoder_sink_disk_corrupt_bytes_total{sink=\"otlp-http \\\"a\\\"\\\\b\"} 13\n"
        ));
        assert!(text.contains("ue_decoder_sink_held_items{sink=\"archive s3://b/p\"} 6\n"));
        assert!(text.contains(
            "ue_decoder_sink_filtered_items_total{sink=\"otlp-http \\\"a\\\"\\\\b\"} 11\n"
        ));
        assert!(text.contains("ue_decoder_archive_objects_total{sink=\"archive s3://b/p\"} 9\n"));
        assert!(text.contains(
            "ue_decoder_archive_traces_flushed_total{sink=\"archive s3://b/p\",reason=\"max_traces\"} 2\n"
        ));
        assert!(text.contains("ue_decoder_archive_open_traces{sink=\"archive s3://b/p\"} 3\n"));
        assert!(
            !text.contains("ue_decoder_archive_objects_total{sink=\"otlp-http"),
            "archive families only for archive sinks"
        );
        let types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types.len(), unique.len());
        assert_eq!(types.len(), 36);
    }

    #[test]
    fn a_sink_failing_past_the_threshold_or_a_stopped_reader_is_unhealthy() {
        let state = AdminState::new(Duration::from_secs(60), SystemTime::now());
        assert!(state.problems().is_empty());
        let mut s = Snapshot::default();
        s.sinks.push(SinkSnapshot {
            name: "otlp-grpc x".into(),
            failing_for: Some(Duration::from_secs(59)),
            ..SinkSnapshot::default()
        });
        state.update(s.clone());
        assert!(state.problems().is_empty(), "within the threshold");
        s.sinks[0].failing_for = Some(Duration::from_secs(61));
        s.sinks[0].last_error = Some("connection refused".into());
        state.update(s);
        let p = state.problems();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("otlp-grpc x") && p[0].contains("connection refused"),
            "{p:?}"
        );
        state.reader_stopped();
        assert_eq!(state.problems().len(), 2);
    }
}
