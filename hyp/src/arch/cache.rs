//! Data cache maintenance by address range (to the point of coherency).

use core::arch::asm;

/// The smallest data cache line of this CPU (CTR_EL0.DminLine).
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans `[start, start + len)` to the point of coherency, so a CPU or device reading
/// memory with caching off sees what this CPU wrote.
pub fn clean_to_poc(start: usize, len: usize) {
    let line = dcache_line();
    let mut addr = start & !(line - 1);
    let end = start + len;
    // Eight lines a turn while eight remain: a VM's images are tens of megabytes, and the
    // loop's own instructions would otherwise outnumber the cleans.
    while addr + 8 * line <= end {
        // SAFETY: cleaning lines writes back data without changing its contents.
        unsafe {
            asm!(
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                "dc cvac, {a}",
                "add {a}, {a}, {l}",
                a = inout(reg) addr,
                l = in(reg) line,
                options(nostack, preserves_flags)
            )
        };
    }
    while addr < end {
        // SAFETY: as above.
        unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Cleans and invalidates `[start, start + len)` to the point of coherency: what this CPU
/// wrote reaches memory, and its next read comes from memory, where a CPU running with
/// caching off (a guest with its MMU off) writes.
pub fn clean_invalidate_to_poc(start: usize, len: usize) {
    let line = dcache_line();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: clean and invalidate writes back dirty data first: nothing is lost.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Invalidates `[start, start + len)` to the point of coherency, dropping any line a
/// previous owner of the memory (firmware) left there.
///
/// # Safety
/// Data written through the cache and not yet cleaned in that range is lost: call it only
/// while the data cache is off for this memory, or on memory whose contents do not matter.
pub unsafe fn invalidate_to_poc(start: usize, len: usize) {
    let line = dcache_line();
    let mut addr = start & !(line - 1);
    while addr < start + len {
        // SAFETY: the caller guarantees that no wanted data is only in the cache.
        unsafe { asm!("dc ivac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
