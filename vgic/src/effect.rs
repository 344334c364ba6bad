//! What the virtual GIC asks of the hypervisor: effects, debug notes, and access widths.

use alloc::vec::Vec;

/// The width of a guest's MMIO access, from the data abort's `ESR_EL2.ISS.SAS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Half,
    /// 32 bits.
    Word,
    /// 64 bits.
    Double,
}

impl AccessWidth {
    /// The width of an access of `bytes` bytes, if it is 1, 2, 4 or 8.
    pub fn from_bytes(bytes: usize) -> Option<Self> {
        match bytes {
            1 => Some(Self::Byte),
            2 => Some(Self::Half),
            4 => Some(Self::Word),
            8 => Some(Self::Double),
            _ => None,
        }
    }

    /// The width named by `ESR_EL2.ISS.SAS` (0 byte, 1 halfword, 2 word, 3 doubleword); only
    /// the low two bits are looked at.
    pub fn from_sas(sas: u8) -> Self {
        match sas & 3 {
            0 => Self::Byte,
            1 => Self::Half,
            2 => Self::Word,
            _ => Self::Double,
        }
    }

    /// The number of bytes accessed.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Half => 2,
            Self::Word => 4,
            Self::Double => 8,
        }
    }

    /// The mask of the bits an access of this width carries.
    pub(crate) fn mask(self) -> u64 {
        match self {
            Self::Byte => 0xff,
            Self::Half => 0xffff,
            Self::Word => 0xffff_ffff,
            Self::Double => u64::MAX,
        }
    }
}

/// Which frame an access or note is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The distributor (`GICD`); offsets from its base.
    Distributor,
    /// The v3 redistributor region (`GICR`); offsets from the region's base, so vCPU *n*'s
    /// RD frame is at *n* × [`GICR_STRIDE`](crate::GICR_STRIDE).
    Redistributor,
}

/// Why an access was read-as-zero, write-ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// No register this model implements is at this offset.
    Unimplemented,
    /// The register exists but not for an access of this width.
    BadWidth,
    /// The access is not aligned to its own width.
    Misaligned,
    /// A write to a read-only register.
    ReadOnly,
    /// A read of a write-only register (`GICD_SGIR`).
    WriteOnly,
    /// The offset lies beyond the frame or beyond the last vCPU's redistributor.
    OutsideFrame,
    /// The accessing vCPU index is not one of this VM's (a hypervisor bug, not a guest's).
    NoSuchVcpu,
}

/// A debug-level observation: nothing is wrong with the hypervisor, but the guest did
/// something the model answered with a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// An access that was read-as-zero, write-ignored.
    Ignored {
        /// The frame accessed.
        region: Region,
        /// The offset within it.
        offset: u64,
        /// The access width.
        width: AccessWidth,
        /// Whether it was a write.
        write: bool,
        /// Why it was ignored.
        why: Ignored,
    },
    /// A v2 `GICD_SGIR` write with the reserved `TargetListFilter` 0b11, ignored.
    ReservedSgiFilter {
        /// The value written.
        value: u32,
    },
}

/// Something the hypervisor must do after a call into the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// This vCPU has a newly deliverable interrupt. If it is running or waiting (WFI) on
    /// another physical CPU, send that CPU an IPI so it exits and calls
    /// [`sync`](crate::Vgic::sync) then [`flush`](crate::Vgic::flush). The vCPU whose own
    /// guest access caused the change is never named; for [`raise`](crate::Vgic::raise)
    /// and the other hypervisor inputs the caller ignores a kick for the vCPU it is itself
    /// handling.
    Kick(usize),
    /// A forwarded hardware interrupt was deactivated (or its pending state removed) in
    /// software, not through a list register: write this INTID to the physical
    /// `ICC_DIR_EL1`/`GICC_DIR`, as the physical GIC still holds it active.
    DeactivatePhysical(u32),
    /// The guest routed the forwarded SPI whose physical INTID is `pintid` to `vcpu`
    /// (`None`: to no vCPU): route the physical interrupt to that vCPU's CPU, so it is
    /// taken where it will be delivered.
    Route {
        /// The physical INTID.
        pintid: u32,
        /// The vCPU it now goes to.
        vcpu: Option<usize>,
    },
    /// A debug-level note for the log.
    Note(Note),
}

/// Where effects go: the hypervisor's per-trap buffer, or a `Vec` in tests.
pub trait EffectSink {
    /// Records one effect.
    fn push(&mut self, effect: Effect);
}

impl EffectSink for Vec<Effect> {
    fn push(&mut self, effect: Effect) {
        Vec::push(self, effect);
    }
}
