//! The GIC's memory-mapped register blocks, as IHI 0069 (GICv3, chapter 12) and IHI 0048B
//! (GICv2, chapter 4) lay them out; only the registers the guests use are named.

use safe_mmio::fields::{ReadOnly, ReadPure, ReadPureWrite, WriteOnly};

/// The distributor's first 4 KiB, common to GICv2 and GICv3 (GICD_*). With affinity
/// routing (GICv3) the SGI/PPI words (index 0) and ITARGETSR are RES0: the redistributors
/// hold those.
#[repr(C)]
pub struct GicdRegisters {
    /// GICD_CTLR.
    pub ctlr: ReadPureWrite<u32>,
    /// GICD_TYPER.
    pub typer: ReadPure<u32>,
    /// GICD_IIDR.
    pub iidr: ReadPure<u32>,
    _reserved0: [u32; 29],
    /// GICD_IGROUPR<n>.
    pub igroupr: [ReadPureWrite<u32>; 32],
    /// GICD_ISENABLER<n>.
    pub isenabler: [ReadPureWrite<u32>; 32],
    /// GICD_ICENABLER<n>.
    pub icenabler: [ReadPureWrite<u32>; 32],
    /// GICD_ISPENDR<n>.
    pub ispendr: [ReadPureWrite<u32>; 32],
    /// GICD_ICPENDR<n>.
    pub icpendr: [ReadPureWrite<u32>; 32],
    /// GICD_ISACTIVER<n>.
    pub isactiver: [ReadPureWrite<u32>; 32],
    /// GICD_ICACTIVER<n>.
    pub icactiver: [ReadPureWrite<u32>; 32],
    /// GICD_IPRIORITYR<n>, one byte per INTID.
    pub ipriorityr: [ReadPureWrite<u8>; 1024],
    /// GICD_ITARGETSR<n> (GICv2), one byte per INTID; bytes 0-31 read this CPU's mask.
    pub itargetsr: [ReadPureWrite<u8>; 1024],
    /// GICD_ICFGR<n>, two bits per INTID.
    pub icfgr: [ReadPureWrite<u32>; 64],
    _reserved1: [u32; 128],
    /// GICD_SGIR (GICv2).
    pub sgir: WriteOnly<u32>,
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(GicdRegisters, igroupr) == 0x080);
    assert!(offset_of!(GicdRegisters, isenabler) == 0x100);
    assert!(offset_of!(GicdRegisters, icenabler) == 0x180);
    assert!(offset_of!(GicdRegisters, ispendr) == 0x200);
    assert!(offset_of!(GicdRegisters, icpendr) == 0x280);
    assert!(offset_of!(GicdRegisters, isactiver) == 0x300);
    assert!(offset_of!(GicdRegisters, icactiver) == 0x380);
    assert!(offset_of!(GicdRegisters, ipriorityr) == 0x400);
    assert!(offset_of!(GicdRegisters, itargetsr) == 0x800);
    assert!(offset_of!(GicdRegisters, icfgr) == 0xc00);
    assert!(offset_of!(GicdRegisters, sgir) == 0xf00);
};

/// Where GICD_IROUTER<n> (GICv3) starts in the distributor.
pub const GICD_IROUTER_OFFSET: usize = 0x6000;

/// GICD_IROUTER<n> (GICv3): one 64-bit route per INTID; entries 0-31 are reserved.
pub type GicdIrouter = [ReadPureWrite<u64>; 1024];

/// GICD_CTLR.RWP (GICv3): a write to CTLR or ICENABLER is still taking effect.
pub const GICD_CTLR_RWP: u32 = 1 << 31;

/// The first 64 KiB frame of a GICv3 redistributor, RD_base.
#[repr(C)]
pub struct GicrRdRegisters {
    /// GICR_CTLR.
    pub ctlr: ReadPure<u32>,
    /// GICR_IIDR.
    pub iidr: ReadPure<u32>,
    /// GICR_TYPER.
    pub typer: ReadPure<u64>,
    /// GICR_STATUSR.
    pub statusr: ReadPure<u32>,
    /// GICR_WAKER.
    pub waker: ReadPureWrite<u32>,
}

const _: () = assert!(core::mem::offset_of!(GicrRdRegisters, typer) == 0x8);
const _: () = assert!(core::mem::offset_of!(GicrRdRegisters, waker) == 0x14);

/// GICR_CTLR.RWP: a write to ICENABLER0 is still taking effect.
pub const GICR_CTLR_RWP: u32 = 1 << 3;
/// GICR_TYPER.VLPIS: the redistributor has two more frames (VLPI_base and reserved).
pub const GICR_TYPER_VLPIS: u64 = 1 << 1;
/// GICR_TYPER.Last: the last redistributor of its region.
pub const GICR_TYPER_LAST: u64 = 1 << 4;
/// GICR_WAKER.ProcessorSleep.
pub const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// GICR_WAKER.ChildrenAsleep.
pub const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// The size of one redistributor frame (RD_base, SGI_base, ...).
pub const GICR_FRAME_SIZE: u64 = 0x1_0000;

/// The second 64 KiB frame of a GICv3 redistributor, SGI_base: this CPU's SGIs and PPIs.
#[repr(C)]
pub struct GicrSgiRegisters {
    _reserved0: [u32; 32],
    /// GICR_IGROUPR0.
    pub igroupr0: ReadPureWrite<u32>,
    _reserved1: [u32; 31],
    /// GICR_ISENABLER0.
    pub isenabler0: ReadPureWrite<u32>,
    _reserved2: [u32; 31],
    /// GICR_ICENABLER0.
    pub icenabler0: ReadPureWrite<u32>,
    _reserved3: [u32; 31],
    /// GICR_ISPENDR0.
    pub ispendr0: ReadPureWrite<u32>,
    _reserved4: [u32; 31],
    /// GICR_ICPENDR0.
    pub icpendr0: ReadPureWrite<u32>,
    _reserved5: [u32; 31],
    /// GICR_ISACTIVER0.
    pub isactiver0: ReadPureWrite<u32>,
    _reserved6: [u32; 31],
    /// GICR_ICACTIVER0.
    pub icactiver0: ReadPureWrite<u32>,
    _reserved7: [u32; 31],
    /// GICR_IPRIORITYR<n>, one byte per SGI and PPI.
    pub ipriorityr: [ReadPureWrite<u8>; 32],
    _reserved8: [u32; 504],
    /// GICR_ICFGR0 (SGIs) and GICR_ICFGR1 (PPIs).
    pub icfgr: [ReadPureWrite<u32>; 2],
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(GicrSgiRegisters, igroupr0) == 0x080);
    assert!(offset_of!(GicrSgiRegisters, isenabler0) == 0x100);
    assert!(offset_of!(GicrSgiRegisters, icenabler0) == 0x180);
    assert!(offset_of!(GicrSgiRegisters, ispendr0) == 0x200);
    assert!(offset_of!(GicrSgiRegisters, icpendr0) == 0x280);
    assert!(offset_of!(GicrSgiRegisters, isactiver0) == 0x300);
    assert!(offset_of!(GicrSgiRegisters, icactiver0) == 0x380);
    assert!(offset_of!(GicrSgiRegisters, ipriorityr) == 0x400);
    assert!(offset_of!(GicrSgiRegisters, icfgr) == 0xc00);
};

/// The GICv2 CPU interface (GICC_*), banked per CPU.
#[repr(C)]
pub struct GiccRegisters {
    /// GICC_CTLR.
    pub ctlr: ReadPureWrite<u32>,
    /// GICC_PMR.
    pub pmr: ReadPureWrite<u32>,
    /// GICC_BPR.
    pub bpr: ReadPureWrite<u32>,
    /// GICC_IAR: reading it acknowledges an interrupt.
    pub iar: ReadOnly<u32>,
    /// GICC_EOIR.
    pub eoir: WriteOnly<u32>,
    /// GICC_RPR.
    pub rpr: ReadPure<u32>,
    /// GICC_HPPIR.
    pub hppir: ReadPure<u32>,
}

const _: () = assert!(core::mem::offset_of!(GiccRegisters, eoir) == 0x10);
const _: () = assert!(core::mem::offset_of!(GiccRegisters, rpr) == 0x14);
