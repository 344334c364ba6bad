//! Where translation tables live: the allocator trait the hypervisor implements, and a heap
//! model of physical memory for host tests.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::cell::Cell;

use crate::addr::{is_aligned, PhysAddr, PAGE_SIZE};

/// Number of 64-bit descriptors in one 4 KiB table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Allocates 4 KiB translation tables and gives access to their descriptors by physical
/// address.
///
/// The hypervisor implements this over its page allocator and its own mapping of physical
/// memory; [`HeapTableAllocator`] implements it on the host. All table accesses of
/// [`Stage2Tables`](crate::Stage2Tables) go through [`read`](Self::read) and
/// [`write`](Self::write), so the same walk runs in both places.
pub trait TableAllocator {
    /// Allocates `pages` physically contiguous, zeroed 4 KiB pages, aligned to
    /// `pages * 4 KiB`, and returns the physical address of the first. `pages` is a power of
    /// two from 1 to 16 (more than one only for a concatenated root table). `None` when out
    /// of memory.
    fn allocate(&mut self, pages: usize) -> Option<PhysAddr>;

    /// Returns `pages` pages starting at `table`, as given by one earlier
    /// [`allocate`](Self::allocate). The caller has already made sure no translation table
    /// walk can still reach them.
    fn free(&mut self, table: PhysAddr, pages: usize);

    /// Reads descriptor `index` (0..512) of the 4 KiB table at `table`.
    fn read(&self, table: PhysAddr, index: usize) -> u64;

    /// Writes descriptor `index` (0..512) of the 4 KiB table at `table`.
    ///
    /// On hardware this must be a single-copy-atomic 64-bit store, observed by the table
    /// walker after every earlier write (for example `dmb ishst` then `str`): a table is
    /// filled before the descriptor pointing to it is written, and the walker must never see
    /// the pointer first.
    fn write(&mut self, table: PhysAddr, index: usize, descriptor: u64);
}

/// A [`TableAllocator`] on the heap, for host tests: tables are boxed arrays keyed by made-up,
/// correctly aligned physical addresses, handed out upwards from a base and never reused.
#[derive(Debug)]
pub struct HeapTableAllocator {
    tables: BTreeMap<u64, Box<[u64; ENTRIES_PER_TABLE]>>,
    next: u64,
    limit: usize,
    bad_accesses: Cell<usize>,
}

impl HeapTableAllocator {
    /// Where the made-up physical addresses start.
    pub const BASE: PhysAddr = PhysAddr(0x10_0000_0000);

    /// An allocator with no limit on the number of tables.
    pub fn new() -> Self {
        Self::with_limit(usize::MAX)
    }

    /// An allocator that fails once `pages` pages are in use.
    pub fn with_limit(pages: usize) -> Self {
        Self {
            tables: BTreeMap::new(),
            next: Self::BASE.0,
            limit: pages,
            bad_accesses: Cell::new(0),
        }
    }

    /// Number of 4 KiB pages currently allocated.
    pub fn pages_in_use(&self) -> usize {
        self.tables.len()
    }

    /// Number of reads, writes or frees that named a page not allocated (always 0 unless the
    /// tables code has a bug).
    pub fn bad_accesses(&self) -> usize {
        self.bad_accesses.get()
    }

    fn bad_access(&self) {
        self.bad_accesses
            .set(self.bad_accesses.get().saturating_add(1));
    }

    /// Whether the page at `table` is currently allocated.
    pub fn is_allocated(&self, table: PhysAddr) -> bool {
        self.tables.contains_key(&table.0)
    }
}

impl Default for HeapTableAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl TableAllocator for HeapTableAllocator {
    fn allocate(&mut self, pages: usize) -> Option<PhysAddr> {
        if !pages.is_power_of_two() || pages > 16 {
            return None;
        }
        if self.tables.len().checked_add(pages)? > self.limit {
            return None;
        }
        let bytes = PAGE_SIZE.checked_mul(pages as u64)?;
        let start = self.next.checked_add(bytes - 1)? & !(bytes - 1);
        self.next = start.checked_add(bytes)?;
        for page in 0..pages as u64 {
            self.tables
                .insert(start + page * PAGE_SIZE, Box::new([0; ENTRIES_PER_TABLE]));
        }
        Some(PhysAddr(start))
    }

    fn free(&mut self, table: PhysAddr, pages: usize) {
        for page in 0..pages as u64 {
            let pa = table.0.wrapping_add(page.wrapping_mul(PAGE_SIZE));
            if self.tables.remove(&pa).is_none() {
                self.bad_access();
            }
        }
    }

    fn read(&self, table: PhysAddr, index: usize) -> u64 {
        match self.tables.get(&table.0).and_then(|t| t.get(index)) {
            Some(&d) => d,
            None => {
                self.bad_access();
                0
            }
        }
    }

    fn write(&mut self, table: PhysAddr, index: usize, descriptor: u64) {
        let slot = self.tables.get_mut(&table.0).and_then(|t| t.get_mut(index));
        match slot {
            Some(slot) => *slot = descriptor,
            None => self.bad_access(),
        }
    }
}

/// Whether `pa` is a plausible table address for `pages` pages.
pub(crate) fn table_aligned(pa: PhysAddr, pages: usize) -> bool {
    is_aligned(pa.0, PAGE_SIZE * pages as u64)
}
