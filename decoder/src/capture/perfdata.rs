//! Decoding the OTLP events of a `perf record` capture (a perf.data file).
//!
//! `perf record -e user_events:otlp_metrics -e user_events:otlp_traces -a` captures what
//! the exporters write; Debian's perf cannot print these events' fields, so this module
//! reads the file with the `linux-perf-data` crate, maps every sample to its event
//! through the file's event descriptions (`EVENT_DESC`: attr, name and ids), and decodes
//! the raw data of the selected tracepoints the way the live reader does
//! ([`decode_event`], on [`ue_wire::layout::decode`]). Samples that do not
//! decode are counted by reason, samples of other events are counted and skipped, and
//! the kernel's loss records are totalled: nothing is dropped silently.
//!
//! `perf record -z` (zstd-compressed) output is read too. The pipe form
//! (`perf record -o -`) is not: with tracepoints it holds the tracing data in a form
//! `linux-perf-data` cannot skip (nor can Debian's `perf inject` 6.1 convert it), so it
//! is refused with a clear error.
//!
//! `linux-perf-data` trusts the counts and sizes in the file, so a corrupt count could
//! make it allocate terabytes: the header, the feature table and the event descriptions
//! are checked against the file's length first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_perf_data::linux_perf_event_reader::{
    EventRecord, PerfEventType, RecordType, SampleRecord,
};
use linux_perf_data::{PerfFile, PerfFileReader, PerfFileRecord, PerfRecordIter};
use ue_wire::layout;

use crate::decode::decode_event;
use crate::decode::{Request, Signal, TracepointNames};

/// The header size field of the pipe form (`perf record -o -`).
const PIPE_HEADER_SIZE: u64 = 16;

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
    /// Samples of the selected tracepoints, by perf event name, whether they decoded or not.
    pub events: BTreeMap<String, u64>,
    /// Requests decoded, by signal.
    pub requests: BTreeMap<Signal, u64>,
    /// Data points (metrics) or spans (traces) in the decoded requests, by signal.
    pub items: BTreeMap<Signal, u64>,
    /// Samples of the selected tracepoints that did not decode, by reason: the live
    /// reader's [`Malformed::reason`](crate::Malformed::reason) labels (layout errors,
    /// `invalid_otlp`, `empty`), `no_raw` (the sample carries no raw data, which perf
    /// records for tracepoint events) or `bad_sample` (the sample record itself does
    /// not parse); also `bad_lost_record`, a loss record whose count does not parse.
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
}

impl PerfDataStats {
    /// All samples of the selected tracepoints that did not decode.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }

    /// How many events the capture lost at least: the larger of [`lost`](Self::lost) and
    /// the sum of [`lost_samples`](Self::lost_samples) (the kernel counts a sample dropped
    /// from a full ring in both, so they are not added). Not zero means the capture is
    /// incomplete.
    pub fn lost_total(&self) -> u64 {
        self.lost.max(self.lost_samples.values().sum())
    }
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
        )
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
    /// The file has none of the selected tracepoints.
    #[error(
        "{}: no {} or {} events; the file has: {}. Record them with \
         `perf record -e user_events:{} -e user_events:{} -a`, or name the tracepoints \
         that carry OTLP",
        path.display(), names.metrics, names.traces,
        if events.is_empty() { "no named events".to_owned() } else { events.join(", ") },
        names.metrics, names.traces
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
    fn io(path: &Path, source: io::Error) -> Self {
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
    perf_file: PerfFile,
    records: PerfRecordIter<BufReader<File>>,
    /// Per attr index: the event's name and, for a selected tracepoint, its signal.
    attrs: Vec<(String, Option<Signal>)>,
    stats: PerfDataStats,
    decoded: u64,
    done: bool,
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
        let mut file = File::open(path).map_err(|e| PerfDataError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PerfDataError::io(path, e))?
            .len();
        check_file(&mut file, len, path, names)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| PerfDataError::io(path, e))?;
        let reader = BufReader::new(file);
        let parsed = PerfFileReader::parse_file(reader);
        let PerfFileReader {
            perf_file,
            record_iter,
        } = parsed.map_err(|e| corrupt(path, 0, e))?;
        let attrs: Vec<_> = perf_file
            .event_attributes()
            .iter()
            .enumerate()
            .map(|(i, attr)| {
                let name = attr
                    .name()
                    .map_or_else(|| format!("attr #{i}"), str::to_owned);
                let signal = match attr.attributes().type_ {
                    PerfEventType::Tracepoint(_) => names.signal_of(&name),
                    _ => None,
                };
                (name, signal)
            })
            .collect();
        if attrs.iter().all(|(_, signal)| signal.is_none()) {
            return Err(PerfDataError::NoOtlpTracepoints {
                path: path.to_owned(),
                names: names.clone(),
                events: attrs.into_iter().map(|(name, _)| name).collect(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            perf_file,
            records: record_iter,
            attrs,
            stats: PerfDataStats::default(),
            decoded: 0,
            done: false,
        })
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
        while !self.done {
            let record = match self.records.next_record(&mut self.perf_file) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Err(corrupt(&self.path, self.decoded, e));
                }
            };
            let PerfFileRecord::EventRecord { attr_index, record } = record else {
                // perf's own records (feature headers, finished rounds, ...).
                continue;
            };
            match record.record_type {
                RecordType::SAMPLE => {}
                RecordType::LOST => {
                    match record.parse() {
                        Ok(EventRecord::Lost(lost)) => self.stats.lost += lost.count,
                        _ => *self.stats.malformed.entry("bad_lost_record").or_default() += 1,
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
                            *self.stats.lost_samples.entry(name).or_default() +=
                                u64::from_ne_bytes(lost);
                        }
                        None => *self.stats.malformed.entry("bad_lost_record").or_default() += 1,
                    }
                    continue;
                }
                // Side-band records: mmap, comm, fork, exit...
                _ => continue,
            }
            let Some((name, signal)) = self.attrs.get(attr_index) else {
                *self
                    .stats
                    .skipped
                    .entry(format!("attr #{attr_index}"))
                    .or_default() += 1;
                continue;
            };
            let Some(signal) = *signal else {
                *self.stats.skipped.entry(name.clone()).or_default() += 1;
                continue;
            };
            *self.stats.events.entry(name.clone()).or_default() += 1;
            let sample = match record.parse() {
                Ok(EventRecord::Sample(sample)) => sample,
                _ => {
                    *self.stats.malformed.entry("bad_sample").or_default() += 1;
                    continue;
                }
            };
            let raw = sample.raw.map(|raw| raw.as_slice());
            match decode_sample(signal, raw.as_deref()) {
                Ok(request) => {
                    *self.stats.requests.entry(signal).or_default() += 1;
                    *self.stats.items.entry(signal).or_default() += request.items();
                    self.decoded += 1;
                    return Ok(Some(event(name, &sample, request)));
                }
                Err(reason) => *self.stats.malformed.entry(reason).or_default() += 1,
            }
        }
        Ok(None)
    }
}

impl Iterator for PerfDataReader {
    type Item = Result<PerfDataEvent, PerfDataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
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

/// Reads into `buf` until it is full or the reader ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads `len` bytes at `offset` (the caller checked they are inside the file).
fn read_at(file: &mut File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Checks a perf.data file's structure before `linux-perf-data` parses it: that crate
/// trusts the sizes in the file (a corrupt count can make it allocate terabytes), so
/// every section it reads while opening must lie inside the file and the event
/// descriptions must add up.
fn check_file(
    file: &mut File,
    file_len: u64,
    path: &Path,
    names: &TracepointNames,
) -> Result<(), PerfDataError> {
    let io = |e: io::Error| PerfDataError::io(path, e);
    let problem = |p: HeaderProblem| p.into_error(path, names);
    let mut head = [0u8; HEADER_LEN];
    let got = read_up_to(file, &mut head).map_err(io)?;
    let header = parse_header(&head[..got], file_len).map_err(problem)?;
    let table_len = 16 * u64::from(header.features.iter().map(|w| w.count_ones()).sum::<u32>());
    let table_end = header.data.end().saturating_add(table_len);
    if table_end > file_len {
        return Err(problem(HeaderProblem::Corrupt(format!(
            "its feature table ends at byte {table_end}, past the end of the file"
        ))));
    }
    let table = read_at(file, header.data.end(), table_len).map_err(io)?;
    let event_desc = feature_sections(&table, &header.features, file_len)
        .map_err(problem)?
        .into_iter()
        .find_map(|(feature, section)| (feature == FEATURE_EVENT_DESC).then_some(section))
        .ok_or_else(|| problem(HeaderProblem::NoEventNames))?;
    let bytes = read_at(file, event_desc.offset, event_desc.size).map_err(io)?;
    check_event_desc(&bytes).map_err(problem)
}

/// Size of `struct perf_file_header`.
const HEADER_LEN: usize = 104;
/// perf.data's magic as a number; a file written on this machine starts with its native bytes.
const MAGIC: u64 = u64::from_le_bytes(*b"PERFILE2");
/// The feature bit of `HEADER_EVENT_DESC`: every event's attr, name and sample ids.
const FEATURE_EVENT_DESC: u32 = 12;
/// The smallest `perf_event_attr` (`PERF_ATTR_SIZE_VER0`).
const ATTR_SIZE_VER0: u64 = 64;

/// A `perf_file_section`: where a part of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Section {
    offset: u64,
    size: u64,
}

impl Section {
    fn end(self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// The parts of `struct perf_file_header` checked here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    data: Section,
    features: [u64; 4],
}

/// What [`check_file`] found wrong, before the path is known.
#[derive(Debug, PartialEq, Eq)]
enum HeaderProblem {
    NotPerfData(String),
    ForeignEndian,
    PipeMode,
    Unfinished,
    Truncated { expected: u64, actual: u64 },
    Corrupt(String),
    NoEventNames,
}

impl HeaderProblem {
    fn into_error(self, path: &Path, names: &TracepointNames) -> PerfDataError {
        let path = path.to_owned();
        match self {
            Self::NotPerfData(reason) => PerfDataError::NotPerfData { path, reason },
            Self::ForeignEndian => PerfDataError::ForeignEndian { path },
            Self::PipeMode => PerfDataError::PipeMode { path },
            Self::Unfinished => PerfDataError::Unfinished { path },
            Self::Truncated { expected, actual } => PerfDataError::Truncated {
                path,
                expected,
                actual,
            },
            Self::Corrupt(reason) => PerfDataError::Corrupt {
                path,
                decoded: 0,
                source: reason.into(),
            },
            Self::NoEventNames => PerfDataError::NoOtlpTracepoints {
                path,
                names: names.clone(),
                events: Vec::new(),
            },
        }
    }
}

/// Reads a native-endian u64 at `at`, if `bytes` has it.
fn ne_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a native-endian u32 at `at`, if `bytes` has it.
fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the start of a perf.data file (`head`, up to [`HEADER_LEN`] bytes) and checks it
/// against the file's length, so that the common problems get a precise error.
fn parse_header(head: &[u8], file_len: u64) -> Result<Header, HeaderProblem> {
    let Some(magic) = ne_u64(head, 0) else {
        return Err(HeaderProblem::NotPerfData(format!(
            "{file_len} bytes, shorter than the 8-byte magic"
        )));
    };
    if magic == MAGIC.swap_bytes() {
        return Err(HeaderProblem::ForeignEndian);
    }
    if magic != MAGIC {
        let start = String::from_utf8_lossy(&head[..8]);
        return Err(HeaderProblem::NotPerfData(if start == "PERFFILE" {
            "version 1 of the format, from perf before Linux 2.6.38; re-record it".into()
        } else {
            format!("starts with {start:?}, not PERFILE2")
        }));
    }
    let header_size = ne_u64(head, 8).ok_or_else(|| short_header(file_len))?;
    if header_size == PIPE_HEADER_SIZE {
        return Err(HeaderProblem::PipeMode);
    }
    let field = |at| ne_u64(head, at).ok_or_else(|| short_header(file_len));
    let attr_size = field(16)?;
    let data = Section {
        offset: field(40)?,
        size: field(48)?,
    };
    let features = [field(72)?, field(80)?, field(88)?, field(96)?];
    if header_size < HEADER_LEN as u64 || attr_size < ATTR_SIZE_VER0 {
        return Err(HeaderProblem::Corrupt(format!(
            "header size {header_size}, attr size {attr_size}"
        )));
    }
    if data.size == 0 && file_len > data.offset {
        return Err(HeaderProblem::Unfinished);
    }
    if data.end() > file_len {
        return Err(HeaderProblem::Truncated {
            expected: data.end(),
            actual: file_len,
        });
    }
    Ok(Header { data, features })
}

fn short_header(file_len: u64) -> HeaderProblem {
    HeaderProblem::NotPerfData(format!("{file_len} bytes, shorter than a perf.data header"))
}

/// The feature sections listed in `table` (one per bit set in `features`, in bit order),
/// each checked to lie inside the file.
fn feature_sections(
    table: &[u8],
    features: &[u64; 4],
    file_len: u64,
) -> Result<Vec<(u32, Section)>, HeaderProblem> {
    let bits = (0..256u32).filter(|&bit| features[bit as usize / 64] & (1 << (bit % 64)) != 0);
    let mut sections = Vec::new();
    for (i, bit) in bits.enumerate() {
        let (Some(offset), Some(size)) = (ne_u64(table, 16 * i), ne_u64(table, 16 * i + 8)) else {
            return Err(HeaderProblem::Corrupt("short feature table".into()));
        };
        let section = Section { offset, size };
        if section.end() > file_len || offset.checked_add(size).is_none() {
            return Err(HeaderProblem::Corrupt(format!(
                "feature {bit} at bytes {offset}+{size}, past the end of the file"
            )));
        }
        sections.push((bit, section));
    }
    Ok(sections)
}

/// Walks a `HEADER_EVENT_DESC` section, checking that every count and length it holds
/// stays inside it:
///
/// ```text
/// u32 nr; u32 attr_size;
/// nr x { perf_event_attr (attr_size bytes); u32 nr_ids; u32 len; char name[len]; u64 ids[nr_ids] }
/// ```
fn check_event_desc(desc: &[u8]) -> Result<(), HeaderProblem> {
    let bad = |what: &str| HeaderProblem::Corrupt(format!("event descriptions: {what}"));
    let nr = ne_u32(desc, 0).ok_or_else(|| bad("too short"))?;
    let attr_size = ne_u32(desc, 4).ok_or_else(|| bad("too short"))? as usize;
    if (attr_size as u64) < ATTR_SIZE_VER0 {
        return Err(bad(&format!("attr size {attr_size}")));
    }
    let mut at = 8usize;
    for i in 0..nr {
        let overrun = || bad(&format!("event {i} of {nr} runs past the section"));
        at = at.checked_add(attr_size).ok_or_else(overrun)?;
        let nr_ids = ne_u32(desc, at).ok_or_else(overrun)? as usize;
        let name_len = ne_u32(desc, at + 4).ok_or_else(overrun)? as usize;
        at = nr_ids
            .checked_mul(8)
            .and_then(|ids| (at + 8).checked_add(name_len)?.checked_add(ids))
            .ok_or_else(overrun)?;
        if at > desc.len() {
            return Err(overrun());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// A `perf_file_header` with the given header size and data section, no features.
    fn header(magic: &[u8; 8], header_size: u64, data_offset: u64, data_size: u64) -> Vec<u8> {
        let mut h = magic.to_vec();
        for v in [
            header_size,
            136,
            104,
            32,
            data_offset,
            data_size,
            0,
            0,
            0,
            0,
            0,
            0,
        ] {
            h.extend_from_slice(&v.to_ne_bytes());
        }
        h
    }

    fn raw_event(buffer: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; layout::TRACE_ENTRY_LEN];
        raw.extend_from_slice(&layout::header(buffer.len()));
        raw.extend_from_slice(buffer);
        raw.extend_from_slice(&[0; 4]); // perf pads raw data to 8 bytes
        raw
    }

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
        let custom = TracepointNames {
            metrics: "my_metrics".into(),
            traces: "user_events:my_spans".into(),
        };
        assert_eq!(
            custom.signal_of("user_events:my_metrics"),
            Some(Signal::Metrics)
        );
        assert_eq!(
            custom.signal_of("user_events:my_spans"),
            Some(Signal::Traces)
        );
        assert_eq!(custom.signal_of("user_events:otlp_metrics"), None);
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

    #[test]
    fn header_problems_are_named() {
        let problem = |head: &[u8], len| parse_header(head, len).map(|h| h.data);
        assert!(matches!(
            problem(b"", 0),
            Err(HeaderProblem::NotPerfData(_))
        ));
        assert!(matches!(
            problem(b"hello, world", 12),
            Err(HeaderProblem::NotPerfData(r)) if r.contains("hello, w")
        ));
        assert!(matches!(
            problem(b"PERFFILE", 8),
            Err(HeaderProblem::NotPerfData(r)) if r.contains("version 1")
        ));
        assert!(matches!(
            problem(&MAGIC.to_ne_bytes(), 9),
            Err(HeaderProblem::NotPerfData(r)) if r.contains("header")
        ));
        assert_eq!(
            problem(&MAGIC.swap_bytes().to_ne_bytes(), 8),
            Err(HeaderProblem::ForeignEndian)
        );
        let magic = MAGIC.to_ne_bytes();
        assert_eq!(
            problem(&header(&magic, 16, 0, 0)[..16], 16),
            Err(HeaderProblem::PipeMode)
        );
        assert_eq!(
            problem(&header(&magic, 104, 200, 1000), 1300),
            Ok(Section {
                offset: 200,
                size: 1000
            })
        );
        assert_eq!(
            problem(&header(&magic, 104, 200, 0), 4096),
            Err(HeaderProblem::Unfinished)
        );
        assert_eq!(
            problem(&header(&magic, 104, 200, 1000), 1000),
            Err(HeaderProblem::Truncated {
                expected: 1200,
                actual: 1000
            })
        );
        assert!(matches!(
            problem(&header(&magic, 104, 200, u64::MAX), 1000),
            Err(HeaderProblem::Truncated { .. })
        ));
    }

    #[test]
    fn feature_sections_must_lie_inside_the_file() {
        let features = [(1 << 12) | (1 << 3), 0, 0, 0];
        let table: Vec<u8> = [10u64, 5, 100, 50]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(
            feature_sections(&table, &features, 150),
            Ok(vec![
                (
                    3,
                    Section {
                        offset: 10,
                        size: 5
                    }
                ),
                (
                    12,
                    Section {
                        offset: 100,
                        size: 50
                    }
                )
            ])
        );
        assert!(matches!(
            feature_sections(&table, &features, 149),
            Err(HeaderProblem::Corrupt(r)) if r.contains("feature 12")
        ));
        assert!(feature_sections(&table[..16], &features, 150).is_err());
    }

    #[test]
    fn event_descriptions_must_add_up() {
        fn desc(nr: u32, attr_size: u32, nr_ids: u32, name: &[u8]) -> Vec<u8> {
            let mut d = [nr, attr_size].map(u32::to_ne_bytes).concat();
            d.extend(vec![0; attr_size as usize]);
            d.extend(nr_ids.to_ne_bytes());
            d.extend((name.len() as u32).to_ne_bytes());
            d.extend(name);
            d.extend(vec![0; 8 * nr_ids as usize]);
            d
        }
        assert_eq!(
            check_event_desc(&desc(1, 136, 2, b"user_events:x\0\0\0")),
            Ok(())
        );
        assert!(
            check_event_desc(&desc(2, 136, 2, b"x")).is_err(),
            "one event missing"
        );
        let mut huge_ids = desc(1, 136, 2, b"x");
        huge_ids[8 + 136..8 + 140].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(check_event_desc(&huge_ids).is_err());
        let mut huge_name = desc(1, 136, 0, b"x");
        huge_name[8 + 140..8 + 144].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(check_event_desc(&huge_name).is_err());
        assert!(
            check_event_desc(&desc(1, 0, 0, b"")).is_err(),
            "attr size 0"
        );
        assert!(check_event_desc(&[1, 0]).is_err());
    }
}
