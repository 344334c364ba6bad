//! The AArch64 side of the hypervisor: entry code, exception vectors, system registers,
//! caches and TLBs, the EL2 MMU and calls into firmware.

pub mod cache;
pub mod entry;
pub mod mmu;
pub mod psci;
pub mod sysreg;
pub mod trap;

/// Stops this CPU for good: interrupts masked, waiting in WFI so an emulator or a real
/// core spends no cycles on it.
pub fn halt() -> ! {
    sysreg::mask_interrupts();
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Idles this CPU: WFI, forever. Used by CPUs that have no work (no guests run yet).
pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Points VBAR_EL2 at the hypervisor's vectors, so every exception is reported.
pub fn install_vectors() {
    use aarch64_cpu::registers::{Writeable, VBAR_EL2};
    VBAR_EL2.set(entry::el2_vectors as *const () as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The device tree blob firmware passed, bounded by its header's `totalsize`; `None`
/// when `addr` is null, misaligned or holds no DTB magic.
///
/// # Safety
/// `addr` must be the boot protocol's x0: memory that is readable at that address (MMU
/// off, or mapped) and stays unchanged for the life of the hypervisor.
pub unsafe fn firmware_blob(addr: u64) -> Option<&'static [u8]> {
    const HEADER: usize = 40;
    if addr == 0 || !addr.is_multiple_of(8) {
        return None;
    }
    let ptr = usize::try_from(addr).ok()? as *const u8;
    // SAFETY: the caller guarantees the memory at `addr` is readable; the header is the
    // first 40 bytes of any DTB.
    let header = unsafe { core::slice::from_raw_parts(ptr, HEADER) };
    let size = platform::blob_size(header)?;
    if !(HEADER..=(64 << 20)).contains(&size) {
        return None;
    }
    // SAFETY: the header says the blob is `size` bytes long; the caller guarantees the
    // blob is readable and unchanging.
    Some(unsafe { core::slice::from_raw_parts(ptr, size) })
}

/// Releases a CPU waiting on a spin-table: stores `entry` at `release_addr`, pushes it to
/// memory (the waiting CPU reads with its caches off) and wakes it with SEV.
pub fn release_spin_table(release_addr: u64, entry: u64) {
    let ptr = release_addr as usize as *mut u64;
    // SAFETY: the caller checked that `release_addr` is 8-byte aligned and mapped
    // read-write at EL2; it is the firmware-defined mailbox of a CPU, not hypervisor data.
    unsafe { ptr.write_volatile(entry) };
    cache::clean_to_poc(release_addr as usize, 8);
    aarch64_cpu::asm::sev();
}

/// Reads an address EL2 never maps (the top of the 48-bit space), for the abort self-test.
pub fn read_unmapped() {
    let addr = crate::mm::pagetable::VA_LIMIT - 0x1000;
    // SAFETY: the read faults before it returns anything; the vector reports it.
    let _ = unsafe { core::ptr::read_volatile(addr as usize as *const u64) };
}

/// Physical memory as bytes, for reading what a boot loader placed there (modules).
/// `None` unless the range lies inside one of `ram` (the DT's memory banks, which the
/// boot path maps at EL2 for good) and its ends are mapped.
pub fn physical_bytes(ram: &[platform::MemRange], base: u64, len: u64) -> Option<&'static [u8]> {
    let end = base.checked_add(len)?;
    let in_ram = ram
        .iter()
        .any(|b| b.base <= base && b.end().is_some_and(|e| end <= e));
    if len == 0 || !in_ram || mmu::translate(base).is_none() || mmu::translate(end - 1).is_none() {
        return None;
    }
    let addr = usize::try_from(base).ok()?;
    let len = usize::try_from(len).ok()?;
    // SAFETY: the range lies inside one memory bank, which the boot path maps at EL2
    // (VA == PA) for the hypervisor's whole life (both ends checked above); boot loaders'
    // modules there are only read.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}
