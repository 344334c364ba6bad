//! The `priority` check, on vCPU 0 with SGIs it sends itself:
//!
//! - nesting: the handler of a low-priority SGI sends a high-priority one and unmasks IRQs;
//!   the high one must preempt it at once, and while it runs the low one must read active
//!   (GICR_ISACTIVER0 / GICD_ISACTIVER0) and the running priority be the high one's;
//! - no preemption: the handler of a high-priority SGI sends one of equal and one of lower
//!   priority and unmasks IRQs; neither may be taken, both must read pending, until its
//!   EOI, after which they come at once, the equal one first;
//! - the priority mask: with ICC_PMR_EL1 / GICC_PMR below an SGI's priority, the SGI stays
//!   pending until the mask is opened.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use tandem_guest_rt::gic::{self, Ack, SgiTarget, Trigger, IDLE_PRIORITY};
use tandem_guest_rt::irq::{self, IrqMutex};
use tandem_guest_rt::println;
use tandem_guest_rt::timer::Timer;

use crate::{spin_for, wait_for, Outcome, Setup, DEPTH};

/// The low-priority SGI.
const SGI_LOW: u32 = 8;
/// The high-priority SGI.
const SGI_HIGH: u32 = 9;
/// Another SGI at the high priority.
const SGI_EQUAL: u32 = 10;
const LOW_PRIORITY: u8 = 0xc0;
const HIGH_PRIORITY: u8 = 0x40;
/// The priority mask of the third part: masks [`LOW_PRIORITY`].
const MASK_BELOW_LOW: u8 = 0x80;

/// How long a handler waits for an interrupt that must come at once.
const AT_ONCE_US: u64 = 100_000;
/// How long it waits to see that an interrupt does not come.
const HELD_BACK_US: u64 = 2_000;
/// How long the check waits for its first SGI.
const TIMEOUT_US: u64 = 1_000_000;

/// Which part runs: the handlers behave accordingly.
const PART_NESTING: u8 = 1;
const PART_NO_PREEMPTION: u8 = 2;
const PART_MASK: u8 = 3;
static PART: AtomicU8 = AtomicU8::new(0);
/// The part's outer handler has finished.
static DONE: AtomicBool = AtomicBool::new(false);
/// Event order: each arrival and the EOI of the part's outer handler take the next number.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);
/// Per SGI (index SGI - [`SGI_LOW`]): the sequence number of its last arrival, 0 if none.
static ARRIVED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// The sequence number of the outer handler's EOI.
static EOI_AT: AtomicU64 = AtomicU64::new(0);
/// What the handlers saw, as text: the check's findings.
static FINDINGS: IrqMutex<Vec<String>> = IrqMutex::new(Vec::new());
/// Nesting depth the high SGI's handler saw.
static HIGH_DEPTH: AtomicUsize = AtomicUsize::new(0);

/// Whether `intid` is one of this check's SGIs.
pub fn handles(intid: u32) -> bool {
    (SGI_LOW..=SGI_EQUAL).contains(&intid)
}

fn index(sgi: u32) -> usize {
    (sgi - SGI_LOW) as usize
}

fn arrived(sgi: u32) -> bool {
    ARRIVED[index(sgi)].load(Ordering::SeqCst) != 0
}

fn note(finding: String) {
    FINDINGS.lock().push(finding);
}

/// Expects `what` to hold, noting `why` otherwise.
fn expect(what: bool, why: impl FnOnce() -> String) {
    if !what {
        note(why());
    }
}

fn active(sgi: u32) -> bool {
    gic::is_active(sgi).unwrap_or(false)
}

fn pending(sgi: u32) -> bool {
    gic::is_pending(sgi).unwrap_or(false)
}

fn send_to_me(sgi: u32) {
    if let Err(e) = gic::send_sgi(sgi, SgiTarget::Me) {
        note(format!("cannot send SGI {sgi}: {e}"));
    }
}

/// The handler of this check's SGIs.
pub fn on_sgi(ack: Ack) {
    let sgi = ack.intid();
    ARRIVED[index(sgi)].store(SEQUENCE.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
    match (PART.load(Ordering::SeqCst), sgi) {
        (PART_NESTING, SGI_LOW) => nesting_outer(ack),
        (PART_NESTING, SGI_HIGH) => nesting_inner(ack),
        (PART_NO_PREEMPTION, SGI_HIGH) => no_preemption_outer(ack),
        _ => gic::end_of_interrupt(ack),
    }
}

/// The low SGI's handler in the nesting part.
fn nesting_outer(ack: Ack) {
    expect(active(SGI_LOW), || {
        "in the low SGI's handler, ISACTIVER does not show it active".into()
    });
    let rpr = gic::running_priority();
    expect(rpr == LOW_PRIORITY, || {
        format!("in the low SGI's handler the running priority is {rpr:#x}, not {LOW_PRIORITY:#x}")
    });
    send_to_me(SGI_HIGH);
    irq::unmask();
    let preempted = spin_for(AT_ONCE_US, || arrived(SGI_HIGH));
    irq::mask();
    expect(preempted, || {
        format!(
            "the high SGI did not preempt the low one's handler within {} ms (high pending: {}, active: {})",
            AT_ONCE_US / 1000,
            pending(SGI_HIGH),
            active(SGI_HIGH)
        )
    });
    EOI_AT.store(SEQUENCE.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
    gic::end_of_interrupt(ack);
    DONE.store(true, Ordering::SeqCst);
}

/// The high SGI's handler in the nesting part, preempting [`nesting_outer`].
fn nesting_inner(ack: Ack) {
    HIGH_DEPTH.store(DEPTH[0].load(Ordering::SeqCst), Ordering::SeqCst);
    expect(active(SGI_LOW), || {
        "while the high SGI preempts it, ISACTIVER does not show the low SGI active".into()
    });
    expect(active(SGI_HIGH), || {
        "in the high SGI's handler, ISACTIVER does not show it active".into()
    });
    let rpr = gic::running_priority();
    expect(rpr == HIGH_PRIORITY, || {
        format!(
            "in the preempting handler the running priority is {rpr:#x}, not {HIGH_PRIORITY:#x}"
        )
    });
    gic::end_of_interrupt(ack);
}

/// The high SGI's handler in the no-preemption part.
fn no_preemption_outer(ack: Ack) {
    send_to_me(SGI_EQUAL);
    send_to_me(SGI_LOW);
    irq::unmask();
    let taken = spin_for(HELD_BACK_US, || arrived(SGI_EQUAL) || arrived(SGI_LOW));
    irq::mask();
    expect(!taken, || {
        format!(
            "during the high SGI's handler an SGI of {} priority was taken",
            if arrived(SGI_EQUAL) { "equal" } else { "lower" }
        )
    });
    expect(pending(SGI_EQUAL) && pending(SGI_LOW), || {
        format!(
            "during the high SGI's handler ISPENDR shows the equal SGI {} and the low one {}",
            if pending(SGI_EQUAL) {
                "pending"
            } else {
                "not pending"
            },
            if pending(SGI_LOW) {
                "pending"
            } else {
                "not pending"
            }
        )
    });
    EOI_AT.store(SEQUENCE.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
    gic::end_of_interrupt(ack);
    irq::unmask();
    let both = spin_for(AT_ONCE_US, || arrived(SGI_EQUAL) && arrived(SGI_LOW));
    irq::mask();
    expect(both, || {
        format!(
            "after the EOI the held-back SGIs did not come within {} ms (equal: {}, low: {})",
            AT_ONCE_US / 1000,
            arrived(SGI_EQUAL),
            arrived(SGI_LOW)
        )
    });
    DONE.store(true, Ordering::SeqCst);
}

fn reset(part: u8) {
    for a in &ARRIVED {
        a.store(0, Ordering::SeqCst);
    }
    EOI_AT.store(0, Ordering::SeqCst);
    DONE.store(false, Ordering::SeqCst);
    PART.store(part, Ordering::SeqCst);
}

/// Runs one part started by sending `first`; waits for its outer handler to finish.
fn run_part(part: u8, first: u32) {
    reset(part);
    send_to_me(first);
    if !wait_for(TIMEOUT_US, Timer::Virtual, || DONE.load(Ordering::SeqCst)) {
        note(format!(
            "part {part}: SGI {first} was not taken within {} ms",
            TIMEOUT_US / 1000
        ));
    }
}

fn nesting() {
    run_part(PART_NESTING, SGI_LOW);
    let depth = HIGH_DEPTH.load(Ordering::SeqCst);
    expect(depth == 2, || {
        format!("the high SGI's handler ran at depth {depth}, not nested in the low one's")
    });
    let (high, eoi) = (
        ARRIVED[index(SGI_HIGH)].load(Ordering::SeqCst),
        EOI_AT.load(Ordering::SeqCst),
    );
    expect(high != 0 && high < eoi, || {
        "the high SGI did not arrive before the low one's EOI".into()
    });
}

fn no_preemption() {
    run_part(PART_NO_PREEMPTION, SGI_HIGH);
    let eoi = EOI_AT.load(Ordering::SeqCst);
    let equal = ARRIVED[index(SGI_EQUAL)].load(Ordering::SeqCst);
    let low = ARRIVED[index(SGI_LOW)].load(Ordering::SeqCst);
    expect(equal > eoi && low > eoi, || {
        "the equal or low SGI was taken before the high one's EOI".into()
    });
    expect(equal < low, || {
        "after the EOI the low SGI came before the equal-priority (higher) one".into()
    });
}

fn priority_mask() {
    reset(PART_MASK);
    gic::set_priority_mask(MASK_BELOW_LOW);
    let mask = gic::priority_mask();
    expect(mask == MASK_BELOW_LOW, || {
        format!("the priority mask written {MASK_BELOW_LOW:#x} reads back {mask:#x}")
    });
    send_to_me(SGI_LOW);
    irq::unmask();
    let taken = spin_for(HELD_BACK_US, || arrived(SGI_LOW));
    irq::mask();
    expect(!taken, || {
        format!("an SGI of priority {LOW_PRIORITY:#x} was taken with the priority mask at {MASK_BELOW_LOW:#x}")
    });
    expect(taken || pending(SGI_LOW), || {
        "the SGI held back by the priority mask does not read pending".into()
    });
    gic::set_priority_mask(0xff);
    let came = wait_for(TIMEOUT_US, Timer::Virtual, || arrived(SGI_LOW));
    expect(came, || {
        "the SGI held back by the priority mask was not taken once the mask opened".into()
    });
}

/// The `priority` check.
pub fn check(_: &Setup) -> Result<Outcome, String> {
    FINDINGS.lock().clear();
    let setup = [
        (SGI_LOW, LOW_PRIORITY),
        (SGI_HIGH, HIGH_PRIORITY),
        (SGI_EQUAL, HIGH_PRIORITY),
    ];
    for (sgi, priority) in setup {
        gic::configure(sgi, priority, Trigger::Edge)
            .and_then(|()| gic::enable(sgi))
            .map_err(|e| format!("SGI {sgi}: {e}"))?;
    }
    nesting();
    println!(
        "irq: priority: nesting: high SGI preempted the low one's handler at depth {}",
        HIGH_DEPTH.load(Ordering::SeqCst)
    );
    no_preemption();
    priority_mask();
    PART.store(0, Ordering::SeqCst);
    let rpr = gic::running_priority();
    expect(rpr == IDLE_PRIORITY, || {
        format!("after the check the running priority is {rpr:#x}, not idle")
    });
    for sgi in [SGI_LOW, SGI_HIGH, SGI_EQUAL] {
        expect(!active(sgi) && !pending(sgi), || {
            format!("after the check SGI {sgi} is still active or pending")
        });
        let _ = gic::disable(sgi);
    }
    let findings = core::mem::take(&mut *FINDINGS.lock());
    if findings.is_empty() {
        Ok(Outcome::Passed)
    } else {
        Err(findings.join("; "))
    }
}
