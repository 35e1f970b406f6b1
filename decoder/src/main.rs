//! `ue-decoder`: reads OTLP from user_events tracepoints through perf and forwards it to an
//! OpenTelemetry collector; decodes `perf record` captures; checks the host.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{
    ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum,
};
use ue_decoder::{
    AdminConfig, AgentConfig, ArchiveConfig, BatchConfig, ClickHouseConfig, DiskQueueConfig,
    ForwardConfig, OtlpConfig, PerfDataReader, PerfSource, PrometheusConfig, ReaderConfig,
    RetryConfig, RunConfig, Signal, SinkConfig, StatsdConfig, StatsdTarget, TlsConfig,
    TracepointNames,
};
use ue_wire::layout;

#[derive(Parser, Debug)]
#[command(name = "ue-decoder", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for the decoder's own logs (tracing's env-filter syntax).
    #[arg(long, global = true, env = "UE_LOG", default_value = "info")]
    log: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read the tracepoints live and forward batched OTLP until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Decode a `perf record` capture: OTLP/JSON lines on stdout, or forward it.
    Decode(Box<DecodeArgs>),
    /// Check a configuration file (`run --config FILE`) without running: every table,
    /// field, address, URL, pattern and file it names; prints the sinks it sets up.
    CheckConfig {
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Show what this host supports for the live path, and how to fix what is missing.
    Status {
        /// tracefs mount point (default: found in /proc/mounts).
        #[arg(long, env = "UE_TRACEFS")]
        tracefs: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct SinkArgs {
    /// Collector endpoint, e.g. http://127.0.0.1:4318 (HTTP) or http://127.0.0.1:4317 (gRPC).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    endpoint: Option<String>,
    /// OTLP transport to the endpoint.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    protocol: Protocol,
    /// Extra request header (HTTP) or metadata (gRPC), KEY=VALUE; repeatable. Also read from
    /// OTEL_EXPORTER_OTLP_HEADERS (k1=v1,k2=v2, values percent-decoded).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Read more headers from FILE, one `name: value` a line (`#` starts a comment): keeps
    /// secrets such as API keys out of the command line and `ps`.
    #[arg(long, value_name = "FILE")]
    headers_file: Option<PathBuf>,
    /// Trust the collector's certificate only if signed by a CA in this PEM file (instead of
    /// the system's roots); https:// endpoints.
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS; needs --client-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --client-cert.
    #[arg(long, value_name = "FILE", env = "OTEL_EXPORTER_OTLP_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    /// Per-request timeout in milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Request compression.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_COMPRESSION", default_value = "gzip")]
    compression: Compression,
    /// Also write OTLP/JSON lines to stdout.
    #[arg(long)]
    stdout: bool,
    /// Also append OTLP/JSON lines to this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Also send the metrics as DogStatsD lines over UDP to HOST:PORT, e.g. the Datadog
    /// agent's 127.0.0.1:8125.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "statsd_socket")]
    statsd_addr: Option<String>,
    /// Also send the metrics as DogStatsD lines to this Unix datagram socket.
    #[arg(long, value_name = "PATH")]
    statsd_socket: Option<PathBuf>,
    /// Largest DogStatsD datagram (default: 1432 over UDP, 8192 over a Unix socket).
    #[arg(long, value_name = "BYTES")]
    statsd_max_datagram: Option<usize>,
    /// Also insert spans, log records and metric points into ClickHouse tables through its
    /// HTTP interface, e.g. http://127.0.0.1:8123 (tables as the README's ClickHouse section
    /// says, created if missing). Timeout and retries as for --endpoint.
    #[arg(long, value_name = "URL", env = "UE_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// The ClickHouse database of the tables (created if missing).
    #[arg(long, default_value = "default", value_name = "NAME")]
    clickhouse_database: String,
    /// The ClickHouse tables' names start with PREFIX_: otel_traces, otel_logs,
    /// otel_metrics_sum and so on.
    #[arg(long, default_value = "otel", value_name = "PREFIX")]
    clickhouse_table_prefix: String,
    /// The ClickHouse user (HTTP basic authentication; default: the server's `default`).
    #[arg(long, env = "UE_CLICKHOUSE_USER", value_name = "NAME")]
    clickhouse_user: Option<String>,
    /// Read the ClickHouse user's password from the first line of FILE: keeps it out of the
    /// command line and `ps`.
    #[arg(long, value_name = "FILE", requires = "clickhouse_user")]
    clickhouse_password_file: Option<PathBuf>,
    /// Extra request header to ClickHouse (or a proxy in front of it), KEY=VALUE;
    /// repeatable.
    #[arg(long = "clickhouse-header", value_parser = parse_header, value_name = "KEY=VALUE")]
    clickhouse_headers: Vec<(String, String)>,
    /// Do not create the ClickHouse database and tables: inserts into a missing table are
    /// retried until someone creates it.
    #[arg(long)]
    clickhouse_no_create: bool,
    /// Compress ClickHouse request bodies with gzip.
    #[arg(long)]
    clickhouse_gzip: bool,
    /// Also archive everything as gzip'd OTLP/JSON objects: s3://BUCKET/PREFIX,
    /// gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///DIR (spans grouped per trace;
    /// credentials and region from the store's standard environment variables).
    #[arg(long, env = "UE_ARCHIVE_URL", value_name = "URL")]
    archive_url: Option<String>,
    /// The archive's S3-compatible endpoint, e.g. http://127.0.0.1:9000 (http:// allowed).
    #[arg(long, value_name = "URL", requires = "archive_url")]
    archive_endpoint: Option<String>,
    /// The archive's S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION", requires = "archive_url")]
    archive_region: Option<String>,
    /// Write a trace's spans once none joined them for this many milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    archive_trace_idle_ms: u64,
    /// ... or once the trace's first span is this many milliseconds old.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    archive_trace_max_age_ms: u64,
    /// The most traces held open; beyond it the oldest are written early (never dropped).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    archive_max_traces: usize,
    /// The most MiB of spans held open; beyond it the oldest traces are written early.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    archive_buffer_mib: usize,
    /// POST a JSON document (key, url, size, signal, service, trace_id, sequence, items) to
    /// this URL for every object archived, with retries.
    #[arg(long, value_name = "URL", requires = "archive_url")]
    archive_notify_url: Option<String>,
    /// Most bytes each sink may hold queued; what overflows is dropped and counted.
    #[arg(long, default_value_t = 64)]
    queue_mib: usize,
    /// Queue each sink's batches on disk, in a subdirectory of DIR named after the sink,
    /// instead of in memory: written before they count as accepted, kept through collector
    /// outages and restarts, removed once the collector acknowledged them.
    #[arg(long, env = "UE_QUEUE_DIR", value_name = "DIR")]
    queue_dir: Option<PathBuf>,
    /// With --queue-dir: the most bytes each sink's subdirectory may hold; a batch that does
    /// not fit is dropped and counted (queue_full).
    #[arg(long, default_value_t = 1 << 30)]
    queue_max_bytes: u64,
    /// With --queue-dir: when appended batches are forced to disk (fdatasync), which bounds
    /// what a power loss can take (a killed decoder loses nothing accepted): every N
    /// milliseconds (group commit), `batch` (after each batch) or `never` (at shutdown).
    #[arg(long, default_value = "100", value_parser = parse_sync, value_name = "MS|batch|never")]
    queue_sync: ue_decoder::SyncPolicy,
    /// Requests each OTLP sink may have in flight at once (acknowledged in any order).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight: u16,
    /// Threads compressing batches, off the thread that reads the rings.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    compression_threads: u16,
    /// Give up retrying a batch after this many seconds (0: never retry).
    #[arg(long, default_value_t = 300)]
    retry_max_elapsed_secs: u64,
    /// First retry delay in milliseconds (then exponential, with jitter).
    #[arg(long, default_value_t = 5_000)]
    retry_initial_ms: u64,
    /// Longest delay between retries in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    retry_max_interval_ms: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Protocol {
    /// OTLP/HTTP with protobuf bodies.
    #[value(name = "http/protobuf", alias = "http")]
    Http,
    /// OTLP/gRPC.
    Grpc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compression {
    Gzip,
    /// Accepted by the OpenTelemetry Collector over HTTP and gRPC; much cheaper than gzip.
    Zstd,
    None,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Take every setting from this TOML file instead of flags (README, "Configuration
    /// file"): several sinks of one kind, each with its own signals and filter. Refuses any
    /// other flag of `run`, and ignores OTEL_EXPORTER_OTLP_* variables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    sinks: SinkArgs,
    /// Signals to read.
    #[arg(long, value_delimiter = ',', default_value = "metrics,traces,logs")]
    signals: Vec<SignalArg>,
    /// Ring buffer per CPU, in KiB (rounded up to a power of two of pages).
    #[arg(long, default_value_t = 1024)]
    ring_kib: usize,
    /// Wake up when a ring holds this many bytes (batching delay bounds the latency;
    /// a larger value costs fewer wakeups under heavy load, `scripts/ladder.sh`).
    #[arg(long, default_value_t = 1)]
    wakeup_bytes: usize,
    /// Send a batch once it holds this many data points, spans or log records.
    #[arg(long, default_value_t = 8192)]
    batch_items: u64,
    /// Send a batch once its requests reach this many bytes.
    #[arg(long, default_value_t = 4 << 20)]
    batch_bytes: usize,
    /// Send a batch at the latest this many milliseconds after its first item.
    #[arg(long, default_value_t = 200)]
    batch_delay_ms: u64,
    /// Decode the requests and merge those with the same resource and scope before sending,
    /// instead of sending the events' own bytes one after another: smaller batches before
    /// compression, for much more CPU.
    #[arg(long)]
    merge: bool,
    /// On SIGINT/SIGTERM, wait this long for queued and in-flight sends.
    #[arg(long, default_value_t = 10)]
    shutdown_secs: u64,
    /// Log the counters this often.
    #[arg(long, default_value_t = 10)]
    stats_secs: u64,
    /// Also send the decoder's counters as OTLP metrics through the sinks.
    #[arg(long)]
    self_metrics: bool,
    /// Serve the decoder's counters (Prometheus text format) on /metrics, liveness on
    /// /healthz and readiness on /readyz at this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    admin_addr: Option<std::net::SocketAddr>,
    /// Serve the applications' metrics for Prometheus to scrape on http://ADDR/metrics
    /// (OTLP mapped as the OpenTelemetry specification says), e.g. 0.0.0.0:9465.
    #[arg(long, value_name = "ADDR")]
    prometheus_addr: Option<std::net::SocketAddr>,
    /// The Prometheus sink forgets a series not updated for this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    prometheus_staleness_secs: u64,
    /// The most series the Prometheus sink keeps; points of new series beyond it are
    /// dropped and counted (`series_limit`).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    prometheus_max_series: usize,
    /// /healthz fails once a sink has failed every attempt for this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    unhealthy_after_secs: u64,
    /// tracefs mount point (default: found in /proc/mounts).
    #[arg(long, env = "UE_TRACEFS")]
    tracefs: Option<PathBuf>,
    /// Tracepoint the metrics are read from.
    #[arg(long, default_value = layout::METRICS_TRACEPOINT)]
    metrics_tracepoint: String,
    /// Tracepoint the spans are read from.
    #[arg(long, default_value = layout::TRACES_TRACEPOINT)]
    traces_tracepoint: String,
    /// Tracepoint the log records are read from.
    #[arg(long, default_value = layout::LOGS_TRACEPOINT)]
    logs_tracepoint: String,
    /// Do not register the tracepoints; attach only to ones applications registered.
    #[arg(long)]
    no_register: bool,
    /// Also read the EventHeader provider PROVIDER (repeatable): what the upstream
    /// opentelemetry-user-events-logs and -trace crates write, as OTLP logs and spans. Its
    /// tracepoints PROVIDER_L1K1 to _L5K1 are registered (unless --no-register), plus every
    /// PROVIDER_L<level>K<keyword> that exists at start.
    #[arg(long, value_name = "PROVIDER")]
    eventheader: Vec<String>,
    /// Once the perf events are open and the tracepoints registered, become this user (name
    /// or uid; its group too) and clear every capability. Needs to start as root. Without it,
    /// a daemon started as another user than root still clears its capabilities then.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Forward the payloads' resources as written: without the writer as the kernel saw it
    /// (process.pid, user_events.writer.pid and user_events.writer.cgroup_id), and keeping
    /// any user_events.writer.* attributes a payload claims.
    #[arg(long)]
    no_writer_identity: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SignalArg {
    Metrics,
    Traces,
    Logs,
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// A perf.data file from `perf record -e user_events:otlp_metrics -e user_events:otlp_traces
    /// -e user_events:otlp_logs` (any of them), and/or of EventHeader tracepoints
    /// (`-e user_events:PROVIDER_L4K1` ...), which are found and decoded without being named.
    #[arg(value_name = "FILE")]
    capture: PathBuf,
    #[command(flatten)]
    sinks: SinkArgs,
    /// Tracepoint the metrics were recorded from.
    #[arg(long, default_value = layout::METRICS_TRACEPOINT)]
    metrics_tracepoint: String,
    /// Tracepoint the spans were recorded from.
    #[arg(long, default_value = layout::TRACES_TRACEPOINT)]
    traces_tracepoint: String,
    /// Tracepoint the log records were recorded from.
    #[arg(long, default_value = layout::LOGS_TRACEPOINT)]
    logs_tracepoint: String,
    /// With an endpoint: wait this long for the sends to finish.
    #[arg(long, default_value_t = 30)]
    shutdown_secs: u64,
    /// Leave the resources as written: without the writer's pid from the capture's samples
    /// (process.pid, user_events.writer.pid), and keeping any user_events.writer.*
    /// attributes a payload claims.
    #[arg(long)]
    no_writer_identity: bool,
}

fn parse_sync(s: &str) -> Result<ue_decoder::SyncPolicy, String> {
    s.parse()
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// `s` with its `%XX` escapes decoded, as OTEL_EXPORTER_OTLP_HEADERS values are (the W3C
/// Baggage format); a `%` that starts no escape stays as it is.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

impl SinkArgs {
    /// The sinks these arguments ask for; `default_stdout` when none is given. Reads the
    /// headers and PEM files now, so that they need not be readable after a privilege drop.
    fn configs(&self, default_stdout: bool) -> anyhow::Result<Vec<SinkConfig>> {
        let mut headers = self.headers.clone();
        if let Ok(env) = std::env::var("OTEL_EXPORTER_OTLP_HEADERS") {
            for kv in env.split(',').filter(|s| !s.trim().is_empty()) {
                let (k, v) = parse_header(kv)
                    .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: {e}"))?;
                let v = percent_decode(&v)
                    .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_HEADERS: {e}"))?;
                headers.push((k, v));
            }
        }
        if let Some(path) = &self.headers_file {
            headers.extend(ue_decoder::read_headers_file(path)?);
        }
        let tls = if self.endpoint.is_some() {
            TlsConfig::from_files(
                self.ca_file.as_deref(),
                self.client_cert.as_deref(),
                self.client_key.as_deref(),
            )?
        } else {
            TlsConfig::default()
        };
        let retry = self.retry();
        let mut sinks = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            sinks.push(SinkConfig::Otlp(OtlpConfig {
                protocol: self.protocol.into(),
                endpoint: endpoint.clone(),
                headers,
                timeout: Duration::from_millis(self.timeout_ms),
                compression: match self.compression {
                    Compression::Gzip => ue_decoder::Compression::Gzip,
                    Compression::Zstd => ue_decoder::Compression::Zstd,
                    Compression::None => ue_decoder::Compression::None,
                },
                retry: retry.clone(),
                tls,
                max_inflight: usize::from(self.max_inflight),
            }));
        }
        if let Some(url) = &self.clickhouse_url {
            let password = self
                .clickhouse_password_file
                .as_deref()
                .map(ClickHouseConfig::read_password)
                .transpose()?;
            sinks.push(SinkConfig::ClickHouse(ClickHouseConfig {
                url: url.clone(),
                database: self.clickhouse_database.clone(),
                table_prefix: self.clickhouse_table_prefix.clone(),
                user: self.clickhouse_user.clone(),
                password,
                headers: self.clickhouse_headers.clone(),
                create_tables: !self.clickhouse_no_create,
                timeout: Duration::from_millis(self.timeout_ms),
                compression: if self.clickhouse_gzip {
                    ue_decoder::Compression::Gzip
                } else {
                    ue_decoder::Compression::None
                },
                retry,
                ..ClickHouseConfig::default()
            }));
        }
        let statsd = match (&self.statsd_addr, &self.statsd_socket) {
            (Some(addr), _) => {
                use std::net::ToSocketAddrs as _;
                let resolved = addr
                    .to_socket_addrs()
                    .map_err(|e| anyhow::anyhow!("--statsd-addr {addr}: {e}"))?
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--statsd-addr {addr}: no address"))?;
                Some(StatsdTarget::Udp(resolved))
            }
            (None, Some(path)) => Some(StatsdTarget::Unix(path.clone())),
            (None, None) => None,
        };
        if let Some(target) = statsd {
            let mut config = StatsdConfig::new(target);
            if let Some(max) = self.statsd_max_datagram {
                config.max_datagram = max;
            }
            sinks.push(SinkConfig::Statsd(config));
        }
        if let Some(url) = &self.archive_url {
            sinks.push(SinkConfig::Archive(ArchiveConfig {
                endpoint: self.archive_endpoint.clone(),
                region: self.archive_region.clone(),
                trace_idle: Duration::from_millis(self.archive_trace_idle_ms),
                trace_max_age: Duration::from_millis(self.archive_trace_max_age_ms),
                max_open_traces: self.archive_max_traces,
                max_buffer_bytes: self.archive_buffer_mib << 20,
                retry: self.retry(),
                notify_url: self.archive_notify_url.clone(),
                ..ArchiveConfig::new(url.clone())
            }));
        }
        if self.stdout || (default_stdout && sinks.is_empty() && self.file.is_none()) {
            sinks.push(SinkConfig::Stdout);
        }
        if let Some(path) = &self.file {
            sinks.push(SinkConfig::File(path.clone()));
        }
        Ok(sinks)
    }

    /// The retry schedule of the OTLP and archive sinks.
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            enabled: self.retry_max_elapsed_secs > 0,
            initial_interval: Duration::from_millis(self.retry_initial_ms),
            max_interval: Duration::from_millis(self.retry_max_interval_ms),
            max_elapsed: Duration::from_secs(self.retry_max_elapsed_secs),
            ..RetryConfig::default()
        }
    }

    fn forward(&self, sinks: Vec<SinkConfig>, shutdown_secs: u64) -> ForwardConfig {
        ForwardConfig {
            sinks: sinks.into_iter().map(Into::into).collect(),
            queue_bytes: self.queue_mib << 20,
            disk_queue: self.queue_dir.as_ref().map(|dir| DiskQueueConfig {
                dir: dir.clone(),
                max_bytes: self.queue_max_bytes,
                sync: self.queue_sync,
            }),
            shutdown_deadline: Duration::from_secs(shutdown_secs),
            compression_threads: usize::from(self.compression_threads),
            ..ForwardConfig::default()
        }
    }
}

impl From<Protocol> for ue_decoder::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Http => Self::HttpProtobuf,
            Protocol::Grpc => Self::Grpc,
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Status { tracefs } => return status(tracefs),
        Command::CheckConfig { file } => check_config(&file),
        Command::Run(args) => match matches.subcommand_matches("run") {
            Some(m) => run(*args, m),
            None => unreachable!("clap matched the run subcommand"),
        },
        Command::Decode(args) => decode(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ue-decoder: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(tracefs: Option<PathBuf>) -> ExitCode {
    let checks = ue_decoder::host_status(tracefs.as_deref());
    for c in &checks {
        println!("{c}");
    }
    if checks.iter().all(|c| c.ok) {
        println!("this host can run the live path");
        ExitCode::SUCCESS
    } else {
        println!("this host cannot run the live path yet: see the fixes above");
        ExitCode::FAILURE
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let agent = AgentConfig::from_file(file)?;
    println!("{}: ok", file.display());
    for sink in agent.describe_sinks() {
        println!("  sink {sink}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `run` does: from the file of `--config`, or from the flags.
fn agent(args: RunArgs, matches: &ArgMatches) -> anyhow::Result<AgentConfig> {
    let Some(file) = &args.config else {
        return args.into_agent();
    };
    // One source of truth: a flag next to --config would be silently overridden by the file,
    // or override it, and either surprises someone reading the other.
    let mut flags = Vec::new();
    let mut ignored = Vec::new();
    let command = Cli::command();
    let run = command
        .find_subcommand("run")
        .expect("the run subcommand exists");
    for arg in run.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "config" || id == "log" {
            continue;
        }
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => flags.push(format!("--{}", id.replace('_', "-"))),
            Some(ValueSource::EnvVariable) => ignored.push(id.to_owned()),
            _ => {}
        }
    }
    if !flags.is_empty() {
        anyhow::bail!(
            "--config {} takes every setting from the file: move {} into it",
            file.display(),
            flags.join(", ")
        );
    }
    if !ignored.is_empty() {
        eprintln!(
            "ue-decoder: ignoring the environment's settings for {} (--config {} decides)",
            ignored.join(", "),
            file.display()
        );
    }
    Ok(AgentConfig::from_file(file)?)
}

impl RunArgs {
    /// The flags' configuration.
    fn into_agent(self) -> anyhow::Result<AgentConfig> {
        let mut sinks = self.sinks.configs(false)?;
        if let Some(addr) = self.prometheus_addr {
            sinks.push(SinkConfig::Prometheus(PrometheusConfig {
                staleness: Duration::from_secs(self.prometheus_staleness_secs),
                max_series: self.prometheus_max_series,
                ..PrometheusConfig::new(addr)
            }));
        }
        if sinks.is_empty() {
            anyhow::bail!(
                "nowhere to send: give --endpoint URL (or OTEL_EXPORTER_OTLP_ENDPOINT), --stdout, --file, --statsd-addr, --prometheus-addr, --clickhouse-url or --archive-url, or --config FILE"
            );
        }
        for sink in &sinks {
            sink.check()?;
        }
        let tracepoints = TracepointNames {
            metrics: self.metrics_tracepoint,
            traces: self.traces_tracepoint,
            logs: self.logs_tracepoint,
        };
        let reader = ReaderConfig {
            tracefs: self.tracefs,
            ring_kib: self.ring_kib,
            wakeup_bytes: self.wakeup_bytes,
            register: !self.no_register,
            eventheader_providers: self.eventheader,
            ..ReaderConfig::default()
        };
        let signals: Vec<Signal> = self.signals.iter().map(|s| (*s).into()).collect();
        let run = RunConfig {
            forward: ForwardConfig {
                batch: BatchConfig {
                    max_items: self.batch_items,
                    max_bytes: self.batch_bytes,
                    max_delay: Duration::from_millis(self.batch_delay_ms),
                    merge: self.merge,
                },
                ..self.sinks.forward(sinks, self.shutdown_secs)
            },
            stats_interval: Duration::from_secs(self.stats_secs.max(1)),
            self_metrics: self.self_metrics,
            admin: self.admin_addr.map(|addr| AdminConfig {
                addr,
                unhealthy_after: Duration::from_secs(self.unhealthy_after_secs),
            }),
            writer_identity: !self.no_writer_identity,
        };
        Ok(AgentConfig {
            reader,
            tracepoints,
            signals,
            run,
            user: self.user,
        })
    }
}

fn run(args: RunArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let AgentConfig {
        reader,
        tracepoints: names,
        signals,
        run: config,
        user,
    } = agent(args, matches)?;
    let source = PerfSource::open(reader, &names, &signals)?;
    if config.writer_identity && !source.reader().samples_cgroup() {
        eprintln!(
            "ue-decoder: this kernel does not sample the writer's cgroup (PERF_SAMPLE_CGROUP, \
             Linux 5.7): resources carry user_events.writer.pid only"
        );
    }
    // Everything privileged is done: drop it before any thread starts (capabilities are
    // per thread).
    if user.is_some() || !nix::unistd::Uid::effective().is_root() {
        let dropped = ue_decoder::drop_privileges(user.as_deref())?;
        eprintln!("ue-decoder: now running as {dropped}");
    }
    let rt = runtime()?;
    let reading = format!(
        "ue-decoder: reading {} on {} CPUs; stop with SIGINT or SIGTERM",
        source
            .reader()
            .tracepoints()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
            .join(", "),
        source.reader().cpus().len()
    );
    let snapshot = rt.block_on(ue_decoder::run(source, config, shutdown_signal(), || {
        eprintln!("{reading}")
    }))?;
    eprint!("ue-decoder: final counters\n{snapshot}");
    Ok(ExitCode::SUCCESS)
}

impl From<SignalArg> for Signal {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::Metrics => Self::Metrics,
            SignalArg::Traces => Self::Traces,
            SignalArg::Logs => Self::Logs,
        }
    }
}

fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let names = TracepointNames {
        metrics: args.metrics_tracepoint,
        traces: args.traces_tracepoint,
        logs: args.logs_tracepoint,
    };
    let sinks = args.sinks.configs(true)?;
    let mut reader = PerfDataReader::open(&args.capture, &names)?;
    reader.set_writer_identity(!args.no_writer_identity);
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| ProgressBar::start(reader.progress()));
    if sinks == [SinkConfig::Stdout] {
        // One line per recorded event, in file order: what the capture holds, unbatched.
        let mut out = std::io::stdout().lock();
        while let Some(event) = reader.next_event()? {
            writeln!(out, "{}", ue_decoder::otlp_json_line(&event.request))?;
        }
        drop(progress);
    } else {
        let forward = args.sinks.forward(sinks, args.shutdown_secs);
        let sinks = runtime()?.block_on(ue_decoder::forward_capture(&mut reader, &forward))?;
        drop(progress);
        for sink in sinks {
            eprintln!("ue-decoder: {sink}");
        }
    }
    let stats = reader.stats();
    eprintln!("ue-decoder: {}: {stats}", args.capture.display());
    if stats.lost_total() > 0 {
        eprintln!(
            "ue-decoder: warning: perf lost {} records while recording this capture",
            stats.lost_total()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar of the capture read so far, on stderr, drawn by a thread of its own
/// while `decode` runs; only on a terminal, so pipes and logs get none of it.
struct ProgressBar {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressBar {
    fn start(progress: ue_decoder::ReadProgress) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(progress.total());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            while !stop.load(Ordering::Acquire) {
                bar.set_position(progress.read());
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn header_values_from_the_environment_are_percent_decoded() {
        assert_eq!(
            super::percent_decode("Bearer%20a%2Cb").unwrap(),
            "Bearer a,b"
        );
        assert_eq!(super::percent_decode("100%").unwrap(), "100%");
        assert_eq!(super::percent_decode("%zz").unwrap(), "%zz");
    }
}
