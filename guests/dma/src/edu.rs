//! QEMU's `edu` PCI device (QEMU `docs/specs/edu.rst`, `hw/misc/edu.c`): its
//! identification and liveness registers and its DMA engine, through BAR0.
//!
//! The DMA engine copies between a 4 KiB buffer inside the device, at device address
//! [`BUFFER`], and any bus address. QEMU runs a transfer 100 ms of virtual time after the
//! command is written and clears [`COMMAND_RUN`] when done; it never reports an error: a
//! transfer the bus refuses (an IOMMU fault, no memory there) writes nothing, or reads as
//! zeros. Unless QEMU is started with `-device edu,dma_mask=0xffffffffffffffff`, the device
//! keeps only the low 28 bits of the bus address.

use core::fmt;
use core::ptr::NonNull;

use aarch64_cpu::asm::barrier;
use safe_mmio::fields::{ReadPure, ReadPureWrite};
use safe_mmio::{field, UniqueMmioPointer};
use tandem_guest_rt::time;

/// PCI Vendor ID and Device ID.
pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
/// The device address of the DMA buffer, and its size.
pub const BUFFER: u64 = 0x40000;
pub const BUFFER_SIZE: u64 = 4096;
/// The identification register's low byte.
const IDENTIFICATION_MAGIC: u32 = 0xed;
/// DMA command: start (reads as 1 while running), direction, interrupt on completion.
const COMMAND_RUN: u64 = 1 << 0;
const COMMAND_TO_RAM: u64 = 1 << 1;

/// BAR0 of the device, the registers this guest uses. The DMA registers are 64 bits wide
/// and must be accessed as such: a 32-bit write to one replaces it whole.
#[repr(C)]
struct Registers {
    /// 0x00: identification, 0xRRrr00ed (major, minor version).
    identification: ReadPure<u32>,
    /// 0x04: card liveness check: reads back the bitwise inverse of the value written.
    liveness: ReadPureWrite<u32>,
    _reserved: [u32; 30],
    /// 0x80: DMA source address.
    dma_source: ReadPureWrite<u64>,
    /// 0x88: DMA destination address.
    dma_destination: ReadPureWrite<u64>,
    /// 0x90: DMA transfer count, in bytes.
    dma_count: ReadPureWrite<u64>,
    /// 0x98: DMA command.
    dma_command: ReadPureWrite<u64>,
}

const _: () = assert!(core::mem::offset_of!(Registers, liveness) == 0x04);
const _: () = assert!(core::mem::offset_of!(Registers, dma_source) == 0x80);
const _: () = assert!(core::mem::offset_of!(Registers, dma_command) == 0x98);

/// Which way a transfer copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a bus address into the device's buffer.
    IntoBuffer,
    /// From the device's buffer to a bus address.
    OutOfBuffer,
}

/// What went wrong with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The identification register does not end in 0xed.
    NotEdu { identification: u32 },
    /// The liveness register did not read back the inverse of what was written.
    NotAlive { wrote: u32, read: u32 },
    /// A transfer was still running when a new one was to start.
    Busy { command: u64 },
    /// The device kept another value than the one written to a DMA register.
    SetupIgnored {
        register: &'static str,
        wrote: u64,
        read: u64,
    },
    /// The transfer did not finish in time.
    Timeout { command: u64, timeout_ms: u64 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotEdu { identification } => write!(
                f,
                "identification register reads {identification:#010x}, not 0x......ed"
            ),
            Error::NotAlive { wrote, read } => write!(
                f,
                "liveness register: wrote {wrote:#010x}, read {read:#010x}, want {:#010x}",
                !wrote
            ),
            Error::Busy { command } => {
                write!(f, "a DMA transfer is still running (command {command:#x})")
            }
            Error::SetupIgnored {
                register,
                wrote,
                read,
            } => write!(
                f,
                "DMA {register} register: wrote {wrote:#x}, reads {read:#x}"
            ),
            Error::Timeout {
                command,
                timeout_ms,
            } => write!(
                f,
                "DMA transfer not finished after {timeout_ms} ms (command register {command:#x})"
            ),
        }
    }
}

/// The device, through its BAR0.
pub struct Edu {
    regs: UniqueMmioPointer<'static, Registers>,
}

impl Edu {
    /// The device whose BAR0 is at `base`; `None` if `base` is 0 or not an address.
    ///
    /// # Safety
    ///
    /// An edu device's BAR0 must be decoded at `base` (reachable as Device memory), and
    /// nothing else in the program may access it while the `Edu` lives.
    pub unsafe fn new(base: u64) -> Option<Edu> {
        let base = NonNull::new(usize::try_from(base).ok()? as *mut Registers)?;
        // SAFETY: the caller promised that edu's BAR0 is at `base`, as Device memory, and
        // that this is its only user; BAR0 is 1 MiB, larger than `Registers`.
        let regs = unsafe { UniqueMmioPointer::new(base) };
        Some(Edu { regs })
    }

    /// Reads the identification register and checks its magic byte.
    pub fn identify(&mut self) -> Result<u32, Error> {
        let identification = field!(self.regs, identification).read();
        if identification & 0xff != IDENTIFICATION_MAGIC {
            return Err(Error::NotEdu { identification });
        }
        Ok(identification)
    }

    /// Writes `value` to the liveness register and checks it reads back inverted.
    pub fn check_liveness(&mut self, value: u32) -> Result<(), Error> {
        field!(self.regs, liveness).write(value);
        let read = field!(self.regs, liveness).read();
        if read != !value {
            return Err(Error::NotAlive { wrote: value, read });
        }
        Ok(())
    }

    /// Copies `count` bytes from `source` to `destination` (one of them inside the
    /// buffer, as `direction` says) and waits up to `timeout_ms` of guest time for the
    /// device to finish. Without interrupts: the command's interrupt bit stays clear.
    pub fn transfer(
        &mut self,
        direction: Direction,
        source: u64,
        destination: u64,
        count: u64,
        timeout_ms: u64,
    ) -> Result<(), Error> {
        let command = field!(self.regs, dma_command).read();
        if command & COMMAND_RUN != 0 {
            return Err(Error::Busy { command });
        }
        field!(self.regs, dma_source).write(source);
        field!(self.regs, dma_destination).write(destination);
        field!(self.regs, dma_count).write(count);
        for (register, wrote, read) in [
            ("source", source, field!(self.regs, dma_source).read()),
            (
                "destination",
                destination,
                field!(self.regs, dma_destination).read(),
            ),
            ("count", count, field!(self.regs, dma_count).read()),
        ] {
            if read != wrote {
                return Err(Error::SetupIgnored {
                    register,
                    wrote,
                    read,
                });
            }
        }
        let command = match direction {
            Direction::IntoBuffer => COMMAND_RUN,
            Direction::OutOfBuffer => COMMAND_RUN | COMMAND_TO_RAM,
        };
        // Every store to the memory the device is about to read has completed.
        barrier::dsb(barrier::SY);
        field!(self.regs, dma_command).write(command);
        let mut last = command;
        let done = time::wait_until(timeout_ms, || {
            last = field!(self.regs, dma_command).read();
            last & COMMAND_RUN == 0
        });
        // Loads of the memory the device wrote come after it said it was done.
        barrier::dsb(barrier::SY);
        if done {
            Ok(())
        } else {
            Err(Error::Timeout {
                command: last,
                timeout_ms,
            })
        }
    }
}
