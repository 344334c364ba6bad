//! The physical GIC. GICv3: the distributor and redistributors through the arm-gic crate,
//! the CPU interface through ICC_* registers; GICv2: `gicv2.rs`. Set up once by the boot
//! CPU, then each CPU enables the private interrupts the hypervisor uses (the kick SGI,
//! the maintenance interrupt, the timers). The functions at the end are the one interface
//! the VM monitor uses, whichever version the board has.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::GicV3;
use arm_gic::{IntId, Trigger};
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

use crate::arch::entry::MAX_CPUS;

/// The SGI the hypervisor sends to wake another CPU (a vCPU to start, an interrupt to take).
pub const KICK_SGI: u32 = 0;
/// The maintenance interrupt's PPI (INTID 25, as the GIC architecture recommends).
pub const MAINTENANCE_PPI: u32 = 25;
/// The EL2 physical timer's PPI (INTID 26, the architecture's recommendation and every
/// board's DT): the hypervisor's own timer, which carries the guests' emulated EL1
/// physical timers.
pub const HYP_TIMER_PPI: u32 = 26;
/// The virtual timer's PPI, forwarded to the vCPU with the hardware bit.
pub const VTIMER_PPI: u32 = 27;
/// Private interrupts the hypervisor takes on every CPU.
pub(crate) const PRIVATE: [u32; 4] = [KICK_SGI, MAINTENANCE_PPI, HYP_TIMER_PPI, VTIMER_PPI];

static GIC: Mutex<Option<Gic>> = Mutex::new(None);

struct Gic {
    driver: GicV3<'static>,
    /// GICR_TYPER.Affinity of each redistributor frame, in frame order: the driver numbers
    /// redistributors by frame, the DT numbers CPUs by node order, and the two need not
    /// agree (a CPU listed but absent, a DT ordered differently).
    frames: Vec<u64>,
}

/// Reads GICR_TYPER.Affinity of each frame until the one marked Last (at most 64).
///
/// # Safety
/// `gicr` must be the mapped redistributor region.
unsafe fn redistributor_affinities(gicr: u64) -> Vec<u64> {
    const FRAME: u64 = 0x2_0000;
    const GICR_TYPER: u64 = 0x8;
    const LAST: u64 = 1 << 4;
    let mut frames = Vec::new();
    for i in 0..64 {
        let typer = (gicr + i * FRAME + GICR_TYPER) as usize as *const u64;
        // SAFETY: the caller guarantees the region is mapped; frames up to the one marked
        // Last exist, and the loop stops there.
        let typer = unsafe { typer.read_volatile() };
        frames.push(typer >> 32);
        if typer & LAST != 0 {
            break;
        }
    }
    frames
}

/// MPIDR_EL1's affinity fields packed as GICR_TYPER.Affinity packs them (Aff3.Aff2.Aff1.Aff0).
fn packed_affinity(mpidr: u64) -> u64 {
    (mpidr & 0xff_ffff) | ((mpidr >> 8) & 0xff00_0000)
}

/// Takes the GICv3 at `gicd`/`gicr` (mapped as device memory at EL2) for `cpus` CPUs and
/// sets it up with the boot CPU's redistributor (`cpu`).
///
/// # Safety
/// The two windows must be the GIC's registers, mapped at EL2 at those addresses, and used
/// by nothing else (guests get emulated ones).
pub unsafe fn init(gicd: u64, gicr: u64, mpidr: u64) -> Result<(), &'static str> {
    // SAFETY: the caller guarantees the redistributor region is mapped.
    let frames = unsafe { redistributor_affinities(gicr) };
    let frame = frames
        .iter()
        .position(|&a| a == packed_affinity(mpidr))
        .ok_or("no redistributor for the boot CPU")?;
    let gicd = NonNull::new(gicd as usize as *mut Gicd).ok_or("GICD at 0")?;
    let gicr = NonNull::new(gicr as usize as *mut GicrSgi).ok_or("GICR at 0")?;
    // SAFETY: the caller guarantees both windows are the GIC's, mapped and unshared.
    let mut driver = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, frames.len()) }
        .map_err(|_| "bad GICR frames")?;
    driver.setup(frame);
    *GIC.lock() = Some(Gic { driver, frames });
    GICD_BASE.store(gicd.as_ptr() as usize as u64, Ordering::Release);
    VERSION.store(3, Ordering::Release);
    init_cpu(mpidr);
    Ok(())
}

/// Wakes this CPU's redistributor, enables the hypervisor's private interrupts on it and
/// configures the CPU interface (EOImode 1).
pub fn init_cpu(mpidr: u64) {
    crate::arch::gic::enable_sre();
    if let Some(gic) = GIC.lock().as_mut() {
        let Some(frame) = gic.frames.iter().position(|&a| a == packed_affinity(mpidr)) else {
            log::warn!("gic: no redistributor for MPIDR {mpidr:#x}; this CPU cannot be woken");
            return;
        };
        gic.driver.init_cpu(frame);
        for intid in PRIVATE {
            let id = if intid < 16 {
                IntId::sgi(intid)
            } else {
                IntId::ppi(intid - 16)
            };
            let _ = gic.driver.set_interrupt_priority(id, Some(frame), 0x80);
            let _ = gic.driver.enable_interrupt(id, Some(frame), true);
        }
    }
    crate::arch::gic::init_physical_interface();
}

/// Sets SPI `intid` (32..) up for the hypervisor or a VM: edge- or level-triggered, group 1
/// at the hypervisor's priority, routed to DT CPU `cpu` (affinity `mpidr`), enabled.
pub fn assign_spi(intid: u32, edge: bool, cpu: usize, mpidr: u64) {
    match version() {
        2 => super::gicv2::assign_spi(intid, edge, cpu),
        3 => {
            if let Some(gic) = GIC.lock().as_mut() {
                let id = IntId::spi(intid.saturating_sub(32));
                let trigger = if edge { Trigger::Edge } else { Trigger::Level };
                // The trigger may change only while the interrupt is disabled.
                let _ = gic.driver.enable_interrupt(id, None, false);
                let _ = gic.driver.set_trigger(id, None, trigger);
                let _ = gic.driver.set_interrupt_priority(id, None, 0x80);
                let _ = gic.driver.distributor().set_routing(id, Some(mpidr));
                let _ = gic.driver.enable_interrupt(id, None, true);
            }
        }
        _ => {}
    }
}

/// Routes SPI `intid` to DT CPU `cpu` (affinity `mpidr`): where a VM's guest moved it.
pub fn route_spi(intid: u32, cpu: usize, mpidr: u64) {
    match version() {
        2 => super::gicv2::route_spi(intid, cpu),
        3 => {
            if let Some(gic) = GIC.lock().as_mut() {
                let id = IntId::spi(intid.saturating_sub(32));
                let _ = gic.driver.distributor().set_routing(id, Some(mpidr));
            }
        }
        _ => {}
    }
}

/// Enables or disables SPI `intid` at the distributor.
pub fn enable_spi(intid: u32, enable: bool) {
    match version() {
        2 => super::gicv2::enable_spi(intid, enable),
        3 => {
            if let Some(gic) = GIC.lock().as_mut() {
                let id = IntId::spi(intid.saturating_sub(32));
                let _ = gic.driver.enable_interrupt(id, None, enable);
            }
        }
        _ => {}
    }
}

/// The distributor's base, for the registers both versions share.
static GICD_BASE: AtomicU64 = AtomicU64::new(0);

/// Clears the active state of SPI `intid` at the distributor (GICD_ICACTIVER, at the same
/// offset in both versions), from any CPU: for a forwarded interrupt that a stopped guest
/// will never deactivate.
pub fn clear_active_spi(intid: u32) {
    const GICD_ICACTIVER: u64 = 0x380;
    let base = GICD_BASE.load(Ordering::Acquire);
    if base == 0 || !(32..1020).contains(&intid) {
        return;
    }
    let reg = (base + GICD_ICACTIVER + u64::from(intid / 32) * 4) as usize as *mut u32;
    // SAFETY: `init`/`init_v2` stored the base of the distributor, which EL2 maps as device
    // memory for good; ICACTIVER<n> for an SPI lies inside its first 64 KiB.
    unsafe { reg.write_volatile(1 << (intid % 32)) };
}

/// Which GIC the board has, once one is driven.
static VERSION: AtomicU8 = AtomicU8::new(0);

/// Takes a GICv2 (mapped at EL2) and sets up the boot CPU (`cpu`, its DT index).
///
/// # Safety
/// As for `gicv2::init`.
pub unsafe fn init_v2(gicd: u64, gicc: u64, gich: u64, cpu: usize) {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { super::gicv2::init(gicd, gicc, gich) };
    GICD_BASE.store(gicd, Ordering::Release);
    VERSION.store(2, Ordering::Release);
    super::gicv2::init_cpu(cpu);
}

/// The GIC version driven: 2, 3, or 0 for none (then CPUs cannot be kicked and poll).
/// A plain load: every interrupt acknowledge and list-register access asks it.
pub fn version() -> u8 {
    VERSION.load(Ordering::Acquire)
}

/// Sets up CPU `cpu` (DT index, with affinity `mpidr`) for whichever GIC there is.
pub fn init_this_cpu(cpu: usize, mpidr: u64) {
    match version() {
        2 => super::gicv2::init_cpu(cpu),
        3 => init_cpu(mpidr),
        _ => {}
    }
}

/// Acknowledges the highest-priority pending interrupt; 1023 when none.
pub fn acknowledge() -> u32 {
    match version() {
        2 => super::gicv2::acknowledge(),
        3 => crate::arch::gic::acknowledge(),
        _ => 1023,
    }
}

/// Drops the running priority of `intid`.
pub fn end_of_interrupt(intid: u32) {
    match version() {
        2 => super::gicv2::end_of_interrupt(intid),
        3 => crate::arch::gic::end_of_interrupt(intid),
        _ => {}
    }
}

/// Deactivates `intid`.
pub fn deactivate(intid: u32) {
    match version() {
        2 => super::gicv2::deactivate(intid),
        3 => crate::arch::gic::deactivate(intid),
        _ => {}
    }
}

/// Wakes DT CPU `cpu` (affinity `mpidr`) with the kick SGI; false when there is no GIC.
pub fn kick(cpu: usize, mpidr: u64) -> bool {
    match version() {
        2 => super::gicv2::kick(cpu),
        3 => crate::arch::gic::send_sgi(KICK_SGI, mpidr),
        _ => return false,
    }
    true
}

/// Per CPU: how many list registers it has, once asked (0: not yet). Asked on every exit
/// that touches interrupts; a GICv2 answers from a GICH register, a bus access.
static LIST_REGISTERS: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

/// How many list registers this CPU has.
pub fn list_register_count() -> usize {
    let cached = LIST_REGISTERS.get(crate::arch::sysreg::cpu_index());
    if let Some(n) = cached
        .map(|c| c.load(Ordering::Relaxed))
        .filter(|&n| n != 0)
    {
        return usize::from(n);
    }
    let n = match version() {
        2 => super::gicv2::list_register_count(),
        3 => crate::arch::gic::ich::list_register_count(),
        _ => 0,
    };
    if let Some(c) = cached {
        c.store(u8::try_from(n).unwrap_or(u8::MAX), Ordering::Relaxed);
    }
    n
}

/// List register `n` as the hardware holds it (a GICv2 GICH_LR widened), to compare with
/// what [`write_lr`] returned.
pub fn read_lr_raw(n: usize) -> u64 {
    match version() {
        2 => u64::from(super::gicv2::read_lr(n)),
        _ => crate::arch::gic::ich::read_lr(n),
    }
}

/// Decodes what [`read_lr_raw`] read.
pub fn decode_lr(raw: u64) -> vgic::ListRegister {
    match version() {
        2 => vgic::ListRegister::from_gich_lr(raw as u32),
        _ => vgic::ListRegister::from_ich_lr(raw),
    }
}

/// Writes list register `n`; returns the raw value written.
pub fn write_lr(n: usize, lr: &vgic::ListRegister) -> u64 {
    match version() {
        2 => {
            let raw = lr.to_gich_lr();
            super::gicv2::write_lr(n, raw);
            u64::from(raw)
        }
        _ => {
            let raw = lr.to_ich_lr();
            crate::arch::gic::ich::write_lr(n, raw);
            raw
        }
    }
}

/// Turns the virtual CPU interface on with the maintenance requests in `bits`.
pub fn enable_virtual_interface(bits: u32) {
    match version() {
        2 => super::gicv2::set_hcr(1 | bits),
        _ => crate::arch::gic::ich::set_hcr(crate::arch::gic::ich::HCR_EN | u64::from(bits)),
    }
}

/// Resets the guest's virtual CPU interface state.
pub fn reset_virtual_interface() {
    match version() {
        2 => super::gicv2::reset_virtual_interface(),
        _ => crate::arch::gic::ich::reset_virtual_interface(),
    }
}
