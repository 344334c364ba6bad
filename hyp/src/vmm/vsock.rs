//! The glue of each `vsock@N` device: traps of the driver VM's register window, the
//! service's doorbell hypercall, and the lifecycle of both VMs, passed to the pure
//! [`Bridge`] under one lock, with Linux's RAM and the ring region as the memories it
//! works on.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use log::{info, warn};
use platform::config::VsockDevice;
use platform::guest_dt::{EmulatedVirtio, GuestLayout, ServiceRing, VIRTIO_WINDOW};
use platform::MemRange;
use spin::{Mutex, Once};
use stage2::IntermediatePhysAddr;
use tandem_proto::ring::raw::RawMemory;
use tandem_proto::ring::SharedMemory;
use virtio::{AccessWidth, GuestMemory, MemoryError, VsockConfig};

use super::{apply, Effects, Vm, VMS};
use crate::arch::cache;
use crate::devices::bridge::{Bridge, Outcome};

/// One vsock device: its config and its bridge.
pub(super) struct Link {
    pub config: VsockDevice,
    bridge: Mutex<Bridge>,
    /// The ring region, as the hypervisor reaches it.
    ring: Mutex<CoherentRing>,
}

static LINKS: Once<Vec<Link>> = Once::new();

/// Sets up every vsock device of the config. Boot CPU, before any VM loads.
pub(super) fn setup(devices: &[VsockDevice]) {
    let mut links = Vec::new();
    for d in devices {
        match link(d) {
            Ok(l) => links.push(l),
            Err(why) => warn!("{}: vsock device not set up: {why}", d.node),
        }
    }
    LINKS.call_once(|| links);
}

fn link(d: &VsockDevice) -> Result<Link, String> {
    let config = VsockConfig {
        peer_cid: d.service_cid,
        ..VsockConfig::new(d.driver_cid)
    };
    let len = usize::try_from(d.memory.size).map_err(|_| "the ring region is too large")?;
    if !crate::arch::zero_physical(d.memory.base, d.memory.size) {
        return Err(format!(
            "the ring region {:#x}+{:#x} is not RAM the hypervisor may write",
            d.memory.base, d.memory.size
        ));
    }
    let bridge = Bridge::new(config, len).map_err(|e| format!("{e}"))?;
    // SAFETY: the config check keeps the region clear of the hypervisor and every VM's
    // memory, and it is RAM mapped read-write at EL2 (just zeroed); only this link and the
    // service VM use it, and it is page aligned.
    let raw = unsafe { RawMemory::new(d.memory.base as usize as *mut u8, len) };
    Ok(Link {
        config: d.clone(),
        bridge: Mutex::new(bridge),
        ring: Mutex::new(CoherentRing(raw)),
    })
}

fn links() -> &'static [Link] {
    LINKS.get().map_or(&[], Vec::as_slice)
}

/// The VM with config index `index`, if it was built.
fn vm_at(index: usize) -> Option<&'static Vm> {
    VMS.get()?.iter().find(|v| v.config.index == index)
}

/// What the VM's DTB shows of its vsock devices and rings.
pub(super) fn add_to_layout(vm: &Vm, layout: &mut GuestLayout) {
    for l in links() {
        if l.config.driver == vm.config.index {
            layout.virtio.push(EmulatedVirtio {
                base: l.config.window,
                spi: l.config.driver_spi,
            });
        }
        if l.config.service == vm.config.index {
            layout.service_ring = Some(ServiceRing {
                memory: l.config.memory,
                doorbell: l.config.service_spi,
            });
        }
    }
}

/// The SPIs a VM's vsock devices and rings use (INTIDs), so its vGIC has them.
pub(super) fn spis_of(index: usize, devices: &[VsockDevice]) -> impl Iterator<Item = u32> + '_ {
    devices.iter().filter_map(move |d| {
        if d.driver == index {
            Some(d.driver_spi + 32)
        } else if d.service == index {
            Some(d.service_spi + 32)
        } else {
            None
        }
    })
}

/// A trapped access of the driver VM inside one of its vsock windows: emulated, true.
/// `value` is what a write stores; a read returns the value.
pub(super) fn mmio(vm: &Vm, ipa: u64, width: usize, write: Option<u64>) -> Option<u64> {
    let l = links()
        .iter()
        .find(|l| l.config.driver == vm.config.index && ipa & !0xfff == l.config.window)?;
    let offset = ipa - l.config.window;
    let width = AccessWidth::from_bytes(width);
    let (Some(width), true) = (width, offset < VIRTIO_WINDOW) else {
        // Beyond the registers, or an odd width: reads as zero, writes ignored.
        return Some(0);
    };
    let mut mem = DriverMemory(&vm.config.memory);
    let mut bridge = l.bridge.lock();
    match write {
        None => Some(bridge.mmio_read(offset, width)),
        Some(value) => {
            let out = bridge.mmio_write(offset, width, value, &mut mem, &mut *l.ring.lock());
            act(l, &out);
            drop(bridge);
            Some(0)
        }
    }
}

/// The service VM rang the doorbell of its ring region at `base`: true when it has one.
pub(super) fn service_rang(vm: &Vm, base: u64) -> bool {
    let Some(l) = links()
        .iter()
        .find(|l| l.config.service == vm.config.index && l.config.memory.base == base)
    else {
        return false;
    };
    let Some(driver) = vm_at(l.config.driver) else {
        return true;
    };
    let mut mem = DriverMemory(&driver.config.memory);
    let mut bridge = l.bridge.lock();
    let out = bridge.service_rang(&mut mem, &mut *l.ring.lock());
    act(l, &out);
    drop(bridge);
    true
}

/// The VM is about to (re)load: as a service its ring starts empty and its old
/// connections are reset; as a driver its device goes back to reset.
pub(super) fn vm_loading(vm: &Vm) {
    for l in links() {
        let Some(driver) = vm_at(l.config.driver) else {
            continue;
        };
        let mut mem = DriverMemory(&driver.config.memory);
        if l.config.service == vm.config.index {
            let mut bridge = l.bridge.lock();
            let mut ring = l.ring.lock();
            let out = bridge.service_stopped(&mut mem, &mut *ring, "restarting");
            ring.zero(l.config.memory);
            bridge.service_started(&mut *ring);
            drop(ring);
            act(l, &out);
            drop(bridge);
        }
        if l.config.driver == vm.config.index {
            let mut bridge = l.bridge.lock();
            let out = bridge.driver_restarted(&mut mem, &mut *l.ring.lock());
            act(l, &out);
            drop(bridge);
        }
    }
}

/// The VM stopped for good: as a service, its connections are reset towards Linux; as a
/// driver, towards the service.
pub(super) fn vm_stopped(vm: &Vm) {
    for l in links() {
        let Some(driver) = vm_at(l.config.driver) else {
            continue;
        };
        let mut mem = DriverMemory(&driver.config.memory);
        let mut bridge = l.bridge.lock();
        let out = if l.config.service == vm.config.index {
            bridge.service_stopped(&mut mem, &mut *l.ring.lock(), "stopped")
        } else if l.config.driver == vm.config.index {
            // Linux is gone for good: its device is reset, so the service lets go of the
            // connections it still held for it.
            bridge.driver_restarted(&mut mem, &mut *l.ring.lock())
        } else {
            continue;
        };
        act(l, &out);
        drop(bridge);
    }
}

/// The statistics line of the VM's vsock devices, if it has any.
pub(super) fn stats_of(vm: &Vm) -> Option<String> {
    let mut parts = Vec::new();
    for l in links() {
        if l.config.driver == vm.config.index {
            let d = l.bridge.lock().device_stats();
            parts.push(format!(
                "vsock packets from it {} to it {}, bytes {} / {}, connections {} refused {} resets sent {} received {}, queue errors {}",
                d.packets_from_driver,
                d.packets_to_driver,
                d.bytes_from_driver,
                d.bytes_to_driver,
                d.connections_opened,
                d.connections_refused,
                d.resets_sent,
                d.resets_received,
                d.queue_errors
            ));
        }
        if l.config.service == vm.config.index {
            let b = l.bridge.lock().stats();
            parts.push(format!(
                "vsock records to it {} from it {}, bad {}, overflow resets {}, ring breaks {}",
                b.records_to_service,
                b.records_from_service,
                b.bad_records,
                b.overflow_resets,
                b.ring_breaks
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Carries out a bridge call's outcome: the driver's interrupt level, the service's
/// doorbell, and the log. Called with the bridge still locked: two CPUs' outcomes then
/// reach the vGIC in the order the device changed its line, so a level the device raised
/// is never overwritten by an older "low" from another CPU (which lost Linux's interrupt
/// under a flood).
fn act(l: &Link, out: &Outcome) {
    // The rings and used indices are written before either side can be told of them.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    if out.needs_reset {
        warn!(
            "{}: the driver broke a virtqueue: the device needs a reset",
            l.config.node
        );
    }
    if let Some(why) = out.ring_broken {
        warn!(
            "{}: the service broke its ring ({why}): its connections are reset until it restarts",
            l.config.node
        );
    }
    if let (Some(level), Some(driver)) = (out.driver_irq, vm_at(l.config.driver)) {
        if let Some(vgic) = &driver.vgic {
            let mut effects = Effects::new();
            let raised =
                vgic.model
                    .lock()
                    .set_level(l.config.driver_spi + 32, 0, level, &mut effects);
            if raised.is_ok() && level {
                driver.interrupts_injected.fetch_add(1, Ordering::Relaxed);
            }
            apply(driver, usize::MAX, &effects);
        }
    }
    if out.service_doorbell {
        if let Some(service) = vm_at(l.config.service) {
            if service.stopped.load(Ordering::Acquire) {
                return;
            }
            if let Some(vgic) = &service.vgic {
                let mut effects = Effects::new();
                if vgic
                    .model
                    .lock()
                    .raise(l.config.service_spi + 32, 0, &mut effects)
                    .is_ok()
                {
                    service.interrupts_injected.fetch_add(1, Ordering::Relaxed);
                }
                apply(service, usize::MAX, &effects);
            }
        }
    }
}

/// Logs the vsock devices at boot.
pub(super) fn report() {
    for l in links() {
        let name = |i: usize| vm_at(i).map_or("?", |v| v.config.label.as_str());
        info!(
            "{}: {} (CID {}) reaches {} (CID {}) over vsock; device at {:#x} SPI {}, rings at {:#x}+{:#x}",
            l.config.node,
            name(l.config.driver),
            l.config.driver_cid,
            name(l.config.service),
            l.config.service_cid,
            l.config.window,
            l.config.driver_spi,
            l.config.memory.base,
            l.config.memory.size
        );
    }
}

/// Linux's RAM as the device reaches it: guest physical is host physical, and nothing
/// outside the VM's own memory banks is ever touched.
struct DriverMemory<'a>(&'a [MemRange]);

impl DriverMemory<'_> {
    /// The host address of `[addr, addr + len)` when it lies in one bank.
    fn check(&self, addr: IntermediatePhysAddr, len: usize) -> Result<usize, MemoryError> {
        let end = addr.0.checked_add(len as u64);
        let inside = self
            .0
            .iter()
            .any(|m| m.base <= addr.0 && end.is_some_and(|e| m.end().is_some_and(|me| e <= me)));
        if inside {
            Ok(addr.0 as usize)
        } else {
            Err(MemoryError {
                addr,
                len: len as u64,
            })
        }
    }
}

impl GuestMemory for DriverMemory<'_> {
    fn contains(&self, addr: IntermediatePhysAddr, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| self.check(addr, len).is_ok())
    }

    fn read(&self, addr: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let at = self.check(addr, buf.len())?;
        // SAFETY: inside the driver VM's RAM (checked), which EL2 maps and which holds no
        // object of ours; Linux may change it meanwhile, which only changes the bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(at as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn write(&mut self, addr: IntermediatePhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        let at = self.check(addr, data.len())?;
        // SAFETY: as for `read`; the device writes only into buffers the driver gave it.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, data.len()) };
        Ok(())
    }

    fn read_u16(&self, addr: IntermediatePhysAddr) -> Result<u16, MemoryError> {
        let at = self.check(addr, 2)?;
        if at % 2 != 0 {
            return Err(MemoryError { addr, len: 2 });
        }
        // SAFETY: inside the VM's RAM and aligned (checked): one 16-bit load.
        Ok(unsafe { (at as *const u16).read_volatile() })
    }

    fn write_u16(&mut self, addr: IntermediatePhysAddr, value: u16) -> Result<(), MemoryError> {
        let at = self.check(addr, 2)?;
        if at % 2 != 0 {
            return Err(MemoryError { addr, len: 2 });
        }
        // SAFETY: as for `read_u16`: one 16-bit store.
        unsafe { (at as *mut u16).write_volatile(value) };
        Ok(())
    }
}

/// The ring region with the cache kept out of the way: the secure guest runs with its
/// MMU off, so its accesses go straight to memory, while EL2's are cached. Every line the
/// hypervisor reads is invalidated first and every line it writes is cleaned after.
struct CoherentRing(RawMemory);

impl CoherentRing {
    fn zero(&mut self, region: MemRange) {
        crate::arch::zero_physical(region.base, region.size);
        cache::clean_to_poc(region.base as usize, region.size as usize);
    }

    fn base(&self) -> usize {
        self.0.base() as usize
    }
}

impl SharedMemory for CoherentRing {
    fn read(&self, offset: usize, buf: &mut [u8]) {
        cache::clean_invalidate_to_poc(self.base() + offset, buf.len());
        self.0.read(offset, buf);
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0.write(offset, data);
        cache::clean_to_poc(self.base() + offset, data.len());
    }

    fn load_acquire(&self, offset: usize) -> u32 {
        cache::clean_invalidate_to_poc(self.base() + offset, 4);
        self.0.load_acquire(offset)
    }

    fn store_release(&mut self, offset: usize, value: u32) {
        self.0.store_release(offset, value);
        cache::clean_to_poc(self.base() + offset, 4);
    }
}
