//! Victim test guest: the VM a hostile neighbour attacks. It fills a buffer of its memory
//! with a known pattern, keeps its checksum, and until its time is up recomputes it over
//! and over, printing `victim: heartbeat <n> checksum OK` once per heartbeat period. Any
//! change fails it with `TEST FAIL victim: checksum changed: ...` and the first word that
//! differs; at the end it prints `TEST PASS victim`.
//!
//! It prints its memory and buffer ranges first, so a test can point the hostile guest at
//! them. Command line (`/chosen/bootargs`), every word optional:
//!
//! - `duration_ms=<n>`: guest time (virtual counter) to keep checking, default 5000;
//! - `heartbeat_ms=<n>`: guest time per heartbeat, default 250;
//! - `buffer_kib=<n>`: the buffer's size, default 4096 (4 MiB).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;

use tandem_guest_rt::time::now_ns;
use tandem_guest_rt::{args, println, Boot, Failure, Guest};

const DEFAULT_DURATION_MS: u64 = 5_000;
const DEFAULT_HEARTBEAT_MS: u64 = 250;
const DEFAULT_BUFFER_KIB: u64 = 4096;
/// The buffer starts on a 2 MiB boundary after the image.
const BUFFER_ALIGN: u64 = 2 << 20;
const WORD: u64 = 8;

/// The word the pattern puts at `addr` (splitmix64 of the address).
fn pattern(addr: u64) -> u64 {
    let mut x = addr.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The buffer: `[start, end)` in this VM's memory, outside its image and DTB.
#[derive(Clone, Copy)]
struct Buffer {
    start: u64,
    end: u64,
}

impl Buffer {
    fn words(self) -> impl Iterator<Item = u64> {
        (self.start..self.end).step_by(WORD as usize)
    }

    fn read(addr: u64) -> u64 {
        // SAFETY: `addr` is an 8-byte aligned word of the buffer, memory of this VM that no
        // Rust object occupies (`Victim::main` placed it outside the image and the DTB).
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }

    fn fill(self) {
        for addr in self.words() {
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile(addr as *mut u64, pattern(addr)) };
        }
    }

    /// A position-dependent checksum (FNV-1a over words): a changed, moved or swapped word
    /// changes it.
    fn checksum(self) -> u64 {
        self.words().fold(0xcbf2_9ce4_8422_2325, |sum, addr| {
            (sum ^ Self::read(addr)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The first word that is not what [`Buffer::fill`] wrote.
    fn first_change(self) -> Option<(u64, u64)> {
        self.words()
            .map(|addr| (addr, Self::read(addr)))
            .find(|&(addr, value)| value != pattern(addr))
    }
}

fn arg(bootargs: &str, key: &str, default: u64) -> Result<u64, Failure> {
    match args::value(bootargs, key) {
        None => Ok(default),
        Some(text) => {
            args::parse_u64(text).ok_or_else(|| format!("bad {key}={text}: want a number").into())
        }
    }
}

struct Victim;

impl Guest for Victim {
    const NAME: &'static str = "victim";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let bootargs = board.bootargs.as_deref().unwrap_or_default();
        let duration_ms = arg(bootargs, "duration_ms", DEFAULT_DURATION_MS)?;
        let heartbeat_ms = arg(bootargs, "heartbeat_ms", DEFAULT_HEARTBEAT_MS)?.max(1);
        let size = arg(bootargs, "buffer_kib", DEFAULT_BUFFER_KIB)?.max(1) << 10;

        for bank in &board.memory {
            println!(
                "victim: memory {:#x}..{:#x}",
                bank.base,
                bank.base.saturating_add(bank.size)
            );
        }
        let start = boot.image_end().next_multiple_of(BUFFER_ALIGN);
        let end = start.saturating_add(size);
        let dtb = boot.dtb().as_ptr() as u64;
        let in_memory = board
            .memory
            .iter()
            .any(|m| m.base <= start && end <= m.base.saturating_add(m.size));
        if !in_memory || (dtb < end && start < dtb + boot.dtb().len() as u64) {
            return Err(format!(
                "no room for a {} KiB buffer at {start:#x} (image ends at {:#x}, DTB at {dtb:#x})",
                size >> 10,
                boot.image_end()
            )
            .into());
        }
        let buffer = Buffer { start, end };
        buffer.fill();
        let expected = buffer.checksum();
        println!(
            "victim: buffer {start:#x}..{end:#x} ({} KiB), checksum {expected:#018x}; checking for {duration_ms} ms",
            size >> 10
        );

        let begin = now_ns();
        let mut passes: u64 = 0;
        let mut beat: u64 = 0;
        loop {
            beat += 1;
            let beat_end = begin.saturating_add(beat.saturating_mul(heartbeat_ms) * 1_000_000);
            // At least one pass per heartbeat, however slow the machine.
            loop {
                passes += 1;
                if buffer.checksum() != expected {
                    let (addr, value) = buffer.first_change().unwrap_or((0, 0));
                    return Err(format!(
                        "checksum changed in pass {passes} (heartbeat {beat}): word at {addr:#x} is {value:#018x}, was {:#018x}",
                        pattern(addr)
                    )
                    .into());
                }
                if now_ns() >= beat_end {
                    break;
                }
            }
            println!("victim: heartbeat {beat} checksum OK");
            if now_ns().saturating_sub(begin) >= duration_ms.saturating_mul(1_000_000) {
                break;
            }
        }
        println!("victim: {beat} heartbeats, {passes} passes over the buffer, nothing changed");
        Ok(())
    }
}

tandem_guest_rt::guest!(Victim);
