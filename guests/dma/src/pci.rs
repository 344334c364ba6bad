//! PCI on a generic ECAM host bridge: where the device tree puts it, configuration space
//! through ECAM, and the placement of a function's BAR0 in the 32-bit memory window.
//!
//! The host bridge is the node with `compatible = "pci-host-ecam-generic"` (Linux's
//! `Documentation/devicetree/bindings/pci/host-generic-pci.yaml`): `reg` is the ECAM window,
//! `bus-range` the buses it covers (0 to 255 when absent), and `ranges` maps PCI address
//! spaces to CPU addresses, each entry a 3-cell PCI address (`phys.hi`, `phys.mid`,
//! `phys.lo`, IEEE Std 1275-1994 PCI binding, section 2.2.1.1), a CPU address of the
//! parent's `#address-cells`, and a size of the bridge's `#size-cells`.

use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use safe_mmio::fields::{ReadPure, ReadPureWrite};
use safe_mmio::{field, UniqueMmioPointer};

/// The host bridge's compatible string.
const HOST_BRIDGE_COMPATIBLE: &str = "pci-host-ecam-generic";
/// `phys.hi` bits 25:24, the space code.
const SPACE_CODE_SHIFT: u32 = 24;
const SPACE_CODE_MASK: u32 = 0x3;
/// Space code of 32-bit memory space.
const SPACE_MEM32: u32 = 0b10;
/// The cells of a PCI address in `ranges`.
const PCI_ADDRESS_CELLS: usize = 3;
/// ECAM gives each bus 1 MiB: 32 devices of 8 functions of 4 KiB (PCIe Base 6.0, 7.2.2).
const ECAM_BUS_SHIFT: u32 = 20;
const ECAM_DEVICE_SHIFT: u32 = 15;
const ECAM_FUNCTION_SHIFT: u32 = 12;
const DEVICES_PER_BUS: u8 = 32;
const FUNCTIONS_PER_DEVICE: u8 = 8;
/// The Vendor ID an absent function reads as.
const NO_VENDOR: u16 = 0xffff;
/// Header Type bit 7: the device has more than one function.
const MULTI_FUNCTION: u32 = 1 << 23;
/// Command register bits (PCI Local Bus 3.0, 6.2.2): I/O Space, Memory Space, Bus Master.
const COMMAND_IO: u32 = 1 << 0;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// BAR bit 0: an I/O BAR (PCI Local Bus 3.0, 6.2.5.1).
const BAR_IO: u32 = 1 << 0;
/// BAR bits 2:1, a memory BAR's type: 32-bit, or 64-bit over this BAR and the next.
const BAR_TYPE_MASK: u32 = 0b110;
const BAR_TYPE_32: u32 = 0b000;
const BAR_TYPE_64: u32 = 0b100;
/// The address bits of a memory BAR.
const BAR_ADDRESS_MASK: u32 = !0xf;

/// Why the device tree gives no usable host bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError {
    /// No node is `compatible = "pci-host-ecam-generic"`.
    NoHostBridge,
    /// The host bridge's `reg` is missing, empty, or has more than 64 bits of address or
    /// size.
    BadReg,
    /// `bus-range` is not two cells, first <= last <= 255.
    BadBusRange,
    /// The ECAM window is smaller than the 1 MiB of one bus.
    EcamTooSmall(u64),
    /// `ranges` is missing or its cells do not fit the bridge's `#address-cells` (which must
    /// be 3) and `#size-cells`.
    BadRanges,
    /// `ranges` has no 32-bit memory window.
    NoMem32Window,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NoHostBridge => {
                write!(f, "the device tree has no {HOST_BRIDGE_COMPATIBLE} node")
            }
            DtError::BadReg => f.write_str("the host bridge's reg is missing or malformed"),
            DtError::BadBusRange => f.write_str("the host bridge's bus-range is malformed"),
            DtError::EcamTooSmall(size) => {
                write!(f, "the ECAM window is {size:#x} bytes, less than one bus")
            }
            DtError::BadRanges => f.write_str("the host bridge's ranges is missing or malformed"),
            DtError::NoMem32Window => {
                f.write_str("the host bridge's ranges has no 32-bit memory window")
            }
        }
    }
}

/// Why a BAR could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// The BAR decodes I/O space, not memory.
    Io,
    /// The BAR's type field is reserved (or the 64-bit BAR is BAR5).
    BadType(u32),
    /// Writing all ones left no address bit set: the BAR is not implemented.
    NotImplemented,
    /// The BAR does not fit in the window.
    NoRoom { size: u64 },
    /// The BAR reads back another address than the one written.
    NotTaken { wrote: u64, read: u64 },
}

impl fmt::Display for BarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarError::Io => f.write_str("it is an I/O BAR"),
            BarError::BadType(bar) => write!(f, "its type is reserved (BAR reads {bar:#010x})"),
            BarError::NotImplemented => f.write_str("it is not implemented"),
            BarError::NoRoom { size } => {
                write!(f, "{size:#x} bytes do not fit in the 32-bit window")
            }
            BarError::NotTaken { wrote, read } => {
                write!(f, "wrote {wrote:#x}, it reads back {read:#x}")
            }
        }
    }
}

/// A window of PCI memory space and the CPU addresses that reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first PCI address.
    pub pci_base: u64,
    /// The CPU address of `pci_base`.
    pub cpu_base: u64,
    /// Bytes.
    pub size: u64,
}

/// A generic ECAM host bridge as the device tree describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBridge {
    /// CPU address of the ECAM window (the configuration space of `first_bus`).
    pub ecam_base: u64,
    /// Bytes of the ECAM window.
    pub ecam_size: u64,
    /// The first bus number (`bus-range`).
    pub first_bus: u8,
    /// The last bus the window covers.
    pub last_bus: u8,
    /// The 32-bit memory window.
    pub mem32: Window,
}

impl HostBridge {
    /// The first enabled host bridge of `fdt`.
    pub fn from_dt(fdt: &fdt::Fdt) -> Result<HostBridge, DtError> {
        let node = fdt
            .all_nodes()
            .find(|node| {
                node.compatible()
                    .is_some_and(|c| c.all().any(|s| s == HOST_BRIDGE_COMPATIBLE))
                    && node
                        .property("status")
                        .and_then(|s| s.as_str())
                        .is_none_or(|s| s == "okay" || s == "ok")
            })
            .ok_or(DtError::NoHostBridge)?;

        // The size of `reg`'s address tells the parent's #address-cells, which `ranges` needs.
        let reg = node
            .raw_reg()
            .and_then(|mut reg| reg.next())
            .ok_or(DtError::BadReg)?;
        let parent_address_cells = reg.address.len() / 4;
        let ecam_base = read_cells(reg.address).ok_or(DtError::BadReg)?;
        let ecam_size = read_cells(reg.size).ok_or(DtError::BadReg)?;
        if ecam_base.checked_add(ecam_size).is_none() {
            return Err(DtError::BadReg);
        }

        let (first_bus, last_bus) = match node.property("bus-range") {
            None => (0, 255),
            Some(range) => {
                let cells = range.value;
                if cells.len() != 8 {
                    return Err(DtError::BadBusRange);
                }
                let first = read_cells(&cells[..4]).ok_or(DtError::BadBusRange)?;
                let last = read_cells(&cells[4..]).ok_or(DtError::BadBusRange)?;
                match (u8::try_from(first), u8::try_from(last)) {
                    (Ok(first), Ok(last)) if first <= last => (first, last),
                    _ => return Err(DtError::BadBusRange),
                }
            }
        };
        let buses = ecam_size >> ECAM_BUS_SHIFT;
        if buses == 0 {
            return Err(DtError::EcamTooSmall(ecam_size));
        }
        let last_bus = last_bus.min(first_bus.saturating_add((buses - 1).min(255) as u8));

        let sizes = node.cell_sizes();
        if sizes.address_cells != PCI_ADDRESS_CELLS {
            return Err(DtError::BadRanges);
        }
        let ranges = node.property("ranges").ok_or(DtError::BadRanges)?.value;
        let entry_len = 4 * (PCI_ADDRESS_CELLS + parent_address_cells + sizes.size_cells);
        if ranges.is_empty() || !ranges.len().is_multiple_of(entry_len) {
            return Err(DtError::BadRanges);
        }
        let mut mem32 = None;
        for entry in ranges.chunks_exact(entry_len) {
            let (pci, rest) = entry.split_at(4 * PCI_ADDRESS_CELLS);
            let (cpu, size) = rest.split_at(4 * parent_address_cells);
            let (phys_hi, pci_address) = pci.split_at(4);
            let phys_hi = read_cells(phys_hi).ok_or(DtError::BadRanges)? as u32;
            if (phys_hi >> SPACE_CODE_SHIFT) & SPACE_CODE_MASK != SPACE_MEM32 {
                continue;
            }
            let window = Window {
                pci_base: read_cells(pci_address).ok_or(DtError::BadRanges)?,
                cpu_base: read_cells(cpu).ok_or(DtError::BadRanges)?,
                size: read_cells(size).ok_or(DtError::BadRanges)?,
            };
            let fits_32_bits = window
                .pci_base
                .checked_add(window.size)
                .is_some_and(|end| end <= 1 << 32);
            if window.size == 0
                || !fits_32_bits
                || window.cpu_base.checked_add(window.size).is_none()
            {
                return Err(DtError::BadRanges);
            }
            mem32 = Some(window);
            break;
        }
        Ok(HostBridge {
            ecam_base,
            ecam_size,
            first_bus,
            last_bus,
            mem32: mem32.ok_or(DtError::NoMem32Window)?,
        })
    }
}

/// Big-endian cells as one number: one or two cells, else `None`.
fn read_cells(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 || !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte)),
    )
}

/// A function's address: bus, device, function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A function found on a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass and programming interface (Class Code, bits 31:8 at 0x08).
    pub class: u32,
}

/// The start of a type 0 configuration header (PCI Local Bus 3.0, 6.1), the part this
/// guest uses. Every register is read and written 32 bits at a time.
#[repr(C)]
struct ConfigHeader {
    /// 0x00: Vendor ID (15:0), Device ID (31:16).
    id: ReadPure<u32>,
    /// 0x04: Command (15:0), Status (31:16, its error bits write-1-to-clear).
    command_status: ReadPureWrite<u32>,
    /// 0x08: Revision ID (7:0), Class Code (31:8).
    class_revision: ReadPure<u32>,
    /// 0x0c: Cache Line Size, Latency Timer, Header Type (23:16), BIST.
    header_type: ReadPure<u32>,
    /// 0x10 to 0x24: the Base Address Registers.
    bars: [ReadPureWrite<u32>; 6],
}

const _: () = assert!(core::mem::offset_of!(ConfigHeader, command_status) == 0x04);
const _: () = assert!(core::mem::offset_of!(ConfigHeader, header_type) == 0x0c);
const _: () = assert!(core::mem::offset_of!(ConfigHeader, bars) == 0x10);

/// A memory BAR as placed: where the function decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// The PCI address written to the BAR.
    pub pci_address: u64,
    /// The CPU address that reaches it.
    pub cpu_address: u64,
    /// Bytes.
    pub size: u64,
}

/// The ECAM window of a host bridge: one configuration header reachable at a time.
pub struct Ecam {
    base: u64,
    first_bus: u8,
    last_bus: u8,
}

impl Ecam {
    /// The ECAM window of `bridge`.
    ///
    /// # Safety
    ///
    /// `bridge` must describe a real ECAM window of this machine that nothing else in the
    /// program accesses while the `Ecam` lives, reachable as Device memory at its CPU address.
    pub unsafe fn new(bridge: &HostBridge) -> Ecam {
        Ecam {
            base: bridge.ecam_base,
            first_bus: bridge.first_bus,
            last_bus: bridge.last_bus,
        }
    }

    /// The configuration header of `bdf`, or `None` outside the window.
    fn header(&mut self, bdf: Bdf) -> Option<UniqueMmioPointer<'_, ConfigHeader>> {
        if bdf.bus < self.first_bus
            || bdf.bus > self.last_bus
            || bdf.device >= DEVICES_PER_BUS
            || bdf.function >= FUNCTIONS_PER_DEVICE
        {
            return None;
        }
        let offset = (u64::from(bdf.bus - self.first_bus) << ECAM_BUS_SHIFT)
            | (u64::from(bdf.device) << ECAM_DEVICE_SHIFT)
            | (u64::from(bdf.function) << ECAM_FUNCTION_SHIFT);
        let address = usize::try_from(self.base.checked_add(offset)?).ok()?;
        let header = NonNull::new(address as *mut ConfigHeader)?;
        // SAFETY: `Ecam::new`'s caller promised the window is ECAM, reachable as Device
        // memory and used by nothing else; `bdf` is inside it, so this is the function's own
        // 4 KiB of configuration space, 4 KiB aligned. The pointer borrows `self` mutably, so
        // it is the only one into the window while it lives.
        Some(unsafe { UniqueMmioPointer::new(header) })
    }

    /// The functions present on `bus`, in device and function order.
    pub fn scan(&mut self, bus: u8) -> Vec<Function> {
        let mut found = Vec::new();
        for device in 0..DEVICES_PER_BUS {
            for function in 0..FUNCTIONS_PER_DEVICE {
                let bdf = Bdf {
                    bus,
                    device,
                    function,
                };
                let Some(mut header) = self.header(bdf) else {
                    return found;
                };
                let id = field!(header, id).read();
                let vendor = id as u16;
                if vendor == NO_VENDOR {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                found.push(Function {
                    bdf,
                    vendor,
                    device: (id >> 16) as u16,
                    class: field!(header, class_revision).read() >> 8,
                });
                if function == 0 && field!(header, header_type).read() & MULTI_FUNCTION == 0 {
                    break;
                }
            }
        }
        found
    }

    /// Sizes BAR0 of `bdf` (a memory BAR), places it at the lowest suitably aligned address
    /// of `window`, and turns on Memory Space and Bus Master in its Command register.
    pub fn assign_bar0(&mut self, bdf: Bdf, window: &Window) -> Result<Bar, BarError> {
        let mut header = self.header(bdf).ok_or(BarError::NotImplemented)?;
        let command = field!(header, command_status).read() & 0xffff;
        let low = field!(header, bars).split()[0].read();
        if low & BAR_IO != 0 {
            return Err(BarError::Io);
        }
        let wide = match low & BAR_TYPE_MASK {
            BAR_TYPE_32 => false,
            BAR_TYPE_64 => true,
            _ => return Err(BarError::BadType(low)),
        };
        // No decoding while the BAR holds the sizing pattern.
        field!(header, command_status)
            .write(command & !(COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER));

        let bar = {
            let [mut bar0, mut bar1, ..] = field!(header, bars).split();
            // Sizing (PCI Local Bus 3.0, 6.2.5.1): write all ones; the address bits that
            // stay zero give the size.
            bar0.write(u32::MAX);
            let mut mask = u64::from(bar0.read() & BAR_ADDRESS_MASK);
            if wide {
                bar1.write(u32::MAX);
                mask |= u64::from(bar1.read()) << 32;
            } else {
                mask |= 0xffff_ffff_0000_0000;
            }
            if mask & u64::from(BAR_ADDRESS_MASK) == 0 {
                return Err(BarError::NotImplemented);
            }
            let size = (!mask).wrapping_add(1);

            let pci_address = window
                .pci_base
                .checked_next_multiple_of(size)
                .ok_or(BarError::NoRoom { size })?;
            let window_end = window.pci_base + window.size;
            if pci_address
                .checked_add(size)
                .is_none_or(|end| end > window_end)
            {
                return Err(BarError::NoRoom { size });
            }
            bar0.write(pci_address as u32);
            let mut read = u64::from(bar0.read() & BAR_ADDRESS_MASK);
            if wide {
                bar1.write((pci_address >> 32) as u32);
                read |= u64::from(bar1.read()) << 32;
            }
            if read != pci_address {
                return Err(BarError::NotTaken {
                    wrote: pci_address,
                    read,
                });
            }
            Bar {
                pci_address,
                cpu_address: window.cpu_base + (pci_address - window.pci_base),
                size,
            }
        };
        field!(header, command_status).write(command | COMMAND_MEMORY | COMMAND_BUS_MASTER);
        Ok(bar)
    }

    /// The Command register of `bdf` (0 outside the window).
    pub fn command(&mut self, bdf: Bdf) -> u32 {
        self.header(bdf).map_or(0, |mut header| {
            field!(header, command_status).read() & 0xffff
        })
    }
}
