//! The smallest test guest: says hello with its board and vCPU, lists the memory the device
//! tree gives it, asks PSCI for its version, and passes.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;

use tandem_guest_rt::{mpidr, println, psci, Boot, Failure, Guest};

struct Hello;

impl Guest for Hello {
    const NAME: &'static str = "hello";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        println!("hello from {} (vCPU {:#x})", board.model, mpidr());
        println!("image loaded at {:#x}", boot.load_address());
        for bank in &board.memory {
            println!(
                "memory: {:#x}..{:#x} ({} MiB)",
                bank.base,
                bank.base + bank.size,
                bank.size >> 20
            );
        }
        let version = psci::version().map_err(|e| format!("PSCI_VERSION failed: {e:?}"))?;
        println!("psci: version {version}");
        Ok(())
    }
}

tandem_guest_rt::guest!(Hello);
