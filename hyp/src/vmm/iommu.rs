//! The glue of each SMMUv3: every stream of a VM's devices translates through that VM's
//! stage-2 tables (same tables, same VMID), streams nobody owns are aborted, and every fault
//! the SMMU records is logged with its stream, address and VM and counted in the VM's
//! statistics. A VM that stops has its streams cut off; a VM that restarts has them cut off
//! while it reloads and its SMMU TLB entries forgotten when they come back.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use log::{error, info, warn};
use platform::{Irq, IrqKind, Platform};
use smmu::strtab::{Claim, StreamTablePlan};
use smmu::{Event, Features, Stage2Ste, Ste, SteError};
use spin::{Mutex, Once};

use super::{Vm, VMS};
use crate::arch::sysreg;
use crate::drivers::gic;
use crate::drivers::smmuv3::{self, Smmuv3};

/// Lines of faults logged per VM; later faults are only counted.
const LOGGED_FAULTS: u64 = 32;

/// One SMMU in use.
struct Unit {
    node: String,
    driver: Mutex<Smmuv3>,
    /// INTIDs of its event-queue and global-error interrupts (0: none).
    eventq: u32,
    gerror: u32,
}

static UNITS: Once<Vec<Unit>> = Once::new();

/// The SMMU faults of each VM, by VM index (the config allows at most `MAX_VMS`).
static FAULTS: [AtomicU64; platform::config::MAX_VMS] =
    [const { AtomicU64::new(0) }; platform::config::MAX_VMS];
/// Faults from streams no VM owns.
static UNOWNED_FAULTS: AtomicU64 = AtomicU64::new(0);
/// Lines of faults logged, by VM index.
static LOGGED: [AtomicU64; platform::config::MAX_VMS] =
    [const { AtomicU64::new(0) }; platform::config::MAX_VMS];
static UNOWNED_LOGGED: AtomicU64 = AtomicU64::new(0);

/// Takes every SMMU of the board. Boot CPU, once every VM is built and before any runs. An
/// SMMU the hypervisor cannot use is left blocking all DMA through it.
pub(super) fn setup(platform: &Platform, vms: &[Vm]) {
    let mut units = Vec::new();
    for s in &platform.smmus {
        let base = s.regs.base;
        // SAFETY: boot mapped every SMMU's window as device memory at EL2; no guest is
        // given it (the config refuses the SMMU as a device) and nothing else drives it.
        let features = match unsafe { smmuv3::probe(base) } {
            Ok(f) => f,
            Err(why) => {
                refuse(&s.node, base, format_args!("{why}"));
                continue;
            }
        };
        let claims: Vec<Claim> = vms
            .iter()
            .flat_map(|vm| {
                let owner = vm.config.index;
                vm.config
                    .devices
                    .iter()
                    .flat_map(|d| &d.streams)
                    .filter(|st| st.smmu == s.node)
                    .map(move |st| Claim {
                        first: st.first,
                        count: st.count,
                        owner,
                    })
            })
            .collect();
        let plan = match StreamTablePlan::new(&claims, features.sid_bits, features.two_level) {
            Ok(p) => p,
            Err(why) => {
                refuse(&s.node, base, format_args!("{why}"));
                continue;
            }
        };
        let bytes = plan.bytes();
        let entry = |owner: usize| {
            let Some(vm) = vms.iter().find(|v| v.config.index == owner) else {
                return Ste::INVALID;
            };
            match stage2_entry(vm, &features) {
                Ok(ste) => ste,
                Err(why) => {
                    error!(
                        "smmu: {}: vm {}'s devices cannot use its stage 2 ({why}); their DMA is aborted",
                        s.node, vm.config.label
                    );
                    Ste::INVALID
                }
            }
        };
        // SAFETY: as for `probe`.
        let driver = match unsafe { Smmuv3::new(base, features, plan, entry) } {
            Ok(d) => d,
            Err(why) => {
                refuse(&s.node, base, format_args!("{why}"));
                continue;
            }
        };
        let mut owners: Vec<&str> = Vec::new();
        for c in &claims {
            if let Some(vm) = vms.iter().find(|v| v.config.index == c.owner) {
                if !owners.contains(&vm.config.label.as_str()) {
                    owners.push(&vm.config.label);
                }
            }
        }
        info!(
            "smmu: {} at {base:#x}: stage 2 for {}; {} stream IDs of {} claimed, the rest aborted; tables {} KiB",
            s.node,
            if owners.is_empty() {
                String::from("no VM")
            } else {
                owners.join(", ")
            },
            claims.iter().map(|c| u64::from(c.count)).sum::<u64>(),
            1u64 << features.sid_bits.min(63),
            bytes.div_ceil(1024)
        );
        let eventq = enable_irq(platform, s.eventq_irq);
        let gerror = enable_irq(platform, s.gerror_irq);
        if eventq == 0 {
            warn!(
                "smmu: {}: no wired event-queue interrupt; faults are read only when a VM stops",
                s.node
            );
        }
        units.push(Unit {
            node: s.node.clone(),
            driver: Mutex::new(driver),
            eventq,
            gerror,
        });
    }
    UNITS.call_once(|| units);
}

/// Leaves an SMMU the hypervisor cannot use disabled and aborting every transaction.
fn refuse(node: &str, base: u64, why: core::fmt::Arguments<'_>) {
    // SAFETY: as in `setup`.
    let blocked = unsafe { smmuv3::block(base) };
    match blocked {
        Ok(()) => error!(
            "smmu: {node}: cannot isolate DMA: {why}; every transaction through it is aborted"
        ),
        Err(e) => error!(
            "smmu: {node}: cannot isolate DMA: {why}; nor can it be blocked ({e}): devices behind it are not isolated"
        ),
    }
}

/// Routes an SMMU interrupt to this (the boot) CPU; its INTID, or 0.
fn enable_irq(platform: &Platform, irq: Option<Irq>) -> u32 {
    let Some(irq) = irq.filter(|i| i.kind == IrqKind::Spi) else {
        return 0;
    };
    if gic::version() == 0 {
        return 0;
    }
    let cpu = sysreg::cpu_index();
    let mpidr = platform.cpus.get(cpu).map_or(0, |c| c.mpidr);
    gic::assign_spi(irq.intid(), irq.flags & 0x3 != 0, cpu, mpidr);
    irq.intid()
}

/// Handles `intid` if it is an SMMU's interrupt: logs and counts what the SMMU recorded.
pub(super) fn irq(intid: u32) -> bool {
    let Some(units) = UNITS.get() else {
        return false;
    };
    let Some(unit) = units
        .iter()
        .find(|u| intid != 0 && (u.eventq == intid || u.gerror == intid))
    else {
        return false;
    };
    drain(unit);
    true
}

/// Reads one SMMU's events and global errors.
fn drain(unit: &Unit) {
    let mut driver = unit.driver.lock();
    let errors = driver.global_errors();
    for (bit, name) in smmu::regs::GERROR_NAMES {
        if errors & bit == 0 {
            continue;
        }
        if bit == smmu::regs::GERROR_EVENTQ_ABT {
            warn!(
                "smmu: {}: the event queue was full (EVENTQ_ABT_ERR); faults beyond it were not recorded",
                unit.node
            );
        } else {
            error!("smmu: {}: global error {name}", unit.node);
        }
    }
    let mut seen = Vec::new();
    let overflowed = driver.events(|e| seen.push(e));
    let events: Vec<(Event, Option<usize>)> = seen
        .into_iter()
        .map(|e| (e, driver.plan().owner(e.sid)))
        .collect();
    drop(driver);
    if overflowed {
        warn!(
            "smmu: {}: the event queue overflowed; some faults were not recorded",
            unit.node
        );
    }
    // A device's transfer faults once per bus access, so one refused page is dozens of
    // events: each run of events of one stream, kind, direction and page is one line.
    let vms = VMS.get();
    let mut at = 0;
    while let Some(&(first, owner)) = events.get(at) {
        let page = |e: &Event| e.address.map(|a| a >> 12);
        let run = events[at..]
            .iter()
            .take_while(|(e, o)| {
                *o == owner
                    && e.sid == first.sid
                    && e.kind == first.kind
                    && e.read == first.read
                    && page(e) == page(&first)
            })
            .count();
        at += run;
        let more = if run > 1 {
            alloc::format!(" (and {} more in that page)", run - 1)
        } else {
            String::new()
        };
        let vm = owner.and_then(|o| vms?.iter().find(|v| v.config.index == o));
        let (counter, logged) = match (owner, vm) {
            (Some(o), Some(_)) => match (FAULTS.get(o), LOGGED.get(o)) {
                (Some(f), Some(l)) => (f, l),
                _ => (&UNOWNED_FAULTS, &UNOWNED_LOGGED),
            },
            _ => (&UNOWNED_FAULTS, &UNOWNED_LOGGED),
        };
        counter.fetch_add(run as u64, Ordering::Relaxed);
        let lines = logged.fetch_add(1, Ordering::Relaxed);
        let who = vm.map_or_else(
            || String::from("no VM owns the stream"),
            |vm| alloc::format!("vm {}", vm.config.label),
        );
        if lines < LOGGED_FAULTS {
            warn!("smmu: fault: {who}: {first}{more}");
        } else if lines == LOGGED_FAULTS {
            warn!("smmu: fault: {who}: more faults; counted in its statistics, not logged");
        }
    }
}

/// The SMMU faults VM `index`'s devices have caused.
pub(super) fn faults_of(index: usize) -> u64 {
    FAULTS.get(index).map_or(0, |f| f.load(Ordering::Relaxed))
}

/// Whether VM `index` owns streams on some SMMU.
pub(super) fn has_streams(vm: &Vm) -> bool {
    UNITS.get().is_some_and(|u| !u.is_empty())
        && vm.config.devices.iter().any(|d| !d.streams.is_empty())
}

/// Cuts VM `vm`'s devices off (it stopped, or is about to reload): their DMA is aborted.
pub(super) fn cut_off(vm: &Vm) {
    set(vm, |_| Ste::INVALID);
}

/// Gives VM `vm`'s devices its stage 2 again, with fresh SMMU TLBs, after a restart.
pub(super) fn restore(vm: &Vm) {
    set(vm, |features| {
        stage2_entry(vm, features).unwrap_or(Ste::INVALID)
    });
}

/// The stream table entry that translates through `vm`'s stage-2 tables on an SMMU with
/// `features`.
fn stage2_entry(vm: &Vm, features: &Features) -> Result<Ste, SteError> {
    let tables = vm.stage2.lock();
    Stage2Ste::new(tables.config(), tables.root_address().0, features).map(|s| Ste::stage2(&s))
}

/// Gives `vm`'s streams on every SMMU the entry `entry` makes for that SMMU.
fn set(vm: &Vm, entry: impl Fn(&Features) -> Ste) {
    for unit in UNITS.get().into_iter().flatten() {
        let features = *unit.driver.lock().features();
        set_on(unit, vm, entry(&features));
    }
}

fn set_on(unit: &Unit, vm: &Vm, ste: Ste) {
    let owns = vm
        .config
        .devices
        .iter()
        .flat_map(|d| &d.streams)
        .any(|s| s.smmu == unit.node);
    if !owns {
        return;
    }
    let vmid = u16::from(vm.stage2.lock().config().vmid().raw());
    if let Err(why) = unit.driver.lock().set_owner(vm.config.index, vmid, &ste) {
        error!(
            "smmu: {}: cannot update vm {}'s streams: {why}",
            unit.node, vm.config.label
        );
    }
    // What its devices did up to now is still worth reporting.
    drain(unit);
}
