//! The EL2 stage-1 MMU: the image mapped W^X, stacks with guard pages, RAM and device
//! pages identity-mapped, and the registers that turn it all on.

use core::arch::asm;

use aarch64_cpu::registers::{Writeable, HCR_EL2, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2};
use spin::Mutex;

use super::entry::{
    Reserved, HEAP, HEAP_SIZE, PAGETABLES, PAGETABLE_POOL, STACKS, STACK_SIZE, STACK_SLOT,
};
use super::sysreg;
use crate::mm::pagetable::{Attrs, IdMap, MapError, Table, MAIR_VALUE, PAGE_SIZE};
use crate::mm::Region;

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __stacks_start: u8;
    static __image_end: u8;
}

/// Where the linker put each part of the image, at the address it was loaded.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub image: Region,
    pub text: Region,
    pub rodata: Region,
    /// .data, .bss and the table pool.
    pub data: Region,
    pub stacks: Region,
    pub heap: Region,
}

/// The image's layout, from the linker script's symbols.
pub fn image_layout() -> ImageLayout {
    // Taking the address of a linker symbol reads nothing.
    let start = (&raw const __image_start) as u64;
    let text_end = (&raw const __text_end) as u64;
    let rodata_end = (&raw const __rodata_end) as u64;
    let stacks = (&raw const __stacks_start) as u64;
    let heap = HEAP.addr();
    let end = (&raw const __image_end) as u64;
    ImageLayout {
        image: Region::new(start, end),
        text: Region::new(start, text_end),
        rodata: Region::new(text_end, rodata_end),
        data: Region::new(rodata_end, stacks),
        stacks: Region::new(stacks, heap),
        heap: Region::new(heap, heap + HEAP_SIZE as u64),
    }
}

/// The EL2 mapping, kept for pages mapped after boot (device registers).
static EL2_MAP: Mutex<Option<IdMap<'static>>> = Mutex::new(None);

/// MMU settings, also handed to secondary CPUs.
#[derive(Clone, Copy, Debug)]
pub struct MmuConfig {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr: u64,
    pub sctlr: u64,
    pub hcr: u64,
}

/// SCTLR_EL2 bits that are RES1 when HCR_EL2.E2H is 0 (Arm ARM D24.2.156).
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// TCR_EL2 bits that are RES1 when HCR_EL2.E2H is 0.
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);

fn config(root: u64) -> MmuConfig {
    // 48-bit VA from TTBR0_EL2 (4 levels), walks cacheable and inner shareable, PA size
    // as the CPU reports it, capped at 48 bits (the tables hold no more).
    let ps = sysreg::pa_range().min(0b101);
    let tcr = TCR_EL2_RES1 | 16 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (ps << 16);
    let sctlr = SCTLR_EL2_RES1
        | (1 << 0) // M: MMU on
        | (1 << 2) // C: data cache
        | (1 << 3) // SA: SP alignment check
        | (1 << 12) // I: instruction cache
        | (1 << 19); // WXN: writable pages are never executable
    MmuConfig {
        mair: MAIR_VALUE,
        tcr,
        ttbr: root,
        sctlr,
        // RW: EL1 is AArch64. E2H and TGE clear: the non-VHE EL2 regime these tables are for.
        hcr: 1 << 31,
    }
}

/// Something went wrong building the boot mapping.
#[derive(Debug)]
pub struct BootMapError {
    pub what: &'static str,
    pub error: MapError,
}

/// Builds the boot mapping: the image W^X with guard pages below every stack, the DTB
/// read-only, and the console's page as device memory. Runs once, on the boot CPU, with
/// the MMU off.
pub fn build_boot_map(
    layout: &ImageLayout,
    dtb: Region,
    uart_page: Option<u64>,
) -> Result<MmuConfig, BootMapError> {
    let pool: &'static mut [Table; PAGETABLE_POOL] = take_pool();
    let pool_base = PAGETABLES.addr();
    let err = |what| move |error| BootMapError { what, error };
    let mut map = IdMap::new(pool, pool_base).map_err(err("page table pool"))?;
    map.map(layout.text.start, layout.text.len(), Attrs::Text)
        .map_err(err("image text"))?;
    map.map(layout.rodata.start, layout.rodata.len(), Attrs::ReadOnly)
        .map_err(err("image rodata"))?;
    map.map(layout.data.start, layout.data.len(), Attrs::ReadWrite)
        .map_err(err("image data"))?;
    let mut slot = layout.stacks.start;
    while slot + STACK_SLOT as u64 <= layout.stacks.end {
        // The lower half of every slot stays unmapped: an overflow faults there.
        map.map(
            slot + STACK_SIZE as u64,
            STACK_SIZE as u64,
            Attrs::ReadWrite,
        )
        .map_err(err("stack"))?;
        slot += STACK_SLOT as u64;
    }
    map.map(layout.heap.start, layout.heap.len(), Attrs::ReadWrite)
        .map_err(err("heap"))?;
    let dtb = dtb.page_aligned();
    map.map(dtb.start, dtb.len(), Attrs::ReadOnly)
        .map_err(err("device tree"))?;
    if let Some(page) = uart_page {
        let page = page & !(PAGE_SIZE - 1);
        if map.translate(page).is_none() {
            map.map(page, PAGE_SIZE, Attrs::Device)
                .map_err(err("console UART"))?;
        }
    }
    let config = config(map.root_address());
    *EL2_MAP.lock() = Some(map);
    Ok(config)
}

fn take_pool() -> &'static mut [Table; PAGETABLE_POOL] {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed) {
        crate::console::emergency(format_args!("tandem: the EL2 table pool was taken twice"));
        super::halt();
    }
    // SAFETY: the pool is handed out once (checked above); nothing else refers to it.
    unsafe { &mut *Reserved::get(&PAGETABLES) }
}

/// Maps more identity pages after the MMU is on, for regions that do not overlap anything
/// mapped already (use `mm::pagetable::subtract` to map around what is).
pub fn map(start: u64, len: u64, attrs: Attrs) -> Result<(), MapError> {
    let mut guard = EL2_MAP.lock();
    let map = guard.as_mut().ok_or(MapError::OutOfTables)?;
    map.map(start, len, attrs)?;
    // SAFETY: barriers and a TLB invalidation of EL2 entries do not affect memory safety;
    // they make the new descriptors visible to every CPU's table walks.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi alle2is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
    Ok(())
}

/// Whether an address is mapped at EL2, and how.
pub fn translate(addr: u64) -> Option<Attrs> {
    EL2_MAP
        .lock()
        .as_ref()
        .and_then(|m| m.translate(addr))
        .map(|(_, a)| a)
}

/// Tables used so far.
pub fn tables_used() -> usize {
    EL2_MAP.lock().as_ref().map_or(0, |m| m.tables_used())
}

/// Turns the MMU and caches on for this CPU with `config`.
///
/// # Safety
/// Must run with the MMU off, and `config`'s tables must map, with VA == PA, the code
/// being executed, the current stack and every static the caller touches afterwards.
/// Memory written with the MMU off must be invalidated in the data cache first.
pub unsafe fn enable(config: &MmuConfig) {
    HCR_EL2.set(config.hcr);
    MAIR_EL2.set(config.mair);
    TCR_EL2.set(config.tcr);
    TTBR0_EL2.set(config.ttbr);
    // SAFETY: the caller guarantees the tables map everything used from here on; stale
    // TLB and instruction cache entries from firmware are dropped first.
    unsafe {
        asm!(
            "isb",
            "tlbi alle2",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
    SCTLR_EL2.set(config.sctlr);
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// The stack region (without its guard) of CPU `index`, for reports.
pub fn stack_of(index: usize) -> Region {
    let base = STACKS.addr() + ((index * STACK_SLOT) as u64);
    Region::new(base + STACK_SIZE as u64, base + STACK_SLOT as u64)
}
