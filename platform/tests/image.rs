//! Guest image formats: hand-made arm64 `Image` and ELF headers through `probe` and `plan`.

use platform::image::{plan, probe, GuestImage, ImageError, LoadCopy, LoadPlan, Segment};
use platform::MemRange;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn mem(base: u64, size: u64) -> MemRange {
    MemRange { base, size }
}

/// An arm64 `Image` header followed by `body` bytes of code.
fn linux_image(text_offset: u64, image_size: u64, flags: u64, body: usize) -> Vec<u8> {
    let mut b = vec![0u8; 64 + body];
    b[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b #0x40
    b[8..16].copy_from_slice(&text_offset.to_le_bytes());
    b[16..24].copy_from_slice(&image_size.to_le_bytes());
    b[24..32].copy_from_slice(&flags.to_le_bytes());
    b[56..60].copy_from_slice(b"ARM\x64");
    b
}

/// One program header: (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz).
type Ph = (u32, u64, u64, u64, u64, u64);

/// An ELF64 file: header, program headers right after it, then `payload` zero bytes.
fn elf(e_type: u16, machine: u16, entry: u64, phdrs: &[Ph], payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[0..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // ELFDATA2LSB
    b[6] = 1; // EV_CURRENT
    b[16..18].copy_from_slice(&e_type.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[24..32].copy_from_slice(&entry.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
    for &(kind, offset, vaddr, paddr, filesz, memsz) in phdrs {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
        for (at, v) in [
            (8, offset),
            (16, vaddr),
            (24, paddr),
            (32, filesz),
            (40, memsz),
        ] {
            p[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b.extend(p);
    }
    b.resize(b.len() + payload, 0);
    b
}

const VM: [MemRange; 1] = [MemRange {
    base: 0x5000_0000,
    size: 1 << 30,
}];

#[test]
fn linux_image_header() {
    let img = linux_image(0, 40 * MIB, 0xa, 4096);
    let probed = probe(&img, false).unwrap();
    assert_eq!(
        probed,
        GuestImage::LinuxImage {
            text_offset: 0,
            image_size: 40 * MIB,
            flags: 0xa,
            legacy: false
        }
    );
    let p = plan(&probed, img.len(), &VM, None).unwrap();
    assert_eq!(
        p,
        LoadPlan {
            copies: vec![LoadCopy {
                src_offset: 0,
                dst: 0x5000_0000,
                len: img.len() as u64
            }],
            zero: vec![],
            footprint: vec![mem(0x5000_0000, 40 * MIB)],
            entry: 0x5000_0000,
        }
    );
}

#[test]
fn linux_image_goes_at_2mib_aligned_base_plus_text_offset() {
    let img = linux_image(0x8_0000, 8 * MIB, 0, 100);
    let probed = probe(&img, false).unwrap();
    let vm = [mem(0x4010_0000, 64 * MIB)];
    let p = plan(&probed, img.len(), &vm, None).unwrap();
    assert_eq!(p.entry, 0x4028_0000);
    assert_eq!(p.footprint, [mem(0x4028_0000, 8 * MIB)]);
    // The load address is ignored for an Image.
    assert_eq!(plan(&probed, img.len(), &vm, Some(0x4100_0000)).unwrap(), p);
}

#[test]
fn legacy_image_uses_0x80000_and_file_size() {
    let img = linux_image(0x1234, 0, 0xf, 1000);
    let probed = probe(&img, false).unwrap();
    assert_eq!(
        probed,
        GuestImage::LinuxImage {
            text_offset: 0x8_0000,
            image_size: 1064,
            flags: 0,
            legacy: true
        }
    );
    let p = plan(&probed, img.len(), &VM, None).unwrap();
    assert_eq!(p.entry, 0x5008_0000);
    assert_eq!(
        plan(&probed, 5, &VM, None),
        Err(ImageError::LengthMismatch { len: 5 })
    );
}

#[test]
fn image_file_longer_than_image_size_copies_image_size() {
    // E.g. a signed kernel with a signature appended after the image.
    let img = linux_image(0, 64, 0, 4096);
    let p = plan(&probe(&img, false).unwrap(), img.len(), &VM, None).unwrap();
    assert_eq!(p.copies[0].len, 64);
}

#[test]
fn image_that_does_not_fit() {
    let img = linux_image(0, 2 * MIB, 0, 16);
    let probed = probe(&img, false).unwrap();
    let small = [mem(0x4000_0000, MIB)];
    let err = plan(&probed, img.len(), &small, None).unwrap_err();
    assert_eq!(
        err,
        ImageError::OutsideMemory {
            what: "kernel Image",
            range: mem(0x4000_0000, 2 * MIB)
        }
    );
    // The aligned base must be in the same bank: 2 MiB of room from 0x4020_0000 is not
    // there when the first bank is 0x4010_0000+1 MiB, even with a second bank after it.
    let split = [mem(0x4010_0000, MIB), mem(0x4020_0000, MIB)];
    assert!(plan(&probed, img.len(), &split, None).is_err());
    let text_overflow = linux_image(u64::MAX - 10, 2 * MIB, 0, 16);
    assert!(plan(&probe(&text_overflow, false).unwrap(), 80, &VM, None).is_err());
    assert_eq!(
        plan(&probed, img.len(), &[], None),
        Err(ImageError::NoMemory)
    );
}

#[test]
fn elf_exec_with_bss() {
    let file = elf(
        2,
        183,
        0x5000_0010,
        &[
            (1, 0x1000, 0x5000_0000, 0x5000_0000, 0x200, 0x200),
            (4, 0, 0, 0, 0x10, 0x10), // PT_NOTE: ignored
            (1, 0x1200, 0x5001_0000, 0x5001_0000, 0x100, 0x3000),
            (1, 0, 0x6000_0000, 0x6000_0000, 0, 0), // empty: ignored
        ],
        0x1300,
    );
    let probed = probe(&file, false).unwrap();
    assert_eq!(
        probed,
        GuestImage::Elf {
            entry: 0x5000_0010,
            segments: vec![
                Segment {
                    paddr: 0x5000_0000,
                    offset: 0x1000,
                    filesz: 0x200,
                    memsz: 0x200
                },
                Segment {
                    paddr: 0x5001_0000,
                    offset: 0x1200,
                    filesz: 0x100,
                    memsz: 0x3000
                },
            ]
        }
    );
    let p = plan(&probed, file.len(), &VM, None).unwrap();
    assert_eq!(
        p.copies,
        [
            LoadCopy {
                src_offset: 0x1000,
                dst: 0x5000_0000,
                len: 0x200
            },
            LoadCopy {
                src_offset: 0x1200,
                dst: 0x5001_0000,
                len: 0x100
            }
        ]
    );
    assert_eq!(p.zero, [mem(0x5001_0100, 0x2f00)]);
    assert_eq!(p.entry, 0x5000_0010);
    // Outside the VM: refused.
    let other = [mem(0x4000_0000, 0x1000_0000)];
    assert!(matches!(
        plan(&probed, file.len(), &other, None),
        Err(ImageError::OutsideMemory { .. })
    ));
}

#[test]
fn elf_entry_is_moved_to_its_physical_address() {
    let file = elf(
        2,
        183,
        0xffff_0000_0000_0100,
        &[(1, 0x100, 0xffff_0000_0000_0000, 0x5000_0000, 0x200, 0x200)],
        0x300,
    );
    let GuestImage::Elf { entry, .. } = probe(&file, false).unwrap() else {
        panic!("not an ELF");
    };
    assert_eq!(entry, 0x5000_0100);
}

#[test]
fn elf_dyn_at_fixed_address_is_accepted_but_not_at_zero() {
    let seg = |paddr| [(1, 0x100, paddr, paddr, 0x10, 0x10)];
    assert!(probe(&elf(3, 183, 0x5000_0000, &seg(0x5000_0000), 0x100), false).is_ok());
    assert_eq!(
        probe(&elf(3, 183, 0, &seg(0), 0x100), false),
        Err(ImageError::PositionIndependent)
    );
}

#[test]
fn elf_errors() {
    let good = elf(
        2,
        183,
        0x5000_0000,
        &[(1, 0x78, 0x5000_0000, 0x5000_0000, 8, 8)],
        8,
    );
    assert!(probe(&good, false).is_ok());

    let mut class32 = good.clone();
    class32[4] = 1;
    assert_eq!(probe(&class32, false), Err(ImageError::Elf32));
    let mut big = good.clone();
    big[5] = 2;
    assert_eq!(probe(&big, false), Err(ImageError::BigEndian));
    assert_eq!(
        probe(&elf(2, 62, 0, &[], 0), false),
        Err(ImageError::WrongMachine { machine: 62 })
    );
    assert_eq!(
        probe(&elf(1, 183, 0, &[], 0), false),
        Err(ImageError::WrongType { e_type: 1 })
    );
    assert!(matches!(
        probe(&good[..40], false),
        Err(ImageError::Truncated {
            what: "ELF header",
            ..
        })
    ));
    assert!(matches!(
        probe(&good[..100], false),
        Err(ImageError::Truncated {
            what: "ELF program header table",
            ..
        })
    ));
    assert_eq!(
        probe(&elf(2, 183, 0, &[], 0), false),
        Err(ImageError::NoLoadSegments)
    );
    assert_eq!(
        probe(&elf(2, 183, 0, &[(1, 0x78, 0, 0x1000, 8, 8)], 4), false),
        Err(ImageError::SegmentOutsideFile {
            index: 0,
            offset: 0x78,
            filesz: 8,
            len: 124
        })
    );
    assert_eq!(
        probe(&elf(2, 183, 0, &[(1, 0x78, 0, 0x1000, 8, 4)], 8), false),
        Err(ImageError::FileszExceedsMemsz {
            index: 0,
            filesz: 8,
            memsz: 4
        })
    );
    assert_eq!(
        probe(
            &elf(
                2,
                183,
                0x1000,
                &[
                    (1, 0xb0, 0x1000, 0x1000, 8, 0x100),
                    (1, 0xb0, 0x2000, 0x10f0, 8, 8)
                ],
                8
            ),
            false
        ),
        Err(ImageError::OverlappingSegments {
            first: 0,
            second: 1
        })
    );
    assert_eq!(
        probe(
            &elf(2, 183, 0x9000, &[(1, 0x78, 0x1000, 0x1000, 8, 8)], 8),
            false
        ),
        Err(ImageError::EntryOutsideSegments { entry: 0x9000 })
    );
    assert_eq!(
        probe(
            &elf(2, 183, 0, &[(1, 0x78, 0, u64::MAX - 4, 8, 8)], 8),
            false
        ),
        Err(ImageError::SegmentOverflows { index: 0 })
    );
}

#[test]
fn raw_images() {
    let bin = vec![0xd5u8; 300];
    assert_eq!(probe(&bin, false), Err(ImageError::Unrecognized));
    assert_eq!(probe(&bin, true), Ok(GuestImage::Raw));
    assert_eq!(probe(&[], true), Err(ImageError::Empty));
    // `raw` wins over a header that looks like an Image.
    assert_eq!(probe(&linux_image(0, 64, 0, 0), true), Ok(GuestImage::Raw));

    let p = plan(&GuestImage::Raw, 300, &VM, None).unwrap();
    assert_eq!(p.entry, 0x5000_0000);
    assert_eq!(p.footprint, [mem(0x5000_0000, 300)]);
    let p = plan(&GuestImage::Raw, 300, &VM, Some(0x5100_0000)).unwrap();
    assert_eq!(p.entry, 0x5100_0000);
    assert_eq!(p.copies[0].dst, 0x5100_0000);
    let err = plan(&GuestImage::Raw, 300, &VM, Some(0x4000_0000)).unwrap_err();
    assert!(err.to_string().contains("tandem,load-address"), "{err}");
    assert!(plan(&GuestImage::Raw, 300, &VM, Some(0x9000_0000 - 100)).is_err());
}

#[test]
fn messages_say_what_was_expected() {
    let msg = ImageError::Unrecognized.to_string();
    assert!(msg.contains("not an arm64 Image (no ARM\\x64 magic at offset 56)"));
    assert!(msg.contains("not an ELF64 for AArch64"));
    assert!(msg.contains("tandem,format = \"raw\""));
    assert!(probe(b"short", false)
        .unwrap_err()
        .to_string()
        .contains("raw"));
    assert!(probe(&linux_image(0, 64, 0, 0)[..60], false).is_err());
}

/// Every piece of a plan lies inside one bank of the VM's memory.
fn inside(memory: &[MemRange], r: &MemRange) -> bool {
    let end = u128::from(r.base) + u128::from(r.size);
    memory
        .iter()
        .any(|b| b.base <= r.base && end <= u128::from(b.base) + u128::from(b.size))
}

fn arb_memory() -> impl Strategy<Value = Vec<MemRange>> {
    prop::collection::vec((0u64..0x1_0000, 1u64..0x4000), 1..4).prop_map(|banks| {
        let mut at = 0u64;
        banks
            .into_iter()
            .map(|(gap, size)| {
                at += gap * 0x1000;
                let r = mem(at, size * 0x1000);
                at += r.size;
                r
            })
            .collect()
    })
}

/// Bytes that are often almost valid: a real header with a few bytes changed.
fn arb_image() -> impl Strategy<Value = Vec<u8>> {
    let seeds = prop_oneof![
        Just(linux_image(0x8_0000, 4 * MIB, 0, 256)),
        Just(linux_image(0, 0, 0, 64)),
        Just(elf(
            2,
            183,
            0x10_0000,
            &[
                (1, 0xb0, 0x10_0000, 0x10_0000, 0x40, 0x1000),
                (1, 0xf0, 0x20_0000, 0x20_0000, 0x10, 0x10)
            ],
            0x60
        )),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    (
        seeds,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut b, edits, cut)| {
            if !b.is_empty() {
                for (i, v) in edits {
                    let at = i.index(b.len());
                    b[at] = v;
                }
                let keep = cut.index(b.len() * 2).min(b.len());
                b.truncate(keep.max(b.len() / 2));
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn probe_never_panics_and_plan_stays_in_memory(
        bytes in arb_image(),
        raw in any::<bool>(),
        memory in arb_memory(),
        load in prop::option::of(any::<u64>()),
    ) {
        let Ok(image) = probe(&bytes, raw) else { return Ok(()) };
        let Ok(p) = plan(&image, bytes.len(), &memory, load) else { return Ok(()) };
        prop_assert!(p.footprint.iter().any(|f| f.contains(p.entry)));
        for c in &p.copies {
            prop_assert!(inside(&memory, &mem(c.dst, c.len)), "copy {c:?}");
            prop_assert!(c.src_offset + c.len <= bytes.len() as u64);
        }
        for r in p.zero.iter().chain(&p.footprint) {
            prop_assert!(inside(&memory, r), "range {r:?}");
        }
    }
}
