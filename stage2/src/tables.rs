//! A VM's stage-2 translation tables: map, unmap, translate, and the VTTBR_EL2 value.

use alloc::vec::Vec;

use crate::addr::{is_aligned, IntermediatePhysAddr, PhysAddr, PAGE_SIZE};
use crate::allocator::{table_aligned, TableAllocator, ENTRIES_PER_TABLE};
use crate::config::{level_shift, level_size, Stage2Config};
use crate::descriptor::{leaf_descriptor, table_descriptor, Descriptor, Stage2Attrs, OA_MASK};
use crate::error::MapError;
use crate::vmid::Vmid;

/// The last level of a 4 KiB-granule walk, where descriptors are pages.
const LEAF_LEVEL: u8 = 3;

/// One contiguous IPA range mapped to a PA range with one set of attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First IPA of the range.
    pub ipa: IntermediatePhysAddr,
    /// First PA it maps to.
    pub pa: PhysAddr,
    /// Size in bytes.
    pub size: u64,
    /// Stage-2 attributes of the whole range.
    pub attrs: Stage2Attrs,
}

/// TLB maintenance that [`Stage2Tables::unmap`] needs when it removes or splits live entries.
///
/// The hypervisor implements it with TLBI instructions; [`NotYetLive`] is for tables that
/// have never been in `VTTBR_EL2`, and for host tests.
pub trait TlbMaintenance {
    /// Makes sure no CPU uses a stage-2 translation of `vmid` cached for any IPA in
    /// `[ipa, ipa + size)` before the call, including cached table descriptors (walk caches),
    /// and the combined stage 1 and 2 entries built from them.
    ///
    /// Called after the descriptors changed. On hardware: `DSB ISHST`, then with `vmid` in
    /// `VTTBR_EL2` either `TLBI IPAS2E1IS` for every 4 KiB page of the range (not the
    /// last-level-only `IPAS2LE1IS`, since table descriptors may have gone) or one
    /// `TLBI VMALLS12E1IS`, then `DSB ISH`, `TLBI VMALLE1IS`, `DSB ISH`, `ISB`.
    fn invalidate_ipa_range(&mut self, vmid: Vmid, ipa: IntermediatePhysAddr, size: u64);
}

/// [`TlbMaintenance`] that does nothing: correct only for tables no CPU has used yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotYetLive;

impl TlbMaintenance for NotYetLive {
    fn invalidate_ipa_range(&mut self, _vmid: Vmid, _ipa: IntermediatePhysAddr, _size: u64) {}
}

/// The stage-2 translation tables of one VM, with 4 KiB pages and 2 MiB and 1 GiB blocks.
///
/// All tables come from, and are read and written through, the [`TableAllocator`] `A`.
/// Dropping a `Stage2Tables` leaks its tables (safe even while a CPU may still walk them);
/// [`release`](Self::release) frees them.
#[derive(Debug)]
pub struct Stage2Tables<A: TableAllocator> {
    alloc: A,
    config: Stage2Config,
    root: PhysAddr,
}

impl<A: TableAllocator> Stage2Tables<A> {
    /// Empty tables for `config`: allocates the (possibly concatenated) root table.
    pub fn new(mut alloc: A, config: Stage2Config) -> Result<Self, MapError> {
        let pages = config.root_pages();
        let root = alloc.allocate(pages).ok_or(MapError::OutOfTableMemory)?;
        if !table_aligned(root, pages) || root.0 & !OA_MASK != 0 {
            return Err(MapError::BadTableAddress(root));
        }
        Ok(Self {
            alloc,
            config,
            root,
        })
    }

    /// The configuration these tables were built for.
    pub fn config(&self) -> &Stage2Config {
        &self.config
    }

    /// The table allocator.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Physical address of the root table (the first of the concatenated ones).
    pub fn root_address(&self) -> PhysAddr {
        self.root
    }

    /// The VTTBR_EL2 value for this VM: BADDR (bits \[47:1\], the root address, which is
    /// aligned to the size of the concatenated root) and VMID (bits \[55:48\]); CnP (bit 0) is
    /// 0, as the tables are not shared between CPUs with the CnP guarantee.
    pub fn vttbr(&self) -> u64 {
        self.root.0 | u64::from(self.config.vmid().raw()) << 48
    }

    /// The VTCR_EL2 value for this VM; see [`Stage2Config::vtcr`].
    pub fn vtcr(&self) -> u64 {
        self.config.vtcr()
    }

    /// Maps `size` bytes from `ipa` to `pa` with `attrs`, using 1 GiB and 2 MiB blocks where
    /// the IPA, the PA and the size allow, 4 KiB pages elsewhere.
    ///
    /// The IPA range must be entirely unmapped. Only invalid descriptors are written, so this
    /// needs no break-before-make and no TLB maintenance even on live tables. All tables are
    /// allocated before any mapping is written: on error, nothing is mapped (tables allocated
    /// along the way stay, empty, for later use). Mapping 0 bytes does nothing.
    pub fn map(
        &mut self,
        ipa: IntermediatePhysAddr,
        pa: PhysAddr,
        size: u64,
        attrs: Stage2Attrs,
    ) -> Result<(), MapError> {
        if !is_aligned(ipa.0 | pa.0 | size, PAGE_SIZE) {
            return Err(MapError::Unaligned {
                ipa,
                pa: Some(pa),
                size,
            });
        }
        let end = self.check_ipa_range(ipa, size)?;
        let pa_bits = self.config.pa_range().bits();
        if pa.0.checked_add(size).is_none_or(|e| e > 1 << pa_bits) {
            return Err(MapError::PaOutOfRange { pa, size, pa_bits });
        }
        if size == 0 {
            return Ok(());
        }
        let level = self.config.start_level();
        if let Some(mapped) = self.first_mapped(level, self.root, ipa.0, end) {
            return Err(MapError::Overlap {
                ipa: IntermediatePhysAddr(mapped),
            });
        }
        let span = Span {
            ipa: ipa.0,
            pa: pa.0,
            attrs,
        };
        self.map_level(level, self.root, ipa.0, end, &span, false)?;
        self.map_level(level, self.root, ipa.0, end, &span, true)
    }

    /// Unmaps `[ipa, ipa + size)`, splitting blocks that straddle its ends. IPAs in the range
    /// that were not mapped are skipped; tables left empty are freed.
    ///
    /// Splitting a block replaces it with a table mapping the same addresses with the same
    /// attributes, by break-before-make: the block descriptor is invalidated, `tlb` is called
    /// for the block, then the table descriptor is written. A vCPU touching that block
    /// meanwhile takes a stage-2 fault; the fault handler should find the IPA mapped again
    /// ([`translate`](Self::translate)) and return to the guest. Splits allocate tables and
    /// happen before anything is removed, so on error nothing is unmapped.
    pub fn unmap(
        &mut self,
        ipa: IntermediatePhysAddr,
        size: u64,
        tlb: &mut impl TlbMaintenance,
    ) -> Result<(), MapError> {
        if !is_aligned(ipa.0 | size, PAGE_SIZE) {
            return Err(MapError::Unaligned {
                ipa,
                pa: None,
                size,
            });
        }
        let end = self.check_ipa_range(ipa, size)?;
        if size == 0 {
            return Ok(());
        }
        self.split_at(ipa.0, tlb)?;
        self.split_at(end, tlb)?;
        let mut freed = Vec::new();
        let level = self.config.start_level();
        let changed = self.clear(level, self.root, ipa.0, end, &mut freed);
        if changed {
            tlb.invalidate_ipa_range(self.config.vmid(), ipa, size);
        }
        for table in freed {
            self.alloc.free(table, 1);
        }
        Ok(())
    }

    /// The PA and attributes `ipa` translates to, or `None` if it is unmapped or outside the
    /// IPA space.
    pub fn translate(&self, ipa: IntermediatePhysAddr) -> Option<(PhysAddr, Stage2Attrs)> {
        if ipa.0 >= self.config.ipa_size() {
            return None;
        }
        let mut level = self.config.start_level();
        let mut table = self.root;
        loop {
            match self.read(level, table, self.index(level, ipa.0)) {
                Descriptor::Invalid => return None,
                Descriptor::Table(next) => {
                    table = next;
                    level += 1;
                }
                Descriptor::Leaf(oa, bits) => {
                    let attrs = Stage2Attrs::from_bits(bits)?;
                    let offset = ipa.0 & (level_size(level) - 1);
                    return Some((PhysAddr(oa.0 | offset), attrs));
                }
            }
        }
    }

    /// Every block and page descriptor, in IPA order, one [`Mapping`] each.
    pub fn leaves(&self) -> Vec<Mapping> {
        let mut out = Vec::new();
        self.collect(self.config.start_level(), self.root, 0, &mut out);
        out
    }

    /// Number of 4 KiB pages used by the tables, the root included.
    pub fn table_pages(&self) -> usize {
        let mut tables = Vec::new();
        self.subtables(self.config.start_level(), self.root, &mut tables);
        self.config.root_pages() + tables.len()
    }

    /// Frees every table and gives the allocator back.
    ///
    /// Call it only once no CPU can walk these tables any more: `VTTBR_EL2` holds another
    /// VM's value on every CPU and this VM's VMID has been invalidated from the TLBs.
    pub fn release(mut self) -> A {
        let mut tables = Vec::new();
        self.subtables(self.config.start_level(), self.root, &mut tables);
        for table in tables {
            self.alloc.free(table, 1);
        }
        self.alloc.free(self.root, self.config.root_pages());
        self.alloc
    }

    fn check_ipa_range(&self, ipa: IntermediatePhysAddr, size: u64) -> Result<u64, MapError> {
        match ipa.0.checked_add(size) {
            Some(end) if end <= self.config.ipa_size() => Ok(end),
            _ => Err(MapError::OutOfIpaRange {
                ipa,
                size,
                ipa_bits: self.config.ipa_bits(),
            }),
        }
    }

    /// Index of the descriptor for `ipa` in a table at `level`: the root spans all its
    /// concatenated tables, so its index has up to 4 more bits.
    fn index(&self, level: u8, ipa: u64) -> usize {
        self.entries(level, ipa, ipa).index_of(ipa)
    }

    /// The 4 KiB table and index within it of descriptor `index` of `table`.
    fn slot(table: PhysAddr, index: usize) -> (PhysAddr, usize) {
        let page = (index / ENTRIES_PER_TABLE) as u64;
        (
            PhysAddr(table.0 + page * PAGE_SIZE),
            index % ENTRIES_PER_TABLE,
        )
    }

    fn read_raw(&self, table: PhysAddr, index: usize) -> u64 {
        let (page, i) = Self::slot(table, index);
        self.alloc.read(page, i)
    }

    fn read(&self, level: u8, table: PhysAddr, index: usize) -> Descriptor {
        Descriptor::decode(self.read_raw(table, index), level)
    }

    fn write(&mut self, table: PhysAddr, index: usize, descriptor: u64) {
        let (page, i) = Self::slot(table, index);
        self.alloc.write(page, i, descriptor);
    }

    /// A new, zeroed, 4 KiB table.
    fn new_table(&mut self) -> Result<PhysAddr, MapError> {
        let table = self.alloc.allocate(1).ok_or(MapError::OutOfTableMemory)?;
        if !table_aligned(table, 1) || table.0 & !OA_MASK != 0 {
            return Err(MapError::BadTableAddress(table));
        }
        Ok(table)
    }

    /// The chunks of `[start, end)` covered by each descriptor of a table at `level`, with
    /// the descriptor's index.
    fn entries(&self, level: u8, start: u64, end: u64) -> Entries {
        let entries = if level == self.config.start_level() {
            self.config.root_entries()
        } else {
            ENTRIES_PER_TABLE
        };
        Entries {
            shift: level_shift(level),
            index_mask: entries - 1,
            addr: start,
            end,
        }
    }

    /// The first IPA in `[start, end)` that a valid leaf below `table` maps.
    fn first_mapped(&self, level: u8, table: PhysAddr, start: u64, end: u64) -> Option<u64> {
        for (index, chunk_start, chunk_end) in self.entries(level, start, end) {
            match self.read(level, table, index) {
                Descriptor::Invalid => {}
                Descriptor::Leaf(..) => return Some(chunk_start),
                Descriptor::Table(next) => {
                    let found = self.first_mapped(level + 1, next, chunk_start, chunk_end);
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
        None
    }

    /// Maps `[start, end)` of `span` below `table`. With `write_leaves` false it only
    /// creates the tables the mapping needs; with it true it writes the block and page
    /// descriptors, and allocates nothing if an earlier pass already created the tables.
    ///
    /// A descriptor becomes a block when it lies wholly inside the range, at level 1 or 2,
    /// with its PA aligned to the block size, and is currently invalid. An empty table left
    /// where a block could go is reused rather than replaced, since replacing a table
    /// descriptor needs break-before-make.
    fn map_level(
        &mut self,
        level: u8,
        table: PhysAddr,
        start: u64,
        end: u64,
        span: &Span,
        write_leaves: bool,
    ) -> Result<(), MapError> {
        let size = level_size(level);
        for (index, chunk_start, chunk_end) in self.entries(level, start, end) {
            let pa = span.pa + (chunk_start - span.ipa);
            let whole = is_aligned(chunk_start, size) && chunk_end - chunk_start == size;
            let next = match self.read(level, table, index) {
                Descriptor::Invalid if level >= 1 && whole && is_aligned(pa, size) => {
                    if write_leaves {
                        let leaf = leaf_descriptor(level, PhysAddr(pa), span.attrs);
                        self.write(table, index, leaf);
                    }
                    continue;
                }
                Descriptor::Invalid if level < LEAF_LEVEL => {
                    let next = self.new_table()?;
                    self.write(table, index, table_descriptor(next));
                    next
                }
                Descriptor::Table(next) => next,
                // Ruled out by the overlap check in `map`.
                Descriptor::Invalid | Descriptor::Leaf(..) => {
                    return Err(MapError::Overlap {
                        ipa: IntermediatePhysAddr(chunk_start),
                    })
                }
            };
            self.map_level(level + 1, next, chunk_start, chunk_end, span, write_leaves)?;
        }
        Ok(())
    }

    /// Makes `addr` a boundary between descriptors, splitting the block that contains it
    /// (down to pages if need be), so that a later `clear` only removes whole leaves.
    fn split_at(&mut self, addr: u64, tlb: &mut impl TlbMaintenance) -> Result<(), MapError> {
        if addr >= self.config.ipa_size() {
            return Ok(());
        }
        let mut level = self.config.start_level();
        let mut table = self.root;
        loop {
            let index = self.index(level, addr);
            let size = level_size(level);
            match self.read(level, table, index) {
                Descriptor::Invalid => return Ok(()),
                Descriptor::Leaf(..) if is_aligned(addr, size) => return Ok(()),
                Descriptor::Leaf(oa, bits) => {
                    let next = self.split_block(level, oa, bits)?;
                    let block = addr & !(size - 1);
                    // Break-before-make (Arm ARM, "Using break-before-make when updating
                    // translation table entries"): the block must be gone from every TLB
                    // before the table replacing it becomes visible.
                    self.write(table, index, 0);
                    tlb.invalidate_ipa_range(self.config.vmid(), IntermediatePhysAddr(block), size);
                    self.write(table, index, table_descriptor(next));
                    table = next;
                }
                Descriptor::Table(next) => table = next,
            }
            level += 1;
        }
    }

    /// A new table at `level + 1` mapping what the block at `level` (output `oa`,
    /// descriptor `bits`) maps, with the same attribute bits.
    fn split_block(&mut self, level: u8, oa: PhysAddr, bits: u64) -> Result<PhysAddr, MapError> {
        let next = self.new_table()?;
        let child_level = level + 1;
        let child_size = level_size(child_level);
        let kind = if child_level == LEAF_LEVEL {
            0b11
        } else {
            0b01
        };
        let attrs = bits & !(OA_MASK | 0b11);
        for i in 0..ENTRIES_PER_TABLE {
            let child_oa = oa.0 + i as u64 * child_size;
            self.write(next, i, child_oa | attrs | kind);
        }
        Ok(next)
    }

    /// Removes every leaf in `[start, end)` below `table` and frees (into `freed`, for after
    /// the TLB maintenance) every table left empty. Returns whether anything changed.
    /// `split_at` has made `start` and `end` descriptor boundaries, so leaves are removed
    /// whole.
    fn clear(
        &mut self,
        level: u8,
        table: PhysAddr,
        start: u64,
        end: u64,
        freed: &mut Vec<PhysAddr>,
    ) -> bool {
        let size = level_size(level);
        let mut changed = false;
        for (index, chunk_start, chunk_end) in self.entries(level, start, end) {
            match self.read(level, table, index) {
                Descriptor::Invalid => {}
                Descriptor::Leaf(..) => {
                    if chunk_end - chunk_start == size {
                        self.write(table, index, 0);
                        changed = true;
                    }
                }
                Descriptor::Table(next) => {
                    changed |= self.clear(level + 1, next, chunk_start, chunk_end, freed);
                    if self.is_empty(next) {
                        self.write(table, index, 0);
                        freed.push(next);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    fn is_empty(&self, table: PhysAddr) -> bool {
        (0..ENTRIES_PER_TABLE).all(|i| self.alloc.read(table, i) == 0)
    }

    fn collect(&self, level: u8, table: PhysAddr, base: u64, out: &mut Vec<Mapping>) {
        let size = level_size(level);
        let entries = if level == self.config.start_level() {
            self.config.root_entries()
        } else {
            ENTRIES_PER_TABLE
        };
        for index in 0..entries {
            let ipa = base + index as u64 * size;
            match self.read(level, table, index) {
                Descriptor::Invalid => {}
                Descriptor::Table(next) => self.collect(level + 1, next, ipa, out),
                Descriptor::Leaf(oa, bits) => {
                    if let Some(attrs) = Stage2Attrs::from_bits(bits) {
                        out.push(Mapping {
                            ipa: IntermediatePhysAddr(ipa),
                            pa: oa,
                            size,
                            attrs,
                        });
                    }
                }
            }
        }
    }

    /// Every table below `table`, children before their parents.
    fn subtables(&self, level: u8, table: PhysAddr, out: &mut Vec<PhysAddr>) {
        let entries = if level == self.config.start_level() {
            self.config.root_entries()
        } else {
            ENTRIES_PER_TABLE
        };
        for index in 0..entries {
            if let Descriptor::Table(next) = self.read(level, table, index) {
                self.subtables(level + 1, next, out);
                out.push(next);
            }
        }
    }
}

/// The mapping being written: `ipa` maps to `pa` with `attrs`.
struct Span {
    ipa: u64,
    pa: u64,
    attrs: Stage2Attrs,
}

/// Iterator over the descriptors of one table that cover part of an IPA range: yields
/// `(index, chunk_start, chunk_end)`.
struct Entries {
    shift: u32,
    index_mask: usize,
    addr: u64,
    end: u64,
}

impl Entries {
    fn index_of(&self, ipa: u64) -> usize {
        (ipa >> self.shift) as usize & self.index_mask
    }
}

impl Iterator for Entries {
    type Item = (usize, u64, u64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.addr >= self.end {
            return None;
        }
        let start = self.addr;
        let entry_end = ((start >> self.shift) + 1) << self.shift;
        self.addr = self.end.min(entry_end);
        Some((self.index_of(start), start, self.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{BLOCK_1G, BLOCK_2M};
    use crate::allocator::HeapTableAllocator;
    use crate::config::PaRange;
    use crate::descriptor::{Access, MemKind};

    const DEV: Stage2Attrs = Stage2Attrs::DEVICE_RW;
    const RAM: Stage2Attrs = Stage2Attrs::NORMAL_RWX;

    fn tables(ipa_bits: u8) -> Stage2Tables<HeapTableAllocator> {
        tables_with(ipa_bits, HeapTableAllocator::new())
    }

    fn tables_with(ipa_bits: u8, alloc: HeapTableAllocator) -> Stage2Tables<HeapTableAllocator> {
        let config = Stage2Config::new(ipa_bits, PaRange::Bits48, Vmid::new(5)).expect("config");
        Stage2Tables::new(alloc, config).expect("root table")
    }

    fn ipa(a: u64) -> IntermediatePhysAddr {
        IntermediatePhysAddr(a)
    }

    /// The leaf sizes, in IPA order.
    fn leaf_sizes(t: &Stage2Tables<HeapTableAllocator>) -> Vec<u64> {
        t.leaves().iter().map(|m| m.size).collect()
    }

    /// Records every TLB invalidation, in order.
    #[derive(Default)]
    struct Recorder(Vec<(Vmid, u64, u64)>);

    impl TlbMaintenance for Recorder {
        fn invalidate_ipa_range(&mut self, vmid: Vmid, ipa: IntermediatePhysAddr, size: u64) {
            self.0.push((vmid, ipa.0, size));
        }
    }

    #[test]
    fn aligned_gigabyte_is_one_block() {
        let mut t = tables(40);
        t.map(ipa(BLOCK_1G), PhysAddr(2 * BLOCK_1G), BLOCK_1G, RAM)
            .expect("map");
        assert_eq!(leaf_sizes(&t), vec![BLOCK_1G]);
        // Root (2 concatenated pages) only: a level 1 block needs no subtable.
        assert_eq!(t.table_pages(), 2);
        assert_eq!(
            t.translate(ipa(BLOCK_1G + 0x1234_5678)),
            Some((PhysAddr(2 * BLOCK_1G + 0x1234_5678), RAM))
        );
    }

    #[test]
    fn pa_alignment_limits_block_size() {
        let mut t = tables(40);
        // IPA 1 GiB aligned, PA only 2 MiB aligned: 512 level 2 blocks.
        t.map(ipa(BLOCK_1G), PhysAddr(BLOCK_1G + BLOCK_2M), BLOCK_1G, RAM)
            .expect("map");
        assert_eq!(leaf_sizes(&t), vec![BLOCK_2M; 512]);
        // PA only 4 KiB aligned: pages.
        let mut t = tables(40);
        t.map(ipa(0), PhysAddr(0x1000), BLOCK_2M, RAM).expect("map");
        assert_eq!(leaf_sizes(&t), vec![PAGE_SIZE; 512]);
    }

    #[test]
    fn unaligned_range_uses_pages_then_blocks_then_pages() {
        let mut t = tables(40);
        // [2 MiB - 8 KiB, 4 MiB + 4 KiB + 2 GiB): 2 pages, 511 2 MiB blocks, 1 GiB block,
        // ... computed by hand below.
        let start = BLOCK_2M - 0x2000;
        let size = 0x2000 + (BLOCK_1G - BLOCK_2M) + BLOCK_1G + BLOCK_2M + 0x1000;
        t.map(ipa(start), PhysAddr(start), size, RAM).expect("map");
        let mut expected = vec![PAGE_SIZE; 2];
        expected.extend(vec![BLOCK_2M; 511]);
        expected.push(BLOCK_1G);
        expected.push(BLOCK_2M);
        expected.push(PAGE_SIZE);
        assert_eq!(leaf_sizes(&t), expected);
        assert_eq!(t.translate(ipa(start - 1)), None);
        assert_eq!(t.translate(ipa(start + size)), None);
        assert_eq!(
            t.translate(ipa(start + size - 1)),
            Some((PhysAddr(start + size - 1), RAM))
        );
    }

    #[test]
    fn concatenated_root_reaches_top_of_40_bit_space() {
        let mut t = tables(40);
        let top = (1 << 40) - BLOCK_1G;
        t.map(ipa(top), PhysAddr(BLOCK_1G), BLOCK_1G, DEV)
            .expect("map");
        assert_eq!(t.translate(ipa(top)), Some((PhysAddr(BLOCK_1G), DEV)));
        // The descriptor lives in the second root page, index 511.
        let second = PhysAddr(t.root_address().0 + PAGE_SIZE);
        assert_eq!(
            t.allocator().read(second, 511),
            leaf_descriptor(1, PhysAddr(BLOCK_1G), DEV)
        );
        assert_eq!(
            t.map(ipa(1 << 40), PhysAddr(0), PAGE_SIZE, DEV),
            Err(MapError::OutOfIpaRange {
                ipa: ipa(1 << 40),
                size: PAGE_SIZE,
                ipa_bits: 40
            })
        );
    }

    #[test]
    fn level_0_start_for_48_bits() {
        let mut t = tables(48);
        let high = 0xffff_c000_0000;
        t.map(ipa(high), PhysAddr(0x4000_0000), BLOCK_1G, RAM)
            .expect("map");
        assert_eq!(
            t.translate(ipa(high + 5)),
            Some((PhysAddr(0x4000_0005), RAM))
        );
        // Root at level 0 plus one level 1 table holding the block.
        assert_eq!(t.table_pages(), 2);
    }

    #[test]
    fn vttbr_holds_root_and_vmid() {
        let t = tables(40);
        let root = t.root_address().0;
        assert_eq!(
            root % (2 * PAGE_SIZE),
            0,
            "concatenated root aligned to 8 KiB"
        );
        assert_eq!(t.vttbr(), root | 5 << 48);
        assert_eq!(t.vtcr(), 0x8002_3558 + (0b101 - 0b010) * (1 << 16));
        let t = tables(48);
        assert_eq!(t.vttbr(), t.root_address().0 | 5 << 48);
        assert_eq!(t.vtcr(), 0x8005_3590);
    }

    #[test]
    fn mapping_never_replaces() {
        let mut t = tables(40);
        t.map(ipa(0x20_0000), PhysAddr(0x20_0000), BLOCK_2M, RAM)
            .expect("map");
        let before = t.leaves();
        assert_eq!(
            t.map(ipa(0x1f_f000), PhysAddr(0), 0x3000, DEV),
            Err(MapError::Overlap {
                ipa: ipa(0x20_0000)
            })
        );
        assert_eq!(t.leaves(), before);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut t = tables(40);
        assert!(matches!(
            t.map(ipa(0x800), PhysAddr(0), PAGE_SIZE, RAM),
            Err(MapError::Unaligned { .. })
        ));
        assert!(matches!(
            t.map(ipa(0), PhysAddr(0x10), PAGE_SIZE, RAM),
            Err(MapError::Unaligned { .. })
        ));
        assert!(matches!(
            t.unmap(ipa(0), 0x10, &mut NotYetLive),
            Err(MapError::Unaligned { pa: None, .. })
        ));
        assert_eq!(
            t.map(ipa(0), PhysAddr((1 << 48) - PAGE_SIZE), 2 * PAGE_SIZE, RAM),
            Err(MapError::PaOutOfRange {
                pa: PhysAddr((1 << 48) - PAGE_SIZE),
                size: 2 * PAGE_SIZE,
                pa_bits: 48
            })
        );
        assert!(matches!(
            t.map(ipa(!0xfff), PhysAddr(0), 2 * PAGE_SIZE, RAM),
            Err(MapError::OutOfIpaRange { .. })
        ));
        assert_eq!(t.map(ipa(0), PhysAddr(0), 0, RAM), Ok(()));
        assert!(t.leaves().is_empty());
    }

    #[test]
    fn unmap_splits_blocks_at_both_ends() {
        let mut t = tables(40);
        let ro = Stage2Attrs {
            kind: MemKind::Normal,
            access: Access::ReadOnly,
            exec: false,
        };
        t.map(ipa(0), PhysAddr(0x80_0000_0000), BLOCK_1G, ro)
            .expect("map");
        let mut tlb = Recorder::default();
        // Punch [2 MiB + 4 KiB, 4 MiB + 8 KiB): splits the 1 GiB block into 2 MiB blocks,
        // then the first two of those into pages.
        t.unmap(ipa(BLOCK_2M + 0x1000), BLOCK_2M + 0x1000, &mut tlb)
            .expect("unmap");
        let mut expected = vec![BLOCK_2M];
        expected.push(PAGE_SIZE); // [2 MiB, 2 MiB + 4 KiB)
        expected.extend(vec![PAGE_SIZE; 510]); // [4 MiB + 8 KiB, 6 MiB)
        expected.extend(vec![BLOCK_2M; 509]);
        assert_eq!(leaf_sizes(&t), expected);
        for probe in [
            0,
            BLOCK_2M,
            BLOCK_2M + 0xfff,
            2 * BLOCK_2M + 0x2000,
            BLOCK_1G - 1,
        ] {
            assert_eq!(
                t.translate(ipa(probe)),
                Some((PhysAddr(0x80_0000_0000 + probe), ro)),
                "{probe:#x}"
            );
        }
        for probe in [BLOCK_2M + 0x1000, 2 * BLOCK_2M, 2 * BLOCK_2M + 0x1fff] {
            assert_eq!(t.translate(ipa(probe)), None, "{probe:#x}");
        }
        // Break-before-make for each split (1 GiB, then the two 2 MiB blocks), then the
        // unmapped range itself.
        let v = Vmid::new(5);
        assert_eq!(
            tlb.0,
            vec![
                (v, 0, BLOCK_1G),
                (v, BLOCK_2M, BLOCK_2M),
                (v, 2 * BLOCK_2M, BLOCK_2M),
                (v, BLOCK_2M + 0x1000, BLOCK_2M + 0x1000),
            ]
        );
    }

    #[test]
    fn unmap_frees_empty_tables() {
        let mut t = tables(40);
        t.map(ipa(0x1000), PhysAddr(0x1000), 0x3000, RAM)
            .expect("map");
        assert_eq!(t.table_pages(), 2 + 2);
        assert_eq!(t.allocator().pages_in_use(), 4);
        t.unmap(ipa(0), BLOCK_1G, &mut NotYetLive).expect("unmap");
        assert!(t.leaves().is_empty());
        assert_eq!(t.allocator().pages_in_use(), 2);
        // Unmapping nothing changes nothing and needs no TLB maintenance.
        let mut tlb = Recorder::default();
        t.unmap(ipa(0), BLOCK_1G, &mut tlb).expect("unmap");
        assert!(tlb.0.is_empty());
        let alloc = t.release();
        assert_eq!(alloc.pages_in_use(), 0);
        assert_eq!(alloc.bad_accesses(), 0);
    }

    #[test]
    fn out_of_table_memory_maps_nothing() {
        // Root (2 pages) + 1 more page: a page mapping needs a level 2 and a level 3 table.
        let mut t = tables_with(40, HeapTableAllocator::with_limit(3));
        assert_eq!(
            t.map(ipa(0), PhysAddr(0), PAGE_SIZE, RAM),
            Err(MapError::OutOfTableMemory)
        );
        assert!(t.leaves().is_empty());
        // A level 1 block needs no new table, and the empty level 2 table left over does not
        // get in the way of 2 MiB blocks elsewhere in its range.
        t.map(ipa(BLOCK_1G), PhysAddr(0), BLOCK_1G, RAM)
            .expect("map");
        t.map(ipa(BLOCK_2M), PhysAddr(0), BLOCK_2M, RAM)
            .expect("map");
        assert_eq!(leaf_sizes(&t), vec![BLOCK_2M, BLOCK_1G]);
    }

    #[test]
    fn out_of_table_memory_unmaps_nothing() {
        let mut t = tables_with(40, HeapTableAllocator::with_limit(3));
        t.map(ipa(0), PhysAddr(0), BLOCK_1G, RAM).expect("map");
        // Splitting down to a page needs two tables; only one is left.
        assert_eq!(
            t.unmap(ipa(0x1000), 0x1000, &mut NotYetLive),
            Err(MapError::OutOfTableMemory)
        );
        assert_eq!(t.translate(ipa(0x1000)), Some((PhysAddr(0x1000), RAM)));
        assert_eq!(
            t.translate(ipa(BLOCK_1G - 1)),
            Some((PhysAddr(BLOCK_1G - 1), RAM))
        );
    }

    #[test]
    fn root_allocation_failure_is_an_error() {
        let config = Stage2Config::new(42, PaRange::Bits48, Vmid::new(1)).expect("config");
        assert_eq!(
            Stage2Tables::new(HeapTableAllocator::with_limit(7), config).map(|_| ()),
            Err(MapError::OutOfTableMemory)
        );
    }

    #[test]
    fn translate_outside_ipa_space_is_none() {
        let t = tables(32);
        assert_eq!(t.translate(ipa(1 << 32)), None);
        assert_eq!(t.translate(ipa(u64::MAX)), None);
    }
}
