//! Memory test guest: writes a pattern over every byte of memory the device tree gives the
//! VM, except its own image (code, data, stacks and heap) and its DTB, reads it back, and
//! passes if every word came back as written.
//!
//! Each 64-bit word holds a value derived from its own address, first as is, then inverted,
//! so every bit is seen at 0 and at 1, and two addresses that reach the same memory (a
//! stage-2 alias) show up as a mismatch. Prints `mem: testing <range>` per range, then
//! `TEST PASS mem`, or `TEST FAIL mem: <first mismatch>`.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use tandem_guest_rt::{println, Boot, Failure, Guest};

const PAGE: u64 = 0x1000;
const WORD: u64 = 8;

/// The value the pattern puts at `addr`; `inverted` for the second pass.
fn pattern(addr: u64, inverted: bool) -> u64 {
    // A bijective mix of the address (the splitmix64 finalizer), so no two words match.
    let mut x = addr ^ 0x6d65_6d74_6573_7421;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    if inverted {
        !x
    } else {
        x
    }
}

/// `[start, end)` ranges of `banks` with every range of `holes` taken out.
fn subtract(banks: &[(u64, u64)], holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for &(bank_start, bank_end) in banks {
        let mut start = bank_start;
        let mut cuts: Vec<(u64, u64)> = holes
            .iter()
            .copied()
            .filter(|&(s, e)| s < bank_end && e > bank_start)
            .collect();
        cuts.sort_unstable();
        for (cut_start, cut_end) in cuts {
            if cut_start > start {
                ranges.push((start, cut_start));
            }
            start = start.max(cut_end);
        }
        if start < bank_end {
            ranges.push((start, bank_end));
        }
    }
    ranges
}

/// Writes one pass of the pattern over `[start, end)`.
fn fill(start: u64, end: u64, inverted: bool) {
    for addr in (start..end).step_by(WORD as usize) {
        // SAFETY: `[start, end)` is memory the DTB gives this VM, outside the image (code,
        // statics, stacks, heap) and the DTB, so no Rust object lives there; the address is
        // 8-byte aligned, as Device memory (the MMU is off) requires.
        unsafe { core::ptr::write_volatile(addr as *mut u64, pattern(addr, inverted)) };
    }
}

/// Reads `[start, end)` back; the first word that differs from the pattern.
fn check(start: u64, end: u64, inverted: bool) -> Result<(), Failure> {
    for addr in (start..end).step_by(WORD as usize) {
        // SAFETY: as in `fill`.
        let read = unsafe { core::ptr::read_volatile(addr as *const u64) };
        let wrote = pattern(addr, inverted);
        if read != wrote {
            let pass = if inverted { "inverted" } else { "plain" };
            return Err(format!(
                "{pass} pattern: at {addr:#x} wrote {wrote:#018x}, read {read:#018x}"
            )
            .into());
        }
    }
    Ok(())
}

struct Mem;

impl Guest for Mem {
    const NAME: &'static str = "mem";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let banks: Vec<(u64, u64)> = board
            .memory
            .iter()
            .map(|m| (m.base, m.base.saturating_add(m.size)))
            .collect();
        let dtb = boot.dtb().as_ptr() as u64;
        let holes = [
            (
                boot.load_address() & !(PAGE - 1),
                boot.image_end().next_multiple_of(PAGE),
            ),
            (
                dtb & !(PAGE - 1),
                (dtb + boot.dtb().len() as u64).next_multiple_of(PAGE),
            ),
        ];
        for &(start, end) in &holes {
            println!("mem: keeping {start:#x}..{end:#x} (image or DTB)");
        }
        // The DTB is not read again: everything needed from it is in `board`.
        let ranges = subtract(&banks, &holes);
        let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        if total == 0 {
            return Err("no memory to test besides the image and the DTB".into());
        }
        for &(start, end) in &ranges {
            println!(
                "mem: testing {start:#x}..{end:#x} ({} KiB)",
                (end - start) >> 10
            );
        }
        for inverted in [false, true] {
            for &(start, end) in &ranges {
                fill(start, end, inverted);
            }
            for &(start, end) in &ranges {
                check(start, end, inverted)?;
            }
            let pass = if inverted { "inverted" } else { "plain" };
            println!("mem: {pass} pattern read back from {} KiB", total >> 10);
        }
        Ok(())
    }
}

tandem_guest_rt::guest!(Mem);
