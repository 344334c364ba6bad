//! The per-VM model: interrupt state, the hypervisor's inputs, and the list-register
//! flush (before a vCPU runs) and sync (after it exits).

use alloc::vec::Vec;

use crate::config::{GicVersion, VgicConfig, VgicError};
use crate::effect::{Effect, EffectSink};
use crate::irq::{Irq, IROUTER_IRM};
use crate::lr::{ListRegister, LrState, MAX_LIST_REGISTERS};
use crate::FIRST_SPI;

/// `ICH_HCR_EL2.UIE` and `GICH_HCR.UIE` (bit 1 in both).
const HCR_UIE: u32 = 1 << 1;
/// `ICH_HCR_EL2.NPIE` and `GICH_HCR.NPIE` (bit 3 in both).
const HCR_NPIE: u32 = 1 << 3;

/// One virtual GIC: the state of every interrupt of one VM.
#[derive(Clone, Debug)]
pub struct Vgic {
    pub(crate) version: GicVersion,
    pub(crate) vcpus: usize,
    pub(crate) spis: u32,
    /// `GICD_CTLR.EnableGrp0`.
    pub(crate) grp0: bool,
    /// `GICD_CTLR.EnableGrp1` (EnableGrp1A position on v3).
    pub(crate) grp1: bool,
    /// SGIs and PPIs, 32 per vCPU.
    private: Vec<Irq>,
    /// SPIs, from INTID 32.
    shared: Vec<Irq>,
    pub(crate) cpus: Vec<Cpu>,
    /// A superset of the SGIs and PPIs that are pending or active, one word per vCPU
    /// (bit = INTID): [`irq_mut`](Self::irq_mut), the only way to change an interrupt,
    /// marks it, and `flush` unmarks the idle ones. Lets the per-entry scans
    /// (`flush`, `highest_pending`) look at a handful of interrupts, not all of them.
    private_watch: Vec<u32>,
    /// The same for the SPIs: bit `n % 64` of word `n / 64` is SPI `FIRST_SPI + n`.
    shared_watch: Vec<u64>,
    /// Bumped by every call that may change the model's state (see
    /// [`Vgic::untouched_since_flush`]).
    mutations: u64,
}

/// Per-vCPU state outside the interrupts themselves.
#[derive(Clone, Debug)]
pub(crate) struct Cpu {
    /// `GICR_WAKER.ProcessorSleep`.
    pub(crate) asleep: bool,
    /// What the last `flush` put in each list register, in order.
    loaded: Vec<Loaded>,
    /// The model's mutation count right after the last `flush`.
    flushed_at: Option<u64>,
    /// The last `flush` loaded every interrupt that was deliverable to this vCPU or active
    /// on it (nothing was left in software).
    complete: bool,
    /// `flush`'s scratch list of candidates, kept so that a flush allocates nothing and
    /// initialises no array of the largest size.
    best: Vec<Candidate>,
}

/// One list register handed out by `flush`.
#[derive(Clone, Copy, Debug)]
struct Loaded {
    intid: u32,
    given: LrState,
    /// Level-sensitive: whether the software latch (not just the line) was handed over.
    latch_given: bool,
}

/// What [`Vgic::flush`] did, and which maintenance interrupts the hypervisor should
/// enable in `ICH_HCR_EL2`/`GICH_HCR` for this run of the vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// How many list registers were filled (from index 0; the rest are invalid).
    pub loaded: usize,
    /// Interrupts were left in software and at least two list registers are in use:
    /// request a maintenance interrupt when at most one stays valid (`UIE`), to refill.
    pub underflow: bool,
    /// Pending interrupts were left in software and at least one list register is
    /// pending: request a maintenance interrupt once none is pending (`NPIE`).
    pub no_pending: bool,
}

impl FlushOutcome {
    /// The `UIE`/`NPIE` bits to OR into `ICH_HCR_EL2` (v3) or `GICH_HCR` (v2); they sit at
    /// the same positions in both (IHI 0069 `ICH_HCR_EL2`, IHI 0048B `GICH_HCR`).
    pub fn hcr_bits(&self) -> u32 {
        let mut bits = 0;
        if self.underflow {
            bits |= HCR_UIE;
        }
        if self.no_pending {
            bits |= HCR_NPIE;
        }
        bits
    }
}

/// An interrupt competing for a list register.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// Sort key: active ones first (the guest must be able to deactivate them), then by
    /// priority (lower value first), then by INTID.
    key: (bool, u8, u32),
    intid: u32,
    pending: bool,
    active: bool,
    source: u8,
    /// More of this interrupt stays pending in software (another v2 SGI sender, or the
    /// pending half of an active hardware interrupt).
    more: bool,
}

impl Candidate {
    const NONE: Self = Self {
        key: (true, u8::MAX, u32::MAX),
        intid: 0,
        pending: false,
        active: false,
        source: 0,
        more: false,
    };
}

/// The bit of a v2 SGI sender in a source mask; none for an out-of-range sender.
pub(crate) fn source_bit(source: u8) -> u8 {
    1u8.checked_shl(u32::from(source)).unwrap_or(0)
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// Pushes one `Kick` per vCPU in `kicks`, except `except`.
pub(crate) fn emit_kicks(kicks: u32, except: Option<usize>, sink: &mut dyn EffectSink) {
    for vcpu in Bits(u64::from(kicks)) {
        if Some(vcpu) != except {
            sink.push(Effect::Kick(vcpu));
        }
    }
}

impl Vgic {
    /// A virtual GIC in its reset state: everything disabled and inactive, priorities 0,
    /// SGIs edge-triggered and everything else level-sensitive, interrupts in Group 1 (v3)
    /// or Group 0 (v2), SPIs routed to vCPU 0, redistributors asleep.
    pub fn new(config: VgicConfig) -> Result<Self, VgicError> {
        config.validate()?;
        let v3 = config.version == GicVersion::V3;
        let base = Irq {
            group1: v3,
            ..Irq::default()
        };
        let mut private = Vec::with_capacity(config.vcpus * 32);
        for _ in 0..config.vcpus {
            for intid in 0..32 {
                private.push(Irq {
                    edge: intid < 16,
                    ..base
                });
            }
        }
        let spi = Irq { targets: 1, ..base };
        let shared = alloc::vec![spi; config.spis as usize];
        let cpus = (0..config.vcpus)
            .map(|_| Cpu {
                asleep: true,
                loaded: Vec::with_capacity(16),
                flushed_at: None,
                complete: false,
                best: Vec::with_capacity(16),
            })
            .collect();
        Ok(Self {
            version: config.version,
            vcpus: config.vcpus,
            spis: config.spis,
            grp0: false,
            grp1: false,
            private,
            shared,
            cpus,
            private_watch: alloc::vec![0; config.vcpus],
            shared_watch: alloc::vec![0; (config.spis as usize).div_ceil(64)],
            mutations: 0,
        })
    }

    /// Records that the model's state may change now: every mutating entry point calls it
    /// first.
    pub(crate) fn touch(&mut self) {
        self.mutations = self.mutations.wrapping_add(1);
    }

    /// Whether no call has changed the model since `vcpu`'s last [`flush`](Self::flush).
    /// If, besides, the list registers read back from the hardware are exactly what that
    /// flush wrote (the guest neither acknowledged nor ended anything), a
    /// [`sync`](Self::sync) followed by a `flush` would write the same list registers
    /// again, and the hypervisor may skip both: the fast path of a trap that does not touch
    /// interrupts (a hypercall, most MMIO). The caller keeps what it wrote and compares.
    #[inline(always)]
    pub fn untouched_since_flush(&self, vcpu: usize) -> bool {
        self.cpus
            .get(vcpu)
            .is_some_and(|cpu| cpu.flushed_at == Some(self.mutations))
    }

    /// The GIC version the guest sees.
    pub fn version(&self) -> GicVersion {
        self.version
    }

    /// The number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus
    }

    /// The number of SPIs.
    pub fn spis(&self) -> u32 {
        self.spis
    }

    /// One past the highest implemented INTID.
    pub(crate) fn intid_limit(&self) -> u32 {
        FIRST_SPI + self.spis
    }

    /// The interrupt `intid` as seen from vCPU `bank` (the bank matters for SGIs/PPIs).
    pub(crate) fn irq(&self, bank: usize, intid: u32) -> Option<&Irq> {
        if intid < FIRST_SPI {
            if bank >= self.vcpus {
                return None;
            }
            self.private.get(bank * 32 + intid as usize)
        } else {
            self.shared.get((intid - FIRST_SPI) as usize)
        }
    }

    /// The interrupt `intid` in `bank`, to change: marked in the watch bitmaps, as it may
    /// become pending or active.
    pub(crate) fn irq_mut(&mut self, bank: usize, intid: u32) -> Option<&mut Irq> {
        if intid < FIRST_SPI {
            if bank >= self.vcpus {
                return None;
            }
            *self.private_watch.get_mut(bank)? |= 1 << intid;
            self.private.get_mut(bank * 32 + intid as usize)
        } else {
            let index = (intid - FIRST_SPI) as usize;
            *self.shared_watch.get_mut(index / 64)? |= 1 << (index % 64);
            self.shared.get_mut(index)
        }
    }

    /// Debug builds (the host tests, with the property tests' random operations) check
    /// that every pending or active interrupt is watched.
    #[cfg(debug_assertions)]
    fn assert_watched(&self) {
        for (index, irq) in self.private.iter().enumerate() {
            let watched = self.private_watch[index / 32] & (1 << (index % 32)) != 0;
            assert!(
                !irq.live() || watched,
                "private {index} live but not watched"
            );
        }
        for (index, irq) in self.shared.iter().enumerate() {
            let watched = self.shared_watch[index / 64] & (1 << (index % 64)) != 0;
            assert!(!irq.live() || watched, "SPI {index} live but not watched");
        }
    }

    /// Unmarks, in the watch bitmaps, `vcpu`'s SGIs and PPIs and every SPI that is neither
    /// pending nor active.
    fn prune_watch(&mut self, vcpu: usize) {
        let first = vcpu * FIRST_SPI as usize;
        if let (Some(word), Some(private)) = (
            self.private_watch.get_mut(vcpu),
            self.private.get(first..first + FIRST_SPI as usize),
        ) {
            for bit in Bits(u64::from(*word)) {
                if private.get(bit).is_some_and(|irq| !irq.live()) {
                    *word &= !(1 << bit);
                }
            }
        }
        for (w, word) in self.shared_watch.iter_mut().enumerate() {
            for bit in Bits(*word) {
                if self.shared.get(w * 64 + bit).is_some_and(|irq| !irq.live()) {
                    *word &= !(1 << bit);
                }
            }
        }
    }

    /// The mask of existing vCPUs, for `GICD_ITARGETSR`.
    pub(crate) fn cpu_mask(&self) -> u8 {
        ((1u32 << self.vcpus.min(8)) - 1) as u8
    }

    fn group_enabled(&self, irq: &Irq) -> bool {
        if irq.group1 {
            self.grp1
        } else {
            self.grp0
        }
    }

    /// Pending in software, enabled, and its group enabled in the distributor.
    fn deliverable(&self, irq: &Irq) -> bool {
        irq.enabled && irq.pending() && self.group_enabled(irq)
    }

    /// The vCPU an interrupt is delivered to, if any.
    pub(crate) fn target(&self, bank: usize, intid: u32, irq: &Irq) -> Option<usize> {
        if intid < FIRST_SPI {
            return (bank < self.vcpus).then_some(bank);
        }
        if let Some(owner) = irq.owner.filter(|_| irq.active) {
            let owner = usize::from(owner);
            return (owner < self.vcpus).then_some(owner);
        }
        let hint = usize::from(irq.hint);
        match self.version {
            GicVersion::V2 => {
                let mask = irq.targets & self.cpu_mask();
                if mask == 0 {
                    None
                } else if hint < 8 && mask & (1 << hint) != 0 {
                    Some(hint)
                } else {
                    Some(mask.trailing_zeros() as usize)
                }
            }
            GicVersion::V3 => {
                if irq.route & IROUTER_IRM != 0 {
                    return Some(if hint < self.vcpus { hint } else { 0 });
                }
                // Aff3, Aff2 and Aff1 of every vCPU are 0.
                if irq.route & 0xff_00ff_ff00 != 0 {
                    return None;
                }
                let aff0 = (irq.route & 0xff) as usize;
                (aff0 < self.vcpus).then_some(aff0)
            }
        }
    }

    /// The vCPU the guest's routing of SPI `intid` names, ignoring where it is active now;
    /// a 1-of-N SPI counts as routed to vCPU 0. `None` for an unrouted SPI or one that is
    /// not an SPI of this GIC. The hypervisor routes a forwarded SPI's physical interrupt
    /// to that vCPU's CPU.
    pub fn spi_route(&self, intid: u32) -> Option<usize> {
        if intid < FIRST_SPI {
            return None;
        }
        let irq = Irq {
            active: false,
            hint: 0,
            ..*self.irq(0, intid)?
        };
        self.target(0, intid, &irq)
    }

    /// After the guest wrote `intid`'s routing: tells the hypervisor where the physical
    /// interrupt of a forwarded SPI now goes, if that changed.
    pub(crate) fn reroute(&self, intid: u32, before: Option<usize>, sink: &mut dyn EffectSink) {
        let Some(pintid) = self.irq(0, intid).and_then(|irq| irq.hw) else {
            return;
        };
        let after = self.spi_route(intid);
        if after != before {
            sink.push(Effect::Route {
                pintid: u32::from(pintid),
                vcpu: after,
            });
        }
    }

    /// Adds the target of `intid` to `kicks` if it is deliverable now.
    pub(crate) fn mark(&self, bank: usize, intid: u32, kicks: &mut u32) {
        if let Some(irq) = self.irq(bank, intid) {
            if self.deliverable(irq) {
                if let Some(target) = self.target(bank, intid, irq) {
                    *kicks |= 1 << target;
                }
                // While a running vCPU's list registers hold it, no one else can take
                // the new pending state (and that list register may be long deactivated,
                // with no maintenance interrupt to come): that vCPU must exit and sync.
                if let Some(holder) = irq.loaded_on {
                    *kicks |= 1 << holder;
                }
            }
        }
    }

    /// Every vCPU with a deliverable interrupt, or holding one in its list registers
    /// (see [`mark`](Self::mark)), as a mask.
    pub(crate) fn all_deliverable(&self) -> u32 {
        let mut kicks = 0;
        for bank in 0..self.vcpus {
            for intid in 0..FIRST_SPI {
                self.mark(bank, intid, &mut kicks);
            }
        }
        for intid in FIRST_SPI..self.intid_limit() {
            self.mark(0, intid, &mut kicks);
        }
        kicks
    }

    /// Sets the edge latch of `intid` (in `bank`), remembering `hint` as the target of a
    /// 1-of-N SPI if it was not already pending.
    pub(crate) fn set_latch(&mut self, bank: usize, intid: u32, hint: usize) {
        if let Some(irq) = self.irq_mut(bank, intid) {
            if !irq.holds_physical() && irq.loaded_on.is_none() {
                irq.hint = hint as u8;
            }
            irq.latch = true;
        }
    }

    fn check_input(&self, intid: u32, vcpu: usize) -> Result<(), VgicError> {
        if vcpu >= self.vcpus {
            return Err(VgicError::NoSuchVcpu { vcpu });
        }
        if intid >= self.intid_limit() {
            return Err(VgicError::NoSuchIntid { intid });
        }
        if intid < 16 {
            return Err(VgicError::IsSgi { intid });
        }
        Ok(())
    }

    /// An edge on interrupt `intid` (a device model's or the maintenance path's
    /// interrupt): it becomes pending, whatever its configured trigger. For a PPI,
    /// `vcpu` names whose; for an SPI routed to "any" (v3 `IRM` = 1, or several v2
    /// targets) it is the preferred vCPU.
    pub fn raise(
        &mut self,
        intid: u32,
        vcpu: usize,
        sink: &mut dyn EffectSink,
    ) -> Result<(), VgicError> {
        self.touch();
        self.check_input(intid, vcpu)?;
        self.set_latch(vcpu, intid, vcpu);
        let mut kicks = 0;
        self.mark(vcpu, intid, &mut kicks);
        emit_kicks(kicks, None, sink);
        Ok(())
    }

    /// Drives the input line of `intid` (for a PPI, of `vcpu`'s). A level-sensitive
    /// interrupt is pending while the line is high; an edge-triggered one latches on a
    /// rising edge.
    pub fn set_level(
        &mut self,
        intid: u32,
        vcpu: usize,
        level: bool,
        sink: &mut dyn EffectSink,
    ) -> Result<(), VgicError> {
        self.check_input(intid, vcpu)?;
        // The line already is at that level: nothing changes (and a device model that
        // reports its level after every register access does not end the fast path).
        if self.irq(vcpu, intid).is_some_and(|irq| irq.line == level) {
            return Ok(());
        }
        self.touch();
        if let Some(irq) = self.irq(vcpu, intid) {
            let rising = level && !irq.line;
            let fresh = !irq.holds_physical() && irq.loaded_on.is_none();
            let edge = irq.edge;
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                if fresh && level {
                    irq.hint = vcpu as u8;
                }
                if edge && rising {
                    irq.latch = true;
                }
                irq.line = level;
            }
        }
        let mut kicks = 0;
        self.mark(vcpu, intid, &mut kicks);
        emit_kicks(kicks, None, sink);
        Ok(())
    }

    /// Makes `intid` a forwarded hardware interrupt with physical INTID `pintid` (or an
    /// ordinary virtual one with `None`). For a PPI, `vcpu` names whose (the virtual
    /// timer's PPI is forwarded per vCPU); for an SPI it is ignored. If a previous
    /// physical interrupt was still held for the guest, it is released with
    /// [`Effect::DeactivatePhysical`].
    pub fn set_forwarded(
        &mut self,
        intid: u32,
        vcpu: usize,
        pintid: Option<u32>,
        sink: &mut dyn EffectSink,
    ) -> Result<(), VgicError> {
        self.touch();
        self.check_input(intid, vcpu)?;
        let new = match pintid {
            Some(p) if (16..1020).contains(&p) => Some(p as u16),
            Some(p) => return Err(VgicError::BadPhysicalIntid { pintid: p }),
            None => None,
        };
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            if let Some(old) = irq.hw {
                if Some(old) != new && irq.holds_physical() {
                    sink.push(Effect::DeactivatePhysical(u32::from(old)));
                }
            }
            irq.hw = new;
        }
        Ok(())
    }

    /// The physical interrupt forwarded to `intid` fired: the hypervisor acknowledged it
    /// and dropped its priority (`EOImode` = 1), leaving it active, and the guest now gets
    /// the virtual one pending; the guest's deactivation through the list register will
    /// deactivate the physical one. For a PPI, `vcpu` names whose; for an SPI it is the
    /// preferred vCPU of a 1-of-N route.
    pub fn hw_arrived(
        &mut self,
        intid: u32,
        vcpu: usize,
        sink: &mut dyn EffectSink,
    ) -> Result<(), VgicError> {
        self.arrive(intid, vcpu, None, sink)
    }

    /// [`hw_arrived`](Self::hw_arrived), kicking every vCPU concerned but `except`.
    fn arrive(
        &mut self,
        intid: u32,
        vcpu: usize,
        except: Option<usize>,
        sink: &mut dyn EffectSink,
    ) -> Result<(), VgicError> {
        self.latch_arrival(intid, vcpu)?;
        let mut kicks = 0;
        self.mark(vcpu, intid, &mut kicks);
        emit_kicks(kicks, except, sink);
        Ok(())
    }

    /// The model's side of a forwarded interrupt's arrival: pending in software, no one
    /// told yet.
    // Inlined in both callers, as before it was shared: one is the timer fast path.
    #[inline(always)]
    fn latch_arrival(&mut self, intid: u32, vcpu: usize) -> Result<(), VgicError> {
        self.touch();
        self.check_input(intid, vcpu)?;
        if self.irq(vcpu, intid).and_then(|irq| irq.hw).is_none() {
            return Err(VgicError::NotForwarded { intid });
        }
        self.set_latch(vcpu, intid, vcpu);
        Ok(())
    }

    /// The highest-priority interrupt deliverable to `vcpu` and not in a list register:
    /// its INTID and priority. `None` if there is none, so a vCPU waiting in WFI can stay
    /// asleep.
    pub fn highest_pending(&self, vcpu: usize) -> Option<(u32, u8)> {
        let mut best: Option<(u8, u32)> = None;
        self.for_each_routed(vcpu, |intid, irq| {
            if irq.loaded_on.is_none() && self.deliverable(irq) {
                let key = (irq.priority, intid);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        });
        best.map(|(priority, intid)| (intid, priority))
    }

    /// Calls `f`, in INTID order, for each of `vcpu`'s SGIs and PPIs and each SPI routed
    /// to it that is pending or active: the only ones a list register or a wake-up can be
    /// for. Only the watched interrupts are looked at, as this runs on every guest entry
    /// and most of a VM's interrupts are idle.
    fn for_each_routed(&self, vcpu: usize, mut f: impl FnMut(u32, &Irq)) {
        if vcpu >= self.vcpus {
            return;
        }
        #[cfg(debug_assertions)]
        self.assert_watched();
        let first = vcpu * FIRST_SPI as usize;
        let watched = self.private_watch.get(vcpu).copied().unwrap_or(0);
        if let Some(private) = self.private.get(first..first + FIRST_SPI as usize) {
            for intid in Bits(u64::from(watched)) {
                if let Some(irq) = private.get(intid).filter(|irq| irq.live()) {
                    f(intid as u32, irq);
                }
            }
        }
        for (w, &word) in self.shared_watch.iter().enumerate() {
            for bit in Bits(word) {
                let index = w * 64 + bit;
                let Some(irq) = self.shared.get(index).filter(|irq| irq.live()) else {
                    continue;
                };
                let intid = FIRST_SPI + index as u32;
                let here = match irq.loaded_on {
                    Some(owner) => usize::from(owner) == vcpu,
                    None => self.target(vcpu, intid, irq) == Some(vcpu),
                };
                if here {
                    f(intid, irq);
                }
            }
        }
    }

    /// What `intid` would need of a list register now, if anything.
    fn candidate(&self, intid: u32, irq: &Irq) -> Option<Candidate> {
        let deliverable = self.deliverable(irq);
        let mut c = Candidate {
            key: (false, irq.priority, intid),
            intid,
            ..Candidate::NONE
        };
        if self.version == GicVersion::V2 && intid < 16 {
            if irq.active {
                let bit = source_bit(irq.active_source);
                c.active = true;
                c.source = irq.active_source;
                c.pending = deliverable && irq.sources & bit != 0;
                c.more = deliverable && irq.sources & !bit != 0;
            } else if deliverable && irq.sources != 0 {
                c.pending = true;
                c.source = irq.sources.trailing_zeros() as u8;
                c.more = irq.sources & !source_bit(c.source) != 0;
            } else {
                return None;
            }
        } else if irq.active {
            // A hardware interrupt cannot be pending and active in a list register: its
            // physical twin is still active, so the pending half waits in software.
            c.active = true;
            c.pending = deliverable && irq.hw.is_none();
            c.more = deliverable && irq.hw.is_some();
        } else if deliverable {
            c.pending = true;
        } else {
            return None;
        }
        c.key.0 = !c.active;
        Some(c)
    }

    /// Fills `lrs` for `vcpu`, about to run: first its active interrupts (so the guest can
    /// deactivate them), then its highest-priority pending, enabled interrupts whose group
    /// is enabled, in priority order. Everything else stays pending in software. Uses at
    /// most `lrs.len()` (and [`MAX_LIST_REGISTERS`]) entries: pass the slice of the
    /// `ICH_VTR_EL2.ListRegs + 1` (or `GICH_VTR.ListRegs + 1`) implemented ones. Entries
    /// not filled are set invalid. Every flush must be followed by a [`sync`](Self::sync)
    /// after the vCPU exits; a second flush without one takes the first one's list
    /// registers back unchanged.
    ///
    /// While the vCPU runs, its list registers are the truth for what they hold: changes
    /// another vCPU makes through the distributor to those interrupts (clearing pending
    /// or active state) are recorded and applied when the vCPU exits and is synced.
    pub fn flush(
        &mut self,
        vcpu: usize,
        lrs: &mut [ListRegister],
        sink: &mut dyn EffectSink,
    ) -> FlushOutcome {
        for lr in lrs.iter_mut() {
            *lr = ListRegister::INVALID;
        }
        let capacity = lrs.len();
        self.flush_with(vcpu, capacity, sink, |index, lr| {
            if let Some(slot) = lrs.get_mut(index) {
                *slot = *lr;
            }
        })
    }

    /// [`flush`](Self::flush), handing each list register to fill to `load` (with its
    /// index, from 0, in order) instead of writing a slice: the hypervisor writes them
    /// straight to the hardware. `capacity` is the number implemented; `load` is called
    /// only for the [`FlushOutcome::loaded`] ones, and the rest are the caller's to clear.
    pub fn flush_with(
        &mut self,
        vcpu: usize,
        capacity: usize,
        sink: &mut dyn EffectSink,
        mut load: impl FnMut(usize, &ListRegister),
    ) -> FlushOutcome {
        self.touch();
        if vcpu >= self.vcpus {
            return FlushOutcome::default();
        }
        self.take_back(vcpu, None, sink);

        let capacity = capacity.min(MAX_LIST_REGISTERS);
        let mut best = self
            .cpus
            .get_mut(vcpu)
            .map(|cpu| core::mem::take(&mut cpu.best))
            .unwrap_or_default();
        best.clear();
        let mut left_over = false;
        let mut left_pending = false;
        self.for_each_routed(vcpu, |intid, irq| {
            let Some(c) = self.candidate(intid, irq) else {
                return;
            };
            left_pending |= c.more;
            // Insert `c` in key order; what falls off the end stays in software.
            let at = best.partition_point(|b| b.key < c.key);
            if at >= capacity {
                left_over = true;
                left_pending |= c.pending;
                return;
            }
            if best.len() == capacity {
                if let Some(dropped) = best.pop() {
                    left_over = true;
                    left_pending |= dropped.pending;
                }
            }
            best.insert(at, c);
        });
        left_over |= left_pending;
        let count = best.len();

        let mut any_pending = false;
        for (index, c) in best.iter().enumerate() {
            if let Some(lr) = self.load_candidate(vcpu, c, left_over) {
                any_pending |= c.pending;
                load(index, &lr);
            }
        }
        self.prune_watch(vcpu);
        let mutations = self.mutations;
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            cpu.flushed_at = Some(mutations);
            cpu.complete = !left_over;
            cpu.best = best;
        }
        FlushOutcome {
            loaded: count,
            underflow: left_over && count >= 2,
            no_pending: left_pending && any_pending,
        }
    }

    /// Hands `c` to `vcpu`'s next list register: the model's side of it (the interrupt is
    /// loaded there, its pending state given away, the record for the sync) and the list
    /// register to write. `left_over`: interrupts stay behind in software.
    fn load_candidate(
        &mut self,
        vcpu: usize,
        c: &Candidate,
        left_over: bool,
    ) -> Option<ListRegister> {
        let v2_sgi = self.version == GicVersion::V2 && c.intid < 16;
        let irq = self.irq_mut(vcpu, c.intid)?;
        let mut latch_given = false;
        if c.pending {
            if v2_sgi {
                irq.sources &= !source_bit(c.source);
            } else {
                latch_given = irq.latch;
                irq.latch = false;
            }
        }
        irq.loaded_on = Some(vcpu as u8);
        irq.lr_source = c.source;
        irq.lr_pending = c.pending;
        irq.lr_pending_cleared = false;
        irq.lr_active_override = None;
        let level = !irq.edge && irq.hw.is_none();
        let given = LrState::from_flags(c.pending, c.active);
        let lr = ListRegister {
            state: given,
            hw: irq.hw.is_some(),
            group1: irq.group1,
            priority: irq.priority,
            vintid: c.intid,
            pintid: irq.hw.map_or(0, u32::from),
            source: if v2_sgi { c.source } else { 0 },
            eoi_maintenance: irq.hw.is_none() && (level || c.more || left_over),
        };
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            cpu.loaded.push(Loaded {
                intid: c.intid,
                given,
                latch_given,
            });
        }
        Some(lr)
    }

    /// Whether `vcpu`, which has exited on this CPU with its list registers exactly as its
    /// last [`flush`](Self::flush) wrote them (the caller checked), is ready for
    /// [`load_now`](Self::load_now): that flush loaded everything live for `vcpu`, nothing
    /// has changed since, and one of its `capacity` list registers is free.
    pub fn can_load_now(&self, vcpu: usize, capacity: usize) -> bool {
        self.cpus.get(vcpu).is_some_and(|cpu| {
            cpu.complete
                && cpu.flushed_at == Some(self.mutations)
                && cpu.loaded.len() < capacity.min(MAX_LIST_REGISTERS)
        })
    }

    /// After [`can_load_now`](Self::can_load_now) answered true and then exactly one input
    /// changed `intid` for `vcpu` (an arrival, a level): when `intid` is now deliverable to
    /// `vcpu` and in no list register, it goes straight into the next one, as a flush
    /// would have put it (everything fits, so the order does not matter), and the model
    /// counts as flushed. The fast path of a timer or device interrupt for the running
    /// vCPU. Returns that list register and its index, to write; `None` when a flush must
    /// follow as usual.
    pub fn load_now(&mut self, intid: u32, vcpu: usize) -> Option<(usize, ListRegister)> {
        let irq = self.irq(vcpu, intid)?;
        if irq.loaded_on.is_some() || irq.active || self.target(vcpu, intid, irq) != Some(vcpu) {
            return None;
        }
        let c = self
            .candidate(intid, irq)
            .filter(|c| c.pending && !c.more)?;
        let index = self.cpus.get(vcpu)?.loaded.len();
        let lr = self.load_candidate(vcpu, &c, false)?;
        let mutations = self.mutations;
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            cpu.flushed_at = Some(mutations);
        }
        Some((index, lr))
    }

    /// [`hw_arrived`](Self::hw_arrived) for `vcpu`, exited on this CPU, then
    /// [`load_now`](Self::load_now) when [`can_load_now`](Self::can_load_now) allowed it
    /// before. Unlike `hw_arrived`, never asks to kick `vcpu`: its exit is being handled,
    /// and it gets the interrupt, or a flush, before it runs again.
    pub fn hw_arrived_loaded(
        &mut self,
        intid: u32,
        vcpu: usize,
        capacity: usize,
        sink: &mut dyn EffectSink,
    ) -> Result<Option<(usize, ListRegister)>, VgicError> {
        let ready = self.can_load_now(vcpu, capacity);
        if !ready {
            self.arrive(intid, vcpu, Some(vcpu), sink)?;
            return Ok(None);
        }
        self.latch_arrival(intid, vcpu)?;
        let loaded = self.load_now(intid, vcpu);
        if loaded.is_none() {
            // Not for `vcpu` after all (an SPI routed elsewhere, or disabled): whoever it
            // is deliverable to is told, as `hw_arrived` would.
            let mut kicks = 0;
            self.mark(vcpu, intid, &mut kicks);
            emit_kicks(kicks, Some(vcpu), sink);
        }
        Ok(loaded)
    }

    /// Reads back `vcpu`'s list registers after it exited: `lrs` as the hardware now holds
    /// them, in the order [`flush`](Self::flush) filled them (only the state is looked
    /// at). An entry that became invalid was deactivated by the guest; an active one is
    /// in service. Level-sensitive interrupts whose line is still high become pending
    /// again. Missing entries count as unchanged.
    pub fn sync(&mut self, vcpu: usize, lrs: &[ListRegister], sink: &mut dyn EffectSink) {
        let mut states = [LrState::Invalid; MAX_LIST_REGISTERS];
        for (state, lr) in states.iter_mut().zip(lrs) {
            *state = lr.state;
        }
        self.sync_states(vcpu, &states[..lrs.len().min(MAX_LIST_REGISTERS)], sink);
    }

    /// [`sync`](Self::sync) with only what it looks at: the state of each list register,
    /// in the order the flush filled them.
    pub fn sync_states(&mut self, vcpu: usize, states: &[LrState], sink: &mut dyn EffectSink) {
        self.touch();
        if vcpu >= self.vcpus {
            return;
        }
        let kicks = self.take_back(vcpu, Some(states), sink);
        emit_kicks(kicks, Some(vcpu), sink);
    }

    /// Merges the list registers of `vcpu` back into the model; returns the vCPUs that
    /// now have something deliverable that `vcpu` did not take (routing changed). A
    /// forwarded interrupt the guest still held in its list register but removed through
    /// the distributor is deactivated physically.
    fn take_back(
        &mut self,
        vcpu: usize,
        states: Option<&[LrState]>,
        sink: &mut dyn EffectSink,
    ) -> u32 {
        let count = self.cpus.get(vcpu).map_or(0, |cpu| cpu.loaded.len());
        let version = self.version;
        let mut kicks = 0;
        // By index, not by taking the list out: putting it back would drop the empty one
        // left in its place, a call into the allocator on every trap.
        for index in 0..count {
            let Some(rec) = self
                .cpus
                .get(vcpu)
                .and_then(|cpu| cpu.loaded.get(index).copied())
            else {
                break;
            };
            let state = states
                .and_then(|states| states.get(index))
                .copied()
                .unwrap_or(rec.given);
            let Some(irq) = self.irq_mut(vcpu, rec.intid) else {
                continue;
            };
            if irq.loaded_on != Some(vcpu as u8) {
                continue;
            }
            let still_pending = state.pending() && !irq.lr_pending_cleared;
            if version == GicVersion::V2 && rec.intid < 16 {
                if still_pending {
                    irq.sources |= source_bit(irq.lr_source);
                }
            } else if irq.edge || irq.hw.is_some() {
                irq.latch |= still_pending;
            } else {
                irq.latch |= still_pending && rec.latch_given;
            }
            irq.active = irq.lr_active_override.unwrap_or(state.active());
            if irq.active && irq.lr_active_override.is_none() {
                irq.active_source = irq.lr_source;
            }
            irq.owner = irq.active.then_some(vcpu as u8);
            if let Some(pintid) = irq.hw {
                if state != LrState::Invalid && !irq.pending() && !irq.active {
                    sink.push(Effect::DeactivatePhysical(u32::from(pintid)));
                }
            }
            irq.loaded_on = None;
            irq.lr_pending = false;
            irq.lr_pending_cleared = false;
            irq.lr_active_override = None;
            let mut mask = 0;
            self.mark(vcpu, rec.intid, &mut mask);
            kicks |= mask & !(1 << vcpu);
        }
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            cpu.loaded.clear();
        }
        kicks
    }
}
