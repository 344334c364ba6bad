//! Fuzzes the stage-2 mapper: a `Stage2Tables` shaped by the first bytes (IPA size, PA range,
//! VMID, sometimes a table allocator that runs out) takes up to 64 maps and unmaps of ranges
//! with any attributes, and a `VmidAllocator` random allocations and frees. After every step
//! the tables agree with a reference model of what is mapped: every result is the one the
//! model predicts, probed IPAs translate exactly as the model says (nothing outside a mapped
//! range translates), the leaves spell out the model, no table leaks or is touched after it
//! is freed, and unmapping a mapped range asks for its TLB invalidation.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::cell::Cell;

use stage2::{
    Access, IntermediatePhysAddr, MapError, Mapping, MemKind, PaRange, PhysAddr, Stage2Attrs,
    Stage2Config, Stage2Tables, TableAllocator, TlbMaintenance, Vmid, VmidAllocator, VmidError,
    BLOCK_1G, BLOCK_2M, ENTRIES_PER_TABLE, PAGE_SIZE,
};

/// Operations decoded from one input at most.
const MAX_OPS: usize = 64;
/// Maps that would write more descriptors than this are skipped: they only cost time.
const MAX_DESCRIPTORS: u64 = 1 << 14;
/// Most addresses fall in the first or the last `WINDOW` bytes of the IPA space, so that
/// ranges meet and overlap.
const WINDOW: u64 = 8 * BLOCK_1G;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if u.arbitrary().unwrap_or(false) {
        let _ = vmids(&mut u);
    } else {
        let _ = tables(&mut u);
    }
});

/// A [`TableAllocator`] over a vector of pages, faster than the crate's
/// `HeapTableAllocator` (a map lookup per descriptor) so that more inputs run per second.
/// It counts every access to a page that is not allocated, and fails past `limit` pages.
struct Pages {
    pages: Vec<Option<Box<[u64; ENTRIES_PER_TABLE]>>>,
    in_use: usize,
    limit: usize,
    bad: Cell<usize>,
}

impl Pages {
    /// Where the made-up physical addresses start.
    const BASE: u64 = 0x80_0000_0000;

    fn new(limit: usize) -> Self {
        Self {
            pages: Vec::new(),
            in_use: 0,
            limit,
            bad: Cell::new(0),
        }
    }

    fn slot(&self, table: PhysAddr) -> Option<usize> {
        let offset = table.0.checked_sub(Self::BASE)?;
        (offset % PAGE_SIZE == 0).then_some((offset / PAGE_SIZE) as usize)
    }

    fn page(&self, table: PhysAddr) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        let page = self.slot(table).and_then(|i| self.pages.get(i)?.as_deref());
        if page.is_none() {
            self.bad.set(self.bad.get() + 1);
        }
        page
    }
}

impl TableAllocator for Pages {
    fn allocate(&mut self, pages: usize) -> Option<PhysAddr> {
        assert!(
            pages.is_power_of_two() && pages <= 16,
            "asked for {pages} pages"
        );
        if self.in_use + pages > self.limit {
            return None;
        }
        let first = self.pages.len().next_multiple_of(pages);
        self.pages.resize_with(first, || None);
        for _ in 0..pages {
            self.pages.push(Some(Box::new([0; ENTRIES_PER_TABLE])));
        }
        self.in_use += pages;
        Some(PhysAddr(Self::BASE + first as u64 * PAGE_SIZE))
    }

    fn free(&mut self, table: PhysAddr, pages: usize) {
        for n in 0..pages {
            let page = PhysAddr(table.0 + n as u64 * PAGE_SIZE);
            match self.slot(page).and_then(|i| self.pages.get_mut(i)) {
                Some(p @ Some(_)) => {
                    *p = None;
                    self.in_use -= 1;
                }
                _ => self.bad.set(self.bad.get() + 1),
            }
        }
    }

    fn read(&self, table: PhysAddr, index: usize) -> u64 {
        assert!(index < ENTRIES_PER_TABLE, "descriptor index {index}");
        self.page(table).map_or(0, |p| p[index])
    }

    fn write(&mut self, table: PhysAddr, index: usize, descriptor: u64) {
        assert!(index < ENTRIES_PER_TABLE, "descriptor index {index}");
        match self
            .slot(table)
            .and_then(|i| self.pages.get_mut(i)?.as_deref_mut())
        {
            Some(p) => p[index] = descriptor,
            None => self.bad.set(self.bad.get() + 1),
        }
    }
}

/// What the model says is mapped: first IPA -> (end, first PA, attributes), disjoint ranges.
type Model = BTreeMap<u64, (u64, u64, Stage2Attrs)>;

/// The TLB maintenance asked for, recorded.
#[derive(Default)]
struct Recorder(Vec<(Vmid, u64, u64)>);

impl TlbMaintenance for Recorder {
    fn invalidate_ipa_range(&mut self, vmid: Vmid, ipa: IntermediatePhysAddr, size: u64) {
        self.0.push((vmid, ipa.0, size));
    }
}

fn attrs(u: &mut Unstructured) -> Result<Stage2Attrs> {
    let kind = if u.arbitrary()? {
        MemKind::Device
    } else {
        MemKind::Normal
    };
    let access = match u.int_in_range(0..=2u8)? {
        0 => Access::ReadWrite,
        1 => Access::ReadOnly,
        _ => Access::None,
    };
    Ok(Stage2Attrs {
        kind,
        access,
        exec: u.arbitrary()?,
    })
}

/// An IPA: near the bottom or the top of the space, on a page, 2 MiB or 1 GiB boundary, now
/// and then unaligned or any value.
fn address(u: &mut Unstructured, space: u64) -> Result<u64> {
    let unit = [PAGE_SIZE, BLOCK_2M, BLOCK_1G][usize::from(u.int_in_range(0..=2u8)?)];
    let offset = u.int_in_range(0..=WINDOW / unit - 1)? * unit;
    Ok(match u.int_in_range(0..=15u8)? {
        0 => u.arbitrary()?,
        1 => offset | u64::from(u.int_in_range(1..=0xfffu16)?),
        2..=4 => space.saturating_sub(WINDOW) + offset,
        _ => offset,
    })
}

/// A length of whole GiB, 2 MiB and pages, so that every block size occurs; now and then 0,
/// unaligned or any value.
fn length(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => u.arbitrary()?,
        1 => u64::from(u.arbitrary::<u16>()?),
        2 => 0,
        3 => BLOCK_1G,
        _ => {
            let g = u.int_in_range(0..=2u64)?;
            let m = u.int_in_range(0..=3u64)?;
            let p = u.int_in_range(0..=15u64)?;
            (g * BLOCK_1G + m * BLOCK_2M + p * PAGE_SIZE).max(PAGE_SIZE)
        }
    })
}

/// A PA for `ipa`: the same offset within 1 GiB (blocks possible), shifted by 2 MiB steps
/// (2 MiB blocks only) or by pages (pages only, for short ranges, else the run is slow), in a
/// random GiB of the PA space; now and then any value.
fn pa_for(u: &mut Unstructured, ipa: u64, size: u64, pa_bits: u8) -> Result<u64> {
    let gib = u.int_in_range(0..=(1u64 << (pa_bits - 30)) - 1)?;
    let shift = match u.int_in_range(0..=7u8)? {
        0 => return u.arbitrary(),
        1..=3 => 0,
        4 | 5 => u.int_in_range(1..=511u64)? * BLOCK_2M,
        _ if size <= 2 * BLOCK_2M => u.int_in_range(1..=0x3_ffffu64)? * PAGE_SIZE,
        _ => 0,
    };
    Ok(gib * BLOCK_1G + (ipa.wrapping_add(shift) % BLOCK_1G))
}

/// About how many block and page descriptors mapping `size` bytes from `ipa` to `pa` writes:
/// blocks only where the IPA and PA agree modulo the block size.
fn descriptors(ipa: u64, pa: u64, size: u64) -> u64 {
    let delta = ipa.wrapping_sub(pa);
    let leaf = if delta.is_multiple_of(BLOCK_1G) {
        BLOCK_1G
    } else if delta.is_multiple_of(BLOCK_2M) {
        BLOCK_2M
    } else {
        PAGE_SIZE
    };
    size / leaf + 2 * 512
}

/// The first mapped IPA of `[start, end)`, per the model.
fn first_mapped(model: &Model, start: u64, end: u64) -> Option<u64> {
    if let Some((_, &(e, _, _))) = model.range(..=start).next_back() {
        if e > start {
            return Some(start);
        }
    }
    model.range(start..end).next().map(|(&s, _)| s)
}

/// Removes `[start, end)` from the model, cutting the ranges that straddle its ends.
fn model_unmap(model: &mut Model, start: u64, end: u64) {
    let touched: Vec<u64> = model
        .range(..end)
        .filter(|(_, &(e, _, _))| e > start)
        .map(|(&s, _)| s)
        .collect();
    for s in touched {
        let Some((e, pa, attrs)) = model.remove(&s) else {
            continue;
        };
        if s < start {
            model.insert(s, (start, pa, attrs));
        }
        if e > end {
            model.insert(end, (e, pa + (end - s), attrs));
        }
    }
}

fn model_translate(model: &Model, ipa: u64) -> Option<(PhysAddr, Stage2Attrs)> {
    let (&s, &(e, pa, attrs)) = model.range(..=ipa).next_back()?;
    (ipa < e).then(|| (PhysAddr(pa + (ipa - s)), attrs))
}

/// Merges mappings that continue each other (IPA, PA and attributes alike).
fn canonical(mappings: impl IntoIterator<Item = Mapping>) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for m in mappings {
        if let Some(last) = out.last_mut() {
            if last.ipa.0 + last.size == m.ipa.0
                && last.pa.0 + last.size == m.pa.0
                && last.attrs == m.attrs
            {
                last.size += m.size;
                continue;
            }
        }
        out.push(m);
    }
    out
}

fn model_mappings(model: &Model) -> Vec<Mapping> {
    canonical(model.iter().map(|(&s, &(e, pa, attrs))| Mapping {
        ipa: IntermediatePhysAddr(s),
        pa: PhysAddr(pa),
        size: e - s,
        attrs,
    }))
}

fn pa_range(u: &mut Unstructured) -> Result<PaRange> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => PaRange::Bits32,
        1 => PaRange::Bits36,
        2 => PaRange::Bits40,
        3 => PaRange::Bits42,
        4 => PaRange::Bits44,
        _ => PaRange::Bits48,
    })
}

fn tables(u: &mut Unstructured) -> Result<()> {
    let ipa_bits = u.int_in_range(30..=50u8)?;
    let pa_range = pa_range(u)?;
    let vmid = Vmid::new(u.arbitrary()?);
    let config = match Stage2Config::new(ipa_bits, pa_range, vmid) {
        Ok(config) => config,
        Err(e) => {
            assert!(
                !(32..=48).contains(&ipa_bits) || ipa_bits > pa_range.bits(),
                "{ipa_bits}-bit IPA on {pa_range:?} refused: {e}"
            );
            return Ok(());
        }
    };
    assert!((32..=pa_range.bits()).contains(&ipa_bits));
    let root_pages = config.root_pages();
    assert!(root_pages.is_power_of_two() && root_pages <= 16);
    // Now and then an allocator with only a few tables beyond the root.
    let limited = u.int_in_range(0..=3u8)? == 0;
    let alloc = Pages::new(if limited {
        root_pages + usize::from(u.int_in_range(0..=6u8)?)
    } else {
        usize::MAX
    });
    let mut t = Stage2Tables::new(alloc, config).expect("the root fits any allocator used here");
    let root = t.root_address().0;
    assert_eq!(root % (PAGE_SIZE * root_pages as u64), 0);
    assert_eq!(t.vttbr(), root | u64::from(vmid.raw()) << 48);
    assert_eq!(t.vtcr(), config.vtcr());

    let space = config.ipa_size();
    let pa_bits = pa_range.bits();
    let mut model = Model::new();
    for step in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let map = u.int_in_range(0..=2u8)? != 0;
        let ipa = address(u, space)?;
        let size = length(u)?;
        let end = ipa.wrapping_add(size);
        let in_space = ipa.checked_add(size).is_some_and(|e| e <= space);
        if map {
            let pa = pa_for(u, ipa, size, pa_bits)?;
            let attrs = attrs(u)?;
            let expected = if (ipa | pa | size) % PAGE_SIZE != 0 {
                Err(MapError::Unaligned {
                    ipa: IntermediatePhysAddr(ipa),
                    pa: Some(PhysAddr(pa)),
                    size,
                })
            } else if !in_space {
                Err(MapError::OutOfIpaRange {
                    ipa: IntermediatePhysAddr(ipa),
                    size,
                    ipa_bits,
                })
            } else if pa.checked_add(size).is_none_or(|e| e > 1 << pa_bits) {
                Err(MapError::PaOutOfRange {
                    pa: PhysAddr(pa),
                    size,
                    pa_bits,
                })
            } else if size == 0 {
                Ok(())
            } else if let Some(at) = first_mapped(&model, ipa, end) {
                Err(MapError::Overlap {
                    ipa: IntermediatePhysAddr(at),
                })
            } else {
                Ok(())
            };
            if expected.is_ok() && descriptors(ipa, pa, size) > MAX_DESCRIPTORS {
                // Would only take long (a huge range of pages).
                continue;
            }
            let got = t.map(IntermediatePhysAddr(ipa), PhysAddr(pa), size, attrs);
            match (got, expected) {
                (Ok(()), Ok(())) => {
                    if size != 0 {
                        model.insert(ipa, (end, pa, attrs));
                    }
                }
                // Running out of tables is the allocator's to decide; nothing is mapped then.
                (Err(MapError::OutOfTableMemory), Ok(())) if limited => {}
                (got, expected) => {
                    assert_eq!(got, expected, "map {ipa:#x}+{size:#x} -> {pa:#x} {attrs:?}")
                }
            }
        } else {
            // The blocks the ends of the range cut: each must be split by break-before-make.
            let cut: Vec<Mapping> = if (ipa | size) % PAGE_SIZE == 0 && in_space && size != 0 {
                t.leaves()
                    .into_iter()
                    .filter(|l| {
                        let inner = |x: u64| l.ipa.0 < x && x < l.ipa.0 + l.size;
                        inner(ipa) || inner(end)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut tlb = Recorder::default();
            let got = t.unmap(IntermediatePhysAddr(ipa), size, &mut tlb);
            let expected = if (ipa | size) % PAGE_SIZE != 0 {
                Err(MapError::Unaligned {
                    ipa: IntermediatePhysAddr(ipa),
                    pa: None,
                    size,
                })
            } else if !in_space {
                Err(MapError::OutOfIpaRange {
                    ipa: IntermediatePhysAddr(ipa),
                    size,
                    ipa_bits,
                })
            } else {
                Ok(())
            };
            assert!(
                tlb.0.iter().all(|&(v, _, _)| v == vmid),
                "TLB maintenance for another VMID: {:?}",
                tlb.0
            );
            match (got, expected) {
                (Ok(()), Ok(())) => {
                    if size != 0 && first_mapped(&model, ipa, end).is_some() {
                        assert!(
                            tlb.0.contains(&(vmid, ipa, size)),
                            "unmap {ipa:#x}+{size:#x} removed mappings without invalidating them: {:?}",
                            tlb.0
                        );
                    }
                    for block in &cut {
                        assert!(
                            tlb.0.contains(&(vmid, block.ipa.0, block.size)),
                            "unmap {ipa:#x}+{size:#x} split {block:?} without invalidating it: {:?}",
                            tlb.0
                        );
                    }
                    if size != 0 {
                        model_unmap(&mut model, ipa, end);
                    }
                }
                // Splitting a block needs tables; then nothing is unmapped.
                (Err(MapError::OutOfTableMemory), Ok(())) if limited => {}
                (got, expected) => assert_eq!(got, expected, "unmap {ipa:#x}+{size:#x}"),
            }
        }
        let probes = [ipa.wrapping_sub(1), ipa, end.wrapping_sub(1), end];
        // The whole-tree comparison walks every table; every 8th step is enough to pin a
        // divergence down.
        let whole = step % 8 == 7 || u.is_empty();
        check(&t, &model, u, probes, space, whole)?;
    }

    // Unmapping everything needs no table (0 and the end of the space are descriptor
    // boundaries), leaves only the root, and frees every other table.
    t.unmap(IntermediatePhysAddr(0), space, &mut Recorder::default())
        .expect("unmapping the whole IPA space");
    assert!(t.leaves().is_empty());
    assert_eq!(t.allocator().in_use, root_pages);
    let alloc = t.release();
    assert_eq!(alloc.in_use, 0);
    assert_eq!(alloc.bad.get(), 0);
    Ok(())
}

/// Compares the tables with the model: the probes and a few random IPAs translate alike and,
/// when `whole`, the leaves are the model's mappings and every allocated table is in the tree.
fn check(
    t: &Stage2Tables<Pages>,
    model: &Model,
    u: &mut Unstructured,
    probes: [u64; 4],
    space: u64,
    whole: bool,
) -> Result<()> {
    let mut all = probes.to_vec();
    for _ in 0..4 {
        all.push(address(u, space)?.wrapping_add(u64::from(u.arbitrary::<u16>()?)));
    }
    for ipa in all {
        let expected = if ipa < space {
            model_translate(model, ipa)
        } else {
            None
        };
        assert_eq!(
            t.translate(IntermediatePhysAddr(ipa)),
            expected,
            "translate {ipa:#x}"
        );
    }
    assert_eq!(
        t.allocator().bad.get(),
        0,
        "a freed or unknown table was used"
    );
    if !whole {
        return Ok(());
    }
    let leaves = t.leaves();
    for leaf in &leaves {
        assert!(
            [PAGE_SIZE, BLOCK_2M, BLOCK_1G].contains(&leaf.size)
                && leaf.ipa.0 % leaf.size == 0
                && leaf.pa.0 % leaf.size == 0,
            "misshapen leaf {leaf:?}"
        );
    }
    assert_eq!(canonical(leaves), model_mappings(model));
    assert_eq!(
        t.allocator().in_use,
        t.table_pages(),
        "a table was allocated but is not in the tree"
    );
    Ok(())
}

/// VMIDs: never 0, never one in use or awaiting invalidation, and counted right.
fn vmids(u: &mut Unstructured) -> Result<()> {
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum State {
        Free,
        Allocated,
        Awaiting,
    }
    let mut a = VmidAllocator::new();
    let mut model = [State::Free; 256];
    let mut tokens = Vec::new();
    for _ in 0..1024 {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=3u8)? {
            0 | 1 => match a.allocate() {
                Ok(v) => {
                    assert_ne!(v, Vmid::HYPERVISOR);
                    let slot = &mut model[usize::from(v.raw())];
                    assert_eq!(*slot, State::Free, "{v} handed out twice");
                    *slot = State::Allocated;
                }
                Err(VmidError::Exhausted {
                    awaiting_invalidate,
                }) => {
                    assert!(model[1..].iter().all(|s| *s != State::Free));
                    assert_eq!(
                        awaiting_invalidate,
                        model.iter().filter(|s| **s == State::Awaiting).count()
                    );
                }
                Err(e) => panic!("allocate: {e}"),
            },
            2 => {
                let v = Vmid::new(u.arbitrary()?);
                let slot = &mut model[usize::from(v.raw())];
                match a.free(v) {
                    Ok(token) => {
                        assert_eq!(token.vmid(), v);
                        assert!(v != Vmid::HYPERVISOR && *slot == State::Allocated);
                        *slot = State::Awaiting;
                        tokens.push(token);
                    }
                    Err(e) => {
                        assert_eq!(e, VmidError::NotAllocated(v));
                        assert!(v == Vmid::HYPERVISOR || *slot != State::Allocated);
                    }
                }
            }
            _ => {
                if !tokens.is_empty() {
                    let i = u.choose_index(tokens.len())?;
                    let token = tokens.swap_remove(i);
                    model[usize::from(token.vmid().raw())] = State::Free;
                    a.invalidated(token);
                }
            }
        }
        assert_eq!(
            a.available(),
            model[1..].iter().filter(|s| **s == State::Free).count()
        );
    }
    Ok(())
}
