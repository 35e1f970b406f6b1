//! Protobuf wire primitives that write borrowed data straight into a byte buffer.
//!
//! Written by hand on top of prost's varint helpers: prost, like every Rust protobuf crate,
//! encodes only its own generated message structs, and building those from the SDK's data
//! clones every string and attribute, which is most of what an export used to cost. Fields
//! are written as prost writes them (proto3: default scalars omitted, `optional` and oneof
//! members always present, fields in field-number order), so what we write decodes to the
//! same message and re-encodes to the same bytes (the tests check both).

use std::mem::MaybeUninit;

use prost::encoding::encoded_len_varint;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// A base-128 varint. prost's `encode_varint` is generic over `BufMut` and not inlined into
/// these call sites; most values here are one or two bytes.
#[inline(always)]
fn encode_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[inline(always)]
fn key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    encode_varint(u64::from(field << 3 | wire_type), buf);
}

/// A `uint32`/`uint64`/`int64`/enum/`bool` field, omitted when zero.
#[inline]
pub(crate) fn varint(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(buf, field, VARINT);
        encode_varint(value, buf);
    }
}

/// A varint field written even when zero (a oneof member).
#[inline]
pub(crate) fn varint_always(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, VARINT);
    encode_varint(value, buf);
}

/// A `sint32` field (zigzag), omitted when zero.
#[inline]
pub(crate) fn sint32(buf: &mut Vec<u8>, field: u32, value: i32) {
    varint(buf, field, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// A `fixed64` field, omitted when zero.
#[inline]
pub(crate) fn fixed64(buf: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        fixed64_always(buf, field, value);
    }
}

/// A `fixed64`/`sfixed64`/`double` field written even when zero: a oneof member or an
/// `optional` field, where presence is part of the value.
#[inline]
pub(crate) fn fixed64_always(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Consecutive `fixed64`/`double` fields with one-byte keys (field numbers below 16), each
/// `(field, value, present)`, written with one capacity check: a data point's timestamps,
/// count, sum, min and max. An absent field writes nothing; callers pass `value != 0` as
/// `present` for fields omitted when zero.
#[inline(always)]
pub(crate) fn fixed64_run<const N: usize>(buf: &mut Vec<u8>, fields: [(u32, u64, bool); N]) {
    buf.reserve(9 * N);
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    let mut at = 0;
    for (field, value, present) in fields {
        debug_assert!(field < 16, "one-byte keys");
        // Written whether present or not (the next field overwrites it), so that the loop
        // has no branch.
        let slot = &mut spare[at..at + 9];
        slot[0] = MaybeUninit::new((field << 3 | FIXED64) as u8);
        for (dst, b) in slot[1..].iter_mut().zip(value.to_le_bytes()) {
            *dst = MaybeUninit::new(b);
        }
        at += 9 * usize::from(present);
    }
    // SAFETY: `9 * N` bytes after `len` were reserved, and the first `at` of them (at most
    // `9 * N`) were written by the loop.
    unsafe { buf.set_len(len + at) };
}

/// A `double` field written even when zero (a oneof member or an `optional` field).
#[inline]
pub(crate) fn double_always(buf: &mut Vec<u8>, field: u32, value: f64) {
    fixed64_always(buf, field, value.to_bits());
}

/// A `double` field, omitted when it equals 0.0 (as prost does, so -0.0 too).
#[inline]
pub(crate) fn double(buf: &mut Vec<u8>, field: u32, value: f64) {
    if value != 0.0 {
        fixed64_always(buf, field, value.to_bits());
    }
}

/// A `fixed32` field, omitted when zero.
#[inline]
pub(crate) fn fixed32(buf: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        key(buf, field, FIXED32);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// A `string` or `bytes` field, omitted when empty.
#[inline]
pub(crate) fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        bytes_always(buf, field, value);
    }
}

/// A `string` or `bytes` field written even when empty (a oneof member).
#[inline]
pub(crate) fn bytes_always(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(buf, field, LEN);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
}

/// A packed `repeated fixed64` or `repeated double` field, omitted when empty.
#[inline]
pub(crate) fn packed_fixed64(buf: &mut Vec<u8>, field: u32, values: impl Iterator<Item = u64>) {
    match values.size_hint() {
        (0, Some(0)) => {}
        (n, Some(m)) if n == m => {
            len_prefix(buf, field, n * 8);
            // An iterator that yields more than its exact size hint said is cut there.
            fixed64_array(buf, n, values);
        }
        _ => {
            let start = buf.len();
            if message(buf, field, |buf| {
                values.for_each(|v| buf.extend_from_slice(&v.to_le_bytes()))
            }) == 0
            {
                buf.truncate(start);
            }
        }
    }
}

/// A packed `repeated uint64` field, omitted when empty.
#[inline]
pub(crate) fn packed_varint(buf: &mut Vec<u8>, field: u32, values: impl Iterator<Item = u64>) {
    let start = buf.len();
    let len = message(buf, field, |buf| {
        for v in values {
            encode_varint(v, buf);
        }
    });
    if len == 0 {
        buf.truncate(start);
    }
}

/// An embedded message (always written, even when its body is empty): the field's key, the
/// body's length and the body that `body` writes. Returns the body's length.
///
/// The length comes first on the wire but is known only after the body: one byte is
/// reserved, which fits bodies under 128 bytes (most attributes and values); a longer body
/// is moved right by the extra length bytes.
#[inline]
pub(crate) fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    sized_message::<1>(buf, field, body)
}

/// [`message`] for bodies that are usually 128 to 16,383 bytes long (spans, histogram
/// points): two length bytes are reserved, so the body moves only when it is shorter or
/// longer than that.
#[inline]
pub(crate) fn large_message(
    buf: &mut Vec<u8>,
    field: u32,
    body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    sized_message::<2>(buf, field, body)
}

#[inline(always)]
fn sized_message<const RESERVED: usize>(
    buf: &mut Vec<u8>,
    field: u32,
    body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    key(buf, field, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0; RESERVED]);
    body(buf);
    let len = buf.len() - at - RESERVED;
    let need = encoded_len_varint(len as u64);
    if need != RESERVED {
        let body_at = at + RESERVED;
        if need > RESERVED {
            buf.resize(buf.len() + need - RESERVED, 0);
            buf.copy_within(body_at..body_at + len, at + need);
        } else {
            buf.copy_within(body_at..body_at + len, at + need);
            buf.truncate(at + need + len);
        }
    }
    // The length's bytes, written over the reserved ones.
    let mut v = len as u64;
    for b in &mut buf[at..at + need - 1] {
        *b = v as u8 | 0x80;
        v >>= 7;
    }
    buf[at + need - 1] = v as u8;
    len
}

/// The key and length of a length-delimited field of `len` bytes (the body follows).
#[inline]
pub(crate) fn len_prefix(buf: &mut Vec<u8>, field: u32, len: usize) {
    key(buf, field, LEN);
    encode_varint(len as u64, buf);
}

/// Appends the concatenation of `parts` to `buf` with one capacity check: an attribute is
/// four or five short pieces (keys, lengths, a value), for which an `extend_from_slice` and
/// a call to `memcpy` each cost more than the bytes themselves.
#[inline(always)]
pub(crate) fn concat<const N: usize>(buf: &mut Vec<u8>, parts: [&[u8]; N]) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(total);
    let len = buf.len();
    let mut spare = &mut buf.spare_capacity_mut()[..total];
    for part in parts {
        let (dst, rest) = spare.split_at_mut(part.len());
        copy_short(dst, part);
        spare = rest;
    }
    // SAFETY: the `total` bytes after `len` were reserved above and every one of them was
    // written: `parts` fill them in order, being `total` bytes long together.
    unsafe { buf.set_len(len + total) };
}

/// Appends `head[..head_len]`, `a`, `mid[..mid_len]` and `b` to `buf` with one capacity
/// check and no bounds check per part: an attribute is a key and length header, its key,
/// the value's key and length, and the value, and for these [`concat`]'s generic loop over
/// the parts costs more than the bytes themselves. `head_len` and `mid_len` are at most 4.
#[inline(always)]
pub(crate) fn concat_framed(
    buf: &mut Vec<u8>,
    (head, head_len): ([u8; 4], usize),
    a: &[u8],
    (mid, mid_len): ([u8; 4], usize),
    b: &[u8],
) {
    assert!(head_len <= 4 && mid_len <= 4);
    let total = head_len + a.len() + mid_len + b.len();
    // Four bytes of slack: `head` and `mid` are stored whole, the bytes past their lengths
    // being overwritten by what follows them (or left beyond the new length).
    buf.reserve(total + 4);
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` holds at least `total + 4` bytes. Each store starts at the sum of
    // the lengths before it, so the 4-byte stores end at most 4 bytes past `total`, and the
    // copies of `a` and `b` end within `total`; `a` and `b` are borrowed, so they do not
    // overlap `buf`'s spare capacity. Every byte of the first `total` is written.
    unsafe {
        let d = spare.as_mut_ptr().cast::<u8>();
        d.cast::<[u8; 4]>().write_unaligned(head);
        let d = d.add(head_len);
        copy_short_raw(d, a);
        let d = d.add(a.len());
        d.cast::<[u8; 4]>().write_unaligned(mid);
        copy_short_raw(d.add(mid_len), b);
        buf.set_len(len + total);
    }
}

/// Copies `src` into `dst` (of the same length); short slices, the common case, inline in
/// two overlapping moves rather than through a call to `memcpy`.
#[inline(always)]
fn copy_short(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: `dst` is valid for `src.len()` bytes (checked above).
    unsafe { copy_short_raw(dst.as_mut_ptr().cast::<u8>(), src) }
}

/// [`copy_short`] to a raw destination.
///
/// # Safety
/// `d` must be valid for writes of `src.len()` bytes and not overlap `src`.
#[inline(always)]
unsafe fn copy_short_raw(d: *mut u8, src: &[u8]) {
    let (n, s) = (src.len(), src.as_ptr());
    // SAFETY: in every branch, `d` and `s` are valid for `n` bytes (the caller's promise
    // and a borrowed slice), they do not overlap (the caller's promise), and each copy
    // stays within the first `n` bytes since its width `k` is at most `n` and it starts at
    // 0 or at `n - k`.
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                *d = *s;
                *d.add(n / 2) = *s.add(n / 2);
                *d.add(n - 1) = *s.add(n - 1);
            }
            4..=7 => {
                std::ptr::copy_nonoverlapping(s, d, 4);
                std::ptr::copy_nonoverlapping(s.add(n - 4), d.add(n - 4), 4);
            }
            8..=16 => {
                std::ptr::copy_nonoverlapping(s, d, 8);
                std::ptr::copy_nonoverlapping(s.add(n - 8), d.add(n - 8), 8);
            }
            17..=32 => {
                std::ptr::copy_nonoverlapping(s, d, 16);
                std::ptr::copy_nonoverlapping(s.add(n - 16), d.add(n - 16), 16);
            }
            _ => std::ptr::copy_nonoverlapping(s, d, n),
        }
    }
}

/// `n` values of 8 bytes each, written at the end of `buf` from `values` (at most `n` of
/// them are taken; missing ones are zeros).
#[inline(always)]
fn fixed64_array(buf: &mut Vec<u8>, n: usize, values: impl Iterator<Item = u64>) {
    let total = n * 8;
    buf.reserve(total);
    let len = buf.len();
    let (slots, _) = buf.spare_capacity_mut()[..total].as_chunks_mut::<8>();
    let mut written = 0;
    for (slot, v) in slots.iter_mut().zip(values) {
        *slot = v.to_le_bytes().map(MaybeUninit::new);
        written += 1;
    }
    slots[written..].fill([MaybeUninit::new(0); 8]);
    // SAFETY: the `total` bytes after `len` were reserved above, and the loop and the fill
    // wrote every 8-byte chunk of them.
    unsafe { buf.set_len(len + total) };
}

/// Asks the CPU to bring the cache line holding `p` into its caches, without waiting for it:
/// the encoder reads each data point's attributes and buckets from memory the SDK wrote
/// long before (10,000 points are megabytes), and issuing the next points' reads early
/// overlaps their cache misses with the encoding of this one. A hint only: it never faults,
/// whatever `p` is, and it does nothing on other architectures.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and never faults, even for an
    // invalid address; SSE, which it belongs to, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Encoded size of a length-delimited field with a one-byte key (field numbers below 16,
/// as every nested field this crate packs by) holding a `len`-byte body.
#[inline]
pub(crate) fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    struct Inner {
        #[prost(string, tag = "1")]
        s: String,
        #[prost(sint32, tag = "2")]
        z: i32,
        #[prost(uint64, repeated, tag = "3")]
        packed: Vec<u64>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Outer {
        #[prost(message, optional, tag = "1")]
        inner: Option<Inner>,
        #[prost(fixed64, repeated, tag = "2")]
        f: Vec<u64>,
        #[prost(double, tag = "3")]
        d: f64,
        #[prost(fixed32, tag = "4")]
        x: u32,
    }

    fn write(o: &Outer, large: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Some(inner) = &o.inner {
            let body = |b: &mut Vec<u8>| {
                bytes(b, 1, inner.s.as_bytes());
                sint32(b, 2, inner.z);
                packed_varint(b, 3, inner.packed.iter().copied());
            };
            if large {
                large_message(&mut buf, 1, body);
            } else {
                message(&mut buf, 1, body);
            }
        }
        packed_fixed64(&mut buf, 2, o.f.iter().copied());
        double(&mut buf, 3, o.d);
        fixed32(&mut buf, 4, o.x);
        buf
    }

    #[test]
    fn matches_prost_across_length_varint_boundaries() {
        for n in [0usize, 1, 120, 126, 127, 128, 300, 16_380, 16_384, 20_000] {
            let o = Outer {
                inner: Some(Inner {
                    s: "x".repeat(n),
                    z: -(n as i32),
                    packed: (0..n as u64 % 7).map(|v| v << 40).collect(),
                }),
                f: vec![n as u64; n % 5],
                d: if n % 2 == 0 { -1.5 } else { 0.0 },
                x: n as u32,
            };
            assert_eq!(write(&o, false), o.encode_to_vec(), "n = {n}");
            assert_eq!(
                write(&o, true),
                o.encode_to_vec(),
                "n = {n}, two bytes reserved"
            );
        }
    }

    #[test]
    fn concat_copies_every_length_exactly() {
        let src: Vec<u8> = (0..=255u8).collect();
        for a in 0..70 {
            for b in [0, 1, 5, 9, 17, 40] {
                let mut buf = vec![7u8];
                concat(&mut buf, [&src[..a], &src[100..100 + b]]);
                let want: Vec<u8> = [&[7u8][..], &src[..a], &src[100..100 + b]].concat();
                assert_eq!(buf, want, "lengths {a} and {b}");
            }
        }
    }

    #[test]
    fn packed_fixed64_cuts_or_pads_an_iterator_whose_size_hint_lies() {
        struct Lying(std::ops::Range<u64>, usize);
        impl Iterator for Lying {
            type Item = u64;
            fn next(&mut self) -> Option<u64> {
                self.0.next()
            }
            fn size_hint(&self) -> (usize, Option<usize>) {
                (self.1, Some(self.1))
            }
        }
        let mut buf = Vec::new();
        packed_fixed64(&mut buf, 1, Lying(1..10, 3));
        assert_eq!(buf.len(), 2 + 3 * 8, "cut at the promised 3");
        let mut buf = Vec::new();
        packed_fixed64(&mut buf, 1, Lying(1..3, 4));
        assert_eq!(buf.len(), 2 + 4 * 8, "padded to the promised 4");
        assert_eq!(&buf[2..10], &1u64.to_le_bytes());
        assert!(buf[18..].iter().all(|&b| b == 0));
    }

    #[test]
    fn field_len_counts_key_varint_and_body() {
        assert_eq!(field_len(0), 2);
        assert_eq!(field_len(127), 129);
        assert_eq!(field_len(128), 131);
        assert_eq!(field_len(16_383), 16_386);
        assert_eq!(field_len(16_384), 16_388);
    }
}
