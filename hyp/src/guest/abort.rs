//! Decoding of a guest's stage-2 data abort: ESR_EL2 with EC 0x24, FAR_EL2 and HPFAR_EL2,
//! into the faulting IPA, the fault by name and, where it can be emulated, the MMIO access.
//!
//! Field layout: Arm ARM D24.2.40 "ESR_EL2", "ISS encoding for an exception from a Data
//! Abort", and the register description of HPFAR_EL2. The syndrome (ISV = 1) is only given
//! for a single load or store of a general-purpose register without writeback, so LDP/STP,
//! pre- and post-indexed forms and SIMD&FP accesses arrive with ISV = 0 and cannot be emulated
//! from the syndrome alone.
//!
//! HPFAR_EL2 holds the IPA for stage-2 Translation and Access flag faults and for faults on a
//! stage-1 walk. For a stage-2 Permission fault not on a walk, older cores (Cortex-A57 erratum
//! 834220, and implementations before HPFAR_EL2 was defined for Permission faults) may leave
//! it UNKNOWN: a caller that maps guest memory read-only on such a core must translate FAR_EL2
//! itself (AT S1E1R) before trusting [`DataAbort::ipa`].

use core::fmt;

/// ESR_ELx.EC for a data abort from a lower Exception level.
pub const EC_DATA_ABORT_LOWER: u8 = 0x24;
/// ESR_ELx.EC for a data abort taken without a change of Exception level.
pub const EC_DATA_ABORT_SAME: u8 = 0x25;

const ESR_IL: u64 = 1 << 25;
const ISS_ISV: u64 = 1 << 24;
const ISS_SAS_SHIFT: u32 = 22;
const ISS_SSE: u64 = 1 << 21;
const ISS_SRT_SHIFT: u32 = 16;
const ISS_SF: u64 = 1 << 15;
const ISS_AR: u64 = 1 << 14;
const ISS_FNV: u64 = 1 << 10;
const ISS_EA: u64 = 1 << 9;
const ISS_CM: u64 = 1 << 8;
const ISS_S1PTW: u64 = 1 << 7;
const ISS_WNR: u64 = 1 << 6;
const ISS_DFSC_MASK: u64 = 0x3f;
/// HPFAR_EL2.FIPA, bits \[43:4\]: IPA bits \[51:12\].
const HPFAR_FIPA_MASK: u64 = ((1 << 40) - 1) << 4;

/// The DFSC field, ISS bits \[5:0\], by name. Levels are the translation table level the fault
/// was found at; -1 exists only with 52-bit addresses (FEAT_LPA2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Address size fault (0b0000LL, 0b101001 for level -1).
    AddressSize {
        /// Translation table level.
        level: i8,
    },
    /// Translation fault (0b0001LL, 0b101011 for level -1): nothing is mapped there.
    Translation {
        /// Translation table level.
        level: i8,
    },
    /// Access flag fault (0b0010LL).
    AccessFlag {
        /// Translation table level.
        level: i8,
    },
    /// Permission fault (0b0011LL).
    Permission {
        /// Translation table level.
        level: i8,
    },
    /// Synchronous External abort, not on a translation table walk (0b010000).
    SyncExternal,
    /// Synchronous Tag Check Fault (0b010001).
    TagCheck,
    /// Synchronous External abort on a translation table walk (0b0101LL, 0b010011 for -1).
    SyncExternalOnWalk {
        /// Translation table level.
        level: i8,
    },
    /// Synchronous parity or ECC error, not on a translation table walk (0b011000).
    SyncParity,
    /// Synchronous parity or ECC error on a translation table walk (0b0111LL, 0b011011 for -1).
    SyncParityOnWalk {
        /// Translation table level.
        level: i8,
    },
    /// Alignment fault (0b100001).
    Alignment,
    /// Granule Protection Fault on a translation table walk (0b1001LL, 0b100011 for -1).
    GranuleProtectionOnWalk {
        /// Translation table level.
        level: i8,
    },
    /// Granule Protection Fault, not on a translation table walk (0b101000).
    GranuleProtection,
    /// TLB conflict abort (0b110000).
    TlbConflict,
    /// Unsupported atomic hardware update fault (0b110001).
    UnsupportedAtomicUpdate,
    /// IMPLEMENTATION DEFINED fault: Lockdown (0b110100).
    Lockdown,
    /// IMPLEMENTATION DEFINED fault: Unsupported Exclusive or Atomic access (0b110101).
    UnsupportedExclusiveOrAtomic,
    /// A value the Arm ARM reserves, or one this decoder does not name.
    Other(u8),
}

impl FaultStatus {
    /// Names the DFSC value `dfsc` (only bits \[5:0\] are looked at).
    pub fn from_dfsc(dfsc: u8) -> Self {
        let dfsc = dfsc & 0x3f;
        let level = (dfsc & 3) as i8;
        match dfsc {
            0x00..=0x03 => Self::AddressSize { level },
            0x04..=0x07 => Self::Translation { level },
            0x08..=0x0b => Self::AccessFlag { level },
            0x0c..=0x0f => Self::Permission { level },
            0x10 => Self::SyncExternal,
            0x11 => Self::TagCheck,
            0x13 => Self::SyncExternalOnWalk { level: -1 },
            0x14..=0x17 => Self::SyncExternalOnWalk { level },
            0x18 => Self::SyncParity,
            0x1b => Self::SyncParityOnWalk { level: -1 },
            0x1c..=0x1f => Self::SyncParityOnWalk { level },
            0x21 => Self::Alignment,
            0x23 => Self::GranuleProtectionOnWalk { level: -1 },
            0x24..=0x27 => Self::GranuleProtectionOnWalk { level },
            0x28 => Self::GranuleProtection,
            0x29 => Self::AddressSize { level: -1 },
            0x2b => Self::Translation { level: -1 },
            0x30 => Self::TlbConflict,
            0x31 => Self::UnsupportedAtomicUpdate,
            0x34 => Self::Lockdown,
            0x35 => Self::UnsupportedExclusiveOrAtomic,
            other => Self::Other(other),
        }
    }
}

/// The access size, ISS.SAS (bits \[23:22\]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessSize {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Halfword,
    /// 32 bits.
    Word,
    /// 64 bits.
    Doubleword,
}

impl AccessSize {
    /// The size in bytes: 1, 2, 4 or 8.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Halfword => 2,
            Self::Word => 4,
            Self::Doubleword => 8,
        }
    }

    /// The size in bits: 8, 16, 32 or 64.
    pub fn bits(self) -> u32 {
        (self.bytes() * 8) as u32
    }

    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }

    fn from_sas(sas: u64) -> Self {
        match sas & 3 {
            0 => Self::Byte,
            1 => Self::Halfword,
            2 => Self::Word,
            _ => Self::Doubleword,
        }
    }
}

/// The instruction syndrome, valid when ISS.ISV = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// SAS: the size of the access.
    pub size: AccessSize,
    /// SSE: a load sign-extends the value.
    pub sign_extend: bool,
    /// SRT: the transfer register, 0-30 for X0-X30, 31 for XZR.
    pub reg: u8,
    /// SF: the register is 64-bit (Xt) rather than 32-bit (Wt).
    pub sixty_four: bool,
    /// AR: the instruction has acquire or release semantics (LDAR, STLR, ...).
    pub acquire_release: bool,
}

/// A decoded data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// ESR_EL2.EC; [`EC_DATA_ABORT_LOWER`] for a guest's abort.
    pub ec: u8,
    /// The faulting IPA: HPFAR_EL2.FIPA << 12 | FAR_EL2\[11:0\] (see the module note on
    /// Permission faults).
    pub ipa: u64,
    /// FAR_EL2 as read: the faulting virtual address, when `far_valid`.
    pub far: u64,
    /// IL: the instruction was 32 bits long (always, for an AArch64 guest).
    pub il: bool,
    /// The instruction syndrome, when ISS.ISV = 1.
    pub syndrome: Option<Syndrome>,
    /// !FnV: FAR_EL2 holds the faulting address.
    pub far_valid: bool,
    /// EA: the IMPLEMENTATION DEFINED External abort type.
    pub ea: bool,
    /// CM: the fault came from a cache maintenance or address translation instruction.
    pub cm: bool,
    /// S1PTW: the fault happened at stage 2 during the guest's stage-1 table walk.
    pub s1ptw: bool,
    /// WnR: the access was a write (for CM = 1 or a walk, as the Arm ARM defines).
    pub write: bool,
    /// DFSC by name.
    pub fault: FaultStatus,
}

/// An access the hypervisor can emulate: a single register load or store to `ipa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The IPA accessed (the first byte).
    pub ipa: u64,
    /// The access size.
    pub size: AccessSize,
    /// A store (true) or a load.
    pub write: bool,
    /// The transfer register: 0-30 for X0-X30, 31 for XZR.
    pub reg: u8,
    /// A load sign-extends the value to the register width.
    pub sign_extend: bool,
    /// The register is 64-bit (Xt) rather than 32-bit (Wt).
    pub sixty_four: bool,
}

/// Why a data abort is not an emulable MMIO access. For all of these but `CacheMaintenance`
/// the caller injects an abort into the guest (see [`super::inject`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotMmio {
    /// ESR_EL2.EC is not a data abort.
    NotDataAbort {
        /// The exception class found.
        ec: u8,
    },
    /// The fault is on the guest's own stage-1 table walk (S1PTW = 1): its tables point
    /// outside its memory.
    StageOneWalk,
    /// A cache maintenance instruction (CM = 1) on the address. There is nothing to emulate:
    /// the caller may skip the instruction, or inject an abort.
    CacheMaintenance,
    /// A fault other than Translation or Permission (alignment, access flag, external abort,
    /// ...).
    Fault(FaultStatus),
    /// ISV = 0: no syndrome (a load/store pair, writeback, SIMD&FP, exclusive, ...).
    NoSyndrome,
    /// FnV = 1: FAR_EL2 does not hold the address, so the IPA is not known to the byte.
    FarNotValid,
}

impl fmt::Display for NotMmio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDataAbort { ec } => write!(f, "exception class {ec:#x} is not a data abort"),
            Self::StageOneWalk => write!(f, "stage-2 fault on the guest's stage-1 table walk"),
            Self::CacheMaintenance => write!(f, "cache maintenance instruction"),
            Self::Fault(fault) => write!(f, "fault {fault:?} is not emulated"),
            Self::NoSyndrome => write!(f, "no instruction syndrome (ISV = 0)"),
            Self::FarNotValid => write!(f, "FAR_EL2 not valid (FnV = 1)"),
        }
    }
}

/// Decodes a data abort from ESR_EL2, FAR_EL2 and HPFAR_EL2. Any values decode; whether the
/// abort can be emulated is [`DataAbort::mmio`].
#[inline]
pub fn decode_data_abort(esr: u64, far: u64, hpfar: u64) -> DataAbort {
    let syndrome = (esr & ISS_ISV != 0).then(|| Syndrome {
        size: AccessSize::from_sas(esr >> ISS_SAS_SHIFT),
        sign_extend: esr & ISS_SSE != 0,
        reg: ((esr >> ISS_SRT_SHIFT) & 0x1f) as u8,
        sixty_four: esr & ISS_SF != 0,
        acquire_release: esr & ISS_AR != 0,
    });
    DataAbort {
        ec: ((esr >> 26) & 0x3f) as u8,
        ipa: ((hpfar & HPFAR_FIPA_MASK) << 8) | (far & 0xfff),
        far,
        il: esr & ESR_IL != 0,
        syndrome,
        far_valid: esr & ISS_FNV == 0,
        ea: esr & ISS_EA != 0,
        cm: esr & ISS_CM != 0,
        s1ptw: esr & ISS_S1PTW != 0,
        write: esr & ISS_WNR != 0,
        fault: FaultStatus::from_dfsc((esr & ISS_DFSC_MASK) as u8),
    }
}

impl DataAbort {
    /// The access to emulate, if this is a Translation or Permission fault with a syndrome,
    /// not on a stage-1 walk and not from cache maintenance; otherwise the reason it is not.
    #[inline]
    pub fn mmio(&self) -> Result<MmioAccess, NotMmio> {
        if self.ec != EC_DATA_ABORT_LOWER && self.ec != EC_DATA_ABORT_SAME {
            return Err(NotMmio::NotDataAbort { ec: self.ec });
        }
        if self.s1ptw {
            return Err(NotMmio::StageOneWalk);
        }
        if self.cm {
            return Err(NotMmio::CacheMaintenance);
        }
        if !matches!(
            self.fault,
            FaultStatus::Translation { .. } | FaultStatus::Permission { .. }
        ) {
            return Err(NotMmio::Fault(self.fault));
        }
        let Some(s) = self.syndrome else {
            return Err(NotMmio::NoSyndrome);
        };
        if !self.far_valid {
            return Err(NotMmio::FarNotValid);
        }
        Ok(MmioAccess {
            ipa: self.ipa,
            size: s.size,
            write: self.write,
            reg: s.reg,
            sign_extend: s.sign_extend,
            sixty_four: s.sixty_four,
        })
    }

    /// The length in bytes of the faulting instruction, to step ELR_EL2 past it: 4 when IL = 1,
    /// else 2 (a 16-bit T32 instruction, never seen from an AArch64 guest).
    pub fn instruction_len(&self) -> u64 {
        if self.il {
            4
        } else {
            2
        }
    }
}

impl MmioAccess {
    /// The register value a load leaves, given the `data` the device returned: `data` cut to
    /// the access size, sign- or zero-extended (SSE), then cut to the register width (SF):
    /// writing a W register clears bits \[63:32\] of the X register.
    #[inline]
    pub fn read_result(&self, data: u64) -> u64 {
        let bits = self.size.bits();
        let value = data & self.size.mask();
        let extended = if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            (((value << shift) as i64) >> shift) as u64
        } else {
            value
        };
        if self.sixty_four {
            extended
        } else {
            extended & 0xffff_ffff
        }
    }

    /// Completes a load: writes [`Self::read_result`] of `data` to the transfer register in
    /// `regs` (X0-X30). A load to XZR (31) is discarded.
    #[inline]
    pub fn apply_read(&self, regs: &mut [u64; 31], data: u64) {
        if let Some(r) = regs.get_mut(usize::from(self.reg)) {
            *r = self.read_result(data);
        }
    }

    /// The value a store writes, from the transfer register in `regs` (X0-X30): cut to the
    /// register width and then to the access size. XZR (31) stores zero.
    #[inline]
    pub fn write_value(&self, regs: &[u64; 31]) -> u64 {
        let reg = regs.get(usize::from(self.reg)).copied().unwrap_or(0);
        let reg = if self.sixty_four {
            reg
        } else {
            reg & 0xffff_ffff
        };
        reg & self.size.mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ESR values below are built by hand from the layout: EC [31:26], IL [25], ISV [24],
    // SAS [23:22], SSE [21], SRT [20:16], SF [15], AR [14], FnV [10], EA [9], CM [8],
    // S1PTW [7], WnR [6], DFSC [5:0].

    /// `str w3, [x1]` to an unmapped IPA: EC 0x24, IL, ISV, SAS = 0b10 (word), SRT = 3, SF = 0,
    /// WnR, DFSC = 0b000111 (translation fault, level 3).
    /// 0x24 << 26 = 0x9000_0000; IL 0x0200_0000; ISV 0x0100_0000; SAS 0x0080_0000;
    /// SRT 3 << 16 = 0x0003_0000; WnR 0x40; DFSC 0x07.
    const STR_W3: u64 = 0x9383_0047;

    /// `ldrsb x5, [x0]` faulting on a permission fault at level 2: ISV, SAS = 0 (byte), SSE,
    /// SRT = 5, SF, DFSC = 0b001110.
    /// 0x9000_0000 | 0x0200_0000 | 0x0100_0000 | SSE 0x0020_0000 | 0x0005_0000 | SF 0x8000
    /// | 0x0e.
    const LDRSB_X5: u64 = 0x9325_800e;

    /// `ldp x0, x1, [x2]` on a translation fault at level 3: ISV = 0, IL, DFSC = 0b000111.
    const LDP: u64 = 0x9200_0007;

    #[test]
    fn store_word() {
        let far = 0xffff_0000_0900_0abc;
        let hpfar = 0x0900_0000 >> 8; // FIPA = IPA[51:12] at bits [43:4].
        let abort = decode_data_abort(STR_W3, far, hpfar);
        assert_eq!(abort.ec, EC_DATA_ABORT_LOWER);
        assert_eq!(abort.ipa, 0x0900_0abc);
        assert!(abort.il && abort.write && abort.far_valid && !abort.s1ptw);
        assert_eq!(abort.fault, FaultStatus::Translation { level: 3 });
        assert_eq!(abort.instruction_len(), 4);
        let access = abort.mmio().unwrap();
        assert_eq!(
            access,
            MmioAccess {
                ipa: 0x0900_0abc,
                size: AccessSize::Word,
                write: true,
                reg: 3,
                sign_extend: false,
                sixty_four: false,
            }
        );
        let mut regs = [0u64; 31];
        regs[3] = 0x1122_3344_5566_7788;
        assert_eq!(access.write_value(&regs), 0x5566_7788);
    }

    #[test]
    fn load_signed_byte() {
        let abort = decode_data_abort(LDRSB_X5, 0x123, 0x0000_0123_4560);
        assert_eq!(abort.ipa, 0x1_2345_6123);
        assert_eq!(abort.fault, FaultStatus::Permission { level: 2 });
        let s = abort.syndrome.unwrap();
        assert_eq!(
            s,
            Syndrome {
                size: AccessSize::Byte,
                sign_extend: true,
                reg: 5,
                sixty_four: true,
                acquire_release: false
            }
        );
        let access = abort.mmio().unwrap();
        assert!(!access.write);
        let mut regs = [7u64; 31];
        access.apply_read(&mut regs, 0xabcd_0080);
        assert_eq!(regs[5], 0xffff_ffff_ffff_ff80);
        access.apply_read(&mut regs, 0x7f);
        assert_eq!(regs[5], 0x7f);
        assert_eq!(regs[4], 7);
    }

    #[test]
    fn extension_rules() {
        let access = |size, sign_extend, sixty_four| MmioAccess {
            ipa: 0,
            size,
            write: false,
            reg: 0,
            sign_extend,
            sixty_four,
        };
        // ldrsh w0: sign-extend to 32 bits, upper half of X0 cleared.
        assert_eq!(
            access(AccessSize::Halfword, true, false).read_result(0x8001),
            0xffff_8001
        );
        // ldrsw x0.
        assert_eq!(
            access(AccessSize::Word, true, true).read_result(0xdead_8000_0000),
            0xffff_ffff_8000_0000
        );
        // ldrh w0: zero-extend, device bits above the size dropped.
        assert_eq!(
            access(AccessSize::Halfword, false, false).read_result(0xffff_8001),
            0x8001
        );
        // ldr x0.
        assert_eq!(
            access(AccessSize::Doubleword, true, true).read_result(u64::MAX),
            u64::MAX
        );
        // ldr w0 of a doubleword can't be encoded, but must still stay within 32 bits.
        assert_eq!(
            access(AccessSize::Doubleword, false, false).read_result(u64::MAX),
            0xffff_ffff
        );
    }

    #[test]
    fn xzr() {
        // str xzr: SRT = 31, SF, SAS = 0b11, WnR, translation fault level 3.
        let esr = 0x9000_0000 | 0x0300_0000 | 0x00c0_0000 | (31 << 16) | 0x8000 | 0x40 | 0x07;
        let access = decode_data_abort(esr, 0, 0).mmio().unwrap();
        assert_eq!(access.reg, 31);
        assert_eq!(access.write_value(&[u64::MAX; 31]), 0);
        let mut regs = [1u64; 31];
        access.apply_read(&mut regs, u64::MAX);
        assert_eq!(regs, [1u64; 31]);
    }

    #[test]
    fn not_emulated() {
        assert_eq!(
            decode_data_abort(LDP, 0, 0).mmio(),
            Err(NotMmio::NoSyndrome)
        );
        // S1PTW (0x80) on the str: the guest's tables are outside its memory.
        assert_eq!(
            decode_data_abort(STR_W3 | 0x80, 0, 0).mmio(),
            Err(NotMmio::StageOneWalk)
        );
        assert_eq!(
            decode_data_abort(STR_W3 | 0x100, 0, 0).mmio(),
            Err(NotMmio::CacheMaintenance)
        );
        // DFSC 0b100001: alignment; 0b001011: access flag level 3; 0b010000: external abort.
        for (dfsc, fault) in [
            (0x21, FaultStatus::Alignment),
            (0x0b, FaultStatus::AccessFlag { level: 3 }),
            (0x10, FaultStatus::SyncExternal),
        ] {
            let esr = (STR_W3 & !0x3f) | dfsc;
            assert_eq!(
                decode_data_abort(esr, 0, 0).mmio(),
                Err(NotMmio::Fault(fault))
            );
        }
        // FnV (0x400).
        assert_eq!(
            decode_data_abort(STR_W3 | 0x400, 0, 0).mmio(),
            Err(NotMmio::FarNotValid)
        );
        // EC 0x16 (HVC).
        assert_eq!(
            decode_data_abort(0x5a00_0000, 0, 0).mmio(),
            Err(NotMmio::NotDataAbort { ec: 0x16 })
        );
        assert!(!NotMmio::NoSyndrome.to_string().is_empty());
    }

    #[test]
    fn fault_names() {
        assert_eq!(
            FaultStatus::from_dfsc(0x04),
            FaultStatus::Translation { level: 0 }
        );
        assert_eq!(
            FaultStatus::from_dfsc(0x2b),
            FaultStatus::Translation { level: -1 }
        );
        assert_eq!(
            FaultStatus::from_dfsc(0x29),
            FaultStatus::AddressSize { level: -1 }
        );
        assert_eq!(
            FaultStatus::from_dfsc(0x15),
            FaultStatus::SyncExternalOnWalk { level: 1 }
        );
        assert_eq!(
            FaultStatus::from_dfsc(0x1f),
            FaultStatus::SyncParityOnWalk { level: 3 }
        );
        assert_eq!(FaultStatus::from_dfsc(0x30), FaultStatus::TlbConflict);
        assert_eq!(FaultStatus::from_dfsc(0x3f), FaultStatus::Other(0x3f));
        assert_eq!(
            FaultStatus::from_dfsc(0xc4),
            FaultStatus::Translation { level: 0 }
        );
    }

    #[test]
    fn hpfar_bits_outside_fipa_are_ignored() {
        // NS (bit 63) and bits [3:0] are not part of the IPA.
        let abort = decode_data_abort(STR_W3, 0xfff, (1 << 63) | 0xf | (0x10 << 4));
        assert_eq!(abort.ipa, 0x10fff);
        // The largest FIPA, IPA bits [51:12] all set.
        let abort = decode_data_abort(STR_W3, 0, u64::MAX);
        assert_eq!(abort.ipa, 0x000f_ffff_ffff_f000);
    }

    proptest! {
        #[test]
        fn any_syndrome_decodes(esr in any::<u64>(), far in any::<u64>(), hpfar in any::<u64>()) {
            let abort = decode_data_abort(esr, far, hpfar);
            prop_assert!(abort.ipa < 1 << 52);
            if let Ok(access) = abort.mmio() {
                prop_assert!(access.reg <= 31);
                let _ = access.write_value(&[u64::MAX; 31]);
            }
        }

        #[test]
        fn reads_stay_within_the_register(
            esr in any::<u64>(),
            data in any::<u64>(),
            regs in any::<[u64; 31]>(),
        ) {
            let access = match decode_data_abort(esr | ISS_ISV, 0, 0).mmio() {
                Ok(a) => a,
                Err(_) => MmioAccess {
                    ipa: 0,
                    size: AccessSize::from_sas(esr >> 22),
                    write: false,
                    reg: ((esr >> 16) & 0x1f) as u8,
                    sign_extend: esr & ISS_SSE != 0,
                    sixty_four: esr & ISS_SF != 0,
                },
            };
            let value = access.read_result(data);
            if !access.sixty_four {
                prop_assert_eq!(value >> 32, 0);
            }
            if !access.sign_extend {
                prop_assert_eq!(value & !access.size.mask(), 0);
            }
            let mut after = regs;
            access.apply_read(&mut after, data);
            for (i, (a, b)) in after.iter().zip(regs.iter()).enumerate() {
                if i != usize::from(access.reg) {
                    prop_assert_eq!(a, b);
                }
            }
            prop_assert_eq!(access.write_value(&regs) & !access.size.mask(), 0);
        }
    }
}
