//! What an SMMU implements, from SMMU_IDR0, SMMU_IDR1 and SMMU_IDR5, and whether the
//! hypervisor can use it.

use core::fmt;

/// The fields of the ID registers the driver depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// IDR0.S2P: stage-2 translation.
    pub stage2: bool,
    /// IDR0.ST_LEVEL = 0b01: two-level stream tables.
    pub two_level: bool,
    /// IDR0.TTF includes AArch64 tables.
    pub aarch64_tables: bool,
    /// IDR0.COHACC: table and queue accesses are coherent with the CPUs' caches.
    pub coherent: bool,
    /// IDR0.VMID16.
    pub vmid16: bool,
    /// IDR1.SIDSIZE: stream ID bits.
    pub sid_bits: u32,
    /// IDR1.CMDQS: log2 of the largest command queue.
    pub cmdq_max_log2: u32,
    /// IDR1.EVENTQS: log2 of the largest event queue.
    pub eventq_max_log2: u32,
    /// IDR5.GRAN4K.
    pub granule_4k: bool,
    /// IDR5.OAS, as bits (32 to 52).
    pub oas_bits: u8,
    /// IDR5.OAS, the raw encoding (what STE.S2PS takes).
    pub oas_encoding: u8,
}

/// Why the hypervisor cannot use an SMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// No stage-2 translation (SMMU_IDR0.S2P = 0): Tandem isolates devices with each VM's
    /// stage-2 tables.
    NoStage2,
    /// Only AArch32 translation tables (SMMU_IDR0.TTF).
    NoAarch64Tables,
    /// No 4 KiB granule (SMMU_IDR5.GRAN4K), which the stage-2 tables use.
    No4kGranule,
    /// SMMU_IDR5.OAS holds a reserved value.
    ReservedOas(u8),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStage2 => write!(
                f,
                "it has no stage-2 translation (SMMU_IDR0.S2P = 0); QEMU's -device arm-smmuv3 needs stage=2 or stage=nested"
            ),
            Self::NoAarch64Tables => write!(f, "it cannot walk AArch64 tables (SMMU_IDR0.TTF)"),
            Self::No4kGranule => write!(f, "it has no 4 KiB granule (SMMU_IDR5.GRAN4K = 0)"),
            Self::ReservedOas(v) => write!(f, "SMMU_IDR5.OAS is the reserved value {v:#x}"),
        }
    }
}

/// IDR5.OAS encodings to bits (the same encoding as ID_AA64MMFR0_EL1.PARange).
const OAS_BITS: [u8; 7] = [32, 36, 40, 42, 44, 48, 52];

impl Features {
    /// Decodes the ID registers; an error when Tandem cannot use this SMMU.
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Result<Self, Unsupported> {
        let bit = |v: u32, n: u32| v >> n & 1 == 1;
        let oas_encoding = (idr5 & 0x7) as u8;
        let oas_bits = *OAS_BITS
            .get(usize::from(oas_encoding))
            .ok_or(Unsupported::ReservedOas(oas_encoding))?;
        let ttf = idr0 >> 2 & 0b11;
        let features = Self {
            stage2: bit(idr0, 0),
            two_level: idr0 >> 27 & 0b11 == 0b01,
            aarch64_tables: ttf & 0b10 != 0,
            coherent: bit(idr0, 4),
            vmid16: bit(idr0, 18),
            sid_bits: idr1 & 0x3f,
            cmdq_max_log2: idr1 >> 21 & 0x1f,
            eventq_max_log2: idr1 >> 16 & 0x1f,
            granule_4k: bit(idr5, 4),
            oas_bits,
            oas_encoding,
        };
        if !features.stage2 {
            return Err(Unsupported::NoStage2);
        }
        if !features.aarch64_tables {
            return Err(Unsupported::NoAarch64Tables);
        }
        if !features.granule_4k {
            return Err(Unsupported::No4kGranule);
        }
        Ok(features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10's SMMUv3 on virt (`stage=nested`, less S1P here): S2P, AArch64 tables, coherent, 16-bit VMIDs,
    /// two-level tables; 16 SID bits, queues of up to 2^19 entries; OAS 44 bits, 4K and
    /// 64K granules.
    const QEMU_IDR0: u32 = 1 | 0b10 << 2 | 1 << 4 | 1 << 18 | 0b01 << 27;
    const QEMU_IDR1: u32 = 16 | 19 << 16 | 19 << 21;
    const QEMU_IDR5: u32 = 0b100 | 1 << 4 | 1 << 6;

    #[test]
    fn qemu_smmu() {
        let f = Features::decode(QEMU_IDR0, QEMU_IDR1, QEMU_IDR5).expect("usable");
        assert!(f.stage2 && f.two_level && f.coherent && f.vmid16 && f.granule_4k);
        assert_eq!(
            (f.sid_bits, f.cmdq_max_log2, f.eventq_max_log2),
            (16, 19, 19)
        );
        assert_eq!((f.oas_bits, f.oas_encoding), (44, 4));
    }

    #[test]
    fn refusals() {
        let stage1_only = QEMU_IDR0 & !1 | 1 << 1;
        assert_eq!(
            Features::decode(stage1_only, QEMU_IDR1, QEMU_IDR5),
            Err(Unsupported::NoStage2)
        );
        assert_eq!(
            Features::decode(QEMU_IDR0 & !(0b11 << 2) | 0b01 << 2, QEMU_IDR1, QEMU_IDR5),
            Err(Unsupported::NoAarch64Tables)
        );
        assert_eq!(
            Features::decode(QEMU_IDR0, QEMU_IDR1, QEMU_IDR5 & !(1 << 4)),
            Err(Unsupported::No4kGranule)
        );
        assert_eq!(
            Features::decode(QEMU_IDR0, QEMU_IDR1, QEMU_IDR5 | 0b111),
            Err(Unsupported::ReservedOas(7))
        );
        assert!(Unsupported::NoStage2.to_string().contains("stage=nested"));
    }
}
