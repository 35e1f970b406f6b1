//! Which batches each sink takes: [`Route`] names its signals and a [`Filter`] on metric
//! names, span names and resource attributes, the per-exporter filters of a fan-out
//! dispatcher. A sink without a filter gets the very batch every other sink gets (shared,
//! not copied); a filtered sink gets a batch of the items its filter keeps, decoded once
//! per batch however many sinks filter it, and counts the items it left out
//! (`filtered_items`).

use std::fmt;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
use ue_proto::resource::v1::Resource;

use super::SinkConfig;
use crate::batch::Batch;
use crate::decode::{Request, Signal};

/// A sink to start, with its name and what it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutedSink {
    /// What the sink is and where it sends.
    pub config: SinkConfig,
    /// Its name in counters, logs and its queue directory; `None`: the kind and
    /// destination, e.g. `otlp-http http://127.0.0.1:4318` ([`SinkConfig::name`]).
    pub name: Option<String>,
    /// Which batches and items it takes.
    pub route: Route,
}

impl RoutedSink {
    /// The name the sink runs under.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.config.name())
    }

    /// Whether it takes batches of `signal`: its route allows it and the sink can send it
    /// (DogStatsD and Prometheus take metrics only).
    pub(crate) fn takes(&self, signal: Signal) -> bool {
        self.config.takes(signal)
            && (self.route.signals.is_empty() || self.route.signals.contains(&signal))
    }
}

impl From<SinkConfig> for RoutedSink {
    /// The sink under its own name, taking everything it can send.
    fn from(config: SinkConfig) -> Self {
        Self {
            config,
            name: None,
            route: Route::default(),
        }
    }
}

/// The signals and items a sink takes. The default takes everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    /// The signals it takes; empty: all.
    pub signals: Vec<Signal>,
    /// Which of their items it takes.
    pub filter: Filter,
}

/// Which items a sink takes, by glob patterns (`*`, `?`, `[a-z]`, `{a,b}`; matched
/// against the whole name, case-sensitively). Every condition given must hold; an empty
/// list is no condition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Metrics whose name matches one of these (empty: every metric).
    pub metrics: Patterns,
    /// ... and none of these.
    pub exclude_metrics: Patterns,
    /// Spans whose name matches one of these (empty: every span).
    pub spans: Patterns,
    /// ... and none of these.
    pub exclude_spans: Patterns,
    /// Items of resources that have each of these attributes with a value that matches
    /// its patterns (a string as it is; an int, double or bool as its decimal or
    /// `true`/`false`), e.g. `service.name` matching `checkout*`.
    pub resource: Vec<(String, Patterns)>,
}

impl Filter {
    /// Whether the filter keeps every item of every batch.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
            && self.exclude_metrics.is_empty()
            && self.spans.is_empty()
            && self.exclude_spans.is_empty()
            && self.resource.is_empty()
    }

    /// What the filter leaves of `batch`: the batch itself (shared) when it keeps
    /// everything, `None` when it keeps nothing, otherwise a new batch of what it keeps.
    /// Also returns how many items it left out. A batch that does not decode (never the
    /// case for the checked bytes the daemon batches) is kept whole: a filter never
    /// decides to lose what it cannot read.
    pub(crate) fn apply(&self, batch: &Arc<Batch>) -> (Option<Arc<Batch>>, u64) {
        if self.is_empty() || !self.concerns(batch.signal()) {
            return (Some(Arc::clone(batch)), 0);
        }
        let Ok(request) = batch.request() else {
            return (Some(Arc::clone(batch)), 0);
        };
        let mut kept = request.clone();
        self.retain(&mut kept);
        let items = kept.items();
        let left_out = batch.items.saturating_sub(items);
        if left_out == 0 {
            (Some(Arc::clone(batch)), 0)
        } else if items == 0 {
            (None, left_out)
        } else {
            (Some(Arc::new(Batch::new(kept))), left_out)
        }
    }

    /// Whether any condition applies to items of `signal`.
    fn concerns(&self, signal: Signal) -> bool {
        !self.resource.is_empty()
            || match signal {
                Signal::Metrics => !self.metrics.is_empty() || !self.exclude_metrics.is_empty(),
                Signal::Traces => !self.spans.is_empty() || !self.exclude_spans.is_empty(),
                Signal::Logs => false,
            }
    }

    /// Removes from `request` what the filter does not keep, and the resources and scopes
    /// left empty.
    fn retain(&self, request: &mut Request) {
        match request {
            Request::Metrics(r) => {
                r.resource_metrics.retain_mut(|rm| {
                    if !self.resource_matches(rm.resource.as_ref()) {
                        return false;
                    }
                    rm.scope_metrics.retain_mut(|sm| {
                        sm.metrics.retain(|m| {
                            self.metrics.includes(&m.name) && !self.exclude_metrics.matches(&m.name)
                        });
                        !sm.metrics.is_empty()
                    });
                    !rm.scope_metrics.is_empty()
                });
            }
            Request::Traces(r) => {
                r.resource_spans.retain_mut(|rs| {
                    if !self.resource_matches(rs.resource.as_ref()) {
                        return false;
                    }
                    rs.scope_spans.retain_mut(|ss| {
                        ss.spans.retain(|s| {
                            self.spans.includes(&s.name) && !self.exclude_spans.matches(&s.name)
                        });
                        !ss.spans.is_empty()
                    });
                    !rs.scope_spans.is_empty()
                });
            }
            Request::Logs(r) => {
                r.resource_logs
                    .retain(|rl| self.resource_matches(rl.resource.as_ref()));
            }
        }
    }

    fn resource_matches(&self, resource: Option<&Resource>) -> bool {
        let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        self.resource.iter().all(|(key, patterns)| {
            attributes
                .iter()
                .rev() // a repeated key: the last one wins, as in a decoder's map
                .find(|kv| kv.key == *key)
                .and_then(value_text)
                .is_some_and(|text| patterns.matches(&text))
        })
    }
}

/// A scalar attribute value as the text a pattern is matched against.
fn value_text(kv: &KeyValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match kv
        .value
        .as_ref()
        .and_then(|v: &AnyValue| v.value.as_ref())?
    {
        any_value::Value::StringValue(s) => Some(Cow::Borrowed(s)),
        any_value::Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        any_value::Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        any_value::Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Glob patterns, compiled once (globset).
#[derive(Clone, Default)]
pub struct Patterns {
    sources: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// Compiles `patterns`; fails naming the first that is not a valid glob.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            // `literal_separator`: `*` crosses dots and slashes alike; names are not paths.
            let glob = Glob::new(p).map_err(|e| format!("pattern {p:?}: {}", e.kind()))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            sources: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            set,
        })
    }

    /// Whether there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        !self.sources.is_empty() && self.set.is_match(name)
    }

    /// Whether `name` is included: no pattern, or one that matches.
    fn includes(&self, name: &str) -> bool {
        self.sources.is_empty() || self.set.is_match(name)
    }

    /// The patterns as written.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.sources).finish()
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
    use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use ue_proto::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
                key_strindex: 0,
            }],
            ..Resource::default()
        })
    }

    fn metrics(services: &[(&str, &[&str])]) -> Arc<Batch> {
        let resource_metrics = services
            .iter()
            .map(|(service, names)| ResourceMetrics {
                resource: resource(service),
                scope_metrics: vec![ScopeMetrics {
                    metrics: names
                        .iter()
                        .map(|n| Metric {
                            name: (*n).into(),
                            data: Some(ue_proto::metrics::v1::metric::Data::Gauge(
                                ue_proto::metrics::v1::Gauge {
                                    data_points: vec![Default::default(); 2],
                                },
                            )),
                            ..Metric::default()
                        })
                        .collect(),
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            })
            .collect();
        Arc::new(Batch::new(Request::Metrics(ExportMetricsServiceRequest {
            resource_metrics,
        })))
    }

    fn spans(names: &[&str]) -> Arc<Batch> {
        Arc::new(Batch::new(Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("api"),
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .map(|n| Span {
                            name: (*n).into(),
                            ..Span::default()
                        })
                        .collect(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        })))
    }

    fn patterns(p: &[&str]) -> Patterns {
        Patterns::new(p).unwrap()
    }

    #[test]
    fn no_filter_shares_the_batch() {
        let batch = metrics(&[("api", &["a", "b"])]);
        let (kept, left_out) = Filter::default().apply(&batch);
        assert!(Arc::ptr_eq(&kept.unwrap(), &batch));
        assert_eq!(left_out, 0);
    }

    #[test]
    fn metric_names_include_then_exclude() {
        let filter = Filter {
            metrics: patterns(&["http.*"]),
            exclude_metrics: patterns(&["http.client.*"]),
            ..Filter::default()
        };
        let batch = metrics(&[(
            "api",
            &["http.server.duration", "http.client.duration", "db.calls"],
        )]);
        let (kept, left_out) = filter.apply(&batch);
        let kept = kept.unwrap();
        assert_eq!((kept.items, left_out), (2, 4));
        let Request::Metrics(r) = kept.request().unwrap() else {
            panic!()
        };
        let names: Vec<_> = r.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["http.server.duration"]);
        // A filter on metric names passes spans untouched.
        let spans = spans(&["GET /"]);
        assert!(Arc::ptr_eq(&filter.apply(&spans).0.unwrap(), &spans));
    }

    #[test]
    fn a_batch_filtered_to_nothing_is_not_sent() {
        let filter = Filter {
            exclude_spans: patterns(&["health*"]),
            ..Filter::default()
        };
        let (kept, left_out) = filter.apply(&spans(&["healthz", "health"]));
        assert!(kept.is_none());
        assert_eq!(left_out, 2);
        let (kept, left_out) = filter.apply(&spans(&["GET /", "healthz"]));
        assert_eq!((kept.unwrap().items, left_out), (1, 1));
    }

    #[test]
    fn resource_attributes_select_whole_resources() {
        let filter = Filter {
            resource: vec![(
                "service.name".into(),
                patterns(&["check*", "pay{ments,outs}"]),
            )],
            ..Filter::default()
        };
        let batch = metrics(&[
            ("checkout", &["a"]),
            ("payments", &["a", "b"]),
            ("search", &["a"]),
        ]);
        let (kept, left_out) = filter.apply(&batch);
        assert_eq!((kept.unwrap().items, left_out), (6, 2));
        // Logs: by resource only; a resource without the attribute does not match.
        let logs = Arc::new(Batch::new(Request::Logs(ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: resource("payments"),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord::default(); 3],
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                },
                ResourceLogs {
                    resource: None,
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord::default()],
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                },
            ],
        })));
        let (kept, left_out) = filter.apply(&logs);
        assert_eq!((kept.unwrap().items, left_out), (3, 1));
    }

    #[test]
    fn patterns_cross_dots_and_reject_bad_globs() {
        let p = patterns(&["http.*"]);
        assert!(p.matches("http.server.request.duration"));
        assert!(!p.matches("xhttp.server"));
        assert!(Patterns::new(&["a[b"]).unwrap_err().contains("a[b"));
    }
}
