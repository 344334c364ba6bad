//! Address newtypes for the two sides of stage-2 translation, and the 4 KiB granule.

use core::fmt;

/// Size of a translation granule, a page and a translation table: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Size of a level 2 block with the 4 KiB granule: 2 MiB.
pub const BLOCK_2M: u64 = 1 << 21;

/// Size of a level 1 block with the 4 KiB granule: 1 GiB.
pub const BLOCK_1G: u64 = 1 << 30;

/// A physical address: the output of stage-2 translation.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

/// An intermediate physical address (IPA): what a guest sees as its physical address, the
/// input of stage-2 translation.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntermediatePhysAddr(pub u64);

impl PhysAddr {
    /// The address as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl IntermediatePhysAddr {
    /// The address as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA {:#x}", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA {:#x}", self.0)
    }
}

impl fmt::Debug for IntermediatePhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPA {:#x}", self.0)
    }
}

impl fmt::Display for IntermediatePhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPA {:#x}", self.0)
    }
}

/// Whether `value` is a multiple of `align`, which must be a power of two.
pub(crate) const fn is_aligned(value: u64, align: u64) -> bool {
    value & (align - 1) == 0
}
