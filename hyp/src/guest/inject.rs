//! Injection of a synchronous exception into a guest's EL1, computed as pure values: the EL1
//! registers the exception would set and the state to ERET into.
//!
//! It follows the Arm ARM, chapter D1: "Exception entry" (what PSTATE becomes when an
//! exception is taken to an Exception level using AArch64) and "Exception vectors" (the
//! VBAR_EL1 offsets). The hypervisor writes ESR_EL1, FAR_EL1, ELR_EL1 and SPSR_EL1 as given,
//! then ERETs with the new SPSR_EL2 and ELR_EL2, so the guest's vector runs as if its own CPU
//! had taken the fault.
//!
//! PSTATE on entry, modelled: M\[3:0\] = 0b0101 (EL1h), M\[4\] = 0 (AArch64), D, A, I and F set,
//! IL, SS and BTYPE cleared, UAO cleared, PAN set when FEAT_PAN is present and SCTLR_EL1.SPAN
//! is 0 (else unchanged), SSBS = SCTLR_EL1.DSSBS when FEAT_SSBS is present, N, Z, C, V and DIT
//! unchanged. Not modelled, so left 0: TCO (FEAT_MTE), ALLINT (FEAT_NMI), EXLOCK (FEAT_GCS) and
//! PM (FEAT_EBEP); a guest must not be given those features while it relies on this module.

use core::fmt;

/// ESR_ELx.EC: unknown reason, used for an UNDEFINED instruction.
pub const EC_UNKNOWN: u8 = 0x00;
/// ESR_ELx.EC: instruction abort from a lower Exception level.
pub const EC_INSTRUCTION_ABORT_LOWER: u8 = 0x20;
/// ESR_ELx.EC: instruction abort taken without a change of Exception level.
pub const EC_INSTRUCTION_ABORT_SAME: u8 = 0x21;
/// ESR_ELx.EC: data abort from a lower Exception level.
pub const EC_DATA_ABORT_LOWER: u8 = 0x24;
/// ESR_ELx.EC: data abort taken without a change of Exception level.
pub const EC_DATA_ABORT_SAME: u8 = 0x25;

/// DFSC/IFSC 0b010000: synchronous External abort, not on a translation table walk.
pub const FSC_SYNC_EXTERNAL: u64 = 0b01_0000;

const ESR_EC_SHIFT: u32 = 26;
/// IL: a 32-bit instruction. RES1 for EC 0x00 and for aborts without a syndrome.
const ESR_IL: u64 = 1 << 25;
const ISS_WNR: u64 = 1 << 6;

const PSTATE_NZCV: u64 = 0xf << 28;
const PSTATE_DIT: u64 = 1 << 24;
const PSTATE_PAN: u64 = 1 << 22;
const PSTATE_SSBS: u64 = 1 << 12;
const PSTATE_DAIF: u64 = 0xf << 6;
const PSTATE_M_AARCH32: u64 = 1 << 4;
const PSTATE_M_MASK: u64 = 0xf;

/// PSTATE.M\[3:0\] for EL0 using SP_EL0.
pub const M_EL0T: u8 = 0b0000;
/// PSTATE.M\[3:0\] for EL1 using SP_EL0.
pub const M_EL1T: u8 = 0b0100;
/// PSTATE.M\[3:0\] for EL1 using SP_EL1.
pub const M_EL1H: u8 = 0b0101;

const SCTLR_SPAN: u64 = 1 << 23;
const SCTLR_DSSBS: u64 = 1 << 44;
/// VBAR_EL1.VBA is bits \[63:11\]; bits \[10:0\] are RES0.
const VBAR_VBA_MASK: u64 = !0x7ff;

/// Which group of the EL1 vector table an exception uses, as an offset from VBAR_EL1. A
/// synchronous exception uses the first entry of the group (+0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorOffset {
    /// 0x000: from EL1 using SP_EL0.
    CurrentElSp0 = 0x000,
    /// 0x200: from EL1 using SP_EL1.
    CurrentElSpx = 0x200,
    /// 0x400: from EL0 in AArch64.
    LowerElAArch64 = 0x400,
    /// 0x600: from EL0 in AArch32; never produced, since AArch32 guests are refused.
    LowerElAArch32 = 0x600,
}

/// Architecture features that change the PSTATE set on exception entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryFeatures {
    /// FEAT_PAN: PSTATE.PAN exists and SCTLR_EL1.SPAN controls it on entry.
    pub pan: bool,
    /// FEAT_SSBS: PSTATE.SSBS exists and takes SCTLR_EL1.DSSBS on entry.
    pub ssbs: bool,
}

/// The guest state at the trap that the injection depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestContext {
    /// SPSR_EL2: the guest's PSTATE when it trapped.
    pub spsr_el2: u64,
    /// The address of the instruction the exception is for. For an abort or a trapped SMC
    /// this is ELR_EL2 as the trap left it; a trapped HVC leaves ELR_EL2 one instruction
    /// further on, so pass ELR_EL2 - 4 to make an HVC itself UNDEFINED.
    pub elr_el2: u64,
    /// VBAR_EL1: the guest's vector table.
    pub vbar_el1: u64,
    /// SCTLR_EL1: read for SPAN and DSSBS.
    pub sctlr_el1: u64,
    /// What the guest's CPU implements.
    pub features: EntryFeatures,
}

/// The exception to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// A synchronous External abort on an access the hypervisor refuses.
    SyncExternalAbort {
        /// The faulting virtual address (FAR_EL2 of the original abort; the instruction's
        /// address for an instruction abort).
        far: u64,
        /// A data access (true) or an instruction fetch.
        data: bool,
        /// For a data access, whether it was a write (ISS.WnR).
        write: bool,
    },
    /// An UNDEFINED instruction (EC 0x00, unknown reason).
    Undefined,
}

/// Why an exception cannot be injected. The caller stops the VM with this as the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The guest was in AArch32 state (SPSR_EL2.M\[4\] = 1), which Tandem does not run.
    AArch32 {
        /// SPSR_EL2 at the trap.
        spsr_el2: u64,
    },
    /// SPSR_EL2.M\[3:0\] names no guest mode (EL0t, EL1t or EL1h): a trap cannot come from
    /// there, so the saved state is corrupt.
    NotAGuestMode {
        /// M\[3:0\].
        mode: u8,
    },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AArch32 { spsr_el2 } => write!(
                f,
                "guest in AArch32 state (SPSR_EL2 {spsr_el2:#x}): exceptions cannot be injected"
            ),
            Self::NotAGuestMode { mode } => {
                write!(f, "SPSR_EL2.M[3:0] = {mode:#06b} is not a guest mode")
            }
        }
    }
}

/// The register values that take the exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// ESR_EL1.
    pub esr_el1: u64,
    /// FAR_EL1, when the exception sets it; `None` leaves it alone (it is UNKNOWN then).
    pub far_el1: Option<u64>,
    /// ELR_EL1: the faulting instruction's address, the preferred return address.
    pub elr_el1: u64,
    /// SPSR_EL1: the guest's PSTATE at the fault.
    pub spsr_el1: u64,
    /// SPSR_EL2 to ERET with: the guest's PSTATE on entry to its handler.
    pub spsr_el2: u64,
    /// ELR_EL2 to ERET to: VBAR_EL1 plus the vector offset.
    pub elr_el2: u64,
    /// The vector group used.
    pub vector: VectorOffset,
}

/// Computes the injection of `exception` into the guest described by `guest`.
pub fn inject(guest: &GuestContext, exception: Exception) -> Result<Injection, InjectError> {
    let spsr = guest.spsr_el2;
    if spsr & PSTATE_M_AARCH32 != 0 {
        return Err(InjectError::AArch32 { spsr_el2: spsr });
    }
    let mode = (spsr & PSTATE_M_MASK) as u8;
    let (vector, from_lower) = match mode {
        M_EL0T => (VectorOffset::LowerElAArch64, true),
        M_EL1T => (VectorOffset::CurrentElSp0, false),
        M_EL1H => (VectorOffset::CurrentElSpx, false),
        _ => return Err(InjectError::NotAGuestMode { mode }),
    };

    let (ec, iss, far_el1) = match exception {
        Exception::SyncExternalAbort { far, data, write } => {
            let (ec, wnr) = match (data, from_lower) {
                (true, true) => (EC_DATA_ABORT_LOWER, write),
                (true, false) => (EC_DATA_ABORT_SAME, write),
                (false, true) => (EC_INSTRUCTION_ABORT_LOWER, false),
                (false, false) => (EC_INSTRUCTION_ABORT_SAME, false),
            };
            // ISV = 0, FnV = 0 (FAR_EL1 is valid), EA = 0 (its classification is
            // IMPLEMENTATION DEFINED; 0 claims none), S1PTW = 0, CM = 0.
            let iss = FSC_SYNC_EXTERNAL | if wnr { ISS_WNR } else { 0 };
            (ec, iss, Some(far))
        }
        Exception::Undefined => (EC_UNKNOWN, 0, None),
    };

    Ok(Injection {
        esr_el1: (u64::from(ec) << ESR_EC_SHIFT) | ESR_IL | iss,
        far_el1,
        elr_el1: guest.elr_el2,
        spsr_el1: spsr,
        spsr_el2: entry_pstate(spsr, guest.sctlr_el1, guest.features),
        elr_el2: (guest.vbar_el1 & VBAR_VBA_MASK) | vector as u64,
        vector,
    })
}

/// PSTATE on taking an exception to EL1 from PSTATE `old` (see the module docs for the model).
fn entry_pstate(old: u64, sctlr_el1: u64, features: EntryFeatures) -> u64 {
    let mut new = (old & (PSTATE_NZCV | PSTATE_DIT)) | PSTATE_DAIF | u64::from(M_EL1H);
    if features.pan && (sctlr_el1 & SCTLR_SPAN == 0 || old & PSTATE_PAN != 0) {
        new |= PSTATE_PAN;
    }
    if features.ssbs && sctlr_el1 & SCTLR_DSSBS != 0 {
        new |= PSTATE_SSBS;
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VBAR: u64 = 0xffff_8000_1001_0800;

    fn guest(spsr_el2: u64) -> GuestContext {
        GuestContext {
            spsr_el2,
            elr_el2: 0xffff_8000_1234_5678,
            vbar_el1: VBAR,
            sctlr_el1: 0,
            features: EntryFeatures {
                pan: true,
                ssbs: true,
            },
        }
    }

    #[test]
    fn data_abort_from_el1h() {
        // EL1h, Z and C set (0x6000_0000), interrupts unmasked.
        let g = guest(0x6000_0005);
        let far = 0xffff_0000_dead_b000;
        let inj = inject(
            &g,
            Exception::SyncExternalAbort {
                far,
                data: true,
                write: true,
            },
        )
        .unwrap();
        // EC 0x25 << 26 = 0x9400_0000, IL 0x0200_0000, WnR 0x40, DFSC 0x10.
        assert_eq!(inj.esr_el1, 0x9600_0050);
        assert_eq!(inj.far_el1, Some(far));
        assert_eq!(inj.elr_el1, 0xffff_8000_1234_5678);
        assert_eq!(inj.spsr_el1, 0x6000_0005);
        // Z, C kept; D A I F (0x3c0); EL1h; PAN (bit 22) since SCTLR_EL1.SPAN = 0.
        assert_eq!(inj.spsr_el2, 0x6040_03c5);
        assert_eq!(inj.vector, VectorOffset::CurrentElSpx);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0a00);
    }

    #[test]
    fn instruction_abort_from_el0() {
        // EL0t with N (0x8000_0000), SS (0x20_0000), SSBS (0x1000), BTYPE 0b10 (0x800).
        let mut g = guest(0x8020_1800);
        // SCTLR_EL1.SPAN (bit 23) = 1: PAN unchanged; DSSBS (bit 44) = 1: SSBS set.
        g.sctlr_el1 = (1 << 23) | (1 << 44);
        let inj = inject(
            &g,
            Exception::SyncExternalAbort {
                far: 0x40_1000,
                data: false,
                write: true,
            },
        )
        .unwrap();
        // EC 0x20 << 26 = 0x8000_0000, IL, IFSC 0x10; WnR is not part of an instruction abort.
        assert_eq!(inj.esr_el1, 0x8200_0010);
        assert_eq!(inj.far_el1, Some(0x40_1000));
        assert_eq!(inj.spsr_el1, 0x8020_1800);
        // N kept; SS, BTYPE cleared; SSBS from DSSBS; PAN stays 0.
        assert_eq!(inj.spsr_el2, 0x8000_13c5);
        assert_eq!(inj.vector, VectorOffset::LowerElAArch64);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0c00);
    }

    #[test]
    fn data_abort_from_el0_read() {
        let inj = inject(
            &guest(0),
            Exception::SyncExternalAbort {
                far: 0x1000,
                data: true,
                write: false,
            },
        )
        .unwrap();
        // EC 0x24 << 26 = 0x9000_0000, IL, DFSC 0x10.
        assert_eq!(inj.esr_el1, 0x9200_0010);
    }

    #[test]
    fn undefined_from_el1t() {
        // EL1t with DIT (bit 24), UAO (bit 23), IL (bit 20).
        let mut g = guest(0x0190_0004);
        g.features = EntryFeatures::default();
        let inj = inject(&g, Exception::Undefined).unwrap();
        // EC 0, IL = 1.
        assert_eq!(inj.esr_el1, 0x0200_0000);
        assert_eq!(inj.far_el1, None);
        assert_eq!(inj.spsr_el1, 0x0190_0004);
        // DIT kept; UAO and IL cleared; no PAN without FEAT_PAN.
        assert_eq!(inj.spsr_el2, 0x0100_03c5);
        assert_eq!(inj.vector, VectorOffset::CurrentElSp0);
        assert_eq!(inj.elr_el2, 0xffff_8000_1001_0800);
    }

    #[test]
    fn pan_already_set_stays_set() {
        let mut g = guest(0x0040_0005);
        g.sctlr_el1 = 1 << 23;
        let inj = inject(&g, Exception::Undefined).unwrap();
        assert_eq!(inj.spsr_el2, 0x0040_03c5);
    }

    #[test]
    fn vbar_low_bits_are_ignored() {
        let mut g = guest(0x5);
        g.vbar_el1 = 0x4000_07ff;
        assert_eq!(
            inject(&g, Exception::Undefined).unwrap().elr_el2,
            0x4000_0200
        );
    }

    #[test]
    fn refused_states() {
        // AArch32 EL0 (M = 0b10000, User) and AArch32 SVC (0b10011).
        for spsr in [0x10, 0x13] {
            assert_eq!(
                inject(&guest(spsr), Exception::Undefined),
                Err(InjectError::AArch32 { spsr_el2: spsr })
            );
        }
        // EL2t, EL2h, EL3h and a reserved encoding.
        for mode in [0b1000u8, 0b1001, 0b1101, 0b0001] {
            assert_eq!(
                inject(&guest(u64::from(mode)), Exception::Undefined),
                Err(InjectError::NotAGuestMode { mode })
            );
        }
        assert!(!InjectError::NotAGuestMode { mode: 8 }
            .to_string()
            .is_empty());
    }

    proptest! {
        #[test]
        fn any_state_is_handled(
            spsr in any::<u64>(),
            elr in any::<u64>(),
            vbar in any::<u64>(),
            sctlr in any::<u64>(),
            far in any::<u64>(),
            data in any::<bool>(),
            pan in any::<bool>(),
        ) {
            let g = GuestContext {
                spsr_el2: spsr,
                elr_el2: elr,
                vbar_el1: vbar,
                sctlr_el1: sctlr,
                features: EntryFeatures { pan, ssbs: true },
            };
            let exception = Exception::SyncExternalAbort { far, data, write: true };
            if let Ok(inj) = inject(&g, exception) {
                prop_assert_eq!(inj.spsr_el2 & 0x3df, 0x3c5);
                prop_assert_eq!(inj.elr_el2 & 0x7ff, inj.vector as u64);
                prop_assert_eq!(inj.elr_el1, elr);
                prop_assert_eq!(inj.spsr_el1, spsr);
            }
        }
    }
}
