//! EL1 exception vectors and the hooks guests use to expect faults.
//!
//! Every vector saves the interrupted registers in a [`Frame`] on the current stack and calls
//! [`el1_exception`]. A synchronous exception is offered, in order, to a [`catch`] running on
//! this vCPU (which records it and skips the faulting instruction), then to the handler
//! installed with [`set_sync_handler`], and otherwise fails the test with the exception
//! class. [`call_wild`] branches to an address that must not run and comes back from the
//! instruction abort or PC alignment fault the branch takes there. IRQs go to the handler installed with [`set_irq_handler`]; any other exception
//! fails the test.

use core::arch::{asm, global_asm};
use core::fmt;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use crate::entry::MAX_CPUS;

/// The registers of the interrupted context, as the vector code saved them.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// x0 to x30.
    pub regs: [u64; 31],
    _pad: u64,
    /// ELR_EL1: where execution resumes.
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_EL1: the syndrome (meaningful for synchronous exceptions and SErrors).
    pub esr: u64,
    /// FAR_EL1: the faulting address (meaningful for aborts and watchpoints).
    pub far: u64,
}

const _: () = assert!(size_of::<Frame>().is_multiple_of(16));

/// A synchronous exception taken at EL1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncException {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1: the faulting instruction.
    pub elr: u64,
}

impl SyncException {
    /// ESR_EL1.EC, the exception class.
    pub fn class(&self) -> u8 {
        ((self.esr >> 26) & 0x3f) as u8
    }

    /// ESR_EL1.ISS, the instruction-specific syndrome.
    pub fn iss(&self) -> u32 {
        (self.esr & 0x1ff_ffff) as u32
    }

    /// Whether this is a data abort taken without a change in exception level (EC 0x25).
    pub fn is_data_abort(&self) -> bool {
        self.class() == EC_DATA_ABORT_SAME_EL
    }

    /// For a data abort: the fault status code, ISS.DFSC (bits 5:0).
    pub fn fault_status(&self) -> u8 {
        (self.esr & 0x3f) as u8
    }
}

impl fmt::Display for SyncException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EC {:#04x} ({}), ESR {:#x}, FAR {:#x}, ELR {:#x}",
            self.class(),
            class_name(self.class()),
            self.esr,
            self.far,
            self.elr
        )
    }
}

const EC_INSTRUCTION_ABORT_SAME_EL: u8 = 0x21;
const EC_PC_ALIGNMENT: u8 = 0x22;
const EC_DATA_ABORT_SAME_EL: u8 = 0x25;

/// A name for an ESR_ELx.EC value (Arm ARM D24.2.40, ESR_EL1).
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE trapped",
        0x07 => "SVE/SIMD/FP access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "MSR/MRS/system instruction trapped",
        0x20 => "instruction abort from a lower EL",
        EC_INSTRUCTION_ABORT_SAME_EL => "instruction abort",
        EC_PC_ALIGNMENT => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        EC_DATA_ABORT_SAME_EL => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// What a synchronous-exception handler decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Resume after the faulting instruction (ELR_EL1 + 4).
    Skip,
    /// Resume at the faulting instruction again (the handler fixed the cause).
    Retry,
    /// Not expected: fail the test.
    Unhandled,
}

/// A guest's handler for synchronous exceptions at EL1.
pub type SyncHandler = fn(&SyncException) -> Resolution;
/// A guest's IRQ handler; it acknowledges the interrupt at its controller itself.
pub type IrqHandler = fn();

static SYNC_HANDLER: Mutex<Option<SyncHandler>> = Mutex::new(None);
static IRQ_HANDLER: Mutex<Option<IrqHandler>> = Mutex::new(None);

/// Per vCPU: a [`catch`] is running.
static CATCHING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per vCPU: the first exception the running [`catch`] saw.
static CAUGHT: [Mutex<Option<SyncException>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];

/// Installs (or with `None` removes) the handler for synchronous exceptions on all vCPUs.
pub fn set_sync_handler(handler: Option<SyncHandler>) {
    *SYNC_HANDLER.lock() = handler;
}

/// Installs (or with `None` removes) the IRQ handler on all vCPUs. Interrupts stay masked
/// until the guest unmasks them (DAIF.I); install the handler with them masked. A handler
/// may unmask them to be preempted by a higher-priority interrupt (each nested IRQ gets
/// its own frame), but must mask them again before it returns: the vector code restores
/// ELR_EL1 and SPSR_EL1 from the frame, which an IRQ taken in between would overwrite.
pub fn set_irq_handler(handler: Option<IrqHandler>) {
    *IRQ_HANDLER.lock() = handler;
}

/// Runs `f`, expecting it may fault: the first synchronous exception `f` takes on this
/// vCPU is recorded and its instruction skipped, and every later one skipped too. Returns
/// what `f` returned and the first exception, if any.
///
/// Meant for single faulting accesses (`read_volatile` of an address that must abort): a
/// skipped load leaves its destination register as it was, so `f`'s value is meaningless
/// when an exception is returned. Instruction aborts cannot be skipped and fail the test.
pub fn catch<R>(f: impl FnOnce() -> R) -> (R, Option<SyncException>) {
    let cpu = crate::cpu_index();
    *CAUGHT[cpu].lock() = None;
    CATCHING[cpu].store(true, Ordering::SeqCst);
    let value = f();
    CATCHING[cpu].store(false, Ordering::SeqCst);
    let caught = CAUGHT[cpu].lock().take();
    (value, caught)
}

/// Per vCPU: a [`call_wild`] is running.
static CALLING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Branches with link (`blr`) to `target`, expecting the fetch there to fault, and returns
/// the exception it took: an instruction abort (EC 0x21) or a PC alignment fault (EC 0x22)
/// taken while this runs resumes at the return address in x30, as if the code at `target`
/// had returned at once. `None` when the code at `target` ran and returned by itself.
///
/// Meant for wild branches: to an address with no memory, another VM's or the hypervisor's
/// memory, or a misaligned address. Any other exception fails the test as usual.
///
/// # Safety
///
/// Whatever is at `target` runs with this vCPU's privileges if it can be fetched: the
/// caller must make sure `target` is not memory of this guest, or is code that returns
/// following the C calling convention.
pub unsafe fn call_wild(target: u64) -> Option<SyncException> {
    let cpu = crate::cpu_index();
    *CAUGHT[cpu].lock() = None;
    CALLING[cpu].store(true, Ordering::SeqCst);
    // SAFETY: the caller vouches for `target` (above). If its fetch faults, `synchronous`
    // resumes at x30, the return address `blr` wrote, with every register the C calling
    // convention lets a callee change declared clobbered.
    unsafe {
        asm!("blr {target}", target = in(reg) target, clobber_abi("C"));
    }
    CALLING[cpu].store(false, Ordering::SeqCst);
    let caught = CAUGHT[cpu].lock().take();
    caught
}

/// The vector slots, in the order of the vector table (Arm ARM D1.3.1).
const SLOT_NAMES: [&str; 16] = [
    "synchronous, current EL, SP_EL0",
    "IRQ, current EL, SP_EL0",
    "FIQ, current EL, SP_EL0",
    "SError, current EL, SP_EL0",
    "synchronous, current EL",
    "IRQ, current EL",
    "FIQ, current EL",
    "SError, current EL",
    "synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];
const SLOT_SYNC: u64 = 4;
const SLOT_IRQ: u64 = 5;

/// Called by the vectors with the slot number and the saved frame.
extern "C" fn el1_exception(slot: u64, frame: &mut Frame) {
    match slot {
        SLOT_SYNC => synchronous(frame),
        SLOT_IRQ => {
            // Copied out so the handler runs without the lock held.
            let handler = *IRQ_HANDLER.lock();
            match handler {
                Some(handler) => handler(),
                None => crate::fail(format_args!("unexpected IRQ (no handler installed)")),
            }
        }
        _ => {
            let name = SLOT_NAMES.get(slot as usize).copied().unwrap_or("?");
            crate::fail(format_args!(
                "unexpected exception: {name}, ESR {:#x}, ELR {:#x}",
                frame.esr, frame.elr
            ))
        }
    }
}

fn synchronous(frame: &mut Frame) {
    let exception = SyncException {
        esr: frame.esr,
        far: frame.far,
        elr: frame.elr,
    };
    let skippable = !matches!(
        exception.class(),
        EC_INSTRUCTION_ABORT_SAME_EL | EC_PC_ALIGNMENT
    );
    let cpu = crate::cpu_index();
    if skippable && CATCHING[cpu].load(Ordering::SeqCst) {
        CAUGHT[cpu].lock().get_or_insert(exception);
        frame.elr += 4;
        return;
    }
    if !skippable && CALLING[cpu].load(Ordering::SeqCst) {
        // A wild branch of `call_wild`: return to its caller.
        CAUGHT[cpu].lock().get_or_insert(exception);
        frame.elr = frame.regs[30];
        return;
    }
    let handler = *SYNC_HANDLER.lock();
    let resolution = handler.map_or(Resolution::Unhandled, |h| h(&exception));
    match resolution {
        Resolution::Skip if skippable => frame.elr += 4,
        Resolution::Retry => {}
        _ => crate::fail(format_args!("unexpected exception: {exception}")),
    }
}

/// One 128-byte vector: make room for the frame, free x0/x1, pass the slot number.
macro_rules! vector {
    ($slot:literal) => {
        concat!(
            ".balign 0x80\n",
            "    sub     sp, sp, #{frame_size}\n",
            "    stp     x0, x1, [sp]\n",
            "    mov     x0, #",
            $slot,
            "\n",
            "    b       el1_exception_common\n",
        )
    };
}

global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 0x800",
    ".global el1_vectors",
    "el1_vectors:",
    vector!(0),
    vector!(1),
    vector!(2),
    vector!(3),
    vector!(4),
    vector!(5),
    vector!(6),
    vector!(7),
    vector!(8),
    vector!(9),
    vector!(10),
    vector!(11),
    vector!(12),
    vector!(13),
    vector!(14),
    vector!(15),
    "el1_exception_common:",
    // The rest of the general-purpose registers.
    "    stp     x2, x3, [sp, #16]",
    "    stp     x4, x5, [sp, #32]",
    "    stp     x6, x7, [sp, #48]",
    "    stp     x8, x9, [sp, #64]",
    "    stp     x10, x11, [sp, #80]",
    "    stp     x12, x13, [sp, #96]",
    "    stp     x14, x15, [sp, #112]",
    "    stp     x16, x17, [sp, #128]",
    "    stp     x18, x19, [sp, #144]",
    "    stp     x20, x21, [sp, #160]",
    "    stp     x22, x23, [sp, #176]",
    "    stp     x24, x25, [sp, #192]",
    "    stp     x26, x27, [sp, #208]",
    "    stp     x28, x29, [sp, #224]",
    "    str     x30, [sp, #240]",
    // The exception registers.
    "    mrs     x2, elr_el1",
    "    mrs     x3, spsr_el1",
    "    stp     x2, x3, [sp, #{elr}]",
    "    mrs     x2, esr_el1",
    "    mrs     x3, far_el1",
    "    stp     x2, x3, [sp, #{esr}]",
    // el1_exception(slot, frame)
    "    mov     x1, sp",
    "    bl      {handler}",
    // Resume where the handler says, with the registers as they were.
    "    ldp     x2, x3, [sp, #{elr}]",
    "    msr     elr_el1, x2",
    "    msr     spsr_el1, x3",
    "    ldp     x0, x1, [sp]",
    "    ldp     x2, x3, [sp, #16]",
    "    ldp     x4, x5, [sp, #32]",
    "    ldp     x6, x7, [sp, #48]",
    "    ldp     x8, x9, [sp, #64]",
    "    ldp     x10, x11, [sp, #80]",
    "    ldp     x12, x13, [sp, #96]",
    "    ldp     x14, x15, [sp, #112]",
    "    ldp     x16, x17, [sp, #128]",
    "    ldp     x18, x19, [sp, #144]",
    "    ldp     x20, x21, [sp, #160]",
    "    ldp     x22, x23, [sp, #176]",
    "    ldp     x24, x25, [sp, #192]",
    "    ldp     x26, x27, [sp, #208]",
    "    ldp     x28, x29, [sp, #224]",
    "    ldr     x30, [sp, #240]",
    "    add     sp, sp, #{frame_size}",
    "    eret",
    frame_size = const size_of::<Frame>(),
    elr = const offset_of!(Frame, elr),
    esr = const offset_of!(Frame, esr),
    handler = sym el1_exception,
);

const _: () =
    assert!(offset_of!(Frame, regs) == 0 && offset_of!(Frame, esr) == offset_of!(Frame, elr) + 16);
