//! A bounded byte FIFO: one direction of one connection's stream.

use alloc::vec;
use alloc::vec::Vec;

/// Up to `capacity` bytes in order. The storage is allocated at the first byte and freed by
/// [`clear`](Self::clear), so an idle connection costs no buffer.
#[derive(Clone, Debug)]
pub(crate) struct ByteRing {
    storage: Vec<u8>,
    capacity: usize,
    head: usize,
    len: usize,
}

impl ByteRing {
    pub(crate) const fn new(capacity: usize) -> Self {
        Self {
            storage: Vec::new(),
            capacity,
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// Empties the ring and frees its storage.
    pub(crate) fn clear(&mut self) {
        self.storage = Vec::new();
        self.head = 0;
        self.len = 0;
    }

    /// The free space for the next `n` bytes (at most [`free`](Self::free)), as up to two
    /// slices in stream order; [`commit`](Self::commit) then makes them part of the data.
    pub(crate) fn space_mut(&mut self, n: usize) -> (&mut [u8], &mut [u8]) {
        let n = n.min(self.free());
        if self.storage.is_empty() && n > 0 {
            self.storage = vec![0; self.capacity];
        }
        let tail = (self.head + self.len) % self.capacity.max(1);
        let first = n.min(self.capacity - tail);
        let (before, after) = self.storage.split_at_mut(tail);
        (&mut after[..first], &mut before[..n - first])
    }

    /// Appends the `n` bytes just written through [`space_mut`](Self::space_mut).
    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n.min(self.free());
    }

    /// Appends as much of `data` as fits; returns how much that was.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let (first, second) = self.space_mut(data.len());
        let (a, b) = (first.len(), second.len());
        first.copy_from_slice(&data[..a]);
        second.copy_from_slice(&data[a..a + b]);
        self.commit(a + b);
        a + b
    }

    /// The oldest `n` bytes (at most [`len`](Self::len)) as up to two slices in order.
    pub(crate) fn data(&self, n: usize) -> (&[u8], &[u8]) {
        let n = n.min(self.len);
        if n == 0 {
            return (&[], &[]);
        }
        let first = n.min(self.capacity - self.head);
        (
            &self.storage[self.head..self.head + first],
            &self.storage[..n - first],
        )
    }

    /// Drops the oldest `n` bytes (at most [`len`](Self::len)).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.capacity
        };
    }

    /// Moves the oldest bytes into `out`; returns how many.
    pub(crate) fn pop(&mut self, out: &mut [u8]) -> usize {
        let (first, second) = self.data(out.len());
        let (a, b) = (first.len(), second.len());
        out[..a].copy_from_slice(first);
        out[a..a + b].copy_from_slice(second);
        self.consume(a + b);
        a + b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_keeps_order() {
        let mut ring = ByteRing::new(5);
        assert_eq!(ring.push(b"abc"), 3);
        let mut out = [0; 2];
        assert_eq!(ring.pop(&mut out), 2);
        assert_eq!(&out, b"ab");
        assert_eq!(ring.push(b"defgh"), 4);
        assert_eq!(ring.free(), 0);
        let mut out = [0; 8];
        assert_eq!(ring.pop(&mut out), 5);
        assert_eq!(&out[..5], b"cdefg");
        assert!(ring.is_empty());
    }

    #[test]
    fn allocates_lazily_and_frees_on_clear() {
        let mut ring = ByteRing::new(1 << 20);
        assert_eq!(ring.storage.capacity(), 0);
        ring.push(b"x");
        assert_eq!(ring.storage.len(), 1 << 20);
        ring.clear();
        assert_eq!(ring.storage.capacity(), 0);
    }

    #[test]
    fn zero_capacity_takes_nothing() {
        let mut ring = ByteRing::new(0);
        assert_eq!(ring.push(b"abc"), 0);
        assert_eq!(ring.pop(&mut [0; 4]), 0);
    }
}
