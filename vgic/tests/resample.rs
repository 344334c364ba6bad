//! A forwarded level interrupt whose line dropped before the guest took it stops being
//! pending, and the physical one is released.

use vgic::{AccessWidth, Effect, GicVersion, ListRegister, LrState, Vgic, VgicConfig};

const SGI: u64 = 0x1_0000;

/// One vCPU, GICv3, distributor groups on, the virtual timer's PPI 27 enabled and
/// forwarded.
fn timer_vm() -> Vgic {
    let mut g = Vgic::new(VgicConfig {
        version: GicVersion::V3,
        vcpus: 1,
        spis: 32,
    })
    .expect("valid configuration");
    let mut fx = Vec::new();
    g.dist_write(0, 0x0, AccessWidth::Word, 0x3, &mut fx);
    g.redist_write(0, SGI + 0x100, AccessWidth::Word, 1 << 27, &mut fx);
    g.set_forwarded(27, 0, Some(27), &mut fx).unwrap();
    g
}

fn flush(g: &mut Vgic) -> Vec<ListRegister> {
    let mut lrs = vec![ListRegister::INVALID; 4];
    g.flush(0, &mut lrs, &mut Vec::new());
    lrs
}

#[test]
fn a_dropped_line_clears_pending_and_releases_the_physical_interrupt() {
    let mut g = timer_vm();
    let mut fx = Vec::new();
    g.hw_arrived(27, 0, &mut fx).unwrap();
    // Handed over pending; the guest runs with interrupts masked and never takes it.
    let lrs = flush(&mut g);
    assert_eq!(lrs[0].state, LrState::Pending);
    g.sync(0, &lrs, &mut fx);
    fx.clear();
    // Still high: nothing changes.
    assert!(!g.resample_forwarded(27, 0, true, &mut fx));
    assert_eq!(g.highest_pending(0).map(|(i, _)| i), Some(27));
    // The guest stopped its timer: gone, and the physical PPI is deactivated.
    assert!(g.resample_forwarded(27, 0, false, &mut fx));
    assert_eq!(fx, [Effect::DeactivatePhysical(27)]);
    assert_eq!(g.highest_pending(0), None);
    assert!(flush(&mut g).iter().all(|lr| lr.state == LrState::Invalid));
}

#[test]
fn an_active_interrupt_is_left_to_the_guest() {
    let mut g = timer_vm();
    let mut fx = Vec::new();
    g.hw_arrived(27, 0, &mut fx).unwrap();
    let mut lrs = flush(&mut g);
    // The guest acknowledged it: active, its deactivation will release the physical one.
    lrs[0].state = LrState::Active;
    g.sync(0, &lrs, &mut fx);
    fx.clear();
    assert!(!g.resample_forwarded(27, 0, false, &mut fx));
    assert_eq!(fx, []);
    // Not forwarded, or not this GIC's: nothing.
    assert!(!g.resample_forwarded(26, 0, false, &mut fx));
    assert!(!g.resample_forwarded(27, 5, false, &mut fx));
}
