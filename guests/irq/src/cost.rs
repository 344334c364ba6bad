//! The `cost` check: what one trip to the hypervisor and back costs the guest, measured
//! with the virtual counter (under `-icount`, one tick is one instruction):
//!
//! - a null hypercall: by default `VENDOR_HYP_CALL_UID` over the PSCI conduit (Tandem
//!   answers it at EL2; natively QEMU's own PSCI emulation answers `NOT_SUPPORTED`), or the
//!   function ID `null_call=` names: Xen 4.17 answers its UID on 0x8500ff01, the Standard
//!   Hypervisor Service's UID call, and logs 0x8600ff01 as unhandled before answering
//!   `NOT_SUPPORTED`, which would time its console instead;
//! - an MMIO read of an emulated register: the GIC distributor's `GICD_TYPER` (a trap to
//!   the virtual GIC under Tandem; natively QEMU's device model).
//!
//! It checks only that every call returned and every read gave the same value; the figures
//! are for `cargo xtask bench`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use tandem_guest_rt::timer::Timer;
use tandem_guest_rt::{println, psci};

use crate::{min_median_max, Outcome, Setup};

/// `VENDOR_HYP_CALL_UID`: the default null hypercall.
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
/// `GICD_TYPER`, the same offset on GICv2 and GICv3.
const GICD_TYPER: u64 = 0x4;
/// Samples of each.
const SAMPLES: usize = 200;

/// The counter, after everything before it has completed.
fn now() -> u64 {
    // SAFETY: a barrier has no memory effects.
    unsafe { core::arch::asm!("isb", options(nomem, nostack, preserves_flags)) };
    Timer::Virtual.now()
}

/// Runs the check.
pub fn check(setup: &Setup) -> Result<Outcome, String> {
    let call = setup.null_call;
    let mut hvc = Vec::with_capacity(SAMPLES);
    let first = psci::call(call, &[])[0];
    for _ in 0..SAMPLES {
        let start = now();
        let answer = psci::call(call, &[])[0];
        hvc.push(now() - start);
        if answer != first {
            return Err(format!(
                "the UID call answered {answer:#x}, then {first:#x}"
            ));
        }
    }
    let (min, median, max) = min_median_max(&mut hvc);
    println!(
        "irq: null hypercall round trip: min {min} median {median} max {max} ticks ({SAMPLES} calls of {call:#x}, x0 = {first:#x})"
    );

    let typer = setup.gicd + GICD_TYPER;
    let read = || {
        // SAFETY: GICD_TYPER, a read-only register of the distributor the DTB names.
        unsafe { (typer as *const u32).read_volatile() }
    };
    let expected = read();
    let mut mmio = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = now();
        let value = read();
        mmio.push(now() - start);
        if value != expected {
            return Err(format!("GICD_TYPER read {value:#x}, then {expected:#x}"));
        }
    }
    let (min, median, max) = min_median_max(&mut mmio);
    println!("irq: mmio read round trip: min {min} median {median} max {max} ticks ({SAMPLES} reads of GICD_TYPER)");
    Ok(Outcome::Passed)
}
