//! The EL1 physical timer a guest sees, emulated. CNTHCTL_EL2.EL1PCEN = 0 traps its
//! CNTP_CTL_EL0, CNTP_CVAL_EL0 and CNTP_TVAL_EL0 accesses (ESR_EL2 class 0x18); this model
//! answers them and says when the timer's interrupt line is high and which deadline the
//! hypervisor must arm on the EL2 physical timer (CNTHP) to notice it rising. The counter
//! itself, CNTPCT_EL0, stays readable without a trap (EL1PCTEN = 1): it is the same
//! counter the hypervisor reads.
//!
//! Why trap it at all: the EL1 physical timer's PPI is the one a guest kernel running at
//! EL1 may use beside the virtual timer, and handing it the hardware directly would leave
//! nothing for the hypervisor's own deadlines on that CPU; emulating it on CNTHP keeps the
//! hardware timer the hypervisor's.

/// CNTP_CTL_EL0.ENABLE.
pub const CTL_ENABLE: u64 = 1 << 0;
/// CNTP_CTL_EL0.IMASK.
pub const CTL_IMASK: u64 = 1 << 1;
/// CNTP_CTL_EL0.ISTATUS (read-only).
pub const CTL_ISTATUS: u64 = 1 << 2;

use crate::esr::SysregAccess;

/// One of the emulated registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// CNTP_TVAL_EL0 (Op2 0).
    Tval,
    /// CNTP_CTL_EL0 (Op2 1).
    Ctl,
    /// CNTP_CVAL_EL0 (Op2 2).
    Cval,
}

/// A decoded trapped access: which register, the general register `rt`, and the
/// direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The register accessed.
    pub register: Register,
    /// Xt of the MRS/MSR (31 is XZR).
    pub rt: usize,
    /// MRS (true) or MSR (false).
    pub read: bool,
}

/// Decodes the ISS of a trapped MSR/MRS (ESR_EL2 class 0x18): an access to one of the EL1
/// physical timer's registers (Op0 3, Op1 3, CRn 14, CRm 2, Op2 0..2), or None.
pub fn decode(iss: u32) -> Option<Access> {
    let access = SysregAccess::decode(iss);
    if !access.is(3, 3, 14, 2) {
        return None;
    }
    let register = match access.op2 {
        0 => Register::Tval,
        1 => Register::Ctl,
        2 => Register::Cval,
        _ => return None,
    };
    Some(Access {
        register,
        rt: access.rt,
        read: access.read,
    })
}

/// The emulated timer's state: what the guest wrote. It resets to disabled with CVAL 0
/// (the architecture leaves both UNKNOWN at reset; a guest must program them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysTimer {
    ctl: u64,
    cval: u64,
}

impl PhysTimer {
    /// A timer as after reset.
    pub const fn new() -> Self {
        Self { ctl: 0, cval: 0 }
    }

    /// Whether the timer condition is met at counter value `now` (ISTATUS).
    pub fn condition(&self, now: u64) -> bool {
        self.ctl & CTL_ENABLE != 0 && now >= self.cval
    }

    /// Whether the timer's interrupt line is high at `now`: condition met and not masked.
    pub fn line(&self, now: u64) -> bool {
        self.condition(now) && self.ctl & CTL_IMASK == 0
    }

    /// The counter value at which the line will rise, if it is low now and can rise
    /// without the guest writing again: the deadline to arm on the EL2 timer.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        let armed = self.ctl & CTL_ENABLE != 0 && self.ctl & CTL_IMASK == 0;
        (armed && now < self.cval).then_some(self.cval)
    }

    /// What an MRS of `register` reads at `now`.
    pub fn read(&self, register: Register, now: u64) -> u64 {
        match register {
            // TVAL reads as the low 32 bits of CVAL - now, a signed down-counter.
            Register::Tval => self.cval.wrapping_sub(now) & 0xffff_ffff,
            Register::Ctl => {
                let status = if self.condition(now) { CTL_ISTATUS } else { 0 };
                (self.ctl & (CTL_ENABLE | CTL_IMASK)) | status
            }
            Register::Cval => self.cval,
        }
    }

    /// An MSR of `value` to `register` at `now`.
    pub fn write(&mut self, register: Register, value: u64, now: u64) {
        match register {
            // TVAL writes CVAL = now + SignExtend(value[31:0]).
            Register::Tval => {
                let offset = i64::from(value as u32 as i32);
                self.cval = now.wrapping_add(offset as u64);
            }
            // ISTATUS and the RES0 bits ignore writes.
            Register::Ctl => self.ctl = value & (CTL_ENABLE | CTL_IMASK),
            Register::Cval => self.cval = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The ISS of an MSR/MRS of S3_3_C14_C2_<op2> with Xt = `rt`.
    fn iss(op2: u32, rt: u32, read: bool) -> u32 {
        (3 << 20) | (op2 << 17) | (3 << 14) | (14 << 10) | (rt << 5) | (2 << 1) | u32::from(read)
    }

    #[test]
    fn decodes_the_three_registers() {
        assert_eq!(
            decode(iss(1, 3, true)),
            Some(Access {
                register: Register::Ctl,
                rt: 3,
                read: true
            })
        );
        assert_eq!(
            decode(iss(0, 31, false)).map(|a| a.register),
            Some(Register::Tval)
        );
        assert_eq!(
            decode(iss(2, 0, false)).map(|a| a.register),
            Some(Register::Cval)
        );
        // CNTP_* op2 3 does not exist; CRm 3 is the virtual timer; CRm 0 the counter.
        assert_eq!(decode(iss(3, 0, true)), None);
        assert_eq!(decode(iss(1, 0, true) ^ (1 << 1)), None);
        assert_eq!(decode(iss(1, 0, true) & !(2 << 1)), None);
    }

    #[test]
    fn fires_at_its_deadline_unless_masked() {
        let mut t = PhysTimer::new();
        assert!(!t.line(u64::MAX));
        t.write(Register::Cval, 1000, 0);
        t.write(Register::Ctl, CTL_ENABLE, 0);
        assert_eq!(t.deadline(10), Some(1000));
        assert!(!t.line(999));
        assert!(t.line(1000));
        assert_eq!(t.deadline(1000), None);
        assert_eq!(t.read(Register::Ctl, 1000), CTL_ENABLE | CTL_ISTATUS);
        t.write(Register::Ctl, CTL_ENABLE | CTL_IMASK | CTL_ISTATUS, 1000);
        assert!(!t.line(2000));
        assert_eq!(
            t.read(Register::Ctl, 2000),
            CTL_ENABLE | CTL_IMASK | CTL_ISTATUS
        );
        assert_eq!(t.deadline(0), None);
    }

    #[test]
    fn tval_is_a_signed_32_bit_down_counter() {
        let mut t = PhysTimer::new();
        t.write(Register::Tval, 500, 10_000);
        assert_eq!(t.read(Register::Cval, 0), 10_500);
        assert_eq!(t.read(Register::Tval, 10_100), 400);
        // Past the deadline TVAL reads negative.
        assert_eq!(t.read(Register::Tval, 10_501), 0xffff_ffff);
        // A negative TVAL sets a deadline in the past; only bits [31:0] count.
        t.write(Register::Tval, 0xdead_0000_ffff_fff0, 10_000);
        assert_eq!(t.read(Register::Cval, 0), 10_000 - 16);
    }

    proptest! {
        /// Whatever a guest writes, the line is high exactly when the condition holds and
        /// IMASK is clear, and an armed deadline is always in the future.
        #[test]
        fn line_and_deadline_agree(
            writes in prop::collection::vec((0u64..3, any::<u64>(), any::<u64>()), 0..16),
            now in any::<u64>(),
        ) {
            let mut t = PhysTimer::new();
            for (reg, value, at) in writes {
                let reg = [Register::Tval, Register::Ctl, Register::Cval][reg as usize];
                t.write(reg, value, at);
            }
            let ctl = t.read(Register::Ctl, now);
            prop_assert_eq!(
                t.line(now),
                ctl & CTL_ISTATUS != 0 && ctl & CTL_IMASK == 0
            );
            if let Some(deadline) = t.deadline(now) {
                prop_assert!(deadline > now);
                prop_assert!(!t.line(now));
                prop_assert!(t.line(deadline));
            }
        }
    }
}
