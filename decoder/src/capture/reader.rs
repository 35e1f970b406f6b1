//! Decoding the OTLP events of a `perf record` capture (a perf.data file).
//!
//! `perf record -e user_events:otlp_metrics -e user_events:otlp_traces -e user_events:otlp_logs
//! -a` captures what the exporters write; Debian's perf cannot print these events' fields, so this module
//! reads the file with the `linux-perf-data` crate, maps every sample to its event
//! through the file's event descriptions (`EVENT_DESC`: attr, name and ids), and decodes
//! the raw data of the selected tracepoints the way the live reader does
//! ([`decode_event`], on [`ue_wire::layout::decode`]). EventHeader tracepoints
//! (`<provider>_L<level>K<keyword>`, what the upstream `opentelemetry-user-events-logs` and
//! `-trace` crates write) are found by their name, without being asked for, and mapped to
//! OTLP logs and spans ([`EventHeaderDecoder`]). Samples that do not
//! decode are counted by reason, samples of other events are counted and skipped, and
//! the kernel's loss records are totalled: nothing is dropped silently.
//!
//! `perf record -z` (zstd-compressed) output is read too. The pipe form
//! (`perf record -o -`) is not: with tracepoints it holds the tracing data in a form
//! `linux-perf-data` cannot skip (nor can Debian's `perf inject` 6.1 convert it), so it
//! is refused with a clear error.
//!
//! `linux-perf-data` trusts the counts and sizes in the file, so the file is checked
//! against its length first (`check`), and its records are read by `records`, in memory
//! bounded whatever the file says, rather than by `linux-perf-data`'s record iterator.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use linux_perf_data::PerfFileReader;
use linux_perf_data::linux_perf_event_reader::{
    EventRecord, PerfEventType, RecordType, SampleRecord,
};
use ue_wire::layout;

use crate::decode::{
    EventHeaderDecoder, EventHeaderEvent, Writer, check_event, decode_event,
    is_eventheader_tracepoint, stamp_writer,
};
use crate::decode::{Request, Signal, TracepointNames};

use super::check;
use super::records::Records;

/// One decoded OTLP event of a perf.data file, with the sample's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct PerfDataEvent {
    /// The perf event name, e.g. `user_events:otlp_metrics`.
    pub tracepoint: String,
    /// The CPU the event was written on, if the capture recorded it.
    pub cpu: Option<u32>,
    /// The sample's time (perf clock, nanoseconds), if the capture recorded it.
    pub time: Option<u64>,
    /// The writing process, if the capture recorded it.
    pub pid: Option<i32>,
    /// The writing thread, if the capture recorded it.
    pub tid: Option<i32>,
    /// The OTLP request the event carried.
    pub request: Request,
}

/// What reading a perf.data file counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfDataStats {
    /// Samples of the selected tracepoints (and of EventHeader tracepoints), by perf event
    /// name, whether they decoded or not.
    pub events: BTreeMap<String, u64>,
    /// Requests decoded, by signal.
    pub requests: BTreeMap<Signal, u64>,
    /// Data points (metrics), spans (traces) or log records (logs) in the decoded requests,
    /// by signal.
    pub items: BTreeMap<Signal, u64>,
    /// Samples of the selected tracepoints that did not decode, by reason: the live
    /// reader's [`Malformed::reason`](crate::Malformed::reason) labels (layout errors,
    /// `invalid_otlp`, `empty`), `no_raw` (the sample carries no raw data, which perf
    /// records for tracepoint events) or `bad_sample` (the sample record itself does
    /// not parse); also `bad_lost_record`, a loss record whose count does not parse, and
    /// for EventHeader events the [`EventHeaderError::reason`](crate::EventHeaderError::reason)
    /// labels.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Samples of other events, by perf event name (or `attr #N` when it has none), skipped.
    pub skipped: BTreeMap<String, u64>,
    /// Records of any kind the kernel dropped because perf's ring buffer was full
    /// (`PERF_RECORD_LOST`).
    pub lost: u64,
    /// Samples the kernel dropped, by perf event name (`PERF_RECORD_LOST_SAMPLES`, which
    /// perf record writes per event when it stops). These are mostly the same drops as
    /// [`lost`](Self::lost), counted per event.
    pub lost_samples: BTreeMap<String, u64>,
    /// Rounds of the capture too large to hold for sorting by time (more than 32 MiB of
    /// samples, counting 128 bytes for holding each, between two of perf's round markers;
    /// perf writes far smaller rounds): they were handed out in parts, each in time order.
    pub split_rounds: u64,
    /// Fields of decoded EventHeader events that no OTLP field fits, kept as attributes
    /// ([`EventHeaderEvent::unmapped`](crate::EventHeaderEvent::unmapped)).
    pub unmapped: u64,
    /// Attributes under the reserved `user_events.writer.` prefix that payloads carried,
    /// removed before the writer's own were stamped
    /// ([`PerfDataReader::set_writer_identity`]).
    pub forged_writer_attributes: u64,
}

impl PerfDataStats {
    /// All samples of the selected tracepoints that did not decode.
    pub fn malformed_total(&self) -> u64 {
        saturating_sum(self.malformed.values())
    }

    /// How many events the capture lost at least: the larger of [`lost`](Self::lost) and
    /// the sum of [`lost_samples`](Self::lost_samples) (the kernel counts a sample dropped
    /// from a full ring in both, so they are not added). Not zero means the capture is
    /// incomplete. The counts come from the file: sums that would overflow stop at
    /// `u64::MAX` rather than wrap to a small number.
    pub fn lost_total(&self) -> u64 {
        self.lost.max(saturating_sum(self.lost_samples.values()))
    }
}

fn saturating_sum<'a>(counts: impl IntoIterator<Item = &'a u64>) -> u64 {
    counts.into_iter().fold(0, |sum, n| sum.saturating_add(*n))
}

/// Adds `n` to the count at `key`, stopping at `u64::MAX`.
fn add<K: Ord>(counts: &mut BTreeMap<K, u64>, key: K, n: u64) {
    let count = counts.entry(key).or_default();
    *count = count.saturating_add(n);
}

impl std::fmt::Display for PerfDataStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events {:?}, items {:?}, malformed {:?}, lost {}",
            self.events,
            self.items,
            self.malformed,
            self.lost_total()
        )?;
        if self.unmapped > 0 {
            write!(f, ", unmapped EventHeader fields {}", self.unmapped)?;
        }
        if self.forged_writer_attributes > 0 {
            write!(
                f,
                ", forged user_events.writer.* attributes removed {}",
                self.forged_writer_attributes
            )?;
        }
        if self.split_rounds > 0 {
            write!(
                f,
                ", {} rounds too large to sort whole (events may be out of time order)",
                self.split_rounds
            )?;
        }
        Ok(())
    }
}

/// Everything a perf.data file decoded to: [`decode_perf_data`]'s result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerfDataDecoded {
    /// The decoded events, in time order (the order `perf script` prints).
    pub events: Vec<PerfDataEvent>,
    /// What was counted while reading.
    pub stats: PerfDataStats,
}

/// Why a perf.data file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerfDataError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file may not be read by this user.
    #[error(
        "{}: permission denied (perf record writes perf.data with mode 0600: run as the user \
         who recorded it or root, or make it readable with chmod a+r)",
        path.display()
    )]
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with perf.data's magic.
    #[error("{}: not a perf.data file ({reason})", path.display())]
    NotPerfData {
        /// The file.
        path: PathBuf,
        /// What is wrong with its start.
        reason: String,
    },
    /// The file was written on a machine of the other byte order; the events' fields are
    /// in that machine's order and this decoder reads its own.
    #[error("{}: written on a big-endian machine; decode it on one", path.display())]
    ForeignEndian {
        /// The file.
        path: PathBuf,
    },
    /// The file is in perf's pipe form (`perf record -o -`), which is not supported.
    #[error(
        "{}: written in perf's pipe form (perf record -o -), which cannot be read for \
         tracepoint events; record to a file instead: perf record -o FILE",
        path.display()
    )]
    PipeMode {
        /// The file.
        path: PathBuf,
    },
    /// perf record did not finish the file: its header still says the data is empty.
    #[error(
        "{}: perf record did not finish writing this file (was it killed?); the header \
         records no data. Stop perf record with Ctrl-C or let its command end",
        path.display()
    )]
    Unfinished {
        /// The file.
        path: PathBuf,
    },
    /// The file is shorter than its header says.
    #[error(
        "{}: truncated: the header says the data ends at byte {expected}, the file has {actual} bytes",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the data section ends according to the header.
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// The file's header, attributes or records do not parse.
    #[error("{}: corrupt perf.data ({source}); after {decoded} decoded events", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Events decoded (and handed out) before the error.
        decoded: u64,
        /// What `linux-perf-data` reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file has none of the selected tracepoints and no EventHeader tracepoint.
    #[error(
        "{}: no {}, {} or {} events and no EventHeader events (PROVIDER_L<level>K<keyword>); \
         the file has: {}. Record them with \
         `perf record -e user_events:{} -e user_events:{} -e user_events:{} -a`, or name \
         the tracepoints that carry OTLP",
        path.display(), names.metrics, names.traces, names.logs,
        if events.is_empty() { "no named events".to_owned() } else { events.join(", ") },
        names.metrics, names.traces, names.logs
    )]
    NoOtlpTracepoints {
        /// The file.
        path: PathBuf,
        /// The names that were looked for.
        names: TracepointNames,
        /// The events the file has.
        events: Vec<String>,
    },
}

impl PerfDataError {
    pub(super) fn io(path: &Path, source: io::Error) -> Self {
        let path = path.to_owned();
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Io { path, source },
        }
    }
}

/// Reads the OTLP events of a perf.data file one at a time (the streaming form of
/// [`decode_perf_data`]); also an [`Iterator`] that ends after the first error.
pub struct PerfDataReader {
    path: PathBuf,
    records: Records<Box<dyn Read + Send>>,
    /// Per attr index: the event's name and, for a selected tracepoint, its signal.
    attrs: Vec<(String, Source)>,
    eventheader: EventHeaderDecoder,
    stats: PerfDataStats,
    decoded: u64,
    done: bool,
    /// How far into the file reading has got, for a progress display.
    progress: ReadProgress,
    /// Stamp each request with its writer's pid, when the capture recorded it.
    writer_identity: bool,
    /// The stamped request, reused from event to event.
    stamped: Vec<u8>,
}

/// How much of a capture has been read: a cheap handle another thread can poll.
#[derive(Clone, Debug, Default)]
pub struct ReadProgress {
    read: Arc<AtomicU64>,
    total: u64,
}

impl ReadProgress {
    /// Bytes of the file read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The file's size.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A source that counts how far into it reading has got.
struct Counting<S> {
    inner: S,
    at: Arc<AtomicU64>,
}

impl<S: Read> Read for Counting<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<S: Seek> Seek for Counting<S> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.at.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

impl std::fmt::Debug for PerfDataReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfDataReader")
            .field("path", &self.path)
            .field("attrs", &self.attrs)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PerfDataReader {
    /// Opens `path` and checks that it is a complete perf.data file holding at least one
    /// of the `names` tracepoints.
    pub fn open(path: &Path, names: &TracepointNames) -> Result<Self, PerfDataError> {
        let file = File::open(path).map_err(|e| PerfDataError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PerfDataError::io(path, e))?
            .len();
        Self::from_source(file, len, path, names)
    }

    /// Reads a perf.data file held in memory; `path` only names it in errors.
    pub fn from_bytes(
        bytes: Vec<u8>,
        path: &Path,
        names: &TracepointNames,
    ) -> Result<Self, PerfDataError> {
        let len = bytes.len() as u64;
        Self::from_source(io::Cursor::new(bytes), len, path, names)
    }

    /// How far reading has got, for a progress display on another thread.
    pub fn progress(&self) -> ReadProgress {
        self.progress.clone()
    }

    fn from_source<S: Read + Seek + Send + 'static>(
        source: S,
        len: u64,
        path: &Path,
        names: &TracepointNames,
    ) -> Result<Self, PerfDataError> {
        let progress = ReadProgress {
            read: Arc::new(AtomicU64::new(0)),
            total: len,
        };
        let mut source = Counting {
            inner: source,
            at: Arc::clone(&progress.read),
        };
        let data = check::check_file(&mut source, len, path, names)?;
        source
            .seek(SeekFrom::Start(0))
            .map_err(|e| PerfDataError::io(path, e))?;
        // Only the header and the event descriptions, which `check` bounded: the records
        // are read by `Records`.
        let PerfFileReader { perf_file, .. } =
            PerfFileReader::parse_file(BufReader::new(&mut source))
                .map_err(|e| corrupt(path, 0, e))?;
        let attrs: Vec<_> = perf_file
            .event_attributes()
            .iter()
            .enumerate()
            .map(|(i, attr)| {
                let name = attr
                    .name()
                    .map_or_else(|| format!("attr #{i}"), str::to_owned);
                let source = match attr.attributes().type_ {
                    PerfEventType::Tracepoint(_) => match names.signal_of(&name) {
                        Some(signal) => Source::Otlp(signal),
                        None if is_eventheader_tracepoint(&name) => Source::EventHeader,
                        None => Source::Skip,
                    },
                    _ => Source::Skip,
                };
                (name, source)
            })
            .collect();
        if attrs.iter().all(|(_, source)| *source == Source::Skip) {
            return Err(PerfDataError::NoOtlpTracepoints {
                path: path.to_owned(),
                names: names.clone(),
                events: attrs.into_iter().map(|(name, _)| name).collect(),
            });
        }
        source
            .seek(SeekFrom::Start(data.offset))
            .map_err(|e| PerfDataError::io(path, e))?;
        let reader: Box<dyn Read + Send> = Box::new(BufReader::new(source));
        let wanted = attrs
            .iter()
            .map(|(_, source)| *source != Source::Skip)
            .collect();
        let records = Records::new(reader, data.size, perf_file.event_attributes(), wanted);
        Ok(Self {
            path: path.to_owned(),
            records,
            attrs,
            eventheader: EventHeaderDecoder::new(),
            stats: PerfDataStats::default(),
            decoded: 0,
            done: false,
            progress,
            writer_identity: true,
            stamped: Vec::new(),
        })
    }

    /// Whether each request is stamped with its writer as the capture recorded it (on by
    /// default): `process.pid` (when the payload's resource has none) and
    /// `user_events.writer.pid` from the sample's `PERF_SAMPLE_TID`, on every resource,
    /// replacing any `user_events.writer.*` attribute the payload carried (see
    /// [`stamp_writer`]). `perf record` records no cgroup id unless asked
    /// (`--all-cgroups`), and this reader does not read it.
    pub fn set_writer_identity(&mut self, on: bool) {
        self.writer_identity = on;
    }

    /// The file's events (perf event names, `attr #N` for unnamed ones), in attr order.
    pub fn event_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.iter().map(|(name, _)| name.as_str())
    }

    /// What has been counted so far; complete once [`next_event`](Self::next_event)
    /// returned `Ok(None)`.
    pub fn stats(&self) -> &PerfDataStats {
        &self.stats
    }

    /// The next decoded event in time order, `Ok(None)` at the end of the file.
    /// Malformed events and other records are counted in [`stats`](Self::stats) and
    /// skipped; an error means the rest of the file cannot be read.
    pub fn next_event(&mut self) -> Result<Option<PerfDataEvent>, PerfDataError> {
        let mut out = None;
        self.step(false, &mut |next| {
            if let Next::Event(event) = next {
                out = Some(event);
            }
        })?;
        Ok(out)
    }

    /// Hands the next request in time order to `f`, `Ok(false)` at the end of the file:
    /// the checked bytes of an OTLP event, not decoded (the forwarding path appends them
    /// to a batch as they are), or an EventHeader event's request. Counted as
    /// [`next_event`](Self::next_event) counts.
    pub(crate) fn next_request(
        &mut self,
        f: &mut dyn FnMut(Next<'_>),
    ) -> Result<bool, PerfDataError> {
        self.step(true, f)
    }

    /// Reads records up to the next good event and calls `f` with it; false at the end.
    fn step(&mut self, check: bool, f: &mut dyn FnMut(Next<'_>)) -> Result<bool, PerfDataError> {
        while !self.done {
            let kept = match self.records.next() {
                Ok(Some(kept)) => kept,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(source) => {
                    self.done = true;
                    return Err(PerfDataError::Corrupt {
                        path: self.path.clone(),
                        decoded: self.decoded,
                        source,
                    });
                }
            };
            self.stats.split_rounds = self.records.split_rounds();
            let attr_index = kept.attr_index;
            let record = self.records.raw(&kept);
            match record.record_type {
                RecordType::SAMPLE => {}
                RecordType::LOST => {
                    match record.parse() {
                        Ok(EventRecord::Lost(lost)) => {
                            self.stats.lost = self.stats.lost.saturating_add(lost.count);
                        }
                        _ => add(&mut self.stats.malformed, "bad_lost_record", 1),
                    }
                    continue;
                }
                RecordType::LOST_SAMPLES => {
                    // struct { u64 lost; struct sample_id id; }
                    let body = record.data.as_slice();
                    match body.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                        Some(lost) => {
                            let name = self.attrs.get(attr_index).map_or_else(
                                || format!("attr #{attr_index}"),
                                |(name, _)| name.clone(),
                            );
                            add(&mut self.stats.lost_samples, name, u64::from_ne_bytes(lost));
                        }
                        None => add(&mut self.stats.malformed, "bad_lost_record", 1),
                    }
                    continue;
                }
                // `Records` keeps nothing else.
                _ => continue,
            }
            let Some((name, source)) = self.attrs.get(attr_index) else {
                add(&mut self.stats.skipped, format!("attr #{attr_index}"), 1);
                continue;
            };
            if *source == Source::Skip {
                add(&mut self.stats.skipped, name.clone(), 1);
                continue;
            }
            add(&mut self.stats.events, name.clone(), 1);
            let parsed = check::sample_callchain_fits(&record).then(|| record.parse());
            let sample = match parsed {
                Some(Ok(EventRecord::Sample(sample))) => sample,
                _ => {
                    add(&mut self.stats.malformed, "bad_sample", 1);
                    continue;
                }
            };
            let raw = sample.raw.map(|raw| raw.as_slice());
            if let (true, Source::Otlp(signal)) = (check, *source) {
                let fields = raw
                    .as_deref()
                    .map(|raw| raw.get(layout::TRACE_ENTRY_LEN..).unwrap_or_default());
                let writer = writer_of(self.writer_identity, &sample);
                let checked = match fields
                    .ok_or("no_raw")
                    .and_then(|fields| check_event(signal, fields).map_err(|e| e.reason()))
                {
                    Ok((request, items)) => match writer {
                        Some(writer) => {
                            self.stamped.clear();
                            match stamp_writer(request, writer, &mut self.stamped) {
                                Ok(forged) => {
                                    self.stats.forged_writer_attributes += forged;
                                    Ok((&self.stamped[..], items))
                                }
                                Err(_) => Err("invalid_otlp"),
                            }
                        }
                        None => Ok((request, items)),
                    },
                    Err(reason) => Err(reason),
                };
                match checked {
                    Ok((request, items)) => {
                        add(&mut self.stats.requests, signal, 1);
                        add(&mut self.stats.items, signal, items);
                        self.decoded += 1;
                        f(Next::Checked {
                            signal,
                            request,
                            items,
                        });
                        return Ok(true);
                    }
                    Err(reason) => {
                        add(&mut self.stats.malformed, reason, 1);
                        continue;
                    }
                }
            }
            let decoded = match *source {
                Source::Otlp(signal) => decode_sample(signal, raw.as_deref()),
                _ => decode_eventheader_sample(&mut self.eventheader, name, raw.as_deref()).map(
                    |event| {
                        self.stats.unmapped = self.stats.unmapped.saturating_add(event.unmapped);
                        event.request
                    },
                ),
            };
            let decoded = match (decoded, writer_of(self.writer_identity, &sample)) {
                (Ok(request), Some(writer)) => {
                    // Not the forwarding path: decoded again after stamping, so that both
                    // paths stamp alike.
                    self.stamped.clear();
                    let signal = request.signal();
                    stamp_writer(&request.encode_to_vec(), writer, &mut self.stamped)
                        .ok()
                        .and_then(|forged| {
                            self.stats.forged_writer_attributes += forged;
                            Request::decode(signal, &self.stamped).ok()
                        })
                        .ok_or("invalid_otlp")
                }
                (decoded, _) => decoded,
            };
            match decoded {
                Ok(request) => {
                    let signal = request.signal();
                    add(&mut self.stats.requests, signal, 1);
                    add(&mut self.stats.items, signal, request.items());
                    self.decoded += 1;
                    f(Next::Event(event(name, &sample, request)));
                    return Ok(true);
                }
                Err(reason) => add(&mut self.stats.malformed, reason, 1),
            }
        }
        Ok(false)
    }
}

/// The sample's writer, if stamping is `on` and the capture recorded its pid.
fn writer_of(on: bool, sample: &SampleRecord<'_>) -> Option<Writer> {
    let pid = u32::try_from(sample.pid?).ok()?;
    on.then_some(Writer {
        pid,
        cgroup_id: None,
    })
}

impl Iterator for PerfDataReader {
    type Item = Result<PerfDataEvent, PerfDataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// What [`PerfDataReader::next_request`] hands on.
pub(crate) enum Next<'a> {
    /// An OTLP event's request, checked: its bytes and items.
    Checked {
        signal: Signal,
        request: &'a [u8],
        items: u64,
    },
    /// A decoded event (EventHeader, or any event for `next_event`).
    Event(PerfDataEvent),
}

/// Reads every OTLP event of the perf.data file at `path` (see [`PerfDataReader`]).
pub fn decode_perf_data(
    path: &Path,
    names: &TracepointNames,
) -> Result<PerfDataDecoded, PerfDataError> {
    let mut reader = PerfDataReader::open(path, names)?;
    let mut events = Vec::new();
    while let Some(event) = reader.next_event()? {
        events.push(event);
    }
    Ok(PerfDataDecoded {
        events,
        stats: reader.stats,
    })
}

/// Decodes a tracepoint sample's raw data (`trace_entry` + fields) as a request of
/// `signal` the way the live reader does ([`decode_event`]), or says why it does not
/// decode (a [`PerfDataStats::malformed`] reason).
fn decode_sample(signal: Signal, raw: Option<&[u8]>) -> Result<Request, &'static str> {
    let raw = raw.ok_or("no_raw")?;
    let fields = raw.get(layout::TRACE_ENTRY_LEN..).unwrap_or_default();
    decode_event(signal, fields).map_err(|e| e.reason())
}

/// Decodes an EventHeader tracepoint sample's raw data, or says why it does not decode.
fn decode_eventheader_sample(
    decoder: &mut EventHeaderDecoder,
    tracepoint: &str,
    raw: Option<&[u8]>,
) -> Result<EventHeaderEvent, &'static str> {
    let raw = raw.ok_or("no_raw")?;
    let fields = raw.get(layout::TRACE_ENTRY_LEN..).unwrap_or_default();
    decoder.decode(tracepoint, fields).map_err(|e| e.reason())
}

/// How the samples of one perf event of a capture decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A tracepoint carrying OTLP of this signal.
    Otlp(Signal),
    /// An EventHeader tracepoint.
    EventHeader,
    /// Anything else: counted and skipped.
    Skip,
}

fn event(tracepoint: &str, sample: &SampleRecord<'_>, request: Request) -> PerfDataEvent {
    PerfDataEvent {
        tracepoint: tracepoint.to_owned(),
        cpu: sample.cpu,
        time: sample.timestamp,
        pid: sample.pid,
        tid: sample.tid,
        request,
    }
}

fn corrupt(path: &Path, decoded: u64, error: linux_perf_data::Error) -> PerfDataError {
    PerfDataError::Corrupt {
        path: path.to_owned(),
        decoded,
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// A `perf_file_header` with the given header size and data section, no features.
    fn raw_event(buffer: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; layout::TRACE_ENTRY_LEN];
        raw.extend_from_slice(&layout::header(buffer.len()));
        raw.extend_from_slice(buffer);
        raw.extend_from_slice(&[0; 4]); // perf pads raw data to 8 bytes
        raw
    }

    #[test]
    fn samples_decode_or_say_why_not() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: "s".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let raw = raw_event(&request.encode_to_vec());
        assert_eq!(
            decode_sample(Signal::Traces, Some(&raw)),
            Ok(Request::Traces(request))
        );
        assert_eq!(decode_sample(Signal::Traces, None), Err("no_raw"));
        assert_eq!(
            decode_sample(Signal::Traces, Some(&[0; 4])),
            Err("truncated")
        );
        assert_eq!(
            decode_sample(Signal::Traces, Some(&raw[..raw.len() - 8])),
            Err("bad_rel_loc")
        );
        let mut bad_version = raw.clone();
        bad_version[layout::TRACE_ENTRY_LEN + layout::VERSION_OFFSET] = b'x';
        assert_eq!(
            decode_sample(Signal::Traces, Some(&bad_version)),
            Err("unknown_version")
        );
        assert_eq!(
            decode_sample(Signal::Metrics, Some(&raw_event(&[0xff; 5]))),
            Err("invalid_otlp")
        );
        assert_eq!(
            decode_sample(Signal::Metrics, Some(&raw_event(&[]))),
            Err("empty")
        );
    }
}
