//! PSCI and SMCCC calls over HVC: the conduit of a Tandem VM, and of QEMU's own PSCI when
//! the machine has no EL2.
//!
//! Typed calls come from the `smccc` crate; [`call`] makes a raw call for tests that check
//! the exact value a function ID gets (an unknown one must get -1, NOT_SUPPORTED).

use smccc::Hvc;

pub use smccc::arch::Version as SmcccVersion;
pub use smccc::psci::{AffinityState, Error, LowestAffinityLevel, Version};

/// PSCI_VERSION.
pub fn version() -> Result<Version, Error> {
    smccc::psci::version::<Hvc>()
}

/// PSCI_FEATURES: whether `function_id` is implemented, with its feature flags.
pub fn features(function_id: u32) -> Result<u32, Error> {
    smccc::psci::psci_features::<Hvc>(function_id)
}

/// SMCCC_VERSION. Only defined when [`features`] reports it (SMCCC 1.1 and later).
pub fn smccc_version() -> Result<SmcccVersion, smccc::arch::Error> {
    smccc::arch::version::<Hvc>()
}

/// CPU_ON (64-bit): starts the vCPU `mpidr` at `entry` with x0 = `context_id`.
pub fn cpu_on(mpidr: u64, entry: u64, context_id: u64) -> Result<(), Error> {
    smccc::psci::cpu_on::<Hvc>(mpidr, entry, context_id)
}

/// CPU_OFF: stops the calling vCPU. Returns only if the call failed.
pub fn cpu_off() -> Error {
    match smccc::psci::cpu_off::<Hvc>() {
        Ok(()) => Error::Unknown(0),
        Err(e) => e,
    }
}

/// AFFINITY_INFO (64-bit) for the single vCPU `mpidr`.
pub fn affinity_info(mpidr: u64) -> Result<AffinityState, Error> {
    smccc::psci::affinity_info::<Hvc>(mpidr, LowestAffinityLevel::All)
}

/// SYSTEM_OFF: powers the machine (or, under Tandem, this VM) off. Returns only if the
/// call failed.
pub fn system_off() -> Error {
    match smccc::psci::system_off::<Hvc>() {
        Ok(()) => Error::Unknown(0),
        Err(e) => e,
    }
}

/// SYSTEM_RESET. Returns only if the call failed.
pub fn system_reset() -> Error {
    match smccc::psci::system_reset::<Hvc>() {
        Ok(()) => Error::Unknown(0),
        Err(e) => e,
    }
}

/// A raw SMCCC call over HVC with up to 17 arguments; returns x0 to x17.
pub fn call(function_id: u32, args: &[u64]) -> [u64; 18] {
    let mut regs = [0u64; 17];
    for (reg, arg) in regs.iter_mut().zip(args) {
        *reg = *arg;
    }
    smccc::hvc64(function_id, regs)
}
