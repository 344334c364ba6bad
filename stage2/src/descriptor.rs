//! Stage-2 memory attributes and the 64-bit descriptors that carry them.
//!
//! The attribute bit positions come from `aarch64-paging`'s [`Stage2Attributes`]. Its table
//! walker (`RootTable`, `Mapping`) is not used, for four reasons:
//!
//! * its `Translation` trait hands tables out as raw pointers and has an `unsafe fn`
//!   to free them, which this `forbid(unsafe_code)` crate can neither implement nor use;
//!   here tables are reached only through [`TableAllocator`](crate::TableAllocator), so
//!   the same code walks real memory at EL2 and a heap model on the host;
//! * its table allocation cannot fail (it panics), but running out of table memory must be an
//!   error the hypervisor can report;
//! * its root is one 4 KiB table, while a 40- to 43-bit IPA space at a level 1 start needs
//!   2 to 8 concatenated root tables;
//! * `map_range` replaces whatever was mapped, while a VM's map must never silently change.
//!
//! Descriptor formats: Arm ARM (DDI 0487K.a) D8.3, "Translation table descriptor formats".
//! MemAttr: "Stage 2 memory type and Cacheability attributes when FEAT_S2FWB is disabled";
//! S2AP: "Stage 2 data access permissions"; both in chapter D8 of the same manual.

use aarch64_paging::descriptor::Stage2Attributes;

use crate::addr::PhysAddr;

/// The kind of memory a stage-2 mapping gives the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// Normal memory, Inner and Outer Write-Back Cacheable (MemAttr `0b1111`), Inner
    /// Shareable.
    Normal,
    /// Device-nGnRE memory (MemAttr `0b0001`), for MMIO windows passed through to the guest.
    Device,
}

/// What the guest may do with a stage-2 mapping (the S2AP field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads and writes allowed (S2AP `0b11`).
    ReadWrite,
    /// Reads allowed, writes fault to EL2 (S2AP `0b01`).
    ReadOnly,
    /// Every access faults to EL2 (S2AP `0b00`). The range still counts as mapped, so it is
    /// reserved against other mappings; use it for pages the hypervisor traps on purpose.
    None,
}

/// The stage-2 attributes of one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage2Attrs {
    /// Memory type and cacheability.
    pub kind: MemKind,
    /// Read/write permission.
    pub access: Access,
    /// Whether the guest may fetch instructions from it (`false` sets XN).
    pub exec: bool,
}

impl Stage2Attrs {
    /// Guest RAM: Normal Write-Back, read-write, executable.
    pub const NORMAL_RWX: Self = Self {
        kind: MemKind::Normal,
        access: Access::ReadWrite,
        exec: true,
    };

    /// A passed-through device window: Device-nGnRE, read-write, execute-never.
    pub const DEVICE_RW: Self = Self {
        kind: MemKind::Device,
        access: Access::ReadWrite,
        exec: false,
    };

    /// The attribute bits of a block or page descriptor (everything but the output address
    /// and bits\[1:0\]). The Access Flag is always set: Tandem does not track guest accesses,
    /// and a clear AF would fault on first use without FEAT_HAFDBS.
    pub(crate) fn bits(self) -> u64 {
        let memattr = match self.kind {
            // MemAttr[3:2] = Outer Write-Back, MemAttr[1:0] = Inner Write-Back.
            MemKind::Normal => {
                Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
                    | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
                    | Stage2Attributes::SH_INNER
            }
            // SH is ignored for Device memory, which is always Outer Shareable; leave it 0.
            MemKind::Device => Stage2Attributes::MEMATTR_DEVICE_nGnRE | Stage2Attributes::SH_NONE,
        };
        let s2ap = match self.access {
            Access::ReadWrite => Stage2Attributes::S2AP_ACCESS_RW,
            Access::ReadOnly => Stage2Attributes::S2AP_ACCESS_RO,
            Access::None => Stage2Attributes::S2AP_ACCESS_NONE,
        };
        let xn = if self.exec {
            Stage2Attributes::empty()
        } else {
            Stage2Attributes::XN
        };
        (memattr | s2ap | xn | Stage2Attributes::ACCESS_FLAG).bits() as u64
    }

    /// Reads the attributes back from a block or page descriptor; `None` for encodings this
    /// crate never writes.
    pub(crate) fn from_bits(desc: u64) -> Option<Self> {
        let kind = match (desc >> MEMATTR_SHIFT) & 0b1111 {
            0b1111 => MemKind::Normal,
            0b0001 => MemKind::Device,
            _ => return None,
        };
        let access = match (desc >> S2AP_SHIFT) & 0b11 {
            0b11 => Access::ReadWrite,
            0b01 => Access::ReadOnly,
            0b00 => Access::None,
            _ => return None,
        };
        let exec = desc & bit(Stage2Attributes::XN) == 0;
        Some(Self { kind, access, exec })
    }
}

const MEMATTR_SHIFT: u32 = 2;
const S2AP_SHIFT: u32 = 6;

/// Output address bits \[47:12\] of a descriptor (no FEAT_LPA2, so no 52-bit addresses).
pub(crate) const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Bits\[1:0\] of a table descriptor (levels 0-2) or page descriptor (level 3).
const TABLE_OR_PAGE: u64 = 0b11;
/// Bits\[1:0\] of a block descriptor (levels 1 and 2).
const BLOCK: u64 = 0b01;

fn bit(flag: Stage2Attributes) -> u64 {
    flag.bits() as u64
}

/// What a descriptor at a given level means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Descriptor {
    /// Bit\[0\] clear, or an encoding that is reserved at this level (a translation fault).
    Invalid,
    /// Points to the next-level table.
    Table(PhysAddr),
    /// A block or page mapping whose output starts at the given address.
    Leaf(PhysAddr, u64),
}

impl Descriptor {
    /// Decodes `desc` found at `level` (0..=3) of a 4 KiB-granule stage-2 walk.
    pub(crate) fn decode(desc: u64, level: u8) -> Self {
        let oa = PhysAddr(desc & OA_MASK);
        match (desc & 0b11, level) {
            (TABLE_OR_PAGE, 0..=2) => Self::Table(oa),
            (TABLE_OR_PAGE, 3) | (BLOCK, 1 | 2) => Self::Leaf(oa, desc),
            _ => Self::Invalid,
        }
    }
}

/// A table descriptor pointing to the next-level table at `table`.
pub(crate) fn table_descriptor(table: PhysAddr) -> u64 {
    (table.0 & OA_MASK) | TABLE_OR_PAGE
}

/// A block (levels 1 and 2) or page (level 3) descriptor mapping to `pa`.
pub(crate) fn leaf_descriptor(level: u8, pa: PhysAddr, attrs: Stage2Attrs) -> u64 {
    let kind = if level == 3 { TABLE_OR_PAGE } else { BLOCK };
    (pa.0 & OA_MASK) | attrs.bits() | kind
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values assembled by hand from the field positions in D8.3 (block and page
    // descriptors, stage 2): bits[1:0] type, MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10],
    // output address [47:n], XN[54] (XN[1], with XN[0] = bit 53 left 0: no execution at EL1
    // or EL0, the FEAT_XNX-compatible encoding).
    const TYPE_PAGE: u64 = 0b11;
    const TYPE_BLOCK: u64 = 0b01;
    const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
    const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
    const S2AP_RW: u64 = 0b11 << 6;
    const S2AP_RO: u64 = 0b01 << 6;
    const SH_INNER: u64 = 0b11 << 8;
    const AF: u64 = 1 << 10;
    const XN: u64 = 1 << 54;

    #[test]
    fn normal_rwx_page() {
        let d = leaf_descriptor(3, PhysAddr(0x8000_0000), Stage2Attrs::NORMAL_RWX);
        assert_eq!(
            d,
            0x8000_0000 | TYPE_PAGE | MEMATTR_NORMAL_WB | S2AP_RW | SH_INNER | AF
        );
        assert_eq!(d, 0x8000_07ff);
    }

    #[test]
    fn normal_rwx_blocks() {
        let d2 = leaf_descriptor(2, PhysAddr(0x4020_0000), Stage2Attrs::NORMAL_RWX);
        assert_eq!(d2, 0x4020_07fd);
        let d1 = leaf_descriptor(1, PhysAddr(0x40_0000_0000), Stage2Attrs::NORMAL_RWX);
        assert_eq!(
            d1,
            0x40_0000_0000 | TYPE_BLOCK | MEMATTR_NORMAL_WB | S2AP_RW | SH_INNER | AF
        );
    }

    #[test]
    fn device_rw_page() {
        let d = leaf_descriptor(3, PhysAddr(0x0900_0000), Stage2Attrs::DEVICE_RW);
        assert_eq!(
            d,
            0x0900_0000 | TYPE_PAGE | MEMATTR_DEVICE_NGNRE | S2AP_RW | AF | XN
        );
        assert_eq!(d, 0x0040_0000_0900_04c7);
    }

    #[test]
    fn read_only_and_no_access() {
        let ro = Stage2Attrs {
            kind: MemKind::Normal,
            access: Access::ReadOnly,
            exec: false,
        };
        let d = leaf_descriptor(3, PhysAddr(0x1000), ro);
        assert_eq!(
            d,
            0x1000 | TYPE_PAGE | MEMATTR_NORMAL_WB | S2AP_RO | SH_INNER | AF | XN
        );
        let none = Stage2Attrs {
            access: Access::None,
            ..ro
        };
        assert_eq!(leaf_descriptor(3, PhysAddr(0x1000), none) & (0b11 << 6), 0);
    }

    #[test]
    fn table_descriptor_is_address_and_0b11() {
        assert_eq!(table_descriptor(PhysAddr(0x1234_5000)), 0x1234_5003);
    }

    #[test]
    fn every_attribute_combination_round_trips() {
        for kind in [MemKind::Normal, MemKind::Device] {
            for access in [Access::ReadWrite, Access::ReadOnly, Access::None] {
                for exec in [false, true] {
                    let a = Stage2Attrs { kind, access, exec };
                    assert_eq!(Stage2Attrs::from_bits(a.bits()), Some(a));
                }
            }
        }
    }

    #[test]
    fn decode_respects_level() {
        let block = leaf_descriptor(2, PhysAddr(0x20_0000), Stage2Attrs::NORMAL_RWX);
        assert!(matches!(Descriptor::decode(block, 2), Descriptor::Leaf(..)));
        // Block descriptors do not exist at level 0 (4 KiB granule without FEAT_LPA2) and
        // bits[1:0] = 0b01 is reserved at level 3: both fault.
        assert_eq!(Descriptor::decode(block, 0), Descriptor::Invalid);
        assert_eq!(Descriptor::decode(block, 3), Descriptor::Invalid);
        assert_eq!(Descriptor::decode(0, 1), Descriptor::Invalid);
        assert_eq!(
            Descriptor::decode(0x5003, 0),
            Descriptor::Table(PhysAddr(0x5000))
        );
    }
}
