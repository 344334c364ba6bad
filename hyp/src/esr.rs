//! Decoding of ESR_ELx: the exception class by name, for reports a person can read.
//!
//! Exception classes: Arm ARM D24.2.40 (ESR_EL2), field EC, bits [31:26].

/// ESR_ELx.EC, the exception class.
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// ESR_ELx.ISS, the instruction-specific syndrome.
pub fn iss(esr: u64) -> u32 {
    (esr & 0x01ff_ffff) as u32
}

/// A trapped MSR, MRS or system instruction (EC 0x18): the ISS fields (Arm ARM D24.2.40,
/// "ISS encoding for an exception from MSR, MRS, or System instruction execution").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregAccess {
    /// Op0, Op1, CRn, CRm, Op2: which register or instruction.
    pub op0: u32,
    /// Op1.
    pub op1: u32,
    /// CRn.
    pub crn: u32,
    /// CRm.
    pub crm: u32,
    /// Op2.
    pub op2: u32,
    /// Xt (31 is XZR).
    pub rt: usize,
    /// MRS (a read) rather than MSR or a system instruction.
    pub read: bool,
}

impl SysregAccess {
    /// Decodes the ISS of an EC 0x18 exception.
    pub fn decode(iss: u32) -> Self {
        Self {
            op0: (iss >> 20) & 3,
            op2: (iss >> 17) & 7,
            op1: (iss >> 14) & 7,
            crn: (iss >> 10) & 0xf,
            rt: ((iss >> 5) & 0x1f) as usize,
            crm: (iss >> 1) & 0xf,
            read: iss & 1 != 0,
        }
    }

    /// Whether it names (Op0, Op1, CRn, CRm).
    pub fn is(&self, op0: u32, op1: u32, crn: u32, crm: u32) -> bool {
        (self.op0, self.op1, self.crn, self.crm) == (op0, op1, crn, crm)
    }
}

/// The architectural name of an exception class; unknown and reserved values included.
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x03 => "MCR/MRC (cp15)",
        0x04 => "MCRR/MRRC (cp15)",
        0x05 => "MCR/MRC (cp14)",
        0x06 => "LDC/STC (cp14)",
        0x07 => "SVE/SIMD/FP access",
        0x0a => "LD64B/ST64B",
        0x0c => "MRRC (cp14)",
        0x0d => "branch target exception",
        0x0e => "illegal execution state",
        0x11 => "SVC (AArch32)",
        0x12 => "HVC (AArch32)",
        0x13 => "SMC (AArch32)",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "MSR/MRS/system instruction",
        0x19 => "SVE access",
        0x1a => "ERET (nested virtualization)",
        0x1c => "pointer authentication failure",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort at the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort at the same EL",
        0x26 => "SP alignment fault",
        0x28 => "FP exception (AArch32)",
        0x2c => "FP exception (AArch64)",
        0x2f => "SError",
        0x30 => "breakpoint from a lower EL",
        0x31 => "breakpoint at the same EL",
        0x32 => "software step from a lower EL",
        0x33 => "software step at the same EL",
        0x34 => "watchpoint from a lower EL",
        0x35 => "watchpoint at the same EL",
        0x38 => "BKPT (AArch32)",
        0x3c => "BRK (AArch64)",
        _ => "reserved exception class",
    }
}

/// Which of the 16 EL2 vector entries was taken (VBAR_EL2 offset / 0x80).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorSlot(pub u8);

impl VectorSlot {
    /// "synchronous", "IRQ", "FIQ" or "SError".
    pub fn kind(self) -> &'static str {
        ["synchronous", "IRQ", "FIQ", "SError"][usize::from(self.0 & 3)]
    }

    /// Where the exception came from, as the vector table groups it.
    pub fn origin(self) -> &'static str {
        [
            "EL2 with SP_EL0",
            "EL2 with SP_EL2",
            "a lower EL in AArch64",
            "a lower EL in AArch32",
        ][usize::from((self.0 >> 2) & 3)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields() {
        // A data abort at EL2, ISS with WnR set.
        let esr = (0x25u64 << 26) | (1 << 25) | 0x40;
        assert_eq!(exception_class(esr), 0x25);
        assert_eq!(
            class_name(exception_class(esr)),
            "data abort at the same EL"
        );
        assert_eq!(iss(esr), 0x40);
    }

    #[test]
    fn decodes_a_sysreg_access() {
        // MRS x3, CNTP_CTL_EL0 (S3_3_C14_C2_1).
        let iss = (3 << 20) | (1 << 17) | (3 << 14) | (14 << 10) | (3 << 5) | (2 << 1) | 1;
        let a = SysregAccess::decode(iss);
        assert_eq!((a.op0, a.op1, a.crn, a.crm, a.op2), (3, 3, 14, 2, 1));
        assert_eq!((a.rt, a.read), (3, true));
        assert!(a.is(3, 3, 14, 2) && !a.is(3, 3, 14, 3));
    }

    #[test]
    fn every_class_has_a_name() {
        for ec in 0..=0x3f {
            assert!(!class_name(ec).is_empty());
        }
        assert_eq!(class_name(0x3f), "reserved exception class");
    }

    #[test]
    fn vector_slots() {
        assert_eq!(VectorSlot(0).kind(), "synchronous");
        assert_eq!(VectorSlot(5).kind(), "IRQ");
        assert_eq!(VectorSlot(5).origin(), "EL2 with SP_EL2");
        assert_eq!(VectorSlot(15).kind(), "SError");
        assert_eq!(VectorSlot(15).origin(), "a lower EL in AArch32");
    }
}
