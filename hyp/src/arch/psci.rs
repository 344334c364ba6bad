//! Calls into firmware's PSCI (SMC Calling Convention, SMC64 function IDs). From EL2 only
//! SMC reaches firmware: an HVC would trap to the hypervisor itself.

use core::arch::asm;

/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// CPU_ON, SMC64 form.
pub const CPU_ON_64: u32 = 0xc400_0003;

/// A PSCI error code (negative return value), PSCI spec 5.2.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsciError(pub i64);

impl core::fmt::Display for PsciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self.0 {
            -1 => "NOT_SUPPORTED",
            -2 => "INVALID_PARAMETERS",
            -3 => "DENIED",
            -4 => "ALREADY_ON",
            -5 => "ON_PENDING",
            -6 => "INTERNAL_FAILURE",
            -7 => "NOT_PRESENT",
            -8 => "DISABLED",
            -9 => "INVALID_ADDRESS",
            _ => "unknown error",
        };
        write!(f, "PSCI {name} ({})", self.0)
    }
}

/// Makes a PSCI call over SMC with up to three arguments and returns x0.
pub fn call(function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let mut x0 = u64::from(function);
    // SAFETY: the firmware call follows SMCCC: it clobbers only x0-x17 and touches no
    // memory of ours. CPU_ON's entry point is the secondary entry code, which is ready
    // to run at any time.
    unsafe {
        asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _,
            inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _)
    }
    x0 as i64
}

/// CPU_ON: starts `mpidr` at `entry` with `context` in x0.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    match call(CPU_ON_64, mpidr, entry, context) {
        0 => Ok(()),
        e => Err(PsciError(e)),
    }
}
