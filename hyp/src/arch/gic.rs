//! The GICv3 physical CPU interface as EL2 sees it (ICC_*): one function per register, as
//! the Arm GICv3 architecture specification (IHI 0069) names them. aarch64-cpu has only
//! ICC_SRE_EL2 and ICC_CTLR_EL1 of these, so each function is its own small `mrs`/`msr`.

use core::arch::asm;

/// Enables the system-register interface at EL2 and for EL1 (ICC_SRE_EL2: SRE, DFB, DIB,
/// Enable), as GICv3 guests need.
pub fn enable_sre() {
    // SAFETY: ICC_SRE_EL2 only selects the GIC's system-register interface; no memory.
    unsafe {
        asm!("msr icc_sre_el2, {}", in(reg) 0b1111u64, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

/// The physical interface for EL2: EOImode = 1 (an EOI only drops the priority; the
/// interrupt stays active until deactivated, by the hypervisor or by the guest through a
/// hardware list register), all priorities unmasked, group 1 enabled.
pub fn init_physical_interface() {
    // SAFETY: EOImode, the priority mask and the group enable change interrupt delivery to
    // this CPU only; no memory is touched.
    unsafe {
        asm!(
            "msr icc_ctlr_el1, {ctlr}",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {en}",
            ctlr = in(reg) 1u64 << 1,
            pmr = in(reg) 0xffu64,
            en = in(reg) 1u64,
            options(nomem, nostack, preserves_flags)
        )
    };
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

/// Acknowledges the highest-priority pending group-1 interrupt (ICC_IAR1_EL1); 1023 when
/// none is pending.
pub fn acknowledge() -> u32 {
    let iar: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the interrupt it returns, which is what the
    // caller asks for; no memory is touched.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nomem, nostack, preserves_flags)) };
    (iar & 0xff_ffff) as u32
}

/// Drops the running priority of `intid` (ICC_EOIR1_EL1; with EOImode = 1 it stays active).
pub fn end_of_interrupt(intid: u32) {
    // SAFETY: a priority drop for an interrupt this CPU acknowledged; no memory touched.
    unsafe {
        asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(intid), options(nomem, nostack, preserves_flags))
    };
}

/// Deactivates `intid` (ICC_DIR_EL1).
pub fn deactivate(intid: u32) {
    // SAFETY: deactivating an interrupt changes GIC state only; no memory touched.
    unsafe {
        asm!("msr icc_dir_el1, {}", in(reg) u64::from(intid), options(nomem, nostack, preserves_flags))
    };
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
    // SAFETY: generating an SGI signals another CPU; no memory is touched.
    unsafe {
        asm!("msr icc_sgi1r_el1, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: a barrier has no memory-safety effects.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

/// The virtual CPU interface a guest sees, controlled through ICH_*_EL2 (aarch64-cpu has
/// these registers).
pub mod ich {
    use aarch64_cpu::registers::{
        Readable, Writeable, ICH_AP0R0_EL2, ICH_AP1R0_EL2, ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR10_EL2,
        ICH_LR11_EL2, ICH_LR12_EL2, ICH_LR13_EL2, ICH_LR14_EL2, ICH_LR15_EL2, ICH_LR1_EL2,
        ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2, ICH_LR5_EL2, ICH_LR6_EL2, ICH_LR7_EL2, ICH_LR8_EL2,
        ICH_LR9_EL2, ICH_VMCR_EL2, ICH_VTR_EL2,
    };

    /// ICH_HCR_EL2.En: the virtual CPU interface is on.
    pub const HCR_EN: u64 = 1;

    /// ICH_VTR_EL2.ListRegs + 1: how many list registers this CPU has (1..=16).
    pub fn list_register_count() -> usize {
        ((ICH_VTR_EL2.get() & 0x1f) + 1) as usize
    }

    /// Writes ICH_HCR_EL2.
    pub fn set_hcr(value: u64) {
        ICH_HCR_EL2.set(value);
    }

    /// Resets the guest's virtual CPU interface state (VMCR: priority mask, group enables,
    /// binary points; active priorities) for a VM starting afresh.
    pub fn reset_virtual_interface() {
        ICH_VMCR_EL2.set(0);
        ICH_AP0R0_EL2.set(0);
        ICH_AP1R0_EL2.set(0);
        for n in 0..16 {
            write_lr(n, 0);
        }
    }

    /// Reads ICH_LR<n>_EL2 (0 for n >= 16).
    pub fn read_lr(n: usize) -> u64 {
        match n {
            0 => ICH_LR0_EL2.get(),
            1 => ICH_LR1_EL2.get(),
            2 => ICH_LR2_EL2.get(),
            3 => ICH_LR3_EL2.get(),
            4 => ICH_LR4_EL2.get(),
            5 => ICH_LR5_EL2.get(),
            6 => ICH_LR6_EL2.get(),
            7 => ICH_LR7_EL2.get(),
            8 => ICH_LR8_EL2.get(),
            9 => ICH_LR9_EL2.get(),
            10 => ICH_LR10_EL2.get(),
            11 => ICH_LR11_EL2.get(),
            12 => ICH_LR12_EL2.get(),
            13 => ICH_LR13_EL2.get(),
            14 => ICH_LR14_EL2.get(),
            15 => ICH_LR15_EL2.get(),
            _ => 0,
        }
    }

    /// Writes ICH_LR<n>_EL2 (ignored for n >= 16, or beyond what the CPU has).
    pub fn write_lr(n: usize, value: u64) {
        if n >= list_register_count() {
            return;
        }
        match n {
            0 => ICH_LR0_EL2.set(value),
            1 => ICH_LR1_EL2.set(value),
            2 => ICH_LR2_EL2.set(value),
            3 => ICH_LR3_EL2.set(value),
            4 => ICH_LR4_EL2.set(value),
            5 => ICH_LR5_EL2.set(value),
            6 => ICH_LR6_EL2.set(value),
            7 => ICH_LR7_EL2.set(value),
            8 => ICH_LR8_EL2.set(value),
            9 => ICH_LR9_EL2.set(value),
            10 => ICH_LR10_EL2.set(value),
            11 => ICH_LR11_EL2.set(value),
            12 => ICH_LR12_EL2.set(value),
            13 => ICH_LR13_EL2.set(value),
            14 => ICH_LR14_EL2.set(value),
            15 => ICH_LR15_EL2.set(value),
            _ => {}
        }
    }
}
