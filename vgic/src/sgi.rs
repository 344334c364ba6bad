//! Software-generated interrupts between vCPUs: the trapped v3 `ICC_SGI1R_EL1` write and
//! the v2 `GICD_SGIR` write.

use crate::config::GicVersion;
use crate::effect::{Effect, EffectSink, Note};
use crate::vgic::{emit_kicks, source_bit, Vgic};

impl Vgic {
    /// `sender` wrote `value` to `ICC_SGI1R_EL1` (EL1 writes trap to EL2 while
    /// `HCR_EL2.IMO` = 1, with `ESR_EL2.EC` = 0x18). Fields (IHI 0069,
    /// `ICC_SGI1R_EL1`): TargetList \[15:0\], Aff1 \[23:16\], INTID \[27:24\], Aff2 \[39:32\], IRM \[40\], RS \[47:44\],
    /// Aff3 \[55:48\]. With IRM = 1 the SGI goes to every vCPU but the sender; otherwise to
    /// each vCPU with Aff0 = RS × 16 + *bit* in TargetList and Aff1..Aff3 = 0. Ignored on
    /// a v2 GIC. Targets other than the sender get [`Effect::Kick`]s.
    pub fn sgi1r(&mut self, sender: usize, value: u64, sink: &mut dyn EffectSink) {
        self.touch();
        if self.version != GicVersion::V3 || sender >= self.vcpus {
            return;
        }
        let intid = ((value >> 24) & 0xf) as u32;
        let targets: u32 = if value & (1 << 40) != 0 {
            ((1u32 << self.vcpus) - 1) & !(1 << sender)
        } else {
            let aff1 = (value >> 16) & 0xff;
            let aff2 = (value >> 32) & 0xff;
            let aff3 = (value >> 48) & 0xff;
            let rs = (value >> 44) & 0xf;
            if aff1 | aff2 | aff3 != 0 || rs != 0 {
                0
            } else {
                (value & 0xffff) as u32
            }
        };
        let mut kicks = 0;
        for target in 0..self.vcpus {
            if targets & (1 << target) != 0 {
                self.set_latch(target, intid, target);
                self.mark(target, intid, &mut kicks);
            }
        }
        emit_kicks(kicks, Some(sender), sink);
    }

    /// `sender` wrote `value` to the v2 `GICD_SGIR` (IHI 0048B §4.3.15): SGIINTID \[3:0\],
    /// CPUTargetList \[23:16\], TargetListFilter \[25:24\] (0 the list, 1 all but the sender,
    /// 2 the sender only, 3 reserved and ignored with a [`Note`]).
    pub(crate) fn gicd_sgir(&mut self, sender: usize, value: u32, sink: &mut dyn EffectSink) {
        let sgi = value & 0xf;
        let all = self.cpu_mask();
        let me = source_bit(sender as u8);
        let targets = match (value >> 24) & 3 {
            0 => ((value >> 16) as u8) & all,
            1 => all & !me,
            2 => me,
            _ => {
                sink.push(Effect::Note(Note::ReservedSgiFilter { value }));
                0
            }
        };
        let mut kicks = 0;
        for target in 0..self.vcpus {
            if targets & source_bit(target as u8) == 0 {
                continue;
            }
            if let Some(irq) = self.irq_mut(target, sgi) {
                irq.sources |= me;
            }
            self.mark(target, sgi, &mut kicks);
        }
        emit_kicks(kicks, Some(sender), sink);
    }
}
