//! A sink's queue on disk (`--queue-dir`): batches appended to segment files before they
//! count as accepted, handed to the sink's worker in order, and removed once acknowledged,
//! so a collector outage or a restart loses nothing that was accepted (at-least-once).
//!
//! One directory per sink holds:
//!
//! ```text
//! lock                  flock'd by the decoder using the directory
//! ack                   where the first unacknowledged record starts (below)
//! 0000000000000001.seg  segments, numbered upward (16 hex digits), appended to in turn
//! ```
//!
//! A segment is the 8 bytes `UEQSEG01`, then records:
//!
//! ```text
//! "UEQR" | payload length u32 | CRC32C(length bytes ++ payload) u32 | payload
//! payload: signal u8 (0 metrics, 1 traces, 2 logs) | items u64 | Export*ServiceRequest protobuf
//! ```
//!
//! and `ack` is 24 bytes: segment u64, offset u64, flags u32 (bit 0: that record was being
//! sent), CRC32C of the first 20 bytes u32; all integers little-endian. Segments wholly
//! before the acknowledged position are deleted.
//!
//! Nothing on disk can stop the decoder: a torn record at the end of the last segment (a
//! crash mid-append) is truncated, a corrupt record anywhere is skipped up to the next
//! record whose magic and CRC check out, an unreadable segment or `ack` is skipped, and all
//! of it is counted and logged.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{DiskQueueConfig, SinkError, SyncPolicy};
use crate::batch::Batch;
use crate::decode::Signal;
use crate::kernel::try_lock_exclusive;

const SEGMENT_MAGIC: &[u8; 8] = b"UEQSEG01";
const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
const RECORD_MAGIC: &[u8; 4] = b"UEQR";
/// Magic, length, CRC.
const RECORD_HEADER: usize = 12;
/// Signal and item count, before the protobuf.
const PAYLOAD_PREFIX: usize = 9;
const ACK_LEN: usize = 24;
/// `ack` flag: the record at the acknowledged position was being sent.
const IN_FLIGHT: u32 = 1;

/// How often the `ack` file is synced when batches themselves are synced one by one.
const ACK_SYNC: Duration = Duration::from_secs(1);

/// A place in the queue: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    file: Arc<File>,
    /// Bytes in the file, header included.
    len: u64,
}

/// What the on-disk queue counted since it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskSnapshot {
    /// The sink's queue directory.
    pub dir: PathBuf,
    /// Bytes of its files, acknowledged records not yet deleted included: what `max_bytes`
    /// bounds.
    pub file_bytes: u64,
    /// Batches found on disk at start and handed to the sink since.
    pub replayed_batches: u64,
    /// Items in those batches.
    pub replayed_items: u64,
    /// Batches that were being sent when the decoder last stopped, with no answer yet, and
    /// were sent again: duplicates if the collector had taken them.
    pub possible_duplicate_batches: u64,
    /// Items in those batches.
    pub possible_duplicate_items: u64,
    /// Corrupt stretches skipped (each one or more records, their items unknown).
    pub corrupt_records: u64,
    /// Bytes in those stretches, and in segment files deleted as unreadable.
    pub corrupt_bytes: u64,
    /// Bytes of a torn record cut off the end of the last segment at start.
    pub truncated_bytes: u64,
}

/// Why a batch could not be appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// It would take the directory past `max_bytes` (or is larger than a record can be).
    Full,
    /// Writing failed (`ENOSPC` among others); nothing of it is left in the queue.
    Io(io::Error),
}

/// A sink's queue on disk. Not synchronised: [`super::queue::SinkQueue`] holds it under its
/// lock.
#[derive(Debug)]
pub(crate) struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    /// A segment is closed once it reaches this size.
    segment_bytes: u64,
    sync: SyncPolicy,
    /// Held for the flock, released when the file closes.
    _lock: File,
    ack_file: Arc<File>,
    /// Oldest first; never empty; the last is appended to.
    segments: VecDeque<Segment>,
    file_bytes: u64,
    /// The first record not acknowledged; also the next one handed out unless one is in
    /// flight.
    acked: Pos,
    /// Where the record in flight ends.
    in_flight: Option<Pos>,
    /// The end of what was on disk at start: records before it are replays.
    resumed_end: Pos,
    /// The `ack` file found at start said its record was being sent.
    resumed_in_flight: bool,
    syncer: Option<Syncer>,
    /// A sync or `ack` write failed, so a run of failures logs once.
    sync_failing: bool,
    stats: DiskSnapshot,
}

impl DiskQueue {
    /// Opens (creating it if need be) the queue of sink `sink` in `dir`, recovering what a
    /// crash left: fully acknowledged or unreadable segments are deleted, a torn last
    /// record is cut off. Fails only if the directory cannot be used at all.
    pub(crate) fn open(
        sink: &str,
        dir: PathBuf,
        config: &DiskQueueConfig,
    ) -> Result<Self, SinkError> {
        let fail = |source: io::Error| SinkError::QueueDir {
            sink: sink.to_owned(),
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(fail)?;
        let lock = open_rw(&dir.join("lock")).map_err(fail)?;
        if let Err(e) = try_lock_exclusive(lock.as_fd()) {
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                SinkError::QueueLocked {
                    sink: sink.to_owned(),
                    path: dir.clone(),
                }
            } else {
                fail(e)
            });
        }
        let ack_file = open_rw(&dir.join("ack")).map_err(fail)?;
        let mut stats = DiskSnapshot {
            dir: dir.clone(),
            ..DiskSnapshot::default()
        };
        let ack = read_ack(&ack_file, &dir);

        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(fail)?
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment_id))
            .collect();
        ids.sort_unstable();
        let next_id = ids
            .last()
            .map_or(1, |id| id + 1)
            .max(ack.map_or(1, |a| a.0.segment));
        let mut segments = VecDeque::new();
        for id in ids {
            let path = segment_path(&dir, id);
            if ack.is_some_and(|(a, _)| id < a.segment) {
                // Acknowledged wholly before the decoder stopped; its deletion was cut short.
                remove(&path);
                continue;
            }
            match open_segment(&path) {
                Ok(segment) => segments.push_back(Segment {
                    id,
                    file: Arc::new(segment.0),
                    len: segment.1,
                }),
                Err(e) => {
                    let len = fs::metadata(&path).map_or(0, |m| m.len());
                    tracing::warn!(path = %path.display(), error = %e, "deleting an unreadable queue segment");
                    stats.corrupt_records += 1;
                    stats.corrupt_bytes += len;
                    remove(&path);
                }
            }
        }
        if let Some(last) = segments.back_mut() {
            stats.truncated_bytes = cut_torn_tail(last, &dir);
        } else {
            segments.push_back(create_segment(&dir, next_id, config.sync).map_err(fail)?);
        }

        let first = &segments[0];
        let acked = match ack {
            Some((pos, _)) if pos.segment == first.id => Pos {
                segment: first.id,
                offset: pos.offset.clamp(SEGMENT_HEADER, first.len),
            },
            _ => Pos {
                segment: first.id,
                offset: SEGMENT_HEADER,
            },
        };
        let last = segments.back().map_or(acked, |s| Pos {
            segment: s.id,
            offset: s.len,
        });
        // The `ack` file too, so the whole directory stays within the bound.
        let file_bytes = ACK_LEN as u64 + segments.iter().map(|s| s.len).sum::<u64>();
        let ack_file = Arc::new(ack_file);
        let syncer = match config.sync {
            SyncPolicy::Interval(every) => Some(Syncer::start(every, &segments, &ack_file)),
            SyncPolicy::EveryBatch => Some(Syncer::start(ACK_SYNC, &segments, &ack_file)),
            SyncPolicy::Never => None,
        };
        let mut queue = Self {
            dir,
            max_bytes: config.max_bytes,
            segment_bytes: (config.max_bytes / 8).clamp(64 << 10, 16 << 20),
            sync: config.sync,
            _lock: lock,
            ack_file,
            segments,
            file_bytes,
            acked,
            in_flight: None,
            resumed_end: last,
            resumed_in_flight: ack.is_some_and(|(_, flags)| flags & IN_FLIGHT != 0),
            syncer,
            sync_failing: false,
            stats,
        };
        queue.advance_past_ended_segments();
        let pending = queue.pending_bytes();
        if pending > 0 {
            tracing::info!(
                dir = %queue.dir.display(),
                bytes = pending,
                segments = queue.segments.len(),
                "resuming the batches queued on disk"
            );
        }
        Ok(queue)
    }

    /// Appends `batch`: once this returns `Ok` it is in the file (and synced, with
    /// [`SyncPolicy::EveryBatch`]).
    pub(crate) fn append(&mut self, batch: &Batch) -> Result<(), AppendError> {
        let Some(record) = encode_record(batch.signal(), batch.items, batch.protobuf()) else {
            return Err(AppendError::Full);
        };
        let n = record.len() as u64;
        let tail_len = self.tail().len;
        let roll = tail_len > SEGMENT_HEADER && tail_len + n > self.segment_bytes;
        // Rolling over an empty queue deletes the old segment.
        let freed = if roll && self.is_empty() { tail_len } else { 0 };
        let needed = n + if roll { SEGMENT_HEADER } else { 0 };
        if self.file_bytes - freed + needed > self.max_bytes {
            return Err(AppendError::Full);
        }
        if roll {
            self.roll().map_err(AppendError::Io)?;
        }
        match self.write(&record) {
            Err(e) if is_disk_full(&e) && self.is_empty() && self.tail().len > SEGMENT_HEADER => {
                // The only space left is what acknowledged records hold: free it, then
                // try once more.
                self.empty_in_place();
                self.write(&record).map_err(AppendError::Io)
            }
            other => other.map_err(AppendError::Io),
        }
    }

    /// Truncates the last segment of an empty queue to its header, where a new segment
    /// would need space the disk may not have. The `ack` file is pointed at the header and
    /// synced first, so a power loss in between replays acknowledged batches rather than
    /// skipping new ones.
    fn empty_in_place(&mut self) {
        let tail = self.tail();
        let (id, len, file) = (tail.id, tail.len, Arc::clone(&tail.file));
        self.acked = Pos {
            segment: id,
            offset: SEGMENT_HEADER,
        };
        self.write_ack(0);
        let synced = self.ack_file.sync_data();
        self.note_sync(synced);
        if file.set_len(SEGMENT_HEADER).is_ok() {
            self.file_bytes -= len - SEGMENT_HEADER;
            self.segments.back_mut().expect("a queue has a segment").len = SEGMENT_HEADER;
            // Whatever was there at start has been sent.
            self.resumed_end = Pos {
                segment: 0,
                offset: 0,
            };
        } else {
            // Still acknowledged up to the old end.
            self.acked.offset = len;
            self.write_ack(0);
        }
    }

    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        let sync = self.sync;
        let tail = self.segments.back_mut().expect("a queue has a segment");
        if let Err(e) = tail.file.write_all_at(record, tail.len) {
            // Take back what part of it was written, so the next record follows the last
            // whole one; should that fail too, the reader skips the fragment as corrupt.
            if tail.file.set_len(tail.len).is_err() {
                let len = tail.file.metadata().map_or(tail.len, |m| m.len());
                self.file_bytes += len - tail.len;
                tail.len = len;
            }
            return Err(e);
        }
        tail.len += record.len() as u64;
        self.file_bytes += record.len() as u64;
        match sync {
            SyncPolicy::EveryBatch => {
                let synced = tail.file.sync_data();
                self.note_sync(synced);
            }
            SyncPolicy::Interval(_) => {
                if let Some(s) = &self.syncer {
                    s.shared.data_dirty.store(true, Ordering::Release);
                }
            }
            SyncPolicy::Never => {}
        }
        Ok(())
    }

    /// Closes the last segment and starts the next; deletes the old one if it holds nothing
    /// unacknowledged.
    fn roll(&mut self) -> io::Result<()> {
        let (id, file) = (self.tail().id, Arc::clone(&self.tail().file));
        if self.sync != SyncPolicy::Never {
            // What the syncer might not have reached yet: it only syncs the last segment.
            let synced = file.sync_data();
            self.note_sync(synced);
        }
        let segment = create_segment(&self.dir, id + 1, self.sync)?;
        if let Some(s) = &self.syncer {
            *s.shared.data.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&segment.file);
        }
        self.file_bytes += segment.len;
        self.segments.push_back(segment);
        self.advance_past_ended_segments();
        Ok(())
    }

    /// The next batch to send, marked in flight; `None` if every record was handed out.
    /// Corrupt or unreadable records are skipped and counted on the way.
    pub(crate) fn next(&mut self) -> Option<Batch> {
        if self.in_flight.is_some() {
            return None;
        }
        loop {
            self.advance_past_ended_segments();
            let pos = self.acked;
            let segment = self.segments.iter().find(|s| s.id == pos.segment)?;
            if pos.offset >= segment.len {
                return None; // the last segment, read to its end
            }
            let available = segment.len - pos.offset;
            match read_record(&segment.file, pos.offset, available) {
                Ok(Some((batch, len))) => {
                    self.in_flight = Some(Pos {
                        segment: pos.segment,
                        offset: pos.offset + len,
                    });
                    if pos < self.resumed_end {
                        self.stats.replayed_batches += 1;
                        self.stats.replayed_items += batch.items;
                    }
                    if std::mem::take(&mut self.resumed_in_flight) {
                        self.stats.possible_duplicate_batches += 1;
                        self.stats.possible_duplicate_items += batch.items;
                        tracing::info!(
                            dir = %self.dir.display(),
                            items = batch.items,
                            "sending again the batch that was in flight when the decoder stopped: the collector may receive it twice"
                        );
                    }
                    self.write_ack(IN_FLIGHT);
                    return Some(batch);
                }
                Ok(None) => {
                    let skip = skip_corrupt(&segment.file, pos.offset, available);
                    self.corrupt(pos, skip, "a corrupt record");
                }
                Err(e) => {
                    let what = format!("an unreadable record ({e})");
                    self.corrupt(pos, available, &what);
                }
            }
        }
    }

    fn corrupt(&mut self, pos: Pos, skip: u64, what: &str) {
        tracing::warn!(
            dir = %self.dir.display(),
            segment = pos.segment,
            offset = pos.offset,
            bytes = skip,
            "skipping {what} in the queue on disk"
        );
        self.stats.corrupt_records += 1;
        self.stats.corrupt_bytes += skip;
        self.acked.offset += skip;
        self.write_ack(0);
    }

    /// The batch in flight was sent, or dropped for good: it leaves the queue.
    pub(crate) fn ack(&mut self) {
        if let Some(end) = self.in_flight.take() {
            self.acked = end;
            self.advance_past_ended_segments();
            self.write_ack(0);
        }
    }

    /// The batch in flight stays queued, to be sent first next time (a shutdown cut its
    /// sending short).
    pub(crate) fn release(&mut self) {
        self.in_flight = None;
    }

    /// Moves the acknowledged position off the ends of closed segments and deletes them.
    fn advance_past_ended_segments(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        while self.segments.len() > 1 && self.acked.offset >= self.segments[0].len {
            let gone = self.segments.pop_front().expect("more than one segment");
            self.file_bytes -= gone.len;
            remove(&segment_path(&self.dir, gone.id));
            self.acked = Pos {
                segment: self.segments[0].id,
                offset: SEGMENT_HEADER,
            };
        }
    }

    fn write_ack(&mut self, flags: u32) {
        let mut buf = [0u8; ACK_LEN];
        buf[..8].copy_from_slice(&self.acked.segment.to_le_bytes());
        buf[8..16].copy_from_slice(&self.acked.offset.to_le_bytes());
        buf[16..20].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32c::crc32c(&buf[..20]);
        buf[20..].copy_from_slice(&crc.to_le_bytes());
        let written = self.ack_file.write_all_at(&buf, 0);
        if written.is_ok()
            && let Some(s) = &self.syncer
        {
            s.shared.ack_dirty.store(true, Ordering::Release);
        }
        self.note_sync(written);
    }

    fn note_sync(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => self.sync_failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.sync_failing, true) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write or sync the queue's files: a crash may replay or lose batches");
                }
            }
        }
    }

    fn tail(&self) -> &Segment {
        self.segments.back().expect("a queue has a segment")
    }

    /// Whether every record was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        let tail = self.tail();
        self.in_flight.is_none() && self.acked.segment == tail.id && self.acked.offset >= tail.len
    }

    /// Bytes of the records not acknowledged yet.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                let from = if s.id == self.acked.segment {
                    self.acked.offset
                } else {
                    SEGMENT_HEADER
                };
                s.len.saturating_sub(from)
            })
            .sum()
    }

    /// The counters, with the directory's size now.
    pub(crate) fn snapshot(&self) -> DiskSnapshot {
        DiskSnapshot {
            file_bytes: self.file_bytes,
            ..self.stats.clone()
        }
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        // A clean stop leaves everything on the disk, whatever the policy.
        let _ = self.tail().file.sync_data();
        let _ = self.ack_file.sync_data();
    }
}

/// The group-commit thread: syncs the last segment and the `ack` file when written to.
#[derive(Debug)]
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct SyncShared {
    data: Mutex<Arc<File>>,
    ack: Arc<File>,
    data_dirty: AtomicBool,
    ack_dirty: AtomicBool,
    stop: AtomicBool,
}

impl Syncer {
    fn start(every: Duration, segments: &VecDeque<Segment>, ack: &Arc<File>) -> Self {
        let tail = segments.back().expect("a queue has a segment");
        let shared = Arc::new(SyncShared {
            data: Mutex::new(Arc::clone(&tail.file)),
            ack: Arc::clone(ack),
            data_dirty: AtomicBool::new(false),
            ack_dirty: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let thread = thread::Builder::new()
            .name("ue-queue-sync".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || loop {
                    thread::park_timeout(every);
                    let stop = shared.stop.load(Ordering::Acquire);
                    if shared.data_dirty.swap(false, Ordering::AcqRel) {
                        let file = Arc::clone(&shared.data.lock().unwrap_or_else(|e| e.into_inner()));
                        if let Err(e) = file.sync_data() {
                            tracing::warn!(error = %e, "cannot sync the queue on disk");
                        }
                    }
                    if shared.ack_dirty.swap(false, Ordering::AcqRel) {
                        let _ = shared.ack.sync_data();
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the queue's sync thread: syncing at shutdown only"))
            .ok();
        Self { shared, thread }
    }

    fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// The id of a segment file's name, `None` for any other file.
fn segment_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete a queue segment: its batches will be sent again after a restart");
    }
}

/// Opens a segment and checks its header: the file and its length.
fn open_segment(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    if len < SEGMENT_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shorter than a segment header",
        ));
    }
    file.read_exact_at(&mut magic, 0)?;
    if &magic != SEGMENT_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a queue segment (wrong magic)",
        ));
    }
    Ok((file, len))
}

fn create_segment(dir: &Path, id: u64, sync: SyncPolicy) -> io::Result<Segment> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    if let Err(e) = file.write_all_at(SEGMENT_MAGIC, 0) {
        drop(file);
        remove(&path);
        return Err(e);
    }
    if sync != SyncPolicy::Never {
        // The new name must survive a power loss as well as the records in it.
        file.sync_data()?;
        File::open(dir)?.sync_all()?;
    }
    Ok(Segment {
        id,
        file: Arc::new(file),
        len: SEGMENT_HEADER,
    })
}

/// Cuts a torn or corrupt tail off the last segment; the bytes cut.
fn cut_torn_tail(segment: &mut Segment, dir: &Path) -> u64 {
    let mut buf = vec![0u8; segment.len as usize];
    let end = match segment.file.read_exact_at(&mut buf, 0) {
        Ok(()) => valid_end(&buf) as u64,
        Err(_) => SEGMENT_HEADER,
    };
    if end >= segment.len {
        return 0;
    }
    let cut = segment.len - end;
    let path = segment_path(dir, segment.id);
    match segment.file.set_len(end) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), bytes = cut, "cut a torn record off the end of the queue (the decoder stopped while appending it)");
            segment.len = end;
            cut
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot cut a torn record off the end of the queue: it will be skipped");
            0
        }
    }
}

/// Reads `ack`: the first unacknowledged position and the flags, or `None` (replay from the
/// oldest segment) if it is empty or damaged.
fn read_ack(file: &File, dir: &Path) -> Option<(Pos, u32)> {
    let mut buf = [0u8; ACK_LEN];
    let len = file.metadata().map_or(0, |m| m.len());
    if len == 0 {
        return None;
    }
    let parsed = file
        .read_exact_at(&mut buf, 0)
        .ok()
        .and_then(|()| parse_ack(&buf));
    if parsed.is_none() {
        tracing::warn!(dir = %dir.display(), "the queue's ack file is damaged: sending everything still on disk again (duplicates possible)");
    }
    parsed
}

fn parse_ack(buf: &[u8; ACK_LEN]) -> Option<(Pos, u32)> {
    let u32_at = |i: usize| buf[i..i + 4].try_into().ok().map(u32::from_le_bytes);
    let u64_at = |i: usize| buf[i..i + 8].try_into().ok().map(u64::from_le_bytes);
    if crc32c::crc32c(&buf[..20]) != u32_at(20)? {
        return None;
    }
    let pos = Pos {
        segment: u64_at(0)?,
        offset: u64_at(8)?,
    };
    Some((pos, u32_at(16)?))
}

fn signal_byte(signal: Signal) -> u8 {
    match signal {
        Signal::Metrics => 0,
        Signal::Traces => 1,
        Signal::Logs => 2,
    }
}

/// A batch framed as a record, or `None` if it is too large for one (4 GiB).
fn encode_record(signal: Signal, items: u64, protobuf: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(PAYLOAD_PREFIX + protobuf.len()).ok()?;
    let mut out = Vec::with_capacity(RECORD_HEADER + len as usize);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(signal_byte(signal));
    out.extend_from_slice(&items.to_le_bytes());
    out.extend_from_slice(protobuf);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &out[RECORD_HEADER..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// A record header's payload length and CRC, if its magic is right and the payload can
/// hold the prefix.
fn parse_header(h: &[u8; RECORD_HEADER]) -> Option<(u32, u32)> {
    if &h[..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let crc = u32::from_le_bytes(h[8..12].try_into().ok()?);
    (len as usize >= PAYLOAD_PREFIX).then_some((len, crc))
}

/// The signal and item count of a payload whose CRC checks out.
fn parse_prefix(prefix: &[u8; PAYLOAD_PREFIX]) -> Option<(Signal, u64)> {
    let signal = match prefix[0] {
        0 => Signal::Metrics,
        1 => Signal::Traces,
        2 => Signal::Logs,
        _ => return None,
    };
    Some((signal, u64::from_le_bytes(prefix[1..].try_into().ok()?)))
}

/// The length of the whole, valid record at `at` in `buf`, if there is one.
fn valid_at(buf: &[u8], at: usize) -> Option<usize> {
    let header: &[u8; RECORD_HEADER] = buf.get(at..at + RECORD_HEADER)?.try_into().ok()?;
    let (len, crc) = parse_header(header)?;
    let start = at + RECORD_HEADER;
    let payload = buf.get(start..start + len as usize)?;
    if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload) != crc {
        return None;
    }
    parse_prefix(payload[..PAYLOAD_PREFIX].try_into().ok()?)?;
    Some(RECORD_HEADER + len as usize)
}

/// Where the first valid record at or after `from` in `buf` starts.
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let found = at
            + buf
                .get(at..)?
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC)?;
        if valid_at(buf, found).is_some() {
            return Some(found);
        }
        at = found + 1;
    }
    None
}

/// The end of a segment's last valid record (its header's end if it has none): whatever
/// follows is a torn tail.
fn valid_end(buf: &[u8]) -> usize {
    let header = SEGMENT_HEADER as usize;
    let (mut at, mut end) = (header, header);
    while at < buf.len() {
        match valid_at(buf, at) {
            Some(n) => {
                at += n;
                end = at;
            }
            None => match resync(buf, at + 1) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    end
}

/// The record at `offset` of `file`, with `available` bytes to the segment's end: the batch
/// and the record's length, or `None` if it is not a whole, valid record.
fn read_record(file: &File, offset: u64, available: u64) -> io::Result<Option<(Batch, u64)>> {
    let mut header = [0u8; RECORD_HEADER];
    if available < RECORD_HEADER as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut header, offset)?;
    let Some((len, crc)) = parse_header(&header) else {
        return Ok(None);
    };
    let total = RECORD_HEADER as u64 + u64::from(len);
    if total > available {
        return Ok(None);
    }
    let mut prefix = [0u8; PAYLOAD_PREFIX];
    file.read_exact_at(&mut prefix, offset + RECORD_HEADER as u64)?;
    let mut protobuf = vec![0u8; len as usize - PAYLOAD_PREFIX];
    file.read_exact_at(
        &mut protobuf,
        offset + (RECORD_HEADER + PAYLOAD_PREFIX) as u64,
    )?;
    let computed = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &prefix),
        &protobuf,
    );
    if computed != crc {
        return Ok(None);
    }
    let Some((signal, items)) = parse_prefix(&prefix) else {
        return Ok(None);
    };
    Ok(Some((Batch::from_protobuf(signal, protobuf, items), total)))
}

/// How many bytes from `offset` to skip to reach the next valid record of the segment (all
/// `available` of them if there is none, or the rest cannot be read).
fn skip_corrupt(file: &File, offset: u64, available: u64) -> u64 {
    let mut rest = vec![0u8; available as usize];
    if file.read_exact_at(&mut rest, offset).is_err() {
        return available;
    }
    resync(&rest, 1).map_or(available, |at| at as u64)
}

/// Whether a write failed because the disk (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The directory name of sink `name`: its name with everything but letters, digits, `-` and
/// `.` replaced by `_`, so the same sink finds its queue again after a restart.
pub(crate) fn sink_dir_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(200);
    s
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::decode::Request;

    fn batch(spans: usize) -> Batch {
        Batch::new(Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            name: "x".repeat(100),
                            ..Span::default()
                        };
                        spans
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }))
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ue-disk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn config(dir: &Path, max_bytes: u64) -> DiskQueueConfig {
        DiskQueueConfig {
            dir: dir.to_owned(),
            max_bytes,
            sync: SyncPolicy::Never,
        }
    }

    fn open(dir: &Path, max_bytes: u64) -> DiskQueue {
        DiskQueue::open("t", dir.to_owned(), &config(dir, max_bytes)).unwrap()
    }

    /// Sends and acknowledges everything queued; the items of each batch.
    fn drain(q: &mut DiskQueue) -> Vec<u64> {
        let mut items = Vec::new();
        while let Some(b) = q.next() {
            items.push(b.items);
            q.ack();
        }
        items
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_round_trip_and_resync_skips_garbage() {
        let r = encode_record(Signal::Logs, 7, b"abc").unwrap();
        assert_eq!(valid_at(&r, 0), Some(r.len()));
        let mut buf = SEGMENT_MAGIC.to_vec();
        buf.extend_from_slice(&r);
        buf.extend_from_slice(b"UEQRgarbage");
        buf.extend_from_slice(&r);
        buf.extend_from_slice(&r[..r.len() - 1]);
        assert_eq!(resync(&buf, 9), Some(8 + r.len() + 11));
        assert_eq!(valid_end(&buf), 8 + 2 * r.len() + 11);
        let mut flipped = r.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(valid_at(&flipped, 0), None, "the CRC covers the payload");
    }

    #[test]
    fn batches_survive_a_reopen_in_order_and_acks_persist() {
        let dir = scratch("reopen");
        let mut q = open(&dir, 1 << 20);
        for n in 1..=5 {
            q.append(&batch(n)).unwrap();
        }
        let first = q.next().unwrap();
        assert_eq!(first.items, 1);
        q.ack();
        let second = q.next().unwrap();
        assert_eq!(second.items, 2);
        drop(q); // stopped with the second in flight
        let mut q = open(&dir, 1 << 20);
        assert_eq!(drain(&mut q), [2, 3, 4, 5]);
        let s = q.snapshot();
        assert_eq!((s.replayed_batches, s.replayed_items), (4, 14));
        assert_eq!(
            (s.possible_duplicate_batches, s.possible_duplicate_items),
            (1, 2)
        );
        drop(q);
        assert!(drain(&mut open(&dir, 1 << 20)).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bound_counts_files_and_acknowledged_segments_are_deleted() {
        let dir = scratch("bound");
        let one = encode_record(Signal::Traces, 3, batch(3).protobuf())
            .unwrap()
            .len() as u64;
        // Segments of 64 KiB (the smallest), the whole queue 256 KiB.
        let mut q = open(&dir, 256 << 10);
        let mut accepted = 0;
        while q.append(&batch(3)).is_ok() {
            accepted += 1;
        }
        assert!(q.snapshot().file_bytes <= 256 << 10);
        assert!(
            accepted as u64 * one > 192 << 10,
            "{accepted} records of {one}"
        );
        assert!(segments(&dir).len() >= 4);
        assert_eq!(drain(&mut q).len(), accepted);
        assert_eq!(segments(&dir).len(), 1, "only the last segment is kept");
        assert!(q.append(&batch(3)).is_ok(), "room again");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_corruption_in_the_middle_skipped() {
        let dir = scratch("corrupt");
        let mut q = open(&dir, 1 << 20);
        for n in 1..=4 {
            q.append(&batch(n)).unwrap();
        }
        drop(q);
        let seg = &segments(&dir)[0];
        let mut bytes = fs::read(seg).unwrap();
        let rec = |n| {
            encode_record(Signal::Traces, n as u64, batch(n).protobuf())
                .unwrap()
                .len()
        };
        let rec1 = rec(1);
        // Garbage in the second record, and half of the last one gone.
        bytes[8 + rec1 + 20] ^= 0xff;
        let len = bytes.len();
        bytes.truncate(len - 30);
        fs::write(seg, &bytes).unwrap();
        let mut q = open(&dir, 1 << 20);
        assert_eq!(drain(&mut q), [1, 3]);
        let s = q.snapshot();
        assert_eq!(
            s.truncated_bytes as usize,
            len - 30 - (8 + rec1 + rec(2) + rec(3))
        );
        assert_eq!(s.corrupt_records, 1);
        q.append(&batch(9)).unwrap();
        assert_eq!(drain(&mut q), [9]);
        drop(q);
        fs::write(dir.join("ack"), b"garbage").unwrap();
        fs::write(dir.join("0000000000000000.seg"), b"not a segment").unwrap();
        let q = open(&dir, 1 << 20);
        assert_eq!(q.snapshot().corrupt_records, 1, "the foreign segment");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_decoder_cannot_share_the_directory() {
        let dir = scratch("lock");
        let _q = open(&dir, 1 << 20);
        let err = DiskQueue::open("t", dir.clone(), &config(&dir, 1 << 20)).unwrap_err();
        assert!(matches!(err, SinkError::QueueLocked { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sink_names_make_directory_names() {
        assert_eq!(
            sink_dir_name("otlp-http http://127.0.0.1:4318"),
            "otlp-http_http___127.0.0.1_4318"
        );
    }
}
