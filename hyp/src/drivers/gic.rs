//! The physical GICv3 distributor and redistributors, through the arm-gic crate: set up
//! once by the boot CPU, then each CPU wakes its redistributor and enables the private
//! interrupts the hypervisor uses (the kick SGI, the maintenance interrupt, the timers).

use alloc::vec::Vec;
use core::ptr::NonNull;

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::GicV3;
use arm_gic::IntId;
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

/// The SGI the hypervisor sends to wake another CPU (a vCPU to start, an interrupt to take).
pub const KICK_SGI: u32 = 0;
/// PPIs the hypervisor takes on every CPU: maintenance, virtual and physical EL1 timers.
pub const MAINTENANCE_PPI: u32 = 25;
const PRIVATE: [u32; 4] = [KICK_SGI, MAINTENANCE_PPI, 27, 30];

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

/// Enables SPI `intid` (32..) as a level-triggered group-1 interrupt; the distributor's
/// default routing (IROUTER 0) sends it to the CPU with affinity 0.0.0.0.
pub fn enable_spi(intid: u32) {
    if let Some(gic) = GIC.lock().as_mut() {
        let id = IntId::spi(intid.saturating_sub(32));
        let _ = gic.driver.set_interrupt_priority(id, None, 0x80);
        let _ = gic.driver.enable_interrupt(id, None, true);
    }
}

/// Whether a GICv3 was set up (otherwise CPUs cannot be kicked and wait by polling).
pub fn present() -> bool {
    GIC.lock().is_some()
}
