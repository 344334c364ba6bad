//! The secure guest: the isolated service that runs beside the rich OS. Today it shows it
//! is alive: it reports the memory it owns and prints a heartbeat every second of guest
//! time, for good. Its channel to Linux (vsock) comes with the secure-channel work.
//!
//! Between heartbeats it polls the counter: without the virtual GIC there is no timer
//! interrupt to sleep on yet.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;

use tandem_guest_rt::{println, time, Boot, Failure, Guest};

struct Secure;

/// Guest time between heartbeats.
const HEARTBEAT_MS: u64 = 1000;

impl Guest for Secure {
    const NAME: &'static str = "secure";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let total: u64 = board.memory.iter().map(|m| m.size).sum();
        println!(
            "secure: up, {} MiB of memory at {:#x}, image at {:#x}",
            total >> 20,
            board.memory.first().map_or(0, |m| m.base),
            boot.load_address()
        );
        let mut beat: u64 = 0;
        loop {
            time::wait_until(HEARTBEAT_MS, || false);
            beat += 1;
            println!("secure: heartbeat {beat}");
        }
    }
}

tandem_guest_rt::guest!(Secure);
