//! The hostile guest's single instructions: memory accesses in every form the attacks use,
//! and one-instruction code run from a buffer, so an attack can use any encoding (a random
//! system register, a random `udf`/`brk` immediate) that `asm!` would need as a constant.
//!
//! Each function runs exactly the instruction under test where a fault can be taken, so a
//! [`tandem_guest_rt::catch`] around it skips just that instruction, and it reports the
//! instruction's address so the caller can check ELR_EL1.

use core::arch::asm;
use core::cell::UnsafeCell;

/// What a load leaves in its destination register when it is skipped after a fault: a load
/// that returns it did not hand the guest any data.
pub const SENTINEL: u64 = 0x5e57_1ae1_dead_beef;

/// How a memory access is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `ldrb`/`ldrh`/`ldr w`/`ldr x` of 1, 2, 4 or 8 bytes (a syndrome with ISV = 1).
    Load(u8),
    /// `strb`/`strh`/`str w`/`str x`.
    Store(u8),
    /// `ldp` of two doublewords (no instruction syndrome: ISV = 0).
    LoadPair,
    /// `stp` of two doublewords.
    StorePair,
    /// `ldr x, [base], #8`: post-indexed, the base must not move when the load aborts.
    LoadPostIndex,
    /// `ldxr`: load-exclusive.
    LoadExclusive,
    /// `stlr`: store-release.
    StoreRelease,
    /// `ldadd`: an atomic read-modify-write (FEAT_LSE).
    AtomicAdd,
}

impl Form {
    /// Whether the access writes memory.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Form::Store(_) | Form::StorePair | Form::StoreRelease | Form::AtomicAdd
        )
    }

    /// Whether the access reads memory into a register.
    pub fn reads(self) -> bool {
        !matches!(self, Form::Store(_) | Form::StorePair | Form::StoreRelease)
    }

    /// Bytes the address must be aligned to (Device memory faults unaligned accesses).
    pub fn align(self) -> u64 {
        match self {
            Form::Load(width) | Form::Store(width) => u64::from(width),
            _ => 8,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Form::Load(1) => "ldrb",
            Form::Load(2) => "ldrh",
            Form::Load(4) => "ldr w",
            Form::Load(_) => "ldr x",
            Form::Store(1) => "strb",
            Form::Store(2) => "strh",
            Form::Store(4) => "str w",
            Form::Store(_) => "str x",
            Form::LoadPair => "ldp",
            Form::StorePair => "stp",
            Form::LoadPostIndex => "ldr post-index",
            Form::LoadExclusive => "ldxr",
            Form::StoreRelease => "stlr",
            Form::AtomicAdd => "ldadd",
        }
    }
}

/// Every form, for random choice.
pub const FORMS: [Form; 14] = [
    Form::Load(1),
    Form::Load(2),
    Form::Load(4),
    Form::Load(8),
    Form::Store(1),
    Form::Store(2),
    Form::Store(4),
    Form::Store(8),
    Form::LoadPair,
    Form::StorePair,
    Form::LoadPostIndex,
    Form::LoadExclusive,
    Form::StoreRelease,
    Form::AtomicAdd,
];

/// What an access did.
#[derive(Debug, Clone, Copy)]
pub struct Accessed {
    /// The (first) value loaded, or [`SENTINEL`] if no load completed.
    pub loaded: u64,
    /// The base register afterwards (only post-indexing moves it).
    pub base: u64,
    /// The address of the access instruction.
    pub pc: u64,
}

/// Makes one access of `form` at `addr`, storing `value` (twice for a pair).
///
/// # Safety
///
/// `addr` must be aligned to [`Form::align`] and must either be memory of this guest that no
/// Rust object uses, or an address whose access is expected to fault inside a
/// [`tandem_guest_rt::catch`] (the faulting instruction is then skipped).
pub unsafe fn access(form: Form, addr: u64, value: u64) -> Accessed {
    /// `asm!` for the access instruction `$insn`, at label 2, its address put in `$pc`.
    macro_rules! one_access {
        ($pc:ident, $insn:literal, $($operands:tt)*) => {
            asm!(
                "adr {pc}, 2f",
                concat!("2: ", $insn),
                pc = out(reg) $pc,
                $($operands)*
                options(nostack)
            )
        };
    }
    let mut loaded = SENTINEL;
    let mut base = addr;
    let pc: u64;
    // SAFETY: each arm makes one access at `addr`, as the caller allows; `adr` records the
    // address of that instruction. Registers not named are untouched.
    unsafe {
        match form {
            Form::Load(1) => {
                one_access!(pc, "ldrb {v:w}, [{a}]", v = inout(reg) loaded, a = in(reg) addr,)
            }
            Form::Load(2) => {
                one_access!(pc, "ldrh {v:w}, [{a}]", v = inout(reg) loaded, a = in(reg) addr,)
            }
            Form::Load(4) => {
                one_access!(pc, "ldr {v:w}, [{a}]", v = inout(reg) loaded, a = in(reg) addr,)
            }
            Form::Load(_) => {
                one_access!(pc, "ldr {v}, [{a}]", v = inout(reg) loaded, a = in(reg) addr,)
            }
            Form::Store(1) => {
                one_access!(pc, "strb {v:w}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::Store(2) => {
                one_access!(pc, "strh {v:w}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::Store(4) => {
                one_access!(pc, "str {v:w}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::Store(_) => {
                one_access!(pc, "str {v}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::LoadPair => {
                let mut second = SENTINEL;
                one_access!(pc, "ldp {v}, {w}, [{a}]", v = inout(reg) loaded, w = inout(reg) second, a = in(reg) addr,);
                // Either register changed means data came back.
                if loaded == SENTINEL {
                    loaded = second;
                }
            }
            Form::StorePair => {
                one_access!(pc, "stp {v}, {v}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::LoadPostIndex => {
                one_access!(pc, "ldr {v}, [{a}], #8", v = inout(reg) loaded, a = inout(reg) base,)
            }
            Form::LoadExclusive => {
                one_access!(pc, "ldxr {v}, [{a}]", v = inout(reg) loaded, a = in(reg) addr,);
                asm!("clrex", options(nostack));
            }
            Form::StoreRelease => {
                one_access!(pc, "stlr {v}, [{a}]", v = in(reg) value, a = in(reg) addr,)
            }
            Form::AtomicAdd => asm!(
                ".arch_extension lse",
                "adr {pc}, 2f",
                "2: ldadd {v}, {old}, [{a}]",
                pc = out(reg) pc,
                v = in(reg) value,
                old = inout(reg) loaded,
                a = in(reg) addr,
                options(nostack)
            ),
        }
    }
    Accessed { loaded, base, pc }
}

/// `ret`.
const RET: u32 = 0xd65f_03c0;

/// The buffer one-instruction code runs from: the instruction, then `ret`.
#[repr(C, align(64))]
struct CodeBuffer(UnsafeCell<[u32; 2]>);

// SAFETY: only `run_instruction` touches the buffer, and the hostile guest runs on one vCPU.
unsafe impl Sync for CodeBuffer {}

static CODE: CodeBuffer = CodeBuffer(UnsafeCell::new([0; 2]));

/// What a one-instruction run left.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// x0 afterwards (an `mrs` under test writes x0; it holds [`SENTINEL`] before).
    pub x0: u64,
    /// The address the instruction ran at.
    pub pc: u64,
}

/// Runs the single instruction `insn` with x0 = [`SENTINEL`] and x1 = `x1`, then returns.
///
/// # Safety
///
/// `insn` must be an instruction that either faults (inside a [`tandem_guest_rt::catch`],
/// which skips it to the `ret` behind it) or completes without branching and without
/// changing anything but x0 and x1 and state the caller accepts to lose: for example a
/// system register access that must be UNDEFINED, `udf`, `brk`, or trapped cache
/// maintenance by set/way.
pub unsafe fn run_instruction(insn: u32, x1: u64) -> Ran {
    let code = CODE.0.get().cast::<u32>();
    // SAFETY: the buffer is two words of this image's .bss that only this function uses.
    unsafe {
        code.write_volatile(insn);
        code.add(1).write_volatile(RET);
    }
    let pc = code as u64;
    let mut x0 = SENTINEL;
    // SAFETY: the stores above are made visible to instruction fetch (the data side is
    // Device memory with the MMU off, so nothing is cached there; the instruction side is
    // invalidated); then the buffer is called like a function whose only effects are the
    // instruction's, as the caller allows. Every caller-saved register is declared
    // clobbered, since an exception handler may run in between.
    unsafe {
        asm!("dsb ish", "ic iallu", "dsb ish", "isb", options(nostack));
        asm!("blr {code}", code = in(reg) pc, inout("x0") x0, in("x1") x1, clobber_abi("C"));
    }
    Ran { x0, pc }
}

/// `mrs x0, S<op0>_<op1>_C<crn>_C<crm>_<op2>` (Arm ARM C6.2.242).
pub fn mrs(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    0xd530_0000 | sysreg_fields(op0, op1, crn, crm, op2)
}

/// `msr S<op0>_<op1>_C<crn>_C<crm>_<op2>, x1` (Arm ARM C6.2.245).
pub fn msr(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    0xd510_0000 | sysreg_fields(op0, op1, crn, crm, op2) | 1
}

fn sysreg_fields(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    ((op0 & 1) << 19)
        | ((op1 & 7) << 16)
        | ((crn & 0xf) << 12)
        | ((crm & 0xf) << 8)
        | ((op2 & 7) << 5)
}

/// `dc isw`, `dc csw` or `dc cisw` (CRm 6, 10, 14) with the set/way in x1.
pub fn dc_set_way(crm: u32) -> u32 {
    0xd508_7041 | ((crm & 0xf) << 8)
}

/// `udf #imm`.
pub fn udf(imm: u16) -> u32 {
    u32::from(imm)
}

/// `brk #imm`.
pub fn brk(imm: u16) -> u32 {
    0xd420_0000 | (u32::from(imm) << 5)
}
