//! Model-based property tests of the virtual GIC.
//!
//! `deliveries_match_the_reference` drives a [`Vgic`] with random guest programming
//! (enables, priorities, groups, routing, trigger modes), interrupt arrivals (`raise`,
//! `set_level`, SGIs between vCPUs) and vCPU runs: flush, a simulated CPU interface that
//! acknowledges the highest-priority pending list register and later deactivates it, sync.
//! Every step is checked against a small reference model of which interrupt instances each
//! vCPU is owed, and against the hypervisor's needs: a vCPU with something new to take is
//! kicked, and nothing waits behind a running vCPU's list registers without a kick or a
//! maintenance interrupt to get it out. `hostile_inputs_never_panic` feeds any access and
//! any list-register state.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use vgic::{
    AccessWidth, Effect, FlushOutcome, GicVersion, ListRegister, LrState, Vgic, VgicConfig,
    GICR_STRIDE, MAX_LIST_REGISTERS,
};

/// Where the SGI frame starts within a redistributor.
const SGI_FRAME: u64 = 0x1_0000;
const SGIS: [u32; 3] = [0, 1, 15];
const PPIS: [u32; 2] = [16, 27];
const SPIS: [u32; 6] = [32, 33, 34, 35, 48, 63];
/// The priority bits the model keeps (see the crate documentation).
const PRIORITY_BITS: u8 = 0xf8;

/// Every interrupt the delivery test uses: SGIs, then PPIs, then SPIs.
fn universe() -> Vec<u32> {
    SGIS.iter().chain(&PPIS).chain(&SPIS).copied().collect()
}

/// The interrupts with an input line the hypervisor drives: PPIs, then SPIs.
fn inputs() -> Vec<u32> {
    PPIS.iter().chain(&SPIS).copied().collect()
}

/// The VM and its initial programming.
#[derive(Clone, Debug)]
struct Setup {
    v3: bool,
    vcpus: usize,
    /// Number of list registers per vCPU.
    lrs: usize,
    /// Per interrupt of [`universe`]: priority, enabled, Group 1.
    irqs: Vec<(u8, bool, bool)>,
    /// Per interrupt of [`inputs`]: edge-triggered (level-sensitive otherwise).
    edge: Vec<bool>,
    /// Per SPI: `target` and `any` of [`Op::Route`].
    routes: Vec<(u8, bool)>,
}

/// One step. vCPU numbers are taken modulo the VM's count; `which` indexes [`universe`]
/// or [`inputs`]; for an SGI or PPI, `vcpu` names whose. A guest access traps: a running
/// vCPU that makes one is synced before it and flushed after, as the hypervisor does.
#[derive(Clone, Debug)]
enum Op {
    /// `writer` sets or clears the enable bit (`ISENABLER`/`ICENABLER`).
    Enable {
        which: usize,
        vcpu: usize,
        writer: usize,
        on: bool,
    },
    /// `IGROUPR`, read-modify-write.
    Group {
        which: usize,
        vcpu: usize,
        writer: usize,
        group1: bool,
    },
    /// `IPRIORITYR`: the interrupt's byte, or with `word` the word that holds it (four
    /// interrupts' bytes).
    Priority {
        which: usize,
        vcpu: usize,
        writer: usize,
        value: u32,
        word: bool,
    },
    /// Routes `SPIS[spi]`. v3 `GICD_IROUTER`: Aff0 = `target % 8` (Aff1 = 1, no vCPU, when
    /// bits 6:4 of `target` are all set), or IRM = 1 with `any`; a 64-bit write, or a
    /// 32-bit write of the low half with `word`. v2 `GICD_ITARGETSR`: bit `target % 8`, or
    /// the byte `target` with `any`; a byte write, or with `word` a read-modify-write of
    /// the word.
    Route {
        spi: usize,
        target: u8,
        any: bool,
        word: bool,
        writer: usize,
    },
    /// `ICFGR` read-modify-write, done only while nothing of the interrupt is in flight
    /// (line low, in no list register): the GIC leaves other changes UNPREDICTABLE.
    Trigger {
        which: usize,
        vcpu: usize,
        edge: bool,
    },
    /// `GICD_CTLR` group enables.
    Ctlr { value: u8, writer: usize },
    /// [`Vgic::raise`] of `inputs()[which]`.
    Raise { which: usize, vcpu: usize },
    /// [`Vgic::set_level`] of `inputs()[which]`.
    Level {
        which: usize,
        vcpu: usize,
        high: bool,
    },
    /// `sender` sends `SGIS[sgi]`: mode 0 to the vCPUs in `list`, 1 to all others, 2 to
    /// itself, 3 to no vCPU (v3 Aff1 = 1, v2 an empty list).
    Sgi {
        sender: usize,
        sgi: usize,
        mode: u8,
        list: u8,
    },
    /// The vCPU is about to run: flush.
    Enter(usize),
    /// The running guest acknowledges its highest-priority pending list register.
    Ack(usize),
    /// The running guest deactivates the interrupt it acknowledged last.
    Eoi(usize),
    /// The vCPU exits: sync.
    Exit(usize),
    /// Enter, acknowledge and deactivate everything, exit.
    Run(usize),
    /// Every guest runs as a busy guest does until nothing moves (see
    /// [`Harness::settle`]); nothing deliverable may be left behind.
    Settle,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        1usize..=4,
        prop::sample::select(vec![1usize, 2, 4, 16]),
        prop::collection::vec(
            (any::<u8>(), prop::bool::weighted(0.8), any::<bool>()),
            universe().len(),
        ),
        prop::collection::vec(any::<bool>(), inputs().len()),
        prop::collection::vec((any::<u8>(), prop::bool::weighted(0.2)), SPIS.len()),
    )
        .prop_map(|(v3, vcpus, lrs, irqs, edge, routes)| Setup {
            v3,
            vcpus,
            lrs,
            irqs,
            edge,
            routes,
        })
}

/// Half the time SPI 32, so that operations on one interrupt interleave closely.
fn hot(list: Vec<u32>) -> impl Strategy<Value = usize> + Clone {
    let spi = list.iter().position(|&i| i == SPIS[0]).unwrap_or(0);
    prop_oneof![Just(spi), 0..list.len()]
}

fn op() -> impl Strategy<Value = Op> {
    let all = || hot(universe());
    let lines = || hot(inputs());
    let vcpu = || 0usize..4;
    prop_oneof![
        2 => (all(), vcpu(), vcpu(), prop::bool::weighted(0.7))
            .prop_map(|(which, vcpu, writer, on)| Op::Enable { which, vcpu, writer, on }),
        1 => (all(), vcpu(), vcpu(), prop::bool::weighted(0.7))
            .prop_map(|(which, vcpu, writer, group1)| Op::Group { which, vcpu, writer, group1 }),
        1 => (all(), vcpu(), vcpu(), any::<u32>(), any::<bool>())
            .prop_map(|(which, vcpu, writer, value, word)| Op::Priority { which, vcpu, writer, value, word }),
        2 => (prop_oneof![Just(0), 0..SPIS.len()], any::<u8>(), prop::bool::weighted(0.2), any::<bool>(), vcpu())
            .prop_map(|(spi, target, any, word, writer)| Op::Route { spi, target, any, word, writer }),
        1 => (lines(), vcpu(), any::<bool>())
            .prop_map(|(which, vcpu, edge)| Op::Trigger { which, vcpu, edge }),
        1 => (prop_oneof![3 => Just(3u8), 1 => 0u8..3], vcpu())
            .prop_map(|(value, writer)| Op::Ctlr { value, writer }),
        4 => (lines(), vcpu()).prop_map(|(which, vcpu)| Op::Raise { which, vcpu }),
        3 => (lines(), vcpu(), any::<bool>())
            .prop_map(|(which, vcpu, high)| Op::Level { which, vcpu, high }),
        3 => (vcpu(), 0..SGIS.len(), 0u8..4, any::<u8>())
            .prop_map(|(sender, sgi, mode, list)| Op::Sgi { sender, sgi, mode, list }),
        3 => vcpu().prop_map(Op::Enter),
        4 => vcpu().prop_map(Op::Ack),
        3 => vcpu().prop_map(Op::Eoi),
        3 => vcpu().prop_map(Op::Exit),
        2 => vcpu().prop_map(Op::Run),
        1 => Just(Op::Settle),
    ]
}

/// (bank, INTID): the bank is the vCPU for SGIs and PPIs, 0 for SPIs.
type Line = (usize, u32);
/// One interrupt instance: its line and, for a v2 SGI, the sending vCPU (0 otherwise).
type Key = (usize, u32, u8);

fn bank(intid: u32, vcpu: usize) -> usize {
    if intid < 32 {
        vcpu
    } else {
        0
    }
}

/// The instance a list register of `vcpu` holds.
fn key_of(v3: bool, vcpu: usize, lr: &ListRegister) -> Key {
    let source = if !v3 && lr.vintid < 16 { lr.source } else { 0 };
    (bank(lr.vintid, vcpu), lr.vintid, source)
}

/// The reference's view of one interrupt line: what the guest programmed and the level
/// of its input.
#[derive(Clone, Copy, Debug, Default)]
struct Config {
    enabled: bool,
    priority: u8,
    group1: bool,
    edge: bool,
    high: bool,
}

/// What one interrupt instance is owed.
#[derive(Clone, Copy, Debug, Default)]
struct Owed {
    /// An edge (a raise, a rising line, an SGI) not yet acknowledged: exactly one delivery
    /// is due, however many edges came.
    edge: bool,
    /// One more delivery is allowed, not required: an edge came while the instance sat
    /// pending in a list register of a running vCPU. Whether the guest acknowledged it
    /// before or after that edge is invisible to the hypervisor, so the edge may count.
    extra: bool,
}

/// A running vCPU's list registers as its simulated CPU interface holds them.
#[derive(Clone, Debug)]
struct Run {
    lrs: Vec<ListRegister>,
    /// The list registers as the flush wrote them (`lrs` changes as the guest runs).
    flushed: Vec<ListRegister>,
    /// What the flush said: `loaded` list registers filled, maintenance asked for.
    outcome: FlushOutcome,
    /// Per list register: handed over while its level-sensitive line was high.
    by_line: Vec<bool>,
}

impl Run {
    /// Whether the CPU interface raises a maintenance interrupt, which makes the vCPU
    /// exit: a list register with the EOI bit deactivated (`ICH_EISR_EL2`), at most one
    /// valid list register with `UIE`, none pending with `NPIE` (a pending-and-active one
    /// counted as pending, the less favourable reading).
    fn maintenance(&self) -> bool {
        let valid = self.lrs.iter().filter(|lr| lr.state != LrState::Invalid);
        let eoi = self
            .lrs
            .iter()
            .any(|lr| lr.eoi_maintenance && lr.state == LrState::Invalid);
        let underflow = self.outcome.underflow && valid.clone().count() <= 1;
        let no_pending = self.outcome.no_pending && !valid.clone().any(|lr| lr.state.pending());
        eoi || underflow || no_pending
    }
}

struct Harness {
    g: Vgic,
    v3: bool,
    vcpus: usize,
    lrs: usize,
    config: HashMap<Line, Config>,
    owed: HashMap<Key, Owed>,
    /// Per SPI: the vCPUs it may be delivered to, as a mask.
    routes: HashMap<u32, u8>,
    /// `GICD_CTLR` EnableGrp0, EnableGrp1.
    groups: [bool; 2],
    /// Per vCPU: acknowledged and not yet deactivated, most recent last.
    active: Vec<Vec<Key>>,
    running: Vec<Option<Run>>,
    /// Per vCPU: kicked while running, so it exits.
    kicked: Vec<bool>,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(s: &Setup) -> Result<Self, TestCaseError> {
        let version = if s.v3 { GicVersion::V3 } else { GicVersion::V2 };
        let g = Vgic::new(VgicConfig {
            version,
            vcpus: s.vcpus,
            spis: 32,
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut h = Self {
            g,
            v3: s.v3,
            vcpus: s.vcpus,
            lrs: s.lrs,
            config: HashMap::new(),
            owed: HashMap::new(),
            routes: HashMap::new(),
            groups: [false; 2],
            active: vec![Vec::new(); s.vcpus],
            running: vec![None; s.vcpus],
            kicked: vec![false; s.vcpus],
            effects: Vec::new(),
        };
        for &intid in &universe() {
            let banks = if intid < 32 { s.vcpus } else { 1 };
            for b in 0..banks {
                // Reset: SGIs edge, everything else level; Group 1 on v3, Group 0 on v2.
                let reset = Config {
                    edge: intid < 16,
                    group1: s.v3,
                    ..Config::default()
                };
                h.config.insert((b, intid), reset);
            }
        }
        h.ctlr(3, 0);
        for (&intid, &(priority, enabled, group1)) in universe().iter().zip(&s.irqs) {
            let banks = if intid < 32 { s.vcpus } else { 1 };
            for vcpu in 0..banks {
                h.group(intid, vcpu, vcpu, group1);
                h.priority(intid, vcpu, vcpu, u32::from(priority), false);
                h.enable(intid, vcpu, vcpu, enabled);
            }
        }
        for (&intid, &edge) in inputs().iter().zip(&s.edge) {
            let banks = if intid < 32 { s.vcpus } else { 1 };
            for vcpu in 0..banks {
                h.trigger(intid, vcpu, edge);
            }
        }
        for (spi, &(target, any)) in s.routes.iter().enumerate() {
            h.route(spi, target, any, false, 0);
        }
        prop_assert!(
            !h.effects.iter().any(|e| matches!(e, Effect::Note(_))),
            "setup was refused: {:?}",
            h.effects
        );
        h.effects.clear();
        Ok(h)
    }

    fn cfg(&mut self, intid: u32, vcpu: usize) -> &mut Config {
        self.config
            .get_mut(&(bank(intid, vcpu), intid))
            .expect("an interrupt of the universe")
    }

    /// Who really writes a register of `intid`: a v2 guest reaches the SGI and PPI
    /// registers of its own bank only.
    fn writer(&self, intid: u32, vcpu: usize, writer: usize) -> usize {
        if intid < 32 && !self.v3 {
            vcpu
        } else {
            writer
        }
    }

    /// Where the register at distributor offset `offset` that holds `intid` is: for an SGI
    /// or PPI on v3, `vcpu`'s SGI frame.
    fn place(&self, intid: u32, vcpu: usize, offset: u64) -> (bool, u64) {
        if intid < 32 && self.v3 {
            (true, vcpu as u64 * GICR_STRIDE + SGI_FRAME + offset)
        } else {
            (false, offset)
        }
    }

    /// Reads the 32-bit register at distributor offset `offset` that holds `intid`.
    fn read(&mut self, intid: u32, vcpu: usize, reader: usize, offset: u64) -> u64 {
        let reader = self.writer(intid, vcpu, reader);
        let (redist, at) = self.place(intid, vcpu, offset);
        if redist {
            self.g
                .redist_read(reader, at, AccessWidth::Word, &mut self.effects)
        } else {
            self.g
                .dist_read(reader, at, AccessWidth::Word, &mut self.effects)
        }
    }

    /// Writes the register at distributor offset `offset` that holds `intid`; returns the
    /// vCPU that wrote.
    fn write(
        &mut self,
        intid: u32,
        vcpu: usize,
        writer: usize,
        offset: u64,
        width: AccessWidth,
        value: u64,
    ) -> usize {
        let writer = self.writer(intid, vcpu, writer);
        let (redist, at) = self.place(intid, vcpu, offset);
        if redist {
            self.g
                .redist_write(writer, at, width, value, &mut self.effects);
        } else {
            self.g
                .dist_write(writer, at, width, value, &mut self.effects);
        }
        writer
    }

    fn ctlr(&mut self, value: u8, writer: usize) -> usize {
        self.g.dist_write(
            writer,
            0,
            AccessWidth::Word,
            value.into(),
            &mut self.effects,
        );
        self.groups = [value & 1 != 0, value & 2 != 0];
        writer
    }

    fn enable(&mut self, intid: u32, vcpu: usize, writer: usize, on: bool) -> usize {
        let base = if on { 0x100 } else { 0x180 };
        let offset = base + 4 * u64::from(intid / 32);
        let bit = 1u64 << (intid % 32);
        self.cfg(intid, vcpu).enabled = on;
        self.write(intid, vcpu, writer, offset, AccessWidth::Word, bit)
    }

    fn group(&mut self, intid: u32, vcpu: usize, writer: usize, group1: bool) -> usize {
        let offset = 0x80 + 4 * u64::from(intid / 32);
        let bit = 1u64 << (intid % 32);
        let old = self.read(intid, vcpu, writer, offset);
        let value = if group1 { old | bit } else { old & !bit };
        self.cfg(intid, vcpu).group1 = group1;
        self.write(intid, vcpu, writer, offset, AccessWidth::Word, value)
    }

    fn priority(
        &mut self,
        intid: u32,
        vcpu: usize,
        writer: usize,
        value: u32,
        word: bool,
    ) -> usize {
        if !word {
            self.cfg(intid, vcpu).priority = value as u8;
            let offset = 0x400 + u64::from(intid);
            return self.write(intid, vcpu, writer, offset, AccessWidth::Byte, value.into());
        }
        let first = intid & !3;
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            let line = (bank(intid, vcpu), first + i as u32);
            if let Some(c) = self.config.get_mut(&line) {
                c.priority = byte;
            }
        }
        let offset = 0x400 + u64::from(first);
        self.write(intid, vcpu, writer, offset, AccessWidth::Word, value.into())
    }

    fn route(&mut self, spi: usize, target: u8, any: bool, word: bool, writer: usize) -> usize {
        let intid = SPIS[spi];
        let all = ((1u32 << self.vcpus) - 1) as u8;
        if self.v3 {
            let aff0 = u64::from(target % 8);
            let nowhere = target & 0x70 == 0x70;
            let (value, mask) = if any {
                (1 << 31, all)
            } else if nowhere {
                ((1 << 8) | aff0, 0)
            } else {
                (aff0, (1u32 << aff0) as u8 & all)
            };
            self.routes.insert(intid, mask);
            let offset = 0x6000 + 8 * u64::from(intid);
            let width = if word {
                AccessWidth::Word
            } else {
                AccessWidth::Double
            };
            self.g
                .dist_write(writer, offset, width, value, &mut self.effects);
        } else {
            let byte = if any { target } else { 1 << (target % 8) };
            self.routes.insert(intid, byte & all);
            if word {
                let offset = 0x800 + u64::from(intid & !3);
                let lane = 8 * (intid % 4);
                let old = self
                    .g
                    .dist_read(writer, offset, AccessWidth::Word, &mut self.effects);
                let value = (old & !(0xff << lane)) | (u64::from(byte) << lane);
                self.g
                    .dist_write(writer, offset, AccessWidth::Word, value, &mut self.effects);
            } else {
                let offset = 0x800 + u64::from(intid);
                self.g.dist_write(
                    writer,
                    offset,
                    AccessWidth::Byte,
                    byte.into(),
                    &mut self.effects,
                );
            }
        }
        writer
    }

    /// Changes the trigger mode if nothing of the interrupt is in flight; returns the
    /// vCPU that wrote, if it did.
    fn trigger(&mut self, intid: u32, vcpu: usize, edge: bool) -> Option<usize> {
        let line = (bank(intid, vcpu), intid);
        let in_lr = self.holders(line).next().is_some();
        if self.cfg(intid, vcpu).high || in_lr {
            return None;
        }
        let offset = 0xc00 + 4 * u64::from(intid / 16);
        let bit = 1u64 << (2 * (intid % 16) + 1);
        let old = self.read(intid, vcpu, vcpu, offset);
        let value = if edge { old | bit } else { old & !bit };
        self.cfg(intid, vcpu).edge = edge;
        Some(self.write(intid, vcpu, vcpu, offset, AccessWidth::Word, value))
    }

    /// The list registers of running vCPUs that were loaded with an instance of `line`,
    /// with their vCPU. One the guest has since deactivated still counts: the hypervisor
    /// cannot see that before the vCPU exits.
    fn holders(&self, line: Line) -> impl Iterator<Item = (usize, &ListRegister)> {
        let v3 = self.v3;
        self.running
            .iter()
            .enumerate()
            .filter_map(|(vcpu, run)| run.as_ref().map(|run| (vcpu, run)))
            .flat_map(move |(vcpu, run)| {
                run.lrs[..run.outcome.loaded]
                    .iter()
                    .filter(move |lr| {
                        let (b, intid, _) = key_of(v3, vcpu, lr);
                        (b, intid) == line
                    })
                    .map(move |lr| (vcpu, lr))
            })
    }

    /// An edge for `key`: owed once, and once more if it sits pending in a list register.
    fn edge(&mut self, key: Key) {
        let in_lr = self
            .holders((key.0, key.1))
            .any(|(vcpu, lr)| lr.state.pending() && key_of(self.v3, vcpu, lr) == key);
        let owed = self.owed.entry(key).or_default();
        owed.edge = true;
        owed.extra |= in_lr;
    }

    fn raise(&mut self, which: usize, vcpu: usize) -> Result<(), TestCaseError> {
        let intid = inputs()[which];
        let result = self.g.raise(intid, vcpu, &mut self.effects);
        prop_assert!(result.is_ok(), "raise({intid}, {vcpu}): {result:?}");
        self.edge((bank(intid, vcpu), intid, 0));
        Ok(())
    }

    fn level(&mut self, intid: u32, vcpu: usize, high: bool) -> Result<(), TestCaseError> {
        let result = self.g.set_level(intid, vcpu, high, &mut self.effects);
        prop_assert!(result.is_ok(), "set_level({intid}, {vcpu}): {result:?}");
        let c = self.cfg(intid, vcpu);
        let rising = high && !c.high;
        c.high = high;
        if c.edge && rising {
            self.edge((bank(intid, vcpu), intid, 0));
        }
        Ok(())
    }

    fn sgi(&mut self, sender: usize, sgi: usize, mode: u8, list: u8) {
        let sgi = SGIS[sgi];
        let all = (1u32 << self.vcpus) - 1;
        let me = 1u32 << sender;
        let targets = match mode {
            0 => u32::from(list) & all,
            1 => all & !me,
            2 => me,
            _ => 0,
        };
        if self.v3 {
            let value = match mode {
                0 => u64::from(list),
                1 => 1 << 40,
                2 => u64::from(me),
                _ => (1 << 16) | u64::from(list),
            };
            self.g
                .sgi1r(sender, value | (u64::from(sgi) << 24), &mut self.effects);
        } else {
            let (filter, list) = if mode == 3 { (0, 0) } else { (mode, list) };
            let value = (u64::from(filter) << 24) | (u64::from(list) << 16) | u64::from(sgi);
            self.g
                .dist_write(sender, 0xf00, AccessWidth::Word, value, &mut self.effects);
        }
        for target in 0..self.vcpus {
            if targets & (1 << target) != 0 {
                let source = if self.v3 { 0 } else { sender as u8 };
                self.edge((target, sgi, source));
            }
        }
    }

    /// Whether the line of `key` is level-sensitive and high.
    fn level_high(&self, key: Key) -> bool {
        self.config
            .get(&(key.0, key.1))
            .is_some_and(|c| !c.edge && c.high)
    }

    /// Whether the reference holds `key` pending: an edge owed, or a high level.
    fn pending(&self, key: Key) -> bool {
        self.owed.get(&key).is_some_and(|o| o.edge) || self.level_high(key)
    }

    /// Enabled, and its group enabled in `GICD_CTLR`.
    fn enabled(&self, key: Key) -> bool {
        self.config
            .get(&(key.0, key.1))
            .is_some_and(|c| c.enabled && self.groups[usize::from(c.group1)])
    }

    /// May `key` be handed to `vcpu`: its own SGI or PPI, or an SPI routed to it or
    /// already active on it (an active interrupt stays where it is until deactivated).
    fn routed(&self, key: Key, vcpu: usize) -> bool {
        let (b, intid, _) = key;
        if intid < 32 {
            return b == vcpu;
        }
        let mask = self.routes.get(&intid).copied().unwrap_or(0);
        mask & (1 << vcpu) != 0 || self.active[vcpu].contains(&key)
    }

    /// Every instance the reference holds pending.
    fn all_pending(&self) -> Vec<Key> {
        let mut keys: HashSet<Key> = self
            .owed
            .iter()
            .filter(|(_, o)| o.edge)
            .map(|(k, _)| *k)
            .collect();
        keys.extend(
            self.config
                .iter()
                .filter(|(_, c)| !c.edge && c.high)
                .map(|(&(b, intid), _)| (b, intid, 0)),
        );
        let mut keys: Vec<Key> = keys.into_iter().collect();
        keys.sort_unstable();
        keys
    }

    /// Pending, enabled instances only `vcpu` can take, that are in no list register of
    /// another running vCPU, not active elsewhere, and whose INTID is not already in
    /// `lrs` (one list register per INTID): with their priority.
    fn waiting_for(&self, vcpu: usize, lrs: &[ListRegister]) -> Vec<(Key, u8)> {
        self.all_pending()
            .into_iter()
            .filter(|&key| self.enabled(key))
            .filter(|&(b, intid, _)| {
                if intid < 32 {
                    return b == vcpu;
                }
                let only_here = self.routes.get(&intid) == Some(&(1 << vcpu));
                let active_elsewhere = self
                    .active
                    .iter()
                    .enumerate()
                    .any(|(v, keys)| v != vcpu && keys.iter().any(|k| k.1 == intid));
                only_here && !active_elsewhere && self.holders((b, intid)).next().is_none()
            })
            .filter(|&(_, intid, _)| {
                !lrs.iter()
                    .any(|lr| lr.state != LrState::Invalid && lr.vintid == intid)
            })
            .map(|key| (key, self.config[&(key.0, key.1)].priority & PRIORITY_BITS))
            .collect()
    }

    fn enter(&mut self, vcpu: usize) -> Result<(), TestCaseError> {
        if self.running[vcpu].is_some() {
            return Ok(());
        }
        let mut lrs = vec![ListRegister::INVALID; self.lrs];
        let outcome = self.g.flush(vcpu, &mut lrs, &mut self.effects);
        let valid = lrs
            .iter()
            .take_while(|lr| lr.state != LrState::Invalid)
            .count();
        prop_assert_eq!(outcome.loaded, valid, "{:?}", lrs);
        prop_assert!(
            lrs[valid..].iter().all(|lr| *lr == ListRegister::INVALID),
            "holes in {lrs:?}"
        );
        let mut seen = HashSet::new();
        for lr in &lrs[..valid] {
            let key = key_of(self.v3, vcpu, lr);
            prop_assert!(seen.insert(lr.vintid), "INTID {} twice: {lrs:?}", lr.vintid);
            let Some(c) = self.config.get(&(key.0, key.1)).copied() else {
                return Err(TestCaseError::fail(format!("{key:?} was never used")));
            };
            prop_assert_eq!(lr.priority, c.priority & PRIORITY_BITS, "{:?}", key);
            prop_assert_eq!(lr.group1, c.group1, "{:?}", key);
            prop_assert!(!lr.hw, "{key:?}: no interrupt is forwarded");
            let elsewhere: Vec<usize> = self.holders((key.0, key.1)).map(|(v, _)| v).collect();
            prop_assert!(
                elsewhere.is_empty(),
                "{key:?} given to vCPU {vcpu} while in the list registers of {elsewhere:?}"
            );
            if lr.state.active() {
                prop_assert!(
                    self.active[vcpu].contains(&key),
                    "{key:?} active on vCPU {vcpu} but never acknowledged there"
                );
            }
            if lr.state.pending() {
                prop_assert!(self.enabled(key), "{key:?} given while disabled");
                let extra = self.owed.get(&key).is_some_and(|o| o.extra);
                prop_assert!(self.pending(key) || extra, "{key:?} given but not owed");
                prop_assert!(
                    self.routed(key, vcpu),
                    "{key:?} given to vCPU {vcpu}, routed to {:?}",
                    self.routes.get(&key.1)
                );
            }
        }
        // Every acknowledged interrupt comes back, so the guest can deactivate it (a vCPU
        // never has more active interrupts than list registers: it acknowledges only what
        // they hold).
        for key in &self.active[vcpu] {
            prop_assert!(
                lrs.iter()
                    .any(|lr| lr.state.active() && key_of(self.v3, vcpu, lr) == *key),
                "active {key:?} not reloaded on vCPU {vcpu}: {lrs:?}"
            );
        }
        // What stays behind: only for lack of list registers, never ahead of something
        // of lower priority, and with a maintenance interrupt asked for to come back.
        let waiting = self.waiting_for(vcpu, &lrs);
        let worst_given = lrs[..valid]
            .iter()
            .filter(|lr| lr.state == LrState::Pending)
            .map(|lr| lr.priority)
            .max();
        for &(key, priority) in &waiting {
            prop_assert_eq!(
                valid,
                self.lrs.min(MAX_LIST_REGISTERS),
                "{:?} left out with a list register free: {:?}",
                key,
                lrs
            );
            if let Some(worst) = worst_given {
                prop_assert!(
                    worst <= priority,
                    "{key:?} (priority {priority:#x}) left out for a lower priority: {lrs:?}"
                );
            }
        }
        if !waiting.is_empty() {
            let eoi = lrs.iter().any(|lr| lr.eoi_maintenance);
            prop_assert!(
                outcome.underflow || outcome.no_pending || eoi,
                "{waiting:?} left out and no maintenance interrupt asked: {outcome:?}"
            );
        }
        if let Some((intid, priority)) = self.g.highest_pending(vcpu) {
            for lr in lrs.iter().filter(|lr| lr.state == LrState::Pending) {
                prop_assert!(
                    lr.priority <= priority,
                    "INTID {} (priority {:#x}) in a list register while {intid} ({priority:#x}) waits",
                    lr.vintid,
                    lr.priority
                );
            }
        }
        let by_line = lrs
            .iter()
            .map(|lr| self.level_high(key_of(self.v3, vcpu, lr)))
            .collect();
        self.running[vcpu] = Some(Run {
            flushed: lrs.clone(),
            lrs,
            outcome,
            by_line,
        });
        self.kicked[vcpu] = false;
        Ok(())
    }

    /// The guest acknowledges its highest-priority pending list register; with `quiet`, its
    /// handler also silences a level-sensitive source.
    fn ack(&mut self, vcpu: usize, quiet: bool) -> Result<bool, TestCaseError> {
        let v3 = self.v3;
        let Some(run) = self.running[vcpu].as_mut() else {
            return Ok(false);
        };
        let Some(index) = (0..run.lrs.len())
            .filter(|&i| run.lrs[i].state == LrState::Pending)
            .min_by_key(|&i| run.lrs[i].priority)
        else {
            return Ok(false);
        };
        run.lrs[index].state = LrState::Active;
        let key = key_of(v3, vcpu, &run.lrs[index]);
        let by_line = run.by_line[index];
        let high_now = self.level_high(key);
        let owed = self.owed.entry(key).or_default();
        if owed.edge {
            owed.edge = false;
        } else if owed.extra {
            owed.extra = false;
        } else {
            prop_assert!(
                by_line || high_now,
                "{key:?} delivered to vCPU {vcpu} but not owed"
            );
        }
        self.active[vcpu].push(key);
        if quiet && high_now {
            self.level(key.1, vcpu, false)?;
        }
        Ok(true)
    }

    /// The guest deactivates the interrupt it acknowledged last.
    fn eoi(&mut self, vcpu: usize) -> Result<bool, TestCaseError> {
        let v3 = self.v3;
        let (Some(run), Some(&key)) = (self.running[vcpu].as_mut(), self.active[vcpu].last())
        else {
            return Ok(false);
        };
        let lr = run
            .lrs
            .iter_mut()
            .find(|lr| lr.state.active() && key_of(v3, vcpu, lr) == key);
        prop_assert!(lr.is_some(), "active {key:?} is in no list register");
        if let Some(lr) = lr {
            lr.state = LrState::from_flags(lr.state.pending(), false);
        }
        self.active[vcpu].pop();
        Ok(true)
    }

    fn exit(&mut self, vcpu: usize) -> Result<(), TestCaseError> {
        let Some(run) = self.running[vcpu].take() else {
            return Ok(());
        };
        // The hypervisor's fast path: when the list registers are as the flush wrote them
        // and the model says nothing changed since, it skips this sync and the next flush.
        // They must indeed change nothing.
        if run.lrs == run.flushed && self.g.untouched_since_flush(vcpu) {
            let mut twin = self.g.clone();
            let mut effects = Vec::new();
            twin.sync(vcpu, &run.lrs, &mut effects);
            let mut lrs = vec![ListRegister::INVALID; self.lrs];
            twin.flush(vcpu, &mut lrs, &mut effects);
            prop_assert_eq!(
                &lrs,
                &run.lrs,
                "a skipped sync and flush would have changed the list registers"
            );
            prop_assert!(
                effects.is_empty(),
                "a skipped sync and flush would have had effects: {:?}",
                effects
            );
        }
        self.g.sync(vcpu, &run.lrs, &mut self.effects);
        // Still pending: the list register's copy and a later edge merge into one.
        for lr in run.lrs.iter().filter(|lr| lr.state.pending()) {
            let key = key_of(self.v3, vcpu, lr);
            if let Some(owed) = self.owed.get_mut(&key).filter(|o| o.edge) {
                owed.extra = false;
            }
        }
        Ok(())
    }

    /// Runs the vCPU until it has nothing left to acknowledge.
    fn run(&mut self, vcpu: usize, quiet: bool) -> Result<bool, TestCaseError> {
        self.enter(vcpu)?;
        let mut progress = false;
        loop {
            let acked = self.ack(vcpu, quiet)?;
            let eoied = self.eoi(vcpu)?;
            if !acked && !eoied {
                break;
            }
            progress = true;
        }
        self.exit(vcpu)?;
        Ok(progress)
    }

    /// A guest access by `vcpu` traps: if it was running, it is synced before the access
    /// is handled and flushed after, as the hypervisor does around every exit.
    fn trap<R>(
        &mut self,
        vcpu: usize,
        access: impl FnOnce(&mut Self) -> R,
    ) -> Result<R, TestCaseError> {
        let was_running = self.running[vcpu].is_some();
        self.exit(vcpu)?;
        let result = access(self);
        if was_running {
            self.enter(vcpu)?;
        }
        Ok(result)
    }

    /// Applies `op`, then checks its effects: no access was refused, and every vCPU that
    /// got something deliverable is kicked, unless it caused the change itself.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.vcpus;
        self.effects.clear();
        let before: Vec<bool> = (0..n)
            .map(|v| self.g.highest_pending(v).is_some())
            .collect();
        let all = universe();
        let actor = match *op {
            Op::Enable {
                which,
                vcpu,
                writer,
                on,
            } => {
                let (intid, vcpu) = (all[which], vcpu % n);
                let writer = self.writer(intid, vcpu, writer % n);
                Some(self.trap(writer, |h| h.enable(intid, vcpu, writer, on))?)
            }
            Op::Group {
                which,
                vcpu,
                writer,
                group1,
            } => {
                let (intid, vcpu) = (all[which], vcpu % n);
                let writer = self.writer(intid, vcpu, writer % n);
                Some(self.trap(writer, |h| h.group(intid, vcpu, writer, group1))?)
            }
            Op::Priority {
                which,
                vcpu,
                writer,
                value,
                word,
            } => {
                let (intid, vcpu) = (all[which], vcpu % n);
                let writer = self.writer(intid, vcpu, writer % n);
                Some(self.trap(writer, |h| h.priority(intid, vcpu, writer, value, word))?)
            }
            Op::Route {
                spi,
                target,
                any,
                word,
                writer,
            } => Some(self.trap(writer % n, |h| h.route(spi, target, any, word, writer % n))?),
            Op::Trigger { which, vcpu, edge } => {
                let (intid, vcpu) = (inputs()[which], vcpu % n);
                self.trap(vcpu, |h| h.trigger(intid, vcpu, edge))?
            }
            Op::Ctlr { value, writer } => {
                Some(self.trap(writer % n, |h| h.ctlr(value, writer % n))?)
            }
            Op::Raise { which, vcpu } => {
                self.raise(which, vcpu % n)?;
                None
            }
            Op::Level { which, vcpu, high } => {
                self.level(inputs()[which], vcpu % n, high)?;
                None
            }
            Op::Sgi {
                sender,
                sgi,
                mode,
                list,
            } => {
                let sender = sender % n;
                self.trap(sender, |h| h.sgi(sender, sgi, mode, list))?;
                Some(sender)
            }
            Op::Enter(vcpu) => {
                self.enter(vcpu % n)?;
                Some(vcpu % n)
            }
            Op::Ack(vcpu) => {
                self.ack(vcpu % n, false)?;
                Some(vcpu % n)
            }
            Op::Eoi(vcpu) => {
                self.eoi(vcpu % n)?;
                Some(vcpu % n)
            }
            Op::Exit(vcpu) => {
                self.exit(vcpu % n)?;
                Some(vcpu % n)
            }
            Op::Run(vcpu) => {
                self.run(vcpu % n, false)?;
                Some(vcpu % n)
            }
            Op::Settle => {
                self.settle()?;
                return Ok(());
            }
        };
        for effect in &self.effects {
            prop_assert!(matches!(effect, Effect::Kick(_)), "{effect:?} after {op:?}");
        }
        for (vcpu, &had) in before.iter().enumerate() {
            let has = self.g.highest_pending(vcpu).is_some();
            if !had && has && actor != Some(vcpu) {
                prop_assert!(
                    self.effects.contains(&Effect::Kick(vcpu)),
                    "vCPU {vcpu} has something deliverable after {op:?} but was not kicked"
                );
            }
        }
        self.take_kicks();
        self.check_nothing_stranded(op)
    }

    /// No lost wake-up. A pending, deliverable interrupt whose pending state waits in
    /// software behind a list register of a running vCPU (one its guest acknowledged or
    /// deactivated, which the hypervisor cannot see) moves only once that vCPU exits and
    /// syncs: it must have been kicked, or be sure to exit through a maintenance interrupt
    /// once its guest has handled what its list registers hold.
    fn check_nothing_stranded(&self, op: &Op) -> Result<(), TestCaseError> {
        let pending = self.all_pending();
        for (vcpu, run) in self.running.iter().enumerate() {
            let Some(run) = run else { continue };
            let loaded = &run.lrs[..run.outcome.loaded];
            let will_exit = self.kicked[vcpu]
                || run.outcome.underflow
                || run.outcome.no_pending
                || loaded.iter().any(|lr| lr.eoi_maintenance);
            if will_exit {
                continue;
            }
            for lr in loaded.iter().filter(|lr| !lr.state.pending()) {
                let (b, intid, _) = key_of(self.v3, vcpu, lr);
                for &key in pending.iter().filter(|k| (k.0, k.1) == (b, intid)) {
                    let somewhere = (0..self.vcpus).any(|v| self.routed(key, v));
                    prop_assert!(
                        !(self.enabled(key) && somewhere),
                        "after {op:?}, {key:?} waits behind {lr:?} of vCPU {vcpu}, not kicked"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records the kicks in `effects` for the vCPUs that run, and forgets the effects.
    fn take_kicks(&mut self) {
        for effect in self.effects.drain(..) {
            if let Effect::Kick(vcpu) = effect {
                if self.running.get(vcpu).is_some_and(Option::is_some) {
                    self.kicked[vcpu] = true;
                }
            }
        }
    }

    /// Lets the guests run as busy guests do, which exit only when kicked or when their
    /// CPU interface raises a maintenance interrupt: each takes and deactivates all it is
    /// given (its handlers silencing level-sensitive sources), until none makes progress.
    /// Then nothing owed and deliverable may be left behind, in software or in a list
    /// register.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.take_kicks();
        for _ in 0..100 {
            let mut progress = false;
            for vcpu in 0..self.vcpus {
                if self.running[vcpu].is_none() {
                    self.enter(vcpu)?;
                }
                loop {
                    let acked = self.ack(vcpu, true)?;
                    let eoied = self.eoi(vcpu)?;
                    if !acked && !eoied {
                        break;
                    }
                    progress = true;
                }
                let maintenance = self.running[vcpu].as_ref().is_some_and(Run::maintenance);
                if self.kicked[vcpu] || maintenance {
                    self.exit(vcpu)?;
                    progress = true;
                }
                self.take_kicks();
            }
            if !progress {
                break;
            }
        }
        for key in self.all_pending() {
            let somewhere = (0..self.vcpus).any(|v| self.routed(key, v));
            prop_assert!(
                !(self.enabled(key) && somewhere),
                "{key:?} owed and deliverable but never delivered: {:?}",
                self.running
            );
        }
        for vcpu in 0..self.vcpus {
            prop_assert!(self.active[vcpu].is_empty());
            prop_assert_eq!(self.g.highest_pending(vcpu), None, "vCPU {}", vcpu);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every owed edge (raise, rising line, SGI) of an enabled, routed interrupt is
    /// delivered exactly once (once more at most if it came while the interrupt sat pending
    /// in a list register), a level-sensitive one only while its line is high; only to
    /// the vCPU it is routed to; never while disabled or its group is off; and what the
    /// list registers cannot hold stays behind in priority order.
    #[test]
    fn deliveries_match_the_reference(s in setup(), ops in prop::collection::vec(op(), 1..150)) {
        let mut h = Harness::new(&s)?;
        for op in &ops {
            h.apply(op)?;
        }
        h.settle()?;
    }
}

/// Anything a hostile guest (or confused hardware read-back) can feed the model.
#[derive(Clone, Debug)]
enum Chaos {
    Dist {
        vcpu: usize,
        offset: u64,
        width: u8,
        value: u64,
        write: bool,
    },
    Redist {
        vcpu: usize,
        offset: u64,
        width: u8,
        value: u64,
        write: bool,
    },
    Sgi1r {
        vcpu: usize,
        value: u64,
    },
    Raise {
        intid: u32,
        vcpu: usize,
    },
    Level {
        intid: u32,
        vcpu: usize,
        level: bool,
    },
    Forward {
        intid: u32,
        vcpu: usize,
        pintid: Option<u32>,
    },
    HwArrived {
        intid: u32,
        vcpu: usize,
    },
    Flush {
        vcpu: usize,
        n: usize,
    },
    Sync {
        vcpu: usize,
        states: Vec<u8>,
    },
}

/// Offsets near registers, and anywhere.
fn offset(size: u64) -> impl Strategy<Value = u64> {
    let bases = [
        0x0u64, 0x4, 0x8, 0x14, 0x80, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x420,
        0x800, 0x820, 0xc00, 0xc08, 0xf00, 0xf10, 0xf20, 0x6100, 0x6108, 0xffe8, 0xfe8,
    ];
    prop_oneof![
        (prop::sample::select(bases.to_vec()), 0u64..8, 0u64..3).prop_map(
            |(base, delta, frame)| frame * GICR_STRIDE
                + SGI_FRAME * (delta & 1)
                + base
                + (delta & !1)
        ),
        0..size,
        any::<u64>(),
    ]
}

fn chaos() -> impl Strategy<Value = Chaos> {
    let intid = prop_oneof![0u32..40, any::<u32>()];
    prop_oneof![
        4 => (0usize..5, offset(0x1_0000), 0u8..4, any::<u64>(), any::<bool>())
            .prop_map(|(vcpu, offset, width, value, write)| Chaos::Dist { vcpu, offset, width, value, write }),
        4 => (0usize..5, offset(4 * GICR_STRIDE), 0u8..4, any::<u64>(), any::<bool>())
            .prop_map(|(vcpu, offset, width, value, write)| Chaos::Redist { vcpu, offset, width, value, write }),
        1 => (0usize..5, any::<u64>()).prop_map(|(vcpu, value)| Chaos::Sgi1r { vcpu, value }),
        2 => (intid.clone(), 0usize..5).prop_map(|(intid, vcpu)| Chaos::Raise { intid, vcpu }),
        2 => (intid.clone(), 0usize..5, any::<bool>()).prop_map(|(intid, vcpu, level)| Chaos::Level { intid, vcpu, level }),
        1 => (intid.clone(), 0usize..5, prop::option::of(0u32..1100))
            .prop_map(|(intid, vcpu, pintid)| Chaos::Forward { intid, vcpu, pintid }),
        1 => (intid, 0usize..5).prop_map(|(intid, vcpu)| Chaos::HwArrived { intid, vcpu }),
        3 => (0usize..5, 0usize..6).prop_map(|(vcpu, n)| Chaos::Flush { vcpu, n }),
        3 => (0usize..5, prop::collection::vec(0u8..4, 0..6)).prop_map(|(vcpu, states)| Chaos::Sync { vcpu, states }),
    ]
}

fn state(bits: u8) -> LrState {
    LrState::from_flags(bits & 1 != 0, bits & 2 != 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No input panics, and flush keeps its structural promises whatever came before.
    #[test]
    fn hostile_inputs_never_panic(
        v3: bool, vcpus in 1usize..=4, spis in prop::sample::select(vec![0u32, 32, 64, 988]),
        ops in prop::collection::vec(chaos(), 1..200),
    ) {
        let version = if v3 { GicVersion::V3 } else { GicVersion::V2 };
        let mut g = Vgic::new(VgicConfig { version, vcpus, spis }).unwrap();
        let mut fx = Vec::new();
        let mut loaded: Vec<Vec<ListRegister>> = vec![Vec::new(); 5];
        for op in ops {
            match op {
                Chaos::Dist { vcpu, offset, width, value, write } => {
                    let width = AccessWidth::from_sas(width);
                    if write {
                        g.dist_write(vcpu, offset, width, value, &mut fx);
                    } else {
                        g.dist_read(vcpu, offset, width, &mut fx);
                    }
                }
                Chaos::Redist { vcpu, offset, width, value, write } => {
                    let width = AccessWidth::from_sas(width);
                    if write {
                        g.redist_write(vcpu, offset, width, value, &mut fx);
                    } else {
                        g.redist_read(vcpu, offset, width, &mut fx);
                    }
                }
                Chaos::Sgi1r { vcpu, value } => g.sgi1r(vcpu, value, &mut fx),
                Chaos::Raise { intid, vcpu } => { let _ = g.raise(intid, vcpu, &mut fx); }
                Chaos::Level { intid, vcpu, level } => { let _ = g.set_level(intid, vcpu, level, &mut fx); }
                Chaos::Forward { intid, vcpu, pintid } => { let _ = g.set_forwarded(intid, vcpu, pintid, &mut fx); }
                Chaos::HwArrived { intid, vcpu } => { let _ = g.hw_arrived(intid, vcpu, &mut fx); }
                Chaos::Flush { vcpu, n } => {
                    let mut lrs = vec![ListRegister::INVALID; n];
                    let outcome = g.flush(vcpu, &mut lrs, &mut fx);
                    prop_assert!(outcome.loaded <= n);
                    let valid: Vec<_> = lrs.iter().filter(|lr| lr.state != LrState::Invalid).collect();
                    prop_assert_eq!(valid.len(), outcome.loaded);
                    let ids: HashSet<u32> = valid.iter().map(|lr| lr.vintid).collect();
                    prop_assert_eq!(ids.len(), valid.len());
                    for lr in &valid {
                        prop_assert!(!(lr.hw && lr.state == LrState::PendingActive));
                        prop_assert!(!(lr.hw && lr.eoi_maintenance));
                        if lr.vintid >= 32 {
                            for (other, others) in loaded.iter().enumerate() {
                                prop_assert!(
                                    other == vcpu || !others.iter().any(|o| o.state != LrState::Invalid && o.vintid == lr.vintid),
                                    "SPI {} on two vCPUs", lr.vintid
                                );
                            }
                        }
                    }
                    if let Some((_, priority)) = g.highest_pending(vcpu) {
                        for lr in valid.iter().filter(|lr| lr.state == LrState::Pending) {
                            prop_assert!(lr.priority <= priority);
                        }
                    }
                    if let Some(slot) = loaded.get_mut(vcpu) {
                        *slot = lrs;
                    }
                }
                Chaos::Sync { vcpu, states } => {
                    let mut lrs = loaded.get(vcpu).cloned().unwrap_or_default();
                    for (lr, bits) in lrs.iter_mut().zip(states) {
                        lr.state = state(bits);
                    }
                    g.sync(vcpu, &lrs, &mut fx);
                    if let Some(slot) = loaded.get_mut(vcpu) {
                        slot.clear();
                    }
                }
            }
            fx.clear();
        }
    }
}
