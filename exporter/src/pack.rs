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

use crate::protobuf::{self, field_len};

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

    /// The body lengths if `added` bytes of items (keys and lengths included) were added to
    /// the innermost message, with the levels from `from` on opened anew with the bodies
    /// `fixed` (the message without children).
    fn grown(&self, from: usize, fixed: &[usize; D], added: usize) -> [usize; D] {
        let mut new = [0; D];
        let mut added = added;
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

/// The fixed part of the message open at one level: the fields before its children (for a
/// ScopeMetrics, the encoded scope) and after them (its schema URL), and the field number it
/// has in its parent.
#[derive(Debug, Default)]
pub(crate) struct Shell {
    tag: u32,
    /// Fields written before the children.
    pub(crate) prefix: Vec<u8>,
    /// Fields written after the children.
    pub(crate) suffix: Vec<u8>,
}

impl Shell {
    fn len(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }
}

/// Where a message's key and length go in the assembled event, and its body length.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Offset in `body` before which the key and length are written.
    at: usize,
    tag: u32,
    len: usize,
}

/// An item that does not fit even in an empty event.
#[derive(Debug)]
pub(crate) struct TooLarge;

/// Packs encoded items into events of at most `limit` bytes, each a complete export request
/// of `D` nesting levels: level 0 is the request itself, levels `1..D` are the messages that
/// enclose the items (for metrics ResourceMetrics, ScopeMetrics, Metric and its data body;
/// for spans ResourceSpans and ScopeSpans).
///
/// The caller describes where the next items belong with [`begin`](Self::begin) (one shell
/// per level, written once, not per item) and adds each item with [`item`](Self::item),
/// which encodes it straight into the event. The event's bytes are kept without the
/// enclosing messages' keys and lengths, which are known only when a message closes;
/// [`flush`](Self::flush) inserts them while copying the event out once.
#[derive(Debug)]
pub(crate) struct Packer<const D: usize> {
    limit: usize,
    path: OpenPath<D>,
    /// Items in the event under construction.
    items: usize,
    /// Bytes of items appended to the open innermost message and not yet counted in `path`:
    /// while the event is far from the limit, an item only adds its size here, and the
    /// lengths along the path are brought up to date ([`sync`](Self::sync)) when they are
    /// needed: near the limit, and when a message closes.
    unsynced: usize,
    /// The most that folding pending bytes into the path can add beyond the bytes
    /// themselves: each enclosing message's length (levels `1..D`) stays under the limit,
    /// so its varint grows by at most the limit's varint length minus one.
    slack: usize,
    shells: [Shell; D],
    /// The shells' lengths, recomputed when a shell changed since the last item.
    fixed: [usize; D],
    shells_changed: bool,
    /// Levels `1..=open` have an open message in the event (0: none).
    open: usize,
    /// Index in `nodes` of the open message at each level.
    open_nodes: [usize; D],
    body: Vec<u8>,
    nodes: Vec<Node>,
    /// The assembled event handed to `emit`.
    out: Vec<u8>,
    /// Holds an item while the event before it is flushed.
    carry: Vec<u8>,
}

/// Bytes reserved up front for each shell's fixed fields: a resource's attributes, a scope,
/// a metric's name, description and unit.
const SHELL_CAPACITY: usize = 256;

/// Nodes reserved up front: an event of a few metrics or scopes.
const NODES_CAPACITY: usize = 64;

impl<const D: usize> Packer<D> {
    /// A packer for events of at most `limit` bytes. Its buffers are all allocated here,
    /// where the exporter is built, and reused: were they allocated on the first export,
    /// they would be made in the SDK's export thread's heap arena among the SDK's own
    /// short-lived blocks, where blocks that live as long as the exporter keep the
    /// allocator from merging the free memory around them.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            path: OpenPath::new(),
            items: 0,
            unsynced: 0,
            slack: (D - 1) * (prost::encoding::encoded_len_varint(limit as u64) - 1),
            shells: std::array::from_fn(|_| Shell {
                tag: 0,
                prefix: Vec::with_capacity(SHELL_CAPACITY),
                suffix: Vec::with_capacity(SHELL_CAPACITY),
            }),
            fixed: [0; D],
            shells_changed: false,
            open: 0,
            open_nodes: [0; D],
            body: Vec::with_capacity(limit),
            nodes: Vec::with_capacity(NODES_CAPACITY),
            out: Vec::with_capacity(limit),
            carry: Vec::with_capacity(limit),
        }
    }

    /// Items in the event under construction.
    pub(crate) fn pending(&self) -> usize {
        self.items
    }

    /// Starts a new message at `level` (`1..D`), field `tag` of its parent, for the items
    /// that follow: the messages open at `level` and below are closed, and the returned
    /// shell, emptied, receives the new message's fixed fields.
    pub(crate) fn begin(&mut self, level: usize, tag: u32) -> &mut Shell {
        debug_assert!((1..D).contains(&level));
        self.close_to(level - 1);
        self.shells_changed = true;
        let shell = &mut self.shells[level];
        shell.tag = tag;
        shell.prefix.clear();
        shell.suffix.clear();
        shell
    }

    /// Encodes an item as field `tag` of the level `D - 1` message, with `encode` writing its
    /// body, into the event under construction; when it does not fit, the event so far is
    /// flushed to `emit` first and the item starts the next one. `large`: the body is usually
    /// 128 bytes or more (see [`protobuf::large_message`]).
    pub(crate) fn item(
        &mut self,
        tag: u32,
        large: bool,
        encode: impl FnOnce(&mut Vec<u8>),
        emit: &mut dyn FnMut(&[u8], usize),
    ) -> Result<(), TooLarge> {
        let (open_before, body_before, nodes_before) =
            (self.open, self.body.len(), self.nodes.len());
        // The first level whose message opens for this item (0: a new event).
        let from = if self.items == 0 { 0 } else { self.open + 1 };
        self.open_from(from.max(1));
        let item_at = self.body.len();
        let len = if large {
            protobuf::large_message(&mut self.body, tag, encode)
        } else {
            protobuf::message(&mut self.body, tag, encode)
        };
        let added = field_len(len);
        if from == D && self.path.len[0] + self.unsynced + added + self.slack <= self.limit {
            // Into the open innermost message, with room to spare whatever the lengths'
            // varints grow to: counted without walking the path.
            self.unsynced += added;
            self.items += 1;
            return Ok(());
        }
        self.sync();
        if self.shells_changed {
            self.fixed = std::array::from_fn(|level| {
                if level == 0 {
                    0
                } else {
                    self.shells[level].len()
                }
            });
            self.shells_changed = false;
        }
        let fixed = self.fixed;
        let grown = self.path.grown(from, &fixed, added);
        if OpenPath::<D>::total(&grown) <= self.limit {
            self.commit(grown);
            return Ok(());
        }
        if self.items == 0 {
            self.body.truncate(body_before);
            self.nodes.truncate(nodes_before);
            self.open = open_before;
            self.release_oversize();
            return Err(TooLarge);
        }
        // Take the item out, flush the event before it, and start the next event with it.
        self.carry.clear();
        self.carry.extend_from_slice(&self.body[item_at..]);
        self.body.truncate(body_before);
        self.nodes.truncate(nodes_before);
        self.open = open_before;
        self.flush(emit);
        let grown = self.path.grown(0, &fixed, added);
        if OpenPath::<D>::total(&grown) > self.limit {
            self.release_oversize();
            return Err(TooLarge);
        }
        self.open_from(1);
        self.body.extend_from_slice(&self.carry);
        self.commit(grown);
        Ok(())
    }

    /// Writes the event under construction, if it holds any item, to `emit`.
    pub(crate) fn flush(&mut self, emit: &mut dyn FnMut(&[u8], usize)) {
        if self.items == 0 {
            return;
        }
        self.close_to(0);
        self.out.clear();
        let mut copied = 0;
        for node in &self.nodes {
            self.out.extend_from_slice(&self.body[copied..node.at]);
            protobuf::len_prefix(&mut self.out, node.tag, node.len);
            copied = node.at;
        }
        self.out.extend_from_slice(&self.body[copied..]);
        debug_assert_eq!(self.out.len(), OpenPath::<D>::total(&self.path.len));
        debug_assert!(self.out.len() <= self.limit);
        emit(&self.out, self.items);
        self.body.clear();
        self.nodes.clear();
        self.path = OpenPath::new();
        self.items = 0;
    }

    /// Gives back what an oversize item made the buffers grow to, so that one huge item does
    /// not keep its memory for the life of the packer (a span processor lives as long as the
    /// application).
    fn release_oversize(&mut self) {
        let keep = 2 * self.limit;
        if self.body.capacity() > keep {
            self.body.shrink_to(keep);
        }
        if self.carry.capacity() > keep {
            self.carry = Vec::new();
        }
    }

    /// Brings the path's lengths up to date with the pending items.
    fn sync(&mut self) {
        if self.unsynced > 0 {
            self.path.len = self.path.grown(D, &self.fixed, self.unsynced);
            self.unsynced = 0;
        }
    }

    fn commit(&mut self, grown: [usize; D]) {
        self.path.len = grown;
        self.path.depth = D;
        self.items += 1;
    }

    /// Opens messages with the current shells at levels `from..D`.
    fn open_from(&mut self, from: usize) {
        for level in from..D {
            self.open_nodes[level] = self.nodes.len();
            self.nodes.push(Node {
                at: self.body.len(),
                tag: self.shells[level].tag,
                len: 0,
            });
            self.body.extend_from_slice(&self.shells[level].prefix);
        }
        self.open = D - 1;
    }

    /// Closes the open messages at the levels above `level`, innermost first: their lengths
    /// are final, and their trailing fields follow their children.
    fn close_to(&mut self, level: usize) {
        self.sync();
        while self.open > level {
            let l = self.open;
            self.nodes[self.open_nodes[l]].len = self.path.len[l];
            self.body.extend_from_slice(&self.shells[l].suffix);
            self.open -= 1;
        }
    }
}

impl<const D: usize> Drop for Packer<D> {
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
    fn grown_matches_nested_encoding_across_varint_boundaries() {
        // The request holds outer messages (3 fixed bytes + children), which hold inner ones
        // (5 fixed bytes + items).
        let mut p = OpenPath::<3>::new();
        let fixed = [0, 3, 5];
        let mut items = Vec::new();
        for (n, item) in [10usize, 100, 20, 1, 200].into_iter().enumerate() {
            let from = if n == 0 { 0 } else { 3 };
            let g = p.grown(from.min(p.depth), &fixed, field_len(item));
            p.len = g;
            p.depth = 3;
            items.push(item);
            let inner = 5 + items.iter().map(|&i| field_len(i)).sum::<usize>();
            let outer = 3 + field_len(inner);
            assert_eq!(OpenPath::<3>::total(&p.len), field_len(outer));
        }
        let first_inner = 5 + items.iter().map(|&i| field_len(i)).sum::<usize>();
        // Opening a second inner message keeps the first one's size.
        let g = p.grown(2, &fixed, field_len(7));
        let outer = 3 + field_len(first_inner) + field_len(5 + field_len(7));
        assert_eq!(OpenPath::<3>::total(&g), field_len(outer));
        // Opening a second outer message keeps the whole first one.
        let g = p.grown(1, &fixed, field_len(7));
        let first_outer = field_len(3 + field_len(first_inner));
        assert_eq!(
            OpenPath::<3>::total(&g),
            first_outer + field_len(3 + field_len(5 + field_len(7)))
        );
    }

    #[test]
    fn an_oversize_item_does_not_keep_its_memory() {
        let huge = |b: &mut Vec<u8>| b.extend(std::iter::repeat_n(7u8, 1 << 20));
        let mut p = Packer::<3>::new(1000);
        let mut emitted = 0;
        let mut emit = |_: &[u8], n: usize| emitted += n;
        p.begin(1, 1);
        p.begin(2, 2);
        assert!(
            p.item(2, true, huge, &mut emit).is_err(),
            "alone in an event"
        );
        assert!(p.body.capacity() <= 2000, "{}", p.body.capacity());
        p.item(2, false, |b| b.push(1), &mut emit).unwrap();
        assert!(
            p.item(2, true, huge, &mut emit).is_err(),
            "after another item"
        );
        assert!(p.body.capacity() <= 2000 && p.carry.capacity() <= 2000);
        p.flush(&mut emit);
        assert_eq!(emitted, 1, "the small item was written, alone");
    }
}
