//! Fuzzes the pure guest-facing code of the `hyp` crate against models of what each piece
//! promises: the PSCI/SMCCC decoder and a VM's PSCI state machine under random calls from
//! random vCPUs, the data-abort syndrome decoder and the load/store completion it drives,
//! exception injection, the ESR class names, the trapped physical-timer registers, and the
//! virtual PL011 under random register accesses and input.
#![no_main]

use std::collections::VecDeque;

use hyp::devices::vpl011::{self, VirtualPl011, LINE_MAX, RX_FIFO};
use hyp::esr;
use hyp::guest::abort::{self, AccessSize, FaultStatus, NotMmio};
use hyp::guest::hypercall::{self, Hypercall};
use hyp::guest::inject::{self, EntryFeatures, Exception, GuestContext, InjectError, VectorOffset};
use hyp::guest::psci::{
    self, Call, Effect, FirmwareMitigations, NewVmPsciError, VcpuPower, VmPsci, MAX_VCPUS,
};
use hyp::guest::ptimer::{self, PhysTimer, Register, CTL_ENABLE, CTL_IMASK, CTL_ISTATUS};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use smccc::psci::error::{
    ALREADY_ON, INTERNAL_FAILURE, INVALID_ADDRESS, INVALID_PARAMETERS, NOT_SUPPORTED, ON_PENDING,
    SUCCESS,
};

/// Steps decoded from one input at most.
const MAX_STEPS: usize = 256;
/// The VM's memory, for CPU_ON entry points.
const RAM: std::ops::Range<u64> = 0x4000_0000..0x8000_0000;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0..=4u8) {
        Ok(0) => psci_calls(&mut u),
        Ok(1) => aborts(&mut u),
        Ok(2) => timer(&mut u),
        Ok(3) => uart(&mut u),
        _ => injections(&mut u),
    };
});

/// True once in `n` times; false when the input has run out, so that the rare choice is
/// never the default (`Unstructured::ratio` is true then).
fn one_in(u: &mut Unstructured, n: u8) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? == n)
}

/// A 64-bit SMCCC return value: a 32-bit one, sign-extended.
fn code(c: i32) -> u64 {
    i64::from(c) as u64
}

/// The PSCI and SMCCC function ids the decoder knows, and a few it does not.
const FUNCTION_IDS: [u32; 22] = [
    0x8400_0000, // PSCI_VERSION
    0x8400_0001, // CPU_SUSPEND (32)
    0xc400_0001, // CPU_SUSPEND (64)
    0x8400_0002, // CPU_OFF
    0x8400_0003, // CPU_ON (32)
    0xc400_0003, // CPU_ON (64)
    0x8400_0004, // AFFINITY_INFO (32)
    0xc400_0004, // AFFINITY_INFO (64)
    0x8400_0005, // MIGRATE, not supported
    0x8400_0006, // MIGRATE_INFO_TYPE
    0x8400_0008, // SYSTEM_OFF
    0x8400_0009, // SYSTEM_RESET
    0x8400_000a, // PSCI_FEATURES
    0x8400_000e, // SYSTEM_SUSPEND, not supported
    0x8000_0000, // SMCCC_VERSION
    0x8000_0001, // SMCCC_ARCH_FEATURES
    0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
    0x8000_7fff, // SMCCC_ARCH_WORKAROUND_2
    0x8000_3fff, // SMCCC_ARCH_WORKAROUND_3
    0x8600_ff01, // VENDOR_HYP_CALL_UID (Tandem's)
    0xc600_0001, // TANDEM_DOORBELL (Tandem's)
    0xc400_0000, // no 64-bit PSCI_VERSION
];

fn function_id(u: &mut Unstructured) -> Result<u64> {
    let high = u64::from(u.arbitrary::<u32>()?) << 32;
    let id = if u.ratio(7, 8)? {
        u64::from(*u.choose(&FUNCTION_IDS)?)
    } else {
        u64::from(u.arbitrary::<u32>()?)
    };
    // The upper half of X0 is not part of the function id; now and then it is not zero.
    Ok(if one_in(u, 4)? { high | id } else { id })
}

/// An argument: a small number (a vCPU, an affinity level), an address in or near RAM, or
/// any value.
fn argument(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=10u64)?,
        1 => u.int_in_range(RAM.start - 8..=RAM.end + 8)?,
        _ => u.arbitrary()?,
    })
}

fn psci_calls(u: &mut Unstructured) -> Result<()> {
    let count = match u.int_in_range(0..=15u8)? {
        0 => u.int_in_range(0..=MAX_VCPUS + 2)?,
        _ => u.int_in_range(1..=8usize)?,
    };
    let mitigations = FirmwareMitigations {
        workaround_1: u.arbitrary()?,
        workaround_2: u.arbitrary()?,
        workaround_3: u.arbitrary()?,
    };
    let mut vm = match VmPsci::new(count, mitigations) {
        Ok(vm) => vm,
        Err(e) => {
            let expected = if count == 0 {
                NewVmPsciError::NoVcpus
            } else {
                NewVmPsciError::TooManyVcpus { count }
            };
            assert!(count == 0 || count > MAX_VCPUS);
            assert_eq!(e, expected);
            return Ok(());
        }
    };
    assert_eq!(vm.vcpu_count(), count);
    let mut model = vec![VcpuPower::Off; count];
    model[0] = VcpuPower::On;
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=7u8)? {
            0 => {
                let v = u.int_in_range(0..=count + 1)?;
                let pending = model.get(v) == Some(&VcpuPower::OnPending);
                assert_eq!(vm.vcpu_started(v), pending, "started({v})");
                if pending {
                    model[v] = VcpuPower::On;
                }
            }
            1 => {
                let v = u.int_in_range(0..=count + 1)?;
                assert_eq!(vm.vcpu_stopped(v), v < count, "stopped({v})");
                if let Some(p) = model.get_mut(v) {
                    *p = VcpuPower::Off;
                }
            }
            2 if one_in(u, 8)? => {
                vm.reset();
                model.fill(VcpuPower::Off);
                model[0] = VcpuPower::On;
            }
            _ => {
                let caller = if u.ratio(7, 8)? {
                    u.int_in_range(0..=count.min(MAX_VCPUS) - 1)?
                } else {
                    u.int_in_range(0..=count + 2)?
                };
                let mut x = [0u64; 8];
                x[0] = function_id(u)?;
                for r in &mut x[1..] {
                    *r = argument(u)?;
                }
                one_call(&mut vm, &mut model, caller, x, mitigations, u)?;
            }
        }
        for (v, want) in model.iter().enumerate() {
            assert_eq!(vm.power(v), Some(*want), "vCPU {v}");
        }
        assert_eq!(vm.power(count), None);
        assert_eq!(vm.all_off(), model.iter().all(|p| *p == VcpuPower::Off));
    }
    Ok(())
}

fn one_call(
    vm: &mut VmPsci,
    model: &mut [VcpuPower],
    caller: usize,
    x: [u64; 8],
    mitigations: FirmwareMitigations,
    u: &mut Unstructured,
) -> Result<()> {
    let id = x[0] as u32;
    // Tandem's own hypercalls are decoded first; they never reach PSCI.
    let hypercall = hypercall::decode(x);
    match id {
        hypercall::VENDOR_HYP_CALL_UID => assert_eq!(hypercall, Some(Hypercall::Uid)),
        hypercall::TANDEM_DOORBELL => {
            assert_eq!(hypercall, Some(Hypercall::Doorbell { base: x[1] }))
        }
        hypercall::TANDEM_BOOT_LOG => assert_eq!(
            hypercall,
            Some(Hypercall::BootLog {
                buf: x[1],
                len: x[2]
            })
        ),
        hypercall::TANDEM_ATTESTATION => assert_eq!(
            hypercall,
            Some(Hypercall::Attestation {
                buf: x[1],
                len: x[2]
            })
        ),
        _ => assert_eq!(hypercall, None),
    }
    let call = psci::decode(x);
    // The function id is W0, and a 32-bit function reads only W1..W7.
    let mut other = x;
    other[0] = u64::from(id) | u64::from(u.arbitrary::<u32>()?) << 32;
    if id & (1 << 30) == 0 {
        for r in &mut other[1..] {
            *r = u64::from(*r as u32) | u64::from(u.arbitrary::<u32>()?) << 32;
        }
    }
    assert_eq!(psci::decode(other), call, "{x:x?} and {other:x?}");

    let before = vm.power(caller);
    let out = vm.handle(caller, call, |a| RAM.contains(&a));
    assert_eq!(out.x[1..], [0, 0, 0], "{call:?}");
    let x0 = out.x[0];
    assert_eq!(
        code(x0 as i32),
        x0,
        "{call:?}: x0 {x0:#x} is no SMCCC value"
    );
    match before {
        Some(VcpuPower::On | VcpuPower::OnPending) => {}
        _ => {
            assert_eq!((x0, out.effect), (code(INTERNAL_FAILURE), Effect::Return));
            return Ok(());
        }
    }
    // A call shows its caller runs.
    model[caller] = VcpuPower::On;
    let returns = |expect: i32| {
        assert_eq!((x0, out.effect), (code(expect), Effect::Return), "{call:?}");
    };
    match call {
        Call::PsciVersion | Call::SmcccVersion => {
            assert_eq!((x0, out.effect), (0x1_0001, Effect::Return))
        }
        Call::PsciFeatures { function_id } => {
            // Supported exactly when the decoder knows the PSCI function; SMCCC_VERSION is
            // announced too, the Arm architecture calls are not.
            let known = !matches!(
                psci::decode([u64::from(function_id), 0, 0, 0, 0, 0, 0, 0]),
                Call::Unknown(_) | Call::SmcccArchFeatures { .. } | Call::ArchWorkaround { .. }
            );
            returns(if known { SUCCESS } else { NOT_SUPPORTED });
        }
        Call::CpuSuspend { .. } => assert_eq!((x0, out.effect), (0, Effect::Suspend)),
        Call::CpuOff => {
            assert_eq!((x0, out.effect), (0, Effect::StopCaller));
            model[caller] = VcpuPower::Off;
        }
        Call::CpuOn {
            target_cpu, entry, ..
        } => {
            let target = usize::try_from(target_cpu)
                .ok()
                .filter(|&t| t < model.len());
            assert_eq!(vm.vcpu_of(target_cpu), target);
            match target.map(|t| model[t]) {
                None => returns(INVALID_PARAMETERS),
                Some(VcpuPower::On) => returns(ALREADY_ON),
                Some(VcpuPower::OnPending) => returns(ON_PENDING),
                Some(VcpuPower::Off) if entry % 4 != 0 || !RAM.contains(&entry) => {
                    returns(INVALID_ADDRESS)
                }
                Some(VcpuPower::Off) => {
                    let Effect::StartVcpu {
                        vcpu, entry: start, ..
                    } = out.effect
                    else {
                        panic!("CPU_ON of an off vCPU: {out:?}")
                    };
                    assert_eq!((x0, Some(vcpu), start), (0, target, entry));
                    model[vcpu] = VcpuPower::OnPending;
                }
            }
        }
        Call::AffinityInfo {
            target_affinity,
            lowest_affinity_level,
        } => {
            let target = usize::try_from(target_affinity)
                .ok()
                .filter(|&t| t < model.len());
            match target {
                Some(t) if lowest_affinity_level == 0 => returns(match model[t] {
                    VcpuPower::On => 0,
                    VcpuPower::Off => 1,
                    VcpuPower::OnPending => 2,
                }),
                _ => returns(INVALID_PARAMETERS),
            }
        }
        // Migration is not required: no Trusted OS.
        Call::MigrateInfoType => returns(2),
        Call::SystemOff => assert_eq!((x0, out.effect), (0, Effect::SystemOff)),
        Call::SystemReset => {
            assert_eq!((x0, out.effect), (0, Effect::SystemReset));
            vm.reset();
            model.fill(VcpuPower::Off);
            model[0] = VcpuPower::On;
        }
        Call::SmcccArchFeatures { function_id } => {
            let ok =
                matches!(function_id, 0x8000_0000 | 0x8000_0001) || has(mitigations, function_id);
            returns(if ok { SUCCESS } else { NOT_SUPPORTED });
        }
        Call::ArchWorkaround { function_id, arg } => {
            if has(mitigations, function_id) {
                assert_eq!(
                    (x0, out.effect),
                    (0, Effect::FirmwareWorkaround { function_id, arg })
                );
            } else {
                returns(NOT_SUPPORTED);
            }
        }
        Call::Unknown(_) => returns(NOT_SUPPORTED),
    }
    // Only CPU_ON starts a vCPU, only CPU_OFF stops the caller.
    match out.effect {
        Effect::StartVcpu { .. } => assert!(matches!(call, Call::CpuOn { .. })),
        Effect::StopCaller => assert_eq!(call, Call::CpuOff),
        _ => {}
    }
    Ok(())
}

fn has(m: FirmwareMitigations, id: u32) -> bool {
    match id {
        0x8000_8000 => m.workaround_1,
        0x8000_7fff => m.workaround_2,
        0x8000_3fff => m.workaround_3,
        _ => false,
    }
}

/// An ESR with a data-abort class most of the time.
fn esr_value(u: &mut Unstructured) -> Result<u64> {
    let raw: u64 = u.arbitrary()?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => raw,
        ec => {
            let ec = [0u64, 0x24, 0x25, 0x24][usize::from(ec)];
            (raw & 0x3ff_ffff) | ec << 26
        }
    })
}

fn aborts(u: &mut Unstructured) -> Result<()> {
    for _ in 0..16 {
        if u.is_empty() {
            break;
        }
        let (esr, far, hpfar): (u64, u64, u64) = (esr_value(u)?, u.arbitrary()?, u.arbitrary()?);
        let a = abort::decode_data_abort(esr, far, hpfar);
        let ec = esr::exception_class(esr);
        assert_eq!(a.ec, ec);
        assert_eq!(u64::from(esr::iss(esr)), esr & 0x1ff_ffff);
        assert!(!esr::class_name(ec).is_empty());
        let slot = esr::VectorSlot(u.arbitrary()?);
        assert!(!slot.kind().is_empty() && !slot.origin().is_empty());
        // FIPA is IPA[51:12] in HPFAR_EL2[43:4]; the page offset comes from FAR_EL2.
        assert_eq!(a.ipa & 0xfff, far & 0xfff);
        assert_eq!(a.ipa >> 12, (hpfar >> 4) & ((1 << 40) - 1));
        assert_eq!(a.far, far);
        assert_eq!(
            a.instruction_len(),
            if esr & (1 << 25) != 0 { 4 } else { 2 }
        );
        let dfsc = (esr & 0x3f) as u8;
        assert_eq!(a.fault, FaultStatus::from_dfsc(dfsc));
        assert_eq!(
            FaultStatus::from_dfsc(dfsc),
            FaultStatus::from_dfsc(dfsc | 0xc0)
        );
        check_level(a.fault);
        let syndrome = esr & (1 << 24) != 0;
        assert_eq!(a.syndrome.is_some(), syndrome);

        let emulable = matches!(ec, 0x24 | 0x25)
            && !a.s1ptw
            && !a.cm
            && matches!(
                a.fault,
                FaultStatus::Translation { .. } | FaultStatus::Permission { .. }
            )
            && syndrome
            && a.far_valid;
        match a.mmio() {
            Ok(m) => {
                assert!(emulable, "{a:?} emulated");
                assert_eq!((m.ipa, m.write), (a.ipa, a.write));
                assert!(m.reg <= 31);
                assert_eq!(u64::from(m.reg), (esr >> 16) & 0x1f);
                let size = match (esr >> 22) & 3 {
                    0 => AccessSize::Byte,
                    1 => AccessSize::Halfword,
                    2 => AccessSize::Word,
                    _ => AccessSize::Doubleword,
                };
                assert_eq!(m.size, size);
                complete(m, u)?;
            }
            Err(reason) => {
                assert!(!emulable, "{a:?} refused: {reason}");
                assert!(!reason.to_string().is_empty());
                // The reasons are checked in this order.
                let expected = if !matches!(ec, 0x24 | 0x25) {
                    NotMmio::NotDataAbort { ec }
                } else if a.s1ptw {
                    NotMmio::StageOneWalk
                } else if a.cm {
                    NotMmio::CacheMaintenance
                } else if !matches!(
                    a.fault,
                    FaultStatus::Translation { .. } | FaultStatus::Permission { .. }
                ) {
                    NotMmio::Fault(a.fault)
                } else if !syndrome {
                    NotMmio::NoSyndrome
                } else {
                    NotMmio::FarNotValid
                };
                assert_eq!(reason, expected);
            }
        }
    }
    Ok(())
}

fn check_level(f: FaultStatus) {
    if let FaultStatus::AddressSize { level }
    | FaultStatus::Translation { level }
    | FaultStatus::AccessFlag { level }
    | FaultStatus::Permission { level }
    | FaultStatus::SyncExternalOnWalk { level }
    | FaultStatus::SyncParityOnWalk { level }
    | FaultStatus::GranuleProtectionOnWalk { level } = f
    {
        assert!((-1..=3).contains(&level), "{f:?}");
    }
}

/// A load or store completed against random register contents and device data.
fn complete(m: abort::MmioAccess, u: &mut Unstructured) -> Result<()> {
    let mut regs = [0u64; 31];
    for r in &mut regs {
        *r = u.arbitrary()?;
    }
    let data: u64 = u.arbitrary()?;
    let bits = m.size.bits();
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let width = if m.sixty_four { u64::MAX } else { 0xffff_ffff };

    let loaded = m.read_result(data);
    assert_eq!(
        loaded & !width,
        0,
        "{m:?}: {loaded:#x} wider than the register"
    );
    assert_eq!(loaded & mask & width, data & mask & width, "{m:?}");
    let sign = bits < 64 && m.sign_extend && data >> (bits - 1) & 1 != 0;
    let upper = width & !mask;
    assert_eq!(
        loaded & upper,
        if sign { upper } else { 0 },
        "{m:?}: {data:#x} loads as {loaded:#x}"
    );
    let before = regs;
    m.apply_read(&mut regs, data);
    for (i, (now, was)) in regs.iter().zip(before).enumerate() {
        if i == usize::from(m.reg) {
            assert_eq!(*now, loaded);
        } else {
            assert_eq!(*now, was, "a load to X{} changed X{i}", m.reg);
        }
    }

    let stored = m.write_value(&regs);
    let source = regs.get(usize::from(m.reg)).copied().unwrap_or(0);
    assert_eq!(stored, source & width & mask, "{m:?}");
    Ok(())
}

fn injections(u: &mut Unstructured) -> Result<()> {
    for _ in 0..16 {
        if u.is_empty() {
            break;
        }
        let mode: u64 = *u.choose(&[0b0000, 0b0100, 0b0101, 0b1001, 0b1101, 0b1_0000])?;
        let spsr = (u.arbitrary::<u64>()? & !0x1f) | mode | u64::from(one_in(u, 16)?) << 4;
        let guest = GuestContext {
            spsr_el2: spsr,
            elr_el2: u.arbitrary()?,
            vbar_el1: u.arbitrary()?,
            sctlr_el1: u.arbitrary()?,
            features: EntryFeatures {
                pan: u.arbitrary()?,
                ssbs: u.arbitrary()?,
            },
        };
        let exception = if u.arbitrary()? {
            Exception::Undefined
        } else {
            Exception::SyncExternalAbort {
                far: u.arbitrary()?,
                data: u.arbitrary()?,
                write: u.arbitrary()?,
            }
        };
        let got = inject::inject(&guest, exception);
        let m = spsr & 0xf;
        let Ok(i) = got else {
            let e = got.unwrap_err();
            let expected = if spsr & 0x10 != 0 {
                InjectError::AArch32 { spsr_el2: spsr }
            } else {
                InjectError::NotAGuestMode { mode: m as u8 }
            };
            assert_eq!(e, expected);
            assert!(!e.to_string().is_empty());
            continue;
        };
        assert_eq!(spsr & 0x10, 0, "injected into AArch32");
        let (vector, lower) = match m {
            0b0000 => (VectorOffset::LowerElAArch64, true),
            0b0100 => (VectorOffset::CurrentElSp0, false),
            0b0101 => (VectorOffset::CurrentElSpx, false),
            _ => panic!("injected from mode {m:#b}"),
        };
        assert_eq!(i.vector, vector);
        assert_eq!(i.elr_el2, (guest.vbar_el1 & !0x7ff) + vector as u64);
        assert_eq!((i.elr_el1, i.spsr_el1), (guest.elr_el2, spsr));
        // The handler runs at EL1h, AArch64, with D, A, I and F masked; only NZCV, DIT, PAN
        // and SSBS may be set besides.
        let pstate = i.spsr_el2;
        assert_eq!(pstate & 0x1f, 0b0101);
        assert_eq!(pstate & 0x3c0, 0x3c0);
        let allowed = 0xf000_0000 | 1 << 24 | 1 << 22 | 1 << 12 | 0x3c0 | 0x1f;
        assert_eq!(pstate & !allowed, 0, "{pstate:#x}");
        assert_eq!(
            pstate & 0xf100_0000,
            spsr & 0xf100_0000,
            "NZCV and DIT kept"
        );
        // PAN is set on entry when SCTLR_EL1.SPAN is 0, else kept.
        let pan = guest.features.pan && (guest.sctlr_el1 & 1 << 23 == 0 || spsr & 1 << 22 != 0);
        assert_eq!(pstate & 1 << 22 != 0, pan);
        let ssbs = guest.features.ssbs && guest.sctlr_el1 & 1 << 44 != 0;
        assert_eq!(pstate & 1 << 12 != 0, ssbs);

        // The injected syndrome reads back as what was injected.
        assert_ne!(i.esr_el1 & 1 << 25, 0, "IL");
        match exception {
            Exception::Undefined => {
                assert_eq!(i.esr_el1, 1 << 25);
                assert_eq!(i.far_el1, None);
            }
            Exception::SyncExternalAbort { far, data, write } => {
                assert_eq!(i.far_el1, Some(far));
                let a = abort::decode_data_abort(i.esr_el1, far, 0);
                let ec = match (data, lower) {
                    (true, true) => 0x24,
                    (true, false) => 0x25,
                    (false, true) => 0x20,
                    (false, false) => 0x21,
                };
                assert_eq!(a.ec, ec);
                assert_eq!(a.fault, FaultStatus::SyncExternal);
                assert_eq!(a.syndrome, None);
                assert!(a.far_valid && !a.s1ptw && !a.cm);
                assert_eq!(a.write, data && write);
            }
        }
    }
    Ok(())
}

/// The ISS of a trapped MSR/MRS (ESR class 0x18).
fn sysreg_iss(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
    op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | rt << 5 | crm << 1 | u64::from(read)
}

fn timer(u: &mut Unstructured) -> Result<()> {
    let mut t = PhysTimer::new();
    // The model: what the guest last wrote.
    let (mut ctl, mut cval) = (0u64, 0u64);
    let mut now: u64 = u.arbitrary()?;
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        // The counter mostly moves forward, now and then anywhere.
        now = if one_in(u, 16)? {
            u.arbitrary()?
        } else {
            now.wrapping_add(u64::from(u.arbitrary::<u16>()?))
        };
        let iss = if u.ratio(3, 4)? {
            let op2 = u.int_in_range(0..=3u64)?;
            let rt = u.int_in_range(0..=31u64)?;
            sysreg_iss(3, 3, 14, 2, op2, rt, u.arbitrary()?)
        } else {
            u64::from(u.arbitrary::<u32>()?) & 0x1ff_ffff
        };
        let field = |shift: u32, bits: u32| (iss >> shift) & ((1 << bits) - 1);
        let decoded = ptimer::decode(iss as u32); // iss holds 25 bits: nothing is cut
        let ours = (field(20, 2), field(14, 3), field(10, 4), field(1, 4)) == (3, 3, 14, 2)
            && field(17, 3) <= 2;
        assert_eq!(decoded.is_some(), ours, "{iss:#x}");
        let Some(access) = decoded else { continue };
        assert_eq!(access.rt as u64, field(5, 5));
        assert_eq!(access.read, iss & 1 != 0);
        assert_eq!(
            access.register,
            [Register::Tval, Register::Ctl, Register::Cval][field(17, 3) as usize]
        );
        if access.read {
            let value = t.read(access.register, now);
            match access.register {
                Register::Tval => assert_eq!(value, cval.wrapping_sub(now) & 0xffff_ffff),
                Register::Cval => assert_eq!(value, cval),
                Register::Ctl => {
                    let met = ctl & CTL_ENABLE != 0 && now >= cval;
                    let status = if met { CTL_ISTATUS } else { 0 };
                    assert_eq!(value, ctl | status);
                }
            }
        } else {
            let value: u64 = u.arbitrary()?;
            t.write(access.register, value, now);
            match access.register {
                Register::Tval => {
                    cval = now.wrapping_add(value as u32 as i32 as i64 as u64);
                    // TVAL reads back what was written, at the same counter value.
                    assert_eq!(t.read(Register::Tval, now), value & 0xffff_ffff);
                }
                Register::Cval => cval = value,
                Register::Ctl => ctl = value & (CTL_ENABLE | CTL_IMASK),
            }
        }
        let armed = ctl & CTL_ENABLE != 0 && ctl & CTL_IMASK == 0;
        assert_eq!(t.condition(now), ctl & CTL_ENABLE != 0 && now >= cval);
        assert_eq!(t.line(now), armed && now >= cval);
        match t.deadline(now) {
            Some(d) => {
                assert!(armed && d == cval && d > now);
                assert!(!t.line(now) && t.line(d));
            }
            // No deadline: the line is already high, or nothing will raise it.
            None => assert!(!armed || t.line(now)),
        }
    }
    Ok(())
}

/// PL011 register offsets (PrimeCell UART TRM, 3.2).
const DR: u64 = 0x000;
const FR: u64 = 0x018;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const ICR: u64 = 0x044;
const DMACR: u64 = 0x048;
const ILPR: u64 = 0x020;
const RSR: u64 = 0x004;
const OFFSETS: [u64; 16] = [
    DR, RSR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR, 0xfe0, 0xffc,
];

/// The model of one virtual PL011's guest-visible state.
struct UartModel {
    rx: VecDeque<u8>,
    line: Vec<u8>,
    regs: [(u64, u32, u32); 8],
}

fn uart(u: &mut Unstructured) -> Result<()> {
    let mut dev = VirtualPl011::new();
    // (offset, write mask, value after reset)
    let mut m = UartModel {
        rx: VecDeque::new(),
        line: Vec::new(),
        regs: [
            (ILPR, 0xff, 0),
            (IBRD, 0xffff, 0),
            (FBRD, 0x3f, 0),
            (LCR_H, 0xff, 0),
            (CR, 0xff87, 0x301),
            (IFLS, 0x3f, 0x12),
            (IMSC, 0x7ff, 0),
            (DMACR, 0x7, 0),
        ],
    };
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let offset = if u.ratio(7, 8)? {
            *u.choose(&OFFSETS)?
        } else {
            u.int_in_range(0..=vpl011::WINDOW - 1)?
        };
        let imsc = m.regs[6].2;
        let ris = 1 << 5 | if m.rx.is_empty() { 0 } else { 1 << 4 | 1 << 6 };
        match u.int_in_range(0..=3u8)? {
            0 => {
                let got = dev.read(offset);
                let expected = match offset {
                    DR => m.rx.pop_front().map_or(0, u32::from),
                    FR => {
                        let empty = if m.rx.is_empty() { 1 << 4 } else { 0 };
                        let full = if m.rx.len() == RX_FIFO { 1 << 6 } else { 0 };
                        empty | full | 1 << 7
                    }
                    RIS => ris,
                    MIS => ris & imsc,
                    0xfe0..=0xfff if offset % 4 == 0 => {
                        [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]
                            [(offset as usize - 0xfe0) / 4]
                    }
                    o => m.regs.iter().find(|r| r.0 == o).map_or(0, |r| r.2),
                };
                assert_eq!(got, expected, "read {offset:#x}");
            }
            1 => {
                let value: u32 = u.arbitrary()?;
                let line = match dev.write(offset, value) {
                    vpl011::Effect::None => None,
                    vpl011::Effect::Line(l) => Some(l.to_vec()),
                };
                let expected = match (offset, value as u8) {
                    (DR, b'\n') => Some(std::mem::take(&mut m.line)),
                    (DR, b'\r') => None,
                    (DR, byte) => {
                        m.line.push(byte);
                        // A full buffer is printed in pieces.
                        (m.line.len() == LINE_MAX).then(|| std::mem::take(&mut m.line))
                    }
                    (o, _) => {
                        if let Some(r) = m.regs.iter_mut().find(|r| r.0 == o) {
                            r.2 = value & r.1;
                        }
                        None
                    }
                };
                assert_eq!(line, expected, "write {value:#x} to {offset:#x}");
            }
            2 => {
                let byte = u.arbitrary()?;
                let room = m.rx.len() < RX_FIFO;
                assert_eq!(dev.push_input(byte), room);
                if room {
                    m.rx.push_back(byte);
                }
            }
            _ => {
                if u.arbitrary()? {
                    assert_eq!(dev.take_pending(), m.line.as_slice());
                    m.line.clear();
                }
            }
        }
        assert_eq!(dev.pending(), m.line.as_slice());
        assert!(m.line.len() < LINE_MAX);
        let ris = 1 << 5 | if m.rx.is_empty() { 0 } else { 1 << 4 | 1 << 6 };
        assert_eq!(dev.irq_level(), ris & m.regs[6].2 != 0);
    }
    Ok(())
}
