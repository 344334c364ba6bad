//! Property tests: random layouts translate as mapped, use the fewest leaves alignment
//! allows, and random map/unmap sequences agree with a page-by-page reference model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stage2::{
    Access, HeapTableAllocator, IntermediatePhysAddr, MapError, Mapping, MemKind, NotYetLive,
    PaRange, PhysAddr, Stage2Attrs, Stage2Config, Stage2Tables, Vmid, BLOCK_1G, BLOCK_2M,
    PAGE_SIZE,
};

fn new_tables(ipa_bits: u8) -> Stage2Tables<HeapTableAllocator> {
    let config = Stage2Config::new(ipa_bits, PaRange::Bits48, Vmid::new(3)).expect("config");
    Stage2Tables::new(HeapTableAllocator::new(), config).expect("root")
}

fn attrs() -> impl Strategy<Value = Stage2Attrs> {
    (
        prop_oneof![Just(MemKind::Normal), Just(MemKind::Device)],
        prop_oneof![
            Just(Access::ReadWrite),
            Just(Access::ReadOnly),
            Just(Access::None)
        ],
        any::<bool>(),
    )
        .prop_map(|(kind, access, exec)| Stage2Attrs { kind, access, exec })
}

/// A length made of whole GiB, 2 MiB and page parts, so ranges hit every block size.
fn length(max_gib: u64) -> impl Strategy<Value = u64> {
    (0..=max_gib, 0..4u64, 0..4u64)
        .prop_map(|(g, m, p)| g * BLOCK_1G + m * BLOCK_2M + p * PAGE_SIZE)
}

/// How a PA relates to its IPA modulo 1 GiB: same offset, or shifted by 2 MiB steps.
fn block_shift() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), (1..512u64).prop_map(|k| k * BLOCK_2M)]
}

/// A size and a PA shift together: large ranges only with shifts that allow blocks (with a
/// 4 KiB shift a range is all pages, and a large one only costs time).
fn size_and_shift(large: impl Strategy<Value = u64>) -> impl Strategy<Value = (u64, u64)> {
    let small = (1..16u64, 0..3u64).prop_map(|(p, m)| m * BLOCK_2M + p * PAGE_SIZE);
    prop_oneof![
        (large, block_shift()),
        (
            small,
            prop_oneof![block_shift(), (1..1024u64).prop_map(|k| k * PAGE_SIZE)]
        ),
    ]
}

#[derive(Clone, Debug)]
struct Planned {
    ipa: u64,
    pa: u64,
    size: u64,
    attrs: Stage2Attrs,
    probes: Vec<u64>,
}

/// Up to 6 disjoint mappings laid out left to right with random gaps.
fn layout() -> impl Strategy<Value = Vec<Planned>> {
    prop::collection::vec(
        (
            length(40),
            size_and_shift(length(2).prop_filter("non-empty", |&s| s > 0)),
            0..(1u64 << 16),
            attrs(),
            prop::collection::vec(any::<u64>(), 3),
        ),
        1..6,
    )
    .prop_map(|items| {
        let mut cursor = 0;
        let mut out = Vec::new();
        for (gap, (size, shift), pa_gib, attrs, probes) in items {
            let ipa = cursor + gap;
            let pa = pa_gib * BLOCK_1G + ((ipa + shift) % BLOCK_1G);
            cursor = ipa + size;
            out.push(Planned {
                ipa,
                pa,
                size,
                attrs,
                probes: probes.iter().map(|p| p % size).collect(),
            });
        }
        out
    })
}

/// The fewest blocks and pages that can map `[ipa, ipa + size)` to `pa`: from the left, the
/// largest block whose IPA and PA are both aligned and which fits.
fn min_leaves(ipa: u64, pa: u64, size: u64) -> usize {
    let end = ipa + size;
    let mut addr = ipa;
    let mut count = 0;
    while addr < end {
        let out = pa + (addr - ipa);
        let step = [BLOCK_1G, BLOCK_2M, PAGE_SIZE]
            .into_iter()
            .find(|&b| addr.is_multiple_of(b) && out.is_multiple_of(b) && addr + b <= end)
            .unwrap_or(PAGE_SIZE);
        addr += step;
        count += 1;
    }
    count
}

/// Merges adjacent mappings that continue each other (IPA, PA and attributes).
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

proptest! {
    #[test]
    fn layouts_translate_and_use_fewest_leaves(plan in layout(), wide in any::<bool>()) {
        let mut t = new_tables(if wide { 48 } else { 40 });
        for m in &plan {
            t.map(IntermediatePhysAddr(m.ipa), PhysAddr(m.pa), m.size, m.attrs)
                .map_err(|e| TestCaseError::fail(format!("{m:?}: {e}")))?;
        }
        for (i, m) in plan.iter().enumerate() {
            let mut offsets = vec![0, m.size - 1];
            offsets.extend(&m.probes);
            for off in offsets {
                prop_assert_eq!(
                    t.translate(IntermediatePhysAddr(m.ipa + off)),
                    Some((PhysAddr(m.pa + off), m.attrs))
                );
            }
            let prev_end = if i == 0 { 0 } else { plan[i - 1].ipa + plan[i - 1].size };
            if m.ipa > prev_end {
                prop_assert_eq!(t.translate(IntermediatePhysAddr(m.ipa - 1)), None);
                let mid = prev_end + (m.ipa - prev_end) / 2;
                prop_assert_eq!(t.translate(IntermediatePhysAddr(mid)), None);
            }
        }
        if let Some(last) = plan.last() {
            prop_assert_eq!(t.translate(IntermediatePhysAddr(last.ipa + last.size)), None);
        }
        let expected: usize = plan.iter().map(|m| min_leaves(m.ipa, m.pa, m.size)).sum();
        prop_assert_eq!(t.leaves().len(), expected);
        let wanted = canonical(plan.iter().map(|m| Mapping {
            ipa: IntermediatePhysAddr(m.ipa),
            pa: PhysAddr(m.pa),
            size: m.size,
            attrs: m.attrs,
        }));
        prop_assert_eq!(canonical(t.leaves()), wanted);
        prop_assert_eq!(t.allocator().bad_accesses(), 0);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        ipa: u64,
        pa: u64,
        size: u64,
        attrs: Stage2Attrs,
    },
    Unmap {
        ipa: u64,
        size: u64,
    },
}

/// The window the sequences work in: 4 GiB, so 1 GiB blocks occur but stay few.
const WINDOW: u64 = 4 * BLOCK_1G;

fn op_length() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (1..16u64).prop_map(|p| p * PAGE_SIZE),
        8 => (0..3u64, 0..8u64).prop_map(|(m, p)| (m * BLOCK_2M + p * PAGE_SIZE).max(PAGE_SIZE)),
        1 => Just(BLOCK_1G),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let start = prop_oneof![
        (0..WINDOW / PAGE_SIZE).prop_map(|p| p * PAGE_SIZE),
        (0..WINDOW / BLOCK_2M).prop_map(|b| b * BLOCK_2M),
        (0..WINDOW / BLOCK_1G).prop_map(|g| g * BLOCK_1G),
    ];
    prop_oneof![
        (
            start.clone(),
            size_and_shift(op_length()),
            0..64u64,
            attrs()
        )
            .prop_map(|(ipa, (size, shift), pa_gib, attrs)| Op::Map {
                ipa,
                pa: pa_gib * BLOCK_1G + (ipa + shift) % BLOCK_1G,
                size,
                attrs,
            }),
        (start, op_length()).prop_map(|(ipa, size)| Op::Unmap { ipa, size }),
    ]
}

type Model = BTreeMap<u64, (u64, Stage2Attrs)>;

fn model_mappings(model: &Model) -> Vec<Mapping> {
    canonical(model.iter().map(|(&ipa, &(pa, attrs))| Mapping {
        ipa: IntermediatePhysAddr(ipa),
        pa: PhysAddr(pa),
        size: PAGE_SIZE,
        attrs,
    }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn map_unmap_sequences_match_page_model(ops in prop::collection::vec(op(), 1..24)) {
        let mut t = new_tables(40);
        let mut model = Model::new();
        for op in &ops {
            match *op {
                Op::Map { ipa, pa, size, attrs } => {
                    let first_mapped = model.range(ipa..ipa + size).next().map(|(&a, _)| a);
                    let got = t.map(IntermediatePhysAddr(ipa), PhysAddr(pa), size, attrs);
                    match first_mapped {
                        Some(a) => prop_assert_eq!(
                            got,
                            Err(MapError::Overlap { ipa: IntermediatePhysAddr(a) })
                        ),
                        None => {
                            prop_assert_eq!(got, Ok(()));
                            for off in (0..size).step_by(PAGE_SIZE as usize) {
                                model.insert(ipa + off, (pa + off, attrs));
                            }
                        }
                    }
                }
                Op::Unmap { ipa, size } => {
                    prop_assert_eq!(t.unmap(IntermediatePhysAddr(ipa), size, &mut NotYetLive), Ok(()));
                    let gone: Vec<u64> = model.range(ipa..ipa + size).map(|(&a, _)| a).collect();
                    for a in gone {
                        model.remove(&a);
                    }
                    for probe in [ipa.wrapping_sub(1), ipa, ipa + size - 1, ipa + size] {
                        let expected = model.get(&(probe & !(PAGE_SIZE - 1)))
                            .map(|&(pa, attrs)| (PhysAddr(pa + probe % PAGE_SIZE), attrs));
                        prop_assert_eq!(t.translate(IntermediatePhysAddr(probe)), expected);
                    }
                }
            }
            prop_assert_eq!(t.allocator().bad_accesses(), 0);
        }
        prop_assert_eq!(canonical(t.leaves()), model_mappings(&model));

        // Unmapping everything leaves the root alone and frees every other table.
        t.unmap(IntermediatePhysAddr(0), 1 << 40, &mut NotYetLive).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(t.leaves().is_empty());
        prop_assert_eq!(t.allocator().pages_in_use(), 2);
        let alloc = t.release();
        prop_assert_eq!(alloc.pages_in_use(), 0);
        prop_assert_eq!(alloc.bad_accesses(), 0);
    }
}
