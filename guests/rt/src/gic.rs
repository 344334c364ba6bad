//! The interrupt controller the guest's DTB describes, driven from EL1: a GICv3 through its
//! system-register CPU interface (ICC_*_EL1) plus distributor and redistributor MMIO, or a
//! GICv2 through distributor and CPU-interface MMIO.
//!
//! The boot vCPU calls [`init`] once (distributor, and on GICv3 the redistributor map);
//! every vCPU then calls [`init_cpu`] for its own CPU interface before it unmasks IRQs.
//! Interrupts are Group 1 on GICv3 and Group 0 on GICv2 (a GIC without Security
//! Extensions, or a hypervisor's virtual one, signals both as IRQs), and end with EOImode 0:
//! [`end_of_interrupt`] drops the priority and deactivates.
//!
//! The distributor is shared behind an [`IrqMutex`]; each vCPU's redistributor or GICv2
//! CPU interface is reached only by that vCPU. Every function here may be called from an
//! IRQ handler.

mod icc;
mod regs;

use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use safe_mmio::fields::ReadPureWrite;
use safe_mmio::{field, UniqueMmioPointer};

use crate::entry::MAX_CPUS;
use crate::irq::IrqMutex;
use regs::{
    GiccRegisters, GicdIrouter, GicdRegisters, GicrRdRegisters, GicrSgiRegisters, GICD_CTLR_RWP,
    GICD_IROUTER_OFFSET, GICR_CTLR_RWP, GICR_FRAME_SIZE, GICR_TYPER_LAST, GICR_TYPER_VLPIS,
    GICR_WAKER_CHILDREN_ASLEEP, GICR_WAKER_PROCESSOR_SLEEP,
};

/// INTIDs below this are SGIs.
pub const FIRST_PPI: u32 = 16;
/// INTIDs below this are private to each CPU (SGIs and PPIs).
pub const FIRST_SPI: u32 = 32;
/// The first special INTID: 1020-1023 mean no interrupt was acknowledged.
const FIRST_SPECIAL: u32 = 1020;
/// The priority value of "no interrupt active" in ICC_RPR_EL1 and GICC_RPR.
pub const IDLE_PRIORITY: u8 = 0xff;
/// Polls of a register that must settle (RWP, ChildrenAsleep) before giving up.
const SETTLE_POLLS: u32 = 1_000_000;

/// GICD_CTLR bits with GICD_CTLR.DS = 1 (a single Security state, as a GICv3 without EL3
/// and a hypervisor's virtual GIC have): EnableGrp1 \[1\] and ARE \[4\].
const GICD_CTLR_V3_ENABLE: u32 = (1 << 1) | (1 << 4);
/// GICD_CTLR.EnableGrp0 (GICv2 without Security Extensions).
const GICD_CTLR_V2_ENABLE: u32 = 1;
/// GICC_CTLR.EnableGrp0 (GICv2 without Security Extensions); EOImodeNS \[9\] stays 0.
const GICC_CTLR_ENABLE: u32 = 1;

/// Which GIC architecture the guest drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// GICv2: GICD and GICC MMIO.
    V2,
    /// GICv3: GICD and GICR MMIO, ICC_* system registers.
    V3,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V2 => f.write_str("GICv2"),
            Version::V3 => f.write_str("GICv3"),
        }
    }
}

/// How an interrupt's input is sampled (GICD_ICFGR/GICR_ICFGR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Pending while the line is high.
    Level,
    /// Pending on a rising edge.
    Edge,
}

/// Who receives an SGI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgiTarget {
    /// The vCPU sending it.
    Me,
    /// The vCPU with this CPU index ([`crate::cpu_index`]), once it has run [`init_cpu`].
    Cpu(usize),
}

/// An acknowledged interrupt, to hand back to [`end_of_interrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// ICC_IAR1_EL1 or GICC_IAR as read (on GICv2 an SGI's source CPU is in bits 12:10,
    /// and GICC_EOIR wants it back).
    raw: u32,
}

impl Ack {
    /// The interrupt's INTID.
    pub fn intid(&self) -> u32 {
        match version() {
            Some(Version::V2) => self.raw & 0x3ff,
            _ => self.raw,
        }
    }

    /// For a GICv2 SGI, the CPU interface number that sent it.
    pub fn source(&self) -> Option<u8> {
        (version() == Some(Version::V2) && self.intid() < FIRST_PPI)
            .then_some(((self.raw >> 10) & 7) as u8)
    }
}

/// Why the GIC could not be set up or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GicError {
    /// [`init`] has not run, or failed.
    NotInitialised,
    /// A register window is not at an address this guest can reach.
    BadAddress {
        /// The window's base.
        base: u64,
    },
    /// No redistributor's GICR_TYPER names this vCPU's affinity.
    NoRedistributor {
        /// This vCPU's MPIDR affinity.
        mpidr: u64,
    },
    /// This vCPU's redistributor did not wake up (GICR_WAKER.ChildrenAsleep stayed 1).
    RedistributorAsleep {
        /// This vCPU's MPIDR affinity.
        mpidr: u64,
    },
    /// ICC_SRE_EL1.SRE stayed 0: the system-register interface is not available.
    NoSystemRegisters,
    /// The CPU index is beyond [`MAX_CPUS`].
    NoSuchCpu {
        /// The index.
        cpu: usize,
    },
    /// The INTID is out of range for the call (e.g. an SPI where an SGI was wanted).
    BadIntid {
        /// The INTID.
        intid: u32,
    },
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GicError::NotInitialised => write!(f, "the GIC is not initialised"),
            GicError::BadAddress { base } => write!(f, "GIC window at {base:#x} is unusable"),
            GicError::NoRedistributor { mpidr } => {
                write!(f, "no redistributor has affinity {mpidr:#x}")
            }
            GicError::RedistributorAsleep { mpidr } => {
                write!(f, "the redistributor of {mpidr:#x} stays asleep")
            }
            GicError::NoSystemRegisters => write!(f, "ICC_SRE_EL1.SRE stays 0"),
            GicError::NoSuchCpu { cpu } => write!(f, "no CPU index {cpu}"),
            GicError::BadIntid { intid } => write!(f, "INTID {intid} does not fit here"),
        }
    }
}

/// The shared distributor.
struct Distributor {
    regs: UniqueMmioPointer<'static, GicdRegisters>,
    /// GICD_IROUTER<n>, on GICv3.
    irouter: Option<UniqueMmioPointer<'static, GicdIrouter>>,
}

/// One vCPU's own part of the GIC.
enum CpuInterface {
    V2 {
        gicc: UniqueMmioPointer<'static, GiccRegisters>,
    },
    V3 {
        rd: UniqueMmioPointer<'static, GicrRdRegisters>,
        sgi: UniqueMmioPointer<'static, GicrSgiRegisters>,
    },
}

/// 0: not initialised, 2 or 3: the version.
static VERSION: AtomicU8 = AtomicU8::new(0);
static DISTRIBUTOR: IrqMutex<Option<Distributor>> = IrqMutex::new(None);
/// GICv3: the redistributors found by [`init`], as (affinity, RD_base).
static REDISTRIBUTORS: IrqMutex<Vec<(u64, u64)>> = IrqMutex::new(Vec::new());
/// GICv2: the CPU interface's address.
static GICC_BASE: AtomicU64 = AtomicU64::new(0);
/// Per CPU index: its interface, used by that vCPU only.
static CPUS: [IrqMutex<Option<CpuInterface>>; MAX_CPUS] = [const { IrqMutex::new(None) }; MAX_CPUS];
/// Per CPU index: the SGI target its [`init_cpu`] published (GICv3: MPIDR affinity;
/// GICv2: CPU interface mask), `u64::MAX` until then.
static SGI_TARGETS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// The GIC version [`init`] set up, if it ran.
pub fn version() -> Option<Version> {
    match VERSION.load(Ordering::Acquire) {
        2 => Some(Version::V2),
        3 => Some(Version::V3),
        _ => None,
    }
}

/// # Safety
///
/// `base` must be the address of a register block of type `T` that only the returned
/// pointer accesses, mapped (or reachable with the MMU off) as Device memory.
unsafe fn mmio<T>(base: u64) -> Result<UniqueMmioPointer<'static, T>, GicError> {
    let ptr = usize::try_from(base)
        .ok()
        .and_then(|b| NonNull::new(b as *mut T))
        .ok_or(GicError::BadAddress { base })?;
    // SAFETY: the caller vouches for the block and its uniqueness.
    Ok(unsafe { UniqueMmioPointer::new(ptr) })
}

/// Sets up the distributor the DTB describes, with every interrupt disabled, and (GICv3)
/// finds the redistributors. Boot vCPU, once, with IRQs masked, before any [`init_cpu`].
pub fn init(gic: &platform::Gic) -> Result<(), GicError> {
    match gic {
        platform::Gic::V3 {
            gicd,
            redistributors,
            ..
        } => {
            // SAFETY: the DTB puts a GICv3 distributor at `gicd.base`; this is the only
            // pointer to its first 4 KiB, and `irouter` the only one to its routes.
            let mut regs = unsafe { mmio::<GicdRegisters>(gicd.base)? };
            // SAFETY: as above, GICD_IROUTER<n> of the same distributor.
            let irouter = unsafe { mmio::<GicdIrouter>(gicd.base + GICD_IROUTER_OFFSET as u64)? };
            field!(regs, ctlr).write(0);
            wait_gicd_rwp(&mut regs);
            disable_all_spis(&mut regs);
            wait_gicd_rwp(&mut regs);
            field!(regs, ctlr).write(GICD_CTLR_V3_ENABLE);
            wait_gicd_rwp(&mut regs);
            *REDISTRIBUTORS.lock() = find_redistributors(redistributors);
            *DISTRIBUTOR.lock() = Some(Distributor {
                regs,
                irouter: Some(irouter),
            });
            VERSION.store(3, Ordering::Release);
        }
        platform::Gic::V2 { gicd, gicc, .. } => {
            // SAFETY: the DTB puts a GICv2 distributor at `gicd.base`; this is the only
            // pointer to it.
            let mut regs = unsafe { mmio::<GicdRegisters>(gicd.base)? };
            field!(regs, ctlr).write(0);
            disable_all_spis(&mut regs);
            field!(regs, ctlr).write(GICD_CTLR_V2_ENABLE);
            GICC_BASE.store(gicc.base, Ordering::Relaxed);
            *DISTRIBUTOR.lock() = Some(Distributor {
                regs,
                irouter: None,
            });
            VERSION.store(2, Ordering::Release);
        }
    }
    Ok(())
}

/// Disables and clears every SPI the distributor implements (GICD_TYPER.ITLinesNumber).
fn disable_all_spis(regs: &mut UniqueMmioPointer<GicdRegisters>) {
    let words = ((field!(*regs, typer).read() & 0x1f) + 1) as usize;
    for n in 1..words.min(32) {
        if let Some(mut r) = field!(*regs, icenabler).get(n) {
            r.write(u32::MAX);
        }
        if let Some(mut r) = field!(*regs, icpendr).get(n) {
            r.write(u32::MAX);
        }
    }
}

fn wait_gicd_rwp(regs: &mut UniqueMmioPointer<GicdRegisters>) {
    for _ in 0..SETTLE_POLLS {
        if field!(*regs, ctlr).read() & GICD_CTLR_RWP == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Walks the redistributor regions, reading each GICR_TYPER: (affinity, RD_base) pairs.
/// Runs before any vCPU holds a pointer to its own redistributor.
fn find_redistributors(regions: &[platform::MemRange]) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for region in regions {
        let mut offset = 0;
        while offset + 2 * GICR_FRAME_SIZE <= region.size {
            let base = region.base + offset;
            // SAFETY: the DTB says a redistributor region covers `base`; no other pointer
            // to this frame exists yet (`init_cpu` runs after `init`), and this one is
            // dropped at the end of the iteration.
            let Ok(mut rd) = (unsafe { mmio::<GicrRdRegisters>(base) }) else {
                break;
            };
            let typer = field!(rd, typer).read();
            found.push((typer >> 32, base));
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            let frames = if typer & GICR_TYPER_VLPIS != 0 { 4 } else { 2 };
            offset += frames * GICR_FRAME_SIZE;
        }
    }
    found
}

/// This vCPU's MPIDR affinity as GICR_TYPER.Affinity spells it: Aff3.Aff2.Aff1.Aff0.
fn typer_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff)
}

/// Sets up this vCPU's CPU interface (and on GICv3 wakes its redistributor): all SGIs and
/// PPIs disabled, priority mask open (0xff), finest binary point, EOImode 0, the group
/// enabled. Every vCPU, with IRQs masked, after [`init`].
pub fn init_cpu() -> Result<(), GicError> {
    let cpu = crate::cpu_index();
    let mpidr = crate::mpidr();
    let interface = match version().ok_or(GicError::NotInitialised)? {
        Version::V3 => {
            let affinity = typer_affinity(mpidr);
            let base = REDISTRIBUTORS
                .lock()
                .iter()
                .find(|&&(a, _)| a == affinity)
                .map(|&(_, base)| base)
                .ok_or(GicError::NoRedistributor { mpidr })?;
            // SAFETY: `init` found this vCPU's redistributor at `base`; only this vCPU
            // touches it, through these two pointers to its two frames.
            let mut rd = unsafe { mmio::<GicrRdRegisters>(base)? };
            // SAFETY: as above, the SGI_base frame right after RD_base.
            let mut sgi = unsafe { mmio::<GicrSgiRegisters>(base + GICR_FRAME_SIZE)? };
            field!(rd, waker).modify(|w| w & !GICR_WAKER_PROCESSOR_SLEEP);
            let awake = (0..SETTLE_POLLS)
                .any(|_| field!(rd, waker).read() & GICR_WAKER_CHILDREN_ASLEEP == 0);
            if !awake {
                return Err(GicError::RedistributorAsleep { mpidr });
            }
            field!(sgi, icenabler0).write(u32::MAX);
            field!(sgi, icpendr0).write(u32::MAX);
            field!(sgi, igroupr0).write(u32::MAX);
            for _ in 0..SETTLE_POLLS {
                if field!(rd, ctlr).read() & GICR_CTLR_RWP == 0 {
                    break;
                }
            }
            if !icc::enable_system_registers() {
                return Err(GicError::NoSystemRegisters);
            }
            icc::set_priority_mask(0xff);
            icc::set_binary_point1(0);
            icc::set_control(0);
            icc::set_group1_enable(true);
            SGI_TARGETS
                .get(cpu)
                .ok_or(GicError::NoSuchCpu { cpu })?
                .store(mpidr, Ordering::Release);
            CpuInterface::V3 { rd, sgi }
        }
        Version::V2 => {
            let base = GICC_BASE.load(Ordering::Relaxed);
            let mask = {
                let mut guard = DISTRIBUTOR.lock();
                let dist = guard.as_mut().ok_or(GicError::NotInitialised)?;
                let regs = &mut dist.regs;
                // Banked per CPU: the SGI and PPI enables, and ITARGETSR0 reads this CPU
                // interface's own bit.
                if let Some(mut r) = field!(*regs, icenabler).get(0) {
                    r.write(u32::MAX);
                }
                if let Some(mut r) = field!(*regs, icpendr).get(0) {
                    r.write(u32::MAX);
                }
                if let Some(mut r) = field!(*regs, igroupr).get(0) {
                    r.write(0);
                }
                field!(*regs, itargetsr).get(0).map_or(0, |r| r.read())
            };
            // SAFETY: the DTB puts a GICv2 CPU interface at `base`; its registers are
            // banked, so this vCPU's pointer reaches its own interface only, and no other
            // pointer on this vCPU exists.
            let mut gicc = unsafe { mmio::<GiccRegisters>(base)? };
            field!(gicc, pmr).write(0xff);
            field!(gicc, bpr).write(0);
            field!(gicc, ctlr).write(GICC_CTLR_ENABLE);
            SGI_TARGETS
                .get(cpu)
                .ok_or(GicError::NoSuchCpu { cpu })?
                .store(u64::from(mask), Ordering::Release);
            CpuInterface::V2 { gicc }
        }
    };
    *CPUS.get(cpu).ok_or(GicError::NoSuchCpu { cpu })?.lock() = Some(interface);
    Ok(())
}

/// Runs `f` on this vCPU's interface.
fn with_cpu<R>(f: impl FnOnce(&mut CpuInterface) -> R) -> Result<R, GicError> {
    let cpu = crate::cpu_index();
    let mut guard = CPUS.get(cpu).ok_or(GicError::NoSuchCpu { cpu })?.lock();
    guard.as_mut().map(f).ok_or(GicError::NotInitialised)
}

/// Runs `f` on the distributor.
fn with_distributor<R>(f: impl FnOnce(&mut Distributor) -> R) -> Result<R, GicError> {
    DISTRIBUTOR
        .lock()
        .as_mut()
        .map(f)
        .ok_or(GicError::NotInitialised)
}

/// A 1-bit-per-INTID register pair: which bank and bit.
fn word_bit(intid: u32) -> (usize, u32) {
    ((intid / 32) as usize, 1 << (intid % 32))
}

/// Which of the bit registers an operation touches.
#[derive(Clone, Copy)]
enum BitReg {
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
}

/// Sets `mask` in a set/clear register, or reads whether it is set there.
fn access(r: &mut UniqueMmioPointer<ReadPureWrite<u32>>, write: bool, mask: u32) -> bool {
    if write {
        r.write(mask);
        true
    } else {
        r.read() & mask != 0
    }
}

/// Writes `intid`'s bit of `reg` (set/clear registers: other bits are unaffected), or
/// with `write` false reads it. SGIs and PPIs are this vCPU's (its redistributor on
/// GICv3, its bank of the distributor on GICv2).
fn bit(intid: u32, reg: BitReg, write: bool) -> Result<bool, GicError> {
    if intid >= FIRST_SPECIAL {
        return Err(GicError::BadIntid { intid });
    }
    let (n, mask) = word_bit(intid);
    if intid < FIRST_SPI && version() == Some(Version::V3) {
        return with_cpu(|cpu| {
            let CpuInterface::V3 { sgi, rd } = cpu else {
                return false;
            };
            let mut r = match reg {
                BitReg::SetEnable => field!(*sgi, isenabler0),
                BitReg::ClearEnable => field!(*sgi, icenabler0),
                BitReg::SetPending => field!(*sgi, ispendr0),
                BitReg::ClearPending => field!(*sgi, icpendr0),
                BitReg::SetActive => field!(*sgi, isactiver0),
            };
            let value = access(&mut r, write, mask);
            if write && matches!(reg, BitReg::ClearEnable) {
                // The interrupt is only guaranteed disabled once GICR_CTLR.RWP reads 0.
                for _ in 0..SETTLE_POLLS {
                    if field!(*rd, ctlr).read() & GICR_CTLR_RWP == 0 {
                        break;
                    }
                }
            }
            value
        });
    }
    with_distributor(|dist| {
        let regs = &mut dist.regs;
        let done = match reg {
            BitReg::SetEnable => field!(*regs, isenabler)
                .get(n)
                .map(|mut r| access(&mut r, write, mask)),
            BitReg::ClearEnable => field!(*regs, icenabler)
                .get(n)
                .map(|mut r| access(&mut r, write, mask)),
            BitReg::SetPending => field!(*regs, ispendr)
                .get(n)
                .map(|mut r| access(&mut r, write, mask)),
            BitReg::ClearPending => field!(*regs, icpendr)
                .get(n)
                .map(|mut r| access(&mut r, write, mask)),
            BitReg::SetActive => field!(*regs, isactiver)
                .get(n)
                .map(|mut r| access(&mut r, write, mask)),
        };
        done.unwrap_or(false)
    })
}

/// Sets `intid`'s priority (lower values win; the GIC keeps only its implemented top
/// bits) and, for a PPI or SPI, its trigger. SGIs and PPIs are this vCPU's.
pub fn configure(intid: u32, priority: u8, trigger: Trigger) -> Result<(), GicError> {
    if intid >= FIRST_SPECIAL {
        return Err(GicError::BadIntid { intid });
    }
    let index = intid as usize;
    // Int_config[1] of the 2-bit field: 1 edge, 0 level.
    let (cfg_word, cfg_bit) = (index / 16, 1u32 << ((index % 16) * 2 + 1));
    let edge = trigger == Trigger::Edge;
    let set_cfg = |r: &mut UniqueMmioPointer<ReadPureWrite<u32>>| {
        r.modify(|v| if edge { v | cfg_bit } else { v & !cfg_bit })
    };
    if intid < FIRST_SPI && version() == Some(Version::V3) {
        return with_cpu(|cpu| {
            if let CpuInterface::V3 { sgi, .. } = cpu {
                if let Some(mut p) = field!(*sgi, ipriorityr).get(index) {
                    p.write(priority);
                }
                if intid >= FIRST_PPI {
                    if let Some(mut c) = field!(*sgi, icfgr).get(cfg_word) {
                        set_cfg(&mut c);
                    }
                }
            }
        });
    }
    let v3 = version() == Some(Version::V3);
    with_distributor(|dist| {
        let regs = &mut dist.regs;
        if let Some(mut p) = field!(*regs, ipriorityr).get(index) {
            p.write(priority);
        }
        if intid >= FIRST_PPI {
            if let Some(mut c) = field!(*regs, icfgr).get(cfg_word) {
                set_cfg(&mut c);
            }
        }
        // Group 1 on GICv3 (group 0 would be an FIQ), Group 0 on GICv2.
        if intid >= FIRST_SPI {
            let (n, mask) = word_bit(intid);
            if let Some(mut g) = field!(*regs, igroupr).get(n) {
                g.modify(|v| if v3 { v | mask } else { v & !mask });
            }
        }
    })
}

/// Sends SPI `intid` to this vCPU only (GICD_IROUTER on GICv3, GICD_ITARGETSR on GICv2).
pub fn route_to_me(intid: u32) -> Result<(), GicError> {
    if !(FIRST_SPI..FIRST_SPECIAL).contains(&intid) {
        return Err(GicError::BadIntid { intid });
    }
    let cpu = crate::cpu_index();
    let target = SGI_TARGETS
        .get(cpu)
        .ok_or(GicError::NoSuchCpu { cpu })?
        .load(Ordering::Acquire);
    if target == u64::MAX {
        return Err(GicError::NotInitialised);
    }
    with_distributor(|dist| match &mut dist.irouter {
        Some(irouter) => {
            // Interrupt_Routing_Mode 0: to the affinity Aff3.Aff2.Aff1.Aff0 given.
            if let Some(mut r) = irouter.get(intid as usize) {
                r.write(target & 0xff_00ff_ffff);
            }
        }
        None => {
            let regs = &mut dist.regs;
            if let Some(mut t) = field!(*regs, itargetsr).get(intid as usize) {
                t.write(target as u8);
            }
        }
    })
}

/// Lets `intid` be signalled (GICD_ISENABLER / GICR_ISENABLER0).
pub fn enable(intid: u32) -> Result<(), GicError> {
    bit(intid, BitReg::SetEnable, true).map(|_| ())
}

/// Stops `intid` being signalled (GICD_ICENABLER / GICR_ICENABLER0); it may still be
/// pending.
pub fn disable(intid: u32) -> Result<(), GicError> {
    bit(intid, BitReg::ClearEnable, true).map(|_| ())
}

/// Makes `intid` pending by software (GICD_ISPENDR / GICR_ISPENDR0; not for GICv2 SGIs).
pub fn set_pending(intid: u32) -> Result<(), GicError> {
    bit(intid, BitReg::SetPending, true).map(|_| ())
}

/// Clears `intid`'s pending state (GICD_ICPENDR / GICR_ICPENDR0; not for GICv2 SGIs).
pub fn clear_pending(intid: u32) -> Result<(), GicError> {
    bit(intid, BitReg::ClearPending, true).map(|_| ())
}

/// Whether `intid` is pending, as GICD_ISPENDR / GICR_ISPENDR0 read (this vCPU's bank for
/// SGIs and PPIs).
pub fn is_pending(intid: u32) -> Result<bool, GicError> {
    bit(intid, BitReg::SetPending, false)
}

/// Whether `intid` is active, as GICD_ISACTIVER / GICR_ISACTIVER0 read (this vCPU's bank
/// for SGIs and PPIs).
pub fn is_active(intid: u32) -> Result<bool, GicError> {
    bit(intid, BitReg::SetActive, false)
}

/// Whether `intid` is enabled, as GICD_ISENABLER / GICR_ISENABLER0 read.
pub fn is_enabled(intid: u32) -> Result<bool, GicError> {
    bit(intid, BitReg::SetEnable, false)
}

/// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1 / GICC_IAR); `None`
/// when there is none (a spurious INTID, 1020-1023).
pub fn acknowledge() -> Option<Ack> {
    let raw = match version()? {
        Version::V3 => icc::acknowledge1(),
        Version::V2 => with_cpu(|cpu| match cpu {
            CpuInterface::V2 { gicc } => field!(*gicc, iar).read(),
            CpuInterface::V3 { .. } => FIRST_SPECIAL + 3,
        })
        .ok()?,
    };
    let ack = Ack { raw };
    (ack.intid() < FIRST_SPECIAL).then_some(ack)
}

/// Ends an interrupt [`acknowledge`] returned: drops the running priority and deactivates
/// it (ICC_EOIR1_EL1 / GICC_EOIR). Interrupts must end in the reverse order of their
/// acknowledgement.
pub fn end_of_interrupt(ack: Ack) {
    match version() {
        Some(Version::V3) => icc::end_of_interrupt1(ack.raw),
        Some(Version::V2) => {
            let _ = with_cpu(|cpu| {
                if let CpuInterface::V2 { gicc } = cpu {
                    field!(*gicc, eoir).write(ack.raw);
                }
            });
        }
        None => {}
    }
}

/// Sets this vCPU's priority mask (ICC_PMR_EL1 / GICC_PMR): only interrupts with a lower
/// priority value are signalled.
pub fn set_priority_mask(mask: u8) {
    match version() {
        Some(Version::V3) => icc::set_priority_mask(mask),
        Some(Version::V2) => {
            let _ = with_cpu(|cpu| {
                if let CpuInterface::V2 { gicc } = cpu {
                    field!(*gicc, pmr).write(u32::from(mask));
                }
            });
        }
        None => {}
    }
}

/// This vCPU's priority mask, as read back (unimplemented low bits read as 0).
pub fn priority_mask() -> u8 {
    match version() {
        Some(Version::V3) => icc::priority_mask(),
        Some(Version::V2) => with_cpu(|cpu| match cpu {
            CpuInterface::V2 { gicc } => field!(*gicc, pmr).read() as u8,
            CpuInterface::V3 { .. } => 0,
        })
        .unwrap_or(0),
        None => 0,
    }
}

/// This vCPU's running priority (ICC_RPR_EL1 / GICC_RPR): the priority of the
/// highest-priority active interrupt, [`IDLE_PRIORITY`] when none is.
pub fn running_priority() -> u8 {
    match version() {
        Some(Version::V3) => icc::running_priority(),
        Some(Version::V2) => with_cpu(|cpu| match cpu {
            CpuInterface::V2 { gicc } => field!(*gicc, rpr).read() as u8,
            CpuInterface::V3 { .. } => IDLE_PRIORITY,
        })
        .unwrap_or(IDLE_PRIORITY),
        None => IDLE_PRIORITY,
    }
}

/// Sends SGI `sgi` (0-15) to `target` (ICC_SGI1R_EL1 / GICD_SGIR). Stores made before it
/// are visible to the target's handler.
pub fn send_sgi(sgi: u32, target: SgiTarget) -> Result<(), GicError> {
    if sgi >= FIRST_PPI {
        return Err(GicError::BadIntid { intid: sgi });
    }
    let version = version().ok_or(GicError::NotInitialised)?;
    let cpu = match target {
        SgiTarget::Me => crate::cpu_index(),
        SgiTarget::Cpu(cpu) => cpu,
    };
    let published = SGI_TARGETS
        .get(cpu)
        .ok_or(GicError::NoSuchCpu { cpu })?
        .load(Ordering::Acquire);
    if published == u64::MAX {
        return Err(GicError::NotInitialised);
    }
    match version {
        Version::V3 => {
            // IHI 0069 ICC_SGI1R_EL1: TargetList [15:0] holds Aff0 % 16, RS [47:44] picks
            // the block of 16, then Aff1 [23:16], INTID [27:24], Aff2 [39:32], Aff3 [55:48].
            let aff0 = published & 0xff;
            let aff1 = (published >> 8) & 0xff;
            let aff2 = (published >> 16) & 0xff;
            let aff3 = (published >> 32) & 0xff;
            let value = (aff3 << 48)
                | ((aff0 / 16) << 44)
                | (aff2 << 32)
                | (u64::from(sgi) << 24)
                | (aff1 << 16)
                | (1 << (aff0 % 16));
            icc::generate_sgi1(value);
            Ok(())
        }
        Version::V2 => {
            // IHI 0048B GICD_SGIR: TargetListFilter [25:24] (0: the list, 2: the sender),
            // CPUTargetList [23:16], SGIINTID [3:0].
            let value = match target {
                SgiTarget::Me => (2 << 24) | sgi,
                SgiTarget::Cpu(_) => ((published as u32 & 0xff) << 16) | sgi,
            };
            // SAFETY: the barrier orders memory accesses only.
            unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
            with_distributor(|dist| {
                let regs = &mut dist.regs;
                field!(*regs, sgir).write(value);
            })
        }
    }
}
