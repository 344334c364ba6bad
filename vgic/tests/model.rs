//! Model-based property tests: random guest accesses, interrupt arrivals and run cycles
//! (flush, the guest acknowledging and deactivating what it was given, sync) checked
//! against a reference model of which interrupts are owed to which vCPU.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use vgic::{AccessWidth, Effect, GicVersion, ListRegister, LrState, Vgic, VgicConfig, GICR_STRIDE};

const SGI_FRAME: u64 = 0x1_0000;
const SGIS: [u32; 3] = [0, 1, 2];
const PPIS: [u32; 2] = [16, 17];
const SPIS: [u32; 6] = [32, 33, 34, 35, 36, 37];

/// Every interrupt the delivery test uses, SGIs first.
fn universe() -> Vec<u32> {
    SGIS.iter().chain(&PPIS).chain(&SPIS).copied().collect()
}

/// Where the reference model says an SPI goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    To(usize),
    Any,
    Nowhere,
}

#[derive(Clone, Debug)]
struct Setup {
    v3: bool,
    vcpus: usize,
    n_lrs: usize,
    priorities: Vec<u8>,
    /// Per SPI: target vCPU (may not exist) and whether it is routed to "any".
    routes: Vec<(usize, bool)>,
}

#[derive(Clone, Debug)]
enum Op {
    Raise {
        which: usize,
        vcpu: usize,
    },
    Sgi {
        sender: usize,
        sgi: usize,
        mode: u8,
        list: u8,
    },
    Enable {
        which: usize,
        vcpu: usize,
        on: bool,
    },
    Ctlr(u8),
    Priority {
        which: usize,
        vcpu: usize,
        priority: u8,
    },
    Enter(usize),
    Ack(usize),
    Eoi(usize),
    Exit(usize),
}

fn setup() -> impl Strategy<Value = Setup> {
    (any::<bool>(), 1usize..=4, 1usize..=4).prop_flat_map(|(v3, vcpus, n_lrs)| {
        (
            prop::collection::vec(any::<u8>(), universe().len()),
            prop::collection::vec((0usize..6, prop::bool::weighted(0.25)), SPIS.len()),
        )
            .prop_map(move |(priorities, routes)| Setup {
                v3,
                vcpus,
                n_lrs,
                priorities,
                routes,
            })
    })
}

fn op() -> impl Strategy<Value = Op> {
    let n = universe().len();
    prop_oneof![
        4 => (0..PPIS.len() + SPIS.len(), 0usize..4).prop_map(|(which, vcpu)| Op::Raise { which, vcpu }),
        3 => (0usize..4, 0..SGIS.len(), 0u8..3, any::<u8>())
            .prop_map(|(sender, sgi, mode, list)| Op::Sgi { sender, sgi, mode, list }),
        2 => (0..n, 0usize..4, prop::bool::weighted(0.7))
            .prop_map(|(which, vcpu, on)| Op::Enable { which, vcpu, on }),
        1 => (0u8..4).prop_map(Op::Ctlr),
        1 => (0..n, 0usize..4, any::<u8>())
            .prop_map(|(which, vcpu, priority)| Op::Priority { which, vcpu, priority }),
        3 => (0usize..4).prop_map(Op::Enter),
        4 => (0usize..4).prop_map(Op::Ack),
        3 => (0usize..4).prop_map(Op::Eoi),
        3 => (0usize..4).prop_map(Op::Exit),
    ]
}

/// (bank, INTID, source): the bank is the vCPU for SGIs/PPIs and 0 for SPIs; the source
/// is the sender of a v2 SGI and 0 otherwise.
type Key = (usize, u32, u8);

struct Harness {
    g: Vgic,
    v3: bool,
    vcpus: usize,
    n_lrs: usize,
    running: Vec<Option<Vec<ListRegister>>>,
    /// Reference: owed deliveries.
    pending: HashSet<Key>,
    /// Reference: deliveries that may happen once more (an edge that arrived while the
    /// interrupt sat pending in a list register: the model cannot tell whether the guest
    /// had acknowledged it by then).
    extra: HashMap<Key, u32>,
    /// Reference: acknowledged, not yet deactivated, per vCPU.
    active: HashSet<(usize, Key)>,
    enabled: HashSet<(usize, u32)>,
    groups: [bool; 2],
    routes: HashMap<u32, Route>,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(s: &Setup) -> Self {
        let version = if s.v3 { GicVersion::V3 } else { GicVersion::V2 };
        let g = Vgic::new(VgicConfig {
            version,
            vcpus: s.vcpus,
            spis: 32,
        })
        .unwrap();
        let mut h = Self {
            g,
            v3: s.v3,
            vcpus: s.vcpus,
            n_lrs: s.n_lrs,
            running: vec![None; s.vcpus],
            pending: HashSet::new(),
            extra: HashMap::new(),
            active: HashSet::new(),
            enabled: HashSet::new(),
            groups: [false; 2],
            routes: HashMap::new(),
            effects: Vec::new(),
        };
        h.ctlr(3);
        for (which, &intid) in universe().iter().enumerate() {
            for vcpu in 0..s.vcpus {
                h.enable(intid, vcpu, true);
                h.priority(intid, vcpu, s.priorities[which]);
            }
        }
        for vcpu in 0..s.vcpus {
            // PPIs and SPIs edge-triggered.
            if s.v3 {
                h.rwrite(
                    vcpu,
                    vcpu as u64 * GICR_STRIDE + SGI_FRAME + 0xc04,
                    0xaaaa_aaaa,
                );
            } else {
                h.write(vcpu, 0xc04, 0xaaaa_aaaa);
            }
        }
        h.write(0, 0xc08, 0xaaaa_aaaa);
        for (&intid, &(target, any)) in SPIS.iter().zip(&s.routes) {
            let route = if any {
                Route::Any
            } else if target < s.vcpus {
                Route::To(target)
            } else {
                Route::Nowhere
            };
            h.routes.insert(intid, route);
            if s.v3 {
                let value = if any { 1 << 31 } else { target as u64 };
                h.g.dist_write(
                    0,
                    0x6000 + 8 * u64::from(intid),
                    AccessWidth::Double,
                    value,
                    &mut h.effects,
                );
            } else {
                let value = if any { 0xff } else { 1u64 << target };
                h.g.dist_write(
                    0,
                    0x800 + u64::from(intid),
                    AccessWidth::Byte,
                    value,
                    &mut h.effects,
                );
            }
        }
        h
    }

    fn write(&mut self, vcpu: usize, offset: u64, value: u64) {
        self.g
            .dist_write(vcpu, offset, AccessWidth::Word, value, &mut self.effects);
    }

    fn rwrite(&mut self, vcpu: usize, offset: u64, value: u64) {
        self.g
            .redist_write(vcpu, offset, AccessWidth::Word, value, &mut self.effects);
    }

    fn ctlr(&mut self, value: u8) {
        self.write(0, 0x0, u64::from(value));
        self.groups = [value & 1 != 0, value & 2 != 0];
    }

    fn bank(intid: u32, vcpu: usize) -> usize {
        if intid < 32 {
            vcpu
        } else {
            0
        }
    }

    fn enable(&mut self, intid: u32, vcpu: usize, on: bool) {
        let reg = if on { 0x100 } else { 0x180 };
        let bit = 1u64 << (intid % 32);
        if intid < 32 && self.v3 {
            self.rwrite(vcpu, vcpu as u64 * GICR_STRIDE + SGI_FRAME + reg, bit);
        } else {
            self.write(vcpu, reg + 4 * u64::from(intid / 32), bit);
        }
        let key = (Self::bank(intid, vcpu), intid);
        if on {
            self.enabled.insert(key);
        } else {
            self.enabled.remove(&key);
        }
    }

    fn priority(&mut self, intid: u32, vcpu: usize, priority: u8) {
        let offset = 0x400 + u64::from(intid);
        let value = u64::from(priority);
        if intid < 32 && self.v3 {
            let at = vcpu as u64 * GICR_STRIDE + SGI_FRAME + offset;
            self.g
                .redist_write(vcpu, at, AccessWidth::Byte, value, &mut self.effects);
        } else {
            self.g
                .dist_write(vcpu, offset, AccessWidth::Byte, value, &mut self.effects);
        }
    }

    fn group_on(&self) -> bool {
        // Reset groups: 1 on v3, 0 on v2; the test leaves them so.
        self.groups[usize::from(self.v3)]
    }

    fn routed_to(&self, intid: u32, vcpu: usize) -> bool {
        match self.routes.get(&intid) {
            None => true,
            Some(Route::To(t)) => *t == vcpu,
            Some(Route::Any) => true,
            Some(Route::Nowhere) => false,
        }
    }

    fn deliverable(&self, key: &Key) -> bool {
        let (bank, intid, _) = *key;
        let routed = !matches!(self.routes.get(&intid), Some(Route::Nowhere));
        routed && self.group_on() && self.enabled.contains(&(bank, intid))
    }

    /// An edge for `key`; `holders` are the vCPUs whose list registers could hold it.
    fn edge(&mut self, key: Key, holders: &[usize]) {
        if !self.pending.insert(key) {
            let source = key.2;
            let in_lr = holders.iter().any(|&v| {
                self.running
                    .get(v)
                    .and_then(|r| r.as_ref())
                    .is_some_and(|lrs| {
                        lrs.iter().any(|lr| {
                            lr.vintid == key.1
                                && lr.state.pending()
                                && (self.v3 || lr.source == source)
                        })
                    })
            });
            if in_lr {
                *self.extra.entry(key).or_default() += 1;
            }
        }
    }

    fn raise(&mut self, which: usize, vcpu: usize) {
        let vcpu = vcpu % self.vcpus;
        let intid = PPIS.iter().chain(&SPIS).copied().nth(which).unwrap();
        self.g.raise(intid, vcpu, &mut self.effects).unwrap();
        let all: Vec<usize> = (0..self.vcpus).collect();
        let holders = if intid < 32 { vec![vcpu] } else { all };
        self.edge((Self::bank(intid, vcpu), intid, 0), &holders);
    }

    fn sgi(&mut self, sender: usize, sgi: usize, mode: u8, list: u8) {
        let sender = sender % self.vcpus;
        let sgi = SGIS[sgi];
        let all = (1u32 << self.vcpus) - 1;
        let me = 1u32 << sender;
        let targets = match mode {
            0 => u32::from(list) & all,
            1 => all & !me,
            _ => me,
        };
        if self.v3 {
            let value = match mode {
                1 => (1 << 40) | (u64::from(sgi) << 24),
                _ => (u64::from(sgi) << 24) | u64::from(targets),
            };
            self.g.sgi1r(sender, value, &mut self.effects);
        } else {
            let value = (u64::from(mode) << 24) | (u64::from(list) << 16) | u64::from(sgi);
            self.write(sender, 0xf00, value);
        }
        for t in 0..self.vcpus {
            if targets & (1 << t) != 0 {
                let source = if self.v3 { 0 } else { sender as u8 };
                self.edge((t, sgi, source), &[t]);
            }
        }
    }

    fn key_of(&self, vcpu: usize, lr: &ListRegister) -> Key {
        (
            Self::bank(lr.vintid, vcpu),
            lr.vintid,
            if self.v3 { 0 } else { lr.source },
        )
    }

    fn enter(&mut self, vcpu: usize) -> Result<(), TestCaseError> {
        let vcpu = vcpu % self.vcpus;
        if self.running[vcpu].is_some() {
            return Ok(());
        }
        let mut lrs = vec![ListRegister::INVALID; self.n_lrs];
        self.g.flush(vcpu, &mut lrs, &mut self.effects);
        let highest = self.g.highest_pending(vcpu);
        let mut seen = HashSet::new();
        for lr in lrs.iter().filter(|lr| lr.state != LrState::Invalid) {
            prop_assert!(
                seen.insert(lr.vintid),
                "INTID {} twice in {:?}",
                lr.vintid,
                lrs
            );
            let key = self.key_of(vcpu, lr);
            if lr.vintid >= 32 {
                prop_assert!(
                    self.routed_to(lr.vintid, vcpu),
                    "SPI {} to vCPU {vcpu}",
                    lr.vintid
                );
                for (other, run) in self.running.iter().enumerate() {
                    if let Some(other_lrs) = run {
                        prop_assert!(
                            !other_lrs
                                .iter()
                                .any(|o| o.state != LrState::Invalid && o.vintid == lr.vintid),
                            "SPI {} in vCPU {vcpu} and vCPU {other}",
                            lr.vintid
                        );
                    }
                }
            }
            if lr.state.pending() {
                prop_assert!(
                    self.deliverable(&key),
                    "{key:?} given while not deliverable"
                );
                let owed =
                    self.pending.contains(&key) || self.extra.get(&key).is_some_and(|&n| n > 0);
                prop_assert!(owed, "{key:?} given but not owed");
            }
            if lr.state == LrState::Pending {
                if let Some((intid, priority)) = highest {
                    prop_assert!(
                        lr.priority <= priority,
                        "INTID {} (priority {:#x}) in an LR while {intid} ({priority:#x}) waits",
                        lr.vintid,
                        lr.priority
                    );
                }
            }
        }
        let mine: Vec<Key> = self
            .active
            .iter()
            .filter(|(v, _)| *v == vcpu)
            .map(|(_, k)| *k)
            .collect();
        if mine.len() <= self.n_lrs {
            for key in mine {
                prop_assert!(
                    lrs.iter()
                        .any(|lr| lr.state.active() && self.key_of(vcpu, lr) == key),
                    "active {key:?} not reloaded on vCPU {vcpu}: {lrs:?}"
                );
            }
        }
        self.running[vcpu] = Some(lrs);
        Ok(())
    }

    /// The guest acknowledges its highest-priority pending list register.
    fn ack(&mut self, vcpu: usize) -> Result<bool, TestCaseError> {
        let vcpu = vcpu % self.vcpus;
        let v3 = self.v3;
        let Some(lrs) = self.running[vcpu].as_mut() else {
            return Ok(false);
        };
        let Some(lr) = lrs
            .iter_mut()
            .filter(|lr| lr.state == LrState::Pending)
            .min_by_key(|lr| lr.priority)
        else {
            return Ok(false);
        };
        lr.state = LrState::Active;
        let key = (
            Self::bank(lr.vintid, vcpu),
            lr.vintid,
            if v3 { 0 } else { lr.source },
        );
        if !self.pending.remove(&key) {
            let extra = self.extra.get_mut(&key).filter(|n| **n > 0);
            prop_assert!(
                extra.is_some(),
                "{key:?} delivered to vCPU {vcpu} but not owed"
            );
            if let Some(n) = extra {
                *n -= 1;
            }
        }
        self.active.insert((vcpu, key));
        Ok(true)
    }

    /// The guest deactivates the most recently acknowledged interrupt.
    fn eoi(&mut self, vcpu: usize) -> bool {
        let vcpu = vcpu % self.vcpus;
        let v3 = self.v3;
        let Some(lrs) = self.running[vcpu].as_mut() else {
            return false;
        };
        let Some(lr) = lrs
            .iter_mut()
            .filter(|lr| lr.state.active())
            .min_by_key(|lr| lr.priority)
        else {
            return false;
        };
        lr.state = if lr.state == LrState::PendingActive {
            LrState::Pending
        } else {
            LrState::Invalid
        };
        let key = (
            Self::bank(lr.vintid, vcpu),
            lr.vintid,
            if v3 { 0 } else { lr.source },
        );
        self.active.remove(&(vcpu, key));
        true
    }

    fn exit(&mut self, vcpu: usize) {
        let vcpu = vcpu % self.vcpus;
        if let Some(lrs) = self.running[vcpu].take() {
            self.g.sync(vcpu, &lrs, &mut self.effects);
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let list = universe();
        match *op {
            Op::Raise { which, vcpu } => self.raise(which, vcpu),
            Op::Sgi {
                sender,
                sgi,
                mode,
                list,
            } => self.sgi(sender, sgi, mode, list),
            Op::Enable { which, vcpu, on } => self.enable(list[which], vcpu % self.vcpus, on),
            Op::Ctlr(value) => self.ctlr(value),
            Op::Priority {
                which,
                vcpu,
                priority,
            } => self.priority(list[which], vcpu % self.vcpus, priority),
            Op::Enter(vcpu) => self.enter(vcpu)?,
            Op::Ack(vcpu) => {
                self.ack(vcpu)?;
            }
            Op::Eoi(vcpu) => {
                self.eoi(vcpu);
            }
            Op::Exit(vcpu) => self.exit(vcpu),
        }
        Ok(())
    }

    /// Runs every vCPU until nothing is left to deliver, then checks nothing owed and
    /// deliverable is left behind.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for vcpu in 0..self.vcpus {
            self.exit(vcpu);
        }
        for _ in 0..200 {
            let mut progress = false;
            for vcpu in 0..self.vcpus {
                self.enter(vcpu)?;
                loop {
                    let acked = self.ack(vcpu)?;
                    let eoied = self.eoi(vcpu);
                    progress |= acked || eoied;
                    if !acked && !eoied {
                        break;
                    }
                }
                self.exit(vcpu);
            }
            if !progress {
                break;
            }
        }
        for key in &self.pending {
            prop_assert!(
                !self.deliverable(key),
                "{key:?} owed and deliverable but never delivered"
            );
        }
        prop_assert!(self.active.is_empty());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Each raise of an enabled, routed edge interrupt is delivered once, to the right
    /// vCPU, in priority order, never while disabled or its group is off.
    #[test]
    fn deliveries_match_the_reference(s in setup(), ops in prop::collection::vec(op(), 1..120)) {
        let mut h = Harness::new(&s);
        for op in &ops {
            h.apply(op)?;
        }
        h.drain()?;
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
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

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
