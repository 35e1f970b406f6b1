//! The ClickHouse sink: spans, log records and metric points as rows of tables shaped like
//! the OpenTelemetry Collector's ClickHouse exporter's (`otel_traces`, `otel_logs`,
//! `otel_metrics_gauge`, `_sum`, `_histogram`, `_exponential_histogram`, `_summary`), over
//! ClickHouse's HTTP interface.
//!
//! The sink creates its database and tables if they do not exist (`CREATE ... IF NOT
//! EXISTS`, before its first insert, and again after an insert found one missing), then
//! sends each batch as one `INSERT` per table it has rows for. A batch of several tables
//! that fails part-way is retried from the first table not yet inserted, so a retry does
//! not insert the others twice.
//!
//! Rows are sent as RowBinary, not JSONEachRow: ClickHouse 18.16 cannot read a NaN or an
//! infinity from JSON (OTLP allows both in any value), RowBinary carries them and every
//! other value exactly, with no escaping to write or parse, and in fewer bytes (see the
//! README's ClickHouse section for the measurement).
//!
//! A failure is retried when ClickHouse says it is transient (too many parts or queries,
//! a timeout, memory, a read-only replica, a missing table), when a proxy answers 429, 502,
//! 503 or 504, and when the server cannot be reached; anything else (a wrong password, a
//! table whose columns are not the sink's) drops the batch.

mod rows;
mod schema;

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

use super::{Compression, Outcome, RetryConfig, SinkError, error_chain};
use crate::batch::Batch;
use rows::Rows;
use schema::{TABLES, TableId};

/// The ClickHouse sink's settings.
#[derive(Clone, PartialEq)]
pub struct ClickHouseConfig {
    /// The server's HTTP interface, e.g. `http://127.0.0.1:8123` (`https://` for TLS with
    /// the system's CA roots).
    pub url: String,
    /// The database of the tables; created if missing.
    pub database: String,
    /// The tables' names start with it and `_` (`otel` makes `otel_traces`); empty for
    /// none.
    pub table_prefix: String,
    /// The user to authenticate as (HTTP basic authentication); none for the server's
    /// `default` user without a password.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// Extra request headers, e.g. for a proxy in front of the server.
    pub headers: Vec<(String, String)>,
    /// Create the database and tables if they do not exist; without it, inserts into a
    /// missing table are retried until someone creates it.
    pub create_tables: bool,
    /// The limit on one request, connecting included.
    pub timeout: Duration,
    /// How request bodies are compressed: none or gzip (zstd needs a newer server than
    /// 18.16).
    pub compression: Compression,
    /// Retries of retryable failures.
    pub retry: RetryConfig,
    /// Batches in flight at once (at least 1).
    pub max_inflight: usize,
}

impl Default for ClickHouseConfig {
    /// `http://localhost:8123`, database `default`, tables `otel_*` created if missing,
    /// the `default` user, a 10 s timeout, no compression, the Collector's retry
    /// schedule, 2 batches in flight.
    fn default() -> Self {
        Self {
            url: "http://localhost:8123".into(),
            database: "default".into(),
            table_prefix: "otel".into(),
            user: None,
            password: None,
            headers: Vec::new(),
            create_tables: true,
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            retry: RetryConfig::default(),
            max_inflight: 2,
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    /// Everything but the password and the headers' values, which may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.name_url())
            .field("database", &self.database)
            .field("table_prefix", &self.table_prefix)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("create_tables", &self.create_tables)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("retry", &self.retry)
            .field("max_inflight", &self.max_inflight)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Reads a password from the first line of `path` (what follows is ignored), so that
    /// it need not be on the command line.
    pub fn read_password(path: &std::path::Path) -> Result<String, SinkError> {
        let text = std::fs::read_to_string(path).map_err(|source| SinkError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Ok(text.lines().next().unwrap_or("").to_owned())
    }

    /// The sink's name: `clickhouse` and its URL, without credentials.
    pub(crate) fn name(&self) -> String {
        format!("clickhouse {}", self.name_url())
    }

    /// The URL without a user or password in it.
    fn name_url(&self) -> String {
        match Url::parse(&self.url) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string().trim_end_matches('/').to_owned()
            }
            Err(_) => self.url.clone(),
        }
    }
}

/// ClickHouse's error codes worth retrying: the server is busy, short of memory or parts,
/// its replica read-only, or the query was cut short; not syntax, types, data or access.
const RETRYABLE_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// A missing table (`UNKNOWN_TABLE`) or database (`UNKNOWN_DATABASE`): dropped while the
/// sink ran, or not created yet.
const MISSING_CODES: &[u32] = &[60, 81];

/// The error code of a ClickHouse error body (`Code: 60, e.displayText() = ...`).
fn error_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code: ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// What a failed response calls for.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// A table or the database is missing.
    Missing,
    /// Try again later.
    Transient,
    /// The same request will fail the same way.
    Permanent,
}

fn classify(status: StatusCode, body: &str) -> Failure {
    match error_code(body) {
        Some(code) if MISSING_CODES.contains(&code) => Failure::Missing,
        Some(code) if RETRYABLE_CODES.contains(&code) => Failure::Transient,
        Some(_) => Failure::Permanent,
        // Not ClickHouse's answer: a proxy's, by its status.
        None if matches!(status.as_u16(), 429 | 502 | 503 | 504) => Failure::Transient,
        None => Failure::Permanent,
    }
}

/// The sink: an HTTP client, the statements it sends, and whether the tables exist.
pub(crate) struct ClickHouseSink {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    compression: Compression,
    create: Option<Vec<String>>,
    /// The `INSERT` of each table, in [`TABLES`]' order.
    inserts: Vec<String>,
    /// Whether the tables were created (or need not be).
    ready: AtomicBool,
    /// Held while creating them: batches in flight together create them once, and never
    /// race one another's `CREATE`.
    creating: tokio::sync::Mutex<()>,
}

impl fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl ClickHouseSink {
    /// Checks the configuration and builds the client; connects only when sending.
    pub(crate) fn new(config: &ClickHouseConfig) -> Result<Self, SinkError> {
        let invalid = |reason: String| SinkError::InvalidEndpoint {
            sink: "clickhouse",
            endpoint: config.name_url(),
            reason,
        };
        let url = Url::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if config.database.is_empty() {
            return Err(invalid("the database name is empty".into()));
        }
        if matches!(config.compression, Compression::Zstd) {
            return Err(invalid(
                "zstd is not a compression every ClickHouse accepts: use gzip".into(),
            ));
        }
        let headers = header_map(config)?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .user_agent(concat!("ue-decoder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SinkError::ClickHouseClient)?;
        let (db, prefix) = (&config.database, &config.table_prefix);
        let create = config.create_tables.then(|| {
            std::iter::once(schema::create_database(db))
                .chain(TABLES.iter().map(|t| schema::create_table(db, prefix, t)))
                .collect()
        });
        Ok(Self {
            client,
            url,
            headers,
            timeout: config.timeout,
            compression: config.compression,
            ready: AtomicBool::new(create.is_none()),
            creating: tokio::sync::Mutex::new(()),
            create,
            inserts: TABLES
                .iter()
                .map(|t| schema::insert(db, prefix, t))
                .collect(),
        })
    }

    /// The rows of `batch`, per table, each part framed as its table's id (1 byte) and
    /// body length (8 bytes, little-endian), then the body (compressed as configured).
    pub(crate) fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        let request = batch.request().map_err(|e| e.to_string())?;
        let rows = Rows::of(request);
        let mut out = BytesMut::new();
        for (table, body, _) in rows.tables() {
            let body = match self.compression {
                Compression::Gzip => {
                    let mut gz = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(body).map_err(|e| e.to_string())?;
                    gz.finish().map_err(|e| e.to_string())?
                }
                _ => body.to_vec(),
            };
            out.put_u8(table as u8);
            out.put_u64_le(body.len() as u64);
            out.put_slice(&body);
        }
        Ok(out.freeze())
    }

    /// One attempt at inserting `payload`'s parts, from part `*done` on; `*done` counts
    /// the parts inserted, so that the next attempt starts after them.
    pub(crate) async fn send(&self, payload: &Bytes, done: &mut usize) -> Outcome {
        if !self.ready.load(Ordering::Acquire) {
            let _creating = self.creating.lock().await;
            if !self.ready.load(Ordering::Acquire) {
                if let Err(outcome) = self.create_tables().await {
                    return outcome;
                }
                self.ready.store(true, Ordering::Release);
            }
        }
        let mut rest = payload.clone();
        let mut part = 0;
        while rest.has_remaining() {
            let Some(table) = rest.first().copied().and_then(TableId::from_u8) else {
                return Outcome::Permanent("a malformed payload".into());
            };
            rest.advance(1);
            if rest.remaining() < 8 {
                return Outcome::Permanent("a malformed payload".into());
            }
            let len = usize::try_from(rest.get_u64_le()).unwrap_or(usize::MAX);
            if rest.remaining() < len {
                return Outcome::Permanent("a malformed payload".into());
            }
            let body = rest.split_to(len);
            if part >= *done {
                if let Err(outcome) = self.post(&self.inserts[table as usize], body).await {
                    return outcome;
                }
                *done = part + 1;
            }
            part += 1;
        }
        Outcome::Sent {
            rejected: 0,
            message: String::new(),
        }
    }

    /// Runs the `CREATE` statements, in order.
    async fn create_tables(&self) -> Result<(), Outcome> {
        for statement in self.create.iter().flatten() {
            self.post_query(statement).await?;
        }
        tracing::debug!(url = %self.url, "clickhouse tables ready");
        Ok(())
    }

    /// A statement with no data: the statement is the body.
    async fn post_query(&self, statement: &str) -> Result<(), Outcome> {
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(statement.to_owned());
        self.finish(statement, request).await
    }

    /// An `INSERT` with `body` its data: the statement is the `query` parameter.
    async fn post(&self, insert: &str, body: Bytes) -> Result<(), Outcome> {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("query", insert);
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body);
        if matches!(self.compression, Compression::Gzip) {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        self.finish(insert, request).await
    }

    async fn finish(
        &self,
        statement: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(), Outcome> {
        // The statement's first words name it in errors: `INSERT INTO `db`.`t``.
        let what: String = statement
            .split('(')
            .next()
            .unwrap_or(statement)
            .trim()
            .into();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Err(Outcome::Permanent(format!("{what}: {}", error_chain(&e))));
            }
            Err(e) => {
                return Err(Outcome::Retry {
                    error: format!("{what}: {}: {}", self.url, error_chain(&e)),
                    after: None,
                });
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let mut message = body.lines().next().unwrap_or("").to_owned();
        if message.len() > 500 {
            let mut end = 500;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let error = format!("{what}: HTTP {status}: {message}");
        Err(match classify(status, &body) {
            Failure::Missing => {
                // Created again before the next attempt, if the sink creates them.
                if self.create.is_some() {
                    self.ready.store(false, Ordering::Release);
                }
                Outcome::Retry { error, after: None }
            }
            Failure::Transient => Outcome::Retry { error, after: None },
            Failure::Permanent => Outcome::Permanent(error),
        })
    }
}

/// The user's headers, then basic authentication if a user is given.
fn header_map(config: &ClickHouseConfig) -> Result<HeaderMap, SinkError> {
    let mut map = super::http::user_headers("clickhouse", &config.headers)?;
    if let Some(user) = &config.user {
        let credentials = format!("{user}:{}", config.password.as_deref().unwrap_or(""));
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| {
            SinkError::InvalidHeader {
                sink: "clickhouse",
                name: "Authorization".into(),
                reason: e.to_string(),
            }
        })?;
        v.set_sensitive(true);
        map.insert(AUTHORIZATION, v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_clickhouse_code_then_by_status() {
        let e = |code: u32| format!("Code: {code}, e.displayText() = DB::Exception: x");
        assert_eq!(error_code(&e(252)), Some(252));
        assert_eq!(error_code("<html>bad gateway</html>"), None);
        let internal = StatusCode::INTERNAL_SERVER_ERROR;
        assert_eq!(classify(internal, &e(252)), Failure::Transient);
        assert_eq!(classify(StatusCode::NOT_FOUND, &e(60)), Failure::Missing);
        assert_eq!(classify(internal, &e(27)), Failure::Permanent);
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &e(193)),
            Failure::Permanent
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, "no upstream"),
            Failure::Transient
        );
        assert_eq!(classify(StatusCode::BAD_REQUEST, "bad"), Failure::Permanent);
    }

    #[test]
    fn the_name_and_debug_output_hold_no_credentials() {
        let config = ClickHouseConfig {
            url: "http://u:pw@127.0.0.1:8123/".into(),
            password: Some("hunter2".into()),
            headers: vec![("X-Token".into(), "t0ken".into())],
            ..ClickHouseConfig::default()
        };
        assert_eq!(config.name(), "clickhouse http://127.0.0.1:8123");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("t0ken") && !debug.contains("pw"));
    }

    #[test]
    fn a_bad_url_or_database_starts_nothing() {
        for config in [
            ClickHouseConfig {
                url: "ftp://h".into(),
                ..ClickHouseConfig::default()
            },
            ClickHouseConfig {
                database: String::new(),
                ..ClickHouseConfig::default()
            },
        ] {
            let err = ClickHouseSink::new(&config).unwrap_err();
            assert!(matches!(err, SinkError::InvalidEndpoint { .. }), "{err}");
        }
    }
}
