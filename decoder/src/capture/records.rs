//! The records of a perf.data data section, read as a stream in memory bounded by
//! constants here, whatever the file says.
//!
//! `linux-perf-data` 0.13 still parses the header and the event descriptions (after
//! `check` bounded them), but its record iterator (`PerfRecordIter`) is not used: on
//! crafted captures it
//! - resizes a buffer to the 64-bit size of a `PERF_RECORD_AUXTRACE` record (an abort on a
//!   failed multi-terabyte allocation),
//! - decompresses a whole `PERF_RECORD_COMPRESSED` record into one buffer (a 44 KB record
//!   expands to gigabytes),
//! - keeps every record of a round until the next `FINISHED_ROUND`, and recycles record
//!   buffers at their largest size (memory grows with the file).
//!
//! So this module walks the data section itself, through small fixed buffers: it checks
//! every size against what is left of the section before reading, decompresses at most
//! [`MAX_DECOMPRESSED`] bytes per compressed record in fixed chunks, and keeps only the
//! records the reader needs (samples and loss records), sorted in time order within rounds
//! as perf and `linux-perf-data` do, holding at most [`MAX_BUFFERED`] bytes of them; past
//! that a round is handed out in sorted parts (counted, see [`Records::split_rounds`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};

use linux_perf_data::linux_perf_event_reader::{
    AttrFlags, RawData, RawEventRecord, RecordParseInfo, RecordType, SampleFormat,
};
use linux_perf_data::{AttributeDescription, Endianness};

/// The most bytes one compressed record may expand to. perf compresses one flush of one
/// ring into records of at most 64 KiB each, which expand by far less than this.
pub(crate) const MAX_DECOMPRESSED: u64 = 32 << 20;
/// The most bytes of records held for sorting at once, counting
/// [`RECORD_OVERHEAD`] for each.
pub(crate) const MAX_BUFFERED: usize = 32 << 20;
/// What holding one record costs besides its body: its key and slot (72 bytes), the
/// allocator's header of its body, and room for the vectors' growth.
const RECORD_OVERHEAD: usize = 128;
/// Size of `struct perf_event_header`.
const HEADER_LEN: usize = 8;
/// The size of the chunks compressed records are decompressed in.
const CHUNK: usize = 64 << 10;

const PERF_RECORD_FINISHED_ROUND: u32 = 68;
const PERF_RECORD_AUXTRACE: u32 = 71;
const PERF_RECORD_COMPRESSED: u32 = 81;
const PERF_RECORD_COMPRESSED2: u32 = 83;
/// `struct perf_record_auxtrace` after its header: size, offset, reference (u64), idx, tid,
/// cpu, reserved (u32).
const AUXTRACE_BODY_LEN: usize = 40;

/// One record kept for the reader: a sample or a loss record of attr `attr_index`.
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) attr_index: usize,
    pub(crate) record_type: RecordType,
    pub(crate) misc: u16,
    /// The record's body, after its header; empty for samples of attrs not `wanted`.
    pub(crate) body: Vec<u8>,
}

/// How records find their attr (`linux-perf-data`'s rules, which `parse_file` checked).
#[derive(Debug)]
enum Ids {
    OnlyOneEvent,
    /// Every attr puts the id at the same place: parse it with the first attr's info.
    Same,
    /// Every attr has `IDENTIFIER`: the id is first in samples and, with `SAMPLE_ID_ALL`,
    /// last in other records.
    Identifier {
        sample_id_all: bool,
    },
}

/// Reads the data section of a perf.data file record by record.
pub(crate) struct Records<R> {
    reader: R,
    /// Bytes of the data section not read yet.
    remaining: u64,
    parse_infos: Vec<RecordParseInfo>,
    /// Whose samples the reader decodes; other samples are kept without their body.
    wanted: Vec<bool>,
    ids: Ids,
    attr_of_id: HashMap<u64, usize>,
    sorter: Sorter,
    /// One record's body (at most 64 KiB, the largest `u16` size).
    scratch: Vec<u8>,
    dctx: Option<zstd_safe::DCtx<'static>>,
    chunk: Vec<u8>,
    /// The compressed record being decompressed, one chunk per call of `next` that needs
    /// records, so that its records never pile up.
    compressed: Option<Compressed>,
    /// Decompressed bytes that do not make a whole record yet (less than 64 KiB).
    partial: Vec<u8>,
    seq: u64,
}

impl<R> std::fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// Why the data section cannot be read further.
pub(crate) type RecordsError = Box<dyn std::error::Error + Send + Sync>;

impl<R: Read> Records<R> {
    /// Reads the `data_size` bytes of the data section from `reader` (positioned at its
    /// start) for the events `attrs`, of which those with `wanted` set are decoded.
    pub(crate) fn new(
        reader: R,
        data_size: u64,
        attrs: &[AttributeDescription],
        wanted: Vec<bool>,
    ) -> Self {
        let parse_infos: Vec<_> = attrs
            .iter()
            .map(|a| RecordParseInfo::new(&a.attr, Endianness::NATIVE))
            .collect();
        let ids = match parse_infos.split_first() {
            None => Ids::OnlyOneEvent,
            Some((_, [])) => Ids::OnlyOneEvent,
            Some((first, rest)) if rest.iter().all(|p| p.id_parse_info == first.id_parse_info) => {
                Ids::Same
            }
            Some(_) => Ids::Identifier {
                sample_id_all: attrs
                    .first()
                    .is_some_and(|a| a.attr.flags.contains(AttrFlags::SAMPLE_ID_ALL)),
            },
        };
        if let Ids::Identifier { .. } = ids {
            debug_assert!(
                attrs
                    .iter()
                    .all(|a| a.attr.sample_format.contains(SampleFormat::IDENTIFIER))
            );
        }
        let mut attr_of_id = HashMap::new();
        for (index, attr) in attrs.iter().enumerate() {
            for id in &attr.event_ids {
                attr_of_id.insert(*id, index);
            }
        }
        Self {
            reader,
            remaining: data_size,
            parse_infos,
            wanted,
            ids,
            attr_of_id,
            sorter: Sorter::default(),
            scratch: Vec::new(),
            dctx: None,
            chunk: Vec::new(),
            compressed: None,
            partial: Vec::new(),
            seq: 0,
        }
    }

    /// How many rounds held more than [`MAX_BUFFERED`] bytes and were handed out in
    /// parts, each sorted by time; records of such a round may come out of time order.
    pub(crate) fn split_rounds(&self) -> u64 {
        self.sorter.splits
    }

    // Indexing `parse_infos` by attr index cannot fail: indexes come from `attr_of_id` or
    // are 0, and `PerfFileReader::parse_file` refuses a file without attributes.

    /// The record `kept` as `linux-perf-event-reader` parses it.
    pub(crate) fn raw<'a>(&self, kept: &'a Kept) -> RawEventRecord<'a> {
        RawEventRecord::new(
            kept.record_type,
            kept.misc,
            RawData::Single(&kept.body),
            self.parse_infos[kept.attr_index],
        )
    }

    /// The next kept record in time order, `Ok(None)` at the end of the data section.
    pub(crate) fn next(&mut self) -> Result<Option<Kept>, RecordsError> {
        loop {
            if let Some(kept) = self.sorter.outgoing.pop_front() {
                self.sorter.buffered -= kept.body.len() + RECORD_OVERHEAD;
                return Ok(Some(kept));
            }
            if self.compressed.is_some() {
                self.decompress_chunk()?;
                continue;
            }
            if self.remaining == 0 {
                self.sorter.finish();
                return Ok(self.sorter.outgoing.pop_front().inspect(|kept| {
                    self.sorter.buffered -= kept.body.len() + RECORD_OVERHEAD;
                }));
            }
            self.read_record()?;
        }
    }

    /// Reads one record of the data section and keeps, sorts or skips it.
    fn read_record(&mut self) -> Result<(), RecordsError> {
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header)?;
        let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
        let misc = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
        let size = usize::from(u16::from_ne_bytes(
            header[6..8].try_into().expect("2 bytes"),
        ));
        let body_len = size
            .checked_sub(HEADER_LEN)
            .ok_or_else(|| format!("a record of type {kind} with size {size}"))?;
        let mut body = std::mem::take(&mut self.scratch);
        body.resize(body_len, 0);
        let read = self.read_exact(&mut body);
        let result = read.and_then(|()| self.dispatch(kind, misc, &body));
        self.scratch = body;
        result
    }

    fn dispatch(&mut self, kind: u32, misc: u16, body: &[u8]) -> Result<(), RecordsError> {
        match kind {
            PERF_RECORD_FINISHED_ROUND => self.sorter.finish_round(),
            PERF_RECORD_COMPRESSED => self.start_decompressing(body, 0),
            PERF_RECORD_COMPRESSED2 => {
                // u64 data_size, then the compressed bytes, then padding.
                let len = body
                    .get(..8)
                    .map(|n| u64::from_ne_bytes(n.try_into().expect("8 bytes")))
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= body.len() - 8)
                    .ok_or("a COMPRESSED2 record whose data size exceeds it")?;
                self.start_decompressing(&body[..8 + len], 8);
            }
            PERF_RECORD_AUXTRACE => {
                // The trace data follows the record in the section; skip it unread.
                let size = body
                    .get(..8)
                    .filter(|_| body.len() >= AUXTRACE_BODY_LEN)
                    .map(|n| u64::from_ne_bytes(n.try_into().expect("8 bytes")))
                    .ok_or("an AUXTRACE record too short for its fields")?;
                if size > self.remaining {
                    return Err(format!(
                        "an AUXTRACE record of {size} bytes of trace data, past the end of the \
                         data section ({} bytes left)",
                        self.remaining
                    )
                    .into());
                }
                self.remaining -= size;
                let copied = io::copy(&mut (&mut self.reader).take(size), &mut io::sink())?;
                if copied != size {
                    return Err("the file ended inside the data section".into());
                }
            }
            _ => self.keep(kind, misc, body),
        }
        Ok(())
    }

    /// Starts decompressing `record[start..]`, the zstd data of a compressed record (one
    /// stream across records, as perf writes them).
    fn start_decompressing(&mut self, record: &[u8], start: usize) {
        let mut bytes = self.compressed.take().map(|c| c.bytes).unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(record);
        self.compressed = Some(Compressed {
            bytes,
            pos: start,
            produced: 0,
        });
    }

    /// Decompresses one chunk of the current compressed record and handles the records
    /// completed in it.
    fn decompress_chunk(&mut self) -> Result<(), RecordsError> {
        let Some(mut compressed) = self.compressed.take() else {
            return Ok(());
        };
        let dctx = self.dctx.get_or_insert_with(zstd_safe::DCtx::create);
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(CHUNK, 0);
        let mut input = zstd_safe::InBuffer::around(&compressed.bytes);
        input.set_pos(compressed.pos);
        let mut output = zstd_safe::OutBuffer::around(&mut chunk[..]);
        let result = dctx.decompress_stream(&mut output, &mut input);
        let len = output.pos();
        compressed.pos = input.pos();
        let done = len < CHUNK && compressed.pos == compressed.bytes.len();
        let result = match result {
            Err(code) => Err(format!(
                "zstd decompression failed: {}",
                zstd_safe::get_error_name(code)
            )
            .into()),
            Ok(_) => {
                compressed.produced = compressed.produced.saturating_add(len as u64);
                if compressed.produced > MAX_DECOMPRESSED {
                    Err(format!(
                        "a compressed record of {} bytes expands past {MAX_DECOMPRESSED} bytes \
                         (perf's expand by far less)",
                        compressed.bytes.len()
                    )
                    .into())
                } else {
                    self.decompressed(&chunk[..len])
                }
            }
        };
        self.chunk = chunk;
        if result.is_ok() && !done {
            self.compressed = Some(compressed);
        }
        result
    }

    /// Handles the whole records in `partial` + `bytes`, keeping the rest in `partial`.
    fn decompressed(&mut self, bytes: &[u8]) -> Result<(), RecordsError> {
        let mut partial = std::mem::take(&mut self.partial);
        partial.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            let Some(header) = partial.get(at..at + HEADER_LEN) else {
                break Ok(());
            };
            let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
            let misc = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
            let size = usize::from(u16::from_ne_bytes(
                header[6..8].try_into().expect("2 bytes"),
            ));
            if size < HEADER_LEN {
                break Err(format!("a compressed record of type {kind} with size {size}").into());
            }
            let Some(body) = partial.get(at + HEADER_LEN..at + size) else {
                break Ok(());
            };
            // Inside compressed data only the kernel's records count: perf's own (rounds,
            // nested compression) are not expected there and are skipped.
            self.keep(kind, misc, body);
            at += size;
        };
        partial.drain(..at);
        self.partial = partial;
        result
    }

    /// Keeps a sample or loss record for the reader; skips every other record.
    fn keep(&mut self, kind: u32, misc: u16, body: &[u8]) {
        let record_type = RecordType(kind);
        if ![
            RecordType::SAMPLE,
            RecordType::LOST,
            RecordType::LOST_SAMPLES,
        ]
        .contains(&record_type)
        {
            return;
        }
        let data = RawData::Single(body);
        let attr_index = match self.ids {
            Ids::OnlyOneEvent => None,
            Ids::Same => self.raw_of(record_type, misc, data, 0).id(),
            Ids::Identifier { sample_id_all } => {
                let at = if record_type == RecordType::SAMPLE {
                    Some(0)
                } else if sample_id_all {
                    body.len().checked_sub(8)
                } else {
                    None
                };
                at.and_then(|at| body.get(at..at + 8))
                    .map(|id| u64::from_ne_bytes(id.try_into().expect("8 bytes")))
            }
        }
        .and_then(|id| self.attr_of_id.get(&id).copied())
        .unwrap_or(0);
        let wanted = record_type == RecordType::SAMPLE
            && self.wanted.get(attr_index).copied().unwrap_or(false);
        if !wanted {
            // Only counted, in any order: handed out at once, never held for sorting.
            let body = if record_type == RecordType::SAMPLE {
                Vec::new()
            } else {
                body.to_vec()
            };
            self.sorter.pass(Kept {
                attr_index,
                record_type,
                misc,
                body,
            });
            return;
        }
        let time = self.raw_of(record_type, misc, data, attr_index).timestamp();
        self.seq += 1;
        self.sorter.insert(
            (time, self.seq),
            Kept {
                attr_index,
                record_type,
                misc,
                body: body.to_vec(),
            },
        );
    }

    fn raw_of<'a>(
        &self,
        record_type: RecordType,
        misc: u16,
        data: RawData<'a>,
        attr_index: usize,
    ) -> RawEventRecord<'a> {
        RawEventRecord::new(record_type, misc, data, self.parse_infos[attr_index])
    }

    /// Reads exactly `buf.len()` bytes of the data section.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), RecordsError> {
        let len = buf.len() as u64;
        if len > self.remaining {
            return Err(format!(
                "a record of {len} bytes past the end of the data section ({} bytes left)",
                self.remaining
            )
            .into());
        }
        self.remaining -= len;
        self.reader.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => "the file ended inside the data section".into(),
            _ => RecordsError::from(e),
        })
    }
}

/// A compressed record being decompressed.
#[derive(Debug)]
struct Compressed {
    /// The record's body.
    bytes: Vec<u8>,
    /// Where the zstd data not decompressed yet starts.
    pos: usize,
    /// Bytes it expanded to so far.
    produced: u64,
}

type Key = (Option<u64>, u64);

/// Orders records by time the way `linux-perf-data`'s sorter does: perf guarantees that
/// round N and round N + 2 do not overlap in time, so at the end of a round every record
/// up to the previous round's latest time can go out. Holds at most [`MAX_BUFFERED`]
/// bytes: past that, everything held goes out sorted (a split round).
#[derive(Debug, Default)]
struct Sorter {
    outgoing: VecDeque<Kept>,
    incoming: Vec<(Key, Kept)>,
    prev_max: Key,
    cur_max: Key,
    /// Records in `incoming` whose key is at most `prev_max`.
    lte_prev_max: usize,
    /// Bytes held in `incoming` and `outgoing`, with [`RECORD_OVERHEAD`] each.
    buffered: usize,
    /// The part of `buffered` in `incoming`: what is held for sorting.
    sorting: usize,
    splits: u64,
}

impl Sorter {
    /// Hands `kept` out next, ahead of the records being sorted.
    fn pass(&mut self, kept: Kept) {
        self.buffered += kept.body.len() + RECORD_OVERHEAD;
        self.outgoing.push_back(kept);
    }

    fn insert(&mut self, key: Key, kept: Kept) {
        self.buffered += kept.body.len() + RECORD_OVERHEAD;
        self.sorting += kept.body.len() + RECORD_OVERHEAD;
        if key <= self.prev_max {
            self.lte_prev_max += 1;
        } else if key > self.cur_max {
            self.cur_max = key;
        }
        self.incoming.push((key, kept));
        if self.sorting > MAX_BUFFERED {
            self.splits += 1;
            self.finish();
        }
    }

    fn finish_round(&mut self) {
        if self.lte_prev_max > 0 {
            let n = self.lte_prev_max - 1;
            self.incoming.select_nth_unstable_by_key(n, |(key, _)| *key);
            self.incoming[..=n].sort_unstable_by_key(|(key, _)| *key);
            for (_, kept) in self.incoming.drain(..=n) {
                self.sorting -= kept.body.len() + RECORD_OVERHEAD;
                self.outgoing.push_back(kept);
            }
        }
        self.prev_max = self.cur_max;
        self.lte_prev_max = self.incoming.len();
    }

    /// Everything held goes out, sorted.
    fn finish(&mut self) {
        self.incoming.sort_unstable_by_key(|(key, _)| *key);
        self.outgoing
            .extend(self.incoming.drain(..).map(|(_, kept)| kept));
        self.sorting = 0;
        self.prev_max = self.cur_max;
        self.lte_prev_max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record labelled `label` (in its attr index) of `len` body bytes.
    fn kept(label: usize, len: usize) -> Kept {
        Kept {
            attr_index: label,
            record_type: RecordType::SAMPLE,
            misc: 0,
            body: vec![0; len],
        }
    }

    fn out(sorter: &mut Sorter) -> Vec<usize> {
        sorter.outgoing.drain(..).map(|k| k.attr_index).collect()
    }

    #[test]
    fn records_go_out_in_time_order_once_later_rounds_cannot_precede_them() {
        let mut s = Sorter::default();
        for (seq, t) in [5, 3, 4].into_iter().enumerate() {
            s.insert((Some(t), seq as u64), kept(t as usize, 0));
        }
        s.finish_round();
        assert_eq!(
            out(&mut s),
            [] as [usize; 0],
            "round 2 may still precede them"
        );
        for (seq, t) in [7, 2, 6].into_iter().enumerate() {
            s.insert((Some(t), 10 + seq as u64), kept(t as usize, 0));
        }
        s.finish_round();
        assert_eq!(out(&mut s), [2, 3, 4, 5]);
        s.insert((Some(8), 20), kept(8, 0));
        s.finish();
        assert_eq!(out(&mut s), [6, 7, 8]);
        assert_eq!(s.splits, 0);
    }

    #[test]
    fn a_round_past_the_bound_goes_out_sorted_in_parts() {
        let mut s = Sorter::default();
        let len = 1 << 20;
        let per_part = MAX_BUFFERED / (len + RECORD_OVERHEAD) + 1;
        for i in 0..per_part {
            s.insert((Some((per_part - i) as u64), i as u64), kept(i, len));
        }
        assert_eq!(s.splits, 1);
        assert_eq!(s.incoming.len(), 0);
        assert_eq!(s.sorting, 0);
        let part = out(&mut s);
        assert_eq!(part.len(), per_part);
        assert!(
            part.windows(2).all(|w| w[0] > w[1]),
            "sorted by time: {part:?}"
        );
        // One more record does not split again while the part waits to be read.
        s.insert((Some(0), 99), kept(99, len));
        assert_eq!(s.splits, 1);
    }
}
