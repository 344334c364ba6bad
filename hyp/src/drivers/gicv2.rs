//! The physical GICv2 (GIC-400): distributor, CPU interface and the virtual interface
//! control (GICH), as the ARM GIC v2 architecture specification (IHI 0048B) lays them out.
//! The hypervisor keeps every interrupt in group 0 and uses EOImode 1 (an EOI only drops
//! the priority; the guest's deactivation of a forwarded interrupt deactivates it).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::gic::{KICK_SGI, PRIVATE};

const GICD_CTLR: u64 = 0x000;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ICENABLER: u64 = 0x180;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xc00;
const GICD_SGIR: u64 = 0xf00;
const GICC_CTLR: u64 = 0x000;
const GICC_PMR: u64 = 0x004;
const GICC_IAR: u64 = 0x00c;
const GICC_EOIR: u64 = 0x010;
const GICC_DIR: u64 = 0x1000;
const GICH_HCR: u64 = 0x000;
const GICH_VTR: u64 = 0x004;
const GICH_VMCR: u64 = 0x008;
const GICH_APR: u64 = 0x0f0;
const GICH_LR: u64 = 0x100;

static GICD: AtomicU64 = AtomicU64::new(0);
static GICC: AtomicU64 = AtomicU64::new(0);
static GICH: AtomicU64 = AtomicU64::new(0);
/// Each CPU's interface number as a GICD_SGIR target bit, by DT CPU index.
static TARGETS: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];

fn reg(base: &AtomicU64, offset: u64) -> Option<*mut u32> {
    let base = base.load(Ordering::Acquire);
    (base != 0).then(|| (base + offset) as usize as *mut u32)
}

fn read(base: &AtomicU64, offset: u64) -> u32 {
    // SAFETY: `init` stored the base of a GIC window that EL2 maps as device memory for
    // good; offsets are the architected registers inside it.
    reg(base, offset).map_or(0, |r| unsafe { r.read_volatile() })
}

fn write(base: &AtomicU64, offset: u64, value: u32) {
    if let Some(r) = reg(base, offset) {
        // SAFETY: as for `read`.
        unsafe { r.write_volatile(value) };
    }
}

/// Takes the GIC at these addresses (mapped at EL2 as device memory) and enables its
/// distributor.
///
/// # Safety
/// The windows must be the GIC's, mapped at EL2, and driven by nothing else.
pub unsafe fn init(gicd: u64, gicc: u64, gich: u64) {
    GICD.store(gicd, Ordering::Release);
    GICC.store(gicc, Ordering::Release);
    GICH.store(gich, Ordering::Release);
    write(&GICD, GICD_CTLR, 1);
}

/// Sets up this CPU's interface and banked interrupts; records its interface number.
pub fn init_cpu(cpu: usize) {
    for intid in PRIVATE {
        write_byte(GICD_IPRIORITYR, intid, 0x80);
        write(&GICD, GICD_ISENABLER, 1 << intid);
    }
    // The banked ITARGETSR of an SGI reads as this CPU's own interface bit.
    let me = (read(&GICD, GICD_ITARGETSR) & 0xff) as u8;
    if let Some(t) = TARGETS.get(cpu) {
        t.store(me, Ordering::Relaxed);
    }
    write(&GICC, GICC_PMR, 0xff);
    // Group enable (bit 0) and EOImode (bit 9), the same bits with or without the
    // Security Extensions when seen from non-secure state.
    write(&GICC, GICC_CTLR, 1 | (1 << 9));
}

/// Sets byte `intid` of the byte-per-interrupt array at `array` (IPRIORITYR, ITARGETSR)
/// by read-modify-write of its word, as the GIC-400 takes byte writes to these but other
/// GICv2 implementations need not.
fn write_byte(array: u64, intid: u32, value: u8) {
    let word = array + u64::from(intid / 4) * 4;
    let shift = (intid % 4) * 8;
    let old = read(&GICD, word) & !(0xff << shift);
    write(&GICD, word, old | (u32::from(value) << shift));
}

/// Sets SPI `intid` up: edge or level, priority 0x80, targeted at DT CPU `cpu`, enabled.
pub fn assign_spi(intid: u32, edge: bool, cpu: usize) {
    if intid < 32 {
        return;
    }
    enable_spi(intid, false);
    let word = GICD_ICFGR + u64::from(intid / 16) * 4;
    let bit = 1 << ((intid % 16) * 2 + 1);
    let config = read(&GICD, word);
    write(&GICD, word, if edge { config | bit } else { config & !bit });
    write_byte(GICD_IPRIORITYR, intid, 0x80);
    route_spi(intid, cpu);
    enable_spi(intid, true);
}

/// Targets SPI `intid` at DT CPU `cpu` alone.
pub fn route_spi(intid: u32, cpu: usize) {
    let target = TARGETS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed));
    if intid >= 32 && target != 0 {
        write_byte(GICD_ITARGETSR, intid, target);
    }
}

/// Enables or disables SPI `intid`.
pub fn enable_spi(intid: u32, enable: bool) {
    let reg = if enable {
        GICD_ISENABLER
    } else {
        GICD_ICENABLER
    };
    write(&GICD, reg + u64::from(intid / 32) * 4, 1 << (intid % 32));
}

/// Acknowledges the highest-priority pending interrupt; 1023 when none.
pub fn acknowledge() -> u32 {
    read(&GICC, GICC_IAR) & 0x3ff
}

/// Drops the priority of `intid`.
pub fn end_of_interrupt(intid: u32) {
    write(&GICC, GICC_EOIR, intid);
}

/// Deactivates `intid`.
pub fn deactivate(intid: u32) {
    write(&GICC, GICC_DIR, intid);
}

/// Sends the kick SGI to DT CPU `cpu`.
pub fn kick(cpu: usize) {
    let target = TARGETS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed));
    if target != 0 {
        write(&GICD, GICD_SGIR, (u32::from(target) << 16) | KICK_SGI);
    }
}

/// GICH_VTR.ListRegs + 1.
pub fn list_register_count() -> usize {
    ((read(&GICH, GICH_VTR) & 0x3f) + 1).min(64) as usize
}

/// Reads GICH_LR<n>.
pub fn read_lr(n: usize) -> u32 {
    read(&GICH, GICH_LR + 4 * n as u64)
}

/// Writes GICH_LR<n>.
pub fn write_lr(n: usize, value: u32) {
    if n < list_register_count() {
        write(&GICH, GICH_LR + 4 * n as u64, value);
    }
}

/// Writes GICH_HCR (En, and the maintenance requests, at the same bits as ICH_HCR_EL2).
pub fn set_hcr(value: u32) {
    write(&GICH, GICH_HCR, value);
}

/// Resets the guest's virtual CPU interface state for a VM starting afresh.
pub fn reset_virtual_interface() {
    write(&GICH, GICH_VMCR, 0);
    write(&GICH, GICH_APR, 0);
    for n in 0..list_register_count() {
        write_lr(n, 0);
    }
}
