//! What happens when an exception reaches EL2: from a guest (a lower EL), the VM monitor
//! answers it; from EL2 itself, it is a fault in the hypervisor: report it and stop this CPU.

use crate::esr::{class_name, exception_class, VectorSlot};

/// Registers saved by the vector code, in the order `entry.rs` stores them.
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    _pad: u64,
}

impl TrapFrame {
    /// A frame that enters a guest at `pc` with PSTATE `spsr` and `x0`..`x3` = `args`.
    pub fn new(pc: u64, spsr: u64, args: [u64; 4]) -> Self {
        let mut x = [0; 31];
        x[..4].copy_from_slice(&args);
        TrapFrame {
            x,
            elr: pc,
            spsr,
            esr: 0,
            far: 0,
            _pad: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));

/// Called by the vector code with the slot number (0..16) and the saved registers.
pub extern "C" fn el2_exception(slot: u64, frame: &mut TrapFrame) {
    let slot = VectorSlot((slot & 0xf) as u8);
    if slot.0 >= 8 {
        crate::vmm::trap(slot, frame);
        return;
    }
    let ec = exception_class(frame.esr);
    crate::console::emergency(format_args!(
        "tandem: exception: {} from {}: EC {:#04x} ({}), ESR {:#x}, FAR {:#x}, ELR {:#x}, SPSR {:#x}, x30 {:#x}",
        slot.kind(),
        slot.origin(),
        ec,
        class_name(ec),
        frame.esr,
        frame.far,
        frame.elr,
        frame.spsr,
        frame.x[30],
    ));
    super::halt();
}

/// Called on the emergency stack when an exception found SP in a stack guard.
pub extern "C" fn el2_stack_overflow(sp: u64, elr: u64, far: u64) -> ! {
    crate::console::emergency(format_args!(
        "tandem: panic: stack overflow on cpu{} (SP {sp:#x}, ELR {elr:#x}, FAR {far:#x})",
        super::sysreg::cpu_index()
    ));
    super::halt();
}
