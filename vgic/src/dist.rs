//! The distributor (`GICD`) register map, v3 (IHI 0069 chapter 12, "The GIC Distributor
//! register map") and v2 (IHI 0048B §4.1.2, Table 4-1), and the per-interrupt register
//! operations it shares with the v3 redistributors.

use crate::config::GicVersion;
use crate::effect::{AccessWidth, Effect, EffectSink, Ignored, Note, Region};
use crate::irq::{IROUTER_MASK, PRIORITY_MASK};
use crate::vgic::{emit_kicks, source_bit, Vgic};
use crate::{FIRST_SPI, GICD_SIZE_V2, GICD_SIZE_V3};

/// `GICD_CTLR.EnableGrp0` (v3 with DS = 1; v2 without Security Extensions).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
/// `GICD_CTLR.EnableGrp1`.
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
/// `GICD_CTLR.ARE`: affinity routing, always on (RAO/WI).
const CTLR_ARE: u32 = 1 << 4;
/// `GICD_CTLR.DS`: a single Security state (RAO/WI).
const CTLR_DS: u32 = 1 << 6;

/// `GICD_IIDR`/`GICR_IIDR`: ProductID 0x54 ('T'andem) \[31:24\], Variant and Revision 0,
/// Implementer \[11:0\] = 0x43B (Arm's JEP106 code, as other virtual GICs report); the
/// ProductID matches no erratum workaround in guest drivers.
pub(crate) const IIDR: u32 = 0x5400_043b;
/// `PIDR2` for GICv3: ArchRev \[7:4\] = 3, JEDEC \[3\] = 1, DES_1 \[2:0\] = 0b011.
pub(crate) const PIDR2_V3: u32 = 0x3b;
/// `PIDR2` for GICv2: ArchRev \[7:4\] = 2.
const PIDR2_V2: u32 = 0x2b;

/// The 1-bit-per-interrupt registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    /// The register block at `offset` (from 0x080 to 0x3FF, the same in `GICD` and the
    /// `GICR` SGI frame) and the index of the word in it.
    pub(crate) fn at(offset: u64) -> Option<(Self, u32)> {
        let reg = match offset >> 7 {
            1 => Self::Group,
            2 => Self::SetEnable,
            3 => Self::ClearEnable,
            4 => Self::SetPending,
            5 => Self::ClearPending,
            6 => Self::SetActive,
            7 => Self::ClearActive,
            _ => return None,
        };
        Some((reg, ((offset & 0x7f) / 4) as u32))
    }
}

/// What a distributor offset decodes to.
#[derive(Clone, Copy, Debug)]
enum DistReg {
    Ctlr,
    Typer,
    Iidr,
    Pidr2,
    /// 32 interrupts from `first`.
    Bits(BitReg, u32),
    /// Bytes from interrupt `first`.
    Priority(u32),
    Targets(u32),
    /// 16 interrupts from `first`.
    Config(u32),
    Sgir,
    /// v2 `GICD_SPENDSGIR`/`GICD_CPENDSGIR` (set?), bytes from SGI `first`.
    PendSgi(bool, u32),
    /// `GICD_IROUTER<intid>`, upper word only?
    Irouter(u32, bool),
    /// An architected register that reads as zero and ignores writes here.
    Quiet,
}

/// Whether a register that allows byte and word accesses accepts this one.
pub(crate) fn byte_or_word(offset: u64, width: AccessWidth) -> Result<(), Ignored> {
    match width {
        AccessWidth::Byte => Ok(()),
        AccessWidth::Word if offset.is_multiple_of(4) => Ok(()),
        AccessWidth::Word => Err(Ignored::Misaligned),
        _ => Err(Ignored::BadWidth),
    }
}

/// Whether a 32-bit register accepts this access.
pub(crate) fn word(offset: u64, width: AccessWidth) -> Result<(), Ignored> {
    match width {
        AccessWidth::Word if offset.is_multiple_of(4) => Ok(()),
        AccessWidth::Word => Err(Ignored::Misaligned),
        _ => Err(Ignored::BadWidth),
    }
}

/// Whether a 64-bit register (which also allows 32-bit accesses to either half,
/// IHI 0069 §12.1, GIC register access) accepts this access.
pub(crate) fn double(offset: u64, width: AccessWidth) -> Result<(), Ignored> {
    match width {
        AccessWidth::Double if offset.is_multiple_of(8) => Ok(()),
        AccessWidth::Word if offset.is_multiple_of(4) => Ok(()),
        AccessWidth::Double | AccessWidth::Word => Err(Ignored::Misaligned),
        _ => Err(Ignored::BadWidth),
    }
}

/// Reads one byte per interrupt from `first`, as many as `width` holds.
pub(crate) fn read_bytes(width: AccessWidth, first: u32, mut byte: impl FnMut(u32) -> u8) -> u64 {
    let count = if width == AccessWidth::Byte { 1 } else { 4 };
    (0..count).fold(0u64, |acc, i| acc | (u64::from(byte(first + i)) << (8 * i)))
}

/// The interrupts a byte-lane write touches: (INTID, byte) pairs.
pub(crate) fn write_bytes(
    width: AccessWidth,
    first: u32,
    value: u64,
) -> impl Iterator<Item = (u32, u8)> {
    let count = if width == AccessWidth::Byte { 1 } else { 4 };
    (0..count).map(move |i| (first + i, (value >> (8 * i)) as u8))
}

impl Vgic {
    /// Reads `1` bit per interrupt of `reg` for the 32 interrupts from `first`, as `bank`.
    pub(crate) fn read_bits(&self, bank: usize, reg: BitReg, first: u32) -> u32 {
        let mut value = 0;
        for bit in 0..32 {
            let Some(irq) = self.irq(bank, first + bit) else {
                continue;
            };
            let set = match reg {
                BitReg::Group => irq.group1,
                BitReg::SetEnable | BitReg::ClearEnable => irq.enabled,
                BitReg::SetPending | BitReg::ClearPending => irq.pending_view(),
                BitReg::SetActive | BitReg::ClearActive => irq.active_view(),
            };
            value |= u32::from(set) << bit;
        }
        value
    }

    /// Writes `value` to `reg` for the 32 interrupts from `first`, as seen from `bank`;
    /// `vcpu` is the writer (the preferred target of a 1-of-N SPI made pending). Returns
    /// the vCPUs with a newly deliverable interrupt.
    pub(crate) fn write_bits(
        &mut self,
        bank: usize,
        vcpu: usize,
        reg: BitReg,
        first: u32,
        value: u32,
        sink: &mut dyn EffectSink,
    ) -> u32 {
        let mut kicks = 0;
        let v2 = self.version == GicVersion::V2;
        for bit in 0..32 {
            let intid = first + bit;
            let one = value & (1 << bit) != 0;
            // GICv2 SGI pending state is per sender and set through GICD_SPENDSGIR; the
            // ISPENDR0/ICPENDR0 bits are read-only for SGIs (IHI 0048B §4.3.7, §4.3.8).
            let v2_sgi_pend =
                v2 && intid < 16 && matches!(reg, BitReg::SetPending | BitReg::ClearPending);
            if (!one && reg != BitReg::Group) || v2_sgi_pend {
                continue;
            }
            if reg == BitReg::SetPending {
                self.set_latch(bank, intid, vcpu);
                self.mark(bank, intid, &mut kicks);
                continue;
            }
            let Some(irq) = self.irq_mut(bank, intid) else {
                continue;
            };
            // A forwarded interrupt in a list register is settled by `sync`, which sees
            // whether the guest still holds it.
            let held = irq.hw.is_some() && irq.loaded_on.is_none() && irq.holds_physical();
            match reg {
                BitReg::Group => irq.group1 = one,
                BitReg::SetEnable => irq.enabled = true,
                BitReg::ClearEnable => irq.enabled = false,
                BitReg::ClearPending => {
                    irq.latch = false;
                    if irq.loaded_on.is_some() {
                        irq.lr_pending_cleared = true;
                    }
                }
                BitReg::SetActive | BitReg::ClearActive => {
                    let active = reg == BitReg::SetActive;
                    if irq.loaded_on.is_some() {
                        irq.lr_active_override = Some(active);
                    } else {
                        irq.active = active;
                    }
                }
                BitReg::SetPending => {}
            }
            if held && !irq.holds_physical() {
                if let Some(pintid) = irq.hw {
                    sink.push(Effect::DeactivatePhysical(u32::from(pintid)));
                }
            }
            self.mark(bank, intid, &mut kicks);
        }
        kicks
    }

    /// Reads `GICD_ICFGR`/`GICR_ICFGR` for the 16 interrupts from `first`.
    pub(crate) fn read_config(&self, bank: usize, first: u32) -> u32 {
        let mut value = 0;
        for i in 0..16 {
            if let Some(irq) = self.irq(bank, first + i) {
                value |= u32::from(irq.edge) << (2 * i + 1);
            }
        }
        value
    }

    /// Writes `GICD_ICFGR`/`GICR_ICFGR`: Int_config\[1\] of each field; SGIs stay edge.
    pub(crate) fn write_config(&mut self, bank: usize, first: u32, value: u32) {
        for i in 0..16 {
            let intid = first + i;
            if intid < 16 {
                continue;
            }
            if let Some(irq) = self.irq_mut(bank, intid) {
                irq.edge = value & (1 << (2 * i + 1)) != 0;
            }
        }
    }

    /// The priority byte of `intid` (zero if not implemented).
    pub(crate) fn priority(&self, bank: usize, intid: u32) -> u8 {
        self.irq(bank, intid).map_or(0, |irq| irq.priority)
    }

    /// Sets the priority of `intid`, keeping 5 bits.
    pub(crate) fn set_priority(&mut self, bank: usize, intid: u32, priority: u8) {
        if let Some(irq) = self.irq_mut(bank, intid) {
            irq.priority = priority & PRIORITY_MASK;
        }
    }

    #[inline]
    fn decode_dist(&self, offset: u64, width: AccessWidth) -> Result<DistReg, Ignored> {
        let v3 = self.version == GicVersion::V3;
        let size = if v3 { GICD_SIZE_V3 } else { GICD_SIZE_V2 };
        if offset >= size {
            return Err(Ignored::OutsideFrame);
        }
        // With ARE = 1 the distributor's copies of the SGI/PPI registers, ITARGETSR and the
        // SGI registers are RES0: those live in the redistributors (IHI 0069, the
        // GICD_ISENABLER<n>, GICD_IPRIORITYR<n>, GICD_ICFGR<n> and GICD_ITARGETSR<n>
        // descriptions).
        let quiet_if = |cond: bool, reg: DistReg| if cond { DistReg::Quiet } else { reg };
        let reg = match offset {
            0x0000 => word(offset, width).map(|()| DistReg::Ctlr)?,
            0x0004 => word(offset, width).map(|()| DistReg::Typer)?,
            0x0008 => word(offset, width).map(|()| DistReg::Iidr)?,
            // TYPER2, STATUSR, SETSPI_NSR, CLRSPI_NSR, SETSPI_SR, CLRSPI_SR (no MBIs).
            0x000c | 0x0010 | 0x0040 | 0x0048 | 0x0050 | 0x0058 if v3 => {
                word(offset, width).map(|()| DistReg::Quiet)?
            }
            0x0080..=0x03ff => {
                word(offset, width)?;
                let (reg, index) = BitReg::at(offset).ok_or(Ignored::Unimplemented)?;
                quiet_if(v3 && index == 0, DistReg::Bits(reg, index * 32))
            }
            0x0400..=0x07ff => {
                byte_or_word(offset, width)?;
                let first = (offset - 0x400) as u32;
                quiet_if(v3 && first < FIRST_SPI, DistReg::Priority(first))
            }
            0x0800..=0x0bff => {
                byte_or_word(offset, width)?;
                quiet_if(v3, DistReg::Targets((offset - 0x800) as u32))
            }
            0x0c00..=0x0cff => {
                word(offset, width)?;
                let first = ((offset - 0xc00) / 4 * 16) as u32;
                quiet_if(v3 && first < FIRST_SPI, DistReg::Config(first))
            }
            // IGRPMODR (v3) or implementation defined (v2), and NSACR.
            0x0d00..=0x0eff => word(offset, width).map(|()| DistReg::Quiet)?,
            0x0f00 => word(offset, width).map(|()| quiet_if(v3, DistReg::Sgir))?,
            0x0f10..=0x0f1f => {
                byte_or_word(offset, width)?;
                quiet_if(v3, DistReg::PendSgi(false, (offset - 0xf10) as u32))
            }
            0x0f20..=0x0f2f => {
                byte_or_word(offset, width)?;
                quiet_if(v3, DistReg::PendSgi(true, (offset - 0xf20) as u32))
            }
            0x6000..=0x7fdf if v3 => {
                double(offset, width)?;
                let intid = ((offset - 0x6000) / 8) as u32;
                quiet_if(intid < FIRST_SPI, DistReg::Irouter(intid, offset % 8 == 4))
            }
            0xffe8 if v3 => word(offset, width).map(|()| DistReg::Pidr2)?,
            0x0fe8 if !v3 => word(offset, width).map(|()| DistReg::Pidr2)?,
            // The other ID registers.
            0xffd0..=0xffff if v3 => word(offset, width).map(|()| DistReg::Quiet)?,
            0x0fd0..=0x0fff if !v3 => word(offset, width).map(|()| DistReg::Quiet)?,
            _ => return Err(Ignored::Unimplemented),
        };
        Ok(reg)
    }

    /// `GICD_TYPER` (IHI 0069 `GICD_TYPER`, IHI 0048B §4.3.2).
    fn typer(&self) -> u32 {
        let it_lines = self.intid_limit().div_ceil(32) - 1;
        match self.version {
            // IDbits [23:19] = 9 (10 INTID bits), A3V [24] = 1, no LPIs, no MBIs,
            // SecurityExtn 0.
            GicVersion::V3 => it_lines | (9 << 19) | (1 << 24),
            GicVersion::V2 => it_lines | ((self.vcpus.saturating_sub(1) as u32 & 7) << 5),
        }
    }

    /// A guest's read of the distributor at `offset` (from its base), by `vcpu`.
    /// Unknown offsets and wrong widths read as zero with a [`Note`].
    pub fn dist_read(
        &self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        sink: &mut dyn EffectSink,
    ) -> u64 {
        let note = |why| {
            Effect::Note(Note::Ignored {
                region: Region::Distributor,
                offset,
                width,
                write: false,
                why,
            })
        };
        if vcpu >= self.vcpus {
            sink.push(note(Ignored::NoSuchVcpu));
            return 0;
        }
        let reg = match self.decode_dist(offset, width) {
            Ok(reg) => reg,
            Err(why) => {
                sink.push(note(why));
                return 0;
            }
        };
        let v3 = self.version == GicVersion::V3;
        let value: u64 = match reg {
            DistReg::Ctlr => {
                let mut ctlr = 0;
                if self.grp0 {
                    ctlr |= CTLR_ENABLE_GRP0;
                }
                if self.grp1 {
                    ctlr |= CTLR_ENABLE_GRP1;
                }
                if v3 {
                    ctlr |= CTLR_ARE | CTLR_DS;
                }
                ctlr.into()
            }
            DistReg::Typer => self.typer().into(),
            DistReg::Iidr => IIDR.into(),
            DistReg::Pidr2 => (if v3 { PIDR2_V3 } else { PIDR2_V2 }).into(),
            DistReg::Bits(reg, first) => self.read_bits(vcpu, reg, first).into(),
            DistReg::Priority(first) => read_bytes(width, first, |i| self.priority(vcpu, i)),
            DistReg::Targets(first) => read_bytes(width, first, |intid| {
                if intid < FIRST_SPI {
                    // Banked, read-only: this CPU interface.
                    source_bit(vcpu as u8)
                } else {
                    self.irq(vcpu, intid).map_or(0, |irq| irq.targets)
                }
            }),
            DistReg::Config(first) => self.read_config(vcpu, first).into(),
            DistReg::Sgir => {
                sink.push(note(Ignored::WriteOnly));
                0
            }
            DistReg::PendSgi(_, first) => read_bytes(width, first, |sgi| {
                self.irq(vcpu, sgi).map_or(0, |irq| {
                    let in_lr =
                        irq.loaded_on.is_some() && irq.lr_pending && !irq.lr_pending_cleared;
                    irq.sources | if in_lr { source_bit(irq.lr_source) } else { 0 }
                })
            }),
            DistReg::Irouter(intid, high) => {
                let route = self.irq(vcpu, intid).map_or(0, |irq| irq.route);
                if width == AccessWidth::Double {
                    route
                } else if high {
                    route >> 32
                } else {
                    route & 0xffff_ffff
                }
            }
            DistReg::Quiet => 0,
        };
        value & width.mask()
    }

    /// A guest's write of `value` to the distributor at `offset` (from its base), by
    /// `vcpu`. Unknown offsets, read-only registers and wrong widths are ignored with a
    /// [`Note`]; newly deliverable interrupts of other vCPUs give [`Effect::Kick`]s.
    pub fn dist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
        sink: &mut dyn EffectSink,
    ) {
        self.touch();
        let note = |why| {
            Effect::Note(Note::Ignored {
                region: Region::Distributor,
                offset,
                width,
                write: true,
                why,
            })
        };
        if vcpu >= self.vcpus {
            sink.push(note(Ignored::NoSuchVcpu));
            return;
        }
        let reg = match self.decode_dist(offset, width) {
            Ok(reg) => reg,
            Err(why) => {
                sink.push(note(why));
                return;
            }
        };
        let value = value & width.mask();
        let word = value as u32;
        let mut kicks = 0;
        match reg {
            DistReg::Ctlr => {
                let was = (self.grp0, self.grp1);
                self.grp0 = word & CTLR_ENABLE_GRP0 != 0;
                self.grp1 = word & CTLR_ENABLE_GRP1 != 0;
                if (self.grp0 && !was.0) || (self.grp1 && !was.1) {
                    kicks = self.all_deliverable();
                }
            }
            DistReg::Typer | DistReg::Iidr | DistReg::Pidr2 => {
                sink.push(note(Ignored::ReadOnly));
            }
            DistReg::Bits(reg, first) => {
                kicks = self.write_bits(vcpu, vcpu, reg, first, word, sink);
            }
            DistReg::Priority(first) => {
                for (intid, byte) in write_bytes(width, first, value) {
                    self.set_priority(vcpu, intid, byte);
                }
            }
            DistReg::Targets(first) => {
                let valid = self.cpu_mask();
                for (intid, byte) in write_bytes(width, first, value) {
                    if intid < FIRST_SPI {
                        continue;
                    }
                    let before = self.spi_route(intid);
                    if let Some(irq) = self.irq_mut(vcpu, intid) {
                        irq.targets = byte & valid;
                    }
                    self.reroute(intid, before, sink);
                    self.mark(vcpu, intid, &mut kicks);
                }
            }
            DistReg::Config(first) => {
                // SGIs are always edge-triggered (ICFGR0 is read-only).
                self.write_config(vcpu, first, word);
            }
            DistReg::Sgir => self.gicd_sgir(vcpu, word, sink),
            DistReg::PendSgi(set, first) => {
                let valid = self.cpu_mask();
                for (sgi, mask) in write_bytes(width, first, value) {
                    let mask = mask & valid;
                    let Some(irq) = self.irq_mut(vcpu, sgi) else {
                        continue;
                    };
                    if set {
                        irq.sources |= mask;
                    } else {
                        irq.sources &= !mask;
                        if irq.loaded_on.is_some() && mask & source_bit(irq.lr_source) != 0 {
                            irq.lr_pending_cleared = true;
                        }
                    }
                }
            }
            DistReg::Irouter(intid, high) => {
                let before = self.spi_route(intid);
                if let Some(irq) = self.irq_mut(vcpu, intid) {
                    let route = if width == AccessWidth::Double {
                        value
                    } else if high {
                        (irq.route & 0xffff_ffff) | (value << 32)
                    } else {
                        (irq.route & !0xffff_ffff) | value
                    };
                    irq.route = route & IROUTER_MASK;
                }
                self.reroute(intid, before, sink);
                self.mark(vcpu, intid, &mut kicks);
            }
            DistReg::Quiet => {}
        }
        emit_kicks(kicks, Some(vcpu), sink);
    }
}
