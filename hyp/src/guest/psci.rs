//! PSCI 1.1 and SMCCC 1.1 as a guest sees them: a decoder for its calls and a per-VM state
//! machine of its vCPUs' power states.
//!
//! References: Arm Power State Coordination Interface, DEN0022 (PSCI 1.1), and the SMC Calling
//! Convention, DEN0028 (SMCCC 1.1). The same calls arrive over HVC and over SMC (when
//! HCR_EL2.TSC traps the guest's SMCs), and get the same answers.
//!
//! Returning to the caller is the hypervisor's job, with one subtlety: a trapped HVC leaves
//! ELR_EL2 at the next instruction, but an SMC trapped by HCR_EL2.TSC leaves it at the SMC
//! itself (Arm ARM, chapter D1, "Preferred exception return address"), so the SMC path must
//! add 4.
//!
//! Return values are written sign-extended to 64 bits for both calling conventions: the SMC32
//! convention only defines W0-W3, and a 64-bit -1 has the 32-bit -1 in its W register.

use core::fmt;

use smccc::arch::{
    self, SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2,
    SMCCC_ARCH_WORKAROUND_3, SMCCC_VERSION,
};
use smccc::psci::error::{
    ALREADY_ON, INTERNAL_FAILURE, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED, ON_PENDING,
    SUCCESS,
};
use smccc::psci::{
    self, AffinityState, MigrateType, PSCI_AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64, PSCI_CPU_OFF,
    PSCI_CPU_ON_32, PSCI_CPU_ON_64, PSCI_CPU_SUSPEND_32, PSCI_CPU_SUSPEND_64, PSCI_FEATURES,
    PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_VERSION,
};

/// The PSCI version guests are told: 1.1.
pub const GUEST_PSCI_VERSION: psci::Version = psci::Version { major: 1, minor: 1 };

/// The SMCCC version guests are told: 1.1.
pub const GUEST_SMCCC_VERSION: arch::Version = arch::Version { major: 1, minor: 1 };

/// PSCI_FEATURES(CPU_SUSPEND) flags: bit\[1\] = 0, no OS-initiated mode; bit\[0\] = 0, the
/// original power_state parameter format (PSCI 1.1, "PSCI_FEATURES").
pub const CPU_SUSPEND_FEATURES: u32 = 0;

/// The most vCPUs a VM can have: a vCPU's MPIDR is its index in Aff0, an 8-bit field.
pub const MAX_VCPUS: usize = 256;

/// One guest call, decoded from x0..x7 at the trap.
///
/// Functions of the SMC32/HVC32 convention (ids 0x8400_xxxx, 0x8000_xxxx) take their arguments
/// from W1..W7: the upper halves of X1..X7 are ignored, as SMCCC 1.1 says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// PSCI_VERSION.
    PsciVersion,
    /// PSCI_FEATURES: is `function_id` implemented?
    PsciFeatures {
        /// The function asked about.
        function_id: u32,
    },
    /// CPU_SUSPEND (32- or 64-bit).
    CpuSuspend {
        /// The power_state parameter, original format.
        power_state: u32,
        /// Where a powerdown state would resume; unused, every state is standby here.
        entry: u64,
        /// The context_id a powerdown state would pass back; unused.
        context_id: u64,
    },
    /// CPU_OFF: power down the calling vCPU.
    CpuOff,
    /// CPU_ON (32- or 64-bit).
    CpuOn {
        /// The target vCPU's MPIDR affinity fields.
        target_cpu: u64,
        /// Where the target starts, an IPA (the target starts with its MMU off).
        entry: u64,
        /// The value the target finds in x0.
        context_id: u64,
    },
    /// AFFINITY_INFO (32- or 64-bit).
    AffinityInfo {
        /// The MPIDR affinity fields asked about.
        target_affinity: u64,
        /// Which affinity fields of `target_affinity` are significant; only 0 is supported.
        lowest_affinity_level: u32,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF: stop this VM.
    SystemOff,
    /// SYSTEM_RESET: restart this VM.
    SystemReset,
    /// SMCCC_VERSION.
    SmcccVersion,
    /// SMCCC_ARCH_FEATURES: is the Arm architecture service `function_id` implemented?
    SmcccArchFeatures {
        /// The function asked about.
        function_id: u32,
    },
    /// SMCCC_ARCH_WORKAROUND_1, _2 or _3: a firmware mitigation a guest asks for. It is only
    /// honoured where [`FirmwareMitigations`] says the host firmware has it.
    ArchWorkaround {
        /// Which of the three.
        function_id: u32,
        /// W1: for WORKAROUND_2, whether to enable the mitigation; ignored by the others.
        arg: u32,
    },
    /// Anything else: answered NOT_SUPPORTED (-1), as SMCCC says for an unknown function id.
    Unknown(u32),
}

/// Decodes a guest's HVC or SMC from its x0..x7. Every value decodes to some [`Call`].
pub fn decode(x: [u64; 8]) -> Call {
    // The function id is W0; the upper half of X0 is not part of it (SMCCC 1.1, "Function
    // Identifiers").
    let function_id = x[0] as u32;
    let w = |i: usize| u64::from(x[i] as u32);
    match function_id {
        PSCI_VERSION => Call::PsciVersion,
        PSCI_FEATURES => Call::PsciFeatures {
            function_id: x[1] as u32,
        },
        PSCI_CPU_SUSPEND_32 => Call::CpuSuspend {
            power_state: x[1] as u32,
            entry: w(2),
            context_id: w(3),
        },
        PSCI_CPU_SUSPEND_64 => Call::CpuSuspend {
            power_state: x[1] as u32,
            entry: x[2],
            context_id: x[3],
        },
        PSCI_CPU_OFF => Call::CpuOff,
        PSCI_CPU_ON_32 => Call::CpuOn {
            target_cpu: w(1),
            entry: w(2),
            context_id: w(3),
        },
        PSCI_CPU_ON_64 => Call::CpuOn {
            target_cpu: x[1],
            entry: x[2],
            context_id: x[3],
        },
        PSCI_AFFINITY_INFO_32 => Call::AffinityInfo {
            target_affinity: w(1),
            lowest_affinity_level: x[2] as u32,
        },
        PSCI_AFFINITY_INFO_64 => Call::AffinityInfo {
            target_affinity: x[1],
            lowest_affinity_level: x[2] as u32,
        },
        PSCI_MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        PSCI_SYSTEM_OFF => Call::SystemOff,
        PSCI_SYSTEM_RESET => Call::SystemReset,
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures {
            function_id: x[1] as u32,
        },
        SMCCC_ARCH_WORKAROUND_1 | SMCCC_ARCH_WORKAROUND_2 | SMCCC_ARCH_WORKAROUND_3 => {
            Call::ArchWorkaround {
                function_id,
                arg: x[1] as u32,
            }
        }
        other => Call::Unknown(other),
    }
}

/// Which SMCCC_ARCH_WORKAROUND_n the host firmware implements, as the hypervisor found out
/// with its own SMCCC_ARCH_FEATURES calls at boot.
///
/// Policy: a guest is told a workaround exists (SMCCC_ARCH_FEATURES answers 0) only when its
/// flag is set, and its calls then become [`Effect::FirmwareWorkaround`], which the hypervisor
/// passes to the firmware on the same physical CPU (each vCPU has its own). With a flag clear,
/// the guest is told NOT_SUPPORTED (-1) and reports itself vulnerable or unknown, which is the
/// truth: advertising a mitigation that nothing performs would hide the problem. The default is
/// all clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirmwareMitigations {
    /// SMCCC_ARCH_WORKAROUND_1 (branch predictor invalidation, CVE-2017-5715).
    pub workaround_1: bool,
    /// SMCCC_ARCH_WORKAROUND_2 (speculative store bypass, CVE-2018-3639).
    pub workaround_2: bool,
    /// SMCCC_ARCH_WORKAROUND_3 (branch history, CVE-2022-23960).
    pub workaround_3: bool,
}

impl FirmwareMitigations {
    fn has(&self, function_id: u32) -> bool {
        match function_id {
            SMCCC_ARCH_WORKAROUND_1 => self.workaround_1,
            SMCCC_ARCH_WORKAROUND_2 => self.workaround_2,
            SMCCC_ARCH_WORKAROUND_3 => self.workaround_3,
            _ => false,
        }
    }
}

/// A vCPU's power state as PSCI sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuPower {
    /// Not running; CPU_ON may start it.
    Off,
    /// Running (or suspended in a standby state, which PSCI counts as on).
    On,
    /// A CPU_ON was accepted; the hypervisor has not yet reported it running.
    OnPending,
}

/// What the hypervisor must do after a call, besides the return values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write x0..x3 and resume the caller.
    Return,
    /// Write x0..x3, resume the caller, and start `vcpu` as PSCI 1.1 says for CPU_ON:
    /// PC = `entry`, x0 = `context_id`, EL1h with D, A, I, F masked, MMU and caches off
    /// (SCTLR_EL1.M = 0, C = 0). Call [`VmPsci::vcpu_started`] once it runs, or
    /// [`VmPsci::vcpu_stopped`] if it cannot be started.
    StartVcpu {
        /// The vCPU index.
        vcpu: usize,
        /// The entry point, already checked to lie in the VM's memory.
        entry: u64,
        /// The target's x0.
        context_id: u64,
    },
    /// CPU_OFF: the call does not return. Park the calling vCPU until a later CPU_ON starts
    /// it again at a new entry point. When [`VmPsci::all_off`] is then true, nothing in the
    /// VM can ever start a vCPU again: stop the VM as for SYSTEM_OFF, logging that its last
    /// vCPU turned itself off.
    StopCaller,
    /// CPU_SUSPEND, taken as a standby state whatever power_state asked (PSCI lets an
    /// implementation enter a shallower state than requested): wait as for a WFI until an
    /// interrupt is pending for the vCPU, then write x0..x3 (SUCCESS) and resume the caller.
    Suspend,
    /// SYSTEM_OFF: the call does not return. Stop this VM alone.
    SystemOff,
    /// SYSTEM_RESET: the call does not return. Restart this VM alone from its initial state,
    /// and call [`VmPsci::reset`].
    SystemReset,
    /// An SMCCC_ARCH_WORKAROUND_n the host firmware has: make the same SMC on this physical
    /// CPU (W0 = `function_id`, W1 = `arg`), then write x0..x3 and resume the caller.
    FirmwareWorkaround {
        /// The SMCCC_ARCH_WORKAROUND_n function id.
        function_id: u32,
        /// Its W1 argument.
        arg: u32,
    },
}

/// The answer to one call: the caller's new x0..x3 and the [`Effect`].
///
/// x1..x3 are zero for every call here: they are result registers whose content SMCCC 1.1
/// leaves open for single-result calls, and zero tells the guest nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The values for x0..x3, when the call returns.
    pub x: [u64; 4],
    /// What the hypervisor does next.
    pub effect: Effect,
}

impl Outcome {
    fn returning(x0: u64) -> Self {
        Self::with(x0, Effect::Return)
    }

    fn code(code: i32) -> Self {
        Self::returning(sign_extend(code))
    }

    fn with(x0: u64, effect: Effect) -> Self {
        Self {
            x: [x0, 0, 0, 0],
            effect,
        }
    }
}

fn sign_extend(code: i32) -> u64 {
    i64::from(code) as u64
}

/// Why a [`VmPsci`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewVmPsciError {
    /// A VM needs at least one vCPU.
    NoVcpus,
    /// More vCPUs than Aff0 can number ([`MAX_VCPUS`]).
    TooManyVcpus {
        /// The count asked for.
        count: usize,
    },
}

impl fmt::Display for NewVmPsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVcpus => write!(f, "a VM needs at least one vCPU"),
            Self::TooManyVcpus { count } => write!(
                f,
                "{count} vCPUs: a VM has at most {MAX_VCPUS}, numbered by MPIDR Aff0"
            ),
        }
    }
}

/// The MPIDR affinity fields of a VM's vCPU `vcpu`: Aff0 = `vcpu`, Aff1-Aff3 = 0.
pub fn vcpu_affinity(vcpu: usize) -> u64 {
    (vcpu as u64) & 0xff
}

/// PSCI state of one VM: the power state of each of its vCPUs.
#[derive(Clone, Debug)]
pub struct VmPsci {
    power: [VcpuPower; MAX_VCPUS],
    count: usize,
    mitigations: FirmwareMitigations,
}

impl VmPsci {
    /// A VM of `vcpu_count` vCPUs in its initial state: vCPU 0 on, the others off.
    pub fn new(
        vcpu_count: usize,
        mitigations: FirmwareMitigations,
    ) -> Result<Self, NewVmPsciError> {
        if vcpu_count == 0 {
            return Err(NewVmPsciError::NoVcpus);
        }
        if vcpu_count > MAX_VCPUS {
            return Err(NewVmPsciError::TooManyVcpus { count: vcpu_count });
        }
        let mut vm = Self {
            power: [VcpuPower::Off; MAX_VCPUS],
            count: vcpu_count,
            mitigations,
        };
        vm.reset();
        Ok(vm)
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.count
    }

    /// The power state of `vcpu`, or `None` if the VM has no such vCPU.
    pub fn power(&self, vcpu: usize) -> Option<VcpuPower> {
        self.power[..self.count].get(vcpu).copied()
    }

    /// True when no vCPU is on or about to be: the VM can never run again by itself.
    pub fn all_off(&self) -> bool {
        self.power[..self.count]
            .iter()
            .all(|p| *p == VcpuPower::Off)
    }

    /// Back to the initial state (vCPU 0 on, the others off), as after SYSTEM_RESET.
    pub fn reset(&mut self) {
        self.power = [VcpuPower::Off; MAX_VCPUS];
        self.power[0] = VcpuPower::On;
    }

    /// The hypervisor reports `vcpu` running after an [`Effect::StartVcpu`]: OnPending
    /// becomes On. Returns false, changing nothing, if `vcpu` was not pending.
    pub fn vcpu_started(&mut self, vcpu: usize) -> bool {
        match self.power[..self.count].get_mut(vcpu) {
            Some(p @ VcpuPower::OnPending) => {
                *p = VcpuPower::On;
                true
            }
            _ => false,
        }
    }

    /// The hypervisor stopped `vcpu` on its own (it could not be started, or it was stopped
    /// for misbehaving): it becomes Off, and a later CPU_ON may start it again. Returns false
    /// if the VM has no such vCPU.
    pub fn vcpu_stopped(&mut self, vcpu: usize) -> bool {
        match self.power[..self.count].get_mut(vcpu) {
            Some(p) => {
                *p = VcpuPower::Off;
                true
            }
            None => false,
        }
    }

    /// The vCPU whose MPIDR affinity is `mpidr`, if it is one of this VM's.
    ///
    /// PSCI's target_cpu holds only the affinity fields, every other bit zero, so the exact
    /// value must be a vCPU index.
    pub fn vcpu_of(&self, mpidr: u64) -> Option<usize> {
        usize::try_from(mpidr).ok().filter(|v| *v < self.count)
    }

    /// Answers `call` made by vCPU `caller`. `entry_valid` says whether an address lies in the
    /// VM's memory (a CPU_ON entry point outside it gets INVALID_ADDRESS).
    ///
    /// `caller` should be a running vCPU of this VM (On, or OnPending if the hypervisor has
    /// not reported it started yet, which this call then does). Anything else is a
    /// hypervisor bug: the call gets INTERNAL_FAILURE and changes nothing.
    pub fn handle(
        &mut self,
        caller: usize,
        call: Call,
        entry_valid: impl Fn(u64) -> bool,
    ) -> Outcome {
        match self.power(caller) {
            Some(VcpuPower::On) => {}
            Some(VcpuPower::OnPending) => self.power[caller] = VcpuPower::On,
            Some(VcpuPower::Off) | None => return Outcome::code(INTERNAL_FAILURE),
        }
        match call {
            Call::PsciVersion => Outcome::returning(u32::from(GUEST_PSCI_VERSION).into()),
            Call::PsciFeatures { function_id } => match psci_features(function_id) {
                Some(flags) => Outcome::returning(flags.into()),
                None => Outcome::code(NOT_SUPPORTED),
            },
            Call::CpuSuspend { .. } => Outcome::with(sign_extend(SUCCESS), Effect::Suspend),
            Call::CpuOff => {
                self.power[caller] = VcpuPower::Off;
                Outcome::with(sign_extend(SUCCESS), Effect::StopCaller)
            }
            Call::CpuOn {
                target_cpu,
                entry,
                context_id,
            } => self.cpu_on(target_cpu, entry, context_id, entry_valid),
            Call::AffinityInfo {
                target_affinity,
                lowest_affinity_level,
            } => {
                let Some(vcpu) = self.vcpu_of(target_affinity) else {
                    return Outcome::code(INVALID_PARAMETERS);
                };
                if lowest_affinity_level != 0 {
                    return Outcome::code(INVALID_PARAMETERS);
                }
                let state = match self.power[vcpu] {
                    VcpuPower::On => AffinityState::On,
                    VcpuPower::Off => AffinityState::Off,
                    VcpuPower::OnPending => AffinityState::OnPending,
                };
                Outcome::code(state as i32)
            }
            Call::MigrateInfoType => Outcome::code(MigrateType::MigrationNotRequired as i32),
            Call::SystemOff => Outcome::with(sign_extend(SUCCESS), Effect::SystemOff),
            Call::SystemReset => Outcome::with(sign_extend(SUCCESS), Effect::SystemReset),
            Call::SmcccVersion => Outcome::returning(u32::from(GUEST_SMCCC_VERSION).into()),
            Call::SmcccArchFeatures { function_id } => match function_id {
                SMCCC_VERSION | SMCCC_ARCH_FEATURES => Outcome::code(SUCCESS),
                id if self.mitigations.has(id) => Outcome::code(SUCCESS),
                _ => Outcome::code(arch::error::NOT_SUPPORTED),
            },
            Call::ArchWorkaround { function_id, arg } => {
                if self.mitigations.has(function_id) {
                    Outcome::with(
                        sign_extend(SUCCESS),
                        Effect::FirmwareWorkaround { function_id, arg },
                    )
                } else {
                    Outcome::code(arch::error::NOT_SUPPORTED)
                }
            }
            Call::Unknown(_) => Outcome::code(NOT_SUPPORTED),
        }
    }

    fn cpu_on(
        &mut self,
        target_cpu: u64,
        entry: u64,
        context_id: u64,
        entry_valid: impl Fn(u64) -> bool,
    ) -> Outcome {
        let Some(vcpu) = self.vcpu_of(target_cpu) else {
            return Outcome::code(INVALID_PARAMETERS);
        };
        match self.power[vcpu] {
            VcpuPower::On => Outcome::code(ALREADY_ON),
            VcpuPower::OnPending => Outcome::code(ON_PENDING),
            // An AArch64 entry point must be word-aligned: a misaligned one could never run.
            VcpuPower::Off if !entry.is_multiple_of(4) || !entry_valid(entry) => {
                Outcome::code(INVALID_ADDRESS)
            }
            VcpuPower::Off => {
                self.power[vcpu] = VcpuPower::OnPending;
                Outcome::with(
                    sign_extend(SUCCESS),
                    Effect::StartVcpu {
                        vcpu,
                        entry,
                        context_id,
                    },
                )
            }
        }
    }
}

/// PSCI_FEATURES: the feature flags of a supported function, `None` for the others. The
/// SMCCC_VERSION id is included, since PSCI 1.1 makes PSCI_FEATURES the way to discover it.
fn psci_features(function_id: u32) -> Option<u32> {
    match function_id {
        PSCI_CPU_SUSPEND_32 | PSCI_CPU_SUSPEND_64 => Some(CPU_SUSPEND_FEATURES),
        PSCI_VERSION
        | PSCI_FEATURES
        | PSCI_CPU_OFF
        | PSCI_CPU_ON_32
        | PSCI_CPU_ON_64
        | PSCI_AFFINITY_INFO_32
        | PSCI_AFFINITY_INFO_64
        | PSCI_MIGRATE_INFO_TYPE
        | PSCI_SYSTEM_OFF
        | PSCI_SYSTEM_RESET
        | SMCCC_VERSION => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOT_SUPPORTED_64: u64 = u64::MAX;
    const RAM: core::ops::Range<u64> = 0x4000_0000..0x8000_0000;

    fn in_ram(addr: u64) -> bool {
        RAM.contains(&addr)
    }

    fn vm(n: usize) -> VmPsci {
        VmPsci::new(n, FirmwareMitigations::default()).unwrap()
    }

    fn call(vm: &mut VmPsci, caller: usize, x: [u64; 8]) -> Outcome {
        vm.handle(caller, decode(x), in_ram)
    }

    fn x0(code: i32) -> [u64; 4] {
        [sign_extend(code), 0, 0, 0]
    }

    fn ret(code: i32) -> Outcome {
        Outcome::code(code)
    }

    #[test]
    fn decodes_every_call() {
        let hi = 0xdead_beef_0000_0000;
        let cases = [
            ([0x8400_0000, 0, 0, 0], Call::PsciVersion),
            (
                [0x8400_000a, hi | 0xc400_0003, 0, 0],
                Call::PsciFeatures {
                    function_id: 0xc400_0003,
                },
            ),
            (
                [0x8400_0001, hi | 1, hi | 0x4000_1000, hi | 7],
                Call::CpuSuspend {
                    power_state: 1,
                    entry: 0x4000_1000,
                    context_id: 7,
                },
            ),
            (
                [0xc400_0001, hi | 1, hi | 0x4000_1000, hi | 7],
                Call::CpuSuspend {
                    power_state: 1,
                    entry: hi | 0x4000_1000,
                    context_id: hi | 7,
                },
            ),
            ([0x8400_0002, 0, 0, 0], Call::CpuOff),
            (
                [0x8400_0003, hi | 2, hi | 0x4008_0000, hi | 9],
                Call::CpuOn {
                    target_cpu: 2,
                    entry: 0x4008_0000,
                    context_id: 9,
                },
            ),
            (
                [0xc400_0003, hi | 2, hi | 0x4008_0000, hi | 9],
                Call::CpuOn {
                    target_cpu: hi | 2,
                    entry: hi | 0x4008_0000,
                    context_id: hi | 9,
                },
            ),
            (
                [0x8400_0004, hi | 1, hi, 0],
                Call::AffinityInfo {
                    target_affinity: 1,
                    lowest_affinity_level: 0,
                },
            ),
            (
                [0xc400_0004, hi | 1, 3, 0],
                Call::AffinityInfo {
                    target_affinity: hi | 1,
                    lowest_affinity_level: 3,
                },
            ),
            ([0x8400_0006, 0, 0, 0], Call::MigrateInfoType),
            ([0x8400_0008, 0, 0, 0], Call::SystemOff),
            ([0x8400_0009, 0, 0, 0], Call::SystemReset),
            ([0x8000_0000, 0, 0, 0], Call::SmcccVersion),
            (
                [0x8000_0001, hi | 0x8000_8000, 0, 0],
                Call::SmcccArchFeatures {
                    function_id: 0x8000_8000,
                },
            ),
            (
                [0x8000_7fff, hi | 1, 0, 0],
                Call::ArchWorkaround {
                    function_id: 0x8000_7fff,
                    arg: 1,
                },
            ),
            // The function id is W0: the upper half of X0 is ignored.
            ([hi | 0x8400_0008, 0, 0, 0], Call::SystemOff),
            // No 64-bit PSCI_VERSION, and neither MIGRATE nor SYSTEM_SUSPEND are supported.
            ([0xc400_0000, 0, 0, 0], Call::Unknown(0xc400_0000)),
            ([0x8400_0005, 0, 0, 0], Call::Unknown(0x8400_0005)),
            ([0xc400_000e, 0, 0, 0], Call::Unknown(0xc400_000e)),
            ([0, 0, 0, 0], Call::Unknown(0)),
        ];
        for (regs, want) in cases {
            let x = [regs[0], regs[1], regs[2], regs[3], 0, 0, 0, 0];
            assert_eq!(decode(x), want, "{x:x?}");
        }
    }

    #[test]
    fn versions() {
        let mut vm = vm(1);
        assert_eq!(
            call(&mut vm, 0, [0x8400_0000, 0, 0, 0, 0, 0, 0, 0]).x[0],
            0x1_0001
        );
        assert_eq!(
            call(&mut vm, 0, [0x8000_0000, 0, 0, 0, 0, 0, 0, 0]).x[0],
            0x1_0001
        );
        assert_eq!(call(&mut vm, 0, [0x8400_0006, 0, 0, 0, 0, 0, 0, 0]).x[0], 2);
    }

    #[test]
    fn unknown_calls_are_not_supported() {
        let mut vm = vm(2);
        for id in [
            0,
            0x8400_0005,
            0x8400_0012,
            0xc400_0012,
            0x8000_0002,
            0xc600_0000,
        ] {
            let out = call(&mut vm, 0, [id, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(out, ret(NOT_SUPPORTED), "{id:#x}");
            assert_eq!(out.x[0], NOT_SUPPORTED_64);
        }
    }

    #[test]
    fn psci_features_answers() {
        let mut vm = vm(1);
        for id in [
            0x8400_0000,
            0x8400_000a,
            0x8400_0001,
            0xc400_0001,
            0x8400_0002,
            0x8400_0003,
            0xc400_0003,
            0x8400_0004,
            0xc400_0004,
            0x8400_0006,
            0x8400_0008,
            0x8400_0009,
            0x8000_0000,
        ] {
            assert_eq!(
                call(&mut vm, 0, [0x8400_000a, id, 0, 0, 0, 0, 0, 0]),
                ret(SUCCESS),
                "{id:#x}"
            );
        }
        for id in [
            0x8400_0005,
            0x8400_0012,
            0x8400_000e,
            0x8000_0001,
            0x8000_8000,
            7,
        ] {
            assert_eq!(
                call(&mut vm, 0, [0x8400_000a, id, 0, 0, 0, 0, 0, 0]),
                ret(NOT_SUPPORTED),
                "{id:#x}"
            );
        }
    }

    #[test]
    fn arch_features_and_workarounds() {
        let mut plain = vm(1);
        let features = |id: u64| [0x8000_0001, id, 0, 0, 0, 0, 0, 0];
        assert_eq!(call(&mut plain, 0, features(0x8000_0000)), ret(SUCCESS));
        assert_eq!(call(&mut plain, 0, features(0x8000_0001)), ret(SUCCESS));
        for id in [
            0x8000_8000,
            0x8000_7fff,
            0x8000_3fff,
            0x8000_0002,
            0x8400_0000,
        ] {
            assert_eq!(
                call(&mut plain, 0, features(id)),
                ret(NOT_SUPPORTED),
                "{id:#x}"
            );
            let out = call(&mut plain, 0, [id, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(out.effect, Effect::Return, "{id:#x}");
        }

        let mitigations = FirmwareMitigations {
            workaround_1: true,
            workaround_2: false,
            workaround_3: true,
        };
        let mut vm = VmPsci::new(1, mitigations).unwrap();
        assert_eq!(call(&mut vm, 0, features(0x8000_8000)), ret(SUCCESS));
        assert_eq!(call(&mut vm, 0, features(0x8000_7fff)), ret(NOT_SUPPORTED));
        assert_eq!(call(&mut vm, 0, features(0x8000_3fff)), ret(SUCCESS));
        assert_eq!(
            call(&mut vm, 0, [0x8000_8000, 0, 0, 0, 0, 0, 0, 0]).effect,
            Effect::FirmwareWorkaround {
                function_id: 0x8000_8000,
                arg: 0
            }
        );
        assert_eq!(
            call(&mut vm, 0, [0x8000_7fff, 1, 0, 0, 0, 0, 0, 0]),
            ret(NOT_SUPPORTED)
        );
    }

    #[test]
    fn cpu_on_lifecycle() {
        let mut vm = vm(4);
        let on = |t: u64, e: u64| [0xc400_0003, t, e, 0x55, 0, 0, 0, 0];
        let out = call(&mut vm, 0, on(2, 0x4008_0000));
        assert_eq!(out.x, x0(SUCCESS));
        assert_eq!(
            out.effect,
            Effect::StartVcpu {
                vcpu: 2,
                entry: 0x4008_0000,
                context_id: 0x55
            }
        );
        assert_eq!(vm.power(2), Some(VcpuPower::OnPending));
        assert_eq!(call(&mut vm, 0, on(2, 0x4008_0000)), ret(ON_PENDING));
        assert!(vm.vcpu_started(2));
        assert!(!vm.vcpu_started(2));
        assert_eq!(call(&mut vm, 0, on(2, 0x4008_0000)), ret(ALREADY_ON));
        // Itself, and vCPU 0 from another vCPU.
        assert_eq!(call(&mut vm, 0, on(0, 0x4008_0000)), ret(ALREADY_ON));
        assert_eq!(call(&mut vm, 2, on(0, 0x4008_0000)), ret(ALREADY_ON));
    }

    #[test]
    fn cpu_on_bad_target_or_entry() {
        let mut vm = vm(4);
        let on = |t: u64, e: u64| [0xc400_0003, t, e, 0, 0, 0, 0, 0];
        // Aff0 = 4 is past the VM; Aff1 = 1, Aff3 = 1 and a non-affinity bit are not its MPIDRs.
        for t in [4, 0x100, 0x1_0000_0001, 1 << 31, u64::MAX] {
            assert_eq!(
                call(&mut vm, 0, on(t, 0x4008_0000)),
                ret(INVALID_PARAMETERS),
                "{t:#x}"
            );
        }
        for e in [0, 0x3fff_fffc, 0x8000_0000, 0x4008_0002, u64::MAX] {
            assert_eq!(call(&mut vm, 0, on(1, e)), ret(INVALID_ADDRESS), "{e:#x}");
        }
        assert_eq!(vm.power(1), Some(VcpuPower::Off));
        // CPU_ON_32 sees only W1: 0x1_0000_0001 is vCPU 1.
        let out = call(
            &mut vm,
            0,
            [0x8400_0003, 0x1_0000_0001, 0x4008_0000, 0, 0, 0, 0, 0],
        );
        assert!(matches!(out.effect, Effect::StartVcpu { vcpu: 1, .. }));
    }

    #[test]
    fn affinity_info() {
        let mut vm = vm(3);
        let info = |t: u64, l: u64| [0xc400_0004, t, l, 0, 0, 0, 0, 0];
        call(&mut vm, 0, [0xc400_0003, 1, 0x4000_0000, 0, 0, 0, 0, 0]);
        assert_eq!(call(&mut vm, 0, info(0, 0)), ret(0));
        assert_eq!(call(&mut vm, 0, info(1, 0)), ret(2));
        assert_eq!(call(&mut vm, 0, info(2, 0)), ret(1));
        assert_eq!(call(&mut vm, 0, info(3, 0)), ret(INVALID_PARAMETERS));
        assert_eq!(call(&mut vm, 0, info(0, 1)), ret(INVALID_PARAMETERS));
        assert_eq!(call(&mut vm, 0, info(0, 3)), ret(INVALID_PARAMETERS));
    }

    #[test]
    fn cpu_off_suspend_and_system_calls() {
        let mut vm = vm(2);
        let suspend = call(
            &mut vm,
            0,
            [0xc400_0001, 0x1_0000, 0x4000_0000, 1, 0, 0, 0, 0],
        );
        assert_eq!(suspend, Outcome::with(0, Effect::Suspend));
        assert_eq!(call(&mut vm, 0, [0x8400_0008; 8]).effect, Effect::SystemOff);
        assert_eq!(
            call(&mut vm, 0, [0x8400_0009; 8]).effect,
            Effect::SystemReset
        );

        call(&mut vm, 0, [0xc400_0003, 1, 0x4000_0000, 0, 0, 0, 0, 0]);
        // vCPU 1 calls before the hypervisor reported it: the call itself shows it runs.
        assert_eq!(
            call(&mut vm, 1, [0x8400_0002; 8]).effect,
            Effect::StopCaller
        );
        assert_eq!(vm.power(1), Some(VcpuPower::Off));
        assert!(!vm.all_off());
        // The last vCPU may turn itself off too.
        assert_eq!(
            call(&mut vm, 0, [0x8400_0002; 8]).effect,
            Effect::StopCaller
        );
        assert!(vm.all_off());
        // An off vCPU cannot call: that would be a hypervisor bug.
        assert_eq!(call(&mut vm, 0, [0x8400_0000; 8]), ret(INTERNAL_FAILURE));
        assert_eq!(call(&mut vm, 7, [0x8400_0000; 8]), ret(INTERNAL_FAILURE));
        vm.reset();
        assert_eq!(vm.power(0), Some(VcpuPower::On));
        assert_eq!(vm.power(1), Some(VcpuPower::Off));
        assert_eq!(vm.power(2), None);
    }

    #[test]
    fn construction_limits() {
        let none = FirmwareMitigations::default();
        assert_eq!(VmPsci::new(0, none).unwrap_err(), NewVmPsciError::NoVcpus);
        assert_eq!(
            VmPsci::new(257, none).unwrap_err(),
            NewVmPsciError::TooManyVcpus { count: 257 }
        );
        let big = VmPsci::new(256, none).unwrap();
        assert_eq!(big.vcpu_of(255), Some(255));
        assert_eq!(big.vcpu_of(256), None);
        assert_eq!(vcpu_affinity(255), 0xff);
        assert!(!NewVmPsciError::NoVcpus.to_string().is_empty());
    }

    #[derive(Clone, Debug)]
    enum Step {
        Call(usize, [u64; 8]),
        Started(usize),
        Stopped(usize),
    }

    fn function_ids() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0x8400_0000u64),
            Just(0x8400_000a),
            Just(0x8400_0001),
            Just(0xc400_0001),
            Just(0x8400_0002),
            Just(0x8400_0003),
            Just(0xc400_0003),
            Just(0x8400_0004),
            Just(0xc400_0004),
            Just(0x8400_0006),
            Just(0x8400_0008),
            Just(0x8400_0009),
            Just(0x8000_0000),
            Just(0x8000_0001),
            Just(0x8000_8000),
            any::<u64>(),
        ]
    }

    fn steps(n: usize) -> impl Strategy<Value = Step> {
        let small = prop_oneof![0..(n as u64 + 2), any::<u64>()];
        let entry = prop_oneof![RAM.start..RAM.end, any::<u64>()];
        prop_oneof![
            4 => (0..n + 2, function_ids(), small.clone(), entry, any::<u64>(), small)
                .prop_map(|(c, f, a1, a2, a3, a4)| Step::Call(c, [f, a1, a2, a3, a4, 0, 0, 0])),
            1 => (0..n + 1).prop_map(Step::Started),
            1 => (0..n + 1).prop_map(Step::Stopped),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(x in any::<[u64; 8]>()) {
            let mut vm = vm(8);
            let _ = vm.handle(0, decode(x), |_| true);
        }

        #[test]
        fn random_calls_keep_the_invariants(
            n in 1usize..6,
            seq in proptest::collection::vec(steps(6), 0..64),
        ) {
            let mut vm = vm(n);
            // The model: the vCPUs started (and not turned off since), pending or on.
            let mut model = [VcpuPower::Off; 6];
            model[0] = VcpuPower::On;
            for step in seq {
                match step {
                    Step::Started(v) => {
                        let was_pending = v < n && model[v] == VcpuPower::OnPending;
                        prop_assert_eq!(vm.vcpu_started(v), was_pending);
                        if was_pending {
                            model[v] = VcpuPower::On;
                        }
                    }
                    Step::Stopped(v) => {
                        prop_assert_eq!(vm.vcpu_stopped(v), v < n);
                        if v < n {
                            model[v] = VcpuPower::Off;
                        }
                    }
                    Step::Call(caller, x) => {
                        let decoded = decode(x);
                        let before = vm.power(caller);
                        let out = vm.handle(caller, decoded, in_ram);
                        if before.is_none() || before == Some(VcpuPower::Off) {
                            prop_assert_eq!(out, ret(INTERNAL_FAILURE));
                            continue;
                        }
                        model[caller] = VcpuPower::On;
                        if let Call::CpuOn { target_cpu, .. } = decoded {
                            let target = vm.vcpu_of(target_cpu);
                            let was_on = target.is_some_and(|t| model[t] == VcpuPower::On);
                            prop_assert_eq!(out.x[0] == sign_extend(ALREADY_ON), was_on);
                        }
                        match out.effect {
                            Effect::StartVcpu { vcpu, entry, .. } => {
                                prop_assert_eq!(model[vcpu], VcpuPower::Off);
                                prop_assert!(in_ram(entry));
                                model[vcpu] = VcpuPower::OnPending;
                            }
                            Effect::StopCaller => model[caller] = VcpuPower::Off,
                            Effect::SystemReset => {
                                vm.reset();
                                model = [VcpuPower::Off; 6];
                                model[0] = VcpuPower::On;
                            }
                            _ => {}
                        }
                    }
                }
                for (v, want) in model.iter().enumerate().take(n) {
                    prop_assert_eq!(vm.power(v), Some(*want));
                }
                prop_assert_eq!(vm.all_off(), model[..n].iter().all(|p| *p == VcpuPower::Off));
            }
        }
    }
}
