//! The PL031 real-time clock (PrimeCell RTC PL031 TRM, chapter 3) as an interrupt source:
//! its alarm raises a level-sensitive SPI while RTCRIS is set, until RTCICR clears it. The
//! `spi-hw` check takes a few alarms and clears each; storm mode never clears one.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use safe_mmio::fields::{ReadPure, ReadPureWrite, WriteOnly};
use safe_mmio::{field, UniqueMmioPointer};
use tandem_guest_rt::gic::{self, Ack, Trigger};
use tandem_guest_rt::irq::IrqMutex;
use tandem_guest_rt::println;
use tandem_guest_rt::timer::{self, Timer};

use crate::{wait_for, Outcome, Setup, DEFAULT_PRIORITY};

/// The PL031's registers.
#[repr(C)]
struct Pl031Registers {
    /// RTCDR: the current time, in seconds.
    dr: ReadPure<u32>,
    /// RTCMR: the alarm's match value.
    mr: ReadPureWrite<u32>,
    /// RTCLR: load (sets the time).
    lr: ReadPureWrite<u32>,
    /// RTCCR: bit 0 starts the clock.
    cr: ReadPureWrite<u32>,
    /// RTCIMSC: bit 0 unmasks the alarm interrupt.
    imsc: ReadPureWrite<u32>,
    /// RTCRIS: bit 0, the raw alarm status.
    ris: ReadPure<u32>,
    /// RTCMIS: bit 0, the alarm status after the mask: the interrupt line.
    mis: ReadPure<u32>,
    /// RTCICR: writing bit 0 clears the alarm.
    icr: WriteOnly<u32>,
}

const _: () = assert!(core::mem::offset_of!(Pl031Registers, icr) == 0x1c);

/// A GIC specifier's type cell for an SPI.
const SPI: u32 = 0;
/// How long one alarm (one second ahead, in RTC seconds) may take to arrive.
const ALARM_TIMEOUT_US: u64 = 3_000_000;
/// The latest an alarm one second ahead may come.
const ALARM_BOUND_US: u64 = 2_500_000;
/// How long storm mode waits for its first interrupt.
const STORM_START_TIMEOUT_US: u64 = 5_000_000;

/// The PL031 the DTB describes.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Its registers.
    pub base: u64,
    /// Its interrupt's INTID.
    pub intid: u32,
}

/// Finds the first `arm,pl031` node of `dtb` and its SPI.
pub fn find(dtb: &[u8]) -> Result<Option<Found>, String> {
    let fdt = fdt::Fdt::new(dtb).map_err(|e| format!("cannot read the device tree: {e:?}"))?;
    let Some(node) = fdt.find_compatible(&["arm,pl031"]) else {
        return Ok(None);
    };
    if node
        .property("status")
        .and_then(|p| p.as_str())
        .is_some_and(|s| s != "okay" && s != "ok")
    {
        return Ok(None);
    }
    let base = node
        .reg()
        .and_then(|mut r| r.next())
        .map(|r| r.starting_address as u64)
        .ok_or_else(|| format!("{}: no reg", node.name))?;
    let cells = crate::board::interrupt_cells(&node);
    match cells.as_slice() {
        [SPI, number, _flags, ..] => Ok(Some(Found {
            base,
            intid: 32 + number,
        })),
        _ => Err(format!(
            "{}: interrupts {cells:?} is not a GIC SPI specifier",
            node.name
        )),
    }
}

static RTC: IrqMutex<Option<UniqueMmioPointer<'static, Pl031Registers>>> = IrqMutex::new(None);

/// Alarms taken, the virtual counter at the last one's handler entry, RTCMIS then and
/// RTCRIS after clearing.
static ALARMS: AtomicU32 = AtomicU32::new(0);
static ALARM_AT: AtomicU64 = AtomicU64::new(0);
static MIS_SEEN: AtomicU32 = AtomicU32::new(0);
static RIS_AFTER: AtomicU32 = AtomicU32::new(0);

/// Storm mode: interrupts taken, when the first came, when the last count was printed,
/// when to stop (0: never), whether it stopped.
static STORM: AtomicBool = AtomicBool::new(false);
static STORM_COUNT: AtomicU64 = AtomicU64::new(0);
static STORM_START: AtomicU64 = AtomicU64::new(0);
static STORM_PRINTED: AtomicU64 = AtomicU64::new(0);
static STORM_END: AtomicU64 = AtomicU64::new(0);
static STORM_DONE: AtomicBool = AtomicBool::new(false);

/// Takes the PL031 at `found.base` and routes its interrupt to this vCPU, enabled.
fn open(found: &Found) -> Result<(), String> {
    let ptr = usize::try_from(found.base)
        .ok()
        .and_then(|b| NonNull::new(b as *mut Pl031Registers))
        .ok_or_else(|| format!("pl031 at {:#x} is unreachable", found.base))?;
    // SAFETY: the DTB says a PL031 is at `base` (passed through to this VM, or the
    // board's own natively); with the MMU off it is reached as Device memory, and this is
    // the only pointer to it.
    let mut rtc = unsafe { UniqueMmioPointer::new(ptr) };
    field!(rtc, imsc).write(0);
    field!(rtc, icr).write(1);
    if field!(rtc, cr).read() & 1 == 0 {
        field!(rtc, cr).write(1);
    }
    *RTC.lock() = Some(rtc);
    gic::configure(found.intid, DEFAULT_PRIORITY, Trigger::Level)
        .and_then(|()| gic::route_to_me(found.intid))
        .and_then(|()| gic::enable(found.intid))
        .map_err(|e| format!("INTID {}: {e}", found.intid))
}

/// Runs `f` on the PL031; `None` if it is not open.
fn with_rtc<R>(f: impl FnOnce(&mut UniqueMmioPointer<'static, Pl031Registers>) -> R) -> Option<R> {
    RTC.lock().as_mut().map(f)
}

/// Sets the alarm one RTC second ahead and unmasks it; returns RTCDR.
fn arm() -> Option<(u32, u64)> {
    with_rtc(|rtc| {
        let now = field!(*rtc, dr).read();
        let written_at = Timer::Virtual.now();
        field!(*rtc, mr).write(now.wrapping_add(1));
        field!(*rtc, imsc).write(1);
        (now, written_at)
    })
}

/// The PL031's interrupt handler.
pub fn on_alarm(ack: Ack) {
    let now = Timer::Virtual.now();
    if STORM.load(Ordering::Relaxed) {
        storm_tick(now);
    } else {
        let status = with_rtc(|rtc| {
            let mis = field!(*rtc, mis).read();
            field!(*rtc, icr).write(1);
            (mis, field!(*rtc, ris).read())
        });
        let (mis, ris) = status.unwrap_or((u32::MAX, u32::MAX));
        MIS_SEEN.store(mis, Ordering::SeqCst);
        RIS_AFTER.store(ris, Ordering::SeqCst);
        ALARM_AT.store(now, Ordering::SeqCst);
        ALARMS.fetch_add(1, Ordering::SeqCst);
    }
    gic::end_of_interrupt(ack);
}

/// The `spi-hw` check.
pub fn check(setup: &Setup) -> Result<Outcome, String> {
    let Some(found) = &setup.rtc else {
        return Ok(Outcome::Skipped(
            "the device tree lists no arm,pl031".into(),
        ));
    };
    open(found)?;
    let mut wrong = Vec::new();
    let mut latencies = Vec::new();
    for n in 0..setup.alarms {
        let before = ALARMS.load(Ordering::SeqCst);
        let start = Timer::Virtual.now();
        let (dr, written_at) = arm().ok_or("the pl031 is not open")?;
        let came = wait_for(ALARM_TIMEOUT_US, Timer::Virtual, || {
            ALARMS.load(Ordering::SeqCst) > before
        });
        if !came {
            let state = with_rtc(|rtc| {
                (
                    field!(*rtc, dr).read(),
                    field!(*rtc, ris).read(),
                    field!(*rtc, mis).read(),
                )
            });
            wrong.push(format!(
                "alarm {n} (RTCDR {dr}, RTCMR {}): no interrupt within {} s; then RTCDR, RTCRIS, RTCMIS = {state:?}, GIC pending {:?}, enabled {:?}",
                dr.wrapping_add(1),
                ALARM_TIMEOUT_US / 1_000_000,
                gic::is_pending(found.intid),
                gic::is_enabled(found.intid),
            ));
            break;
        }
        let alarm_at = ALARM_AT.load(Ordering::SeqCst);
        let after_us = timer::ticks_to_us(alarm_at.wrapping_sub(start));
        // QEMU's PL031 fires (RTCMR - RTCDR) seconds of its clock after the RTCMR write;
        // with `-rtc clock=vm` that clock is the one the counter counts, so the latency is
        // exact but for the few instructions between the counter read and the write.
        let fires_at = written_at.wrapping_add(timer::frequency());
        latencies.push(alarm_at.saturating_sub(fires_at));
        println!(
            "irq: spi-hw: alarm {n}: RTCDR {dr}, match {}, interrupt after {} ms",
            dr.wrapping_add(1),
            after_us / 1000
        );
        if after_us > ALARM_BOUND_US {
            wrong.push(format!(
                "alarm {n} came after {} ms, more than {} ms",
                after_us / 1000,
                ALARM_BOUND_US / 1000
            ));
        }
        let mis = MIS_SEEN.load(Ordering::SeqCst);
        if mis & 1 == 0 {
            wrong.push(format!("alarm {n}: RTCMIS read {mis:#x} in the handler"));
        }
        let ris = RIS_AFTER.load(Ordering::SeqCst);
        if ris & 1 != 0 {
            wrong.push(format!("alarm {n}: RTCRIS still {ris:#x} after RTCICR"));
        }
    }
    // A cleared level interrupt must not come back.
    let taken = ALARMS.load(Ordering::SeqCst);
    wait_for(20_000, Timer::Virtual, || false);
    let extra = ALARMS.load(Ordering::SeqCst) - taken;
    if extra != 0 {
        wrong.push(format!(
            "{extra} more interrupts after the last alarm was cleared"
        ));
    }
    with_rtc(|rtc| field!(*rtc, imsc).write(0));
    let _ = gic::disable(found.intid);
    let (min, median, max) = crate::min_median_max(&mut latencies);
    println!(
        "irq: spi-hw latency: min {min} median {median} max {max} ticks ({} alarms, from the pl031's match; median {} us)",
        latencies.len(),
        timer::ticks_to_us(median)
    );
    if wrong.is_empty() {
        Ok(Outcome::Passed)
    } else {
        Err(wrong.join("; "))
    }
}

/// Counts one storm interrupt; prints the count about once a second and ends the storm at
/// its end time. Runs in the handler: the storm may leave no time for anything else.
fn storm_tick(now: u64) {
    let count = STORM_COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    if count == 1 {
        STORM_START.store(now, Ordering::Relaxed);
        STORM_PRINTED.store(now, Ordering::Relaxed);
        println!("irq: storm: first interrupt");
        return;
    }
    let start = STORM_START.load(Ordering::Relaxed);
    if now.wrapping_sub(STORM_PRINTED.load(Ordering::Relaxed)) >= timer::frequency() {
        STORM_PRINTED.store(now, Ordering::Relaxed);
        println!(
            "irq: storm: {count} interrupts in {} ms",
            timer::ticks_to_us(now.wrapping_sub(start)) / 1000
        );
    }
    let end = STORM_END.load(Ordering::Relaxed);
    if end != 0 && now.wrapping_sub(start) >= end {
        with_rtc(|rtc| {
            field!(*rtc, imsc).write(0);
            field!(*rtc, icr).write(1);
        });
        STORM_DONE.store(true, Ordering::SeqCst);
    }
}

/// Storm mode: an alarm that is never cleared, for `storm_ms` of guest time (0: for ever).
pub fn storm(found: Option<&Found>, storm_ms: u64) -> Result<(), String> {
    let found = found.ok_or("storm mode needs an arm,pl031 in the device tree")?;
    STORM_END.store(
        timer::us_to_ticks(storm_ms.saturating_mul(1000)),
        Ordering::Relaxed,
    );
    STORM.store(true, Ordering::SeqCst);
    open(found)?;
    let (dr, _) = arm().ok_or("the pl031 is not open")?;
    println!(
        "irq: storm: alarm at RTCDR {} (now {dr}), never cleared: INTID {} stays asserted",
        dr.wrapping_add(1),
        found.intid
    );
    if !wait_for(STORM_START_TIMEOUT_US, Timer::Virtual, || {
        STORM_COUNT.load(Ordering::Relaxed) > 0
    }) {
        return Err(format!(
            "storm: no interrupt from the pl031 within {} s (GIC pending {:?})",
            STORM_START_TIMEOUT_US / 1_000_000,
            gic::is_pending(found.intid)
        ));
    }
    while !wait_for(1_000_000, Timer::Virtual, || {
        STORM_DONE.load(Ordering::SeqCst)
    }) {}
    let count = STORM_COUNT.load(Ordering::Relaxed);
    println!("irq: storm: over after {count} interrupts");
    Ok(())
}
