//! Checking a perf.data file's structure before `linux-perf-data` parses it: that crate
//! trusts the counts and sizes in the file, so a corrupt count could make it allocate
//! terabytes. The header, the feature table and the event descriptions are checked
//! against the file's length first.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use linux_perf_data::linux_perf_event_reader::{RawEventRecord, ReadFormat, SampleFormat};

use super::reader::PerfDataError;
use crate::decode::TracepointNames;

/// The header size field of the pipe form (`perf record -o -`).
const PIPE_HEADER_SIZE: u64 = 16;

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
fn read_at(file: &mut (impl Read + Seek), offset: u64, len: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Checks a perf.data file's structure before `linux-perf-data` parses it: that crate
/// trusts the sizes in the file (a corrupt count can make it allocate terabytes), so
/// every section it reads while opening must lie inside the file and the event
/// descriptions must add up. Returns where the data section is.
pub(super) fn check_file(
    file: &mut (impl Read + Seek),
    file_len: u64,
    path: &Path,
    names: &TracepointNames,
) -> Result<Section, PerfDataError> {
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
    let sections = feature_sections(&table, &header.features, file_len).map_err(problem)?;
    // linux-perf-data reads every feature section into memory when it opens the file.
    let feature_bytes = sections
        .iter()
        .fold(0u64, |sum, (_, section)| sum.saturating_add(section.size));
    if feature_bytes > MAX_FEATURE_BYTES {
        return Err(problem(HeaderProblem::Corrupt(format!(
            "its feature sections add up to {feature_bytes} bytes, more than the \
             {MAX_FEATURE_BYTES} this decoder reads (perf writes a few kilobytes)"
        ))));
    }
    let event_desc = sections
        .into_iter()
        .find_map(|(feature, section)| (feature == FEATURE_EVENT_DESC).then_some(section))
        .ok_or_else(|| problem(HeaderProblem::NoEventNames))?;
    let bytes = read_at(file, event_desc.offset, event_desc.size).map_err(io)?;
    check_event_desc(&bytes).map_err(problem)?;
    Ok(header.data)
}

/// Size of `struct perf_file_header`.
const HEADER_LEN: usize = 104;
/// perf.data's magic as a number; a file written on this machine starts with its native bytes.
const MAGIC: u64 = u64::from_le_bytes(*b"PERFILE2");
/// The feature bit of `HEADER_EVENT_DESC`: every event's attr, name and sample ids.
const FEATURE_EVENT_DESC: u32 = 12;
/// The most bytes of feature sections (build ids, command line, CPU topology, event
/// descriptions...) a file may have: `linux-perf-data` loads them all when it opens it.
const MAX_FEATURE_BYTES: u64 = 16 << 20;
/// The most events a file may describe: perf records one per `-e`.
const MAX_EVENTS: u32 = 4096;
/// The most sample ids of all events together: perf records one per event and CPU.
const MAX_EVENT_IDS: usize = 1 << 16;
/// The smallest `perf_event_attr` (`PERF_ATTR_SIZE_VER0`).
const ATTR_SIZE_VER0: u64 = 64;

/// A `perf_file_section`: where a part of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Section {
    pub(super) offset: u64,
    pub(super) size: u64,
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

/// Reads a native-endian u64 at `at`, if `bytes` has it (whatever `at` is).
fn ne_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads a native-endian u32 at `at`, if `bytes` has it (whatever `at` is).
fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
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
///
/// It also bounds what `linux-perf-data` builds from them (at most [`MAX_EVENTS`] events
/// and [`MAX_EVENT_IDS`] ids), and checks each attr's own size field: `linux-perf-data`
/// 0.13 reads an attr of a size between two `PERF_ATTR_SIZE_VER*` values only up to the
/// smaller one but skips as if it had read all of it, so it would read the rest of the
/// section from the wrong place (a name length of 1 GiB, allocated, found by fuzzing).
fn check_event_desc(desc: &[u8]) -> Result<(), HeaderProblem> {
    let bad = |what: &str| HeaderProblem::Corrupt(format!("event descriptions: {what}"));
    let nr = ne_u32(desc, 0).ok_or_else(|| bad("too short"))?;
    let attr_size = ne_u32(desc, 4).ok_or_else(|| bad("too short"))? as usize;
    if (attr_size as u64) < ATTR_SIZE_VER0 {
        return Err(bad(&format!("attr size {attr_size}")));
    }
    if nr > MAX_EVENTS {
        return Err(bad(&format!("{nr} events, more than {MAX_EVENTS}")));
    }
    let mut at = 8usize;
    let mut ids_total = 0usize;
    for i in 0..nr {
        let overrun = || bad(&format!("event {i} of {nr} runs past the section"));
        // perf_event_attr { u32 type; u32 size; ... }
        let size = ne_u32(desc, at + 4).ok_or_else(overrun)?;
        if !attr_size_readable(size, attr_size) {
            return Err(bad(&format!(
                "event {i} has an attr of {size} bytes in slots of {attr_size}"
            )));
        }
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
        ids_total += nr_ids;
        if ids_total > MAX_EVENT_IDS {
            return Err(bad(&format!("more than {MAX_EVENT_IDS} event ids")));
        }
    }
    Ok(())
}

/// Whether `linux-perf-data` reads an attr whose size field says `size` as exactly
/// `size` bytes in a slot of `slot` bytes: it must fit, and be one of the kernel's
/// `PERF_ATTR_SIZE_VER*` sizes or past the last of them (whose tail it skips).
fn attr_size_readable(size: u32, slot: usize) -> bool {
    const VERSIONS: [u32; 8] = [64, 72, 80, 96, 104, 112, 120, 128];
    (size as usize) <= slot && (VERSIONS.contains(&size) || size > 128)
}

/// Whether `linux-perf-event-reader` can parse this sample record without overflowing.
///
/// Its `SampleRecord::parse` (0.10.2, sample.rs) multiplies the callchain's length, read
/// from the record, by 8 unchecked: a crafted length panics in debug builds and in release
/// wraps into a short skip that misreads every field after it. This walks the fields that
/// parser reads before the callchain, as it reads them (including its layout of `READ`),
/// and refuses a callchain longer than what is left of the record. A guard rather than a
/// patched copy of the crate: the fix is one checked multiplication in a crate we otherwise
/// use as published. Records are parsed in native byte order (`Records`), as here.
pub(super) fn sample_callchain_fits(record: &RawEventRecord<'_>) -> bool {
    let info = &record.parse_info;
    if !info.sample_format.contains(SampleFormat::CALLCHAIN) {
        return true;
    }
    let body = record.data.as_slice();
    let words_before = [
        SampleFormat::IDENTIFIER,
        SampleFormat::IP,
        SampleFormat::TID,
        SampleFormat::TIME,
        SampleFormat::ADDR,
        SampleFormat::ID,
        SampleFormat::STREAM_ID,
        SampleFormat::CPU,
        SampleFormat::PERIOD,
    ]
    .into_iter()
    .filter(|&f| info.sample_format.contains(f))
    .count();
    let mut at = words_before * 8;
    if info.sample_format.contains(SampleFormat::READ) {
        let read = info.read_format;
        let times = usize::from(read.contains(ReadFormat::TOTAL_TIME_ENABLED))
            + usize::from(read.contains(ReadFormat::TOTAL_TIME_RUNNING));
        let id = usize::from(read.contains(ReadFormat::ID));
        if read.contains(ReadFormat::GROUP) {
            at += 8 * (1 + times + id);
        } else {
            // { nr; times; { value; id } x nr }: a count the parser bounds by running out
            // of bytes, which is what the checks below do too.
            let Some(nr) = ne_u64(&body, at) else {
                return true;
            };
            let entries = usize::try_from(nr)
                .ok()
                .and_then(|nr| nr.checked_mul(8 * (1 + id)));
            match entries.and_then(|e| at.checked_add(8 * (1 + times))?.checked_add(e)) {
                Some(end) => at = end,
                // Longer than any record: the parser fails on its own, without overflow.
                None => return true,
            }
        }
    }
    match ne_u64(&body, at) {
        Some(len) => {
            let left = body.len().saturating_sub(at + 8) as u64;
            len <= left / 8
        }
        // The parser fails reading the length itself.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn feature_sections_are_bounded_in_total() {
        // Two features of 10 MiB each, inside a file that claims to be 1 GiB: only the
        // header and the feature table are read before the bound refuses them.
        let mut file = header(&MAGIC.to_ne_bytes(), 104, 104, 8);
        file[72..80].copy_from_slice(&((1u64 << 12) | (1 << 3)).to_ne_bytes());
        file.extend_from_slice(&[0; 8]);
        for v in [200u64, 10 << 20, 200 + (10 << 20), 10 << 20] {
            file.extend_from_slice(&v.to_ne_bytes());
        }
        let names = TracepointNames::default();
        let err =
            check_file(&mut io::Cursor::new(file), 1 << 30, Path::new("f"), &names).unwrap_err();
        assert!(
            err.to_string()
                .contains("feature sections add up to 20971520 bytes"),
            "{err}"
        );
    }

    #[test]
    fn event_descriptions_must_add_up() {
        fn desc(nr: u32, attr_size: u32, nr_ids: u32, name: &[u8]) -> Vec<u8> {
            let mut d = [nr, attr_size].map(u32::to_ne_bytes).concat();
            let mut attr = vec![0; attr_size as usize];
            if let Some(size) = attr.get_mut(4..8) {
                size.copy_from_slice(&attr_size.to_ne_bytes());
            }
            d.extend(attr);
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
        let with_attr_size = |size: u32| {
            let mut d = desc(1, 136, 2, b"x");
            d[12..16].copy_from_slice(&size.to_ne_bytes());
            check_event_desc(&d)
        };
        assert_eq!(
            with_attr_size(104),
            Ok(()),
            "an older attr in a larger slot"
        );
        assert!(with_attr_size(100).is_err(), "between two attr versions");
        assert!(with_attr_size(137).is_err(), "larger than its slot");
        assert!(with_attr_size(0).is_err());
        assert!(check_event_desc(&desc(MAX_EVENTS + 1, 136, 0, b"x")).is_err());
        let many_ids = desc(1, 136, MAX_EVENT_IDS as u32 + 1, b"x");
        assert!(check_event_desc(&many_ids).is_err());
    }
}
