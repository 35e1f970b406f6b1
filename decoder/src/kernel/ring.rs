//! Reading records out of one perf ring buffer.
//!
//! Every record starts with `perf_event_header { u32 type; u16 misc; u16 size; }`, `size`
//! counting the header. The kernel publishes only whole records, but a record may start
//! near the end of the data area and continue at its start; such a record is copied into a
//! scratch buffer so callers always see one contiguous slice.
//!
//! A header that cannot be right (size under 8, larger than the ring or than what was
//! published), or a head more than a ring's size ahead of the tail, means the ring can no
//! longer be parsed: the reader reports it, jumps the tail to the head and goes on. It
//! never loops on a bad record or reads outside the published bytes.

use std::fmt;

use perf_event_open_sys::bindings::{PERF_RECORD_LOST, PERF_RECORD_SAMPLE};

use crate::kernel::sys::{RingMemory, Window};

/// Size of `struct perf_event_header`.
pub(crate) const HEADER_LEN: usize = 8;
/// Size of a `PERF_RECORD_LOST` record: header, `u64 id`, `u64 lost`.
const LOST_LEN: usize = HEADER_LEN + 16;

/// One record read from the ring.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A `PERF_RECORD_SAMPLE`: its body, after the header.
    Sample(&'a [u8]),
    /// A `PERF_RECORD_LOST`: the kernel dropped `lost` records because the ring was full.
    Lost {
        /// The sample id of the event whose records were lost.
        id: u64,
        /// How many records were lost.
        lost: u64,
    },
    /// Another record type, skipped.
    Other {
        /// `perf_event_header.type`.
        kind: u32,
    },
    /// Something that cannot be a valid record.
    Corrupt(Corruption),
}

/// What was wrong with the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corruption {
    /// The head is more than a ring's size ahead of the tail. Resynced.
    Overrun {
        /// Bytes between tail and head.
        available: u64,
    },
    /// Fewer bytes than a header were published after the last whole record. Resynced.
    PartialHeader {
        /// Bytes left.
        available: u64,
    },
    /// A header whose size is under 8, larger than the ring, or past the head. Resynced.
    BadSize {
        /// `perf_event_header.type`.
        kind: u32,
        /// `perf_event_header.size`.
        size: u16,
    },
    /// A `PERF_RECORD_LOST` too short for its fields. Skipped; the ring stays in sync.
    ShortLost {
        /// `perf_event_header.size`.
        size: u16,
    },
}

impl Corruption {
    /// A short, stable label for counting by reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Overrun { .. } => "ring_overrun",
            Self::PartialHeader { .. } => "ring_partial_header",
            Self::BadSize { .. } => "ring_bad_record_size",
            Self::ShortLost { .. } => "ring_short_lost_record",
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overrun { available } => {
                write!(f, "ring head is {available} bytes ahead of the tail")
            }
            Self::PartialHeader { available } => {
                write!(f, "{available} bytes published after the last record")
            }
            Self::BadSize { kind, size } => write!(f, "record of type {kind} with size {size}"),
            Self::ShortLost { size } => write!(f, "lost record of size {size}"),
        }
    }
}

/// One CPU's ring buffer and what was read from it.
#[derive(Debug)]
pub(crate) struct Ring {
    memory: RingMemory,
    scratch: Vec<u8>,
    lost: u64,
    resyncs: u64,
}

impl Ring {
    pub(crate) fn new(memory: RingMemory) -> Self {
        Self {
            memory,
            scratch: Vec::new(),
            lost: 0,
            resyncs: 0,
        }
    }

    /// Records the kernel dropped because this ring was full, so far.
    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    /// Times the reader found the ring corrupt and jumped to the head.
    #[cfg(test)]
    pub(crate) fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// The ring's memory, for tests that play the kernel.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn memory_mut(&mut self) -> &mut RingMemory {
        &mut self.memory
    }

    /// Calls `f` with every record published so far, then gives their space back to the
    /// kernel. Returns the number of records passed to `f`.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Record<'_>)) -> usize {
        let window = self.memory.window();
        let mut tail = window.tail();
        let mut count = 0;
        if window.available() > window.data_size() as u64 {
            let available = window.available();
            self.resyncs += 1;
            f(Record::Corrupt(Corruption::Overrun { available }));
            let head = window.head();
            window.commit(head);
            return 1;
        }
        while tail != window.head() {
            count += 1;
            match next_record(&window, tail, &mut self.scratch) {
                Ok((size, record)) => {
                    if let Record::Lost { lost, .. } = record {
                        self.lost = self.lost.saturating_add(lost);
                    }
                    f(record);
                    tail = tail.wrapping_add(size as u64);
                }
                Err(corruption) => {
                    self.resyncs += 1;
                    f(Record::Corrupt(corruption));
                    tail = window.head();
                }
            }
        }
        window.commit(tail);
        count
    }
}

/// Reads the record at `pos`: its size and contents, or why the ring cannot be trusted
/// from here on.
fn next_record<'a>(
    window: &'a Window<'_>,
    pos: u64,
    scratch: &'a mut Vec<u8>,
) -> Result<(usize, Record<'a>), Corruption> {
    let available = window.head().wrapping_sub(pos);
    let mut header = [0u8; HEADER_LEN];
    let (a, b) = window
        .get(pos, HEADER_LEN)
        .ok_or(Corruption::PartialHeader { available })?;
    header[..a.len()].copy_from_slice(a);
    header[a.len()..].copy_from_slice(b);
    let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
    let size = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes"));
    let len = usize::from(size);
    if len < HEADER_LEN || len > window.data_size() || len as u64 > available {
        return Err(Corruption::BadSize { kind, size });
    }
    let record: &'a [u8] = match window.get(pos, len) {
        Some((whole, [])) => whole,
        Some((first, second)) => {
            scratch.clear();
            scratch.extend_from_slice(first);
            scratch.extend_from_slice(second);
            scratch
        }
        None => return Err(Corruption::BadSize { kind, size }),
    };
    let body = &record[HEADER_LEN..];
    let record = match kind {
        PERF_RECORD_SAMPLE => Record::Sample(body),
        PERF_RECORD_LOST if len < LOST_LEN => Record::Corrupt(Corruption::ShortLost { size }),
        PERF_RECORD_LOST => Record::Lost {
            id: u64::from_ne_bytes(body[0..8].try_into().expect("8 bytes")),
            lost: u64::from_ne_bytes(body[8..16].try_into().expect("8 bytes")),
        },
        kind => Record::Other { kind },
    };
    Ok((len, record))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record in the kernel's format: header, then `body`.
    pub(crate) fn record(kind: u32, body: &[u8]) -> Vec<u8> {
        let size = u16::try_from(HEADER_LEN + body.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&size.to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn lost(id: u64, lost: u64) -> Vec<u8> {
        let mut body = id.to_ne_bytes().to_vec();
        body.extend_from_slice(&lost.to_ne_bytes());
        record(PERF_RECORD_LOST, &body)
    }

    /// Plays the kernel: appends records at the head and publishes them.
    pub(crate) fn publish(ring: &mut Ring, records: &[Vec<u8>]) {
        let memory = ring.memory_mut();
        let mut head = memory.window().head();
        for r in records {
            memory.kernel_write(head, r);
            head = head.wrapping_add(r.len() as u64);
        }
        memory.kernel_publish(head);
    }

    fn owned(record: Record<'_>) -> String {
        match record {
            Record::Sample(body) => format!("sample {body:?}"),
            Record::Lost { id, lost } => format!("lost id={id} lost={lost}"),
            Record::Other { kind } => format!("other {kind}"),
            Record::Corrupt(c) => format!("corrupt {}", c.reason()),
        }
    }

    fn drain_all(ring: &mut Ring) -> Vec<String> {
        let mut out = Vec::new();
        ring.drain(|r| out.push(owned(r)));
        out
    }

    #[test]
    fn empty_ring_yields_nothing() {
        let mut ring = Ring::new(RingMemory::in_memory(256));
        assert!(drain_all(&mut ring).is_empty());
        assert_eq!(ring.memory_mut().kernel_tail(), 0);
    }

    #[test]
    fn samples_lost_and_other_records_in_order() {
        let mut ring = Ring::new(RingMemory::in_memory(256));
        publish(
            &mut ring,
            &[
                record(PERF_RECORD_SAMPLE, &[1, 2, 3, 4, 5, 6, 7, 8]),
                lost(7, 3),
                record(3, &[0; 16]), // PERF_RECORD_COMM: skipped
                record(PERF_RECORD_SAMPLE, &[9; 8]),
                lost(7, 2),
            ],
        );
        assert_eq!(
            drain_all(&mut ring),
            [
                "sample [1, 2, 3, 4, 5, 6, 7, 8]",
                "lost id=7 lost=3",
                "other 3",
                "sample [9, 9, 9, 9, 9, 9, 9, 9]",
                "lost id=7 lost=2",
            ]
        );
        assert_eq!(ring.lost(), 5);
        assert_eq!(ring.memory_mut().kernel_tail(), 16 + 24 + 24 + 16 + 24);
        // Nothing new: nothing yielded, tail unchanged.
        assert!(drain_all(&mut ring).is_empty());
        assert_eq!(ring.memory_mut().kernel_tail(), 104);
    }

    #[test]
    fn record_split_across_the_end_is_reassembled() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        // Start 8 bytes before the end: the header fits, the body wraps.
        ring.memory_mut().kernel_reset(56);
        let body: Vec<u8> = (0..24).collect();
        publish(&mut ring, &[record(PERF_RECORD_SAMPLE, &body)]);
        assert_eq!(drain_all(&mut ring), [format!("sample {body:?}")]);
        assert_eq!(ring.memory_mut().kernel_tail(), 56 + 32);
    }

    #[test]
    fn header_split_across_the_end_is_reassembled() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        // Start 4 bytes before the end: the header itself wraps.
        ring.memory_mut().kernel_reset(60);
        publish(
            &mut ring,
            &[lost(1, 42), record(PERF_RECORD_SAMPLE, &[5; 8])],
        );
        assert_eq!(
            drain_all(&mut ring),
            ["lost id=1 lost=42", "sample [5, 5, 5, 5, 5, 5, 5, 5]"]
        );
        assert_eq!(ring.lost(), 42);
        assert_eq!(ring.memory_mut().kernel_tail(), 60 + 24 + 16);
    }

    #[test]
    fn positions_keep_counting_over_many_laps() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        let mut seen = 0;
        for lap in 0..50u8 {
            publish(&mut ring, &[record(PERF_RECORD_SAMPLE, &[lap; 16])]);
            let got = drain_all(&mut ring);
            assert_eq!(got, [format!("sample {:?}", [lap; 16])]);
            seen += 1;
        }
        assert_eq!(ring.memory_mut().kernel_tail(), seen * 24);
    }

    #[test]
    fn positions_wrap_past_u64_max() {
        // The kernel's head and tail are free-running u64s: after 2^64 bytes (or from a
        // crafted start) they wrap to 0 mid-record, and reading goes on as before.
        let mut ring = Ring::new(RingMemory::in_memory(64));
        let start = u64::MAX - 11;
        ring.memory_mut().kernel_reset(start);
        publish(
            &mut ring,
            &[lost(2, 9), record(PERF_RECORD_SAMPLE, &[7; 16])],
        );
        assert_eq!(
            drain_all(&mut ring),
            [
                "lost id=2 lost=9",
                "sample [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]"
            ]
        );
        assert_eq!(ring.lost(), 9);
        assert_eq!(ring.memory_mut().kernel_tail(), start.wrapping_add(24 + 24));
    }

    #[test]
    fn size_below_header_resyncs_to_head() {
        let mut ring = Ring::new(RingMemory::in_memory(256));
        let mut bad = record(PERF_RECORD_SAMPLE, &[0; 8]);
        bad[6..8].copy_from_slice(&4u16.to_ne_bytes());
        publish(
            &mut ring,
            &[
                record(PERF_RECORD_SAMPLE, &[1; 8]),
                bad,
                record(PERF_RECORD_SAMPLE, &[2; 8]),
            ],
        );
        assert_eq!(
            drain_all(&mut ring),
            [
                "sample [1, 1, 1, 1, 1, 1, 1, 1]",
                "corrupt ring_bad_record_size"
            ]
        );
        assert_eq!(ring.memory_mut().kernel_tail(), 48);
        assert_eq!(ring.resyncs(), 1);
        // After the resync the ring reads normally again.
        publish(&mut ring, &[record(PERF_RECORD_SAMPLE, &[3; 8])]);
        assert_eq!(drain_all(&mut ring), ["sample [3, 3, 3, 3, 3, 3, 3, 3]"]);
    }

    #[test]
    fn zero_size_never_loops() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        // 32 zero bytes published: a header of size 0.
        ring.memory_mut().kernel_publish(32);
        assert_eq!(drain_all(&mut ring), ["corrupt ring_bad_record_size"]);
        assert_eq!(ring.memory_mut().kernel_tail(), 32);
    }

    #[test]
    fn size_larger_than_ring_or_past_head_resyncs() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        let mut huge = record(PERF_RECORD_SAMPLE, &[0; 8]);
        huge[6..8].copy_from_slice(&1000u16.to_ne_bytes());
        publish(&mut ring, &[huge]);
        assert_eq!(drain_all(&mut ring), ["corrupt ring_bad_record_size"]);
        assert_eq!(ring.memory_mut().kernel_tail(), 16);

        let mut past = record(PERF_RECORD_SAMPLE, &[0; 8]);
        past[6..8].copy_from_slice(&48u16.to_ne_bytes()); // only 16 published
        publish(&mut ring, &[past]);
        assert_eq!(drain_all(&mut ring), ["corrupt ring_bad_record_size"]);
        assert_eq!(ring.memory_mut().kernel_tail(), 32);
        assert_eq!(ring.resyncs(), 2);
    }

    #[test]
    fn partial_header_at_head_resyncs() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        publish(&mut ring, &[record(PERF_RECORD_SAMPLE, &[1; 8])]);
        let head = ring.memory_mut().window().head();
        ring.memory_mut().kernel_publish(head + 4);
        assert_eq!(
            drain_all(&mut ring),
            [
                "sample [1, 1, 1, 1, 1, 1, 1, 1]",
                "corrupt ring_partial_header"
            ]
        );
        assert_eq!(ring.memory_mut().kernel_tail(), 20);
    }

    #[test]
    fn head_more_than_a_ring_ahead_resyncs() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        ring.memory_mut().kernel_publish(1000);
        assert_eq!(drain_all(&mut ring), ["corrupt ring_overrun"]);
        assert_eq!(ring.memory_mut().kernel_tail(), 1000);
    }

    #[test]
    fn short_lost_record_is_skipped_without_resync() {
        let mut ring = Ring::new(RingMemory::in_memory(64));
        publish(
            &mut ring,
            &[
                record(PERF_RECORD_LOST, &[0; 8]),
                record(PERF_RECORD_SAMPLE, &[4; 8]),
            ],
        );
        assert_eq!(
            drain_all(&mut ring),
            [
                "corrupt ring_short_lost_record",
                "sample [4, 4, 4, 4, 4, 4, 4, 4]"
            ]
        );
        assert_eq!(ring.resyncs(), 0);
        assert_eq!(ring.lost(), 0);
    }
}
