//! Address and size cells: `reg` decoding and translation of bus addresses to CPU physical
//! addresses through every parent's `ranges` (Devicetree Specification v0.4, 2.3.5–2.3.8).
//!
//! The `fdt` crate reads `reg` with its parent's cell counts but never applies `ranges`, so
//! on a board such as the Raspberry Pi 4, whose peripherals sit on a bus at 0x7e000000 that
//! the CPU sees at 0xfe000000, its addresses are wrong. This module does the translation
//! without allocating, so the early console can use it too.

use crate::blob::be32;

/// The `#address-cells`, `#size-cells` and `ranges` a node gives its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bus<'a> {
    /// `#address-cells`, 2 when absent.
    pub address_cells: u32,
    /// `#size-cells`, 1 when absent.
    pub size_cells: u32,
    /// `ranges`: `None` when absent, empty for identity.
    pub ranges: Option<&'a [u8]>,
}

impl Default for Bus<'_> {
    fn default() -> Self {
        Self {
            address_cells: 2,
            size_cells: 1,
            ranges: None,
        }
    }
}

impl<'a> Bus<'a> {
    /// Folds one property of the bus node into its description; other properties are
    /// ignored. A malformed cell count is recorded as `u32::MAX` so that every later use
    /// fails with "too many cells" instead of silently taking the default.
    pub fn apply(&mut self, name: &str, value: &'a [u8]) {
        let cells = || match value.len() {
            4 => be32(value, 0).unwrap_or(u32::MAX),
            _ => u32::MAX,
        };
        match name {
            "#address-cells" => self.address_cells = cells(),
            "#size-cells" => self.size_cells = cells(),
            "ranges" => self.ranges = Some(value),
            _ => {}
        }
    }
}

/// Reads a number of `cells` (0 to 2) big-endian 32-bit cells from the front of `bytes`.
pub(crate) fn read_cells(bytes: &[u8], cells: u32) -> Option<u64> {
    match cells {
        0 => Some(0),
        1 => be32(bytes, 0).map(u64::from),
        2 => Some((u64::from(be32(bytes, 0)?) << 32) | u64::from(be32(bytes, 4)?)),
        _ => None,
    }
}

/// The `(address, size)` pairs of a `reg` value, in the address space of the bus `parent`.
pub(crate) fn reg_entries<'v>(
    value: &'v [u8],
    parent: &Bus<'_>,
) -> Result<impl Iterator<Item = (u64, u64)> + 'v, &'static str> {
    let (ac, sc) = (parent.address_cells, parent.size_cells);
    if !(1..=2).contains(&ac) || sc > 2 {
        return Err("the parent's #address-cells must be 1 or 2 and #size-cells 0 to 2");
    }
    let stride = ((ac + sc) * 4) as usize;
    if value.is_empty() || !value.len().is_multiple_of(stride) {
        return Err("length is not a whole number of (address, size) entries");
    }
    Ok(value.chunks_exact(stride).filter_map(move |e| {
        let a = (ac * 4) as usize;
        Some((read_cells(e, ac)?, read_cells(e.get(a..)?, sc)?))
    }))
}

/// Why an address could not be translated, and at which level of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Untranslatable {
    /// Index into the chain of the bus where translation stopped.
    pub level: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// Translates `[addr, addr + size)` from the address space of the last bus of `chain` to
/// the root's (CPU physical) address space.
///
/// `chain` lists the buses from the root (index 0) down to the node's parent. The root's
/// `ranges` is never used. A bus without `ranges` is not CPU-addressable: an error. An empty
/// `ranges` is identity. The whole region must fit in one `ranges` entry.
pub(crate) fn translate(addr: u64, size: u64, chain: &[Bus<'_>]) -> Result<u64, Untranslatable> {
    let mut addr = addr;
    for level in (1..chain.len()).rev() {
        let fail = |reason| Untranslatable { level, reason };
        let (bus, parent) = (&chain[level], &chain[level - 1]);
        let ranges = bus.ranges.ok_or(fail(
            "the bus has no \"ranges\", so its children are not CPU-addressable",
        ))?;
        if ranges.is_empty() {
            continue;
        }
        let (cac, pac, sc) = (bus.address_cells, parent.address_cells, bus.size_cells);
        if cac > 2 || pac > 2 || sc > 2 || cac == 0 {
            return Err(fail("the bus uses more than 2 address or size cells"));
        }
        let stride = ((cac + pac + sc) * 4) as usize;
        if ranges.len() % stride != 0 {
            return Err(fail("\"ranges\" is not a whole number of entries"));
        }
        let mut mapped = None;
        for entry in ranges.chunks_exact(stride) {
            let child = read_cells(entry, cac);
            let target = entry
                .get((cac * 4) as usize..)
                .and_then(|e| read_cells(e, pac));
            let len = entry
                .get(((cac + pac) * 4) as usize..)
                .and_then(|e| read_cells(e, sc));
            let (Some(child), Some(target), Some(len)) = (child, target, len) else {
                continue;
            };
            let Some(offset) = addr.checked_sub(child) else {
                continue;
            };
            if offset < len && size <= len - offset {
                mapped = Some(
                    target
                        .checked_add(offset)
                        .ok_or(fail("the translated address overflows 64 bits"))?,
                );
                break;
            }
        }
        addr = mapped.ok_or(fail("no \"ranges\" entry covers the region"))?;
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(words: &[u32]) -> alloc::vec::Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn raspi_soc_ranges() {
        let ranges = cells(&[
            0x7e00_0000,
            0,
            0xfe00_0000,
            0x180_0000,
            0x4000_0000,
            0,
            0xff80_0000,
            0x80_0000,
        ]);
        let chain = [
            Bus {
                address_cells: 2,
                size_cells: 1,
                ranges: None,
            },
            Bus {
                address_cells: 1,
                size_cells: 1,
                ranges: Some(&ranges),
            },
        ];
        assert_eq!(translate(0x4004_1000, 0x1000, &chain), Ok(0xff84_1000));
        assert_eq!(translate(0x7e21_5040, 0x40, &chain), Ok(0xfe21_5040));
        assert_eq!(translate(0x1000, 0x10, &chain).map_err(|e| e.level), Err(1));
        // A region running off the end of the window is not translated.
        assert!(translate(0x407f_f000, 0x2000, &chain).is_err());
    }

    #[test]
    fn missing_and_empty_ranges() {
        let empty: &[u8] = &[];
        let chain = [
            Bus::default(),
            Bus {
                ranges: Some(empty),
                ..Bus::default()
            },
        ];
        assert_eq!(translate(0x1234, 4, &chain), Ok(0x1234));
        let chain = [Bus::default(), Bus::default()];
        assert!(translate(0x1234, 4, &chain).is_err());
        assert_eq!(translate(0x1234, 4, &chain[..1]), Ok(0x1234));
    }

    #[test]
    fn reg_cells() {
        let v = cells(&[0, 0x4000_0000, 1, 0]);
        let bus = Bus {
            address_cells: 2,
            size_cells: 2,
            ranges: None,
        };
        let regs: alloc::vec::Vec<_> = reg_entries(&v, &bus).unwrap().collect();
        assert_eq!(regs, [(0x4000_0000, 0x1_0000_0000)]);
        assert!(reg_entries(&v[..12], &bus).is_err());
        let bad = Bus {
            address_cells: 3,
            ..bus
        };
        assert!(reg_entries(&v, &bad).is_err());
    }
}
