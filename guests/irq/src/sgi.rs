//! The `sgi` check: vCPU 0 pings each other vCPU with an SGI, one at a time, and each
//! answers from its handler with a pong SGI back; the round trip is timed from the ping to
//! the pong handler's entry on the virtual counter.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tandem_guest_rt::entry::MAX_CPUS;
use tandem_guest_rt::gic::{self, Ack, GicError, SgiTarget, Trigger};
use tandem_guest_rt::psci::{self, AffinityState};
use tandem_guest_rt::timer::{self, Timer};
use tandem_guest_rt::{cpu_index, mpidr, println, start_cpu};

use crate::{min_median_max, wait_for, Outcome, Setup, DEFAULT_PRIORITY};

/// vCPU 0 to another: answer.
const SGI_PING: u32 = 1;
/// The answer, to vCPU 0.
const SGI_PONG: u32 = 2;
/// vCPU 0 to another: look at [`STOP`] (the SGI only wakes it).
const SGI_STOP: u32 = 3;

/// How long the other vCPUs may take to come up, and to go off again.
const START_TIMEOUT_US: u64 = 5_000_000;
/// How long one round trip may take.
const TRIP_TIMEOUT_US: u64 = 1_000_000;
/// How long a secondary waits for pings before it gives up on vCPU 0.
const SECONDARY_TIMEOUT_US: u64 = 120_000_000;

/// Per CPU index: pings taken.
static PINGS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Pongs taken by vCPU 0, and the virtual counter at the last one's handler entry.
static PONGS: AtomicU64 = AtomicU64::new(0);
static PONG_AT: AtomicU64 = AtomicU64::new(0);
/// Per CPU index: the vCPU is set up and waits for pings.
static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU index: its MPIDR, published with [`READY`].
static MPIDRS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// The secondaries may return (and call CPU_OFF).
static STOP: AtomicBool = AtomicBool::new(false);
/// Pongs a handler could not send.
static SEND_ERRORS: AtomicU32 = AtomicU32::new(0);

/// Whether `intid` is one of this check's SGIs.
pub fn handles(intid: u32) -> bool {
    matches!(intid, SGI_PING | SGI_PONG | SGI_STOP)
}

/// Enables this check's SGIs on this vCPU.
pub fn setup_cpu() -> Result<(), GicError> {
    for sgi in [SGI_PING, SGI_PONG, SGI_STOP] {
        gic::configure(sgi, DEFAULT_PRIORITY, Trigger::Edge)?;
        gic::enable(sgi)?;
    }
    Ok(())
}

/// The handler of this check's SGIs.
pub fn on_sgi(ack: Ack) {
    match ack.intid() {
        SGI_PING => {
            PINGS[cpu_index()].fetch_add(1, Ordering::SeqCst);
            if gic::send_sgi(SGI_PONG, SgiTarget::Cpu(0)).is_err() {
                SEND_ERRORS.fetch_add(1, Ordering::SeqCst);
            }
        }
        SGI_PONG => {
            PONG_AT.store(Timer::Virtual.now(), Ordering::SeqCst);
            PONGS.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
    gic::end_of_interrupt(ack);
}

/// What a secondary vCPU runs: sets up its GIC interface and answers pings until told to
/// stop; then it returns and the runtime turns it off.
fn secondary(_: usize) {
    if let Err(why) = crate::setup_cpu() {
        tandem_guest_rt::fail(format_args!("{why}"));
    }
    let cpu = cpu_index();
    MPIDRS[cpu].store(mpidr(), Ordering::SeqCst);
    READY[cpu].store(true, Ordering::SeqCst);
    if !wait_for(SECONDARY_TIMEOUT_US, Timer::Virtual, || {
        STOP.load(Ordering::SeqCst)
    }) {
        tandem_guest_rt::fail(format_args!(
            "vCPU {cpu}: not told to stop within {} s",
            SECONDARY_TIMEOUT_US / 1_000_000
        ));
    }
}

/// The CPU indices of the secondaries that are up.
fn ready() -> Vec<usize> {
    (1..MAX_CPUS)
        .filter(|&c| READY[c].load(Ordering::SeqCst))
        .collect()
}

/// Lets the secondaries return and waits until PSCI reports them off.
fn stop_secondaries(cpus: &[usize]) -> Result<(), String> {
    STOP.store(true, Ordering::SeqCst);
    for &cpu in cpus {
        gic::send_sgi(SGI_STOP, SgiTarget::Cpu(cpu)).map_err(|e| format!("SGI_STOP: {e}"))?;
    }
    let all_off = || {
        cpus.iter().all(|&cpu| {
            psci::affinity_info(MPIDRS[cpu].load(Ordering::SeqCst)) == Ok(AffinityState::Off)
        })
    };
    // Affinity changes raise no interrupt: look every millisecond, sleeping in between.
    for _ in 0..START_TIMEOUT_US / 1000 {
        if all_off() {
            return Ok(());
        }
        wait_for(1000, Timer::Virtual, || false);
    }
    Err("the other vCPUs did not go off after the ping-pong".into())
}

/// The `sgi` check.
pub fn check(setup: &Setup) -> Result<Outcome, String> {
    if setup.others.is_empty() {
        return Ok(Outcome::Skipped("one vCPU, nobody to ping".into()));
    }
    STOP.store(false, Ordering::SeqCst);
    let result = start_all(setup).and_then(|cpus| ping_pong(setup, &cpus));
    // Whatever happened, the vCPUs that came up go off again.
    let stopped = stop_secondaries(&ready());
    result.and_then(|outcome| stopped.map(|()| outcome))
}

/// Starts every other vCPU and waits until all are ready; returns their CPU indices.
fn start_all(setup: &Setup) -> Result<Vec<usize>, String> {
    for &other in &setup.others {
        start_cpu(other, secondary, 0).map_err(|e| format!("vCPU {other:#x}: {e}"))?;
    }
    let up = wait_for(START_TIMEOUT_US, Timer::Virtual, || {
        ready().len() == setup.others.len()
    });
    let cpus = ready();
    if !up {
        return Err(format!(
            "only {} of {} other vCPUs came up",
            cpus.len(),
            setup.others.len()
        ));
    }
    Ok(cpus)
}

/// The round trips, then the counts.
fn ping_pong(setup: &Setup, cpus: &[usize]) -> Result<Outcome, String> {
    let mut sent = [0u64; MAX_CPUS];
    let mut trips = Vec::with_capacity(setup.trips as usize);
    let mut lost = None;
    for trip in 0..setup.trips {
        let target = cpus[trip as usize % cpus.len()];
        let before = PONGS.load(Ordering::SeqCst);
        let start = Timer::Virtual.now();
        gic::send_sgi(SGI_PING, SgiTarget::Cpu(target)).map_err(|e| format!("ping: {e}"))?;
        sent[target] += 1;
        if !wait_for(TRIP_TIMEOUT_US, Timer::Virtual, || {
            PONGS.load(Ordering::SeqCst) > before
        }) {
            lost = Some(format!(
                "round trip {trip} to vCPU {target}: no pong within {} ms",
                TRIP_TIMEOUT_US / 1000
            ));
            break;
        }
        trips.push(PONG_AT.load(Ordering::SeqCst).wrapping_sub(start));
    }
    // Let every pong still in flight land before counting.
    wait_for(10_000, Timer::Virtual, || false);
    if let Some(why) = lost {
        return Err(why);
    }

    let mut wrong = Vec::new();
    for &cpu in cpus {
        let pings = PINGS[cpu].load(Ordering::SeqCst);
        println!(
            "irq: sgi: vCPU {cpu} (MPIDR {:#x}): {} pings sent, {pings} taken",
            MPIDRS[cpu].load(Ordering::SeqCst),
            sent[cpu]
        );
        if pings != sent[cpu] {
            wrong.push(format!("vCPU {cpu} took {pings} of {} pings", sent[cpu]));
        }
    }
    let pongs = PONGS.load(Ordering::SeqCst);
    if pongs != setup.trips {
        wrong.push(format!(
            "vCPU 0 took {pongs} pongs for {} pings",
            setup.trips
        ));
    }
    let errors = SEND_ERRORS.load(Ordering::SeqCst);
    if errors != 0 {
        wrong.push(format!("{errors} pongs could not be sent"));
    }
    let slowest = trips
        .iter()
        .enumerate()
        .max_by_key(|&(_, &ticks)| ticks)
        .map_or(0, |(trip, _)| trip);
    let (min, median, max) = min_median_max(&mut trips);
    println!(
        "irq: sgi round trip: min {min} median {median} max {max} ticks ({} trips; median {} us, slowest trip {slowest})",
        trips.len(),
        timer::ticks_to_us(median)
    );
    if wrong.is_empty() {
        Ok(Outcome::Passed)
    } else {
        Err(wrong.join("; "))
    }
}
