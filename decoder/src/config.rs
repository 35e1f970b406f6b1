//! The configuration file of `ue-decoder run --config FILE` and `check-config FILE`: TOML
//! that says everything the command line says, and what it cannot: several sinks of one
//! kind with different settings, each with a name, its own signals and a filter.
//!
//! ```toml
//! [reader]
//! signals = ["metrics", "traces"]
//!
//! [[sinks.otlp]]
//! name = "collector"
//! endpoint = "https://collector.example:4318"
//! headers_file = "/etc/ue-decoder/headers"
//!
//! [[sinks.prometheus]]
//! addr = "0.0.0.0:9465"
//! filter = { metrics = ["http.*"] }
//! ```
//!
//! Everything is checked at load, before the daemon touches the kernel: unknown tables and
//! fields, types, addresses, URLs, glob patterns, retry schedules, and the files a sink
//! reads (headers, CA and client certificates, passwords), which are read now so that
//! they need not be readable after a privilege drop. An error names the file, the line and
//! the field: `ue-decoder.toml:12: sinks.otlp[0].endpoint: ...`.
//!
//! The tables and their defaults are the flags' (`ue-decoder run --help`); README's
//! "Configuration file" section lists them all.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::batch::BatchConfig;
use crate::daemon::{AdminConfig, ForwardConfig, RunConfig};
use crate::decode::{Signal, TracepointNames};
use crate::kernel::ReaderConfig;
use crate::sink::{
    ArchiveConfig, ClickHouseConfig, Compression, DiskQueueConfig, Filter, OtlpConfig, Patterns,
    PrometheusConfig, Protocol, RetryConfig, Route, RoutedSink, SinkConfig, SinkError,
    StatsdConfig, StatsdTarget, SyncPolicy, TlsConfig, error_chain, read_headers_file,
};

/// What `ue-decoder run` does, as a configuration file says.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The rings and tracepoints.
    pub reader: ReaderConfig,
    /// The tracepoint of each signal.
    pub tracepoints: TracepointNames,
    /// The signals read.
    pub signals: Vec<Signal>,
    /// Batching, sinks, queues, counters and the admin endpoint.
    pub run: RunConfig,
    /// The user to become once the perf events are open (`--user`).
    pub user: Option<String>,
}

/// Why a configuration file was refused: where, which field, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a field has the wrong name or type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// A field's value cannot work.
    #[error("{}:{line}: {field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value (or of its table).
        line: usize,
        /// The field, e.g. `sinks.otlp[0].endpoint`.
        field: String,
        /// Why.
        message: String,
    },
}

impl AgentConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, the contents of the file at `path` (named in errors; the paths in
    /// the file are taken as they are, relative ones from the working directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileTable = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_column(text, span.start));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        let at = Locator { text, path };
        file.build(&at)
    }

    /// One line per sink: its name, signals and filter; for `check-config`.
    pub fn describe_sinks(&self) -> Vec<String> {
        self.run
            .forward
            .sinks
            .iter()
            .map(|s| {
                let signals: Vec<&str> = Signal::ALL
                    .into_iter()
                    .filter(|sig| s.takes(*sig))
                    .map(Signal::as_str)
                    .collect();
                let mut line = format!("{}: {}", s.name(), signals.join(","));
                if !s.route.filter.is_empty() {
                    line.push_str(&format!(" (filter {:?})", s.route.filter));
                }
                line
            })
            .collect()
    }
}

/// Turns spans into `FILE:LINE: FIELD: message` errors.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator<'_> {
    fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: line_column(self.text, span.start).0,
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// The 1-based line and column of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

// The file's shape. Every table refuses fields it does not know, so a misspelt one is an
// error rather than a silently ignored setting.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileTable {
    #[serde(default)]
    reader: ReaderTable,
    #[serde(default)]
    batch: BatchTable,
    #[serde(default)]
    queue: QueueTable,
    #[serde(default)]
    daemon: DaemonTable,
    admin: Option<Spanned<AdminTable>>,
    #[serde(default)]
    sinks: SinksTable,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReaderTable {
    signals: Option<Vec<SignalName>>,
    tracefs: Option<PathBuf>,
    ring_kib: Option<usize>,
    wakeup_bytes: Option<usize>,
    register: Option<bool>,
    #[serde(default)]
    eventheader: Vec<String>,
    metrics_tracepoint: Option<String>,
    traces_tracepoint: Option<String>,
    logs_tracepoint: Option<String>,
    writer_identity: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SignalName {
    Metrics,
    Traces,
    Logs,
}

impl From<SignalName> for Signal {
    fn from(s: SignalName) -> Self {
        match s {
            SignalName::Metrics => Signal::Metrics,
            SignalName::Traces => Signal::Traces,
            SignalName::Logs => Signal::Logs,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BatchTable {
    items: Option<u64>,
    bytes: Option<usize>,
    delay_ms: Option<u64>,
    merge: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QueueTable {
    memory_mib: Option<usize>,
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    sync: Option<Spanned<SyncValue>>,
    compression_threads: Option<Spanned<usize>>,
}

/// `sync = 100` (milliseconds), `"100"`, `"batch"` or `"never"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SyncValue {
    Millis(u64),
    Word(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DaemonTable {
    user: Option<String>,
    shutdown_secs: Option<u64>,
    stats_secs: Option<u64>,
    self_metrics: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminTable {
    addr: Spanned<String>,
    unhealthy_after_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SinksTable {
    #[serde(default)]
    otlp: Vec<Spanned<OtlpTable>>,
    #[serde(default)]
    prometheus: Vec<Spanned<PrometheusTable>>,
    #[serde(default)]
    statsd: Vec<Spanned<StatsdTable>>,
    #[serde(default)]
    stdout: Vec<Spanned<StdoutTable>>,
    #[serde(default)]
    file: Vec<Spanned<FileSinkTable>>,
    #[serde(default)]
    clickhouse: Vec<Spanned<ClickHouseTable>>,
    #[serde(default)]
    archive: Vec<Spanned<ArchiveTable>>,
}

/// What every sink table may say besides its own settings. (Repeated in each table rather
/// than flattened: serde cannot refuse unknown fields through `flatten`.)
struct Common<'a> {
    name: &'a Option<String>,
    signals: &'a Option<Spanned<Vec<SignalName>>>,
    filter: &'a Option<Spanned<FilterTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterTable {
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    exclude_metrics: Vec<String>,
    #[serde(default)]
    spans: Vec<String>,
    #[serde(default)]
    exclude_spans: Vec<String>,
    /// Attribute name to one pattern or a list of them.
    #[serde(default)]
    resource: BTreeMap<String, OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTable {
    /// 0: no retries.
    max_elapsed_secs: Option<u64>,
    initial_ms: Option<u64>,
    max_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    endpoint: Spanned<String>,
    protocol: Option<ProtocolName>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    headers_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    client_cert: Option<Spanned<PathBuf>>,
    client_key: Option<Spanned<PathBuf>>,
    timeout_ms: Option<u64>,
    compression: Option<CompressionName>,
    max_inflight: Option<Spanned<usize>>,
    retry: Option<Spanned<RetryTable>>,
}

#[derive(Deserialize, Clone, Copy)]
enum ProtocolName {
    #[serde(rename = "http/protobuf", alias = "http")]
    Http,
    #[serde(rename = "grpc")]
    Grpc,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum CompressionName {
    Gzip,
    Zstd,
    None,
}

impl From<CompressionName> for Compression {
    fn from(c: CompressionName) -> Self {
        match c {
            CompressionName::Gzip => Compression::Gzip,
            CompressionName::Zstd => Compression::Zstd,
            CompressionName::None => Compression::None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    addr: Spanned<String>,
    staleness_secs: Option<u64>,
    max_series: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsdTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    addr: Option<Spanned<String>>,
    socket: Option<PathBuf>,
    max_datagram: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StdoutTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSinkTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickHouseTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    url: Spanned<String>,
    database: Option<String>,
    table_prefix: Option<String>,
    user: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    create_tables: Option<bool>,
    gzip: Option<bool>,
    timeout_ms: Option<u64>,
    max_inflight: Option<Spanned<usize>>,
    retry: Option<Spanned<RetryTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveTable {
    name: Option<String>,
    signals: Option<Spanned<Vec<SignalName>>>,
    filter: Option<Spanned<FilterTable>>,
    url: Spanned<String>,
    endpoint: Option<String>,
    region: Option<String>,
    trace_idle_ms: Option<u64>,
    trace_max_age_ms: Option<u64>,
    max_traces: Option<usize>,
    buffer_mib: Option<usize>,
    notify_url: Option<Spanned<String>>,
    retry: Option<Spanned<RetryTable>>,
}

/// `common()` of every sink table: the fields all of them have.
macro_rules! common_fields {
    ($($table:ty),*) => {
        $(impl $table {
            fn common(&self) -> Common<'_> {
                Common {
                    name: &self.name,
                    signals: &self.signals,
                    filter: &self.filter,
                }
            }
        })*
    };
}

common_fields!(
    OtlpTable,
    PrometheusTable,
    StatsdTable,
    StdoutTable,
    FileSinkTable,
    ClickHouseTable,
    ArchiveTable
);

impl FileTable {
    fn build(self, at: &Locator<'_>) -> Result<AgentConfig, ConfigError> {
        let r = self.reader;
        let defaults = ReaderConfig::default();
        let reader = ReaderConfig {
            tracefs: r.tracefs,
            ring_kib: r.ring_kib.unwrap_or(defaults.ring_kib),
            wakeup_bytes: r.wakeup_bytes.unwrap_or(defaults.wakeup_bytes),
            register: r.register.unwrap_or(defaults.register),
            eventheader_providers: r.eventheader,
            ..defaults
        };
        let tracepoints = TracepointNames {
            metrics: r
                .metrics_tracepoint
                .unwrap_or_else(|| Signal::Metrics.default_tracepoint().into()),
            traces: r
                .traces_tracepoint
                .unwrap_or_else(|| Signal::Traces.default_tracepoint().into()),
            logs: r
                .logs_tracepoint
                .unwrap_or_else(|| Signal::Logs.default_tracepoint().into()),
        };
        let signals = r.signals.map_or_else(
            || Signal::ALL.to_vec(),
            |s| s.into_iter().map(Signal::from).collect(),
        );

        let sinks = self.sinks.build(at)?;
        if sinks.is_empty() {
            return Err(at.error(
                0..0,
                "sinks",
                "no sink: add at least one [[sinks.otlp]], [[sinks.prometheus]], [[sinks.statsd]], [[sinks.stdout]], [[sinks.file]], [[sinks.clickhouse]] or [[sinks.archive]]",
            ));
        }

        let batch_defaults = BatchConfig::default();
        let b = self.batch;
        let forward_defaults = ForwardConfig::default();
        let q = self.queue;
        let sync = match q.sync {
            None => SyncPolicy::default(),
            Some(s) => {
                let span = s.span();
                match s.into_inner() {
                    SyncValue::Millis(0) => SyncPolicy::EveryBatch,
                    SyncValue::Millis(ms) => SyncPolicy::Interval(Duration::from_millis(ms)),
                    SyncValue::Word(w) => w
                        .parse()
                        .map_err(|e: String| at.error(span, "queue.sync", e))?,
                }
            }
        };
        let compression_threads = match q.compression_threads {
            None => forward_defaults.compression_threads,
            Some(n) if *n.get_ref() == 0 => {
                return Err(at.error(n.span(), "queue.compression_threads", "must be at least 1"));
            }
            Some(n) => n.into_inner(),
        };
        let d = self.daemon;
        let admin = match self.admin {
            None => None,
            Some(a) => {
                let a = a.into_inner();
                Some(AdminConfig {
                    addr: socket_addr(&a.addr, "admin.addr", at)?,
                    unhealthy_after: Duration::from_secs(a.unhealthy_after_secs.unwrap_or(300)),
                })
            }
        };
        let run = RunConfig {
            forward: ForwardConfig {
                batch: BatchConfig {
                    max_items: b.items.unwrap_or(batch_defaults.max_items),
                    max_bytes: b.bytes.unwrap_or(batch_defaults.max_bytes),
                    max_delay: b
                        .delay_ms
                        .map_or(batch_defaults.max_delay, Duration::from_millis),
                    merge: b.merge.unwrap_or(batch_defaults.merge),
                },
                sinks,
                queue_bytes: q
                    .memory_mib
                    .map_or(forward_defaults.queue_bytes, |m| m << 20),
                disk_queue: q.dir.map(|dir| DiskQueueConfig {
                    dir,
                    max_bytes: q.max_bytes.unwrap_or(1 << 30),
                    sync,
                }),
                shutdown_deadline: d
                    .shutdown_secs
                    .map_or(forward_defaults.shutdown_deadline, Duration::from_secs),
                compression_threads,
            },
            stats_interval: Duration::from_secs(d.stats_secs.unwrap_or(10).max(1)),
            self_metrics: d.self_metrics.unwrap_or(false),
            admin,
            writer_identity: r.writer_identity.unwrap_or(true),
        };
        Ok(AgentConfig {
            reader,
            tracepoints,
            signals,
            run,
            user: d.user,
        })
    }
}

impl SinksTable {
    /// Every sink, in the file's order; names unique.
    fn build(self, at: &Locator<'_>) -> Result<Vec<RoutedSink>, ConfigError> {
        let mut sinks: Vec<(Range<usize>, String, RoutedSink)> = Vec::new();
        macro_rules! each {
            ($list:expr, $kind:literal, $build:expr) => {
                for (i, table) in $list.into_iter().enumerate() {
                    let span = table.span();
                    let field = format!("sinks.{}[{i}]", $kind);
                    let table = table.into_inner();
                    #[allow(clippy::redundant_closure_call)]
                    let sink: RoutedSink = ($build)(&table, &field, span.clone())?;
                    sinks.push((span, field, sink));
                }
            };
        }
        each!(self.otlp, "otlp", |t: &OtlpTable, field: &str, span| t
            .build(field, span, at));
        each!(
            self.prometheus,
            "prometheus",
            |t: &PrometheusTable, field: &str, span| {
                let config = PrometheusConfig {
                    staleness: Duration::from_secs(t.staleness_secs.unwrap_or(300)),
                    max_series: t.max_series.unwrap_or(100_000),
                    ..PrometheusConfig::new(socket_addr(&t.addr, &format!("{field}.addr"), at)?)
                };
                routed(SinkConfig::Prometheus(config), t.common(), field, span, at)
            }
        );
        each!(
            self.statsd,
            "statsd",
            |t: &StatsdTable, field: &str, span: Range<usize>| {
                let target = match (&t.addr, &t.socket) {
                    (Some(addr), None) => {
                        StatsdTarget::Udp(resolve(addr, &format!("{field}.addr"), at)?)
                    }
                    (None, Some(path)) => StatsdTarget::Unix(path.clone()),
                    _ => {
                        return Err(at.error(span.clone(), field.to_owned(), "give `addr` (UDP host:port) or `socket` (a Unix datagram socket), not both"));
                    }
                };
                let mut config = StatsdConfig::new(target);
                if let Some(max) = t.max_datagram {
                    config.max_datagram = max;
                }
                routed(SinkConfig::Statsd(config), t.common(), field, span, at)
            }
        );
        each!(
            self.stdout,
            "stdout",
            |t: &StdoutTable, field: &str, span| {
                routed(SinkConfig::Stdout, t.common(), field, span, at)
            }
        );
        each!(self.file, "file", |t: &FileSinkTable, field: &str, span| {
            routed(
                SinkConfig::File(t.path.clone()),
                t.common(),
                field,
                span,
                at,
            )
        });
        each!(
            self.clickhouse,
            "clickhouse",
            |t: &ClickHouseTable, field: &str, span| t.build(field, span, at)
        );
        each!(
            self.archive,
            "archive",
            |t: &ArchiveTable, field: &str, span| t.build(field, span, at)
        );

        // In the file's order.
        sinks.sort_by_key(|(span, _, _)| span.start);
        for (i, (span, field, sink)) in sinks.iter().enumerate() {
            let name = sink.name();
            if let Some((_, other, _)) = sinks[..i].iter().find(|(_, _, s)| s.name() == name) {
                return Err(at.error(
                    span.clone(),
                    field.clone(),
                    format!("the name {name:?} is {other}'s too: give one of them a `name`"),
                ));
            }
        }
        Ok(sinks.into_iter().map(|(_, _, sink)| sink).collect())
    }
}

/// `config` with the name, signals and filter of its table.
fn routed(
    config: SinkConfig,
    common: Common<'_>,
    field: &str,
    table: Range<usize>,
    at: &Locator<'_>,
) -> Result<RoutedSink, ConfigError> {
    let mut signals = Vec::new();
    if let Some(list) = common.signals {
        for s in list.get_ref() {
            let signal = Signal::from(*s);
            if !config.takes(signal) {
                return Err(at.error(
                    list.span(),
                    format!("{field}.signals"),
                    format!("this sink takes metrics only, not {}", signal.as_str()),
                ));
            }
            if !signals.contains(&signal) {
                signals.push(signal);
            }
        }
        if signals.is_empty() {
            return Err(at.error(
                list.span(),
                format!("{field}.signals"),
                "empty: the sink would take nothing (remove the sink instead)",
            ));
        }
    }
    let filter = match common.filter {
        None => Filter::default(),
        Some(f) => filter(f, &format!("{field}.filter"), at)?,
    };
    if let Some(name) = common.name
        && name.trim().is_empty()
    {
        return Err(at.error(table, format!("{field}.name"), "empty"));
    }
    Ok(RoutedSink {
        config,
        name: common.name.clone(),
        route: Route { signals, filter },
    })
}

fn filter(
    table: &Spanned<FilterTable>,
    field: &str,
    at: &Locator<'_>,
) -> Result<Filter, ConfigError> {
    let span = table.span();
    let t = table.get_ref();
    let compile = |list: &[String], name: &str| {
        Patterns::new(list).map_err(|e| at.error(span.clone(), format!("{field}.{name}"), e))
    };
    let mut resource = Vec::new();
    for (key, patterns) in &t.resource {
        let list = match patterns {
            OneOrMany::One(p) => vec![p.clone()],
            OneOrMany::Many(list) => list.clone(),
        };
        if list.is_empty() {
            return Err(at.error(
                span.clone(),
                format!("{field}.resource.{key}"),
                "no pattern: no resource would match",
            ));
        }
        resource.push((key.clone(), compile(&list, &format!("resource.{key}"))?));
    }
    Ok(Filter {
        metrics: compile(&t.metrics, "metrics")?,
        exclude_metrics: compile(&t.exclude_metrics, "exclude_metrics")?,
        spans: compile(&t.spans, "spans")?,
        exclude_spans: compile(&t.exclude_spans, "exclude_spans")?,
        resource,
    })
}

fn retry(
    table: Option<&Spanned<RetryTable>>,
    field: &str,
    at: &Locator<'_>,
) -> Result<RetryConfig, ConfigError> {
    let defaults = RetryConfig::default();
    let Some(table) = table else {
        return Ok(defaults);
    };
    let t = table.get_ref();
    let max_elapsed = t
        .max_elapsed_secs
        .map_or(defaults.max_elapsed, Duration::from_secs);
    let config = RetryConfig {
        enabled: t.max_elapsed_secs != Some(0),
        initial_interval: t
            .initial_ms
            .map_or(defaults.initial_interval, Duration::from_millis),
        max_interval: t
            .max_interval_ms
            .map_or(defaults.max_interval, Duration::from_millis),
        max_elapsed,
        ..defaults
    };
    config
        .validate()
        .map_err(|e| at.error(table.span(), format!("{field}.retry"), e))?;
    Ok(config)
}

fn socket_addr(
    addr: &Spanned<String>,
    field: &str,
    at: &Locator<'_>,
) -> Result<SocketAddr, ConfigError> {
    addr.get_ref().parse().map_err(|e| {
        at.error(
            addr.span(),
            field,
            format!("{:?} is not an IP address and port: {e}", addr.get_ref()),
        )
    })
}

/// `host:port`, resolved now, as `--statsd-addr` is.
fn resolve(
    addr: &Spanned<String>,
    field: &str,
    at: &Locator<'_>,
) -> Result<SocketAddr, ConfigError> {
    addr.get_ref()
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
        .map_err(|e| at.error(addr.span(), field, format!("{:?}: {e}", addr.get_ref())))
}

/// An `http://` or `https://` URL (gRPC endpoints may leave the scheme out).
fn check_url(
    url: &Spanned<String>,
    field: &str,
    scheme_optional: bool,
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    let text = url.get_ref();
    let full = if scheme_optional && !text.contains("://") {
        format!("http://{text}")
    } else {
        text.clone()
    };
    match url::Url::parse(&full) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(at.error(
            url.span(),
            field,
            format!(
                "{text:?}: expected http:// or https:// and a host, not {}://",
                u.scheme()
            ),
        )),
        Err(e) => Err(at.error(url.span(), field, format!("{text:?}: {e}"))),
    }
}

fn max_inflight(
    n: Option<&Spanned<usize>>,
    default: usize,
    field: &str,
    at: &Locator<'_>,
) -> Result<usize, ConfigError> {
    match n {
        None => Ok(default),
        Some(n) if *n.get_ref() == 0 => Err(at.error(
            n.span(),
            format!("{field}.max_inflight"),
            "must be at least 1",
        )),
        Some(n) => Ok(*n.get_ref()),
    }
}

/// Reads a file the sink needs, naming the field that gave it if it cannot.
fn read<T>(
    path: &Spanned<PathBuf>,
    field: &str,
    at: &Locator<'_>,
    f: impl FnOnce(&Path) -> Result<T, SinkError>,
) -> Result<T, ConfigError> {
    f(path.get_ref()).map_err(|e| at.error(path.span(), field, error_chain(&e)))
}

impl OtlpTable {
    fn build(
        &self,
        field: &str,
        span: Range<usize>,
        at: &Locator<'_>,
    ) -> Result<RoutedSink, ConfigError> {
        let protocol = match self.protocol {
            Some(ProtocolName::Grpc) => Protocol::Grpc,
            Some(ProtocolName::Http) | None => Protocol::HttpProtobuf,
        };
        check_url(
            &self.endpoint,
            &format!("{field}.endpoint"),
            protocol == Protocol::Grpc,
            at,
        )?;
        let mut headers: Vec<(String, String)> = self.headers.clone().into_iter().collect();
        if let Some(path) = &self.headers_file {
            headers.extend(read(
                path,
                &format!("{field}.headers_file"),
                at,
                read_headers_file,
            )?);
        }
        let pem = |p: &Option<Spanned<PathBuf>>, name: &str| {
            p.as_ref()
                .map(|p| {
                    read(
                        p,
                        &format!("{field}.{name}"),
                        at,
                        crate::sink::PemFile::read,
                    )
                })
                .transpose()
        };
        let tls = TlsConfig {
            ca: pem(&self.ca_file, "ca_file")?,
            client_cert: pem(&self.client_cert, "client_cert")?,
            client_key: pem(&self.client_key, "client_key")?,
        };
        let config = SinkConfig::Otlp(OtlpConfig {
            protocol,
            endpoint: self.endpoint.get_ref().clone(),
            headers,
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(10_000)),
            compression: self.compression.map_or(Compression::Gzip, Into::into),
            retry: retry(self.retry.as_ref(), field, at)?,
            tls,
            max_inflight: max_inflight(self.max_inflight.as_ref(), 4, field, at)?,
        });
        // The certificates and key hold what they should, and TLS is on an https:// URL.
        config.check().map_err(|e| {
            at.error(
                self.endpoint.span(),
                format!("{field}.endpoint"),
                error_chain(&e),
            )
        })?;
        routed(config, self.common(), field, span, at)
    }
}

impl ClickHouseTable {
    fn build(
        &self,
        field: &str,
        span: Range<usize>,
        at: &Locator<'_>,
    ) -> Result<RoutedSink, ConfigError> {
        check_url(&self.url, &format!("{field}.url"), false, at)?;
        let password = self
            .password_file
            .as_ref()
            .map(|p| {
                read(
                    p,
                    &format!("{field}.password_file"),
                    at,
                    ClickHouseConfig::read_password,
                )
            })
            .transpose()?;
        if password.is_some() && self.user.is_none() {
            return Err(at.error(
                self.url.span(),
                format!("{field}.password_file"),
                "needs `user`",
            ));
        }
        let defaults = ClickHouseConfig::default();
        let config = SinkConfig::ClickHouse(ClickHouseConfig {
            url: self.url.get_ref().clone(),
            database: self.database.clone().unwrap_or(defaults.database.clone()),
            table_prefix: self
                .table_prefix
                .clone()
                .unwrap_or(defaults.table_prefix.clone()),
            user: self.user.clone(),
            password,
            headers: self.headers.clone().into_iter().collect(),
            create_tables: self.create_tables.unwrap_or(true),
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(10_000)),
            compression: if self.gzip.unwrap_or(false) {
                Compression::Gzip
            } else {
                Compression::None
            },
            retry: retry(self.retry.as_ref(), field, at)?,
            max_inflight: max_inflight(
                self.max_inflight.as_ref(),
                defaults.max_inflight,
                field,
                at,
            )?,
        });
        routed(config, self.common(), field, span, at)
    }
}

impl ArchiveTable {
    fn build(
        &self,
        field: &str,
        span: Range<usize>,
        at: &Locator<'_>,
    ) -> Result<RoutedSink, ConfigError> {
        let url = self.url.get_ref();
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "s3" | "gs" | "az" | "file") => {}
            Ok(u) => {
                return Err(at.error(
                    self.url.span(),
                    format!("{field}.url"),
                    format!(
                        "{url:?}: expected s3://, gs://, az:// or file://, not {}://",
                        u.scheme()
                    ),
                ));
            }
            Err(e) => {
                return Err(at.error(
                    self.url.span(),
                    format!("{field}.url"),
                    format!("{url:?}: {e}"),
                ));
            }
        }
        if let Some(notify) = &self.notify_url {
            check_url(notify, &format!("{field}.notify_url"), false, at)?;
        }
        let defaults = ArchiveConfig::new(url.clone());
        let config = SinkConfig::Archive(ArchiveConfig {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            trace_idle: self
                .trace_idle_ms
                .map_or(defaults.trace_idle, Duration::from_millis),
            trace_max_age: self
                .trace_max_age_ms
                .map_or(defaults.trace_max_age, Duration::from_millis),
            max_open_traces: self.max_traces.unwrap_or(defaults.max_open_traces),
            max_buffer_bytes: self
                .buffer_mib
                .map_or(defaults.max_buffer_bytes, |m| m << 20),
            retry: retry(self.retry.as_ref(), field, at)?,
            notify_url: self.notify_url.as_ref().map(|u| u.get_ref().clone()),
            ..defaults
        });
        routed(config, self.common(), field, span, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("ue.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_and_columns_count_from_one() {
        assert_eq!(line_column("a\nbc\n", 0), (1, 1));
        assert_eq!(line_column("a\nbc\n", 3), (2, 2));
        assert_eq!(line_column("a\nbc\n", 99), (3, 1));
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let c = parse("[[sinks.stdout]]\n").unwrap();
        assert_eq!(c.signals, Signal::ALL);
        assert_eq!(c.reader.ring_kib, 1024);
        assert_eq!(c.tracepoints.metrics, "otlp_metrics");
        let f = &c.run.forward;
        assert_eq!(f.batch, BatchConfig::default());
        assert_eq!(f.queue_bytes, 64 << 20);
        assert_eq!(f.sinks, [RoutedSink::from(SinkConfig::Stdout)]);
        assert!(c.run.writer_identity);
        assert!(c.run.admin.is_none());
    }

    #[test]
    fn a_misspelt_field_names_its_line() {
        let err = parse("[[sinks.otlp]]\nendpoint = \"http://a:4318\"\ncompresion = \"zstd\"\n")
            .unwrap_err();
        assert!(
            err.starts_with("ue.toml:3:1: unknown field `compresion`"),
            "{err}"
        );
    }

    #[test]
    fn two_sinks_of_one_kind_need_two_names() {
        let text = "[[sinks.stdout]]\n[[sinks.stdout]]\nsignals = [\"logs\"]\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with("ue.toml:2: sinks.stdout[1]: the name \"stdout\""),
            "{err}"
        );
        let ok =
            parse("[[sinks.stdout]]\n[[sinks.stdout]]\nname = \"logs\"\nsignals = [\"logs\"]\n")
                .unwrap();
        assert_eq!(ok.run.forward.sinks.len(), 2);
        assert_eq!(ok.run.forward.sinks[1].route.signals, [Signal::Logs]);
    }
}
