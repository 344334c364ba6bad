//! One safe accessor per system register the boot path reads, and the few it writes that
//! cannot break memory safety. Registers whose writes can (SCTLR_EL2, TTBR0_EL2, ...) are
//! written only inside `mmu.rs`, behind unsafe functions.

use aarch64_cpu::registers::{
    CurrentEL, Readable, Writeable, CNTFRQ_EL0, CNTHCTL_EL2, CNTPCT_EL0, DAIF, ID_AA64MMFR0_EL1,
    MPIDR_EL1, TPIDR_EL2,
};

/// The exception level the CPU runs at (CurrentEL.EL).
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// The generic counter's frequency in Hz (CNTFRQ_EL0), as firmware programmed it.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The physical counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// This CPU's affinity (MPIDR_EL1 with Aff3..Aff0 only).
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// ID_AA64MMFR0_EL1.PARange: the physical address size, encoded.
pub fn pa_range() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange)
}

/// The index of this CPU, as the entry code stored it in TPIDR_EL2.
pub fn cpu_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// Records the index of this CPU (TPIDR_EL2 is EL2's own scratch register).
pub fn set_cpu_index(index: usize) {
    TPIDR_EL2.set(index as u64);
}

/// Turns on this CPU's event stream: a WFE event whenever the chosen counter bit flips,
/// about every 64 microseconds, so a CPU waiting in WFE for something that never comes
/// still wakes to check its deadline. Other CNTHCTL_EL2 fields are kept.
pub fn enable_event_stream() {
    let freq = counter_frequency().max(1);
    // The bit whose transitions come every ~64 us: freq * 64e-6 = 2^(bit + 1).
    let period = (freq / 15_625).max(2);
    let bit = u64::from(63 - period.leading_zeros())
        .saturating_sub(1)
        .min(15);
    // aarch64-cpu names only EL1PCEN/EL1PCTEN of CNTHCTL_EL2, so the event stream fields
    // are written by position: EVNTEN is bit 2, EVNTI bits [7:4] (Arm ARM D24.11.2).
    const EVNTEN: u64 = 1 << 2;
    const EVNTI_SHIFT: u64 = 4;
    let value = CNTHCTL_EL2.get() & !(0xf << EVNTI_SHIFT);
    CNTHCTL_EL2.set(value | EVNTEN | (bit << EVNTI_SHIFT));
}

/// Arms this CPU's EL2 physical timer (CNTHP) to fire when the physical counter reaches
/// `deadline`, or turns it off with `None`. Its interrupt is a PPI the hypervisor takes.
pub fn set_hyp_timer(deadline: Option<u64>) {
    // CNTHP_CVAL_EL2 is not in aarch64-cpu. ENABLE is bit 0 of CNTHP_CTL_EL2; IMASK
    // (bit 1) stays clear, so the interrupt follows the condition.
    match deadline {
        Some(cval) => {
            // SAFETY: the EL2 timer's registers only decide when its PPI fires.
            unsafe {
                core::arch::asm!(
                    "msr cnthp_cval_el2, {cval}",
                    "msr cnthp_ctl_el2, {enable}",
                    "isb",
                    cval = in(reg) cval,
                    enable = in(reg) 1u64,
                    options(nostack, preserves_flags)
                )
            };
        }
        // SAFETY: as above.
        None => unsafe {
            core::arch::asm!(
                "msr cnthp_ctl_el2, xzr",
                "isb",
                options(nostack, preserves_flags)
            )
        },
    }
}

/// Masks debug, SError, IRQ and FIQ at EL2.
pub fn mask_interrupts() {
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
}
