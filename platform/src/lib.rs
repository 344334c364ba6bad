//! The board Tandem runs on, read from the flattened device tree the firmware hands over.
//!
//! [`Platform::parse`] gives the whole description (memory, CPUs, PSCI, GIC, timer,
//! console); [`early_console`] finds only the console and allocates nothing, for use before
//! the hypervisor's allocator exists; [`blob_size`] reads the blob's length from its header.
//! Every `reg` address is translated to a CPU physical address through the parents'
//! `ranges`. No input, however corrupt, makes this crate panic.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod blob;
mod board;
mod cells;
pub mod config;
mod early;
mod error;
pub mod guest_dt;
pub mod image;
mod parse;

pub use blob::blob_size;
pub use board::{
    Conduit, Cpu, EnableMethod, Gic, Irq, IrqKind, MemRange, Platform, Psci, PsciCompat, Reserved,
    Smmu, Timer, Uart, UartKind, MAX_CPUS,
};
pub use early::{early_console, EarlyUart};
pub use error::DtError;
