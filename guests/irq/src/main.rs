//! Interrupt test guest: drives the GIC its DTB describes (GICv3: ICC_* system registers,
//! GICD and GICR; GICv2: GICD and GICC) and the EL1 timers, handling every interrupt in its
//! IRQ vector, and checks what a VM's interrupt path must deliver. Each check prints its
//! findings as `irq: ...` lines and one marker, `TEST PASS <check>` (with `(skipped: why)`
//! when it cannot run) or `TEST FAIL <check>: <why>`:
//!
//! | Check | What must hold |
//! |---|---|
//! | `cost` | a null hypercall (`VENDOR_HYP_CALL_UID`, or `null_call`) and an MMIO read of `GICD_TYPER`, 200 each: every call returns, every read gives the same value; round trips in counter ticks |
//! | `sgi` | SGI ping-pong between vCPU 0 and each other vCPU (started with PSCI CPU_ON): every ping and pong arrives, counts match exactly; round trips in counter ticks. Skipped with one vCPU |
//! | `vtimer` | the virtual counter starts near 0 (see `start_bound_us`); virtual-timer deadlines (CNTV_CVAL/TVAL_EL0, its PPI): each interrupt at or after its deadline, within a bound, with ISTATUS set, once; then WFI wake-ups with IRQs masked, timed from the deadline to the instruction after the WFI |
//! | `ptimer` | the same with the EL1 physical timer (CNTP_*_EL0, CNTPCT_EL0) |
//! | `priority` | a higher-priority SGI preempts a lower one's handler while GICD/GICR_ISACTIVER shows the lower one active; equal and lower priorities wait, pending, until the EOI, then arrive in priority order; the priority mask holds back what it masks |
//! | `spi-hw` | the PL031 RTC's alarm (a level SPI, passed through to the VM): each alarm arrives, is cleared at the device and ended; latencies from the alarm's firing (one second of the VM clock after the RTCMR write) to the handler. Skipped when the DTB has no `arm,pl031` |
//!
//! The guest passes (`TEST PASS irq`) when no check failed, then powers off.
//!
//! With `mode=storm` it runs none of these: it sets a PL031 alarm and never clears it, so
//! the level-sensitive interrupt stays asserted; the handler acknowledges and ends it over
//! and over, printing `irq: storm: <n> interrupts in <ms> ms` about once a second, forever
//! (or for `storm_ms`, after which it clears the alarm and passes). Run beside another VM,
//! that VM must not starve.
//!
//! Command line (`/chosen/bootargs`), every word optional: `mode=check|storm`,
//! `trips=<n>` (SGI round trips in all, default 1000), `deadlines=<n>` (per timer, default
//! 20), `alarms=<n>` (default 2), `latency_bound_us=<n>` (latest a timer interrupt may
//! arrive after its deadline, default 50000), `start_bound_us=<n>` (the most the virtual
//! counter may show when `main` starts, default 25000; more passes if it is at most half
//! of the physical counter), `null_call=<function id>` (the SMCCC call the `cost` check
//! times, default 0x8600ff01, `VENDOR_HYP_CALL_UID`), `storm_ms=<n>`.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod board;
mod cost;
mod priority;
mod rtc;
mod sgi;
mod timers;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use board::Board;
use tandem_guest_rt::entry::MAX_CPUS;
use tandem_guest_rt::gic::{self, Trigger};
use tandem_guest_rt::timer::{self, Timer};
use tandem_guest_rt::{args, cpu_index, irq, println, set_irq_handler, Boot, Failure, Guest};

/// The priority of every interrupt but those of the `priority` check.
pub const DEFAULT_PRIORITY: u8 = 0xa0;

/// The timers' INTIDs, from the DTB's timer node.
static VTIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static PTIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
/// The PL031's INTID, if the DTB has one.
static RTC_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Per vCPU: how many IRQ handlers are running (2 while one preempts another).
pub static DEPTH: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Interrupts acknowledged that no check expects, and the last such INTID.
static UNEXPECTED: AtomicU32 = AtomicU32::new(0);
static UNEXPECTED_LAST: AtomicU32 = AtomicU32::new(0);
/// IRQ exceptions that found no interrupt to acknowledge (a spurious INTID).
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

/// The IRQ vector's handler, on every vCPU: acknowledges one interrupt and hands it to the
/// check it belongs to, which ends it. Handlers may unmask IRQs to be preempted; IRQs are
/// masked again before returning to the vector.
fn on_irq() {
    let Some(ack) = gic::acknowledge() else {
        SPURIOUS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let depth = &DEPTH[cpu_index()];
    depth.fetch_add(1, Ordering::SeqCst);
    let intid = ack.intid();
    if intid == VTIMER_INTID.load(Ordering::Relaxed) {
        timers::on_timer(Timer::Virtual, ack);
    } else if intid == PTIMER_INTID.load(Ordering::Relaxed) {
        timers::on_timer(Timer::Physical, ack);
    } else if intid == RTC_INTID.load(Ordering::Relaxed) {
        rtc::on_alarm(ack);
    } else if sgi::handles(intid) {
        sgi::on_sgi(ack);
    } else if priority::handles(intid) {
        priority::on_sgi(ack);
    } else {
        UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        UNEXPECTED_LAST.store(intid, Ordering::Relaxed);
        gic::end_of_interrupt(ack);
    }
    irq::mask();
    depth.fetch_sub(1, Ordering::SeqCst);
}

/// Sets up this vCPU's CPU interface and the private interrupts every vCPU uses: the two
/// timers (the watchdog of [`wait_for`]) and the SGIs of the `sgi` check.
pub fn setup_cpu() -> Result<(), String> {
    gic::init_cpu().map_err(|e| format!("vCPU {}: GIC: {e}", cpu_index()))?;
    Timer::Virtual.stop();
    Timer::Physical.stop();
    for intid in [
        VTIMER_INTID.load(Ordering::Relaxed),
        PTIMER_INTID.load(Ordering::Relaxed),
    ] {
        gic::configure(intid, DEFAULT_PRIORITY, Trigger::Level)
            .and_then(|()| gic::enable(intid))
            .map_err(|e| format!("vCPU {}: timer INTID {intid}: {e}", cpu_index()))?;
    }
    sgi::setup_cpu().map_err(|e| format!("vCPU {}: SGIs: {e}", cpu_index()))
}

/// Waits, in WFI and taking IRQs, until `done` returns true or `timeout_us` pass; returns
/// whether `done` became true. `watchdog` (a timer no check is using on this vCPU) wakes
/// the WFI at the timeout. Called and returns with IRQs masked.
pub fn wait_for(timeout_us: u64, watchdog: Timer, mut done: impl FnMut() -> bool) -> bool {
    let deadline = watchdog
        .now()
        .saturating_add(timer::us_to_ticks(timeout_us));
    watchdog.set_compare(deadline);
    watchdog.start();
    let result = loop {
        irq::mask();
        if done() {
            break true;
        }
        if watchdog.now() >= deadline {
            break done();
        }
        irq::wait();
        irq::unmask();
    };
    irq::mask();
    watchdog.stop();
    result
}

/// Spins for `us` microseconds of virtual counter time with IRQs as they are, stopping
/// early once `done` returns true; returns whether it did. For waits inside an IRQ handler,
/// where the vCPU must keep running to be preempted.
pub fn spin_for(us: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = Timer::Virtual.now().saturating_add(timer::us_to_ticks(us));
    loop {
        if done() {
            return true;
        }
        if Timer::Virtual.now() >= end {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Minimum, median and maximum of `values` (sorted in place); zeros when empty.
pub fn min_median_max(values: &mut [u64]) -> (u64, u64, u64) {
    values.sort_unstable();
    match (values.first(), values.get(values.len() / 2), values.last()) {
        (Some(&min), Some(&median), Some(&max)) => (min, median, max),
        _ => (0, 0, 0),
    }
}

/// A check: how it ended, or why it failed.
type Check = fn(&Setup) -> Result<Outcome, String>;

/// How a check ended when it did not fail.
pub enum Outcome {
    Passed,
    /// Could not run here; passes with this note.
    Skipped(String),
}

/// What the checks need from the board and the command line.
pub struct Setup {
    /// The MPIDRs of the other vCPUs.
    pub others: Vec<u64>,
    /// SGI round trips in all.
    pub trips: u64,
    /// Deadlines per timer.
    pub deadlines: u64,
    /// PL031 alarms.
    pub alarms: u64,
    /// The latest a timer interrupt may come after its deadline.
    pub latency_bound_us: u64,
    /// The most the virtual counter may show when `main` starts.
    pub start_bound_us: u64,
    /// The virtual and physical counters when `main` started.
    pub counters_at_start: (u64, u64),
    /// The PL031, if the DTB has one: its registers' address and INTID.
    pub rtc: Option<rtc::Found>,
    /// The GIC distributor's base.
    pub gicd: u64,
    /// The SMCCC function ID the `cost` check times as its null hypercall.
    pub null_call: u32,
}

/// Runs one check and prints its marker; returns whether it passed.
fn run_check(name: &str, check: impl FnOnce() -> Result<Outcome, String>) -> bool {
    let unexpected = UNEXPECTED.load(Ordering::Relaxed);
    let result = check().and_then(|outcome| {
        let now = UNEXPECTED.load(Ordering::Relaxed);
        if now != unexpected {
            return Err(format!(
                "{} unexpected interrupts (the last INTID {})",
                now - unexpected,
                UNEXPECTED_LAST.load(Ordering::Relaxed)
            ));
        }
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Passed) => {
            println!("TEST PASS {name}");
            true
        }
        Ok(Outcome::Skipped(why)) => {
            println!("TEST PASS {name} (skipped: {why})");
            true
        }
        Err(why) => {
            println!("TEST FAIL {name}: {why}");
            false
        }
    }
}

fn arg(bootargs: &str, key: &str, default: u64) -> Result<u64, Failure> {
    match args::value(bootargs, key) {
        None => Ok(default),
        Some(text) => {
            args::parse_u64(text).ok_or_else(|| format!("bad {key}={text}: want a number").into())
        }
    }
}

struct Irq;

impl Guest for Irq {
    const NAME: &'static str = "irq";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let counters_at_start = (Timer::Virtual.now(), Timer::Physical.now());
        let board = Board::read(boot.dtb())?;
        let bootargs = board.bootargs.as_str();
        let storm = match args::value(bootargs, "mode") {
            None | Some("check") => false,
            Some("storm") => true,
            Some(other) => return Err(format!("bad mode={other}: want check or storm").into()),
        };
        VTIMER_INTID.store(board.vtimer_intid, Ordering::Relaxed);
        PTIMER_INTID.store(board.ptimer_intid, Ordering::Relaxed);
        let rtc = rtc::find(boot.dtb())?;
        if let Some(found) = &rtc {
            RTC_INTID.store(found.intid, Ordering::Relaxed);
        }
        let null_call = arg(bootargs, "null_call", cost::VENDOR_HYP_CALL_UID.into())?;
        let null_call = u32::try_from(null_call)
            .map_err(|_| format!("bad null_call={null_call:#x}: want a 32-bit function ID"))?;
        let me = tandem_guest_rt::mpidr();
        let setup = Setup {
            others: board.mpidrs.iter().copied().filter(|&m| m != me).collect(),
            trips: arg(bootargs, "trips", 1000)?,
            deadlines: arg(bootargs, "deadlines", 20)?,
            alarms: arg(bootargs, "alarms", 2)?,
            latency_bound_us: arg(bootargs, "latency_bound_us", 50_000)?,
            start_bound_us: arg(bootargs, "start_bound_us", 25_000)?,
            counters_at_start,
            rtc,
            gicd: board.gic.gicd().base,
            null_call,
        };
        let storm_ms = arg(bootargs, "storm_ms", 0)?;

        irq::mask();
        gic::init(&board.gic).map_err(|e| format!("GIC: {e}"))?;
        set_irq_handler(Some(on_irq));
        setup_cpu()?;
        println!(
            "irq: {}, {} vCPUs, counter at {} Hz, timer INTIDs {} (virtual) and {} (physical), {}",
            gic::version().map_or("no GIC".into(), |v| format!("{v}")),
            board.mpidrs.len(),
            timer::frequency(),
            board.vtimer_intid,
            board.ptimer_intid,
            match &setup.rtc {
                Some(found) => format!("pl031 at {:#x} on INTID {}", found.base, found.intid),
                None => "no pl031".into(),
            }
        );

        if storm {
            return rtc::storm(setup.rtc.as_ref(), storm_ms).map_err(Failure::from);
        }

        let mut failed = Vec::new();
        let checks: [(&str, Check); 6] = [
            ("cost", cost::check),
            ("sgi", sgi::check),
            ("vtimer", |s| timers::check(Timer::Virtual, s)),
            ("ptimer", |s| timers::check(Timer::Physical, s)),
            ("priority", priority::check),
            ("spi-hw", rtc::check),
        ];
        for (name, check) in checks {
            if !run_check(name, || check(&setup)) {
                failed.push(name);
            }
        }
        let spurious = SPURIOUS.load(Ordering::Relaxed);
        if spurious != 0 {
            println!("irq: {spurious} IRQs found nothing to acknowledge (spurious)");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("{} of 6 checks failed: {}", failed.len(), failed.join(", ")).into())
        }
    }
}

tandem_guest_rt::guest!(Irq);
