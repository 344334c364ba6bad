//! Fuzzes the virtual GIC: a `Vgic` shaped by the first bytes (version, 1 to 8 vCPUs, SPI
//! count) takes a sequence of guest accesses, hypervisor inputs and list-register flush and
//! sync cycles decoded from the rest. Nothing may panic, reads fit their width, effects name
//! real vCPUs and physical INTIDs, and every flush keeps its structural promises.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vgic::{
    AccessWidth, Effect, GicVersion, ListRegister, LrState, Vgic, VgicConfig, GICR_STRIDE, MAX_SPIS,
};

/// Operations decoded from one input at most, so that every run stays short.
const MAX_OPS: usize = 512;
/// vCPU indices are drawn from 0..VCPU_SPAN, past the largest VM, to reach the checks.
const VCPU_SPAN: usize = 10;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn config(u: &mut Unstructured) -> Result<VgicConfig> {
    let version = if u.arbitrary()? {
        GicVersion::V3
    } else {
        GicVersion::V2
    };
    let vcpus = u.int_in_range(1..=8)?;
    let spis = match u.int_in_range(0..=31u32)? {
        31 => MAX_SPIS,
        n => 32 * n,
    };
    Ok(VgicConfig {
        version,
        vcpus,
        spis,
    })
}

fn vcpu(u: &mut Unstructured) -> Result<usize> {
    u.int_in_range(0..=VCPU_SPAN - 1)
}

/// Mostly an INTID up to 1023, now and then any value.
fn intid(u: &mut Unstructured) -> Result<u32> {
    let small: u16 = u.arbitrary()?;
    if small == u16::MAX {
        u.arbitrary()
    } else {
        Ok(u32::from(small % 1024))
    }
}

/// Mostly an offset within one 64 KiB frame, now and then any value.
fn offset(u: &mut Unstructured) -> Result<u64> {
    let small: u16 = u.arbitrary()?;
    if small == u16::MAX {
        u.arbitrary()
    } else {
        Ok(u64::from(small))
    }
}

fn state(bits: u8) -> LrState {
    LrState::from_flags(bits & 1 != 0, bits & 2 != 0)
}

/// A list register of arbitrary content.
fn list_register(u: &mut Unstructured) -> Result<ListRegister> {
    Ok(ListRegister {
        state: state(u.arbitrary()?),
        hw: u.arbitrary()?,
        group1: u.arbitrary()?,
        priority: u.arbitrary()?,
        vintid: intid(u)?,
        pintid: intid(u)?,
        source: u.arbitrary()?,
        eoi_maintenance: u.arbitrary()?,
    })
}

fn check_read(value: u64, width: AccessWidth) {
    assert!(
        width == AccessWidth::Double || value >> (8 * width.bytes()) == 0,
        "a {width:?} read returned {value:#x}"
    );
}

fn check_effects(g: &Vgic, effects: &mut Vec<Effect>) {
    for effect in effects.drain(..) {
        match effect {
            Effect::Kick(vcpu) => assert!(vcpu < g.vcpus(), "kick for vCPU {vcpu}"),
            Effect::DeactivatePhysical(pintid) => {
                assert!((16..1020).contains(&pintid), "deactivate {pintid}")
            }
            _ => {}
        }
    }
}

/// Flushes `vcpu` into `n` list registers and checks what came out; `others` holds what
/// the last flush of every vCPU not synced since loaded.
fn flush(g: &mut Vgic, vcpu: usize, n: usize, others: &mut [Vec<ListRegister>]) {
    let mut lrs = vec![ListRegister::INVALID; n];
    let mut effects = Vec::new();
    let outcome = g.flush(vcpu, &mut lrs, &mut effects);
    check_effects(g, &mut effects);
    assert!(outcome.loaded <= n);
    let (valid, rest) = lrs.split_at(outcome.loaded);
    assert!(
        valid.iter().all(|lr| lr.state != LrState::Invalid),
        "{lrs:?}"
    );
    assert!(
        rest.iter().all(|lr| *lr == ListRegister::INVALID),
        "{lrs:?}"
    );
    for (i, lr) in valid.iter().enumerate() {
        assert!(
            valid[..i].iter().all(|other| other.vintid != lr.vintid),
            "INTID {} twice: {lrs:?}",
            lr.vintid
        );
        assert!(lr.vintid < 32 + g.spis(), "INTID {} loaded", lr.vintid);
        // A hardware interrupt's physical twin is active: it cannot also be pending in a
        // list register, and its deactivation is the hardware's, not a maintenance one.
        assert!(!(lr.hw && lr.state == LrState::PendingActive), "{lr:?}");
        assert!(!(lr.hw && lr.eoi_maintenance), "{lr:?}");
        if lr.vintid >= 32 {
            for (other, held) in others.iter().enumerate() {
                assert!(
                    other == vcpu
                        || !held
                            .iter()
                            .any(|o| o.state != LrState::Invalid && o.vintid == lr.vintid),
                    "SPI {} on vCPU {vcpu} and vCPU {other}",
                    lr.vintid
                );
            }
        }
    }
    if let Some((_, priority)) = g.highest_pending(vcpu) {
        for lr in valid.iter().filter(|lr| lr.state == LrState::Pending) {
            assert!(lr.priority <= priority, "{lrs:?} while {priority:#x} waits");
        }
    }
    if let Some(slot) = others.get_mut(vcpu) {
        *slot = lrs;
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let Ok(mut g) = Vgic::new(config(u)?) else {
        return Ok(());
    };
    let mut effects = Vec::new();
    let mut loaded: Vec<Vec<ListRegister>> = vec![Vec::new(); VCPU_SPAN];
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=12u8)? {
            0 => {
                let (vcpu, offset, width) =
                    (vcpu(u)?, offset(u)?, AccessWidth::from_sas(u.arbitrary()?));
                check_read(g.dist_read(vcpu, offset, width, &mut effects), width);
            }
            1 => {
                let (vcpu, offset, width) =
                    (vcpu(u)?, offset(u)?, AccessWidth::from_sas(u.arbitrary()?));
                g.dist_write(vcpu, offset, width, u.arbitrary()?, &mut effects);
            }
            2 | 3 => {
                // A redistributor frame (past the last one now and then), then an offset.
                let frame = u64::from(u.int_in_range(0..=VCPU_SPAN as u8)?);
                let within = u64::from(u.arbitrary::<u32>()?) % GICR_STRIDE;
                let offset = frame * GICR_STRIDE + within;
                let (vcpu, width) = (vcpu(u)?, AccessWidth::from_sas(u.arbitrary()?));
                if u.arbitrary()? {
                    g.redist_write(vcpu, offset, width, u.arbitrary()?, &mut effects);
                } else {
                    check_read(g.redist_read(vcpu, offset, width, &mut effects), width);
                }
            }
            4 => g.sgi1r(vcpu(u)?, u.arbitrary()?, &mut effects),
            5 => {
                let _ = g.raise(intid(u)?, vcpu(u)?, &mut effects);
            }
            6 => {
                let _ = g.set_level(intid(u)?, vcpu(u)?, u.arbitrary()?, &mut effects);
            }
            7 => {
                let (intid, vcpu) = (intid(u)?, vcpu(u)?);
                let pintid = if u.arbitrary()? {
                    Some(self::intid(u)?)
                } else {
                    None
                };
                let _ = g.set_forwarded(intid, vcpu, pintid, &mut effects);
            }
            8 => {
                let _ = g.hw_arrived(intid(u)?, vcpu(u)?, &mut effects);
            }
            9 => {
                let (vcpu, n) = (vcpu(u)?, u.int_in_range(0..=17)?);
                flush(&mut g, vcpu, n, &mut loaded);
            }
            10 => {
                // What the guest did with the list registers: new states for those the
                // last flush filled.
                let vcpu = vcpu(u)?;
                let mut lrs = loaded.get(vcpu).cloned().unwrap_or_default();
                for lr in &mut lrs {
                    lr.state = state(u.arbitrary()?);
                }
                g.sync(vcpu, &lrs, &mut effects);
                if let Some(slot) = loaded.get_mut(vcpu) {
                    slot.clear();
                }
            }
            11 => {
                // A sync with list registers of any content and count.
                let vcpu = vcpu(u)?;
                let count = u.int_in_range(0..=17)?;
                let lrs = (0..count)
                    .map(|_| list_register(u))
                    .collect::<Result<Vec<_>>>()?;
                g.sync(vcpu, &lrs, &mut effects);
                if let Some(slot) = loaded.get_mut(vcpu) {
                    slot.clear();
                }
            }
            _ => {
                let (vcpu, intid) = (vcpu(u)?, intid(u)?);
                let _ = g.highest_pending(vcpu);
                if let Some(target) = g.spi_route(intid) {
                    assert!(target < g.vcpus(), "SPI {intid} routed to vCPU {target}");
                }
                // The list-register encodings take any value.
                let v3: u64 = u.arbitrary()?;
                let v2: u32 = u.arbitrary()?;
                let _ = ListRegister::from_ich_lr(v3).to_ich_lr();
                let _ = ListRegister::from_gich_lr(v2).to_gich_lr();
            }
        }
        check_effects(&g, &mut effects);
    }
    Ok(())
}
