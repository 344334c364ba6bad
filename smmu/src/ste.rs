//! Stream table entries (IHI 0070, 5.2): 64 bytes that say what the SMMU does with one
//! stream's transactions.

use core::fmt;

use stage2::Stage2Config;

use crate::features::Features;

/// One stream table entry, as the eight 64-bit words the SMMU reads (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ste(pub [u64; 8]);

/// STE.V.
const V: u64 = 1;
/// STE.Config = 0b110: stage 1 bypassed, stage 2 translates.
const CONFIG_S2_ONLY: u64 = 0b110 << 1;
/// STE.SHCFG = 0b01: use the shareability the device's transaction carries.
const SHCFG_INCOMING: u64 = 0b01 << 44;

// Fields of word 2 (bits 128..191 of the entry).
const S2T0SZ_SHIFT: u32 = 32;
const S2SL0_SHIFT: u32 = 38;
const S2IR0_SHIFT: u32 = 40;
const S2OR0_SHIFT: u32 = 42;
const S2SH0_SHIFT: u32 = 44;
const S2TG_SHIFT: u32 = 46;
const S2PS_SHIFT: u32 = 48;
const S2AA64: u64 = 1 << 51;
const S2PTW: u64 = 1 << 54;
const S2R: u64 = 1 << 58;
/// Word 3's S2TTB field: bits \[51:4\].
const S2TTB_MASK: u64 = ((1 << 52) - 1) & !0xf;

/// The stage-2 parameters of one VM, as the SMMU sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Ste {
    /// The VM's VMID (the same tag as its CPUs' TLB entries).
    pub vmid: u16,
    /// Physical address of the root table (the VTTBR_EL2 BADDR).
    pub root: u64,
    /// STE.S2T0SZ.
    pub t0sz: u8,
    /// STE.S2SL0 (the VTCR_EL2.SL0 encoding).
    pub sl0: u8,
    /// STE.S2PS (the VTCR_EL2.PS encoding, capped at the SMMU's OAS).
    pub ps: u8,
}

/// Why a VM's stage-2 tables cannot be given to an SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteError {
    /// The SMMU's input address size is too small for the tables' start level.
    IpaTooSmall {
        /// The SMMU's address bits.
        smmu_bits: u8,
        /// The level the tables start at.
        start_level: u8,
    },
    /// The root table lies above what the SMMU can address.
    RootOutOfRange {
        /// The root's physical address.
        root: u64,
        /// The SMMU's output address bits.
        oas_bits: u8,
    },
}

impl fmt::Display for SteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IpaTooSmall {
                smmu_bits,
                start_level,
            } => write!(
                f,
                "the SMMU's {smmu_bits}-bit addresses cannot start a walk at level {start_level}"
            ),
            Self::RootOutOfRange { root, oas_bits } => write!(
                f,
                "the stage-2 root table at {root:#x} is beyond the SMMU's {oas_bits}-bit output addresses"
            ),
        }
    }
}

impl Stage2Ste {
    /// The SMMU's view of a VM's stage-2 tables: the same root, start level and VMID as its
    /// CPUs', with an input size no larger than the SMMU's output size. The walk starts at
    /// the same level, so the same tables serve both; an SMMU with fewer address bits than
    /// the CPU simply cannot reach the IPAs above its limit.
    pub fn new(config: &Stage2Config, root: u64, features: &Features) -> Result<Self, SteError> {
        let bits = config.ipa_bits().min(features.oas_bits);
        let start_level = config.start_level();
        // A walk starting at level 1 resolves at most 39 bits with one table, plus up to
        // 4 more with concatenated ones; one starting at level 0 needs more than 39 bits
        // (IHI 0070 5.2, STE.S2SL0, and the Arm ARM's AArch64.S2InconsistentSL).
        let fits = match start_level {
            0 => bits > 39,
            _ => (31..=43).contains(&bits),
        };
        if !fits {
            return Err(SteError::IpaTooSmall {
                smmu_bits: bits,
                start_level,
            });
        }
        if features.oas_bits < 64 && root >> features.oas_bits != 0 {
            return Err(SteError::RootOutOfRange {
                root,
                oas_bits: features.oas_bits,
            });
        }
        let vtcr = config.vtcr();
        let ps = ((vtcr >> 16) & 0b111) as u8;
        Ok(Self {
            vmid: u16::from(config.vmid().raw()),
            root,
            t0sz: 64 - bits,
            sl0: ((vtcr >> 6) & 0b11) as u8,
            ps: ps.min(features.oas_encoding),
        })
    }
}

impl Ste {
    /// An entry with V = 0: the SMMU aborts the stream's transactions and records
    /// C_BAD_STE.
    pub const INVALID: Ste = Ste([0; 8]);

    /// An entry that translates through a VM's stage-2 tables. The table walks are Inner
    /// Shareable Write-Back, as the CPUs' (VTCR_EL2), and faults are recorded (S2R) so that
    /// the hypervisor can name the VM. S2PTW makes a walk that lands on device memory fault
    /// instead of reading it.
    pub fn stage2(s2: &Stage2Ste) -> Ste {
        let mut words = [0u64; 8];
        words[0] = V | CONFIG_S2_ONLY;
        words[1] = SHCFG_INCOMING;
        words[2] = u64::from(s2.vmid)
            | u64::from(s2.t0sz & 0x3f) << S2T0SZ_SHIFT
            | u64::from(s2.sl0 & 0b11) << S2SL0_SHIFT
            | 0b01 << S2IR0_SHIFT
            | 0b01 << S2OR0_SHIFT
            | 0b11 << S2SH0_SHIFT
            | 0b00 << S2TG_SHIFT
            | u64::from(s2.ps & 0b111) << S2PS_SHIFT
            | S2AA64
            | S2PTW
            | S2R;
        words[3] = s2.root & S2TTB_MASK;
        Ste(words)
    }

    /// Whether the entry is valid (STE.V).
    pub fn valid(&self) -> bool {
        self.0[0] & V != 0
    }

    /// The VMID of a stage-2 entry.
    pub fn vmid(&self) -> u16 {
        self.0[2] as u16
    }

    /// The root table of a stage-2 entry.
    pub fn root(&self) -> u64 {
        self.0[3] & S2TTB_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage2::{PaRange, Vmid};

    fn features(oas_bits: u8, oas_encoding: u8) -> Features {
        Features {
            stage2: true,
            two_level: true,
            aarch64_tables: true,
            coherent: true,
            vmid16: true,
            sid_bits: 16,
            cmdq_max_log2: 19,
            eventq_max_log2: 19,
            granule_4k: true,
            oas_bits,
            oas_encoding,
        }
    }

    fn config(ipa_bits: u8, pa: PaRange, vmid: u8) -> Stage2Config {
        Stage2Config::new(ipa_bits, pa, Vmid::new(vmid)).expect("config")
    }

    #[test]
    fn qemu_cpu_and_smmu() {
        // -cpu max: 48-bit IPAs starting at level 0; QEMU's SMMU: 44 bits.
        let c = config(48, PaRange::Bits48, 3);
        let s2 = Stage2Ste::new(&c, 0x4123_4000, &features(44, 4)).expect("fits");
        assert_eq!(s2.t0sz, 20);
        assert_eq!(s2.sl0, 0b10, "level 0, as the CPU");
        assert_eq!(s2.ps, 4, "capped at the SMMU's 44 bits");
        let ste = Ste::stage2(&s2);
        assert!(ste.valid());
        assert_eq!(ste.0[0], 0b1101, "V, Config = S2 translate");
        assert_eq!(ste.vmid(), 3);
        assert_eq!(ste.root(), 0x4123_4000);
        // Word 2 decoded the way QEMU's STE_S2* macros do, from its 32-bit halves.
        let word5 = (ste.0[2] >> 32) as u32;
        assert_eq!(word5 & 0x3f, 20, "S2T0SZ");
        assert_eq!(word5 >> 6 & 3, 0b10, "S2SL0");
        assert_eq!(word5 >> 14 & 3, 0, "S2TG = 4 KiB");
        assert_eq!(word5 >> 16 & 7, 4, "S2PS");
        assert_eq!(word5 >> 19 & 1, 1, "S2AA64");
        assert_eq!(word5 >> 20 & 1, 0, "S2ENDI little-endian");
        assert_eq!(word5 >> 25 & 1, 0, "S2S: no stalls");
        assert_eq!(word5 >> 26 & 1, 1, "S2R: faults recorded");
        assert!(!Ste::INVALID.valid());
    }

    #[test]
    fn level_one_tables() {
        let c = config(40, PaRange::Bits40, 1);
        let s2 = Stage2Ste::new(&c, 0x8000_0000, &features(48, 5)).expect("fits");
        assert_eq!((s2.t0sz, s2.sl0, s2.ps), (24, 0b01, 0b010));
    }

    #[test]
    fn refusals() {
        let c = config(48, PaRange::Bits48, 1);
        assert_eq!(
            Stage2Ste::new(&c, 0x1000, &features(36, 1)),
            Err(SteError::IpaTooSmall {
                smmu_bits: 36,
                start_level: 0
            })
        );
        let c = config(40, PaRange::Bits40, 1);
        assert_eq!(
            Stage2Ste::new(&c, 1 << 33, &features(32, 0)),
            Err(SteError::RootOutOfRange {
                root: 1 << 33,
                oas_bits: 32
            })
        );
    }
}
