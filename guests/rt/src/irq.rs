//! IRQ masking on this vCPU (PSTATE.I), waiting for interrupts, and a lock that keeps IRQs
//! masked while held, for data an IRQ handler shares with the code it interrupts.
//!
//! Guests start with IRQs masked and unmask them only where they wait for one: the runtime's
//! vectors restore ELR_EL1 and SPSR_EL1 from their frame with IRQs masked, so an IRQ handler
//! that unmasks IRQs to let higher-priority ones preempt it (nesting) must mask them again
//! before it returns.

use core::arch::asm;
use core::ops::{Deref, DerefMut};

use aarch64_cpu::registers::{Readable, DAIF};
use spin::{Mutex, MutexGuard};

/// Masks IRQs on this vCPU (`msr daifset, #2`).
pub fn mask() {
    // SAFETY: setting PSTATE.I only defers IRQs; no memory is touched.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
}

/// Unmasks IRQs on this vCPU (`msr daifclr, #2`); a pending IRQ is taken before the next
/// instruction after the barrier that follows.
pub fn unmask() {
    // SAFETY: clearing PSTATE.I lets IRQs be taken; the vectors save and restore every
    // register they use, so the code interrupted sees nothing but time pass.
    unsafe {
        asm!(
            "msr daifclr, #2",
            "isb",
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Whether IRQs are masked on this vCPU.
pub fn masked() -> bool {
    DAIF.is_set(DAIF::I)
}

/// Runs `f` with IRQs masked, then restores the mask as it was.
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let was_masked = masked();
    mask();
    let result = f();
    if !was_masked {
        unmask();
    }
    result
}

/// Waits for an interrupt (`wfi`). With IRQs masked it still returns once one is pending,
/// without taking it: mask, check the condition, `wait`, unmask is free of the race where
/// the interrupt arrives between the check and the WFI.
pub fn wait() {
    aarch64_cpu::asm::wfi();
}

/// A spin lock whose holder runs with IRQs masked, so an IRQ handler on the same vCPU can
/// never spin on a lock the code it interrupted holds.
pub struct IrqMutex<T> {
    inner: Mutex<T>,
}

impl<T> IrqMutex<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: Mutex::new(value),
        }
    }

    /// Masks IRQs, then takes the lock; both are undone when the guard is dropped.
    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let was_masked = masked();
        mask();
        IrqMutexGuard {
            guard: Some(self.inner.lock()),
            was_masked,
        }
    }
}

/// The holder of an [`IrqMutex`].
pub struct IrqMutexGuard<'a, T> {
    /// Always `Some` until dropped (taken out first, so the lock is released before IRQs
    /// are unmasked).
    guard: Option<MutexGuard<'a, T>>,
    was_masked: bool,
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.guard {
            Some(guard) => guard,
            None => unreachable!("an IrqMutexGuard holds its lock until dropped"),
        }
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.guard {
            Some(guard) => guard,
            None => unreachable!("an IrqMutexGuard holds its lock until dropped"),
        }
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if !self.was_masked {
            unmask();
        }
    }
}
