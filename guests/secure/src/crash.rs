//! The `Crash` test request (`test-requests` builds only): the guest goes down the way a
//! kernel with broken exception vectors does, so the tests can check that the hypervisor
//! contains it (declares this VM crashed and restarts it) and that Linux sees only its
//! connections reset.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Writeable, VBAR_EL1};
use tandem_guest_rt::{irq, println};

/// Where the broken vector table is: below RAM, where this VM has nothing mapped.
const NO_VECTORS: u64 = 0x0;
/// An address this VM has nothing mapped at: the load from it aborts.
const UNMAPPED: usize = 0x8;

/// Points VBAR_EL1 at unmapped memory, then loads from unmapped memory. The hypervisor
/// reflects the data abort to VBAR_EL1 + 0x200; fetching there aborts again, and it stops
/// the VM. Returns never: without a hypervisor (natively on QEMU, where address 0 is
/// flash) the load may succeed, and the guest then waits for good.
pub fn now() -> ! {
    println!("secure: crash requested");
    irq::mask();
    VBAR_EL1.set(NO_VECTORS);
    barrier::isb(barrier::SY);
    // SAFETY: the load is meant to abort; it reads no memory this program owns, and if it
    // does not abort its value is thrown away.
    let _ = unsafe { core::ptr::read_volatile(UNMAPPED as *const u32) };
    println!("secure: the crash load did not abort: no hypervisor to catch it?");
    loop {
        irq::wait();
    }
}
