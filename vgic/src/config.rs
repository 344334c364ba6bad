//! The shape of a VM's virtual GIC, and the errors its hypervisor-side inputs can return.

use core::fmt;

/// The most vCPUs a GICv2 VM can have: `GICD_ITARGETSR` has one bit per CPU interface.
pub const MAX_VCPUS_V2: usize = 8;
/// The most vCPUs a GICv3 VM can have here: one `ICC_SGI1R_EL1` target list (Aff0 0..15,
/// `RS` = 0), as vCPU *n* has MPIDR Aff0 = *n* and Aff1..Aff3 = 0.
pub const MAX_VCPUS_V3: usize = 16;
/// The most SPIs: INTIDs 32..1019 (`GICD_TYPER.ITLinesNumber` = 31 covers 32..1023 and
/// 1020..1023 are special).
pub const MAX_SPIS: u32 = 988;

/// Which GIC architecture the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (IHI 0048B): memory-mapped CPU interface, `GICD_SGIR`, `GICD_ITARGETSR`.
    V2,
    /// GICv3 (IHI 0069): system-register CPU interface, redistributors, `GICD_IROUTER`.
    V3,
}

/// A VM's virtual GIC, as the hypervisor's configuration describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VgicConfig {
    /// The architecture version the guest sees.
    pub version: GicVersion,
    /// Number of vCPUs; vCPU *n* has MPIDR Aff0 = *n*.
    pub vcpus: usize,
    /// Number of SPIs (INTIDs from 32): a multiple of 32 or [`MAX_SPIS`].
    pub spis: u32,
}

/// Why a configuration or a hypervisor-side request was refused. Guest accesses never
/// produce these: they get a defined register answer instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicError {
    /// A VM needs at least one vCPU.
    NoVcpus,
    /// More vCPUs than the version allows ([`MAX_VCPUS_V2`], [`MAX_VCPUS_V3`]).
    TooManyVcpus {
        /// The number asked for.
        vcpus: usize,
        /// The limit for this version.
        max: usize,
    },
    /// The SPI count is not a multiple of 32 (nor [`MAX_SPIS`]) or is above [`MAX_SPIS`].
    BadSpiCount {
        /// The number asked for.
        spis: u32,
    },
    /// The vCPU index is not one of this VM's.
    NoSuchVcpu {
        /// The index given.
        vcpu: usize,
    },
    /// The INTID is not implemented by this VM's GIC.
    NoSuchIntid {
        /// The INTID given.
        intid: u32,
    },
    /// SGIs are raised by guests (`ICC_SGI1R_EL1`, `GICD_SGIR`), never by the hypervisor,
    /// and cannot be forwarded hardware interrupts.
    IsSgi {
        /// The INTID given.
        intid: u32,
    },
    /// [`hw_arrived`](crate::Vgic::hw_arrived) for an interrupt not forwarded with
    /// [`set_forwarded`](crate::Vgic::set_forwarded).
    NotForwarded {
        /// The virtual INTID given.
        intid: u32,
    },
    /// A physical INTID outside 16..1019 (SGIs cannot be forwarded; 1020.. are special).
    BadPhysicalIntid {
        /// The physical INTID given.
        pintid: u32,
    },
}

impl fmt::Display for VgicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoVcpus => write!(f, "a VM needs at least one vCPU"),
            Self::TooManyVcpus { vcpus, max } => {
                write!(
                    f,
                    "{vcpus} vCPUs asked, this GIC version allows at most {max}"
                )
            }
            Self::BadSpiCount { spis } => write!(
                f,
                "{spis} SPIs asked: the count must be a multiple of 32 and at most {MAX_SPIS}"
            ),
            Self::NoSuchVcpu { vcpu } => write!(f, "vCPU {vcpu} does not exist in this VM"),
            Self::NoSuchIntid { intid } => write!(f, "INTID {intid} is not implemented"),
            Self::IsSgi { intid } => {
                write!(f, "INTID {intid} is an SGI: only guests send SGIs")
            }
            Self::NotForwarded { intid } => {
                write!(f, "INTID {intid} is not a forwarded hardware interrupt")
            }
            Self::BadPhysicalIntid { pintid } => {
                write!(
                    f,
                    "physical INTID {pintid} cannot be forwarded (16..=1019 only)"
                )
            }
        }
    }
}

impl VgicConfig {
    /// Checks the configuration against the limits of its version.
    pub fn validate(&self) -> Result<(), VgicError> {
        let max = match self.version {
            GicVersion::V2 => MAX_VCPUS_V2,
            GicVersion::V3 => MAX_VCPUS_V3,
        };
        if self.vcpus == 0 {
            return Err(VgicError::NoVcpus);
        }
        if self.vcpus > max {
            return Err(VgicError::TooManyVcpus {
                vcpus: self.vcpus,
                max,
            });
        }
        if self.spis > MAX_SPIS || (!self.spis.is_multiple_of(32) && self.spis != MAX_SPIS) {
            return Err(VgicError::BadSpiCount { spis: self.spis });
        }
        Ok(())
    }
}
