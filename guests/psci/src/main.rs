//! PSCI conformance guest: asks every question a VM's PSCI must answer (PSCI 1.x over HVC,
//! SMCCC 1.1) and checks each answer, CPU_ON and CPU_OFF of a second vCPU included.
//!
//! Every check prints `psci: <check>: ok (<answer>)` or `... WRONG (<answer>)`; the guest
//! passes only if all are right, else fails naming the wrong ones.
//!
//! SMCCC 1.1 is required unless the command line lowers it with `psci.smccc=1.0`, which the
//! native baseline on QEMU's own PSCI (SMCCC 1.0) uses.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use smccc::arch::SMCCC_VERSION;
use smccc::psci::{
    PSCI_AFFINITY_INFO_64, PSCI_CPU_OFF, PSCI_CPU_ON_64, PSCI_FEATURES, PSCI_SYSTEM_OFF,
    PSCI_SYSTEM_RESET, PSCI_VERSION,
};
use tandem_guest_rt::psci::{self, AffinityState, Error, SmcccVersion, Version};
use tandem_guest_rt::time::wait_until;
use tandem_guest_rt::{mpidr, println, start_cpu, Boot, Failure, Guest, StartError};

/// In the PSCI range (function numbers 0x00-0x1f) but defined by no PSCI version.
const UNDEFINED_PSCI_32: u32 = 0x8400_001f;
/// A 64-bit fast call in the standard service range that no specification defines.
const UNDEFINED_STANDARD_64: u32 = 0xc400_ffff;
/// SMCCC's "unknown function identifier", also PSCI's NOT_SUPPORTED.
const NOT_SUPPORTED: i32 = -1;
/// Guest time allowed for a vCPU to come up or go down.
const TIMEOUT_MS: u64 = 5_000;
/// The context ID the secondary must receive.
const CONTEXT: usize = 0x7a5c;

/// How many times a secondary entered `secondary`, and how many of those the boot vCPU has
/// let go; the MPIDR and context ID the last arrival saw.
static ARRIVALS: AtomicUsize = AtomicUsize::new(0);
static RELEASES: AtomicUsize = AtomicUsize::new(0);
static SEEN_MPIDR: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN_CONTEXT: AtomicUsize = AtomicUsize::new(0);

/// The answers so far; the names of the wrong ones.
struct Checks {
    wrong: Vec<String>,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, answer: impl Debug) {
        let verdict = if ok { "ok" } else { "WRONG" };
        println!("psci: {what}: {verdict} ({answer:?})");
        if !ok {
            self.wrong.push(what.into());
        }
    }
}

/// Runs on the second vCPU: reports in, waits to be let go, returns (the runtime then
/// calls CPU_OFF).
fn secondary(context: usize) {
    SEEN_MPIDR.store(mpidr(), Ordering::SeqCst);
    SEEN_CONTEXT.store(context, Ordering::SeqCst);
    let arrival = ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1;
    println!("psci: vCPU {:#x} up (context {context:#x})", mpidr());
    if !wait_until(TIMEOUT_MS, || RELEASES.load(Ordering::SeqCst) >= arrival) {
        tandem_guest_rt::fail(format_args!("vCPU {:#x} was never let go", mpidr()));
    }
}

/// Starts `target`, checks it runs with the right MPIDR and context, that AFFINITY_INFO
/// and a second CPU_ON see it on, then lets it call CPU_OFF and checks it goes off.
fn on_and_off(checks: &mut Checks, target: u64, round: &str) {
    let before = ARRIVALS.load(Ordering::SeqCst);
    let started = start_cpu(target, secondary, CONTEXT);
    checks.check(
        &format!("{round}: CPU_ON {target:#x}"),
        started.is_ok(),
        started,
    );
    if started.is_err() {
        return;
    }
    let arrived = wait_until(TIMEOUT_MS, || ARRIVALS.load(Ordering::SeqCst) > before);
    checks.check(&format!("{round}: vCPU {target:#x} runs"), arrived, arrived);
    if !arrived {
        return;
    }
    let seen = (
        SEEN_MPIDR.load(Ordering::SeqCst),
        SEEN_CONTEXT.load(Ordering::SeqCst),
    );
    checks.check(
        &format!("{round}: vCPU's MPIDR and context ID"),
        seen == (target, CONTEXT),
        seen,
    );
    let state = psci::affinity_info(target);
    checks.check(
        &format!("{round}: AFFINITY_INFO {target:#x} while running"),
        state == Ok(AffinityState::On),
        state,
    );
    let again = start_cpu(target, secondary, CONTEXT);
    checks.check(
        &format!("{round}: CPU_ON {target:#x} while running"),
        again == Err(StartError::Psci(Error::AlreadyOn)),
        again,
    );
    RELEASES.fetch_add(1, Ordering::SeqCst);
    let mut last = Ok(AffinityState::On);
    let off = wait_until(TIMEOUT_MS, || {
        last = psci::affinity_info(target);
        last == Ok(AffinityState::Off)
    });
    checks.check(
        &format!("{round}: AFFINITY_INFO {target:#x} after CPU_OFF"),
        off,
        last,
    );
}

/// SMCCC 1.0, the version of a PSCI implementation that does not announce SMCCC_VERSION.
const SMCCC_1_0: SmcccVersion = SmcccVersion { major: 1, minor: 0 };
/// What a Tandem VM must offer.
const SMCCC_1_1: SmcccVersion = SmcccVersion { major: 1, minor: 1 };

/// The lowest SMCCC version to accept: SMCCC 1.1 unless the command line says
/// `psci.smccc=<major>.<minor>` (native runs on QEMU's own PSCI, which is SMCCC 1.0).
fn smccc_minimum(bootargs: Option<&str>) -> Result<SmcccVersion, Failure> {
    let Some(value) = bootargs
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("psci.smccc="))
    else {
        return Ok(SMCCC_1_1);
    };
    let parsed = value
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    match parsed {
        Some((major, minor)) => Ok(SmcccVersion { major, minor }),
        None => Err(format!("bad psci.smccc={value}: want <major>.<minor>, e.g. 1.0").into()),
    }
}

struct Psci;

impl Guest for Psci {
    const NAME: &'static str = "psci";

    fn main(boot: &Boot) -> Result<(), Failure> {
        let board = boot
            .platform()
            .map_err(|e| format!("cannot read the device tree: {e}"))?;
        let me = mpidr();
        println!("psci: {} vCPUs, running on {me:#x}", board.cpus.len());
        let mut checks = Checks { wrong: Vec::new() };

        let version = psci::version();
        // PSCI 1.0 is the first with PSCI_FEATURES.
        let v1 = Version { major: 1, minor: 0 };
        checks.check(
            "PSCI_VERSION is 1.0 or later",
            version.is_ok_and(|v| v >= v1),
            version,
        );

        for (name, id) in [
            ("PSCI_VERSION", PSCI_VERSION),
            ("PSCI_FEATURES", PSCI_FEATURES),
            ("CPU_ON_64", PSCI_CPU_ON_64),
            ("CPU_OFF", PSCI_CPU_OFF),
            ("AFFINITY_INFO_64", PSCI_AFFINITY_INFO_64),
            ("SYSTEM_OFF", PSCI_SYSTEM_OFF),
            ("SYSTEM_RESET", PSCI_SYSTEM_RESET),
        ] {
            let answer = psci::features(id);
            checks.check(&format!("PSCI_FEATURES({name})"), answer.is_ok(), answer);
        }
        let answer = psci::features(UNDEFINED_PSCI_32);
        checks.check(
            &format!("PSCI_FEATURES({UNDEFINED_PSCI_32:#x}) is NOT_SUPPORTED"),
            answer == Err(Error::NotSupported),
            answer,
        );

        // SMCCC 1.1 and later are announced through PSCI_FEATURES(SMCCC_VERSION); without
        // it the caller must assume SMCCC 1.0 and not call SMCCC_VERSION (SMCCC 1.4, 7.1).
        let minimum = smccc_minimum(board.bootargs.as_deref())?;
        let announced = psci::features(SMCCC_VERSION);
        if announced.is_ok() {
            let smccc = psci::smccc_version();
            checks.check(
                &format!("SMCCC_VERSION is {minimum} or later"),
                smccc.is_ok_and(|v| v >= minimum.max(SMCCC_1_1)),
                smccc,
            );
        } else {
            checks.check(
                &format!("SMCCC_VERSION not announced, SMCCC 1.0 (at least {minimum} wanted)"),
                announced == Err(Error::NotSupported) && minimum <= SMCCC_1_0,
                announced,
            );
        }

        for id in [UNDEFINED_PSCI_32, UNDEFINED_STANDARD_64] {
            let x0 = psci::call(id, &[])[0];
            checks.check(
                &format!("unknown function {id:#x} gets NOT_SUPPORTED"),
                x0 as i32 == NOT_SUPPORTED,
                x0 as i64,
            );
        }

        let state = psci::affinity_info(me);
        checks.check(
            "AFFINITY_INFO of the calling vCPU",
            state == Ok(AffinityState::On),
            state,
        );
        let again = start_cpu(me, secondary, CONTEXT);
        checks.check(
            "CPU_ON of the calling vCPU",
            again == Err(StartError::Psci(Error::AlreadyOn)),
            again,
        );

        // An MPIDR no vCPU has: every affinity field 0xff.
        let bogus = 0xff_ffff;
        if board.cpus.iter().all(|cpu| cpu.mpidr != bogus) {
            let answer = start_cpu(bogus, secondary, CONTEXT);
            checks.check(
                &format!("CPU_ON {bogus:#x} (no such vCPU)"),
                answer == Err(StartError::Psci(Error::InvalidParameters)),
                answer,
            );
        }

        match board.cpus.iter().map(|cpu| cpu.mpidr).find(|&m| m != me) {
            Some(target) => {
                let state = psci::affinity_info(target);
                checks.check(
                    &format!("AFFINITY_INFO {target:#x} before CPU_ON"),
                    state == Ok(AffinityState::Off),
                    state,
                );
                on_and_off(&mut checks, target, "first start");
                on_and_off(&mut checks, target, "restart");
            }
            None => println!("psci: one vCPU only, CPU_ON/CPU_OFF not exercised"),
        }

        if checks.wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{} wrong: {}", checks.wrong.len(), checks.wrong.join("; ")).into())
        }
    }
}

tandem_guest_rt::guest!(Psci);
