//! The virtual GIC of a Tandem VM (GICv3 or GICv2), as a pure state machine.
//!
//! A [`Vgic`] holds one VM's interrupt state: the distributor, the v3 redistributors, and
//! for every interrupt its enable, pending (edge latch and level line), active, priority,
//! group, trigger configuration, routing and whether it forwards a hardware interrupt.
//! Guest accesses come in ([`Vgic::dist_read`], [`Vgic::redist_write`], [`Vgic::sgi1r`],
//! ...), so do the hypervisor's inputs ([`Vgic::raise`], [`Vgic::set_level`],
//! [`Vgic::hw_arrived`]); what the hypervisor must do in return comes out as [`Effect`]s
//! pushed into an [`EffectSink`]. Before a vCPU runs, [`Vgic::flush`] fills its list
//! registers ([`ListRegister`], encoded with [`ListRegister::to_ich_lr`] or
//! [`ListRegister::to_gich_lr`]); after it exits, [`Vgic::sync`] reads their state back.
//!
//! # Assumptions about the hardware side
//! - The guest uses the virtual CPU interface (`ICV_*` system registers on v3, the GICV
//!   frame on v2). Acknowledge, priority drop and deactivation happen in hardware through
//!   the list registers; the model only reads the resulting list-register states back.
//!   `ICH_VMCR_EL2`/`GICH_VMCR` (the guest's priority mask, binary points, group enables
//!   and EOImode) belong to hardware and are saved and restored by the hypervisor as they
//!   are, never interpreted here.
//! - Priorities keep 5 bits (the low 3 bits of every `IPRIORITYR` byte read as zero and
//!   ignore writes), matching `ICH_VTR_EL2.PRIbits` = 4 (5 bits) on common hardware and
//!   QEMU, and the 5-bit priority field of `GICH_LR` (IHI 0048B §5.3, GICH_LRn).
//! - The v3 distributor presents a single Security state (`GICD_CTLR.DS` = 1, `ARE` = 1,
//!   IHI 0069, GICD_CTLR), so SGIs and PPIs live in the redistributors. The v2 distributor is
//!   a GICv2 without the Security Extensions: `GICD_CTLR` has EnableGrp0 and EnableGrp1,
//!   and interrupts reset to Group 0, which is what Linux's GICv2 driver uses through the
//!   GICV interface (it enables virtual Group 0 only).
//! - No LPIs, no ITS, no extended SPI/PPI ranges, no GICv4 direct injection.
//!
//! Nothing a guest does can panic this crate: every access of any offset, width and value
//! has a defined answer, and unknown or malformed ones are read-as-zero, write-ignored with
//! a [`Note`] for the log.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod config;
mod dist;
mod effect;
mod irq;
mod lr;
mod redist;
mod resample;
mod sgi;
mod vgic;

pub use config::{GicVersion, VgicConfig, VgicError, MAX_SPIS, MAX_VCPUS_V2, MAX_VCPUS_V3};
pub use effect::{AccessWidth, Effect, EffectSink, Ignored, Note, Region};
pub use lr::{ListRegister, LrState, MAX_LIST_REGISTERS};
pub use vgic::{FlushOutcome, Vgic};

/// Size of the v3 distributor frame (`GICD`), 64 KiB.
pub const GICD_SIZE_V3: u64 = 0x1_0000;
/// Size of the v2 distributor frame (`GICD`), 4 KiB.
pub const GICD_SIZE_V2: u64 = 0x1000;
/// Stride between two vCPUs' v3 redistributors: an RD frame and an SGI frame of 64 KiB
/// each (IHI 0069 chapter 12, the redistributor register map).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// The INTID of the first SPI; below it are 16 SGIs and 16 PPIs, banked per vCPU.
pub const FIRST_SPI: u32 = 32;
