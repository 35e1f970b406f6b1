//! The archive sink (`--archive-url`): every span, log record and data point written as
//! gzip-compressed OTLP/JSON objects ([`otlp_json`]) to S3 (or an S3-compatible server),
//! Google Cloud Storage, Azure Blob Storage or a local directory, through `object_store`.
//!
//! - Spans are grouped per service (`service.name`) and trace: a [`TraceBuffer`] holds each
//!   group until no span joined it for `trace_idle`, or it is `trace_max_age` old, or the
//!   buffer is over `max_open_traces` groups or `max_buffer_bytes` (then the oldest groups
//!   are written early, counted by reason), or the sink shuts down. Nothing is dropped to
//!   make room: when the store is slow, writing early holds up the sink's queue instead,
//!   whose overflow is dropped and counted like every sink's.
//! - Spans of a trace whose object was already written (late spans) make a second object,
//!   `TRACE_ID.1.json.gz`, then `.2`, and so on. Objects are written only if their key is
//!   free (`If-None-Match: *` on S3), so an object is never overwritten, not even by a
//!   restarted decoder: a taken key moves on to the next number.
//! - Logs and metrics are written per batch, one object per service in the batch.
//!
//! Keys are laid out by signal, the hour of writing (UTC), the service and the trace or
//! batch ([`key`]). A store error that may pass (a connection failure, a 5xx, a throttle,
//! a missing bucket) is retried as the sink's [`RetryConfig`] says; the others (denied,
//! unauthenticated) drop the object's items at once. An optional notification POSTs a small
//! JSON document per object written; its failure is counted and loses nothing.

mod buffer;
mod key;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;

use self::buffer::{FlushReason, Flushed, Limits, TraceBuffer, TraceKey};
use super::queue::{SinkQueue, reason};
use super::retry::{Backoff, Rng};
use super::{Outcome, RetryConfig, SinkError, error_chain};
use crate::batch::Batch;
use crate::decode::{Request, Signal, otlp_json};

/// Where the archive sink writes and how it groups and bounds what it holds. Every setting
/// has a default but the URL.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveConfig {
    /// Where: `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`, `az://CONTAINER[/PREFIX]` or
    /// `file:///DIR`. Credentials, region and endpoint come from the store's standard
    /// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, ...;
    /// `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`, ...) unless set below.
    pub url: String,
    /// An S3-compatible server's endpoint, e.g. `http://127.0.0.1:9000` (`http://` is
    /// allowed); requests then name the bucket in the path.
    pub endpoint: Option<String>,
    /// The S3 region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// More store settings, by `object_store`'s configuration key names, over the
    /// environment's: e.g. `aws_access_key_id`, `aws_secret_access_key`,
    /// `google_service_account_key`, `azure_storage_account_key`.
    pub options: Vec<(String, String)>,
    /// A trace's spans are written once none joined them for this long.
    pub trace_idle: Duration,
    /// ... or once the first of them is this old, however busy the trace.
    pub trace_max_age: Duration,
    /// The most traces (per service) open at once; beyond it, the oldest is written early.
    pub max_open_traces: usize,
    /// The most bytes of spans (protobuf) held open at once; beyond it, the oldest traces
    /// are written early.
    pub max_buffer_bytes: usize,
    /// How many written traces' next sequence numbers are remembered, so that their late
    /// spans find a free key without trying the taken ones first.
    pub remembered_traces: usize,
    /// The limit on one request to the store.
    pub timeout: Duration,
    /// Retries of a failed write.
    pub retry: RetryConfig,
    /// Objects written at once.
    pub max_inflight: usize,
    /// POST a JSON document here for every object written.
    pub notify_url: Option<String>,
    /// Retries of a failed notification.
    pub notify_retry: RetryConfig,
    /// The limit on one notification request.
    pub notify_timeout: Duration,
    /// Notifications waiting to be sent; more are counted failed (`queue_full`).
    pub notify_queue: usize,
}

impl ArchiveConfig {
    /// Writing to `url`: traces written after 10 s idle or at 60 s old, at most 10,000 open
    /// and 64 MiB; 30 s per request; the Collector's retry schedule; 4 writes at once;
    /// notifications retried for up to 60 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            endpoint: None,
            region: None,
            options: Vec::new(),
            trace_idle: Duration::from_secs(10),
            trace_max_age: Duration::from_secs(60),
            max_open_traces: 10_000,
            max_buffer_bytes: 64 << 20,
            remembered_traces: 100_000,
            timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            max_inflight: 4,
            notify_url: None,
            notify_retry: RetryConfig {
                initial_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(10),
                max_elapsed: Duration::from_secs(60),
                ..RetryConfig::default()
            },
            notify_timeout: Duration::from_secs(10),
            notify_queue: 10_000,
        }
    }

    /// The sink's name: `archive URL`.
    pub(crate) fn name(&self) -> String {
        format!("archive {}", self.url)
    }
}

impl Default for ArchiveConfig {
    /// [`ArchiveConfig::new`] of `file:///var/lib/ue-decoder/archive`.
    fn default() -> Self {
        Self::new("file:///var/lib/ue-decoder/archive")
    }
}

/// A point-in-time copy of the archive sink's own counters (its items written and dropped
/// are the sink's `items_sent` and `dropped_items`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSnapshot {
    /// Objects written.
    pub objects: u64,
    /// Their bytes, compressed, as stored.
    pub object_bytes: u64,
    /// Objects of late spans: a trace's second and later objects.
    pub late_objects: u64,
    /// Traces written, by why: `idle`, `max_age`, `max_traces` and `max_bytes` (early, to
    /// stay within the bounds), `shutdown`.
    pub traces_flushed: BTreeMap<&'static str, u64>,
    /// Traces open now.
    pub open_traces: u64,
    /// Spans held in them.
    pub buffered_spans: u64,
    /// Their bytes (protobuf).
    pub buffered_bytes: u64,
    /// Notifications the receiver accepted.
    pub notifications_sent: u64,
    /// Notifications given up, by reason: `retries_exhausted`, `permanent_error`,
    /// `queue_full`, `shutdown`.
    pub notifications_failed: BTreeMap<&'static str, u64>,
    /// Notification attempts that failed and were tried again.
    pub notification_retries: u64,
}

/// The archive's counters that are not the sink queue's.
#[derive(Debug, Default)]
struct Counts {
    objects: u64,
    object_bytes: u64,
    late_objects: u64,
    traces_flushed: [u64; FlushReason::ALL.len()],
    notifications_sent: u64,
    notifications_failed: BTreeMap<&'static str, u64>,
    notification_retries: u64,
}

/// One object to write.
struct Object {
    meta: Meta,
    request: Request,
}

/// What an object is, but its contents.
struct Meta {
    signal: Signal,
    service: String,
    /// The trace's key, for a trace's object.
    trace: Option<TraceKey>,
    /// The trace id segment, or the batch id.
    name: String,
    /// Where the search for a free key starts.
    sequence: u32,
    items: u64,
}

/// What a notification says about one object written.
#[derive(Debug)]
struct Notice {
    key: String,
    url: String,
    size: u64,
    signal: &'static str,
    service: String,
    trace_id: Option<String>,
    sequence: u32,
    items: u64,
}

/// The store, its settings and the state the sink's tasks share.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key (the URL's path), without slashes at either end.
    prefix: String,
    /// A key appended to this is the object's URL.
    url_base: String,
    config: ArchiveConfig,
    buffer: Mutex<TraceBuffer>,
    counts: Mutex<Counts>,
    /// The sink's queue, whose counters count the items written and lost.
    queue: OnceLock<Arc<SinkQueue>>,
    /// Taken out at close, which stops the notifier once it sent what is queued.
    notices: Mutex<Option<mpsc::Sender<Notice>>>,
    /// This run's part of batch ids, and the next batch's number.
    run_id: u64,
    next_batch: AtomicU64,
    seeds: Mutex<Rng>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running archive sink.
pub(crate) struct ArchiveSink {
    shared: Arc<Shared>,
    /// Set when the sink should write every open trace and stop.
    closing: Arc<Notify>,
    /// The flusher's and the notifier's, awaited at close.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The same tasks', aborted when the sink is dropped (its worker aborted at the
    /// shutdown deadline), even while close awaits them.
    aborts: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for ArchiveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSink")
            .field("url", &self.shared.config.url)
            .finish_non_exhaustive()
    }
}

impl Drop for ArchiveSink {
    fn drop(&mut self) {
        for task in lock(&self.aborts).drain(..) {
            task.abort();
        }
    }
}

/// A handle on the archive's counters, for snapshots.
#[derive(Clone, Debug)]
pub(crate) struct ArchiveStats(Arc<Shared>);

impl ArchiveStats {
    pub(crate) fn snapshot(&self) -> ArchiveSnapshot {
        let (open_traces, buffered_spans, buffered_bytes) = {
            let b = lock(&self.0.buffer);
            (b.traces() as u64, b.spans(), b.bytes() as u64)
        };
        let c = lock(&self.0.counts);
        ArchiveSnapshot {
            objects: c.objects,
            object_bytes: c.object_bytes,
            late_objects: c.late_objects,
            traces_flushed: FlushReason::ALL
                .iter()
                .map(|r| (r.as_str(), c.traces_flushed[r.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            open_traces,
            buffered_spans,
            buffered_bytes,
            notifications_sent: c.notifications_sent,
            notifications_failed: c.notifications_failed.clone(),
            notification_retries: c.notification_retries,
        }
    }
}

/// The store a URL names, the key prefix it gives, and the URL a key is appended to.
fn open_store(config: &ArchiveConfig) -> Result<(Arc<dyn ObjectStore>, String, String), String> {
    let url = url::Url::parse(&config.url).map_err(|e| e.to_string())?;
    let path = url.path().trim_matches('/').to_owned();
    let client = object_store::ClientOptions::new().with_timeout(config.timeout);
    // The sink retries as its RetryConfig says, and counts each attempt.
    let no_retry = object_store::RetryConfig {
        max_retries: 0,
        retry_timeout: config.timeout,
        ..object_store::RetryConfig::default()
    };
    let bucket = || {
        url.host_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("no bucket in {}", config.url))
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| "not a local directory".to_owned())?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| error_chain(&e))?;
            let base = url.as_str().trim_end_matches('/').to_owned();
            return Ok((Arc::new(local), String::new(), base));
        }
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
            let mut b = AmazonS3Builder::from_env();
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| option_error(k, &e))?, v);
            }
            let mut b = b
                .with_client_options(client)
                .with_retry(no_retry)
                .with_bucket_name(bucket()?)
                .with_conditional_put(S3ConditionalPut::ETagMatch);
            if let Some(endpoint) = &config.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(region) = &config.region {
                b = b.with_region(region);
            }
            Arc::new(b.build().map_err(|e| error_chain(&e))?)
        }
        "gs" => Arc::new({
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env();
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| option_error(k, &e))?, v);
            }
            b.with_client_options(client)
                .with_retry(no_retry)
                .with_bucket_name(bucket()?)
                .build()
                .map_err(|e| error_chain(&e))?
        }),
        "az" | "azure" | "abfs" | "abfss" => Arc::new({
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env();
            for (k, v) in &config.options {
                b = b.with_config(k.parse().map_err(|e| option_error(k, &e))?, v);
            }
            b.with_client_options(client)
                .with_retry(no_retry)
                .with_url(config.url.clone())
                .build()
                .map_err(|e| error_chain(&e))?
        }),
        other => {
            return Err(format!(
                "unsupported scheme {other:?}: use s3://, gs://, az:// or file://"
            ));
        }
    };
    let host = url.host_str().unwrap_or_default();
    let base = format!("{}://{host}", url.scheme());
    Ok((store, path, base))
}

/// A store setting whose key the store does not know.
fn option_error(key: &str, error: &object_store::Error) -> String {
    format!("store option {key:?}: {}", error_chain(error))
}

impl ArchiveSink {
    /// Opens the store `config.url` names (nothing is sent yet) and checks the settings.
    pub(crate) fn new(config: &ArchiveConfig) -> Result<Self, SinkError> {
        let invalid = |reason: String| SinkError::Archive {
            url: config.url.clone(),
            reason,
        };
        if config.trace_idle.is_zero() || config.trace_max_age.is_zero() {
            return Err(invalid(
                "the trace idle time and maximum age must be more than zero".into(),
            ));
        }
        for (what, retry) in [
            ("write", &config.retry),
            ("notification", &config.notify_retry),
        ] {
            retry
                .validate()
                .map_err(|reason| invalid(format!("invalid {what} retry settings: {reason}")))?;
        }
        if let Some(url) = &config.notify_url {
            let parsed =
                url::Url::parse(url).map_err(|e| invalid(format!("notify URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "notify URL {url:?}: not http:// or https://"
                )));
            }
        }
        let (store, prefix, url_base) = open_store(config).map_err(invalid)?;
        let mut seeds = Rng::from_entropy();
        let shared = Shared {
            store,
            prefix,
            url_base,
            buffer: Mutex::new(TraceBuffer::new(Limits {
                idle: config.trace_idle,
                max_age: config.trace_max_age,
                max_traces: config.max_open_traces.max(1),
                max_bytes: config.max_buffer_bytes,
                remembered: config.remembered_traces,
            })),
            config: config.clone(),
            counts: Mutex::default(),
            queue: OnceLock::new(),
            notices: Mutex::new(None),
            run_id: seeds.next_u64() >> 32,
            next_batch: AtomicU64::new(0),
            seeds: Mutex::new(seeds),
        };
        Ok(Self {
            shared: Arc::new(shared),
            closing: Arc::new(Notify::new()),
            tasks: Mutex::default(),
            aborts: Mutex::default(),
        })
    }

    /// Starts the tasks that write traces as they fall due and send the notifications, on
    /// the current runtime, counting into `queue`.
    pub(crate) fn bind(&self, queue: Arc<SinkQueue>) {
        let _ = self.shared.queue.set(queue);
        let mut tasks = vec![tokio::spawn(flush_due(
            Arc::clone(&self.shared),
            Arc::clone(&self.closing),
        ))];
        if let Some(url) = &self.shared.config.notify_url {
            let (tx, rx) = mpsc::channel(self.shared.config.notify_queue.max(1));
            *lock(&self.shared.notices) = Some(tx);
            tasks.push(tokio::spawn(notify(
                Arc::clone(&self.shared),
                url.clone(),
                rx,
            )));
        }
        *lock(&self.aborts) = tasks.iter().map(JoinHandle::abort_handle).collect();
        *lock(&self.tasks) = tasks;
    }

    /// A handle on the counters.
    pub(crate) fn stats(&self) -> ArchiveStats {
        ArchiveStats(Arc::clone(&self.shared))
    }

    /// Checks the batch can be read: one that cannot is dropped (`encode`) before the sink
    /// holds it.
    pub(crate) fn check(batch: &Batch) -> Result<(), String> {
        batch
            .request()
            .map(|_| ())
            .map_err(|e| format!("decode: {e}"))
    }

    /// Takes a batch in: its spans into their traces (writing the traces the bounds push
    /// out), its logs or metrics written as one object per service. The sink counts the
    /// items itself as they are written or lost.
    pub(crate) async fn send(&self, batch: &Batch) -> Outcome {
        let request = match batch.request() {
            Ok(r) => r,
            Err(e) => return Outcome::Permanent(format!("decode: {e}")),
        };
        let shared = &self.shared;
        let Some(queue) = shared.queue.get() else {
            return Outcome::Permanent("the archive sink was not started".into());
        };
        queue.hold(batch, request.items());
        match request {
            Request::Traces(r) => {
                let early = lock(&shared.buffer).add(r, std::time::Instant::now());
                for flushed in early {
                    shared.write(shared.trace_object(flushed)).await;
                }
            }
            Request::Logs(r) => {
                for (service, part) in split_logs(r) {
                    let object = shared.batch_object(service, Request::Logs(part));
                    shared.write(object).await;
                }
            }
            Request::Metrics(r) => {
                for (service, part) in split_metrics(r) {
                    let object = shared.batch_object(service, Request::Metrics(part));
                    shared.write(object).await;
                }
            }
        }
        Outcome::Held
    }

    /// Once the queue is drained: writes every open trace, then waits for the
    /// notifications still to send.
    pub(crate) async fn close(&self) {
        self.closing.notify_one();
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        let mut tasks = tasks.into_iter();
        // The flusher first: it writes what is open, then stops.
        if let Some(flusher) = tasks.next() {
            let _ = flusher.await;
        }
        // Dropping the sender lets the notifier send what is queued, then stop.
        drop(lock(&self.shared.notices).take());
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Writes the traces as they fall due, at most `max_inflight` at once, until `closing`;
/// then every trace still open.
async fn flush_due(shared: Arc<Shared>, closing: Arc<Notify>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_inflight.max(1)));
    let mut writing = JoinSet::new();
    let mut closed = false;
    loop {
        // The earliest due, but look again at least every second: traces opened since
        // may fall due sooner.
        let next = lock(&shared.buffer)
            .next_due()
            .map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(std::time::Instant::now())
            })
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        if !closed {
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = closing.notified() => closed = true,
            }
        }
        loop {
            // Every free permit, at least one: one look at the buffer for them all.
            let Ok(first) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let mut free = vec![first];
            while let Ok(p) = Arc::clone(&permits).try_acquire_owned() {
                free.push(p);
            }
            let due: Vec<Flushed> = {
                let mut buffer = lock(&shared.buffer);
                if closed {
                    std::iter::from_fn(|| buffer.take_for_shutdown())
                        .take(free.len())
                        .collect()
                } else {
                    buffer.due(std::time::Instant::now(), free.len())
                }
            };
            if due.is_empty() {
                break;
            }
            for (flushed, permit) in due.into_iter().zip(free) {
                let shared = Arc::clone(&shared);
                writing.spawn(async move {
                    let object = shared.trace_object(flushed);
                    shared.write(object).await;
                    drop(permit);
                });
            }
            while writing.try_join_next().is_some() {}
        }
        if closed {
            while writing.join_next().await.is_some() {}
            return;
        }
    }
}

impl Shared {
    fn queue(&self) -> &SinkQueue {
        self.queue.get().expect("bound before any write")
    }

    /// The object of a trace taken from the buffer.
    fn trace_object(&self, flushed: Flushed) -> Object {
        lock(&self.counts).traces_flushed[flushed.reason.index()] += 1;
        Object {
            meta: Meta {
                signal: Signal::Traces,
                service: flushed.key.service.clone(),
                name: key::trace_segment(&flushed.key.trace_id),
                trace: Some(flushed.key),
                sequence: flushed.sequence,
                items: flushed.spans,
            },
            request: Request::Traces(flushed.request),
        }
    }

    /// The object of one service's part of a logs or metrics batch, named
    /// `UNIX_MS-RUN-N`: the time, this run's random id and a counter, unique and in order.
    fn batch_object(&self, service: String, request: Request) -> Object {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = self.next_batch.fetch_add(1, Ordering::Relaxed);
        Object {
            meta: Meta {
                signal: request.signal(),
                service,
                trace: None,
                name: format!("{ms}-{:08x}-{n}", self.run_id),
                sequence: 0,
                items: request.items(),
            },
            request,
        }
    }

    /// Writes `object` under the first free key from its sequence number on, retrying as
    /// configured; counts its items written or lost.
    async fn write(&self, object: Object) {
        let queue = self.queue();
        let Object { meta, request } = object;
        let items = meta.items;
        let body = match tokio::task::spawn_blocking(move || gzip_json(&request)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return queue.lost(items, reason::ENCODE, format!("gzip: {e}")),
            Err(e) => return queue.lost(items, reason::ENCODE, format!("encode task: {e}")),
        };
        let at = SystemTime::now();
        let mut sequence = meta.sequence;
        let rng = Rng::seeded(lock(&self.seeds).next_u64());
        let mut backoff = Backoff::new(&self.config.retry, rng);
        let started = Instant::now();
        let payload = PutPayload::from_bytes(body.clone());
        loop {
            let key = key::object_key(
                &self.prefix,
                meta.signal,
                at,
                &meta.service,
                &meta.name,
                sequence,
            );
            let path = match StorePath::parse(&key) {
                Ok(p) => p,
                Err(e) => return queue.lost(items, reason::PERMANENT_ERROR, format!("{key}: {e}")),
            };
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let error = match self.store.put_opts(&path, payload.clone(), options).await {
                Ok(_) => return self.written(&meta, key, sequence, body.len()),
                Err(object_store::Error::AlreadyExists { .. })
                    if sequence - meta.sequence < MAX_TAKEN_KEYS =>
                {
                    sequence += 1;
                    continue;
                }
                Err(e) => e,
            };
            let message = format!("{key}: {}", error_chain(&error));
            if !retryable(&error) {
                tracing::warn!(sink = %queue.name(), items, error = %message, "dropping an object: not retryable");
                return queue.lost(items, reason::PERMANENT_ERROR, message);
            }
            match backoff.next(started.elapsed(), None) {
                Some(wait) => {
                    tracing::debug!(sink = %queue.name(), ?wait, error = %message, "retrying an object");
                    queue.retrying(message);
                    tokio::time::sleep(wait).await;
                }
                None => {
                    tracing::warn!(sink = %queue.name(), items, error = %message, "dropping an object: retries exhausted");
                    return queue.lost(items, reason::RETRIES_EXHAUSTED, message);
                }
            }
        }
    }

    /// Counts the object of `meta` written under `key`, `sequence`, of `size` bytes, and
    /// queues its notification.
    fn written(&self, meta: &Meta, key: String, sequence: u32, size: usize) {
        let Meta {
            signal,
            service,
            trace,
            items,
            ..
        } = meta;
        let (signal, items) = (*signal, *items);
        if let Some(trace) = trace {
            lock(&self.buffer).wrote(trace, sequence);
        }
        {
            let mut c = lock(&self.counts);
            c.objects += 1;
            c.object_bytes += size as u64;
            if sequence > 0 {
                c.late_objects += 1;
            }
        }
        self.queue().written(items);
        let sender = lock(&self.notices);
        let Some(notices) = sender.as_ref() else {
            return;
        };
        let notice = Notice {
            url: format!("{}/{key}", self.url_base),
            key,
            size: size as u64,
            signal: signal.as_str(),
            service: service.to_owned(),
            trace_id: trace.as_ref().map(|t| key::trace_segment(&t.trace_id)),
            sequence,
            items,
        };
        let full = notices.try_send(notice).is_err();
        drop(sender);
        if full {
            *lock(&self.counts)
                .notifications_failed
                .entry(reason::QUEUE_FULL)
                .or_default() += 1;
        }
    }
}

/// How many taken keys a write moves past before it gives up.
const MAX_TAKEN_KEYS: u32 = 1000;

/// Whether a store error may pass: network failures, server errors and throttling (all
/// `Generic` once the client gave up), and a missing bucket, which may be being created.
fn retryable(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::Generic { .. }
            | object_store::Error::NotFound { .. }
            | object_store::Error::JoinError { .. }
    )
}

/// The request as OTLP/JSON, gzip-compressed (default level).
fn gzip_json(request: &Request) -> std::io::Result<Bytes> {
    let json = otlp_json(request);
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::default(),
    );
    gz.write_all(json.as_bytes())?;
    gz.finish().map(Bytes::from)
}

/// A logs request split per service, in the order services first appear.
fn split_logs(r: &ExportLogsServiceRequest) -> Vec<(String, ExportLogsServiceRequest)> {
    let mut parts: Vec<(String, ExportLogsServiceRequest)> = Vec::new();
    for rl in &r.resource_logs {
        let service = key::service_name(rl.resource.as_ref());
        match parts.iter_mut().find(|(s, _)| s == service) {
            Some((_, part)) => part.resource_logs.push(rl.clone()),
            None => parts.push((
                service.to_owned(),
                ExportLogsServiceRequest {
                    resource_logs: vec![rl.clone()],
                },
            )),
        }
    }
    parts
}

/// A metrics request split per service, in the order services first appear.
fn split_metrics(r: &ExportMetricsServiceRequest) -> Vec<(String, ExportMetricsServiceRequest)> {
    let mut parts: Vec<(String, ExportMetricsServiceRequest)> = Vec::new();
    for rm in &r.resource_metrics {
        let service = key::service_name(rm.resource.as_ref());
        match parts.iter_mut().find(|(s, _)| s == service) {
            Some((_, part)) => part.resource_metrics.push(rm.clone()),
            None => parts.push((
                service.to_owned(),
                ExportMetricsServiceRequest {
                    resource_metrics: vec![rm.clone()],
                },
            )),
        }
    }
    parts
}

/// Sends the notifications, one at a time, each retried as configured, until the sink
/// closes and the queued ones are sent.
async fn notify(shared: Arc<Shared>, url: String, mut rx: mpsc::Receiver<Notice>) {
    let client = match reqwest::Client::builder()
        .timeout(shared.config.notify_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "archive notifications: cannot build the HTTP client");
            return;
        }
    };
    while let Some(notice) = rx.recv().await {
        let body = serde_json::json!({
            "key": notice.key,
            "url": notice.url,
            "size": notice.size,
            "signal": notice.signal,
            "service": notice.service,
            "trace_id": notice.trace_id,
            "sequence": notice.sequence,
            "items": notice.items,
        })
        .to_string();
        let rng = Rng::seeded(lock(&shared.seeds).next_u64());
        let mut backoff = Backoff::new(&shared.config.notify_retry, rng);
        let started = Instant::now();
        let failed = loop {
            let sent = client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let (error, retry) = match sent {
                Ok(r) if r.status().is_success() => break None,
                Ok(r) => {
                    let s = r.status();
                    (
                        format!("HTTP {s}"),
                        s.is_server_error() || s.as_u16() == 429 || s.as_u16() == 408,
                    )
                }
                Err(e) => (error_chain(&e), true),
            };
            if !retry {
                break Some((reason::PERMANENT_ERROR, error));
            }
            match backoff.next(started.elapsed(), None) {
                Some(wait) => {
                    lock(&shared.counts).notification_retries += 1;
                    tokio::time::sleep(wait).await;
                }
                None => break Some((reason::RETRIES_EXHAUSTED, error)),
            }
        };
        let mut c = lock(&shared.counts);
        match failed {
            None => c.notifications_sent += 1,
            Some((why, error)) => {
                *c.notifications_failed.entry(why).or_default() += 1;
                drop(c);
                tracing::warn!(key = %notice.key, %error, "archive notification failed (the object is written)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::logs::v1::ResourceLogs;

    use super::*;

    fn start_error(config: ArchiveConfig) -> String {
        ArchiveSink::new(&config).unwrap_err().to_string()
    }

    #[test]
    fn settings_that_cannot_work_fail_at_start_by_name() {
        let dir = std::env::temp_dir().join(format!("ue-archive-unit-{}", std::process::id()));
        let url = format!("file://{}", dir.display());
        let e = start_error(ArchiveConfig::new("ftp://host/x"));
        assert!(
            e.contains("ftp://host/x") && e.contains("unsupported scheme"),
            "{e}"
        );
        let e = start_error(ArchiveConfig::new("not a url"));
        assert!(e.contains("not a url"), "{e}");
        let e = start_error(ArchiveConfig {
            options: vec![("aws_no_such_key".into(), "1".into())],
            ..ArchiveConfig::new("s3://bucket/p")
        });
        assert!(e.contains("aws_no_such_key"), "{e}");
        let e = start_error(ArchiveConfig {
            trace_idle: Duration::ZERO,
            ..ArchiveConfig::new(url.clone())
        });
        assert!(e.contains("idle"), "{e}");
        let e = start_error(ArchiveConfig {
            notify_url: Some("udp://x".into()),
            ..ArchiveConfig::new(url.clone())
        });
        assert!(e.contains("notify URL"), "{e}");
        assert!(ArchiveSink::new(&ArchiveConfig::new(url)).is_ok());
        assert!(dir.is_dir(), "the directory is made at start");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_urls_give_the_prefix_and_the_objects_url() {
        let config = ArchiveConfig {
            options: vec![
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
            ],
            endpoint: Some("http://127.0.0.1:1".into()),
            ..ArchiveConfig::new("s3://bucket/a/b/")
        };
        let (_, prefix, base) = open_store(&config).unwrap();
        assert_eq!((prefix.as_str(), base.as_str()), ("a/b", "s3://bucket"));
        let (_, prefix, base) = open_store(&ArchiveConfig {
            url: "s3://bucket".into(),
            ..config
        })
        .unwrap();
        assert_eq!((prefix.as_str(), base.as_str()), ("", "s3://bucket"));
    }

    #[test]
    fn gcs_and_azure_urls_open_their_stores() {
        let gcs = ArchiveConfig {
            options: vec![("google_bucket".into(), "ignored-for-the-url".into())],
            ..ArchiveConfig::new("gs://bucket/x/y")
        };
        let (store, prefix, base) = open_store(&gcs).unwrap();
        assert!(store.to_string().contains("bucket"), "{store}");
        assert_eq!((prefix.as_str(), base.as_str()), ("x/y", "gs://bucket"));
        let azure = ArchiveConfig {
            options: vec![
                ("azure_storage_account_name".into(), "account".into()),
                ("azure_storage_account_key".into(), "a2V5".into()),
            ],
            ..ArchiveConfig::new("az://container/p")
        };
        let (store, prefix, base) = open_store(&azure).unwrap();
        assert!(store.to_string().contains("container"), "{store}");
        assert_eq!((prefix.as_str(), base.as_str()), ("p", "az://container"));
    }

    #[test]
    fn batches_split_per_service_in_order() {
        let rl = |service: &str| ResourceLogs {
            resource: Some(ue_proto::resource::v1::Resource {
                attributes: vec![ue_proto::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(ue_proto::common::v1::AnyValue {
                        value: Some(ue_proto::common::v1::any_value::Value::StringValue(
                            service.into(),
                        )),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![rl("b"), rl("a"), rl("b"), ResourceLogs::default()],
        };
        let parts: Vec<(String, usize)> = split_logs(&request)
            .into_iter()
            .map(|(s, r)| (s, r.resource_logs.len()))
            .collect();
        assert_eq!(
            parts,
            [("b".into(), 2), ("a".into(), 1), (String::new(), 1)]
        );
    }

    #[test]
    fn which_store_errors_are_retried() {
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert!(retryable(&generic));
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        };
        assert!(!retryable(&denied));
        let unauthenticated = object_store::Error::Unauthenticated {
            path: "k".into(),
            source: "401".into(),
        };
        assert!(!retryable(&unauthenticated));
    }
}
