//! The GICv3 physical CPU interface as EL2 sees it (ICC_*): one function per register, as
//! the Arm GICv3 architecture specification (IHI 0069) names them. aarch64-cpu has only
//! ICC_SRE_EL2 and ICC_CTLR_EL1 of these, so each is a small `mrs`/`msr` wrapper.

use core::arch::asm;

macro_rules! read_sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading this GIC system register has no side effects beyond those the
        // caller asked for (for ICC_IAR1_EL1: acknowledging the interrupt it returns).
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

macro_rules! write_sysreg {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: writing this GIC system register affects only interrupt state, never
        // memory; every caller is a named function below with its meaning documented.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nomem, nostack, preserves_flags)) };
    }};
}

/// Enables the system-register interface at EL2 and for EL1 (ICC_SRE_EL2: SRE, DFB, DIB,
/// Enable), as GICv3 guests need.
pub fn enable_sre() {
    write_sysreg!("icc_sre_el2", 0b1111);
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

/// The physical interface for EL2: EOImode = 1 (an EOI only drops the priority; the
/// interrupt stays active until deactivated, by the hypervisor or by the guest through a
/// hardware list register), all priorities unmasked, group 1 enabled.
pub fn init_physical_interface() {
    write_sysreg!("icc_ctlr_el1", 1 << 1);
    write_sysreg!("icc_pmr_el1", 0xff);
    write_sysreg!("icc_igrpen1_el1", 1);
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

/// Acknowledges the highest-priority pending group-1 interrupt (ICC_IAR1_EL1); 1023 when
/// none is pending.
pub fn acknowledge() -> u32 {
    (read_sysreg!("icc_iar1_el1") & 0xff_ffff) as u32
}

/// Drops the running priority of `intid` (ICC_EOIR1_EL1; with EOImode = 1 it stays active).
pub fn end_of_interrupt(intid: u32) {
    write_sysreg!("icc_eoir1_el1", u64::from(intid));
}

/// Deactivates `intid` (ICC_DIR_EL1).
pub fn deactivate(intid: u32) {
    write_sysreg!("icc_dir_el1", u64::from(intid));
}

/// Sends SGI `intid` to the CPU with affinity `mpidr` (ICC_SGI1R_EL1).
pub fn send_sgi(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    // TargetList holds Aff0 values 0..15 of the chosen cluster.
    if aff0 >= 16 {
        return;
    }
    let value =
        (aff3 << 48) | (aff2 << 32) | (u64::from(intid & 0xf) << 24) | (aff1 << 16) | (1 << aff0);
    write_sysreg!("icc_sgi1r_el1", value);
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}
