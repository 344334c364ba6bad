//! The secure guest: a signing service beside the rich OS. Linux reaches it over vsock;
//! the hypervisor turns Linux's stream connections into records on a ring region shared
//! only with this guest (`/reserved-memory/vsock@N`, `tandem,vsock-service`), and this
//! guest answers each request: an HMAC-SHA256 tag with the device key, a tag check, or its
//! counters. The key is embedded at build time (see `build.rs`) and never leaves the
//! guest.
//!
//! When the VM has `tandem,attestation`, the hypervisor hands it its attestation identity
//! at start (`TANDEM_ATTESTATION`, see `attestation.rs`), and `Attest` requests are
//! answered with reports signed with the key it gives.
//!
//! It also prints a heartbeat every second of guest time. Between wake-ups it sleeps in WFI
//! until its doorbell SPI or its virtual timer fires, so an idle secure guest costs its
//! CPU nothing, and under `-icount` does not slow the other VMs' clocks. Without the ring
//! node (a configuration with no vsock device) it only heartbeats.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod attestation;
mod channel;
#[cfg(feature = "test-requests")]
mod crash;

use alloc::boxed::Box;
use alloc::format;
use core::sync::atomic::{AtomicU32, Ordering};

use tandem_guest_rt::gic::{self, Trigger};
use tandem_guest_rt::timer::{self, Timer};
use tandem_guest_rt::{irq, println, set_irq_handler, Boot, Failure, Guest};
use tandem_proto::attest::Handover;
use tandem_proto::ring::MAX_RECORD;
use tandem_proto::service::PORT;

use attestation::{ShortHex, Unavailable};
use channel::{Channel, Region};
use tandem_service::{Anomalies, Service, Step, TestRequests, KEY_LEN};

/// The device key, from the file `cargo xtask build` names (see `build.rs`).
static KEY: &[u8; KEY_LEN] = include_bytes!(concat!(env!("OUT_DIR"), "/key.bin"));

/// Guest time between heartbeats.
const HEARTBEAT_MS: u64 = 1000;
/// Records handled before the loop looks at the clock again, so a flood of requests
/// cannot stop the heartbeat.
const RECORDS_PER_PASS: usize = 256;
/// The priority of both interrupts (lower values win; any value works, as nothing nests).
const PRIORITY: u8 = 0xa0;
/// Whether this build serves the requests that exist only for tests.
const TEST_REQUESTS: TestRequests = if cfg!(feature = "test-requests") {
    TestRequests::Served
} else {
    TestRequests::Refused
};

/// The virtual timer's INTID, for the IRQ handler (u32::MAX until known).
static VTIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Acknowledges and ends every interrupt. The doorbell needs nothing more (the main loop
/// looks at the ring after every wake-up); the virtual timer's level interrupt is lowered
/// by stopping the timer, which the main loop arms again before it sleeps.
fn on_irq() {
    while let Some(ack) = gic::acknowledge() {
        if ack.intid() == VTIMER_INTID.load(Ordering::Relaxed) {
            Timer::Virtual.stop();
        }
        gic::end_of_interrupt(ack);
    }
}

/// The guest's uptime: its virtual counter, which the hypervisor starts at 0 when the VM
/// (re)starts.
fn uptime_ms() -> u64 {
    timer::ticks_to_us(Timer::Virtual.now()) / 1000
}

/// The service and its channel, while the channel works.
struct Serving {
    channel: Channel,
    service: Service,
    /// Where each record is copied before it is looked at.
    record: Box<[u8; MAX_RECORD]>,
    /// The doorbell's INTID.
    doorbell: u32,
}

impl Serving {
    /// Handles what waits on the ring to the service (up to [`RECORDS_PER_PASS`] records),
    /// then rings the doorbell if anything was pushed.
    fn pass(&mut self) {
        for _ in 0..RECORDS_PER_PASS {
            let Some((record, payload)) = self.channel.pop(&mut self.record) else {
                break;
            };
            let step = self
                .service
                .on_record(record, payload, uptime_ms(), &mut self.channel);
            if step == Step::Crash {
                fault_on_request();
            }
        }
        self.channel.announce();
    }
}

/// A `Crash` request was served: go down as a kernel with broken vectors does.
#[cfg(feature = "test-requests")]
fn fault_on_request() {
    crash::now()
}

/// A build without test requests refuses `Crash` in the service; nothing to do here.
#[cfg(not(feature = "test-requests"))]
fn fault_on_request() {}

/// Asks the hypervisor for the attestation handover and says what came of it (never the
/// CDI).
fn attestation() -> Option<Handover> {
    match attestation::request() {
        Ok((handover, certificate)) => {
            println!(
                "secure: attestation: image {}..., device key {}...",
                ShortHex(&certificate.image),
                ShortHex(&handover.device_key)
            );
            Some(handover)
        }
        Err(why @ Unavailable::NotProvided) => {
            println!("secure: attestation: {why}");
            None
        }
        Err(why) => {
            println!("secure: attestation: {why}; Attest requests are refused");
            None
        }
    }
}

/// Sets up the channel over the ring region the device tree gives, and the doorbell SPI,
/// with a service that attests with `handover` when there is one; `None` (after saying
/// why) when there is no ring region or it is unusable.
fn start_service(boot: &Boot, handover: Option<Handover>) -> Option<Serving> {
    let region = match Region::find(boot.dtb()) {
        Ok(Some(region)) => region,
        Ok(None) => {
            println!(
                "secure: the device tree has no tandem,vsock-service node: no vsock service, \
                 heartbeat only"
            );
            return None;
        }
        Err(why) => {
            println!("secure: unusable vsock ring region: {why}; heartbeat only");
            return None;
        }
    };
    let doorbell = region.doorbell_spi + 32;
    let interrupt = gic::configure(doorbell, PRIORITY, Trigger::Edge)
        .and_then(|()| gic::route_to_me(doorbell))
        .and_then(|()| gic::enable(doorbell));
    if let Err(e) = interrupt {
        println!(
            "secure: doorbell SPI {}: {e}; heartbeat only",
            region.doorbell_spi
        );
        return None;
    }
    // SAFETY: the region is this VM's `no-map` reserved memory, shared only with the
    // hypervisor; nothing else in this guest touches it, and this is its only channel.
    let channel = unsafe { Channel::new(region) };
    let mut service = Service::new(KEY, TEST_REQUESTS);
    if let Some(handover) = handover {
        service.set_handover(handover);
    }
    let mut serving = Serving {
        channel,
        service,
        record: Box::new([0; MAX_RECORD]),
        doorbell,
    };
    // Records the hypervisor put on the ring before the doorbell was enabled are found by
    // the main loop, which looks at the ring before it first sleeps.
    let listening = serving.service.listen(&mut serving.channel);
    serving.channel.announce();
    if let Some(why) = serving.channel.broken() {
        println!(
            "secure: vsock ring region at {:#x}: {why}; heartbeat only",
            region.base
        );
        return None;
    }
    if listening.is_err() {
        println!("secure: the ring to the hypervisor stays full; heartbeat only");
        return None;
    }
    println!(
        "secure: vsock service on port {PORT} (ring at {:#x}, doorbell SPI {})",
        region.base, region.doorbell_spi
    );
    Some(serving)
}

struct Secure;

impl Guest for Secure {
    const NAME: &'static str = "secure";
    /// Room for every connection's frame buffer (up to 16 of 64 KiB and a header, each a
    /// 128 KiB block of the buddy allocator) beside the device tree's.
    const HEAP_SIZE: usize = 4 << 20;

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
        set_irq_handler(Some(on_irq));
        let vtimer = board
            .timer
            .ok_or("the device tree has no timer node")?
            .virt
            .intid();
        VTIMER_INTID.store(vtimer, Ordering::Relaxed);
        gic::configure(vtimer, PRIORITY, Trigger::Level)
            .and_then(|()| gic::enable(vtimer))
            .map_err(|e| format!("virtual timer INTID {vtimer}: {e}"))?;

        let handover = attestation();
        let mut serving = start_service(boot, handover);
        let mut anomalies = Anomalies::default();
        let period = timer::us_to_ticks(HEARTBEAT_MS * 1000);
        let mut next = Timer::Virtual.now().saturating_add(period);
        let mut beat: u64 = 0;
        loop {
            if let Some(s) = &mut serving {
                s.pass();
                if let Some(why) = s.channel.broken() {
                    println!("secure: the vsock channel broke: {why}; no longer serving");
                    // Its doorbell means nothing any more.
                    let _ = gic::disable(s.doorbell);
                    serving = None;
                }
            }
            if Timer::Virtual.now() >= next {
                next = next.saturating_add(period);
                beat += 1;
                println!("secure: heartbeat {beat}");
                if let Some(s) = &serving {
                    let now = s.service.anomalies();
                    if now != anomalies {
                        anomalies = now;
                        println!("secure: service: {anomalies}");
                    }
                }
            }
            // Sleep with IRQs masked, so that a doorbell after this look at the ring still
            // ends the WFI (a pending interrupt does, masked or not); unmasking then takes it.
            irq::mask();
            let work = serving.as_ref().is_some_and(|s| s.channel.pending());
            if !work && Timer::Virtual.now() < next {
                Timer::Virtual.set_compare(next);
                Timer::Virtual.start();
                irq::wait();
            }
            irq::unmask();
        }
    }
}

tandem_guest_rt::guest!(Secure);
