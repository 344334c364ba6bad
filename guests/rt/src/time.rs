//! Time from the virtual counter (CNTVCT_EL0 at CNTFRQ_EL0), for bounded waits.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTVCT_EL0};

/// Nanoseconds of guest time since the counter started.
pub fn now_ns() -> u64 {
    let frequency = CNTFRQ_EL0.get().max(1);
    let ticks = CNTVCT_EL0.get();
    ((u128::from(ticks) * 1_000_000_000) / u128::from(frequency)) as u64
}

/// Polls `done` until it returns true or `timeout_ms` of guest time pass; returns whether
/// it became true.
pub fn wait_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = now_ns().saturating_add(timeout_ms.saturating_mul(1_000_000));
    loop {
        if done() {
            return true;
        }
        if now_ns() >= deadline {
            return done();
        }
        core::hint::spin_loop();
    }
}
