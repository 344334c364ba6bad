//! The `vtimer` and `ptimer` checks: deadlines on one EL1 timer, each set through
//! CNTx_CVAL_EL0 or CNTx_TVAL_EL0 in turn, waited for in WFI with the other timer as the
//! watchdog; the handler records its timer's counter at entry and stops the timer.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tandem_guest_rt::gic::{self, Ack};
use tandem_guest_rt::rand::XorShift64Star;
use tandem_guest_rt::timer::{self, Timer};
use tandem_guest_rt::{cpu_index, irq, println, psci};

use crate::{min_median_max, spin_for, wait_for, Outcome, Setup};

/// Deadlines are this far ahead, picked at random in between.
const DELTA_US: core::ops::Range<u64> = 100..2_000;
/// How far ahead [`stopped_before_taken`] sets its deadline, and how long it lets the
/// fired timer, then the stopped one, sit.
const STOPPED_AHEAD_US: u64 = 200;
const STOPPED_SETTLE_US: u64 = 2_000;
/// Wrong answers reported in full; the rest are counted.
const MAX_REPORTED: usize = 4;

/// Per timer (see [`slot`]): vCPU 0 is checking it, so its interrupts are recorded.
static UNDER_TEST: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
/// Per timer: interrupts recorded, the timer's counter at the last one's handler entry,
/// and whether CNTx_CTL_EL0.ISTATUS was set then.
static FIRED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static FIRED_AT: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static FIRED_STATUS: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

fn slot(timer: Timer) -> usize {
    match timer {
        Timer::Virtual => 0,
        Timer::Physical => 1,
    }
}

fn other(timer: Timer) -> Timer {
    match timer {
        Timer::Virtual => Timer::Physical,
        Timer::Physical => Timer::Virtual,
    }
}

fn check_name(timer: Timer) -> &'static str {
    match timer {
        Timer::Virtual => "vtimer",
        Timer::Physical => "ptimer",
    }
}

/// The handler of both timers' interrupts, on every vCPU: a timer under test records the
/// arrival; either way the timer is stopped, which lowers its interrupt, before the EOI.
pub fn on_timer(timer: Timer, ack: Ack) {
    let now = timer.now();
    let control = timer.control();
    timer.stop();
    let s = slot(timer);
    if cpu_index() == 0 && UNDER_TEST[s].load(Ordering::SeqCst) {
        FIRED_AT[s].store(now, Ordering::SeqCst);
        FIRED_STATUS[s].store(control.fired, Ordering::SeqCst);
        FIRED[s].fetch_add(1, Ordering::SeqCst);
    }
    gic::end_of_interrupt(ack);
}

/// The virtual counter must start near 0 for each VM: it reads the time since the VM
/// started, not since the machine did. Near 0 is at most `start_bound_us` when `main`
/// starts; on a loaded host, where the guest's own start takes longer, at most half the
/// physical counter will do too: the counter is then offset by at least what it reads,
/// where one not offset at all reads what the physical counter does (the machine ran the
/// hypervisor's boot before the VM's).
fn check_start(setup: &Setup, wrong: &mut Vec<String>) {
    let (virtual_ticks, physical_ticks) = setup.counters_at_start;
    let us = timer::ticks_to_us(virtual_ticks);
    println!(
        "irq: vtimer: counters when main started: virtual {virtual_ticks} ticks ({us} us), physical {physical_ticks} ticks ({} us)",
        timer::ticks_to_us(physical_ticks)
    );
    if us > setup.start_bound_us && virtual_ticks > physical_ticks / 2 {
        wrong.push(format!(
            "the virtual counter read {us} us when main started, more than {} us and more than half the physical counter: it does not start at 0 with the VM",
            setup.start_bound_us
        ));
    }
}

/// Arms one deadline `ticks` ahead, through CVAL (`by_cval`) or TVAL, and starts the
/// timer; returns the deadline (CVAL).
fn arm(timer: Timer, ticks: u64, by_cval: bool, wrong: &mut Vec<String>) -> u64 {
    let deadline = if by_cval {
        let deadline = timer.now().wrapping_add(ticks);
        timer.set_compare(deadline);
        let read = timer.compare();
        if read != deadline {
            wrong.push(format!("CVAL written {deadline:#x} reads back {read:#x}"));
        }
        deadline
    } else {
        let before = timer.now();
        timer.set_timer_value(ticks as i32);
        let after = timer.now();
        let deadline = timer.compare();
        if deadline < before + ticks || deadline > after + ticks {
            wrong.push(format!(
                "TVAL {ticks} written between counter {before} and {after} set CVAL to {deadline}"
            ));
        }
        deadline
    };
    timer.start();
    let control = timer.control();
    if !control.enabled || control.masked {
        wrong.push(format!("CTL after starting reads {control:?}"));
    }
    let left = timer.timer_value();
    if i64::from(left) > ticks as i64 {
        wrong.push(format!(
            "TVAL reads {left} just after a {ticks}-tick deadline was set"
        ));
    }
    deadline
}

/// WFI wake-up: with IRQs masked, so that no handler runs, the vCPU waits in WFI for a
/// deadline of `timer`; the wake-up is the counter at the first instruction after the
/// WFI that returned past the deadline, minus the deadline. The other timer is the
/// watchdog (masked too, its firing also ends a WFI). As in [`stopped_before_taken`], one
/// exit comes between stopping the timer and unmasking IRQs.
fn wake_ups(timer: Timer, setup: &Setup, rng: &mut XorShift64Star, wrong: &mut Vec<String>) {
    let watchdog = other(timer);
    let mut wake_ups = Vec::new();
    irq::mask();
    for k in 0..setup.deadlines {
        let delta_us = rng.in_range(DELTA_US);
        let deadline = timer.now().wrapping_add(timer::us_to_ticks(delta_us));
        watchdog.set_compare(
            watchdog
                .now()
                .wrapping_add(timer::us_to_ticks(delta_us + 1_000_000)),
        );
        watchdog.start();
        timer.set_compare(deadline);
        timer.start();
        let woke_at = loop {
            irq::wait();
            let now = timer.now();
            if now >= deadline || watchdog.control().fired {
                break now;
            }
        };
        timer.stop();
        watchdog.stop();
        if woke_at >= deadline {
            wake_ups.push(woke_at - deadline);
        } else {
            wrong.push(format!(
                "wake-up {k}: WFI with IRQs masked did not end for a deadline {delta_us} us ahead within a second"
            ));
        }
    }
    let _ = psci::version();
    irq::unmask();
    spin_for(STOPPED_SETTLE_US, || false);
    irq::mask();
    let (min, median, max) = min_median_max(&mut wake_ups);
    println!(
        "irq: wfi wake-up: min {min} median {median} max {max} ticks ({} deadlines, IRQs masked; median {} us)",
        wake_ups.len(),
        timer::ticks_to_us(median)
    );
}

/// A timer that fires while IRQs are masked and is stopped before they are unmasked
/// lowers its level-sensitive interrupt again: nothing may be taken afterwards (GIC: a
/// level-sensitive interrupt is pending only while its input is asserted). A hypervisor
/// that forwards the timer (its registers untrapped) sees the stop only when the guest
/// next exits, so one exit (PSCI_VERSION) comes between the stop and the unmasking.
fn stopped_before_taken(timer: Timer, wrong: &mut Vec<String>) {
    let s = slot(timer);
    irq::mask();
    let before = FIRED[s].load(Ordering::SeqCst);
    timer.set_compare(
        timer
            .now()
            .wrapping_add(timer::us_to_ticks(STOPPED_AHEAD_US)),
    );
    timer.start();
    let fired = spin_for(STOPPED_AHEAD_US + 1_000_000, || timer.control().fired);
    // Long enough past the deadline that any interrupt controller has seen the line.
    spin_for(STOPPED_SETTLE_US, || false);
    timer.stop();
    let _ = psci::version();
    irq::unmask();
    spin_for(STOPPED_SETTLE_US, || false);
    irq::mask();
    let late = FIRED[s].load(Ordering::SeqCst) - before;
    if !fired {
        wrong.push("with IRQs masked, ISTATUS never rose".into());
    } else if late != 0 {
        wrong.push(format!(
            "{late} interrupts taken after the timer fired with IRQs masked and was stopped (then an HVC) before they were unmasked: the line had dropped (ISTATUS in the handler {})",
            FIRED_STATUS[s].load(Ordering::SeqCst)
        ));
    }
}

/// The `vtimer` (`timer` = [`Timer::Virtual`]) or `ptimer` check.
pub fn check(timer: Timer, setup: &Setup) -> Result<Outcome, String> {
    let name = check_name(timer);
    let s = slot(timer);
    let mut wrong = Vec::new();
    if timer == Timer::Virtual {
        check_start(setup, &mut wrong);
    }
    timer.stop();
    FIRED[s].store(0, Ordering::SeqCst);
    UNDER_TEST[s].store(true, Ordering::SeqCst);
    let mut rng = XorShift64Star::new(0x7133 + s as u64);
    let mut latencies = Vec::new();
    let mut arrived = 0;
    for k in 0..setup.deadlines {
        let delta_us = rng.in_range(DELTA_US);
        let ticks = timer::us_to_ticks(delta_us);
        let before = FIRED[s].load(Ordering::SeqCst);
        let deadline = arm(timer, ticks, k % 2 == 0, &mut wrong);
        let came = wait_for(
            delta_us + setup.latency_bound_us + 1_000_000,
            other(timer),
            || FIRED[s].load(Ordering::SeqCst) > before,
        );
        if !came {
            let control = timer.control();
            timer.stop();
            wrong.push(format!(
                "deadline {k} ({delta_us} us ahead): no interrupt within {} ms; CTL then {control:?}, counter {} past CVAL",
                (delta_us + setup.latency_bound_us) / 1000 + 1000,
                timer.now().saturating_sub(deadline)
            ));
            continue;
        }
        arrived += 1;
        let at = FIRED_AT[s].load(Ordering::SeqCst);
        if !FIRED_STATUS[s].load(Ordering::SeqCst) {
            wrong.push(format!("deadline {k}: ISTATUS was clear in the handler"));
        }
        if at < deadline {
            wrong.push(format!(
                "deadline {k}: interrupt {} ticks before the deadline",
                deadline - at
            ));
            continue;
        }
        let latency = at - deadline;
        if timer::ticks_to_us(latency) > setup.latency_bound_us {
            wrong.push(format!(
                "deadline {k}: interrupt {} us after the deadline, more than {} us",
                timer::ticks_to_us(latency),
                setup.latency_bound_us
            ));
        }
        latencies.push(latency);
    }
    // A stopped timer must stay quiet: no second interrupt for any deadline.
    wait_for(2_000, other(timer), || false);
    let taken = FIRED[s].load(Ordering::SeqCst);
    if taken != arrived {
        wrong.push(format!(
            "{taken} interrupts for {arrived} deadlines that fired"
        ));
    }
    stopped_before_taken(timer, &mut wrong);
    UNDER_TEST[s].store(false, Ordering::SeqCst);
    if timer == Timer::Virtual {
        wake_ups(timer, setup, &mut rng, &mut wrong);
    }
    let (min, median, max) = min_median_max(&mut latencies);
    println!(
        "irq: {name} latency: min {min} median {median} max {max} ticks ({} deadlines; median {} us)",
        latencies.len(),
        timer::ticks_to_us(median)
    );
    if wrong.is_empty() {
        return Ok(Outcome::Passed);
    }
    let more = wrong.len().saturating_sub(MAX_REPORTED);
    wrong.truncate(MAX_REPORTED);
    let mut why = wrong.join("; ");
    if more > 0 {
        why.push_str(&format!(" (and {more} more)"));
    }
    Err(why)
}
