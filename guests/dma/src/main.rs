//! DMA test guest: drives QEMU's `edu` PCI device to copy memory by DMA, to its own pages
//! and to addresses it is given, so a test can check what the SMMU lets a device reach.
//!
//! It finds the PCIe host bridge in its device tree (`pci-host-ecam-generic`: the ECAM
//! window from `reg`, the 32-bit memory window from `ranges`), enumerates the first bus,
//! places edu's BAR0 in the window, enables Memory Space and Bus Master, and checks the
//! device answers (identification, liveness). Then, each transfer one page (4096 bytes, the
//! size of edu's buffer) and each result on a line of its own:
//!
//! 1. own memory: a page of its RAM filled with pattern A goes into edu's buffer and back
//!    into another page: `dma: own memory round trip ok`;
//! 2. after `delay_ms=<n>` of guest time, if given (so that a neighbour the test watches
//!    has filled its memory first), each `write=<addr>`: edu's buffer, holding pattern A, is copied to `addr`:
//!    `dma: write to <addr> issued` (the guest cannot see the result; the test can);
//! 3. each `read=<addr>`: edu's buffer is loaded with pattern B, then `addr` is copied into
//!    it, and the buffer comes back into the guest's RAM:
//!    - `dma: read from <addr> blocked (buffer unchanged)`: still pattern B;
//!    - `dma: read from <addr> blocked (read as zeros)`: all zeros, which is what QEMU's
//!      DMA gets from an address the SMMU refuses (or where nothing is): the test must
//!      point `read=` at memory that holds something else;
//!    - `dma: read from <addr> got data (...)`: anything else, with pattern A named when
//!      that is what came (an earlier `write=` to the same address went through);
//! 4. the own memory round trip again (the device still works after faults), then
//!    `TEST PASS dma`, or with `expect=blocked` on the command line and a read that got
//!    data, `TEST FAIL dma: read from <addr> was not blocked`.
//!
//! QEMU needs `-device edu,dma_mask=0xffffffffffffffff`: edu's default mask keeps 28
//! address bits, and the first round trip then fails.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod edu;
mod pci;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;

use tandem_guest_rt::{args, println, Boot, Failure, Guest};

use edu::{Direction, Edu};
use pci::{Ecam, HostBridge};

/// Guest time a transfer may take; QEMU's edu takes 100 ms of virtual time.
const DMA_TIMEOUT_MS: u64 = 5_000;
/// 64-bit words in a page.
const PAGE_WORDS: usize = (edu::BUFFER_SIZE / 8) as usize;
/// Written to the liveness register; it must read back inverted.
const LIVENESS_PROBE: u32 = 0x5a5a_0ff0;

/// What a page is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// What the guest's own round trips and its `write=` transfers carry.
    A,
    /// What edu's buffer holds before a `read=` transfer.
    B,
    /// What a page holds before the device writes into it, to tell a transfer that did not
    /// land.
    Poison,
}

impl Pattern {
    /// Word `index` of the pattern: splitmix64 of the index and a seed per pattern, never 0
    /// in practice and different in every word.
    fn word(self, index: usize) -> u64 {
        let seed: u64 = match self {
            Pattern::A => 0xa,
            Pattern::B => 0xb,
            Pattern::Poison => 0xdead,
        };
        let mut x = (seed << 32 | index as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
}

/// A page of the guest's memory that the device reads and writes: it changes behind the
/// compiler's back, so it is only reached through raw pointers, with volatile accesses.
#[repr(C, align(4096))]
struct DmaPage(UnsafeCell<[u64; PAGE_WORDS]>);

// SAFETY: only the boot vCPU runs this guest; the contents are only reached through
// volatile accesses to raw pointers (by the CPU) and by the device.
unsafe impl Sync for DmaPage {}

/// The page the device reads from.
static SOURCE: DmaPage = DmaPage(UnsafeCell::new([0; PAGE_WORDS]));
/// The page the device writes into.
static TARGET: DmaPage = DmaPage(UnsafeCell::new([0; PAGE_WORDS]));

impl DmaPage {
    /// The bus address of the page: the MMU is off, so its address as this guest sees it.
    fn address(&self) -> u64 {
        self.0.get() as u64
    }

    fn word(&self, index: usize) -> u64 {
        let index = index.min(PAGE_WORDS - 1);
        // SAFETY: `index` is inside the page, an aligned array of words that no Rust
        // reference covers.
        unsafe { self.0.get().cast::<u64>().add(index).read_volatile() }
    }

    fn fill(&self, pattern: Pattern) {
        for index in 0..PAGE_WORDS {
            // SAFETY: as in `word`.
            unsafe {
                self.0
                    .get()
                    .cast::<u64>()
                    .add(index)
                    .write_volatile(pattern.word(index))
            };
        }
    }

    /// The first word that is not `pattern`'s, as (index, value).
    fn first_difference(&self, pattern: Pattern) -> Option<(usize, u64)> {
        (0..PAGE_WORDS)
            .map(|index| (index, self.word(index)))
            .find(|&(index, value)| value != pattern.word(index))
    }

    fn holds(&self, pattern: Pattern) -> bool {
        self.first_difference(pattern).is_none()
    }

    fn is_zero(&self) -> bool {
        (0..PAGE_WORDS).all(|index| self.word(index) == 0)
    }
}

/// What the command line asks for.
struct Plan {
    writes: Vec<u64>,
    reads: Vec<u64>,
    expect_blocked: bool,
    delay_ms: u64,
}

impl Plan {
    fn parse(bootargs: &str) -> Result<Plan, Failure> {
        let mut plan = Plan {
            writes: Vec::new(),
            reads: Vec::new(),
            expect_blocked: false,
            delay_ms: 0,
        };
        for word in bootargs.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let list = match key {
                "write" => &mut plan.writes,
                "read" => &mut plan.reads,
                "expect" if value == "blocked" => {
                    plan.expect_blocked = true;
                    continue;
                }
                "delay_ms" => {
                    plan.delay_ms = args::parse_u64(value)
                        .ok_or_else(|| format!("bad {word}: want milliseconds such as 500"))?;
                    continue;
                }
                "expect" => {
                    return Err(
                        format!("bad expect={value}: the only expectation is blocked").into(),
                    )
                }
                _ => continue,
            };
            let address = args::parse_u64(value)
                .ok_or_else(|| format!("bad {word}: want an address such as 0x40000000"))?;
            list.push(address);
        }
        Ok(plan)
    }
}

/// What a `read=` transfer brought back.
enum ReadResult {
    Unchanged,
    Zeros,
    Data(String),
}

/// The guest's side of the transfers: edu, and the two pages above.
struct Dma {
    edu: Edu,
}

impl Dma {
    fn transfer(
        &mut self,
        direction: Direction,
        source: u64,
        destination: u64,
    ) -> Result<(), Failure> {
        self.edu
            .transfer(
                direction,
                source,
                destination,
                edu::BUFFER_SIZE,
                DMA_TIMEOUT_MS,
            )
            .map_err(|e| format!("edu: {e}").into())
    }

    /// Fills the source page with `pattern` and copies it into edu's buffer.
    fn load_buffer(&mut self, pattern: Pattern) -> Result<(), Failure> {
        SOURCE.fill(pattern);
        self.transfer(Direction::IntoBuffer, SOURCE.address(), edu::BUFFER)
    }

    /// Copies edu's buffer into the target page (poisoned first); fails if nothing came.
    fn unload_buffer(&mut self) -> Result<(), Failure> {
        TARGET.fill(Pattern::Poison);
        self.transfer(Direction::OutOfBuffer, edu::BUFFER, TARGET.address())?;
        if TARGET.holds(Pattern::Poison) {
            return Err(format!(
                "edu's buffer never reached {:#x} (the page is as it was before the transfer): \
                 is QEMU's edu started with dma_mask=0xffffffffffffffff?",
                TARGET.address()
            )
            .into());
        }
        Ok(())
    }

    /// Pattern A from one page of the guest's memory through edu's buffer into another.
    fn round_trip(&mut self) -> Result<(), Failure> {
        self.load_buffer(Pattern::A)?;
        self.unload_buffer()?;
        match TARGET.first_difference(Pattern::A) {
            None => Ok(()),
            Some((index, value)) => Err(format!(
                "word {index} came back as {value:#018x}, sent {:#018x}",
                Pattern::A.word(index)
            )
            .into()),
        }
    }

    /// Copies edu's buffer, holding pattern A, to `address`.
    fn write_to(&mut self, address: u64) -> Result<(), Failure> {
        self.load_buffer(Pattern::A)?;
        self.transfer(Direction::OutOfBuffer, edu::BUFFER, address)
    }

    /// Copies `address` into edu's buffer, holding pattern B, and says what came.
    fn read_from(&mut self, address: u64) -> Result<ReadResult, Failure> {
        self.load_buffer(Pattern::B)?;
        self.transfer(Direction::IntoBuffer, address, edu::BUFFER)?;
        self.unload_buffer()?;
        Ok(if TARGET.holds(Pattern::B) {
            ReadResult::Unchanged
        } else if TARGET.is_zero() {
            ReadResult::Zeros
        } else if TARGET.holds(Pattern::A) {
            ReadResult::Data("pattern A".into())
        } else {
            ReadResult::Data(format!(
                "first words {:#018x} {:#018x}",
                TARGET.word(0),
                TARGET.word(1)
            ))
        })
    }
}

/// Finds edu on the host bridge's first bus, places its BAR0 and checks it answers.
fn find_edu(bridge: &HostBridge) -> Result<Edu, Failure> {
    // SAFETY: the device tree says the ECAM window is at `ecam_base`; with the MMU off it
    // is Device memory, and nothing else in this guest touches it.
    let mut ecam = unsafe { Ecam::new(bridge) };
    let bus = bridge.first_bus;
    let functions = ecam.scan(bus);
    for f in &functions {
        println!(
            "dma: pci {} {:04x}:{:04x} class {:06x}",
            f.bdf, f.vendor, f.device, f.class
        );
    }
    let found = functions
        .iter()
        .find(|f| f.vendor == edu::VENDOR && f.device == edu::DEVICE)
        .ok_or_else(|| format!("no edu device on bus {bus}"))?;
    let bar = ecam
        .assign_bar0(found.bdf, &bridge.mem32)
        .map_err(|e| format!("edu {}: cannot place BAR0: {e}", found.bdf))?;
    println!(
        "dma: edu at {}, BAR0 {:#x} ({} KiB) at PCI {:#x}, command {:#06x}",
        found.bdf,
        bar.cpu_address,
        bar.size >> 10,
        bar.pci_address,
        ecam.command(found.bdf)
    );
    // SAFETY: `assign_bar0` just placed edu's BAR0 at `cpu_address` and enabled Memory
    // Space; the window is Device memory with the MMU off, and only this `Edu` accesses it.
    let mut edu = unsafe { Edu::new(bar.cpu_address) }
        .ok_or_else(|| format!("BAR0 at {:#x} is not an address", bar.cpu_address))?;
    let identification = edu.identify().map_err(|e| format!("edu: {e}"))?;
    edu.check_liveness(LIVENESS_PROBE)
        .map_err(|e| format!("edu: {e}"))?;
    println!("dma: edu identification {identification:#010x}, liveness ok");
    Ok(edu)
}

struct DmaGuest;

impl Guest for DmaGuest {
    const NAME: &'static str = "dma";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let plan = Plan::parse(board.bootargs.as_deref().unwrap_or_default())?;
        let fdt = fdt::Fdt::new(boot.dtb()).map_err(|e| format!("bad DTB: {e:?}"))?;
        let bridge = HostBridge::from_dt(&fdt).map_err(|e| format!("{e}"))?;
        println!(
            "dma: ECAM {:#x}..{:#x} (buses {}..={}), 32-bit window {:#x}..{:#x} at PCI {:#x}",
            bridge.ecam_base,
            bridge.ecam_base + bridge.ecam_size,
            bridge.first_bus,
            bridge.last_bus,
            bridge.mem32.cpu_base,
            bridge.mem32.cpu_base + bridge.mem32.size,
            bridge.mem32.pci_base
        );
        let mut dma = Dma {
            edu: find_edu(&bridge)?,
        };
        println!(
            "dma: own pages {:#x} (source) and {:#x} (target)",
            SOURCE.address(),
            TARGET.address()
        );

        dma.round_trip()
            .map_err(|e| format!("own memory round trip failed: {e}"))?;
        println!("dma: own memory round trip ok");
        if plan.delay_ms > 0 {
            tandem_guest_rt::time::wait_until(plan.delay_ms, || false);
        }

        for &address in &plan.writes {
            dma.write_to(address)
                .map_err(|e| format!("write to {address:#x}: {e}"))?;
            println!("dma: write to {address:#x} issued");
        }

        let mut not_blocked = None;
        for &address in &plan.reads {
            let result = dma
                .read_from(address)
                .map_err(|e| format!("read from {address:#x}: {e}"))?;
            match result {
                ReadResult::Unchanged => {
                    println!("dma: read from {address:#x} blocked (buffer unchanged)")
                }
                ReadResult::Zeros => {
                    println!("dma: read from {address:#x} blocked (read as zeros)")
                }
                ReadResult::Data(what) => {
                    println!("dma: read from {address:#x} got data ({what})");
                    not_blocked.get_or_insert(address);
                }
            }
        }

        dma.round_trip()
            .map_err(|e| format!("own memory round trip failed after the experiments: {e}"))?;
        println!("dma: own memory round trip ok (after the experiments)");

        match not_blocked {
            Some(address) if plan.expect_blocked => {
                Err(format!("read from {address:#x} was not blocked").into())
            }
            _ => Ok(()),
        }
    }
}

tandem_guest_rt::guest!(DmaGuest);
