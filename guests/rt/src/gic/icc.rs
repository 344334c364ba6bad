//! The GICv3 CPU interface from EL1 (ICC_*_EL1, IHI 0069 chapter 12.2): one function per
//! register. aarch64-cpu has only ICC_CTLR_EL1 of these, so each is its own `mrs`/`msr`.
//! Under a hypervisor with `ICH_HCR_EL2.En` set, the same encodings reach the virtual CPU
//! interface (ICV_*_EL1) instead, except ICC_SGI1R_EL1, which traps to EL2.

use core::arch::asm;

/// ICC_SRE_EL1.SRE, DFB and DIB: the system-register interface, with FIQ and IRQ bypass
/// disabled.
const SRE_SRE_DFB_DIB: u64 = 0b111;

/// Turns the system-register interface on (ICC_SRE_EL1); returns whether SRE reads back 1.
/// Where a higher EL forces it on, the write is ignored and SRE reads as 1 anyway.
pub fn enable_system_registers() -> bool {
    // SAFETY: ICC_SRE_EL1 selects how this CPU reaches its GIC CPU interface; no memory.
    unsafe {
        asm!(
            "msr icc_sre_el1, {}",
            "isb",
            in(reg) SRE_SRE_DFB_DIB,
            options(nomem, nostack, preserves_flags)
        )
    };
    let sre: u64;
    // SAFETY: reading ICC_SRE_EL1 has no side effects.
    unsafe { asm!("mrs {}, icc_sre_el1", out(reg) sre, options(nomem, nostack, preserves_flags)) };
    sre & 1 != 0
}

/// Writes ICC_PMR_EL1: only interrupts of higher priority (lower value) are signalled.
pub fn set_priority_mask(mask: u8) {
    // SAFETY: the priority mask only changes which interrupts reach this CPU; no memory.
    unsafe {
        asm!("msr icc_pmr_el1, {}", in(reg) u64::from(mask), options(nomem, nostack, preserves_flags))
    };
}

/// Reads ICC_PMR_EL1.
pub fn priority_mask() -> u8 {
    let pmr: u64;
    // SAFETY: reading ICC_PMR_EL1 has no side effects.
    unsafe { asm!("mrs {}, icc_pmr_el1", out(reg) pmr, options(nomem, nostack, preserves_flags)) };
    pmr as u8
}

/// Writes ICC_BPR1_EL1, the Group 1 binary point (a value below the minimum sets the
/// minimum: the finest preemption the GIC offers).
pub fn set_binary_point1(bpr: u8) {
    // SAFETY: the binary point only changes preemption between priorities; no memory.
    unsafe {
        asm!("msr icc_bpr1_el1, {}", in(reg) u64::from(bpr & 7), options(nomem, nostack, preserves_flags))
    };
}

/// Writes ICC_CTLR_EL1 (EOImode \[1\], CBPR \[0\]; the rest is read-only or RES0 here).
pub fn set_control(ctlr: u64) {
    // SAFETY: ICC_CTLR_EL1 changes how this CPU ends interrupts; no memory.
    unsafe { asm!("msr icc_ctlr_el1, {}", in(reg) ctlr, options(nomem, nostack, preserves_flags)) };
}

/// Writes ICC_IGRPEN1_EL1: Group 1 interrupts are signalled to this CPU, or not.
pub fn set_group1_enable(enable: bool) {
    // SAFETY: the group enable only changes which interrupts reach this CPU; no memory.
    unsafe {
        asm!(
            "msr icc_igrpen1_el1, {}",
            "isb",
            in(reg) u64::from(enable),
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Reads ICC_IAR1_EL1: acknowledges the highest-priority pending Group 1 interrupt and
/// returns its INTID (1020-1023: none).
pub fn acknowledge1() -> u32 {
    let iar: u64;
    // SAFETY: acknowledging makes the interrupt active, which the caller asks for; no
    // memory is touched.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nomem, nostack, preserves_flags)) };
    (iar & 0xff_ffff) as u32
}

/// Writes ICC_EOIR1_EL1: drops the running priority and (EOImode 0) deactivates `intid`.
pub fn end_of_interrupt1(intid: u32) {
    // SAFETY: ends an interrupt this CPU acknowledged; no memory is touched.
    unsafe {
        asm!(
            "msr icc_eoir1_el1, {}",
            "isb",
            in(reg) u64::from(intid),
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Writes ICC_SGI1R_EL1, generating a Group 1 SGI (the value as IHI 0069 lays it out).
/// A `dsb` first makes this CPU's earlier stores visible to the target's handler.
pub fn generate_sgi1(value: u64) {
    // SAFETY: the barrier orders memory accesses only; the register write signals other
    // CPUs and touches no memory.
    unsafe {
        asm!(
            "dsb sy",
            "msr icc_sgi1r_el1, {}",
            "isb",
            in(reg) value,
            options(nostack, preserves_flags)
        )
    };
}

/// Reads ICC_RPR_EL1: the running priority (0xff when no interrupt is active).
pub fn running_priority() -> u8 {
    let rpr: u64;
    // SAFETY: reading ICC_RPR_EL1 has no side effects.
    unsafe { asm!("mrs {}, icc_rpr_el1", out(reg) rpr, options(nomem, nostack, preserves_flags)) };
    rpr as u8
}
