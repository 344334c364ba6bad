//! The shape of a VM's stage-2 address space, and the VTCR_EL2 value that describes it.
//!
//! Register and field names are those of the VTCR_EL2 register description in the Arm ARM
//! (DDI 0487K.a); the start-level rules are in D8.2, "Translation process" (stage 2 initial
//! lookup level and concatenated tables), and in the pseudocode functions
//! `AArch64.S2InvalidSL` and `AArch64.S2InconsistentSL`.

use core::fmt;

use crate::allocator::ENTRIES_PER_TABLE;
use crate::vmid::Vmid;

/// The physical address size of the machine, as read from `ID_AA64MMFR0_EL1.PARange`.
///
/// The same encoding is written to `VTCR_EL2.PS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaRange {
    /// 32 bits, 4 GiB (`0b0000`).
    Bits32,
    /// 36 bits, 64 GiB (`0b0001`).
    Bits36,
    /// 40 bits, 1 TiB (`0b0010`).
    Bits40,
    /// 42 bits, 4 TiB (`0b0011`).
    Bits42,
    /// 44 bits, 16 TiB (`0b0100`).
    Bits44,
    /// 48 bits, 256 TiB (`0b0101`).
    Bits48,
}

impl PaRange {
    /// Decodes the `ID_AA64MMFR0_EL1.PARange` field (bits \[3:0\]).
    ///
    /// 52- and 56-bit machines (`0b0110`, `0b0111`) give [`PaRange::Bits48`]: with the
    /// 4 KiB granule and without FEAT_LPA2, descriptors carry 48-bit output addresses.
    pub fn from_parange(field: u8) -> Result<Self, ConfigError> {
        match field {
            0b0000 => Ok(Self::Bits32),
            0b0001 => Ok(Self::Bits36),
            0b0010 => Ok(Self::Bits40),
            0b0011 => Ok(Self::Bits42),
            0b0100 => Ok(Self::Bits44),
            0b0101..=0b0111 => Ok(Self::Bits48),
            other => Err(ConfigError::UnknownPaRange(other)),
        }
    }

    /// The number of physical address bits.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Bits32 => 32,
            Self::Bits36 => 36,
            Self::Bits40 => 40,
            Self::Bits42 => 42,
            Self::Bits44 => 44,
            Self::Bits48 => 48,
        }
    }

    /// The `PARange`/`VTCR_EL2.PS` encoding.
    pub const fn encoding(self) -> u64 {
        match self {
            Self::Bits32 => 0b000,
            Self::Bits36 => 0b001,
            Self::Bits40 => 0b010,
            Self::Bits42 => 0b011,
            Self::Bits44 => 0b100,
            Self::Bits48 => 0b101,
        }
    }
}

/// Why a [`Stage2Config`] cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The IPA size is outside 32..=48 bits, the range this crate supports with the 4 KiB
    /// granule.
    IpaBitsUnsupported(u8),
    /// The IPA size is larger than the machine's physical address size, which the
    /// architecture does not allow.
    IpaBeyondPaRange {
        /// The requested IPA size in bits.
        ipa_bits: u8,
        /// The machine's physical address size in bits.
        pa_bits: u8,
    },
    /// `ID_AA64MMFR0_EL1.PARange` holds a reserved value.
    UnknownPaRange(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IpaBitsUnsupported(bits) => {
                write!(f, "IPA size of {bits} bits is not supported (32 to 48)")
            }
            Self::IpaBeyondPaRange { ipa_bits, pa_bits } => write!(
                f,
                "IPA size of {ipa_bits} bits exceeds the {pa_bits}-bit physical address size"
            ),
            Self::UnknownPaRange(field) => {
                write!(f, "ID_AA64MMFR0_EL1.PARange value {field:#x} is reserved")
            }
        }
    }
}

/// The configuration of one VM's stage-2 translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    ipa_bits: u8,
    pa_range: PaRange,
    vmid: Vmid,
}

impl Stage2Config {
    /// A VM with an IPA space of `ipa_bits` bits (32..=48, at most `pa_range.bits()`), on a
    /// machine whose physical address size is `pa_range`, tagged in the TLBs with `vmid`.
    pub fn new(ipa_bits: u8, pa_range: PaRange, vmid: Vmid) -> Result<Self, ConfigError> {
        if !(32..=48).contains(&ipa_bits) {
            return Err(ConfigError::IpaBitsUnsupported(ipa_bits));
        }
        if ipa_bits > pa_range.bits() {
            return Err(ConfigError::IpaBeyondPaRange {
                ipa_bits,
                pa_bits: pa_range.bits(),
            });
        }
        Ok(Self {
            ipa_bits,
            pa_range,
            vmid,
        })
    }

    /// The IPA size in bits.
    pub const fn ipa_bits(&self) -> u8 {
        self.ipa_bits
    }

    /// The machine's physical address size.
    pub const fn pa_range(&self) -> PaRange {
        self.pa_range
    }

    /// The VMID that tags this VM's TLB entries.
    pub const fn vmid(&self) -> Vmid {
        self.vmid
    }

    /// The size of the IPA space in bytes.
    pub const fn ipa_size(&self) -> u64 {
        1 << self.ipa_bits
    }

    /// The translation table level the walk starts at: 1 for IPA sizes up to 43 bits, 0
    /// above.
    ///
    /// For each start level the IPA bits above those resolved by the lower levels must number
    /// 1 to 13 (`AArch64.S2InconsistentSL`): up to 16 concatenated root tables. Level 1
    /// resolves bits \[38:30\] per table, so 32..=39 bits need one table and 40..=43 bits need
    /// 2, 4, 8 or 16 concatenated ones. A level 0 start (`SL0 = 0b10`) is only valid when the
    /// machine has at least 44 PA bits (`AArch64.S2InvalidSL`), which is the case whenever
    /// `ipa_bits` ≥ 44 since the IPA size never exceeds the PA size.
    pub const fn start_level(&self) -> u8 {
        if self.ipa_bits <= 43 {
            1
        } else {
            0
        }
    }

    /// Number of concatenated 4 KiB tables that form the root (1, 2, 4, 8 or 16).
    pub const fn root_pages(&self) -> usize {
        let resolved_below = level_shift(self.start_level()) + 9;
        if self.ipa_bits as u32 > resolved_below {
            1 << (self.ipa_bits as u32 - resolved_below)
        } else {
            1
        }
    }

    /// Number of descriptors in the root, across all its concatenated tables.
    pub(crate) const fn root_entries(&self) -> usize {
        self.root_pages() * ENTRIES_PER_TABLE
    }

    /// The VTCR_EL2 value for this configuration.
    ///
    /// | Field | Bits | Value |
    /// |---|---|---|
    /// | T0SZ | \[5:0\] | `64 - ipa_bits` |
    /// | SL0 | \[7:6\] | `0b01` (start at level 1) or `0b10` (level 0), see [`start_level`](Self::start_level) |
    /// | IRGN0 | \[9:8\] | `0b01`: walks are Inner Write-Back Read-Allocate Write-Allocate Cacheable |
    /// | ORGN0 | \[11:10\] | `0b01`: likewise Outer |
    /// | SH0 | \[13:12\] | `0b11`: walks are Inner Shareable |
    /// | TG0 | \[15:14\] | `0b00`: 4 KiB granule |
    /// | PS | \[18:16\] | the [`PaRange`] encoding |
    /// | VS | \[19\] | `0`: 8-bit VMIDs |
    /// | HA, HD | \[21\], \[22\] | `0`: no hardware Access flag or dirty state updates |
    /// | RES1 | \[31\] | `1` |
    ///
    /// Every other field is 0: no FEAT_TTST small tables (SL2 = 0), no FEAT_LPA2 (DS = 0),
    /// Non-secure IPA space only (NSW, NSA = 0).
    pub const fn vtcr(&self) -> u64 {
        let t0sz = 64 - self.ipa_bits as u64;
        let sl0: u64 = match self.start_level() {
            0 => 0b10,
            _ => 0b01,
        };
        t0sz | sl0 << 6
            | VTCR_IRGN0_WBWA << 8
            | VTCR_ORGN0_WBWA << 10
            | VTCR_SH0_INNER << 12
            | VTCR_TG0_4K << 14
            | self.pa_range.encoding() << 16
            | VTCR_RES1
    }
}

const VTCR_IRGN0_WBWA: u64 = 0b01;
const VTCR_ORGN0_WBWA: u64 = 0b01;
const VTCR_SH0_INNER: u64 = 0b11;
const VTCR_TG0_4K: u64 = 0b00;
const VTCR_RES1: u64 = 1 << 31;

/// The lowest IPA bit resolved at `level` (12 at level 3, 21 at 2, 30 at 1, 39 at 0).
pub(crate) const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// The bytes one descriptor covers at `level`.
pub(crate) const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ipa_bits: u8, pa: PaRange) -> Stage2Config {
        match Stage2Config::new(ipa_bits, pa, Vmid::new(1)) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn vtcr_40_bit_ipa() {
        let c = config(40, PaRange::Bits40);
        assert_eq!(c.start_level(), 1);
        assert_eq!(c.root_pages(), 2);
        // T0SZ 24 | SL0 0b01 | IRGN0 0b01 | ORGN0 0b01 | SH0 0b11 | TG0 0 | PS 0b010 | RES1.
        let expected = 24 | 0b01 << 6 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b010 << 16 | 1 << 31;
        assert_eq!(c.vtcr(), expected);
        assert_eq!(c.vtcr(), 0x8002_3558);
    }

    #[test]
    fn vtcr_48_bit_ipa() {
        let c = config(48, PaRange::Bits48);
        assert_eq!(c.start_level(), 0);
        assert_eq!(c.root_pages(), 1);
        let expected = 16 | 0b10 << 6 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | 0b101 << 16 | 1 << 31;
        assert_eq!(c.vtcr(), expected);
        assert_eq!(c.vtcr(), 0x8005_3590);
    }

    #[test]
    fn start_level_and_concatenation_follow_ipa_size() {
        let cases = [
            (32, 1, 1),
            (39, 1, 1),
            (40, 1, 2),
            (41, 1, 4),
            (42, 1, 8),
            (43, 1, 16),
            (44, 0, 1),
            (48, 0, 1),
        ];
        for (bits, level, pages) in cases {
            let c = config(bits, PaRange::Bits48);
            assert_eq!((c.start_level(), c.root_pages()), (level, pages), "{bits}");
            // AArch64.S2InconsistentSL: the start level resolves 1 to 9 + 4 bits, the 4 extra
            // bits by concatenating up to 16 tables.
            let at_start = u32::from(bits) - level_shift(level);
            assert!((1..=13).contains(&at_start), "{bits}");
            assert_eq!(pages, 1 << at_start.saturating_sub(9), "{bits}");
        }
    }

    #[test]
    fn config_rejects_bad_sizes() {
        let v = Vmid::new(1);
        assert_eq!(
            Stage2Config::new(31, PaRange::Bits48, v),
            Err(ConfigError::IpaBitsUnsupported(31))
        );
        assert_eq!(
            Stage2Config::new(49, PaRange::Bits48, v),
            Err(ConfigError::IpaBitsUnsupported(49))
        );
        assert_eq!(
            Stage2Config::new(44, PaRange::Bits40, v),
            Err(ConfigError::IpaBeyondPaRange {
                ipa_bits: 44,
                pa_bits: 40
            })
        );
    }

    #[test]
    fn parange_decoding() {
        assert_eq!(PaRange::from_parange(0b0010), Ok(PaRange::Bits40));
        assert_eq!(PaRange::from_parange(0b0110), Ok(PaRange::Bits48));
        assert_eq!(
            PaRange::from_parange(0b1000),
            Err(ConfigError::UnknownPaRange(8))
        );
    }
}
