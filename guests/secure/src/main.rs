//! The secure guest: the isolated service that runs beside the rich OS. Today it shows it
//! is alive: it reports the memory it owns and prints a heartbeat every second of guest
//! time, for good. Its channel to Linux (vsock) comes with the secure-channel work.
//!
//! Between heartbeats it sleeps in WFI until its virtual timer fires (IRQs stay masked: a
//! pending interrupt ends WFI without being taken), so an idle secure guest costs its CPU
//! nothing, and under `-icount` does not slow the other VMs' clocks.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;

use tandem_guest_rt::gic::{self, Trigger};
use tandem_guest_rt::timer::{self, Timer};
use tandem_guest_rt::{irq, println, Boot, Failure, Guest};

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
        irq::mask();
        gic::init(&board.gic).map_err(|e| format!("GIC: {e}"))?;
        gic::init_cpu().map_err(|e| format!("GIC: {e}"))?;
        let vtimer = board
            .timer
            .ok_or("the device tree has no timer node")?
            .virt
            .intid();
        gic::configure(vtimer, 0xa0, Trigger::Level)
            .and_then(|()| gic::enable(vtimer))
            .map_err(|e| format!("virtual timer INTID {vtimer}: {e}"))?;
        let period = timer::us_to_ticks(HEARTBEAT_MS * 1000);
        let mut next = Timer::Virtual.now();
        let mut beat: u64 = 0;
        loop {
            next = next.saturating_add(period);
            Timer::Virtual.set_compare(next);
            Timer::Virtual.start();
            while Timer::Virtual.now() < next {
                irq::wait();
            }
            // Stopping the timer drops its interrupt line: nothing is left pending.
            Timer::Virtual.stop();
            beat += 1;
            println!("secure: heartbeat {beat}");
        }
    }
}

tandem_guest_rt::guest!(Secure);
