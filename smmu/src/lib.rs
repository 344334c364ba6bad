//! The Arm SMMUv3 (IHI 0070) as pure data, for the hypervisor's driver in `hyp`.
//!
//! Everything the driver writes to memory the SMMU reads (stream table entries, level-1
//! descriptors, commands) is built here, and everything the SMMU writes (events) and the ID
//! registers it reads are decoded here, so that the layouts are unit-tested on the host.
//! The driver only moves these words between memory, registers and this crate.
//!
//! Tandem uses stage 2 only: each device stream translates through the stage-2 tables of
//! the VM it is assigned to, with that VM's VMID, so a device reaches exactly the memory its
//! VM's CPUs reach. Streams no VM owns have no valid entry and every transaction they make
//! is aborted and reported.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod cmd;
pub mod event;
pub mod features;
pub mod regs;
pub mod ste;
pub mod strtab;

pub use cmd::Command;
pub use event::{Event, EventKind};
pub use features::{Features, Unsupported};
pub use ste::{Stage2Ste, Ste, SteError};
pub use strtab::{Claim, L1Entry, PlanError, StreamTablePlan};
