//! The hypervisor's own stage-1 translation tables (EL2 regime, 4 KiB granule, 48-bit VA).
//!
//! EL2 maps memory with VA == PA. The builder is pure: it writes descriptors into a pool
//! of tables it is given, so it is tested on the host and used at EL2 before the MMU, the
//! heap or any lock exists. aarch64-paging allocates its tables from the global allocator,
//! which is not available that early, so the boot path uses this small builder instead;
//! stage-2 tables (built later, with a heap) use aarch64-paging.
//!
//! Descriptor formats: Arm ARM D8.3 (VMSAv8-64 translation table format descriptors).

use core::fmt;

/// Size of a page and of a table.
pub const PAGE_SIZE: u64 = 4096;
const ENTRIES: usize = 512;
/// One translation table: 512 descriptors, 4 KiB.
pub type Table = [u64; ENTRIES];

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_INDEX_SHIFT: u64 = 2;
/// AP[1]: RES1 in a regime with one privilege level (Arm ARM D8.4.1.2.1).
const AP1: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_RO: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
/// XN for the EL2 regime (bit 54).
const XN: u64 = 1 << 54;
const OUTPUT_MASK: u64 = 0x0000_ffff_ffff_f000;

/// MAIR_EL2 index 0: Device-nGnRE. Index 1: Normal, inner/outer write-back
/// read/write-allocate.
pub const MAIR_VALUE: u64 = 0x04 | (0xff << 8);
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;

/// The highest mappable address + 1 (48-bit VA).
pub const VA_LIMIT: u64 = 1 << 48;

/// What a mapping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attrs {
    /// Hypervisor code: read-only, executable.
    Text,
    /// Constants: read-only, never executable.
    ReadOnly,
    /// Data, stacks, heap and RAM: read-write, never executable.
    ReadWrite,
    /// Device registers: Device-nGnRE, read-write, never executable.
    Device,
}

impl Attrs {
    fn bits(self) -> u64 {
        match self {
            Attrs::Text => (ATTR_NORMAL << ATTR_INDEX_SHIFT) | AP1 | AP_RO | SH_INNER | AF,
            Attrs::ReadOnly => (ATTR_NORMAL << ATTR_INDEX_SHIFT) | AP1 | AP_RO | SH_INNER | AF | XN,
            Attrs::ReadWrite => (ATTR_NORMAL << ATTR_INDEX_SHIFT) | AP1 | SH_INNER | AF | XN,
            Attrs::Device => (ATTR_DEVICE << ATTR_INDEX_SHIFT) | AP1 | AF | XN,
        }
    }

    fn from_bits(desc: u64) -> Option<Attrs> {
        let attrs = desc & !(OUTPUT_MASK | VALID | TABLE_OR_PAGE);
        [
            Attrs::Text,
            Attrs::ReadOnly,
            Attrs::ReadWrite,
            Attrs::Device,
        ]
        .into_iter()
        .find(|a| a.bits() == attrs)
    }
}

/// Why a mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The start or size is not a multiple of 4 KiB.
    Unaligned { start: u64, size: u64 },
    /// The range wraps around or goes past the 48-bit address space.
    OutOfRange { start: u64, size: u64 },
    /// Part of the range is mapped already; mappings never silently replace each other.
    AlreadyMapped { addr: u64 },
    /// The pool has no free table left; the pool in the linker script must grow.
    OutOfTables,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Unaligned { start, size } => {
                write!(f, "range {start:#x}+{size:#x} is not 4 KiB aligned")
            }
            MapError::OutOfRange { start, size } => {
                write!(
                    f,
                    "range {start:#x}+{size:#x} is beyond the 48-bit address space"
                )
            }
            MapError::AlreadyMapped { addr } => write!(f, "{addr:#x} is mapped already"),
            MapError::OutOfTables => write!(f, "out of page tables (grow the EL2 table pool)"),
        }
    }
}

/// Builds identity mappings into a pool of tables whose first table is the root (level 0).
pub struct IdMap<'a> {
    tables: &'a mut [Table],
    /// Physical (== virtual) address of `tables[0]`.
    pool_base: u64,
    used: usize,
}

impl<'a> IdMap<'a> {
    /// Takes the pool, whose first table lives at `pool_base`, and clears the root table.
    pub fn new(tables: &'a mut [Table], pool_base: u64) -> Result<Self, MapError> {
        let root = tables.first_mut().ok_or(MapError::OutOfTables)?;
        root.fill(0);
        Ok(IdMap {
            tables,
            pool_base,
            used: 1,
        })
    }

    /// Address of the root table, for TTBR0_EL2.
    pub fn root_address(&self) -> u64 {
        self.pool_base
    }

    /// How many tables of the pool are in use.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// Maps `[start, start + size)` to itself, using 1 GiB and 2 MiB blocks where the
    /// range allows and 4 KiB pages elsewhere.
    pub fn map(&mut self, start: u64, size: u64, attrs: Attrs) -> Result<(), MapError> {
        if !start.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Unaligned { start, size });
        }
        let end = start
            .checked_add(size)
            .filter(|&e| e <= VA_LIMIT)
            .ok_or(MapError::OutOfRange { start, size })?;
        // Check first, so a refused mapping leaves the tables as they were.
        let mut addr = start;
        while addr < end {
            if self.translate(addr).is_some() {
                return Err(MapError::AlreadyMapped { addr });
            }
            addr = self.next_boundary(addr, end);
        }
        let mut addr = start;
        while addr < end {
            let level = Self::block_level(addr, end);
            self.set(addr, level, attrs)?;
            addr += level_size(level);
        }
        Ok(())
    }

    /// The largest level whose block fits at `addr` inside `[addr, end)`.
    fn block_level(addr: u64, end: u64) -> usize {
        for level in 1..3 {
            let size = level_size(level);
            if addr.is_multiple_of(size) && end - addr >= size {
                return level;
            }
        }
        3
    }

    /// Where the mapping state can next change after `addr`: the end of the entry that
    /// covers it, or of the invalid region at the lowest level walked.
    fn next_boundary(&self, addr: u64, end: u64) -> u64 {
        let mut table = 0;
        for level in 0..4 {
            let desc = self.tables[table][index(addr, level)];
            let is_table = level < 3 && desc & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE;
            if !is_table {
                let size = level_size(level);
                return ((addr / size) + 1).saturating_mul(size).min(end);
            }
            match self.table_index(desc) {
                Some(t) => table = t,
                None => return end,
            }
        }
        end
    }

    fn set(&mut self, addr: u64, level: usize, attrs: Attrs) -> Result<(), MapError> {
        let mut table = 0;
        for l in 0..level {
            let slot = index(addr, l);
            let desc = self.tables[table][slot];
            if desc & VALID == 0 {
                let next = self.take_table()?;
                self.tables[table][slot] = self.table_address(next) | VALID | TABLE_OR_PAGE;
                table = next;
            } else {
                table = self
                    .table_index(desc)
                    .ok_or(MapError::AlreadyMapped { addr })?;
            }
        }
        let kind = if level == 3 {
            VALID | TABLE_OR_PAGE
        } else {
            VALID
        };
        self.tables[table][index(addr, level)] = (addr & OUTPUT_MASK) | attrs.bits() | kind;
        Ok(())
    }

    fn take_table(&mut self) -> Result<usize, MapError> {
        let next = self.used;
        let table = self.tables.get_mut(next).ok_or(MapError::OutOfTables)?;
        table.fill(0);
        self.used += 1;
        Ok(next)
    }

    fn table_address(&self, index: usize) -> u64 {
        self.pool_base + index as u64 * PAGE_SIZE
    }

    fn table_index(&self, desc: u64) -> Option<usize> {
        let addr = desc & OUTPUT_MASK;
        let offset = addr.checked_sub(self.pool_base)?;
        let index = usize::try_from(offset / PAGE_SIZE).ok()?;
        (index < self.used).then_some(index)
    }

    /// Walks the tables as the MMU would: the output address and attributes of `addr`.
    pub fn translate(&self, addr: u64) -> Option<(u64, Attrs)> {
        if addr >= VA_LIMIT {
            return None;
        }
        let mut table = 0;
        for level in 0..4 {
            let desc = self.tables[table][index(addr, level)];
            if desc & VALID == 0 {
                return None;
            }
            let is_table = level < 3 && desc & TABLE_OR_PAGE != 0;
            if is_table {
                table = self.table_index(desc)?;
                continue;
            }
            if level == 0 || (level == 3 && desc & TABLE_OR_PAGE == 0) {
                return None;
            }
            let size = level_size(level);
            let out = (desc & OUTPUT_MASK & !(size - 1)) | (addr & (size - 1));
            return Attrs::from_bits(desc).map(|a| (out, a));
        }
        None
    }
}

/// Bytes covered by one entry at `level` (0..=3).
const fn level_size(level: usize) -> u64 {
    1 << (12 + 9 * (3 - level))
}

fn index(addr: u64, level: usize) -> usize {
    ((addr >> (12 + 9 * (3 - level))) & 0x1ff) as usize
}

/// Splits `range` into the parts not covered by any of `holes`, in ascending order.
/// Used to map RAM around what is mapped already (the image, the DTB).
pub fn subtract(range: (u64, u64), holes: &[(u64, u64)], out: &mut impl FnMut(u64, u64)) {
    let (mut start, end) = range;
    while start < end {
        // The hole that starts first among those that reach past `start`.
        let next = holes
            .iter()
            .filter(|&&(hs, he)| he > start && hs < end)
            .min_by_key(|&&(hs, _)| hs);
        match next {
            None => {
                out(start, end);
                return;
            }
            Some(&(hs, he)) => {
                if hs > start {
                    out(start, hs);
                }
                start = he;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const BASE: u64 = 0x4010_0000;

    fn pool(n: usize) -> Vec<Table> {
        vec![[0u64; ENTRIES]; n]
    }

    #[test]
    fn uses_the_largest_blocks() {
        let mut tables = pool(8);
        let mut map = IdMap::new(&mut tables, BASE).unwrap();
        // 1 GiB block, 2 MiB block, 4 KiB page.
        map.map(0x4000_0000, 0x4000_0000, Attrs::ReadWrite).unwrap();
        map.map(0x8000_0000 + 0x20_0000, 0x20_0000, Attrs::ReadWrite)
            .unwrap();
        map.map(0x9000_0000, PAGE_SIZE, Attrs::Device).unwrap();
        // root, L1, L2 (for the 2 MiB block and for the page's L2 share one), L3.
        assert_eq!(map.tables_used(), 4);
        assert_eq!(
            map.translate(0x4000_1234),
            Some((0x4000_1234, Attrs::ReadWrite))
        );
        assert_eq!(
            map.translate(0x8020_0008),
            Some((0x8020_0008, Attrs::ReadWrite))
        );
        assert_eq!(
            map.translate(0x9000_0ffc),
            Some((0x9000_0ffc, Attrs::Device))
        );
        assert_eq!(map.translate(0x9000_1000), None);
        assert_eq!(map.translate(0x8000_0000), None);
    }

    #[test]
    fn refuses_overlap_and_leaves_tables_unchanged() {
        let mut tables = pool(8);
        let mut map = IdMap::new(&mut tables, BASE).unwrap();
        map.map(0x4020_0000, 0x3000, Attrs::Text).unwrap();
        let used = map.tables_used();
        assert_eq!(
            map.map(0x4000_0000, 0x40_0000, Attrs::ReadWrite),
            Err(MapError::AlreadyMapped { addr: 0x4020_0000 })
        );
        assert_eq!(map.tables_used(), used);
        assert_eq!(map.translate(0x4000_0000), None);
    }

    #[test]
    fn rejects_bad_ranges() {
        let mut tables = pool(2);
        let mut map = IdMap::new(&mut tables, BASE).unwrap();
        assert!(matches!(
            map.map(0x1001, 0x1000, Attrs::Text),
            Err(MapError::Unaligned { .. })
        ));
        assert!(matches!(
            map.map(VA_LIMIT - 0x1000, 0x2000, Attrs::Text),
            Err(MapError::OutOfRange { .. })
        ));
        assert!(matches!(
            map.map(u64::MAX - 0xfff, 0x1000, Attrs::Text),
            Err(MapError::OutOfRange { .. })
        ));
        assert_eq!(
            map.map(0x1000, 0x1000, Attrs::Text),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn subtract_splits_around_holes() {
        let mut parts = Vec::new();
        subtract(
            (0, 100),
            &[(10, 20), (15, 30), (90, 200), (50, 60)],
            &mut |s, e| parts.push((s, e)),
        );
        assert_eq!(parts, vec![(0, 10), (30, 50), (60, 90)]);
    }

    proptest! {
        /// For random sets of disjoint page ranges, every page translates to itself with
        /// the attributes it was mapped with, and nothing else is mapped.
        #[test]
        fn maps_exactly_what_was_asked(ranges in proptest::collection::vec((0u64..4096, 1u64..600, 0usize..4), 1..8)) {
            let attrs = [Attrs::Text, Attrs::ReadOnly, Attrs::ReadWrite, Attrs::Device];
            let mut tables = pool(64);
            let mut map = IdMap::new(&mut tables, BASE).unwrap();
            let mut mapped: Vec<(u64, u64, Attrs)> = Vec::new();
            for (start_page, pages, a) in ranges {
                // Spread the ranges over several GiB so blocks of every level appear.
                let start = start_page * PAGE_SIZE * 523;
                let size = pages * PAGE_SIZE * 97;
                let overlaps = mapped.iter().any(|&(s, e, _)| start < e && s < start + size);
                let result = map.map(start, size, attrs[a]);
                if overlaps {
                    let refused = matches!(result, Err(MapError::AlreadyMapped { .. }));
                    prop_assert!(refused);
                } else {
                    prop_assert_eq!(result, Ok(()));
                    mapped.push((start, start + size, attrs[a]));
                }
            }
            for &(s, e, a) in &mapped {
                for probe in [s, s + 8, ((s + e) / 2) & !7, e - 8] {
                    prop_assert_eq!(map.translate(probe), Some((probe, a)));
                }
                if !mapped.iter().any(|&(s2, e2, _)| s2 <= e && e < e2) {
                    prop_assert_eq!(map.translate(e), None);
                }
                if s >= PAGE_SIZE && !mapped.iter().any(|&(s2, e2, _)| s2 < s && s - 1 < e2) {
                    prop_assert_eq!(map.translate(s - 1), None);
                }
            }
        }
    }
}
