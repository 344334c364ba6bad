//! Secondary vCPUs: [`start_cpu`] starts one with PSCI CPU_ON on a stack of its own.
//!
//! Each of the [`MAX_SECONDARIES`] slots has a stack (CPU index = slot + 1) and remembers
//! which MPIDR it last started. A slot is reused for the same MPIDR once that vCPU has left
//! its entry function; a failed CPU_ON gives a fresh slot back.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use spin::Mutex;

use crate::entry::{secondary_entry, MAX_CPUS};
use crate::psci;

/// How many vCPUs besides the boot one can run at once.
pub const MAX_SECONDARIES: usize = MAX_CPUS - 1;

/// What a secondary runs: `entry(arg)`, then CPU_OFF.
#[derive(Clone, Copy)]
struct Job {
    entry: fn(usize),
    arg: usize,
}

/// Slot states.
const FREE: u8 = 0;
/// CPU_ON is being issued or the vCPU has not taken its job yet.
const STARTING: u8 = 1;
/// The vCPU runs its entry function.
const RUNNING: u8 = 2;
/// The entry function returned; the vCPU is calling CPU_OFF.
const STOPPING: u8 = 3;

struct Slot {
    state: AtomicU8,
    mpidr: AtomicU64,
    job: Mutex<Option<Job>>,
}

static SLOTS: [Slot; MAX_SECONDARIES] = [const {
    Slot {
        state: AtomicU8::new(FREE),
        mpidr: AtomicU64::new(0),
        job: Mutex::new(None),
    }
}; MAX_SECONDARIES];

/// Serializes [`start_cpu`] calls so two vCPUs never pick the same slot.
static START_LOCK: Mutex<()> = Mutex::new(());

/// Why [`start_cpu`] did not start a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// All [`MAX_SECONDARIES`] stacks are in use.
    NoFreeStack,
    /// PSCI refused CPU_ON with this error.
    Psci(psci::Error),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoFreeStack => write!(f, "no free vCPU stack ({MAX_SECONDARIES} in use)"),
            StartError::Psci(e) => write!(f, "CPU_ON failed: {e:?}"),
        }
    }
}

/// Starts the vCPU `mpidr` with PSCI CPU_ON; it runs `entry(arg)` on its own stack, then
/// calls CPU_OFF. CPU_ON is issued even when this vCPU is known to be running (the job is
/// then left alone), so callers see the PSCI implementation's own ALREADY_ON/ON_PENDING.
pub fn start_cpu(mpidr: u64, entry: fn(usize), arg: usize) -> Result<(), StartError> {
    let _guard = START_LOCK.lock();
    let known = SLOTS.iter().position(|s| {
        s.state.load(Ordering::Acquire) != FREE && s.mpidr.load(Ordering::Relaxed) == mpidr
    });
    if let Some(index) = known {
        let slot = &SLOTS[index];
        if slot.state.load(Ordering::Acquire) == STOPPING {
            // Going off: if CPU_ON succeeds the vCPU is off and takes this new job.
            *slot.job.lock() = Some(Job { entry, arg });
            slot.state.store(STARTING, Ordering::Release);
        }
        return psci::cpu_on(mpidr, entry_address(), (index + 1) as u64).map_err(StartError::Psci);
    }
    let index = SLOTS
        .iter()
        .position(|s| s.state.load(Ordering::Acquire) == FREE)
        .ok_or(StartError::NoFreeStack)?;
    let slot = &SLOTS[index];
    slot.mpidr.store(mpidr, Ordering::Relaxed);
    *slot.job.lock() = Some(Job { entry, arg });
    slot.state.store(STARTING, Ordering::Release);
    let result = psci::cpu_on(mpidr, entry_address(), (index + 1) as u64);
    if result.is_err() {
        // Nothing started on this slot's stack.
        *slot.job.lock() = None;
        slot.state.store(FREE, Ordering::Release);
    }
    result.map_err(StartError::Psci)
}

/// The physical address of `secondary_entry`: with the MMU off, its address.
fn entry_address() -> u64 {
    secondary_entry as *const () as u64
}

/// The Rust side of `secondary_entry`: runs the slot's job, then turns the vCPU off.
pub(crate) extern "C" fn secondary_main(cpu: usize) -> ! {
    let slot = &SLOTS[cpu - 1];
    let job = slot.job.lock().take();
    slot.state.store(RUNNING, Ordering::Release);
    match job {
        Some(job) => (job.entry)(job.arg),
        None => crate::fail(format_args!("vCPU {cpu} started without a job")),
    }
    slot.state.store(STOPPING, Ordering::Release);
    let error = psci::cpu_off();
    crate::fail(format_args!("CPU_OFF returned: {error:?}"))
}
