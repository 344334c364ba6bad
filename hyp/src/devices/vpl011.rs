//! A virtual PL011 UART: the console each VM sees at the address of its generated DTB.
//!
//! Output is collected into lines, which the hypervisor prints tagged with the VM's label.
//! There is no input yet (the receive FIFO is always empty) and no interrupt: both come
//! with the virtual GIC. Registers as the PrimeCell UART (PL011) Technical Reference
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

/// UARTFR: receive FIFO empty, transmit FIFO empty.
const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;
/// UARTRIS: the transmit interrupt is always raised (the FIFO is never full).
const INT_TX: u32 = 1 << 5;

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
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            UARTDR => 0,
            UARTRSR => 0,
            UARTFR => FR_RXFE | FR_TXFE,
            UARTILPR => self.ilpr,
            UARTIBRD => self.ibrd,
            UARTFBRD => self.fbrd,
            UARTLCR_H => self.lcr_h,
            UARTCR => self.cr,
            UARTIFLS => self.ifls,
            UARTIMSC => self.imsc,
            UARTRIS => INT_TX,
            UARTMIS => INT_TX & self.imsc,
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

    /// Output not yet ended by a newline (printed when the VM stops).
    pub fn pending(&self) -> &[u8] {
        &self.line[..self.len]
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
    fn reports_pl011_ids_and_an_idle_fifo() {
        let u = VirtualPl011::new();
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
