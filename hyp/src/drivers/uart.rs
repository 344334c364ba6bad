//! Console UARTs: the PL011 (QEMU virt, most SoCs), the BCM2835 auxiliary mini-UART
//! (Raspberry Pi 4's `stdout-path`) and the 8250/16550 family. Output only: firmware has
//! already set the line up, and the hypervisor never takes the console's input.

use core::ptr::NonNull;

use platform::{EarlyUart, UartKind};
use safe_mmio::fields::{ReadPure, ReadPureWrite};
use safe_mmio::{field, UniqueMmioPointer};

/// A UART the console can write to.
pub trait Uart: Send {
    /// Waits until the UART can take a byte, then sends it.
    fn write_byte(&mut self, byte: u8);

    /// A received byte, if one is waiting (UARTs without input support give none).
    fn read_byte(&mut self) -> Option<u8> {
        None
    }

    /// Asks for an interrupt when input arrives; false if this UART cannot.
    fn enable_rx_interrupt(&mut self) -> bool {
        false
    }
}

/// The PL011 registers the console uses (PrimeCell UART PL011 TRM, section 3.2).
///
/// Not the arm-pl011-uart crate: it can only enable the UART by reprogramming the baud
/// rate from the UART's input clock, which the hypervisor does not know, and its
/// registers are private, so it cannot tell whether firmware enabled the UART already.
#[repr(C)]
pub struct Pl011Registers {
    /// UARTDR: data.
    dr: ReadPureWrite<u32>,
    _reserved0: [u32; 5],
    /// UARTFR: flags; bit 5 TXFF, transmit FIFO full.
    fr: ReadPure<u32>,
    _reserved1: [u32; 5],
    /// UARTCR: control; bit 0 UARTEN, bit 8 TXE, bit 9 RXE.
    cr: ReadPureWrite<u32>,
    /// UARTIFLS.
    ifls: ReadPureWrite<u32>,
    /// UARTIMSC: interrupt mask set/clear; bit 4 RXIM, bit 6 RTIM.
    imsc: ReadPureWrite<u32>,
}

/// The ARM PrimeCell PL011.
pub struct Pl011(UniqueMmioPointer<'static, Pl011Registers>);

impl Pl011 {
    const FR_TXFF: u32 = 1 << 5;
    const CR_UARTEN: u32 = 1 << 0;
    const CR_TXE: u32 = 1 << 8;

    /// Turns the transmitter on if firmware left it off (QEMU's direct boot has no
    /// firmware to do it), keeping the line settings as they are.
    fn enable_transmitter(&mut self) {
        let cr = field!(self.0, cr).read();
        let want = Self::CR_UARTEN | Self::CR_TXE;
        if cr & want != want {
            field!(self.0, cr).write(cr | want);
        }
    }
}

impl Uart for Pl011 {
    fn write_byte(&mut self, byte: u8) {
        while field!(self.0, fr).read() & Self::FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        field!(self.0, dr).write(u32::from(byte));
    }

    fn read_byte(&mut self) -> Option<u8> {
        const FR_RXFE: u32 = 1 << 4;
        if field!(self.0, fr).read() & FR_RXFE != 0 {
            return None;
        }
        Some(field!(self.0, dr).read() as u8)
    }

    fn enable_rx_interrupt(&mut self) -> bool {
        const RXIM: u32 = 1 << 4;
        const RTIM: u32 = 1 << 6;
        const CR_RXE: u32 = 1 << 9;
        let cr = field!(self.0, cr).read();
        field!(self.0, cr).write(cr | CR_RXE);
        let imsc = field!(self.0, imsc).read();
        field!(self.0, imsc).write(imsc | RXIM | RTIM);
        true
    }
}

/// The BCM2835 auxiliary mini-UART's registers (BCM2711 peripherals, section 2.2).
#[repr(C)]
pub struct MiniUartRegisters {
    /// AUX_MU_IO_REG: transmit/receive data.
    io: ReadPureWrite<u32>,
    /// AUX_MU_IER_REG.
    ier: ReadPureWrite<u32>,
    /// AUX_MU_IIR_REG.
    iir: ReadPureWrite<u32>,
    /// AUX_MU_LCR_REG.
    lcr: ReadPureWrite<u32>,
    /// AUX_MU_MCR_REG.
    mcr: ReadPureWrite<u32>,
    /// AUX_MU_LSR_REG: bit 5, transmitter can accept a byte.
    lsr: ReadPure<u32>,
}

/// The Raspberry Pi's mini-UART.
pub struct MiniUart(UniqueMmioPointer<'static, MiniUartRegisters>);

impl Uart for MiniUart {
    fn write_byte(&mut self, byte: u8) {
        while field!(self.0, lsr).read() & (1 << 5) == 0 {
            core::hint::spin_loop();
        }
        field!(self.0, io).write(u32::from(byte));
    }
}

/// An 8250/16550 with `reg-shift` and `reg-io-width` from the DT.
pub struct Ns16550 {
    base: NonNull<u8>,
    reg_shift: u32,
    wide: bool,
}

// SAFETY: the UART is owned by the console, which serializes every access behind its lock.
unsafe impl Send for Ns16550 {}

impl Ns16550 {
    const THR: usize = 0;
    const LSR: usize = 5;
    const LSR_THRE: u32 = 1 << 5;

    fn reg(&self, index: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(index << self.reg_shift)
    }
}

impl Uart for Ns16550 {
    fn write_byte(&mut self, byte: u8) {
        loop {
            let lsr = if self.wide {
                // SAFETY: `base` maps the UART's registers (checked when it was made) and
                // LSR is a 32-bit register when reg-io-width is 4.
                unsafe { self.reg(Self::LSR).cast::<u32>().read_volatile() }
            } else {
                // SAFETY: as above, with 8-bit registers.
                u32::from(unsafe { self.reg(Self::LSR).read_volatile() })
            };
            if lsr & Self::LSR_THRE != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        if self.wide {
            // SAFETY: THR is a device register inside the mapped window.
            unsafe {
                self.reg(Self::THR)
                    .cast::<u32>()
                    .write_volatile(u32::from(byte))
            };
        } else {
            // SAFETY: as above.
            unsafe { self.reg(Self::THR).write_volatile(byte) };
        }
    }
}

/// The console device, whichever kind the board has.
pub enum ConsoleUart {
    Pl011(Pl011),
    MiniUart(MiniUart),
    Ns16550(Ns16550),
}

impl Uart for ConsoleUart {
    fn write_byte(&mut self, byte: u8) {
        match self {
            ConsoleUart::Pl011(u) => u.write_byte(byte),
            ConsoleUart::MiniUart(u) => u.write_byte(byte),
            ConsoleUart::Ns16550(u) => u.write_byte(byte),
        }
    }

    fn read_byte(&mut self) -> Option<u8> {
        match self {
            ConsoleUart::Pl011(u) => u.read_byte(),
            ConsoleUart::MiniUart(u) => u.read_byte(),
            ConsoleUart::Ns16550(u) => u.read_byte(),
        }
    }

    fn enable_rx_interrupt(&mut self) -> bool {
        match self {
            ConsoleUart::Pl011(u) => u.enable_rx_interrupt(),
            ConsoleUart::MiniUart(u) => u.enable_rx_interrupt(),
            ConsoleUart::Ns16550(u) => u.enable_rx_interrupt(),
        }
    }
}

impl ConsoleUart {
    /// Takes the UART the device tree names.
    ///
    /// # Safety
    /// `uart.base` must be the UART's register window, accessible at that address now and
    /// whenever the console is used, and nothing else may drive the UART.
    pub unsafe fn new(uart: &EarlyUart) -> Option<ConsoleUart> {
        let base = NonNull::new(usize::try_from(uart.base).ok()? as *mut u8)?;
        Some(match uart.kind {
            UartKind::Pl011 => {
                // SAFETY: the caller guarantees the window is the PL011's and ours alone.
                let regs = unsafe { UniqueMmioPointer::new(base.cast::<Pl011Registers>()) };
                let mut uart = Pl011(regs);
                uart.enable_transmitter();
                ConsoleUart::Pl011(uart)
            }
            UartKind::Bcm2835Aux => {
                // SAFETY: as above, for the mini-UART.
                let regs = unsafe { UniqueMmioPointer::new(base.cast::<MiniUartRegisters>()) };
                ConsoleUart::MiniUart(MiniUart(regs))
            }
            UartKind::Ns16550 {
                reg_shift,
                reg_io_width,
            } => ConsoleUart::Ns16550(Ns16550 {
                base,
                reg_shift: reg_shift.min(4),
                wide: reg_io_width == 4,
            }),
        })
    }
}
