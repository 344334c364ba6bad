//! Errors from building and changing stage-2 tables.

use core::fmt;

use crate::addr::{IntermediatePhysAddr, PhysAddr};

/// Why a [`map`](crate::Stage2Tables::map) or [`unmap`](crate::Stage2Tables::unmap) was
/// refused. A refused call leaves the translation unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The IPA, the PA or the size is not a multiple of 4 KiB.
    Unaligned {
        /// Start of the requested IPA range.
        ipa: IntermediatePhysAddr,
        /// Start of the requested PA range (`None` for an unmap).
        pa: Option<PhysAddr>,
        /// Requested size in bytes.
        size: u64,
    },
    /// The IPA range does not fit in the VM's IPA space.
    OutOfIpaRange {
        /// Start of the requested IPA range.
        ipa: IntermediatePhysAddr,
        /// Requested size in bytes.
        size: u64,
        /// The VM's IPA size in bits.
        ipa_bits: u8,
    },
    /// The PA range goes beyond the machine's physical address size.
    PaOutOfRange {
        /// Start of the requested PA range.
        pa: PhysAddr,
        /// Requested size in bytes.
        size: u64,
        /// The machine's physical address size in bits.
        pa_bits: u8,
    },
    /// Part of the IPA range is already mapped; a mapping is never silently replaced.
    Overlap {
        /// The first IPA of the requested range that is already mapped.
        ipa: IntermediatePhysAddr,
    },
    /// The [`TableAllocator`](crate::TableAllocator) has no page left for a translation table.
    OutOfTableMemory,
    /// The [`TableAllocator`](crate::TableAllocator) returned a table that is not aligned to
    /// its size or lies beyond 48-bit physical addresses: a bug in the allocator.
    BadTableAddress(PhysAddr),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unaligned { ipa, pa, size } => {
                write!(f, "{ipa}")?;
                if let Some(pa) = pa {
                    write!(f, ", {pa}")?;
                }
                write!(f, " or size {size:#x} is not 4 KiB aligned")
            }
            Self::OutOfIpaRange {
                ipa,
                size,
                ipa_bits,
            } => write!(
                f,
                "{ipa} + {size:#x} is outside the {ipa_bits}-bit IPA space"
            ),
            Self::PaOutOfRange { pa, size, pa_bits } => write!(
                f,
                "{pa} + {size:#x} is beyond the {pa_bits}-bit physical address space"
            ),
            Self::Overlap { ipa } => write!(f, "{ipa} is already mapped"),
            Self::OutOfTableMemory => write!(f, "out of memory for stage-2 translation tables"),
            Self::BadTableAddress(pa) => write!(
                f,
                "table allocator returned misaligned or out-of-range table at {pa}"
            ),
        }
    }
}
