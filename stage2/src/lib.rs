//! Stage-2 translation tables for Tandem's VMs, built from each VM's memory map.
//!
//! [`Stage2Tables`] holds one VM's tables (4 KiB granule, 4 KiB pages, 2 MiB and 1 GiB
//! blocks) and gives the `VTTBR_EL2` and `VTCR_EL2` values that install them. Tables are
//! allocated and accessed through a [`TableAllocator`] the hypervisor implements, so the same
//! code, including the [`translate`](Stage2Tables::translate) walk, runs on the host over
//! [`HeapTableAllocator`]. [`VmidAllocator`] hands out VMIDs, and [`policy`] turns a VM's
//! memory and device windows into the list of mappings to make.
//!
//! Nothing here assumes IPA == PA, though that is how Tandem lays out its VMs. The crate is
//! pure logic: no system register is touched, and TLB maintenance is asked of the caller
//! through [`TlbMaintenance`].

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod addr;
mod allocator;
mod config;
mod descriptor;
mod error;
pub mod policy;
mod tables;
mod vmid;

pub use addr::{IntermediatePhysAddr, PhysAddr, BLOCK_1G, BLOCK_2M, PAGE_SHIFT, PAGE_SIZE};
pub use allocator::{HeapTableAllocator, TableAllocator, ENTRIES_PER_TABLE};
pub use config::{ConfigError, PaRange, Stage2Config};
pub use descriptor::{Access, MemKind, Stage2Attrs};
pub use error::MapError;
pub use tables::{Mapping, NotYetLive, Stage2Tables, TlbMaintenance};
pub use vmid::{NeedsTlbInvalidate, Vmid, VmidAllocator, VmidError};
