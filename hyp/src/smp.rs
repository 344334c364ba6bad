//! Starting the other CPUs, each by the `enable-method` its DT node names.

use core::sync::atomic::{AtomicBool, Ordering};

use log::{error, warn};
use platform::{Conduit, EnableMethod, Platform};

use crate::arch::entry::{secondary_entry_psci, secondary_entry_spin, MAX_CPUS, SECONDARY_BOOT};
use crate::arch::psci;
use crate::arch::{cache, mmu, sysreg};
use crate::mm::pagetable::{Attrs, PAGE_SIZE};

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// How long a CPU gets to reach `secondary_main` before it is reported as not starting.
const START_TIMEOUT_MS: u64 = 2000;

/// Called by a secondary CPU once it runs Rust with its MMU on.
pub fn mark_online(index: usize) {
    if let Some(flag) = ONLINE.get(index) {
        flag.store(true, Ordering::Release);
    }
    // Wake the boot CPU, which waits in WFE.
    aarch64_cpu::asm::sev();
}

/// Starts every CPU but the boot CPU, one at a time; returns how many CPUs are online,
/// the boot CPU included. A CPU that does not start is reported and skipped.
pub fn start_secondaries(platform: &Platform, boot_index: usize) -> usize {
    ONLINE[boot_index.min(MAX_CPUS - 1)].store(true, Ordering::Release);
    let mut online = 1;
    for (index, cpu) in platform.cpus.iter().enumerate() {
        if index == boot_index {
            continue;
        }
        if index >= MAX_CPUS {
            warn!(
                "cpu{index} ({}): not started, this build supports {MAX_CPUS} CPUs",
                cpu.node
            );
            continue;
        }
        let started = match cpu.enable_method {
            EnableMethod::Psci => start_psci(platform, index, cpu.mpidr),
            EnableMethod::SpinTable { release_addr } => start_spin_table(index, release_addr),
        };
        if let Err(why) = started {
            error!("cpu{index} ({}): not started: {why}", cpu.node);
            continue;
        }
        let asked = sysreg::counter();
        if wait_online(index) {
            log::debug!(
                "cpu{index}: online after {} counter ticks",
                sysreg::counter() - asked
            );
            online += 1;
        } else {
            error!(
                "cpu{index} ({}): not started: it did not reach the hypervisor within {START_TIMEOUT_MS} ms",
                cpu.node
            );
        }
    }
    online
}

fn start_psci(platform: &Platform, index: usize, mpidr: u64) -> Result<(), alloc::string::String> {
    use alloc::format;
    let Some(psci) = &platform.psci else {
        return Err("enable-method is psci but the DT has no /psci node".into());
    };
    if psci.conduit == Conduit::Hvc {
        return Err(
            "the /psci node says method = \"hvc\", which cannot reach firmware from EL2; \
                    firmware that boots a hypervisor must offer PSCI over smc"
                .into(),
        );
    }
    psci::cpu_on(
        mpidr,
        secondary_entry_psci as *const () as u64,
        index as u64,
    )
    .map_err(|e| format!("CPU_ON(MPIDR {mpidr:#x}) failed: {e}"))
}

fn start_spin_table(index: usize, release_addr: u64) -> Result<(), alloc::string::String> {
    use alloc::format;
    if !release_addr.is_multiple_of(8) {
        return Err(format!(
            "cpu-release-addr {release_addr:#x} is not 8-byte aligned"
        ));
    }
    // The release address usually lies in RAM (mapped); map its page if it does not.
    let page = release_addr & !(PAGE_SIZE - 1);
    match mmu::translate(page) {
        Some(Attrs::ReadWrite) => {}
        Some(_) => {
            return Err(format!(
                "cpu-release-addr {release_addr:#x} lies in hypervisor memory"
            ))
        }
        None => mmu::map(page, PAGE_SIZE, Attrs::ReadWrite)
            .map_err(|e| format!("cannot map cpu-release-addr {release_addr:#x}: {e}"))?,
    }
    // SAFETY: no secondary CPU is between release and `mark_online` (they start one at a
    // time), so nobody reads the block while it changes.
    unsafe { (*SECONDARY_BOOT.get()).spin_index = index as u64 };
    cache::clean_to_poc(
        SECONDARY_BOOT.addr() as usize,
        core::mem::size_of::<u64>() * 8,
    );
    crate::arch::release_spin_table(release_addr, secondary_entry_spin as *const () as u64);
    Ok(())
}

/// Waits in WFE (not spinning: under QEMU's -icount a spinning CPU would slow every
/// other CPU's clock); the new CPU's SEV or the counter's event stream wakes it.
fn wait_online(index: usize) -> bool {
    let freq = sysreg::counter_frequency().max(1);
    let deadline = sysreg::counter().saturating_add(freq / 1000 * START_TIMEOUT_MS);
    while sysreg::counter() < deadline {
        if ONLINE[index].load(Ordering::Acquire) {
            return true;
        }
        aarch64_cpu::asm::wfe();
    }
    ONLINE[index].load(Ordering::Acquire)
}
