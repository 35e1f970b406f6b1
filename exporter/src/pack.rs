//! Packs OTLP items (data points or spans) into as few events as possible, each one a complete
//! export request no larger than the buffer limit.
//!
//! Sizes are computed from the protobuf wire format, not estimated: an event under
//! construction is a path of nested messages (for metrics: ResourceMetrics > ScopeMetrics >
//! Metric > Sum/Gauge/...; for spans: ResourceSpans > ScopeSpans), and adding an item changes
//! only the lengths along the open path. Each level's length prefix is a varint, so its size
//! is recomputed exactly at every step; `encoded_len` of the finished message always equals
//! the tracked total (checked in debug builds and by the tests).
//!
//! Written by hand because prost offers only whole-message `encoded_len`, which would make
//! packing quadratic in the number of items.

use prost::Message;
use prost::encoding::encoded_len_varint;

/// Encoded size of a length-delimited field holding a `len`-byte body. Every nested field
/// used here has a field number below 16, so its tag is one byte.
#[inline]
pub(crate) fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Body lengths of the last (open) message at each of `D` nesting levels of the event under
/// construction; level 0 is the request itself, the items are children of level `D - 1`.
#[derive(Debug)]
struct OpenPath<const D: usize> {
    len: [usize; D],
    /// How many levels are open: 0 for an empty event, else `D`.
    depth: usize,
}

impl<const D: usize> OpenPath<D> {
    const fn new() -> Self {
        Self {
            len: [0; D],
            depth: 0,
        }
    }

    /// The body lengths if an item of `item` bytes were added, with the levels from `from`
    /// on opened anew with the bodies `fixed` (the message without children).
    fn grown(&self, from: usize, fixed: &[usize; D], item: usize) -> [usize; D] {
        let mut new = [0; D];
        let mut added = field_len(item);
        for i in (0..D).rev() {
            new[i] = if i >= from {
                fixed[i] + added
            } else {
                // The open message grows by the new size of its last child, minus that
                // child's old size if it was already there.
                let replaced = if i + 1 < from {
                    field_len(self.len[i + 1])
                } else {
                    0
                };
                self.len[i] + added - replaced
            };
            added = field_len(new[i]);
        }
        new
    }

    /// The encoded size of the request: the body of level 0, which is not itself a field.
    fn total(len: &[usize; D]) -> usize {
        len[0]
    }
}

/// Accumulates items into one request `R` at a time and hands each full request, encoded,
/// to `emit` together with the number of items in it.
pub(crate) struct Packer<'b, R, const D: usize, F> {
    req: R,
    path: OpenPath<D>,
    items: usize,
    limit: usize,
    buf: &'b mut Vec<u8>,
    emit: F,
}

impl<'b, R, const D: usize, F> Packer<'b, R, D, F>
where
    R: Message + Default,
    F: FnMut(&[u8], usize),
{
    pub(crate) fn new(limit: usize, buf: &'b mut Vec<u8>, emit: F) -> Self {
        Self {
            req: R::default(),
            path: OpenPath::new(),
            items: 0,
            limit,
            buf,
            emit,
        }
    }

    /// Makes room for an item of `item_len` bytes whose enclosing messages have the bodies
    /// `fixed`, where the levels from `from` on are not yet open in the current request.
    ///
    /// Returns the first level the caller must open (push a shell for) in
    /// [`request`](Self::request) before pushing the item, or `None` when the item exceeds
    /// the limit even in an empty request.
    pub(crate) fn reserve(
        &mut self,
        from: usize,
        fixed: &[usize; D],
        item_len: usize,
    ) -> Option<usize> {
        let from = from.min(self.path.depth);
        let grown = self.path.grown(from, fixed, item_len);
        if OpenPath::<D>::total(&grown) <= self.limit {
            self.commit(grown);
            return Some(from);
        }
        if self.path.depth == 0 {
            return None;
        }
        self.flush();
        let grown = self.path.grown(0, fixed, item_len);
        if OpenPath::<D>::total(&grown) <= self.limit {
            self.commit(grown);
            return Some(0);
        }
        None
    }

    fn commit(&mut self, grown: [usize; D]) {
        self.path.len = grown;
        self.path.depth = D;
        self.items += 1;
    }

    /// The request being filled, for the caller to push shells and items into.
    pub(crate) fn request(&mut self) -> &mut R {
        &mut self.req
    }

    /// Encodes and emits the current request, if it holds any item.
    pub(crate) fn flush(&mut self) {
        if self.items == 0 {
            return;
        }
        let req = std::mem::take(&mut self.req);
        self.buf.clear();
        req.encode(self.buf).expect("Vec<u8> grows as needed");
        debug_assert_eq!(self.buf.len(), OpenPath::<D>::total(&self.path.len));
        debug_assert!(self.buf.len() <= self.limit);
        (self.emit)(self.buf, self.items);
        self.path = OpenPath::new();
        self.items = 0;
    }
}

impl<R, const D: usize, F> Drop for Packer<'_, R, D, F> {
    fn drop(&mut self) {
        // Callers flush explicitly; a packer dropped with items would lose them silently.
        debug_assert!(
            self.items == 0 || std::thread::panicking(),
            "packer dropped with items"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_len_counts_tag_varint_and_body() {
        assert_eq!(field_len(0), 2);
        assert_eq!(field_len(127), 129);
        assert_eq!(field_len(128), 131);
        assert_eq!(field_len(16_383), 16_386);
        assert_eq!(field_len(16_384), 16_388);
    }

    #[test]
    fn grown_matches_nested_encoding_across_varint_boundaries() {
        // The request holds outer messages (3 fixed bytes + children), which hold inner ones
        // (5 fixed bytes + items).
        let mut p = OpenPath::<3>::new();
        let fixed = [0, 3, 5];
        let mut items = Vec::new();
        for (n, item) in [10usize, 100, 20, 1, 200].into_iter().enumerate() {
            let from = if n == 0 { 0 } else { 3 };
            let g = p.grown(from.min(p.depth), &fixed, item);
            p.len = g;
            p.depth = 3;
            items.push(item);
            let inner = 5 + items.iter().map(|&i| field_len(i)).sum::<usize>();
            let outer = 3 + field_len(inner);
            assert_eq!(OpenPath::<3>::total(&p.len), field_len(outer));
        }
        let first_inner = 5 + items.iter().map(|&i| field_len(i)).sum::<usize>();
        // Opening a second inner message keeps the first one's size.
        let g = p.grown(2, &fixed, 7);
        let outer = 3 + field_len(first_inner) + field_len(5 + field_len(7));
        assert_eq!(OpenPath::<3>::total(&g), field_len(outer));
        // Opening a second outer message keeps the whole first one.
        let g = p.grown(1, &fixed, 7);
        let first_outer = field_len(3 + field_len(first_inner));
        assert_eq!(
            OpenPath::<3>::total(&g),
            first_outer + field_len(3 + field_len(5 + field_len(7)))
        );
    }
}
