//! Runtime of Tandem's test guests: small `no_std` programs that run at EL1 in a Tandem VM
//! or natively on QEMU `virt`.
//!
//! A guest is an arm64 `Image` booted like Linux (see [`entry`]). It implements [`Guest`]
//! and names itself with [`guest!`]; the runtime finds the console, sets up the heap, runs
//! [`Guest::main`] on the boot vCPU and reports the verdict on the console:
//!
//! - `TEST PASS <name>` when `main` returns `Ok`, then PSCI SYSTEM_OFF;
//! - `TEST FAIL <name>: <why>` when `main` returns `Err`, a vCPU panics, or an exception
//!   nobody expected is taken, then PSCI SYSTEM_OFF as well.
//!
//! Both end in SYSTEM_OFF so that a test harness decides from the marker alone, and a
//! SYSTEM_RESET seen by the hypervisor always means something else went wrong.
//!
//! ```ignore
//! struct Hello;
//! impl tandem_guest_rt::Guest for Hello {
//!     const NAME: &'static str = "hello";
//!     fn main(boot: &tandem_guest_rt::Boot) -> Result<(), tandem_guest_rt::Failure> { Ok(()) }
//! }
//! tandem_guest_rt::guest!(Hello);
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod args;
mod boot;
pub mod console;
pub mod entry;
pub mod exception;
pub mod gic;
mod heap;
pub mod irq;
pub mod psci;
pub mod rand;
pub mod smp;
pub mod time;
pub mod timer;

use core::fmt;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Readable, TPIDR_EL1};

pub use boot::{mpidr, run, Boot, Failure};
pub use exception::{
    call_wild, catch, set_irq_handler, set_sync_handler, Resolution, SyncException,
};
pub use heap::{HeapArea, DEFAULT_HEAP_SIZE};
pub use smp::{start_cpu, StartError};

/// A test guest.
pub trait Guest {
    /// The name in the `TEST PASS`/`TEST FAIL` markers.
    const NAME: &'static str;

    /// Bytes of heap: an area of the image (so `image_size` grows with it), handed to the
    /// allocator before `main` runs.
    const HEAP_SIZE: usize = DEFAULT_HEAP_SIZE;

    /// The test, run on the boot vCPU. `Ok` passes it; `Err` fails it with that reason.
    fn main(boot: &Boot) -> Result<(), Failure>;
}

/// Makes `$guest` (a type implementing [`Guest`]) this program's guest, with a heap of
/// its [`Guest::HEAP_SIZE`].
#[macro_export]
macro_rules! guest {
    ($guest:ty) => {
        #[unsafe(no_mangle)]
        fn __tandem_guest_main(boot: &$crate::Boot) -> ! {
            #[unsafe(link_section = ".heap")]
            static HEAP: $crate::HeapArea<{ <$guest as $crate::Guest>::HEAP_SIZE }> =
                $crate::HeapArea::new();
            $crate::run::<$guest, { <$guest as $crate::Guest>::HEAP_SIZE }>(boot, &HEAP)
        }
    };
}

/// The guest's name for the markers, set before `main` runs.
static NAME_PTR: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

fn set_name(name: &'static str) {
    NAME_LEN.store(name.len(), Ordering::Relaxed);
    NAME_PTR.store(name.as_ptr().cast_mut(), Ordering::Release);
}

/// The guest's name, `guest` until [`run`] has set it.
pub fn name() -> &'static str {
    let ptr = NAME_PTR.load(Ordering::Acquire);
    if ptr.is_null() {
        return "guest";
    }
    let len = NAME_LEN.load(Ordering::Relaxed);
    // SAFETY: `set_name` stored the length, then (with Release) the pointer of a
    // `&'static str`, so the pointer read with Acquire and the length describe that str.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    core::str::from_utf8(bytes).unwrap_or("guest")
}

/// This vCPU's index: 0 for the boot vCPU, 1 to [`entry::MAX_CPUS`] - 1 for secondaries.
pub fn cpu_index() -> usize {
    (TPIDR_EL1.get() as usize).min(entry::MAX_CPUS - 1)
}

/// Prints `TEST PASS <name>` and powers off.
pub fn pass() -> ! {
    println!("TEST PASS {}", name());
    boot::power_off()
}

/// Prints `TEST FAIL <name>: <why>` and powers off. Any vCPU may call it.
pub fn fail(why: fmt::Arguments) -> ! {
    println!("TEST FAIL {}: {why}", name());
    boot::power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    match info.location() {
        Some(at) => fail(format_args!(
            "panic: {} (at {}:{}, vCPU {})",
            info.message(),
            at.file(),
            at.line(),
            cpu_index()
        )),
        None => fail(format_args!("panic: {}", info.message())),
    }
}
