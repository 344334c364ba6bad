//! Hostile test guest: a VM that misbehaves on purpose. With a seeded PRNG it attacks what
//! it must not reach and checks that each attempt gets the architecturally right answer:
//!
//! | Attack | Right answer |
//! |---|---|
//! | loads/stores (14 forms) to the victim VM's memory, the hypervisor's image, the host GIC outside the VM's own virtual GIC, random unmapped IPAs | synchronous External abort: EC 0x25, DFSC 0x10, ELR = the access, FAR = its address, WnR right, no data loaded, no base writeback |
//! | loads/stores beyond the PA range (ID_AA64MMFR0_EL1.PARange) | the guest's own stage 1 (MMU off): Address size fault, EC 0x25, DFSC 0x00 |
//! | loads/stores to the VM's own virtual GIC windows (from its DTB) | emulated, or the abort above (before the virtual GIC exists) |
//! | stores and loads in its own free memory | complete, the value read back is the one written |
//! | HVC and SMC with random function IDs and arguments | return; X4-X17 preserved (SMCCC 1.1); NOT_SUPPORTED (-1) for every ID outside PSCI and the Arm architecture service, and for those two wherever PSCI_FEATURES/SMCCC_ARCH_FEATURES says NOT_SUPPORTED |
//! | `mrs`/`msr` of IMPLEMENTATION DEFINED registers (op0 3, CRn 11 or 15; HCR_EL2.TIDCP) and of EL2/EL3 registers | UNDEFINED: EC 0x00 at the instruction, no data in the destination |
//! | `mrs` of random encodings of the ID register space (op0 3, op1 0, CRn 0) | a value, the same on a second read; or UNDEFINED; or EC 0x18 at the instruction (FEAT_IDST) |
//! | `dc isw`/`csw`/`cisw` (trapped by HCR_EL2.TSW) | complete without effect |
//! | branches to the same foreign and unmapped addresses | instruction abort: EC 0x21, IFSC 0x10, ELR = FAR = the target |
//! | branches to misaligned addresses | PC alignment fault, EC 0x22 |
//! | `udf #imm`, `brk #imm` | EC 0x00; EC 0x3c with the immediate in ISS |
//!
//! HVC/SMC never use the PSCI functions that would stop, suspend or reset the guest:
//! CPU_SUSPEND, CPU_OFF, SYSTEM_OFF, SYSTEM_RESET, CPU_FREEZE, CPU_DEFAULT_SUSPEND,
//! SYSTEM_SUSPEND, SYSTEM_RESET2 and SYSTEM_OFF2, in either calling convention (compared
//! with bits 30 and 23:16 of the ID ignored, so no hypervisor decoding them leniently stops
//! the guest either).
//!
//! Command line (`/chosen/bootargs`): `victim=<base>,<size> hyp=<base>,<size>
//! gic=<base>,<size> [seed=<n>] [rounds=<n>] [duration_ms=<n>]`. Each round makes one
//! attack of every kind; with `duration_ms` the rounds are spread evenly over that much
//! guest time, so the attacks overlap what the other VMs do. The guest prints its seed first so that a failure replays, its progress, then a table of
//! every kind with its count and the answers seen, and passes only if every answer was
//! right. The first wrong answers are printed with their details as they happen.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod ops;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};
use smccc::arch::SMCCC_ARCH_FEATURES;
use smccc::psci::PSCI_FEATURES;
use tandem_guest_rt::exception::class_name;
use tandem_guest_rt::rand::XorShift64Star;
use tandem_guest_rt::time::now_ns;
use tandem_guest_rt::{args, call_wild, catch, println, Boot, Failure, Guest, SyncException};

use ops::{Accessed, Form, FORMS, SENTINEL};

const EC_UNKNOWN: u8 = 0x00;
const EC_INSTRUCTION_ABORT_SAME_EL: u8 = 0x21;
const EC_PC_ALIGNMENT: u8 = 0x22;
const EC_DATA_ABORT_SAME_EL: u8 = 0x25;
const EC_BRK: u8 = 0x3c;
/// DFSC/IFSC: synchronous External abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u8 = 0x10;
/// DFSC: Address size fault, level 0.
const FSC_ADDRESS_SIZE_L0: u8 = 0x00;
/// ISS.FnV: FAR is not valid.
const ISS_FNV: u32 = 1 << 10;
/// ISS.WnR: the abort was on a write.
const ISS_WNR: u32 = 1 << 6;
/// SMCCC's unknown function identifier, sign-extended to 64 bits.
const NOT_SUPPORTED: u64 = u64::MAX;
/// Page size of the windows the guest owns.
const PAGE: u64 = 0x1000;

const DEFAULT_SEED: u64 = 1;
const DEFAULT_ROUNDS: u64 = 200;
/// Wrong answers printed in full as they happen; the rest are only counted.
const MAX_REPORTED: u64 = 20;
/// Progress lines over the whole run.
const PROGRESS_LINES: u64 = 8;

/// PSCI functions that stop, suspend or reset the caller (PSCI 1.3, table 5.1), as SMC32
/// IDs; never called.
const STOPPING_FUNCTIONS: [u32; 9] = [
    0x8400_0001, // CPU_SUSPEND
    0x8400_0002, // CPU_OFF
    0x8400_0008, // SYSTEM_OFF
    0x8400_0009, // SYSTEM_RESET
    0x8400_000b, // CPU_FREEZE
    0x8400_000c, // CPU_DEFAULT_SUSPEND
    0x8400_000e, // SYSTEM_SUSPEND
    0x8400_0012, // SYSTEM_RESET2
    0x8400_0015, // SYSTEM_OFF2
];

/// Function ID bits an SMCCC 1.1 caller keeps zero or a later callee may ignore: bit 30
/// (SMC64) and bits 23:16 (must be zero; bit 16 is SMCCC 1.3's SVE hint).
const ID_IGNORED_BITS: u32 = (1 << 30) | (0xff << 16);

/// Named system registers that must be UNDEFINED at EL1, as (op0, op1, CRn, CRm, op2).
const NAMED_IMPDEF: [(u32, u32, u32, u32, u32); 4] = [
    (3, 0, 15, 0, 0), // S3_0_C15_C0_0
    (3, 1, 15, 2, 0), // CPUACTLR_EL1 on Cortex-A53/A57/A72
    (3, 1, 15, 2, 1), // CPUECTLR_EL1
    (3, 1, 11, 0, 2), // L2CTLR_EL1
];
const NAMED_EL2_EL3: [(u32, u32, u32, u32, u32); 10] = [
    (3, 4, 1, 1, 0),   // HCR_EL2
    (3, 4, 2, 1, 0),   // VTTBR_EL2
    (3, 4, 2, 1, 2),   // VTCR_EL2
    (3, 4, 12, 0, 0),  // VBAR_EL2
    (3, 4, 1, 0, 0),   // SCTLR_EL2
    (3, 4, 14, 1, 0),  // CNTHCTL_EL2
    (3, 4, 14, 0, 3),  // CNTVOFF_EL2
    (3, 4, 0, 0, 5),   // VMPIDR_EL2
    (3, 4, 12, 11, 0), // ICH_HCR_EL2
    (3, 6, 1, 1, 0),   // SCR_EL3
];

/// One kind of attack: a row of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    VictimMemory,
    HypervisorImage,
    GicNotOwn,
    GicOwn,
    UnmappedIpa,
    BeyondPaRange,
    OwnMemory,
    Hvc,
    Smc,
    SysregImpDef,
    SysregEl2El3,
    SysregIdRead,
    SetWay,
    BranchForeign,
    BranchMisaligned,
    Udf,
    Brk,
}

impl Kind {
    const ALL: [Kind; 17] = [
        Kind::VictimMemory,
        Kind::HypervisorImage,
        Kind::GicNotOwn,
        Kind::GicOwn,
        Kind::UnmappedIpa,
        Kind::BeyondPaRange,
        Kind::OwnMemory,
        Kind::Hvc,
        Kind::Smc,
        Kind::SysregImpDef,
        Kind::SysregEl2El3,
        Kind::SysregIdRead,
        Kind::SetWay,
        Kind::BranchForeign,
        Kind::BranchMisaligned,
        Kind::Udf,
        Kind::Brk,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::VictimMemory => "victim memory",
            Kind::HypervisorImage => "hypervisor image",
            Kind::GicNotOwn => "GIC, not the VM's",
            Kind::GicOwn => "the VM's own vGIC",
            Kind::UnmappedIpa => "unmapped IPA",
            Kind::BeyondPaRange => "beyond PA range",
            Kind::OwnMemory => "own memory",
            Kind::Hvc => "HVC random ID",
            Kind::Smc => "SMC random ID",
            Kind::SysregImpDef => "IMP DEF sysreg",
            Kind::SysregEl2El3 => "EL2/EL3 sysreg",
            Kind::SysregIdRead => "ID space read",
            Kind::SetWay => "DC by set/way",
            Kind::BranchForeign => "wild branch",
            Kind::BranchMisaligned => "misaligned branch",
            Kind::Udf => "udf",
            Kind::Brk => "brk",
        }
    }
}

/// The answer one attack got, and what was wrong with it.
struct Verdict {
    /// A short answer, shared by attacks that got the same one (a row of the table).
    answer: String,
    /// Why the answer is wrong, with the details to replay it; `None` when right.
    wrong: Option<String>,
}

impl Verdict {
    fn right(answer: impl Into<String>) -> Self {
        Verdict {
            answer: answer.into(),
            wrong: None,
        }
    }

    /// `answer` plus the generic `problems` (which group in the table), wrong if any.
    fn checked(answer: String, problems: &[&str], detail: impl FnOnce() -> String) -> Self {
        if problems.is_empty() {
            return Verdict::right(answer);
        }
        Verdict {
            answer: format!("{answer} [{}]", problems.join(", ")),
            wrong: Some(detail()),
        }
    }
}

/// The short answer for an exception: its class, and the fault status for an abort.
fn answer_of(e: &SyncException) -> String {
    match e.class() {
        0x20 | EC_INSTRUCTION_ABORT_SAME_EL | 0x24 | EC_DATA_ABORT_SAME_EL => format!(
            "{} (EC {:#04x}, FSC {:#04x})",
            class_name(e.class()),
            e.class(),
            e.fault_status()
        ),
        ec => format!("{} (EC {ec:#04x})", class_name(ec)),
    }
}

/// Counts per kind: attacks, answers seen, wrong answers.
#[derive(Default)]
struct Row {
    count: u64,
    wrong: u64,
    answers: BTreeMap<String, u64>,
}

struct Tally {
    rows: BTreeMap<Kind, Row>,
    wrong: u64,
}

impl Tally {
    fn record(&mut self, kind: Kind, verdict: Verdict) {
        let row = self.rows.entry(kind).or_default();
        row.count += 1;
        *row.answers.entry(verdict.answer).or_default() += 1;
        if let Some(detail) = verdict.wrong {
            row.wrong += 1;
            self.wrong += 1;
            if self.wrong <= MAX_REPORTED {
                println!("hostile: WRONG answer to {}: {detail}", kind.name());
            }
        }
    }

    fn total(&self) -> u64 {
        self.rows.values().map(|r| r.count).sum()
    }

    fn print(&self) {
        println!(
            "hostile: {:<20} {:>6} {:>6}  answers seen",
            "attack", "count", "wrong"
        );
        for (kind, row) in &self.rows {
            let answers: Vec<String> = row
                .answers
                .iter()
                .map(|(answer, n)| format!("{answer} x{n}"))
                .collect();
            println!(
                "hostile: {:<20} {:>6} {:>6}  {}",
                kind.name(),
                row.count,
                row.wrong,
                answers.join("; ")
            );
        }
        println!(
            "hostile: {} attacks, {} wrong answers",
            self.total(),
            self.wrong
        );
    }
}

/// A `[start, end)` address range.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
}

impl Range {
    fn new(base: u64, size: u64) -> Self {
        Range {
            start: base,
            end: base.saturating_add(size),
        }
    }

    fn contains(&self, addr: u64, len: u64) -> bool {
        addr < self.end && addr.saturating_add(len) > self.start
    }

    fn random(&self, rng: &mut XorShift64Star, align: u64) -> u64 {
        rng.in_range(self.start..self.end) & !(align - 1)
    }
}

impl core::fmt::Display for Range {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// What the guest attacks, and what is its own.
struct World {
    victim: Range,
    hyp: Range,
    gic: Range,
    /// Memory, console and virtual GIC windows from the guest's DTB: the VM's own.
    own: Vec<Range>,
    /// The VM's own virtual GIC windows.
    own_gic: Vec<Range>,
    /// Free memory of this guest, outside its image and DTB, for the own-memory attack.
    scratch: Range,
    /// Addresses are below 2^pa_bits.
    pa_bits: u32,
}

impl World {
    fn is_own(&self, addr: u64, len: u64) -> bool {
        self.own.iter().any(|r| r.contains(addr, len))
    }

    /// A random address that is none of the VM's own, up to 2^pa_bits, spread over every
    /// scale (low device space as often as the top of the IPA space).
    fn unmapped(&self, rng: &mut XorShift64Star, align: u64) -> u64 {
        loop {
            let bits = rng.in_range(12..u64::from(self.pa_bits) + 1);
            let addr = rng.below(1 << bits) & !(align - 1);
            if !self.is_own(addr, 16) {
                return addr;
            }
        }
    }

    /// A random address in the host GIC's range that is not one of the VM's own windows;
    /// half of them in its first MiB, where the distributor, CPU interfaces and the first
    /// CPUs' redistributors are.
    fn gic_not_own(&self, rng: &mut XorShift64Star, align: u64) -> u64 {
        loop {
            let range = if rng.one_in(2) {
                Range {
                    start: self.gic.start,
                    end: self.gic.end.min(self.gic.start + (1 << 20)),
                }
            } else {
                self.gic
            };
            let addr = range.random(rng, align);
            if !self.is_own(addr, 16) {
                return addr;
            }
        }
    }
}

/// A load or store of a random form at `addr` that must be refused with a synchronous
/// External abort.
fn foreign_access(rng: &mut XorShift64Star, addr: u64) -> Verdict {
    let form = *rng.choose(&FORMS).unwrap_or(&Form::Load(8));
    let addr = addr & !(form.align() - 1);
    let value = rng.next_u64();
    // SAFETY: `addr` is not this guest's memory (the caller picks it so); the access must
    // fault, and `catch` skips it.
    let (done, caught) = catch(|| unsafe { ops::access(form, addr, value) });
    expect_abort(form, addr, done, caught, FSC_SYNC_EXTERNAL)
}

fn expect_abort(
    form: Form,
    addr: u64,
    done: Accessed,
    caught: Option<SyncException>,
    fsc: u8,
) -> Verdict {
    let Some(e) = caught else {
        return Verdict::checked("completed".to_string(), &["no abort"], || {
            format!(
                "{} at {addr:#x} completed (loaded {:#x})",
                form.name(),
                done.loaded
            )
        });
    };
    let mut problems = Vec::new();
    if e.class() != EC_DATA_ABORT_SAME_EL || e.fault_status() != fsc {
        problems.push("wrong exception");
    }
    if e.elr != done.pc {
        problems.push("ELR is not the access");
    }
    if e.iss() & ISS_FNV == 0 && !(addr..addr + 16).contains(&e.far) {
        problems.push("FAR is not the address");
    }
    if form != Form::AtomicAdd && (e.iss() & ISS_WNR != 0) != form.writes() {
        problems.push("WnR wrong");
    }
    if form.reads() && done.loaded != SENTINEL {
        problems.push("data loaded");
    }
    if done.base != addr {
        problems.push("base written back");
    }
    Verdict::checked(answer_of(&e), &problems, || {
        format!(
            "{} at {addr:#x}: {e}; loaded {:#x}, base {:#x}, access at {:#x}",
            form.name(),
            done.loaded,
            done.base,
            done.pc
        )
    })
}

/// An access to the VM's own virtual GIC: emulated, or refused with an abort while the
/// hypervisor has no virtual GIC; anything else is wrong.
fn own_gic_access(rng: &mut XorShift64Star, world: &World) -> Verdict {
    let Some(window) = rng.choose(&world.own_gic).copied() else {
        return Verdict::right("no vGIC window in the DTB");
    };
    let width = *rng.choose(&[1u8, 2, 4, 8]).unwrap_or(&4);
    let form = if rng.one_in(2) {
        Form::Load(width)
    } else {
        Form::Store(width)
    };
    let addr = window.random(rng, form.align());
    let value = rng.next_u64();
    // SAFETY: the window is the VM's virtual GIC, no memory of this guest: the hypervisor
    // emulates the access or refuses it with an abort, which `catch` skips.
    let (done, caught) = catch(|| unsafe { ops::access(form, addr, value) });
    match caught {
        None => Verdict::right("emulated"),
        Some(_) => expect_abort(form, addr, done, caught, FSC_SYNC_EXTERNAL),
    }
}

/// A store and a load back in the guest's own free memory: both must complete.
fn own_memory(rng: &mut XorShift64Star, world: &World) -> Verdict {
    let (store, load) = match rng.below(5) {
        0 => (Form::Store(1), Form::Load(1)),
        1 => (Form::Store(2), Form::Load(2)),
        2 => (Form::Store(4), Form::Load(4)),
        3 => (Form::Store(8), Form::Load(8)),
        _ => (Form::StorePair, Form::LoadPair),
    };
    let addr = world.scratch.random(rng, 8).min(world.scratch.end - 16);
    let value = rng.next_u64();
    let mask = match store {
        Form::Store(width) if width < 8 => (1u64 << (8 * u32::from(width))) - 1,
        _ => u64::MAX,
    };
    // SAFETY: `addr` and the next 15 bytes are in `scratch`, this guest's memory outside its
    // image (where every Rust object lives) and its DTB; aligned to 8.
    let ((_, back), caught) =
        catch(|| unsafe { (ops::access(store, addr, value), ops::access(load, addr, 0)) });
    match caught {
        Some(e) => Verdict::checked(answer_of(&e), &["own memory faulted"], || {
            format!("{} then {} at {addr:#x}: {e}", store.name(), load.name())
        }),
        None if back.loaded != value & mask => {
            Verdict::checked("completed".to_string(), &["read back differs"], || {
                format!(
                    "{} {:#x} at {addr:#x} read back {:#x}",
                    store.name(),
                    value & mask,
                    back.loaded
                )
            })
        }
        None => Verdict::right("completed, read back"),
    }
}

/// How a function ID is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// PSCI (functions 0x00-0x1f of the standard secure service): may be implemented.
    Psci,
    /// The Arm architecture service (SMCCC_VERSION, SMCCC_ARCH_*): may be implemented.
    Arch,
    /// Anything else: no Tandem VM has it, so NOT_SUPPORTED.
    Other,
}

fn service_of(id: u32) -> Service {
    let id = id & !ID_IGNORED_BITS;
    match id {
        0x8400_0000..=0x8400_001f => Service::Psci,
        0x8000_0000..=0x8000_ffff => Service::Arch,
        _ => Service::Other,
    }
}

/// Whether `id` is one of the [`STOPPING_FUNCTIONS`], however the hypervisor decodes it.
fn stops_caller(id: u32) -> bool {
    STOPPING_FUNCTIONS.contains(&(id & !ID_IGNORED_BITS))
}

/// A random function ID that does not stop the caller: a quarter fully random, the rest in
/// PSCI, the architecture service and the other owners' fast-call ranges.
fn random_function_id(rng: &mut XorShift64Star) -> u32 {
    loop {
        let convention = if rng.one_in(2) { 1 << 30 } else { 0 };
        let id = match rng.below(4) {
            0 => rng.next_u64() as u32,
            1 => 0x8400_0000 | convention | rng.below(0x20) as u32,
            2 => 0x8000_0000 | convention | (rng.next_u64() as u32 & 0xffff),
            _ => {
                let owner = rng.below(64) as u32;
                0x8000_0000 | convention | (owner << 24) | (rng.below(0x100) as u32)
            }
        };
        if !stops_caller(id) {
            return id;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Conduit {
    Hvc,
    Smc,
}

fn smccc_call(conduit: Conduit, id: u32, args: [u64; 17]) -> [u64; 18] {
    match conduit {
        Conduit::Hvc => smccc::hvc64(id, args),
        Conduit::Smc => smccc::smc64(id, args),
    }
}

/// A call with a random function ID and random arguments: it must return, preserve X4-X17
/// and answer NOT_SUPPORTED where nothing implements the ID.
fn random_call(rng: &mut XorShift64Star, conduit: Conduit) -> Verdict {
    let id = random_function_id(rng);
    let mut args = [0u64; 17];
    for arg in &mut args {
        *arg = rng.next_u64();
    }
    let service = service_of(id);
    let ((features, out), caught) = catch(|| {
        let features = match service {
            Service::Psci => Some(smccc_call(conduit, PSCI_FEATURES, [u64::from(id); 17])[0]),
            Service::Arch => Some(smccc_call(conduit, SMCCC_ARCH_FEATURES, [u64::from(id); 17])[0]),
            Service::Other => None,
        };
        (features, smccc_call(conduit, id, args))
    });
    if let Some(e) = caught {
        return Verdict::checked(answer_of(&e), &["did not return"], || {
            format!("function {id:#x}: {e}")
        });
    }
    let mut problems = Vec::new();
    if out[4..] != args[3..] {
        problems.push("X4-X17 not preserved");
    }
    let unsupported = features == Some(NOT_SUPPORTED) || service == Service::Other;
    if unsupported && out[0] != NOT_SUPPORTED {
        problems.push("not NOT_SUPPORTED");
    }
    let answer = match (out[0] == NOT_SUPPORTED, service) {
        (true, _) => "NOT_SUPPORTED".to_string(),
        (false, Service::Psci) => "answered (a PSCI function)".to_string(),
        (false, Service::Arch) => "answered (an architecture call)".to_string(),
        (false, Service::Other) => format!("x0 {:#x}", out[0]),
    };
    Verdict::checked(answer, &problems, || {
        format!(
            "function {id:#x} (features {features:#x?}): x0..x3 {:#x?}, x4..x17 {}",
            &out[..4],
            if out[4..] == args[3..] {
                "preserved"
            } else {
                "changed"
            }
        )
    })
}

/// Runs `insn`, which must be UNDEFINED (EC 0x00 at the instruction, x0 untouched).
fn expect_undefined(insn: u32, x1: u64, what: impl FnOnce() -> String) -> Verdict {
    // SAFETY: `insn` is an instruction the architecture makes UNDEFINED at EL1 (the
    // callers' encodings); should it complete, it only writes x0 or a system register this
    // guest does not rely on.
    let (ran, caught) = catch(|| unsafe { ops::run_instruction(insn, x1) });
    let Some(e) = caught else {
        return Verdict::checked("completed".to_string(), &["not UNDEFINED"], || {
            format!("{} ({insn:#010x}) completed, x0 {:#x}", what(), ran.x0)
        });
    };
    let mut problems = Vec::new();
    if e.class() != EC_UNKNOWN {
        problems.push("wrong exception");
    }
    if e.elr != ran.pc {
        problems.push("ELR is not the instruction");
    }
    if ran.x0 != SENTINEL {
        problems.push("x0 written");
    }
    Verdict::checked(answer_of(&e), &problems, || {
        format!("{} ({insn:#010x}): {e}, x0 {:#x}", what(), ran.x0)
    })
}

/// An `mrs` or `msr` of the system register `reg` (op0, op1, CRn, CRm, op2).
fn sysreg_access(rng: &mut XorShift64Star, reg: (u32, u32, u32, u32, u32)) -> Verdict {
    let (op0, op1, crn, crm, op2) = reg;
    let write = rng.one_in(2);
    let insn = if write {
        ops::msr(op0, op1, crn, crm, op2)
    } else {
        ops::mrs(op0, op1, crn, crm, op2)
    };
    let value = rng.next_u64();
    expect_undefined(insn, value, || {
        let name = format!("S{op0}_{op1}_C{crn}_C{crm}_{op2}");
        if write {
            format!("msr {name}, {value:#x}")
        } else {
            format!("mrs {name}")
        }
    })
}

/// `mrs` of a random encoding of the ID register space (op0 3, op1 0, CRn 0, CRm 0-7):
/// allocated or not, the read completes with the same value each time, or is UNDEFINED,
/// or (FEAT_IDST) traps to EL1 as a system-register access (EC 0x18) at the instruction.
/// Nothing else: no abort, no hang, no value that changes between two reads.
fn id_space_read(rng: &mut XorShift64Star) -> Verdict {
    const EC_SYSREG: u8 = 0x18;
    let (crm, op2) = (rng.below(8) as u32, rng.below(8) as u32);
    let insn = ops::mrs(3, 0, 0, crm, op2);
    let name = move || format!("mrs S3_0_C0_C{crm}_{op2} ({insn:#010x})");
    // SAFETY: a read of the ID space writes only x0, or takes an exception at it.
    let (first, caught) = catch(|| unsafe { ops::run_instruction(insn, 0) });
    match caught {
        None => {
            // SAFETY: as above.
            let (again, caught) = catch(|| unsafe { ops::run_instruction(insn, 0) });
            let mut problems = Vec::new();
            if caught.is_some() {
                problems.push("the second read faulted");
            } else if again.x0 != first.x0 {
                problems.push("the value changed between two reads");
            }
            Verdict::checked("a value, the same twice".to_string(), &problems, || {
                format!("{}: {:#x} then {:#x}", name(), first.x0, again.x0)
            })
        }
        Some(e) => {
            let mut problems = Vec::new();
            if e.class() != EC_UNKNOWN && e.class() != EC_SYSREG {
                problems.push("wrong exception");
            }
            if e.elr != first.pc {
                problems.push("ELR is not the instruction");
            }
            Verdict::checked(answer_of(&e), &problems, || format!("{}: {e}", name()))
        }
    }
}

fn random_impdef(rng: &mut XorShift64Star) -> (u32, u32, u32, u32, u32) {
    if rng.one_in(4) {
        return *rng.choose(&NAMED_IMPDEF).unwrap_or(&NAMED_IMPDEF[0]);
    }
    let crn = if rng.one_in(2) { 11 } else { 15 };
    (
        3,
        rng.below(8) as u32,
        crn,
        rng.below(16) as u32,
        rng.below(8) as u32,
    )
}

fn random_el2_el3(rng: &mut XorShift64Star) -> (u32, u32, u32, u32, u32) {
    if rng.one_in(2) {
        return *rng.choose(&NAMED_EL2_EL3).unwrap_or(&NAMED_EL2_EL3[0]);
    }
    let op1 = if rng.one_in(4) { 6 } else { 4 };
    (
        3,
        op1,
        rng.below(16) as u32,
        rng.below(16) as u32,
        rng.below(8) as u32,
    )
}

/// `dc isw`/`csw`/`cisw` with a random set/way: trapped and completed without effect.
fn set_way(rng: &mut XorShift64Star) -> Verdict {
    let crm = *rng.choose(&[6u32, 10, 14]).unwrap_or(&14);
    let insn = ops::dc_set_way(crm);
    let operand = rng.next_u64();
    // SAFETY: maintenance by set/way traps to the hypervisor (HCR_EL2.TSW), which completes
    // it without effect; were it to run, it would at most write back or discard cache
    // lines of memory this guest reaches with the MMU off, which is Device memory and never
    // cached.
    let (_, caught) = catch(|| unsafe { ops::run_instruction(insn, operand) });
    match caught {
        None => Verdict::right("completed"),
        Some(e) => Verdict::checked(answer_of(&e), &["faulted"], || {
            format!("{insn:#010x} with {operand:#x}: {e}")
        }),
    }
}

/// A branch to `target`, which must take an instruction abort there (or, misaligned, a PC
/// alignment fault).
fn wild_branch(target: u64, class: u8) -> Verdict {
    // SAFETY: `target` is not memory of this guest (the callers pick it so), or misaligned,
    // so nothing runs there: the fetch faults and `call_wild` returns.
    let caught = unsafe { call_wild(target) };
    let Some(e) = caught else {
        return Verdict::checked("returned".to_string(), &["no fault"], || {
            format!("branch to {target:#x} returned")
        });
    };
    let mut problems = Vec::new();
    let fsc_ok = class == EC_PC_ALIGNMENT || e.fault_status() == FSC_SYNC_EXTERNAL;
    if e.class() != class || !fsc_ok {
        problems.push("wrong exception");
    }
    if e.elr != target {
        problems.push("ELR is not the target");
    }
    if class == EC_INSTRUCTION_ABORT_SAME_EL && e.iss() & ISS_FNV == 0 && e.far != target {
        problems.push("FAR is not the target");
    }
    Verdict::checked(answer_of(&e), &problems, || {
        format!("branch to {target:#x}: {e}")
    })
}

fn brk(rng: &mut XorShift64Star) -> Verdict {
    let imm = rng.next_u64() as u16;
    // SAFETY: `brk` always raises a Breakpoint exception, which `catch` skips.
    let (ran, caught) = catch(|| unsafe { ops::run_instruction(ops::brk(imm), 0) });
    let Some(e) = caught else {
        return Verdict::checked("completed".to_string(), &["no exception"], || {
            format!("brk #{imm:#x} completed")
        });
    };
    let mut problems = Vec::new();
    if e.class() != EC_BRK || e.iss() & 0xffff != u32::from(imm) {
        problems.push("wrong exception or comment");
    }
    if e.elr != ran.pc {
        problems.push("ELR is not the instruction");
    }
    Verdict::checked(answer_of(&e), &problems, || format!("brk #{imm:#x}: {e}"))
}

/// The physical address size ID_AA64MMFR0_EL1.PARange reports (Arm ARM D24.2.64).
fn pa_bits() -> u32 {
    match ID_AA64MMFR0_EL1.get() & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

fn range_arg(bootargs: &str, key: &str) -> Result<Range, Failure> {
    let text = args::value(bootargs, key)
        .ok_or_else(|| format!("no {key}=<base>,<size> on the command line {bootargs:?}"))?;
    let (base, size) =
        args::parse_range(text).ok_or_else(|| format!("bad {key}={text}: want <base>,<size>"))?;
    Ok(Range::new(base, size))
}

fn number_arg(bootargs: &str, key: &str, default: u64) -> Result<u64, Failure> {
    match args::value(bootargs, key) {
        None => Ok(default),
        Some(text) => {
            args::parse_u64(text).ok_or_else(|| format!("bad {key}={text}: want a number").into())
        }
    }
}

/// How many attacks to make and when.
struct Plan {
    seed: u64,
    rounds: u64,
    duration_ms: u64,
}

fn world(boot: &Boot) -> Result<(World, Plan), Failure> {
    let board = boot
        .platform()
        .map_err(|e| format!("cannot read the device tree: {e}"))?;
    let bootargs = board.bootargs.as_deref().unwrap_or_default();
    let seed = number_arg(bootargs, "seed", DEFAULT_SEED)?;
    let rounds = number_arg(bootargs, "rounds", DEFAULT_ROUNDS)?;
    let duration_ms = number_arg(bootargs, "duration_ms", 0)?;

    let mut own: Vec<Range> = board
        .memory
        .iter()
        .map(|m| Range::new(m.base, m.size))
        .collect();
    if let Some(uart) = &board.console {
        own.push(Range::new(uart.base & !(PAGE - 1), uart.size.max(PAGE)));
    }
    let own_gic: Vec<Range> = match &board.gic {
        platform::Gic::V2 { gicd, gicc, .. } => [*gicd, *gicc]
            .iter()
            .map(|r| Range::new(r.base, r.size))
            .collect(),
        platform::Gic::V3 {
            gicd,
            redistributors,
            ..
        } => core::iter::once(gicd)
            .chain(redistributors)
            .map(|r| Range::new(r.base, r.size))
            .collect(),
    };
    own.extend(&own_gic);

    let image = Range {
        start: boot.load_address() & !(PAGE - 1),
        end: boot.image_end().next_multiple_of(PAGE),
    };
    let dtb = boot.dtb().as_ptr() as u64 & !(PAGE - 1);
    let bank = board
        .memory
        .iter()
        .find(|m| m.contains(boot.load_address()))
        .ok_or("the image is in none of the memory banks")?;
    let scratch_end = if dtb > image.end && bank.contains(dtb) {
        dtb
    } else {
        bank.base + bank.size
    };
    if scratch_end < image.end + PAGE {
        return Err("no free memory after the image for the own-memory attack".into());
    }
    let scratch = Range {
        start: image.end,
        end: scratch_end,
    };

    let world = World {
        victim: range_arg(bootargs, "victim")?,
        hyp: range_arg(bootargs, "hyp")?,
        gic: range_arg(bootargs, "gic")?,
        own,
        own_gic,
        scratch,
        pa_bits: pa_bits(),
    };
    // The GIC range holds the VM's own virtual GIC windows, which are left out when it is
    // attacked; the other two must be wholly foreign.
    for (name, range) in [("victim", world.victim), ("hyp", world.hyp)] {
        if world.is_own(range.start, range.end - range.start) {
            return Err(format!("{name}={range} overlaps this VM's own memory or devices").into());
        }
    }
    let gic = world.gic;
    if (gic.start..gic.end)
        .step_by(PAGE as usize)
        .all(|page| world.is_own(page, PAGE))
    {
        return Err(format!("gic={gic} has no page outside this VM's own windows").into());
    }
    Ok((
        world,
        Plan {
            seed,
            rounds,
            duration_ms,
        },
    ))
}

/// Makes one attack of `kind`.
fn attack(kind: Kind, rng: &mut XorShift64Star, world: &World) -> Verdict {
    match kind {
        Kind::VictimMemory => {
            let addr = world.victim.random(rng, 8);
            foreign_access(rng, addr)
        }
        Kind::HypervisorImage => {
            let addr = world.hyp.random(rng, 8);
            foreign_access(rng, addr)
        }
        Kind::GicNotOwn => {
            let addr = world.gic_not_own(rng, 8);
            foreign_access(rng, addr)
        }
        Kind::GicOwn => own_gic_access(rng, world),
        Kind::UnmappedIpa => {
            let addr = world.unmapped(rng, 8);
            foreign_access(rng, addr)
        }
        Kind::BeyondPaRange => {
            let form = *rng.choose(&FORMS).unwrap_or(&Form::Load(8));
            let addr = rng.in_range((1 << world.pa_bits)..(1 << 56)) & !7;
            let value = rng.next_u64();
            // SAFETY: `addr` is beyond the physical address range, so the access faults at
            // this guest's own stage 1, and `catch` skips it.
            let (done, caught) = catch(|| unsafe { ops::access(form, addr, value) });
            expect_abort(form, addr, done, caught, FSC_ADDRESS_SIZE_L0)
        }
        Kind::OwnMemory => own_memory(rng, world),
        Kind::Hvc => random_call(rng, Conduit::Hvc),
        Kind::Smc => random_call(rng, Conduit::Smc),
        Kind::SysregImpDef => {
            let reg = random_impdef(rng);
            sysreg_access(rng, reg)
        }
        Kind::SysregEl2El3 => {
            let reg = random_el2_el3(rng);
            sysreg_access(rng, reg)
        }
        Kind::SysregIdRead => id_space_read(rng),
        Kind::SetWay => set_way(rng),
        Kind::BranchForeign => {
            let target = match rng.below(3) {
                0 => world.victim.random(rng, 4),
                1 => world.hyp.random(rng, 4),
                _ => world.unmapped(rng, 4),
            };
            wild_branch(target, EC_INSTRUCTION_ABORT_SAME_EL)
        }
        Kind::BranchMisaligned => {
            let target = (attack as *const () as u64) | rng.in_range(1..4);
            wild_branch(target, EC_PC_ALIGNMENT)
        }
        Kind::Udf => {
            let imm = rng.next_u64() as u16;
            expect_undefined(ops::udf(imm), 0, || format!("udf #{imm:#x}"))
        }
        Kind::Brk => brk(rng),
    }
}

struct Hostile;

impl Guest for Hostile {
    const NAME: &'static str = "hostile";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let (world, plan) = world(boot)?;
        let Plan {
            seed,
            rounds,
            duration_ms,
        } = plan;
        println!(
            "hostile: seed {seed} (replay with seed={seed}), {rounds} rounds over {duration_ms} ms"
        );
        println!(
            "hostile: targets: victim {}, hypervisor {}, GIC {}",
            world.victim, world.hyp, world.gic
        );
        println!(
            "hostile: own free memory {}, {}-bit physical addresses",
            world.scratch, world.pa_bits
        );
        let own: Vec<String> = world.own.iter().map(|r| r.to_string()).collect();
        println!("hostile: own (not attacked as foreign): {}", own.join(" "));

        let mut rng = XorShift64Star::new(seed);
        let mut tally = Tally {
            rows: BTreeMap::new(),
            wrong: 0,
        };
        let every = (rounds / PROGRESS_LINES).max(1);
        let start = now_ns();
        for round in 1..=rounds {
            for kind in Kind::ALL {
                let verdict = attack(kind, &mut rng, &world);
                tally.record(kind, verdict);
            }
            // Pace: round r ends no earlier than r / rounds of the duration.
            let offset =
                u128::from(duration_ms) * 1_000_000 * u128::from(round) / u128::from(rounds);
            let due = start.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX));
            while now_ns() < due {
                core::hint::spin_loop();
            }
            if round % every == 0 || round == rounds {
                println!(
                    "hostile: round {round}/{rounds}: {} attacks, {} wrong answers",
                    tally.total(),
                    tally.wrong
                );
            }
        }
        tally.print();
        if tally.wrong == 0 {
            Ok(())
        } else {
            Err(format!(
                "{} of {} attacks got a wrong answer (seed {seed})",
                tally.wrong,
                tally.total()
            )
            .into())
        }
    }
}

tandem_guest_rt::guest!(Hostile);
