//! Level-sensitive forwarded interrupts whose source went quiet before the guest took them.
//!
//! A forwarded interrupt that fired is held pending in the model (and handed to the guest
//! in a list register) until the guest acknowledges it, while the physical one stays
//! active. If the source's line drops first (a guest that stops its timer with interrupts
//! masked, a device serviced by polling), the architecture says the interrupt is no longer
//! pending; the model cannot see that line, so the hypervisor samples it on each exit and
//! reports it here.

use crate::effect::{Effect, EffectSink};
use crate::vgic::Vgic;

impl Vgic {
    /// The line of forwarded interrupt `intid` (for a PPI, `vcpu`'s) is `level` now. If it
    /// is low while the interrupt waits pending and not active, its pending state goes and
    /// the physical interrupt is released ([`Effect::DeactivatePhysical`]), so the next
    /// rise fires again. Call it after [`sync`](Self::sync), when no list register holds
    /// the interrupt. Returns whether the pending state was dropped.
    #[inline]
    pub fn resample_forwarded(
        &mut self,
        intid: u32,
        vcpu: usize,
        level: bool,
        sink: &mut dyn EffectSink,
    ) -> bool {
        if level || vcpu >= self.vcpus() {
            return false;
        }
        // Looked at first, changed only when it drops: `irq_mut` marks the interrupt for
        // the next flush to look at, and this runs on every exit.
        let Some(irq) = self.irq(vcpu, intid) else {
            return false;
        };
        let Some(pintid) = irq.hw else {
            return false;
        };
        if irq.loaded_on.is_some() || irq.active || !irq.latch {
            return false;
        }
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            irq.latch = false;
        }
        sink.push(Effect::DeactivatePhysical(u32::from(pintid)));
        self.touch();
        true
    }
}
