//! The AArch64 side of the hypervisor: entry code, exception vectors, system registers,
//! caches and TLBs, the EL2 MMU and calls into firmware.

pub mod cache;
pub mod entry;
pub mod gic;
pub mod mmu;
pub mod psci;
pub mod sha256;
pub mod sysreg;
pub mod trap;
pub mod vcpu;

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

/// Whether every page of `[dst, dst + len)` is RAM that EL2 maps read-write and that is
/// not part of the hypervisor's image: the only memory a guest's images may be written to.
fn guest_writable(dst: u64, len: u64) -> bool {
    let Some(end) = dst.checked_add(len) else {
        return false;
    };
    let image = mmu::image_layout().image;
    if dst < image.end && image.start < end {
        return false;
    }
    let mut page = dst & !0xfff;
    while page < end {
        if mmu::translate(page) != Some(crate::mm::pagetable::Attrs::ReadWrite) {
            return false;
        }
        page += 0x1000;
    }
    true
}

/// Copies `data` to physical `dst` (a guest's memory, VA == PA at EL2). Refused (false)
/// unless the whole range is RAM mapped read-write outside the hypervisor's image.
pub fn write_physical(dst: u64, data: &[u8]) -> bool {
    if !guest_writable(dst, data.len() as u64) {
        return false;
    }
    // SAFETY: the range is mapped read-write RAM outside the hypervisor's image (checked
    // above), so no Rust object of ours lives there; `data` is elsewhere (a module).
    unsafe { copy_bulk(dst as usize as *mut u8, data.as_ptr(), data.len()) };
    true
}

/// [`write_physical`] for a VM's images while the VM is being loaded, at start-up or on one
/// of its own CPUs when it restarts: copies with the SIMD registers, 128 bytes a turn, the
/// bulk of start-up otherwise (Linux's 37 MB at 12 instructions per 64 bytes is 13 ms of
/// guest time). Never while another guest's state is live on this CPU: the registers are
/// saved and restored, but writing them zeroes the upper bits of SVE registers.
pub fn write_physical_image(dst: u64, data: &[u8]) -> bool {
    if !guest_writable(dst, data.len() as u64) {
        return false;
    }
    let blocks = if (dst as usize | data.as_ptr() as usize).is_multiple_of(16) {
        data.len() / 128
    } else {
        0
    };
    if blocks > 0 {
        let mut saved = [0u8; 128];
        with_simd(|| {
            // SAFETY: the range is mapped read-write RAM outside the hypervisor's image
            // (checked above); the loop reads and writes the first `blocks * 128` bytes of
            // `data` and of `dst`, and q0-q7 are saved to `saved` first and restored last.
            unsafe {
                core::arch::asm!(
                    ".arch_extension fp",
                    ".arch_extension simd",
                    "stp q0, q1, [{save}]",
                    "stp q2, q3, [{save}, #32]",
                    "stp q4, q5, [{save}, #64]",
                    "stp q6, q7, [{save}, #96]",
                    "2:",
                    "ldp q0, q1, [{src}]",
                    "ldp q2, q3, [{src}, #32]",
                    "ldp q4, q5, [{src}, #64]",
                    "ldp q6, q7, [{src}, #96]",
                    "stp q0, q1, [{dst}]",
                    "stp q2, q3, [{dst}, #32]",
                    "stp q4, q5, [{dst}, #64]",
                    "stp q6, q7, [{dst}, #96]",
                    "add {src}, {src}, #128",
                    "add {dst}, {dst}, #128",
                    "subs {n}, {n}, #1",
                    "b.ne 2b",
                    "ldp q0, q1, [{save}]",
                    "ldp q2, q3, [{save}, #32]",
                    "ldp q4, q5, [{save}, #64]",
                    "ldp q6, q7, [{save}, #96]",
                    src = inout(reg) data.as_ptr() => _,
                    dst = inout(reg) dst => _,
                    n = inout(reg) blocks => _,
                    save = in(reg) saved.as_mut_ptr(),
                    options(nostack)
                );
            }
        });
    }
    let done = blocks * 128;
    write_physical(dst + done as u64, &data[done..])
}

/// CPTR_EL2.TFP (bit 10): SIMD and floating-point instructions trap, at EL2 too.
const CPTR_TFP: u64 = 1 << 10;

/// Runs `f`, which uses SIMD instructions at EL2, with them untrapped whatever firmware
/// left in CPTR_EL2 (put back after).
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    let cptr: u64;
    // SAFETY: reading CPTR_EL2 has no effect.
    unsafe {
        core::arch::asm!("mrs {}, cptr_el2", out(reg) cptr, options(nomem, nostack, preserves_flags))
    };
    let trapped = cptr & CPTR_TFP != 0;
    if trapped {
        // SAFETY: only stops SIMD instructions from trapping; put back below.
        unsafe {
            core::arch::asm!("msr cptr_el2, {}", "isb", in(reg) cptr & !CPTR_TFP, options(nostack, preserves_flags))
        };
    }
    let result = f();
    if trapped {
        // SAFETY: puts back what was there.
        unsafe {
            core::arch::asm!("msr cptr_el2, {}", "isb", in(reg) cptr, options(nostack, preserves_flags))
        };
    }
    result
}

/// Bytes one iteration of [`copy_bulk`]'s loop moves.
const COPY_BLOCK: usize = 64;

/// Copies `len` bytes from `src` to `dst`, 64 bytes per loop iteration with load and store
/// pairs where both are 16-byte aligned; the rest with `memcpy`. The target has no
/// FP/SIMD registers, so the compiler's `memcpy` moves 8 bytes per iteration: a guest's
/// 37 MB of images took 18 M instructions at every boot, and this loop takes a third.
///
/// # Safety
/// As for `core::ptr::copy_nonoverlapping`.
unsafe fn copy_bulk(dst: *mut u8, src: *const u8, len: usize) {
    let aligned = (dst as usize | src as usize).is_multiple_of(16);
    let blocks = if aligned { len / COPY_BLOCK } else { 0 };
    if blocks > 0 {
        // SAFETY: the caller vouches for `[src, src + len)` and `[dst, dst + len)`;
        // the loop touches the first `blocks * 64` bytes of each.
        unsafe {
            core::arch::asm!(
                // Four load pairs, four store pairs: 64 bytes a turn.
                "2:",
                "ldp {a}, {b}, [{src}]",
                "ldp {c}, {d}, [{src}, #16]",
                "stp {a}, {b}, [{dst}]",
                "stp {c}, {d}, [{dst}, #16]",
                "ldp {a}, {b}, [{src}, #32]",
                "ldp {c}, {d}, [{src}, #48]",
                "stp {a}, {b}, [{dst}, #32]",
                "stp {c}, {d}, [{dst}, #48]",
                "add {src}, {src}, #64",
                "add {dst}, {dst}, #64",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                src = inout(reg) src => _,
                dst = inout(reg) dst => _,
                n = inout(reg) blocks => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack)
            );
        }
    }
    let done = blocks * COPY_BLOCK;
    // SAFETY: the rest of the same ranges.
    unsafe { core::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
}

/// Zeroes `len` bytes at `dst` with `DC ZVA` (one instruction per block, usually 64
/// bytes) where the CPU allows it, and `memset` around it: a restarting 1 GiB VM's memory
/// costs 16 M instructions instead of 400 M.
///
/// # Safety
/// `[dst, dst + len)` must be Normal memory this CPU may write.
unsafe fn zero_bulk(dst: *mut u8, len: usize) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack, preserves_flags))
    };
    // DZP (bit 4) prohibits DC ZVA; BS (bits 3:0) is log2 of the block in 4-byte words.
    let block = 4usize << (dczid & 0xf);
    let start = dst as usize;
    let first = start.next_multiple_of(block);
    let last = (start + len) & !(block - 1);
    if dczid & 0x10 != 0 || first >= last {
        // SAFETY: as the caller promises.
        unsafe { core::ptr::write_bytes(dst, 0, len) };
        return;
    }
    // SAFETY: `[start, first)`, `[first, last)` and `[last, start + len)` split the range.
    unsafe {
        core::ptr::write_bytes(dst, 0, first - start);
        let mut at = first;
        while at < last {
            core::arch::asm!("dc zva, {}", in(reg) at, options(nostack, preserves_flags));
            at += block;
        }
        core::ptr::write_bytes(last as *mut u8, 0, start + len - last);
    }
}

/// Fills physical `[dst, dst + len)` with zeros, under the same rule as `write_physical`.
pub fn zero_physical(dst: u64, len: u64) -> bool {
    let (true, Ok(n)) = (guest_writable(dst, len), usize::try_from(len)) else {
        return false;
    };
    // SAFETY: as for `write_physical`: mapped read-write Normal memory (RAM).
    unsafe { zero_bulk(dst as usize as *mut u8, n) };
    true
}

/// The top of the stack slot this CPU runs on (slots are aligned to their size).
pub fn current_stack_top() -> u64 {
    let sp: u64;
    // SAFETY: reading SP has no side effects.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    let slot = entry::STACK_SLOT as u64;
    (sp & !(slot - 1)) + slot
}

/// Powers the machine off through firmware PSCI; if that returns (no PSCI, as on the
/// Raspberry Pi), this CPU stops.
pub fn system_off() -> ! {
    psci::call(psci::SYSTEM_OFF, 0, 0, 0);
    halt()
}
