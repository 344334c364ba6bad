//! The v3 redistributors (`GICR`): per vCPU an RD frame and an SGI frame, 64 KiB each
//! (IHI 0069 chapter 12, "The GIC Redistributor register map").
//!
//! `GICR_WAKER` answers the guest's wake-up handshake but does not gate delivery: a vCPU
//! that runs is awake.

use crate::config::GicVersion;
use crate::dist::{byte_or_word, double, read_bytes, word, write_bytes, BitReg, IIDR, PIDR2_V3};
use crate::effect::{AccessWidth, Effect, EffectSink, Ignored, Note, Region};
use crate::vgic::{emit_kicks, Vgic};
use crate::GICR_STRIDE;

/// Where the SGI frame starts within a redistributor.
const SGI_FRAME: u64 = 0x1_0000;
/// `GICR_WAKER.ProcessorSleep`.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// `GICR_WAKER.ChildrenAsleep`.
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// `GICR_TYPER.Last`: the last redistributor of the region.
const TYPER_LAST: u64 = 1 << 4;

/// What a redistributor offset decodes to (for the vCPU whose frame it is).
#[derive(Clone, Copy, Debug)]
enum RedistReg {
    Iidr,
    /// `GICR_TYPER`, upper word only?
    Typer(bool),
    Waker,
    Pidr2,
    Bits(BitReg),
    /// Bytes from interrupt `first`.
    Priority(u32),
    /// `GICR_ICFGR0` (SGIs, read-only) or `GICR_ICFGR1` (PPIs), from interrupt `first`.
    Config(u32),
    /// An architected register that reads as zero and ignores writes here.
    Quiet,
}

fn decode_rd(offset: u64, width: AccessWidth) -> Result<RedistReg, Ignored> {
    let reg = match offset {
        // GICR_CTLR: no LPIs, so EnableLPIs is RES0 and RWP/UWP read 0.
        0x0000 => word(offset, width).map(|()| RedistReg::Quiet)?,
        0x0004 => word(offset, width).map(|()| RedistReg::Iidr)?,
        0x0008 | 0x000c => double(offset, width).map(|()| RedistReg::Typer(offset == 0xc))?,
        // GICR_STATUSR.
        0x0010 => word(offset, width).map(|()| RedistReg::Quiet)?,
        0x0014 => word(offset, width).map(|()| RedistReg::Waker)?,
        // SETLPIR, CLRLPIR, PROPBASER, PENDBASER, INVLPIR, INVALLR, SYNCR: no LPIs.
        0x0040..=0x004f | 0x0070..=0x007f | 0x00a0..=0x00a7 | 0x00b0..=0x00b7 => {
            double(offset, width).map(|()| RedistReg::Quiet)?
        }
        0x00c0 => word(offset, width).map(|()| RedistReg::Quiet)?,
        0xffe8 => word(offset, width).map(|()| RedistReg::Pidr2)?,
        0xffd0..=0xffff => word(offset, width).map(|()| RedistReg::Quiet)?,
        _ => return Err(Ignored::Unimplemented),
    };
    Ok(reg)
}

fn decode_sgi(offset: u64, width: AccessWidth) -> Result<RedistReg, Ignored> {
    let reg = match offset {
        0x0080 | 0x0100 | 0x0180 | 0x0200 | 0x0280 | 0x0300 | 0x0380 => {
            word(offset, width)?;
            let (reg, _) = BitReg::at(offset).ok_or(Ignored::Unimplemented)?;
            RedistReg::Bits(reg)
        }
        0x0400..=0x041f => {
            byte_or_word(offset, width)?;
            RedistReg::Priority((offset - 0x400) as u32)
        }
        0x0c00 | 0x0c04 => {
            word(offset, width)?;
            RedistReg::Config(if offset == 0xc00 { 0 } else { 16 })
        }
        // GICR_IGRPMODR0 and GICR_NSACR: a single Security state.
        0x0d00 | 0x0e00 => word(offset, width).map(|()| RedistReg::Quiet)?,
        _ => return Err(Ignored::Unimplemented),
    };
    Ok(reg)
}

impl Vgic {
    /// Splits a redistributor-region offset into (vCPU, register).
    fn decode_redist(
        &self,
        offset: u64,
        width: AccessWidth,
    ) -> Result<(usize, RedistReg), Ignored> {
        if self.version != GicVersion::V3 {
            return Err(Ignored::Unimplemented);
        }
        let frame = usize::try_from(offset / GICR_STRIDE).unwrap_or(usize::MAX);
        if frame >= self.vcpus {
            return Err(Ignored::OutsideFrame);
        }
        let within = offset % GICR_STRIDE;
        let reg = if within >= SGI_FRAME {
            decode_sgi(within - SGI_FRAME, width)?
        } else {
            decode_rd(within, width)?
        };
        Ok((frame, reg))
    }

    /// `GICR_TYPER` of vCPU `frame` (IHI 0069 `GICR_TYPER`): Affinity_Value \[63:32\] with
    /// Aff0 = the vCPU index, Processor_Number \[23:8\], Last \[4\] on the last vCPU, no
    /// physical or virtual LPIs.
    fn gicr_typer(&self, frame: usize) -> u64 {
        let index = frame as u64;
        let mut typer = (index << 32) | ((index & 0xffff) << 8);
        if frame + 1 == self.vcpus {
            typer |= TYPER_LAST;
        }
        typer
    }

    /// A guest's read at `offset` from the base of the redistributor region (vCPU *n*'s
    /// frames at *n* × [`GICR_STRIDE`]), by `vcpu`. Any vCPU may read any frame.
    pub fn redist_read(
        &self,
        vcpu: usize,
        offset: u64,
        width: AccessWidth,
        sink: &mut dyn EffectSink,
    ) -> u64 {
        let note = |why| {
            Effect::Note(Note::Ignored {
                region: Region::Redistributor,
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
        let (frame, reg) = match self.decode_redist(offset, width) {
            Ok(decoded) => decoded,
            Err(why) => {
                sink.push(note(why));
                return 0;
            }
        };
        let value = match reg {
            RedistReg::Iidr => IIDR.into(),
            RedistReg::Typer(high) => {
                let typer = self.gicr_typer(frame);
                match (width, high) {
                    (AccessWidth::Double, _) => typer,
                    (_, true) => typer >> 32,
                    (_, false) => typer & 0xffff_ffff,
                }
            }
            RedistReg::Waker => {
                let asleep = self.cpus.get(frame).is_some_and(|cpu| cpu.asleep);
                if asleep {
                    (WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP).into()
                } else {
                    0
                }
            }
            RedistReg::Pidr2 => PIDR2_V3.into(),
            RedistReg::Bits(reg) => self.read_bits(frame, reg, 0).into(),
            RedistReg::Priority(first) => read_bytes(width, first, |i| self.priority(frame, i)),
            RedistReg::Config(first) => self.read_config(frame, first).into(),
            RedistReg::Quiet => 0,
        };
        value & width.mask()
    }

    /// A guest's write at `offset` from the base of the redistributor region, by `vcpu`.
    pub fn redist_write(
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
                region: Region::Redistributor,
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
        let (frame, reg) = match self.decode_redist(offset, width) {
            Ok(decoded) => decoded,
            Err(why) => {
                sink.push(note(why));
                return;
            }
        };
        let value = value & width.mask();
        let mut kicks = 0;
        match reg {
            RedistReg::Iidr | RedistReg::Typer(_) | RedistReg::Pidr2 => {
                sink.push(note(Ignored::ReadOnly));
            }
            RedistReg::Waker => {
                // ChildrenAsleep follows ProcessorSleep at once: there is no wake-up
                // latency to model.
                if let Some(cpu) = self.cpus.get_mut(frame) {
                    cpu.asleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
                }
            }
            RedistReg::Bits(reg) => {
                kicks = self.write_bits(frame, vcpu, reg, 0, value as u32, sink);
            }
            RedistReg::Priority(first) => {
                for (intid, byte) in write_bytes(width, first, value) {
                    self.set_priority(frame, intid, byte);
                }
            }
            RedistReg::Config(first) => self.write_config(frame, first, value as u32),
            RedistReg::Quiet => {}
        }
        emit_kicks(kicks, Some(vcpu), sink);
    }
}
