//! The hardware side of running a vCPU: EL2 registers that put this CPU in a VM's
//! context, the EL1 state a VM starts from, stage-2 table memory, entering the guest and
//! injecting exceptions into it.
//!
//! A vCPU owns its physical CPU for good (static partitioning), so the guest's EL1 system
//! registers stay live in the CPU across traps and are never saved: only the general-purpose
//! registers pass through the trap frame.

use core::alloc::Layout;
use core::arch::asm;

use aarch64_cpu::registers::{
    Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, CNTV_CTL_EL0, ESR_EL1, FAR_EL1, HCR_EL2,
    MIDR_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use stage2::{PhysAddr, TableAllocator, ENTRIES_PER_TABLE, PAGE_SIZE};

use super::entry::HEAP;
use super::trap::TrapFrame;

/// HCR_EL2 while a guest runs (Arm ARM D24.2.48). Each bit, and why:
/// - VM (0): stage-2 translation on: the VM sees only its memory.
/// - SWIO (1): set/way invalidation by the guest acts as clean+invalidate.
/// - FMO, IMO, AMO (3, 4, 5): physical FIQ, IRQ and SError go to EL2, never to the guest.
/// - FB (9): TLB and I-cache maintenance by the guest is broadcast in the inner shareable
///   domain, since its vCPUs are on different physical CPUs.
/// - BSU = inner shareable (10): barriers are upgraded to inner shareable for the same reason.
/// - TWI (13) and TWE (14) clear: WFI and WFE stay in the guest. Each vCPU owns its
///   physical CPU, so there is nobody to give an idle CPU to; WFI waits in hardware and
///   wakes for a virtual interrupt in a list register or a physical one (taken to EL2: a
///   kick, a timer, a device), as under Xen with `vwfi=native`, Bao or Jailhouse. A
///   trapped WFI would add a round trip to every wake-up.
/// - TSC (19): SMC traps: guests get PSCI from the hypervisor, never firmware directly.
/// - TSW (22): data cache maintenance by set/way traps: on a shared cache it could discard
///   other VMs' or the hypervisor's dirty lines. It is answered without effect.
/// - TIDCP (20): implementation-defined system registers trap (and are refused).
/// - RW (31): EL1 is AArch64.
/// - APK, API (40, 41): pointer authentication keys and instructions do not trap: each
///   vCPU owns its CPU, so its keys stay in the CPU like the rest of its EL1 state.
pub const HCR_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 19)
    | (1 << 20)
    | (1 << 22)
    | (1 << 31)
    | (1 << 40)
    | (1 << 41);

/// SCTLR_EL1 at VM start: MMU and caches off, RES1 bits set (Arm ARM D24.2.155).
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// PSTATE a vCPU starts with: EL1h, D, A, I and F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Stage-2 tables come from the EL2 heap (part of the image, never given to a guest).
pub struct El2Tables;

impl El2Tables {
    fn layout(pages: usize) -> Option<Layout> {
        let bytes = pages.checked_mul(PAGE_SIZE as usize)?;
        Layout::from_size_align(bytes, bytes).ok()
    }

    /// Whether `table` is a whole table inside the heap (where every table comes from).
    fn in_heap(table: u64) -> bool {
        let start = HEAP.addr();
        let end = start + super::entry::HEAP_SIZE as u64;
        table >= start && table.saturating_add(PAGE_SIZE) <= end && table.is_multiple_of(PAGE_SIZE)
    }
}

impl TableAllocator for El2Tables {
    fn allocate(&mut self, pages: usize) -> Option<PhysAddr> {
        let layout = Self::layout(pages).filter(|l| l.size() > 0)?;
        // SAFETY: the layout has a non-zero size (filtered above).
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(PhysAddr(ptr as u64))
    }

    fn free(&mut self, table: PhysAddr, pages: usize) {
        if let (Some(layout), true) = (Self::layout(pages), Self::in_heap(table.0)) {
            // SAFETY: `table` came from `allocate` with the same page count (the stage2
            // crate's contract), and no walk reaches it any more.
            unsafe { alloc::alloc::dealloc(table.0 as usize as *mut u8, layout) };
        }
    }

    fn read(&self, table: PhysAddr, index: usize) -> u64 {
        if index >= ENTRIES_PER_TABLE || !Self::in_heap(table.0) {
            return 0;
        }
        let ptr = (table.0 as usize as *const u64).wrapping_add(index);
        // SAFETY: the table lies inside the heap, which EL2 maps read-write, and `index` is
        // within its 512 entries.
        unsafe { ptr.read_volatile() }
    }

    fn write(&mut self, table: PhysAddr, index: usize, descriptor: u64) {
        if index >= ENTRIES_PER_TABLE || !Self::in_heap(table.0) {
            return;
        }
        let ptr = (table.0 as usize as *mut u64).wrapping_add(index);
        // SAFETY: as for `read`; the barrier orders earlier table writes before this
        // descriptor becomes visible to the walker, and the store is a single 64-bit store.
        unsafe {
            asm!("dmb ishst", options(nostack, preserves_flags));
            ptr.write_volatile(descriptor);
        }
    }
}

/// Puts this CPU in the VM's context: stage-2 tables, VMID, the vCPU's MPIDR, traps,
/// timers. Then drops every TLB entry of the VMID (it may have been used before).
pub fn load_vm_context(vtcr: u64, vttbr: u64, vcpu: usize, cntvoff: u64) {
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    // MPIDR_EL1 as the guest reads it: bit 31 RES1, Aff0 = the vCPU index.
    VMPIDR_EL2.set((1 << 31) | (vcpu as u64 & 0xff));
    // VPIDR_EL2 (not in aarch64-cpu): the MIDR_EL1 the guest reads, the real one.
    let midr = MIDR_EL1.get();
    // SAFETY: VPIDR_EL2 only changes what the guest reads as MIDR_EL1.
    unsafe { asm!("msr vpidr_el2, {}", in(reg) midr, options(nostack, preserves_flags)) };
    // The VM's virtual counter counts from its own start (CNTVCT = CNTPCT - CNTVOFF).
    CNTVOFF_EL2.set(cntvoff);
    // EL1PCTEN set: the guest reads the physical counter directly. EL1PCEN clear: its
    // physical timer registers trap, and the hypervisor emulates that timer on the EL2
    // one (guest::ptimer). The event stream bits are kept.
    CNTHCTL_EL2.set((CNTHCTL_EL2.get() | 0b01) & !0b10);
    HCR_EL2.set(HCR_GUEST);
    untrap_fp_and_vectors();
    // SAFETY: invalidating this VMID's stage-1 and stage-2 TLB entries and the barriers
    // around it affect only translations of the VM being loaded.
    unsafe {
        asm!(
            "isb",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Resets the guest's EL1 state to what the arm64 boot protocol promises: MMU and caches
/// off, nothing left over from a previous run of the VM.
pub fn reset_el1() {
    SCTLR_EL1.set(SCTLR_EL1_RESET);
    // SAFETY: these are EL1 registers of the guest that owns this CPU; no EL2 state depends
    // on them.
    unsafe {
        asm!(
            "msr ttbr0_el1, xzr",
            "msr ttbr1_el1, xzr",
            "msr tcr_el1, xzr",
            "msr mair_el1, xzr",
            "msr vbar_el1, xzr",
            "msr contextidr_el1, xzr",
            "msr tpidr_el0, xzr",
            "msr tpidr_el1, xzr",
            "msr tpidrro_el0, xzr",
            "msr sp_el0, xzr",
            "msr sp_el1, xzr",
            "msr elr_el1, xzr",
            "msr spsr_el1, xzr",
            "msr esr_el1, xzr",
            "msr far_el1, xzr",
            "msr cpacr_el1, xzr",
            "msr cntkctl_el1, xzr",
            "msr cntv_ctl_el0, xzr",
            "msr cntp_ctl_el0, xzr",
            "msr mdscr_el1, xzr",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// CPTR_EL2 with nothing trapped (HCR_EL2.E2H = 0 layout): only the RES1 bits [7:0], 9
/// and 13 set; TZ (8, SVE), TFP (10, FP/SIMD), TSM (12, SME), TTA (20), TAM (30) and
/// TCPAC (31) clear. The guest owns its CPU's FP, SVE and SME state for good.
const CPTR_EL2_NO_TRAPS: u64 = 0x22ff;

/// Lets the guest use FP/SIMD, SVE and SME without trapping, whatever firmware left in
/// CPTR_EL2 (U-Boot leaves SVE and SME trapped, and Linux then takes an undefined
/// instruction reading ZCR_EL1), and the longest SVE vector length the CPU has.
fn untrap_fp_and_vectors() {
    // SAFETY: CPTR_EL2 only decides which EL0/EL1 instructions trap to EL2; the
    // hypervisor itself is built soft-float and uses none of them.
    unsafe {
        asm!("msr cptr_el2, {}", "isb", in(reg) CPTR_EL2_NO_TRAPS, options(nostack, preserves_flags))
    };
    let pfr0: u64;
    // SAFETY: reading an ID register has no effect.
    unsafe {
        asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack, preserves_flags))
    };
    if (pfr0 >> 32) & 0xf != 0 {
        // ZCR_EL2.LEN = all ones: EL1's vector length is limited only by the hardware.
        // SAFETY: only bounds the SVE vector length of EL1 and EL0; SVE is implemented
        // (ID_AA64PFR0_EL1.SVE), so the register exists.
        unsafe {
            asm!("msr S3_4_C1_C2_0, {}", "isb", in(reg) 0x1ffu64, options(nostack, preserves_flags))
        };
    }
}

/// Whether the guest's virtual timer is asserting its interrupt now: CNTV_CTL_EL0 (the
/// vCPU's own, live in this CPU) with ENABLE and ISTATUS set and IMASK clear.
pub fn guest_vtimer_line() -> bool {
    CNTV_CTL_EL0.get() & 0b111 == 0b101
}

/// The guest's VBAR_EL1, where injected exceptions go.
pub fn guest_vbar() -> u64 {
    VBAR_EL1.get()
}

/// The guest's SCTLR_EL1 (SPAN and DSSBS shape an injected exception's PSTATE).
pub fn guest_sctlr() -> u64 {
    SCTLR_EL1.get()
}

/// Writes the EL1 syndrome registers of an exception injected into the guest.
pub fn set_guest_exception_regs(esr: u64, far: Option<u64>, elr: u64, spsr: u64) {
    ESR_EL1.set(esr);
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    // SAFETY: ELR_EL1 is guest state; the guest's exception handler reads it.
    unsafe { asm!("msr elr_el1, {}", in(reg) elr, options(nostack, preserves_flags)) };
    SPSR_EL1.set(spsr);
}

/// HPFAR_EL2: the faulting IPA of a stage-2 abort (bits [47:12] in FIPA).
pub fn hpfar() -> u64 {
    let v: u64;
    // SAFETY: reading HPFAR_EL2 has no side effects.
    unsafe { asm!("mrs {}, hpfar_el2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

unsafe extern "C" {
    /// The restore half of the trap path: loads the frame at SP and ERETs.
    fn el2_return_to_frame() -> !;
}

/// Enters the guest with `frame`'s registers.
///
/// # Safety
/// `frame` must be the trap frame at the top of this CPU's stack (where the vectors put it
/// on the next trap), and the CPU must be in the VM's context (`load_vm_context`).
pub unsafe fn enter(frame: *mut TrapFrame) -> ! {
    // SAFETY: the caller guarantees the frame sits at the top of this CPU's stack, so
    // taking it as SP discards nothing still needed; the restore path ERETs from it.
    unsafe {
        asm!(
            "mov sp, {frame}",
            "b {ret}",
            frame = in(reg) frame,
            ret = sym el2_return_to_frame,
            options(noreturn)
        )
    }
}

/// Cleans `[start, start + len)` to the point of coherency and invalidates the instruction
/// caches: the guest starts with its MMU off and reads memory, not our caches.
pub fn publish_to_guest(start: u64, len: u64) {
    super::cache::clean_to_poc(start as usize, len as usize);
    // SAFETY: invalidating instruction caches and a barrier have no memory-safety effects.
    unsafe {
        asm!(
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
