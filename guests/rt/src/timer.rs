//! The EL1 generic timers (Arm ARM D12, "The Generic Timer in AArch64 state"): the
//! virtual timer (CNTV_*_EL0, counting CNTVCT_EL0) and the EL1 physical timer (CNTP_*_EL0,
//! counting CNTPCT_EL0). A hypervisor may run the first on the hardware and trap and
//! emulate the second; the guest uses both the same way.

use aarch64_cpu::registers::{
    Readable, Writeable, CNTFRQ_EL0, CNTPCT_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTP_TVAL_EL0,
    CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTV_TVAL_EL0,
};

/// CNTx_CTL_EL0.ENABLE.
const CTL_ENABLE: u64 = 1 << 0;
/// CNTx_CTL_EL0.IMASK: the timer condition does not assert the interrupt.
const CTL_IMASK: u64 = 1 << 1;
/// CNTx_CTL_EL0.ISTATUS: the timer condition is met (read-only).
const CTL_ISTATUS: u64 = 1 << 2;

/// The counter frequency in Hz (CNTFRQ_EL0), at least 1.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// `ticks` of the counter in microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    ((u128::from(ticks) * 1_000_000) / u128::from(frequency())) as u64
}

/// `us` microseconds in ticks of the counter.
pub fn us_to_ticks(us: u64) -> u64 {
    ((u128::from(us) * u128::from(frequency())) / 1_000_000) as u64
}

/// One of the two EL1 timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The virtual timer: CNTV_CTL/CVAL/TVAL_EL0 against CNTVCT_EL0.
    Virtual,
    /// The EL1 physical timer: CNTP_CTL/CVAL/TVAL_EL0 against CNTPCT_EL0.
    Physical,
}

/// What CNTx_CTL_EL0 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// ENABLE.
    pub enabled: bool,
    /// IMASK.
    pub masked: bool,
    /// ISTATUS: the deadline has passed.
    pub fired: bool,
}

impl Timer {
    /// The name of the timer, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Timer::Virtual => "virtual",
            Timer::Physical => "physical",
        }
    }

    /// The counter this timer compares with (CNTVCT_EL0 or CNTPCT_EL0), read after an
    /// `isb` so that it is not taken ahead of the instructions before it.
    pub fn now(self) -> u64 {
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        match self {
            Timer::Virtual => CNTVCT_EL0.get(),
            Timer::Physical => CNTPCT_EL0.get(),
        }
    }

    /// Writes the compare value (CNTx_CVAL_EL0): the deadline, in counter ticks.
    pub fn set_compare(self, deadline: u64) {
        match self {
            Timer::Virtual => CNTV_CVAL_EL0.set(deadline),
            Timer::Physical => CNTP_CVAL_EL0.set(deadline),
        }
    }

    /// Reads the compare value (CNTx_CVAL_EL0).
    pub fn compare(self) -> u64 {
        match self {
            Timer::Virtual => CNTV_CVAL_EL0.get(),
            Timer::Physical => CNTP_CVAL_EL0.get(),
        }
    }

    /// Writes the timer value (CNTx_TVAL_EL0): the deadline becomes now + `ticks`.
    pub fn set_timer_value(self, ticks: i32) {
        let value = u64::from(ticks as u32);
        match self {
            Timer::Virtual => CNTV_TVAL_EL0.set(value),
            Timer::Physical => CNTP_TVAL_EL0.set(value),
        }
    }

    /// Reads the timer value (CNTx_TVAL_EL0): the deadline minus now, as a signed 32-bit
    /// number (negative once it has passed).
    pub fn timer_value(self) -> i32 {
        let value = match self {
            Timer::Virtual => CNTV_TVAL_EL0.get(),
            Timer::Physical => CNTP_TVAL_EL0.get(),
        };
        value as u32 as i32
    }

    fn set_ctl(self, ctl: u64) {
        match self {
            Timer::Virtual => CNTV_CTL_EL0.set(ctl),
            Timer::Physical => CNTP_CTL_EL0.set(ctl),
        }
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    }

    /// Starts the timer with its interrupt unmasked (ENABLE = 1, IMASK = 0).
    pub fn start(self) {
        self.set_ctl(CTL_ENABLE);
    }

    /// Stops the timer (ENABLE = 0), which also lowers its interrupt.
    pub fn stop(self) {
        self.set_ctl(0);
    }

    /// Reads CNTx_CTL_EL0.
    pub fn control(self) -> Control {
        let ctl = match self {
            Timer::Virtual => CNTV_CTL_EL0.get(),
            Timer::Physical => CNTP_CTL_EL0.get(),
        };
        Control {
            enabled: ctl & CTL_ENABLE != 0,
            masked: ctl & CTL_IMASK != 0,
            fired: ctl & CTL_ISTATUS != 0,
        }
    }
}
