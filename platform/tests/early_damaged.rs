//! `early_console` on damaged blobs: cut short (with the header's `totalsize` lowered to
//! match, as the hypervisor bounds the blob by it), with a broken token, or with a property
//! name it cannot read. It must find the console from what survives.

mod common;

use common::*;
use platform::*;

const VIRT_PL011: EarlyUart = EarlyUart {
    kind: UartKind::Pl011,
    base: 0x0900_0000,
};
const RPI_MINI_UART: EarlyUart = EarlyUart {
    kind: UartKind::Bcm2835Aux,
    base: 0xfe21_5040,
};
const RPI_PL011: EarlyUart = EarlyUart {
    kind: UartKind::Pl011,
    base: 0xfe20_1000,
};

/// A header word.
fn word(blob: &[u8], index: usize) -> usize {
    u32::from_be_bytes(blob[index * 4..index * 4 + 4].try_into().unwrap()) as usize
}

fn struct_end(blob: &[u8]) -> usize {
    word(blob, 2) + word(blob, 9)
}

fn strings_end(blob: &[u8]) -> usize {
    word(blob, 3) + word(blob, 8)
}

/// The first `len` bytes, with `totalsize` set to `len`.
fn cut(blob: &[u8], len: usize) -> Vec<u8> {
    let mut b = blob[..len].to_vec();
    b[4..8].copy_from_slice(&(len as u32).to_be_bytes());
    b
}

/// The blob length from which every copy of each of `names`, NUL included, is in the
/// strings block, so that whichever one a property points at can be read.
fn names_end(blob: &[u8], names: &[&str]) -> usize {
    let start = word(blob, 3);
    let strings = &blob[start..strings_end(blob)];
    names
        .iter()
        .flat_map(|name| {
            let needle: Vec<u8> = name.bytes().chain([0]).collect();
            strings
                .windows(needle.len())
                .enumerate()
                .filter(move |(_, w)| *w == needle.as_slice())
                .map(move |(i, w)| start + i + w.len())
        })
        .max()
        .unwrap_or(start)
}

/// 40, every multiple of 64 after it, and the full length.
fn cuts(blob: &[u8]) -> impl Iterator<Item = usize> {
    std::iter::once(40)
        .chain((64..blob.len()).step_by(64))
        .chain(std::iter::once(blob.len()))
}

/// The offset of the first `FDT_PROP` in the structure block whose name is at `nameoff`.
fn prop_offset(blob: &[u8], nameoff: usize) -> usize {
    (word(blob, 2)..struct_end(blob))
        .step_by(4)
        .find(|&o| word(blob, o / 4) == 3 && word(blob, o / 4 + 2) == nameoff)
        .unwrap()
}

#[test]
fn virt_cut_at_every_64_bytes() {
    let blob = VIRT_V3_4CPU;
    // A PL011 straight under the root: its own names and the root's cell counts.
    let needed = struct_end(blob).max(names_end(
        blob,
        &[
            "compatible",
            "reg",
            "status",
            "#address-cells",
            "#size-cells",
        ],
    ));
    let mut found = 0;
    for len in cuts(blob) {
        let console = early_console(&cut(blob, len));
        if len >= needed {
            assert_eq!(console, Some(VIRT_PL011), "cut at {len}");
            found += 1;
        } else {
            // Nothing but the real UART can come out of a prefix of the tree.
            assert!(
                console.is_none() || console == Some(VIRT_PL011),
                "cut at {len}"
            );
        }
    }
    assert!(
        found >= 2,
        "only {found} cuts keep the names the UART needs"
    );
}

#[test]
fn virt_strings_missing_their_last_8_bytes() {
    // The truncation the hypervisor's QEMU test makes.
    let blob = VIRT_V3_4CPU;
    let len = strings_end(blob) - 8;
    let b = cut(blob, len);
    assert_eq!(early_console(&b), Some(VIRT_PL011));
    let e = Platform::parse(&b).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    // The name "stdout-path" is the last string, so it is gone: the console is the first
    // enabled PL011, which is also the one stdout-path names.
    assert!(names_end(blob, &["stdout-path"]) > len);
}

#[test]
fn rpi_cut_at_every_64_bytes() {
    let blob = RPI4_960M;
    // The mini-UART sits under /soc, whose ranges moves it to 0xfe215040, and stdout-path
    // names it through the alias serial1.
    let needed = struct_end(blob).max(names_end(
        blob,
        &[
            "compatible",
            "reg",
            "status",
            "#address-cells",
            "#size-cells",
            "ranges",
            "stdout-path",
            "serial1",
        ],
    ));
    let mut found = 0;
    for len in cuts(blob) {
        let console = early_console(&cut(blob, len));
        if len >= needed {
            assert_eq!(console, Some(RPI_MINI_UART), "cut at {len}");
            found += 1;
        } else {
            assert!(
                [None, Some(RPI_MINI_UART), Some(RPI_PL011)].contains(&console),
                "cut at {len}: {console:?}"
            );
        }
    }
    assert!(
        found >= 2,
        "only {found} cuts keep the names the UART needs"
    );
}

#[test]
fn rpi_strings_missing_their_last_8_bytes() {
    let blob = RPI4_960M;
    let len = strings_end(blob) - 8;
    // Here every name the console needs comes before the lost tail.
    assert!(
        names_end(
            blob,
            &[
                "compatible",
                "reg",
                "status",
                "ranges",
                "stdout-path",
                "serial1"
            ]
        ) <= len
    );
    let b = cut(blob, len);
    assert_eq!(early_console(&b), Some(RPI_MINI_UART));
    let e = Platform::parse(&b).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn a_broken_token_keeps_what_came_before() {
    // QEMU virt puts /chosen last: an unknown tag in place of its FDT_BEGIN_NODE stops the
    // walk there, after the PL011.
    let mut b = VIRT_V3_4CPU.to_vec();
    let structs = word(&b, 2)..struct_end(&b);
    let chosen = structs.start
        + b[structs]
            .windows(8)
            .position(|w| w == b"chosen\0\0")
            .unwrap()
        - 4;
    assert_eq!(word(&b, chosen / 4), 1);
    b[chosen..chosen + 4].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
    assert!(Platform::parse(&b).is_err());
    assert_eq!(early_console(&b), Some(VIRT_PL011));

    // The FDT_END tag broken: every node was read.
    let mut b = RPI4_960M.to_vec();
    let end = struct_end(&b) - 4;
    assert_eq!(word(&b, end / 4), 9);
    b[end..end + 4].copy_from_slice(&5u32.to_be_bytes());
    assert!(Platform::parse(&b).is_err());
    assert_eq!(early_console(&b), Some(RPI_MINI_UART));
}

#[test]
fn a_property_with_an_unreadable_name_is_skipped() {
    // stdout-path's name offset pointing past the strings block: the walk goes on without
    // it and falls back to the first enabled PL011.
    let mut b = RPI4_960M.to_vec();
    let name = names_end(&b, &["stdout-path"]) - "stdout-path\0".len() - word(&b, 3);
    let prop = prop_offset(&b, name);
    b[prop + 8..prop + 12].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    assert!(Platform::parse(&b).is_err());
    assert_eq!(early_console(&b), Some(RPI_PL011));
}

#[test]
fn no_magic_or_no_header_finds_nothing() {
    let mut b = VIRT_V3_4CPU.to_vec();
    b[0] ^= 1;
    assert_eq!(early_console(&b), None);
    for len in 0..40 {
        assert_eq!(early_console(&VIRT_V3_4CPU[..len]), None, "{len}");
    }
}
