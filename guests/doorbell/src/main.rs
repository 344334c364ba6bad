//! Doorbell test guest: two VMs share a region (`shmem@N` in the binding) and pass a
//! counter through it, each waking the other with the `TANDEM_DOORBELL` hypercall, which
//! raises the peer's doorbell SPI (`tandem,doorbell` in its DTB's shared-memory node).
//!
//! With `role=ping` the guest writes 1, 3, 5, ... into the region's first word and rings;
//! with `role=pong` it answers each odd value with the next even one and rings back. Each
//! side waits for the peer's doorbell interrupt, then checks the counter: as a side rings
//! only after it took the peer's last doorbell, each round brings exactly one interrupt. ping also
//! checks that ringing a region it does not share is refused with INVALID_PARAMETERS and
//! that `VENDOR_HYP_CALL_UID` names Tandem, and prints the round trip in counter ticks.
//! Command line: `role=ping|pong`, `rounds=<n>` (default 100).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tandem_guest_rt::gic::{self, Trigger};
use tandem_guest_rt::timer::Timer;
use tandem_guest_rt::{args, irq, println, psci, set_irq_handler, Boot, Failure, Guest};

/// `TANDEM_DOORBELL` (docs/binding.md): x1 = the shared region's base.
const TANDEM_DOORBELL: u32 = 0xc600_0001;
/// `VENDOR_HYP_CALL_UID` and the UID Tandem answers it with.
const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
const TANDEM_UID: [u64; 4] = [0x5e6c_4b7d, 0x8e4b_1a2f, 0x6174_3d9c, 0x6d65_646e];
/// SMCCC INVALID_PARAMETERS, as the 64-bit x0 holds it.
const INVALID_PARAMETERS: u64 = -2i64 as u64;

/// The doorbell's INTID, and how many doorbell interrupts this VM took.
static DOORBELL_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static RUNG: AtomicU64 = AtomicU64::new(0);

fn on_irq() {
    let Some(ack) = gic::acknowledge() else {
        return;
    };
    if ack.intid() == DOORBELL_INTID.load(Ordering::Relaxed) {
        RUNG.fetch_add(1, Ordering::Relaxed);
    }
    gic::end_of_interrupt(ack);
}

/// The shared region the DTB gives this VM: its base and doorbell SPI (INTID - 32).
fn shared_region(dtb: &[u8]) -> Result<(u64, u32), Failure> {
    let fdt = fdt::Fdt::new(dtb).map_err(|e| format!("bad DTB: {e:?}"))?;
    let node = fdt
        .all_nodes()
        .find(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "tandem,shmem"))
        })
        .ok_or("the DTB has no tandem,shmem node: give the VM a shmem@ region")?;
    let base = node
        .reg()
        .and_then(|mut r| r.next())
        .map(|r| r.starting_address as u64)
        .ok_or("the tandem,shmem node has no reg")?;
    let spi = node
        .property("tandem,doorbell")
        .and_then(|p| p.as_usize())
        .ok_or("the tandem,shmem node has no tandem,doorbell")?;
    Ok((base, spi as u32))
}

fn ring(base: u64) -> u64 {
    psci::call(TANDEM_DOORBELL, &[base])[0]
}

/// The shared counter, read and written with the MMU off (Device memory, so every
/// access reaches memory, as the peer's do).
fn counter(base: u64) -> u64 {
    // SAFETY: `base` is the shared region the DTB gives this VM, mapped for it; the word is
    // the protocol's and only read here.
    unsafe { (base as usize as *const u64).read_volatile() }
}

/// The second word: pong's "ready" flag, set once its doorbell interrupt is enabled (the
/// GIC set-up clears what was pending before), so ping's first ring is not lost.
const READY: u64 = 0x7265_6164_7921;

fn ready(base: u64) -> bool {
    counter(base + 8) == READY
}

fn set_counter(base: u64, value: u64) {
    // SAFETY: as for `counter`; each side writes the word only when it is its turn.
    unsafe { (base as usize as *mut u64).write_volatile(value) };
}

/// Waits in WFI, taking interrupts, until `done`; fails after `timeout_ms` of virtual
/// counter time (checked whenever an interrupt wakes the vCPU, the virtual timer among
/// them).
fn wait_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let timer = Timer::Virtual;
    let deadline = timer
        .now()
        .saturating_add(tandem_guest_rt::timer::us_to_ticks(timeout_ms * 1000));
    // A tick every 10 ms, so a lost wake-up shows as a timeout, not a hang.
    let tick = tandem_guest_rt::timer::us_to_ticks(10_000);
    loop {
        irq::mask();
        if done() {
            return true;
        }
        if timer.now() >= deadline {
            return false;
        }
        timer.set_compare(timer.now().saturating_add(tick));
        timer.start();
        irq::wait();
        timer.stop();
        irq::unmask();
    }
}

struct Doorbell;

impl Guest for Doorbell {
    const NAME: &'static str = "doorbell";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let bootargs = board.bootargs.as_deref().unwrap_or_default();
        let ping = match args::value(bootargs, "role") {
            Some("ping") => true,
            Some("pong") => false,
            other => return Err(format!("role={other:?}: want role=ping or role=pong").into()),
        };
        let rounds = match args::value(bootargs, "rounds") {
            None => 100,
            Some(t) => args::parse_u64(t).ok_or("rounds=<n>: want a number")?,
        };
        let (base, spi) = shared_region(boot.dtb())?;
        let intid = spi + 32;
        DOORBELL_INTID.store(intid, Ordering::Relaxed);

        irq::mask();
        gic::init(&board.gic).map_err(|e| format!("GIC: {e}"))?;
        gic::init_cpu().map_err(|e| format!("GIC: {e}"))?;
        set_irq_handler(Some(on_irq));
        let timers = board.timer.ok_or("the DTB has no timer node")?;
        let vtimer = timers.virt.intid();
        for (id, trigger) in [(intid, Trigger::Edge), (vtimer, Trigger::Level)] {
            gic::configure(id, 0xa0, trigger)
                .and_then(|()| gic::enable(id))
                .map_err(|e| format!("INTID {id}: {e}"))?;
        }
        gic::route_to_me(intid).map_err(|e| format!("INTID {intid}: {e}"))?;
        println!(
            "doorbell: {} at {base:#x}, doorbell INTID {intid}, {rounds} rounds",
            if ping { "ping" } else { "pong" }
        );

        if !ping {
            set_counter(base, 0);
            set_counter(base + 8, READY);
        } else if !wait_until(10_000, || ready(base)) {
            return Err("pong did not come up in 10 s".into());
        }
        if ping {
            let uid = psci::call(VENDOR_HYP_CALL_UID, &[]);
            if uid[..4] != TANDEM_UID {
                return Err(format!("VENDOR_HYP_CALL_UID answered {:x?}", &uid[..4]).into());
            }
            let refused = ring(base + 0x1000_0000);
            if refused != INVALID_PARAMETERS {
                return Err(format!(
                    "ringing a region this VM does not share answered {refused:#x}, not INVALID_PARAMETERS"
                )
                .into());
            }
            let mut trips = Vec::new();
            for round in 0..rounds {
                let sent = 2 * round + 1;
                let start = Timer::Virtual.now();
                set_counter(base, sent);
                let status = ring(base);
                if status != 0 {
                    return Err(format!("TANDEM_DOORBELL answered {status:#x}").into());
                }
                // Only pong's doorbell ends the wait: a ring comes only after the peer took
                // the last one, so each round brings exactly one interrupt.
                if !wait_until(5_000, || RUNG.load(Ordering::Relaxed) > round) {
                    return Err(format!(
                        "round {round}: no doorbell in 5 s (counter {}, {} doorbells taken)",
                        counter(base),
                        RUNG.load(Ordering::Relaxed)
                    )
                    .into());
                }
                if counter(base) != sent + 1 {
                    return Err(format!(
                        "round {round}: the doorbell rang but the counter is {}, not {}",
                        counter(base),
                        sent + 1
                    )
                    .into());
                }
                trips.push(Timer::Virtual.now() - start);
            }
            trips.sort_unstable();
            let rung = RUNG.load(Ordering::Relaxed);
            println!(
                "doorbell: {rounds} round trips: min {} median {} max {} ticks; {rung} doorbells taken",
                trips.first().copied().unwrap_or(0),
                trips.get(trips.len() / 2).copied().unwrap_or(0),
                trips.last().copied().unwrap_or(0),
            );
            if rung != rounds {
                return Err(format!("{rounds} rounds but only {rung} doorbells taken").into());
            }
        } else {
            for round in 0..rounds {
                let expected = 2 * round + 1;
                if !wait_until(10_000, || RUNG.load(Ordering::Relaxed) > round) {
                    return Err(format!(
                        "round {round}: no doorbell in 10 s (counter {})",
                        counter(base)
                    )
                    .into());
                }
                if counter(base) != expected {
                    return Err(format!(
                        "round {round}: the doorbell rang but the counter is {}, not {expected}",
                        counter(base)
                    )
                    .into());
                }
                set_counter(base, expected + 1);
                let status = ring(base);
                if status != 0 {
                    return Err(format!("TANDEM_DOORBELL answered {status:#x}").into());
                }
            }
            let rung = RUNG.load(Ordering::Relaxed);
            println!("doorbell: answered {rounds} rounds; {rung} doorbells taken");
            if rung != rounds {
                return Err(format!("{rounds} rounds but only {rung} doorbells taken").into());
            }
        }
        Ok(())
    }
}

tandem_guest_rt::guest!(Doorbell);
