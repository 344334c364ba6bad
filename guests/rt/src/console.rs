//! The console: the PL011 (or SBSA generic UART) the DTB's `/chosen/stdout-path` names, and
//! `print!`/`println!`.
//!
//! Output only. The lock around the UART is re-entrant per vCPU, so a fault or panic
//! while this vCPU is printing still gets its message out instead of deadlocking.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use platform::UartKind;
use safe_mmio::fields::{ReadPure, ReadPureWrite};
use safe_mmio::{field, UniqueMmioPointer};

/// The PL011 registers the console uses (PrimeCell UART PL011 TRM, section 3.2).
#[repr(C)]
struct Pl011Registers {
    /// UARTDR: data register.
    dr: ReadPureWrite<u32>,
    _reserved0: [u32; 5],
    /// UARTFR: flag register.
    fr: ReadPure<u32>,
    _reserved1: [u32; 5],
    /// UARTCR: control register.
    cr: ReadPureWrite<u32>,
}

const _: () = assert!(core::mem::offset_of!(Pl011Registers, fr) == 0x18);
const _: () = assert!(core::mem::offset_of!(Pl011Registers, cr) == 0x30);

/// UARTFR.TXFF: the transmit FIFO is full.
const FR_TXFF: u32 = 1 << 5;
/// UARTCR.UARTEN and UARTCR.TXE: UART and transmitter enabled.
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;

struct Pl011(UniqueMmioPointer<'static, Pl011Registers>);

impl Pl011 {
    fn write_byte(&mut self, byte: u8) {
        while field!(self.0, fr).read() & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        field!(self.0, dr).write(u32::from(byte));
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

/// The console UART behind a lock that the owning vCPU may take again.
struct Console {
    /// CPU index + 1 of the vCPU holding the lock, 0 when free.
    owner: AtomicUsize,
    uart: UnsafeCell<Option<Pl011>>,
}

// SAFETY: `uart` is only reached by the vCPU recorded in `owner` (see `with`); a vCPU that
// re-enters only does so from an exception taken on itself, which the interrupted
// write cannot observe except as extra bytes in the FIFO.
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    owner: AtomicUsize::new(0),
    uart: UnsafeCell::new(None),
};

impl Console {
    fn with(&self, f: impl FnOnce(&mut Option<Pl011>)) {
        let me = crate::cpu_index() + 1;
        let reentered = self.owner.load(Ordering::Acquire) == me;
        if !reentered {
            while self
                .owner
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
        }
        // SAFETY: this vCPU holds the lock (taken above, or by the code this exception
        // interrupted on the same vCPU), so no other vCPU reaches `uart` meanwhile.
        f(unsafe { &mut *self.uart.get() });
        if !reentered {
            self.owner.store(0, Ordering::Release);
        }
    }
}

/// Finds the console in `dtb` and turns its transmitter on if it is off; returns whether
/// there is one. Without a PL011 console the guest runs silently.
pub(crate) fn init(dtb: &[u8]) -> bool {
    let Some(uart) = platform::early_console(dtb) else {
        return false;
    };
    if uart.kind != UartKind::Pl011 {
        return false;
    }
    let Some(base) = usize::try_from(uart.base)
        .ok()
        .and_then(|base| NonNull::new(base as *mut Pl011Registers))
    else {
        return false;
    };
    // SAFETY: the device tree says a PL011 lives at `base`; with the MMU off the address is
    // reachable as Device memory, and only this console ever accesses it.
    let mut regs = unsafe { UniqueMmioPointer::new(base) };
    // Direct boot has no firmware to enable the UART; keep the line settings as they are.
    // The SBSA generic UART is always enabled and has no UARTCR (Xen's vpl011 refuses the
    // access with an abort).
    if !is_sbsa_generic_uart(dtb, uart.base) {
        let cr = field!(regs, cr).read();
        if cr & (CR_UARTEN | CR_TXE) != CR_UARTEN | CR_TXE {
            field!(regs, cr).write(cr | CR_UARTEN | CR_TXE);
        }
    }
    CONSOLE.with(|slot| *slot = Some(Pl011(regs)));
    true
}

/// Whether the UART at `base` is an SBSA generic UART (`arm,sbsa-uart`, not also
/// `arm,pl011`): the PL011's data and flag registers without its control registers, as
/// Xen's `vpl011` gives a domU.
fn is_sbsa_generic_uart(dtb: &[u8], base: u64) -> bool {
    let Ok(fdt) = fdt::Fdt::new(dtb) else {
        return false;
    };
    let found = fdt.all_nodes().any(|node| {
        let Some(compatible) = node.compatible() else {
            return false;
        };
        compatible.all().any(|c| c == "arm,sbsa-uart")
            && !compatible.all().any(|c| c == "arm,pl011")
            && node
                .reg()
                .and_then(|mut reg| reg.next())
                .is_some_and(|reg| reg.starting_address as u64 == base)
    });
    found
}

/// Writes formatted text to the console, all of it before another vCPU's.
pub fn write_fmt(args: fmt::Arguments) {
    CONSOLE.with(|uart| {
        if let Some(uart) = uart {
            let _ = uart.write_fmt(args);
        }
    });
}

/// Prints to the guest's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!($($arg)*))
    };
}

/// Prints a line to the guest's console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
