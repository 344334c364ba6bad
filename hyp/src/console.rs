//! The hypervisor's console: one UART shared by every CPU, whole lines at a time, and the
//! `log` backend that tags each line with the CPU that wrote it.
//!
//! The lock remembers its owner, so a CPU that faults or panics while printing can still
//! report it, and a CPU that died holding the lock cannot silence the others for good.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::arch::sysreg;
use crate::drivers::uart::{ConsoleUart, Uart};

const NO_OWNER: usize = usize::MAX;
/// How long `emergency` waits for another CPU to finish its line before taking over.
const EMERGENCY_SPINS: usize = 5_000_000;

struct Console {
    owner: AtomicUsize,
    uart: UnsafeCell<Option<ConsoleUart>>,
}

// SAFETY: `uart` is only reached by the CPU that holds `owner` (or, before the MMU is on,
// by the boot CPU alone).
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    owner: AtomicUsize::new(NO_OWNER),
    uart: UnsafeCell::new(None),
};

/// Exclusive atomics are only reliable once memory is cacheable: before that the boot
/// CPU, alone, writes without the lock.
static LOCKING: AtomicBool = AtomicBool::new(false);

/// Installs the console UART. Boot CPU only, before other CPUs run.
pub fn install(uart: ConsoleUart) {
    // SAFETY: only the boot CPU runs, and nothing holds a reference into the slot.
    unsafe { *CONSOLE.uart.get() = Some(uart) };
}

/// From now on, lines are written under the lock (the MMU and caches are on).
pub fn enable_locking() {
    LOCKING.store(true, Ordering::Release);
}

struct Line<'a>(&'a mut ConsoleUart);

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

/// Runs `f` with the UART, holding the console; `patience` bounds the wait (None: wait).
fn with_uart(patience: Option<usize>, f: impl FnOnce(&mut ConsoleUart)) {
    let locking = LOCKING.load(Ordering::Acquire);
    // Before locking starts, the CPU may not even be at EL2 (TPIDR_EL2 would be undefined).
    let me = if locking { sysreg::cpu_index() } else { 0 };
    let mut took = false;
    if locking {
        let mut spins = 0usize;
        loop {
            match CONSOLE.owner.compare_exchange_weak(
                NO_OWNER,
                me,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    took = true;
                    break;
                }
                // This CPU already holds it: it faulted or panicked mid-line.
                Err(owner) if owner == me => break,
                Err(_) => {}
            }
            spins += 1;
            if patience.is_some_and(|p| spins >= p) {
                // The holder is stuck (or dead): take over rather than stay silent.
                CONSOLE.owner.store(me, Ordering::Relaxed);
                took = true;
                break;
            }
            core::hint::spin_loop();
        }
    }
    // SAFETY: this CPU holds the console (or is the only CPU running), so no other
    // reference to the UART exists while `f` runs.
    if let Some(uart) = unsafe { (*CONSOLE.uart.get()).as_mut() } {
        f(uart);
    }
    if took {
        CONSOLE.owner.store(NO_OWNER, Ordering::Release);
    }
}

/// Prints one line, untagged, whatever state the console is in: for faults, panics and
/// fatal boot errors.
pub fn emergency(args: fmt::Arguments<'_>) {
    with_uart(Some(EMERGENCY_SPINS), |uart| {
        let _ = writeln!(Line(uart), "{args}");
    });
}

/// Prints one line tagged with this CPU, as the logger does.
pub fn line(level: Level, args: fmt::Arguments<'_>) {
    with_uart(None, |uart| {
        let mut out = Line(uart);
        let _ = write!(out, "[cpu{}] ", sysreg::cpu_index());
        let _ = match level {
            Level::Info => Ok(()),
            Level::Error => out.write_str("error: "),
            Level::Warn => out.write_str("warn: "),
            Level::Debug => out.write_str("debug: "),
            Level::Trace => out.write_str("trace: "),
        };
        let _ = writeln!(out, "{args}");
    });
}

/// Takes up to `out.len()` bytes of input from the console UART; returns how many.
pub fn read_input(out: &mut [u8]) -> usize {
    let mut n = 0;
    with_uart(None, |uart| {
        while n < out.len() {
            match uart.read_byte() {
                Some(b) => {
                    out[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
    });
    n
}

/// Asks the console UART for an interrupt on input; false when it cannot.
pub fn enable_input_interrupt() -> bool {
    let mut ok = false;
    with_uart(None, |uart| ok = uart.enable_rx_interrupt());
    ok
}

/// Prints one line of a VM's console output, tagged `[<label>] `.
pub fn tagged(label: &str, args: fmt::Arguments<'_>) {
    with_uart(None, |uart| {
        let _ = writeln!(Line(uart), "[{label}] {args}");
    });
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            line(record.level(), *record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Makes the console the `log` backend.
pub fn init_logger(level: LevelFilter) {
    // A second call finds the logger set already; the level still changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
