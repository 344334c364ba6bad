//! A virtual PL011 UART: the console each VM sees at the address of its generated DTB.
//!
//! Output is collected into lines, which the hypervisor prints tagged with the VM's label;
//! input typed on the hypervisor's console goes into a 32-byte receive FIFO. The interrupt
//! line is level-sensitive: raised while an unmasked transmit or receive condition holds
//! (UARTMIS non-zero), as the hypervisor reads with `irq_level` after every access. Registers as the PrimeCell UART (PL011) Technical Reference
//! Manual, section 3.2, lays them out; IDs as a real PL011 r1p5 reports them, since Linux's
//! AMBA bus identifies the device by them.

/// Bytes of the register window.
pub const WINDOW: u64 = 0x1000;
/// The longest line kept before it is printed anyway.
pub const LINE_MAX: usize = 160;

const UARTDR: u64 = 0x000;
const UARTRSR: u64 = 0x004;
const UARTFR: u64 = 0x018;
const UARTILPR: u64 = 0x020;
const UARTIBRD: u64 = 0x024;
const UARTFBRD: u64 = 0x028;
const UARTLCR_H: u64 = 0x02c;
const UARTCR: u64 = 0x030;
const UARTIFLS: u64 = 0x034;
const UARTIMSC: u64 = 0x038;
const UARTRIS: u64 = 0x03c;
const UARTMIS: u64 = 0x040;
const UARTICR: u64 = 0x044;
const UARTDMACR: u64 = 0x048;
/// UARTPeriphID0..3 then UARTPCellID0..3.
const ID_BASE: u64 = 0xfe0;
const IDS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// UARTFR: receive FIFO empty, receive FIFO full, transmit FIFO empty.
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;
/// UARTRIS: receive, transmit (always: the FIFO is never full), receive timeout.
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
/// Bytes the receive FIFO holds, as a real PL011's.
pub const RX_FIFO: usize = 32;

/// What a guest access asks of the hypervisor besides its result.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Nothing else.
    None,
    /// A whole line of output to print (without its newline).
    Line(&'a [u8]),
}

/// The state of one virtual PL011.
pub struct VirtualPl011 {
    line: [u8; LINE_MAX],
    len: usize,
    rx: [u8; RX_FIFO],
    rx_head: usize,
    rx_len: usize,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ilpr: u32,
    dmacr: u32,
}

impl Default for VirtualPl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualPl011 {
    /// A UART as after reset: enabled for transmit and receive, as firmware leaves one.
    pub const fn new() -> Self {
        VirtualPl011 {
            line: [0; LINE_MAX],
            len: 0,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: 0x301,
            ifls: 0x12,
            imsc: 0,
            ilpr: 0,
            dmacr: 0,
        }
    }

    /// A guest read of the register at `offset`; unknown offsets read as zero.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            UARTDR => self.pop().map_or(0, u32::from),
            UARTRSR => 0,
            UARTFR => {
                let empty = if self.rx_len == 0 { FR_RXFE } else { 0 };
                let full = if self.rx_len == RX_FIFO { FR_RXFF } else { 0 };
                empty | full | FR_TXFE
            }
            UARTILPR => self.ilpr,
            UARTIBRD => self.ibrd,
            UARTFBRD => self.fbrd,
            UARTLCR_H => self.lcr_h,
            UARTCR => self.cr,
            UARTIFLS => self.ifls,
            UARTIMSC => self.imsc,
            UARTRIS => self.raw_status(),
            UARTMIS => self.raw_status() & self.imsc,
            UARTDMACR => self.dmacr,
            o if (ID_BASE..ID_BASE + 0x20).contains(&o) && o % 4 == 0 => {
                IDS[((o - ID_BASE) / 4) as usize % IDS.len()]
            }
            _ => 0,
        }
    }

    /// A guest write; unknown offsets and read-only registers ignore it. A byte written to
    /// UARTDR may complete a line, which the effect hands back to be printed.
    pub fn write(&mut self, offset: u64, value: u32) -> Effect<'_> {
        match offset {
            UARTDR => return self.put(value as u8),
            UARTILPR => self.ilpr = value & 0xff,
            UARTIBRD => self.ibrd = value & 0xffff,
            UARTFBRD => self.fbrd = value & 0x3f,
            UARTLCR_H => self.lcr_h = value & 0xff,
            UARTCR => self.cr = value & 0xff87,
            UARTIFLS => self.ifls = value & 0x3f,
            UARTIMSC => self.imsc = value & 0x7ff,
            UARTDMACR => self.dmacr = value & 0x7,
            UARTRSR | UARTICR => {}
            _ => {}
        }
        Effect::None
    }

    fn put(&mut self, byte: u8) -> Effect<'_> {
        match byte {
            b'\n' => {
                let len = core::mem::take(&mut self.len);
                Effect::Line(&self.line[..len])
            }
            b'\r' => Effect::None,
            _ => {
                if let Some(slot) = self.line.get_mut(self.len) {
                    *slot = byte;
                    self.len += 1;
                }
                if self.len < LINE_MAX {
                    return Effect::None;
                }
                // A line longer than the buffer is printed in pieces.
                let len = core::mem::take(&mut self.len);
                Effect::Line(&self.line[..len])
            }
        }
    }

    fn raw_status(&self) -> u32 {
        let rx = if self.rx_len > 0 { INT_RX | INT_RT } else { 0 };
        INT_TX | rx
    }

    fn pop(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let byte = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_FIFO;
        self.rx_len -= 1;
        Some(byte)
    }

    /// Input for the guest; false (and the byte dropped) when the FIFO is full.
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.rx_len == RX_FIFO {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_FIFO] = byte;
        self.rx_len += 1;
        true
    }

    /// The interrupt line: high while an unmasked condition holds (UARTMIS != 0).
    pub fn irq_level(&self) -> bool {
        self.raw_status() & self.imsc != 0
    }

    /// Output not yet ended by a newline (printed when the VM stops).
    pub fn pending(&self) -> &[u8] {
        &self.line[..self.len]
    }

    /// Takes the output not yet ended by a newline, e.g. a shell prompt the guest now
    /// waits behind: the caller prints it, and the line starts afresh.
    pub fn take_pending(&mut self) -> &[u8] {
        let len = core::mem::take(&mut self.len);
        &self.line[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn lines(uart: &mut VirtualPl011, text: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for b in text.bytes() {
            if let Effect::Line(l) = uart.write(UARTDR, u32::from(b)) {
                out.push(l.to_vec());
            }
        }
        out
    }

    #[test]
    fn collects_lines() {
        let mut u = VirtualPl011::new();
        assert_eq!(lines(&mut u, "hello\r\nwor"), [b"hello".to_vec()]);
        assert_eq!(u.pending(), b"wor");
        assert_eq!(lines(&mut u, "ld\n"), [b"world".to_vec()]);
    }

    #[test]
    fn splits_long_lines() {
        let mut u = VirtualPl011::new();
        let text: alloc::string::String = core::iter::repeat_n('x', LINE_MAX + 5).collect();
        let out = lines(&mut u, &text);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), LINE_MAX);
        assert_eq!(u.pending().len(), 5);
    }

    #[test]
    fn receives_input_with_an_interrupt() {
        let mut u = VirtualPl011::new();
        assert!(!u.irq_level());
        u.write(UARTIMSC, INT_RX | INT_RT);
        assert!(u.push_input(b'a') && u.push_input(b'b'));
        assert!(u.irq_level());
        assert_eq!(u.read(UARTFR) & FR_RXFE, 0);
        assert_eq!(u.read(UARTDR), u32::from(b'a'));
        assert_eq!(u.read(UARTDR), u32::from(b'b'));
        assert!(!u.irq_level());
        assert_eq!(u.read(UARTFR) & FR_RXFE, FR_RXFE);
        for _ in 0..RX_FIFO {
            assert!(u.push_input(b'x'));
        }
        assert!(!u.push_input(b'y'));
        assert_eq!(u.read(UARTFR) & FR_RXFF, FR_RXFF);
    }

    #[test]
    fn reports_pl011_ids_and_an_idle_fifo() {
        let mut u = VirtualPl011::new();
        assert_eq!(u.read(UARTFR), FR_RXFE | FR_TXFE);
        let id: Vec<u32> = (0..8).map(|i| u.read(ID_BASE + 4 * i)).collect();
        assert_eq!(id, IDS);
        assert_eq!(u.read(0x800), 0);
    }

    #[test]
    fn keeps_control_registers() {
        let mut u = VirtualPl011::new();
        assert_eq!(u.write(UARTCR, 0xffff_ffff), Effect::None);
        assert_eq!(u.read(UARTCR), 0xff87);
        u.write(UARTIMSC, INT_TX);
        assert_eq!(u.read(UARTMIS), INT_TX);
    }
}
