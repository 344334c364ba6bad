//! Memory management pieces that need no hardware: address ranges and the EL2 tables.

pub mod pagetable;

/// A half-open range of addresses `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    /// `[start, end)`; an `end` below `start` gives an empty region.
    pub const fn new(start: u64, end: u64) -> Self {
        Region {
            start,
            end: if end < start { start } else { end },
        }
    }

    /// The number of bytes.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The smallest page-aligned region holding this one.
    pub const fn page_aligned(&self) -> Region {
        let mask = pagetable::PAGE_SIZE - 1;
        Region::new(self.start & !mask, self.end.saturating_add(mask) & !mask)
    }
}
