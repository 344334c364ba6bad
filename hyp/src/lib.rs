//! Tandem's EL2 hypervisor. The pure parts (options, ESR decoding, the EL2 table builder)
//! build and are tested on the host; everything that touches the hardware is compiled
//! only for the bare-metal AArch64 target.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod bootargs;
pub mod devices;
pub mod esr;
pub mod guest;
pub mod measure;
pub mod mm;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod drivers;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod vmm;
#[cfg(target_os = "none")]
mod vms;
