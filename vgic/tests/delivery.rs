//! SGI routing (v2 and v3), injection inputs, and the list-register flush/sync cycle.

use vgic::{
    AccessWidth, Effect, GicVersion, ListRegister, LrState, Vgic, VgicConfig, VgicError,
    GICR_STRIDE,
};

const SGI: u64 = 0x1_0000;

fn vgic(version: GicVersion, vcpus: usize, spis: u32) -> Vgic {
    Vgic::new(VgicConfig {
        version,
        vcpus,
        spis,
    })
    .expect("valid configuration")
}

fn wr(g: &mut Vgic, vcpu: usize, offset: u64, value: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    g.dist_write(vcpu, offset, AccessWidth::Word, value, &mut fx);
    fx
}

fn rwr(g: &mut Vgic, vcpu: usize, offset: u64, value: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    g.redist_write(vcpu, offset, AccessWidth::Word, value, &mut fx);
    fx
}

fn rrd(g: &Vgic, vcpu: usize, offset: u64) -> u64 {
    g.redist_read(vcpu, offset, AccessWidth::Word, &mut Vec::new())
}

fn rd(g: &Vgic, vcpu: usize, offset: u64) -> u64 {
    g.dist_read(vcpu, offset, AccessWidth::Word, &mut Vec::new())
}

/// A v3 VM with both groups on and SPIs 32..63 enabled.
fn ready_v3(vcpus: usize) -> Vgic {
    let mut g = vgic(GicVersion::V3, vcpus, 64);
    wr(&mut g, 0, 0x0, 0x3);
    wr(&mut g, 0, 0x104, u64::MAX);
    g
}

fn flush(g: &mut Vgic, vcpu: usize, n: usize) -> Vec<ListRegister> {
    let mut lrs = vec![ListRegister::INVALID; n];
    g.flush(vcpu, &mut lrs, &mut Vec::new());
    lrs
}

fn ids(lrs: &[ListRegister]) -> Vec<(u32, LrState)> {
    lrs.iter()
        .filter(|lr| lr.state != LrState::Invalid)
        .map(|lr| (lr.vintid, lr.state))
        .collect()
}

#[test]
fn v3_sgi_target_list() {
    let mut g = vgic(GicVersion::V3, 4, 32);
    let mut fx = Vec::new();
    // SGI 5 to Aff0 1 and 2, from vCPU 0.
    g.sgi1r(0, (5 << 24) | 0b0110, &mut fx);
    for vcpu in 0..4u64 {
        let pending = rrd(&g, 0, vcpu * GICR_STRIDE + SGI + 0x200);
        assert_eq!(pending, if vcpu == 1 || vcpu == 2 { 1 << 5 } else { 0 });
    }
    // Nothing enabled: no kicks.
    assert_eq!(fx, []);
    for vcpu in 0..4 {
        rwr(
            &mut g,
            vcpu,
            vcpu as u64 * GICR_STRIDE + SGI + 0x100,
            0xffff,
        );
    }
    wr(&mut g, 0, 0x0, 0x2);
    g.sgi1r(3, (7 << 24) | 0b1001, &mut fx);
    // vCPU 3 sent it to itself too: no kick for the sender.
    assert!(fx.contains(&Effect::Kick(0)));
    assert!(!fx.contains(&Effect::Kick(3)));
    assert_eq!(rrd(&g, 0, 3 * GICR_STRIDE + SGI + 0x200), 1 << 7);
}

#[test]
fn v3_sgi_broadcast_and_affinity() {
    let mut g = vgic(GicVersion::V3, 3, 32);
    let mut fx = Vec::new();
    // IRM = 1: everyone but the sender.
    g.sgi1r(1, (1 << 40) | (2 << 24), &mut fx);
    let pending = |g: &Vgic, v: u64| rrd(g, 0, v * GICR_STRIDE + SGI + 0x200);
    assert_eq!((pending(&g, 0), pending(&g, 1), pending(&g, 2)), (4, 0, 4));
    // Aff1 = 1 names no vCPU; neither does RS = 1.
    g.sgi1r(0, (1 << 16) | (3 << 24) | 0xffff, &mut fx);
    g.sgi1r(0, (1 << 44) | (3 << 24) | 0xffff, &mut fx);
    assert_eq!((pending(&g, 0), pending(&g, 1), pending(&g, 2)), (4, 0, 4));
    // Ignored on a v2 GIC.
    let mut v2 = vgic(GicVersion::V2, 2, 32);
    v2.sgi1r(0, 0xffff, &mut fx);
    assert_eq!(rd(&v2, 1, 0x200), 0);
}

#[test]
fn v2_sgir_filters() {
    let mut g = vgic(GicVersion::V2, 4, 32);
    // GICD_SPENDSGIR0: one byte per SGI 0..3, one bit per sender.
    let spend = |g: &Vgic, v: usize| rd(g, v, 0xf20);
    // Filter 0: the list (bits for vCPUs that do not exist are dropped); SGI 1 from 1.
    wr(&mut g, 1, 0xf00, (0b1010_0101 << 16) | 1);
    assert_eq!(
        [spend(&g, 0), spend(&g, 1), spend(&g, 2), spend(&g, 3)],
        [0x200, 0, 0x200, 0]
    );
    // Filter 1: all but the sender; SGI 0 from 3.
    wr(&mut g, 3, 0xf00, 1 << 24);
    assert_eq!(
        [spend(&g, 0), spend(&g, 1), spend(&g, 2), spend(&g, 3)],
        [0x208, 0x8, 0x208, 0]
    );
    // Filter 2: the sender only; SGI 1 from 2.
    wr(&mut g, 2, 0xf00, (2 << 24) | 1);
    assert_eq!(spend(&g, 2), 0x608);
    // Filter 3: reserved, ignored with a note.
    assert_eq!(wr(&mut g, 2, 0xf00, (3 << 24) | (0xf << 16) | 1).len(), 1);
    assert_eq!(
        [spend(&g, 0), spend(&g, 1), spend(&g, 2), spend(&g, 3)],
        [0x208, 0x8, 0x608, 0]
    );
}

#[test]
fn raise_flush_ack_eoi() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    let mut byte = Vec::new();
    g.dist_write(0, 0x400 + 40, AccessWidth::Byte, 0xa0, &mut byte);
    wr(&mut g, 0, 0xc08, 0x2 << 16); // edge-triggered
    g.raise(40, 0, &mut fx).unwrap();
    assert_eq!(fx, [Effect::Kick(0)]);
    let mut lrs = flush(&mut g, 0, 4);
    assert_eq!(
        lrs[0],
        ListRegister {
            state: LrState::Pending,
            group1: true,
            priority: 0xa0,
            vintid: 40,
            ..ListRegister::INVALID
        }
    );
    assert_eq!(ids(&lrs[1..]), []);
    // In the LR: still reads pending.
    assert_eq!(rd(&g, 1, 0x204), 1 << 8);
    // The guest acknowledges it.
    lrs[0].state = LrState::Active;
    g.sync(0, &lrs, &mut fx);
    assert_eq!(rd(&g, 1, 0x204), 0);
    assert_eq!(rd(&g, 1, 0x304), 1 << 8);
    // Active interrupts are reloaded so the guest can deactivate them.
    let mut lrs = flush(&mut g, 0, 4);
    assert_eq!(ids(&lrs), [(40, LrState::Active)]);
    lrs[0].state = LrState::Invalid;
    g.sync(0, &lrs, &mut fx);
    assert_eq!(ids(&flush(&mut g, 0, 4)), []);
    assert_eq!(rd(&g, 1, 0x304), 0);
}

#[test]
fn nothing_while_disabled_or_group_off() {
    let mut g = ready_v3(1);
    let mut fx = Vec::new();
    wr(&mut g, 0, 0x184, 1 << 1);
    g.raise(33, 0, &mut fx).unwrap();
    assert_eq!(fx, []);
    assert_eq!(ids(&flush(&mut g, 0, 4)), []);
    g.sync(0, &[], &mut fx);
    // Group 1 off.
    wr(&mut g, 0, 0x0, 0x1);
    g.raise(34, 0, &mut fx).unwrap();
    assert_eq!(ids(&flush(&mut g, 0, 4)), []);
    g.sync(0, &[], &mut fx);
    assert_eq!(g.highest_pending(0), None);
    // Group 1 on again: SPI 34 (enabled) comes, 33 (disabled) does not.
    assert_eq!(wr(&mut g, 0, 0x0, 0x3), []);
    assert_eq!(g.highest_pending(0), Some((34, 0)));
    assert_eq!(ids(&flush(&mut g, 0, 4)), [(34, LrState::Pending)]);
}

#[test]
fn priority_order_and_leftovers() {
    let mut g = ready_v3(1);
    let mut fx = Vec::new();
    wr(&mut g, 0, 0x420, 0x1030_5078); // SPIs 32..35: 0x78, 0x50, 0x30, 0x10
    for intid in 32..36 {
        g.raise(intid, 0, &mut fx).unwrap();
    }
    let mut lrs = vec![ListRegister::INVALID; 2];
    let outcome = g.flush(0, &mut lrs, &mut fx);
    assert_eq!(ids(&lrs), [(35, LrState::Pending), (34, LrState::Pending)]);
    assert!(outcome.underflow && outcome.no_pending);
    assert_eq!(outcome.hcr_bits(), 0b1010);
    // Interrupts left behind: ask for a maintenance interrupt on every EOI too.
    assert!(lrs.iter().all(|lr| lr.eoi_maintenance));
    assert_eq!(g.highest_pending(0), Some((33, 0x50)));
    // Ack and EOI the first; the rest come next time, in order.
    lrs[0].state = LrState::Invalid;
    g.sync(0, &lrs, &mut fx);
    let outcome = g.flush(0, &mut lrs, &mut fx);
    assert_eq!(ids(&lrs), [(34, LrState::Pending), (33, LrState::Pending)]);
    assert!(outcome.underflow);
    g.sync(0, &[], &mut fx);
    // A single list register: no UIE (it would fire at once), NPIE while it is pending.
    let mut one = [ListRegister::INVALID];
    let outcome = g.flush(0, &mut one, &mut fx);
    assert!(!outcome.underflow && outcome.no_pending);
    one[0].state = LrState::Active;
    g.sync(0, &one, &mut fx);
    let outcome = g.flush(0, &mut one, &mut fx);
    assert_eq!(ids(&one), [(34, LrState::Active)]);
    assert!(!outcome.underflow && !outcome.no_pending && one[0].eoi_maintenance);
}

#[test]
fn edge_raised_again_while_active_is_delivered_again() {
    let mut g = ready_v3(1);
    let mut fx = Vec::new();
    g.raise(40, 0, &mut fx).unwrap();
    let mut lrs = flush(&mut g, 0, 2);
    lrs[0].state = LrState::Active;
    g.raise(40, 0, &mut fx).unwrap();
    g.sync(0, &lrs, &mut fx);
    let mut lrs = flush(&mut g, 0, 2);
    assert_eq!(ids(&lrs), [(40, LrState::PendingActive)]);
    lrs[0].state = LrState::Pending;
    g.sync(0, &lrs, &mut fx);
    assert_eq!(ids(&flush(&mut g, 0, 2)), [(40, LrState::Pending)]);
}

#[test]
fn level_sensitive_lines() {
    let mut g = ready_v3(1);
    let mut fx = Vec::new();
    g.set_level(41, 0, true, &mut fx).unwrap();
    let mut lrs = flush(&mut g, 0, 2);
    assert_eq!(ids(&lrs), [(41, LrState::Pending)]);
    assert!(lrs[0].eoi_maintenance);
    // Handled and EOI'd with the line still high: pending again.
    lrs[0].state = LrState::Invalid;
    g.sync(0, &lrs, &mut fx);
    let lrs = flush(&mut g, 0, 2);
    assert_eq!(ids(&lrs), [(41, LrState::Pending)]);
    // The line drops before the guest takes it: gone.
    g.set_level(41, 0, false, &mut fx).unwrap();
    g.sync(0, &lrs, &mut fx);
    assert_eq!(ids(&flush(&mut g, 0, 2)), []);
    g.sync(0, &[], &mut fx);
    // ISPENDR on a level interrupt latches until acknowledged.
    wr(&mut g, 0, 0x204, 1 << 9);
    let mut lrs = flush(&mut g, 0, 2);
    assert_eq!(ids(&lrs), [(41, LrState::Pending)]);
    lrs[0].state = LrState::Active;
    g.sync(0, &lrs, &mut fx);
    assert_eq!(rd(&g, 0, 0x204), 0);
    // Edge-configured: a rising edge latches, holding the line does nothing more.
    wr(&mut g, 0, 0xc08, 0x2 << 4); // SPI 34 edge
    g.set_level(34, 0, true, &mut fx).unwrap();
    g.set_level(34, 0, true, &mut fx).unwrap();
    assert_eq!(rd(&g, 0, 0x204), 1 << 2);
    wr(&mut g, 0, 0x284, 1 << 2);
    assert_eq!(rd(&g, 0, 0x204), 0);
}

#[test]
fn forwarded_hardware_interrupts() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    rwr(&mut g, 1, GICR_STRIDE + SGI + 0x100, 1 << 27);
    assert_eq!(
        g.hw_arrived(27, 1, &mut fx),
        Err(VgicError::NotForwarded { intid: 27 })
    );
    g.set_forwarded(27, 1, Some(27), &mut fx).unwrap();
    g.hw_arrived(27, 1, &mut fx).unwrap();
    assert_eq!(fx, [Effect::Kick(1)]);
    let mut lrs = flush(&mut g, 1, 2);
    assert_eq!(
        lrs[0],
        ListRegister {
            state: LrState::Pending,
            hw: true,
            group1: true,
            vintid: 27,
            pintid: 27,
            ..ListRegister::INVALID
        }
    );
    // Deactivated by the guest through the LR: hardware deactivates the physical one.
    lrs[0].state = LrState::Invalid;
    fx.clear();
    g.sync(1, &lrs, &mut fx);
    assert_eq!(fx, []);
    // Pending in software, cleared by the guest: the hypervisor must deactivate it.
    g.hw_arrived(27, 1, &mut fx).unwrap();
    assert_eq!(
        rwr(&mut g, 1, GICR_STRIDE + SGI + 0x280, 1 << 27),
        [Effect::DeactivatePhysical(27)]
    );
    // Active, deactivated through ICACTIVER while it is in a list register.
    g.hw_arrived(27, 1, &mut fx).unwrap();
    let mut lrs = flush(&mut g, 1, 2);
    lrs[0].state = LrState::Active;
    fx.clear();
    assert_eq!(rwr(&mut g, 0, GICR_STRIDE + SGI + 0x380, 1 << 27), []);
    assert_eq!(rrd(&g, 0, GICR_STRIDE + SGI + 0x300), 0);
    // Settled when vCPU 1 exits: its LR still held it, so it is deactivated physically.
    g.sync(1, &lrs, &mut fx);
    assert_eq!(fx, [Effect::DeactivatePhysical(27)]);
    assert_eq!(rrd(&g, 0, GICR_STRIDE + SGI + 0x300), 0);
    // Forwarding an SPI; unforwarding one still held releases it.
    g.set_forwarded(48, 0, Some(80), &mut fx).unwrap();
    g.hw_arrived(48, 0, &mut fx).unwrap();
    fx.clear();
    g.set_forwarded(48, 0, None, &mut fx).unwrap();
    assert_eq!(fx, [Effect::DeactivatePhysical(80)]);
    assert_eq!(
        g.set_forwarded(48, 0, Some(3), &mut fx),
        Err(VgicError::BadPhysicalIntid { pintid: 3 })
    );
    assert_eq!(
        g.set_forwarded(3, 0, Some(40), &mut fx),
        Err(VgicError::IsSgi { intid: 3 })
    );
}

#[test]
fn v2_sgis_carry_their_source() {
    let mut g = vgic(GicVersion::V2, 4, 32);
    let mut fx = Vec::new();
    wr(&mut g, 0, 0x0, 0x1);
    for vcpu in 0..4 {
        wr(&mut g, vcpu, 0x100, 0xffff);
    }
    wr(&mut g, 1, 0xf00, (1 << 16) | 3);
    wr(&mut g, 2, 0xf00, (1 << 16) | 3);
    let mut lrs = flush(&mut g, 0, 4);
    // One list register per SGI ID; the other sender waits, with EOI maintenance.
    assert_eq!(ids(&lrs), [(3, LrState::Pending)]);
    assert_eq!(
        (lrs[0].source, lrs[0].group1, lrs[0].eoi_maintenance),
        (1, false, true)
    );
    assert_eq!(lrs[0].to_gich_lr(), 0x1008_0403);
    lrs[0].state = LrState::Active;
    g.sync(0, &lrs, &mut fx);
    let mut lrs = flush(&mut g, 0, 4);
    assert_eq!(ids(&lrs), [(3, LrState::Active)]);
    assert_eq!(lrs[0].source, 1);
    lrs[0].state = LrState::Invalid;
    g.sync(0, &lrs, &mut fx);
    let lrs = flush(&mut g, 0, 4);
    assert_eq!(ids(&lrs), [(3, LrState::Pending)]);
    assert_eq!((lrs[0].source, lrs[0].eoi_maintenance), (2, false));
}

#[test]
fn kicks_go_to_other_vcpus() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    let mut route = Vec::new();
    g.dist_write(0, 0x6000 + 8 * 40, AccessWidth::Double, 1, &mut route);
    // vCPU 0 sets SPI 40 pending: routed to vCPU 1, which is kicked.
    assert_eq!(wr(&mut g, 0, 0x204, 1 << 8), [Effect::Kick(1)]);
    // vCPU 1 sets it pending itself: no kick for the writer.
    wr(&mut g, 0, 0x284, 1 << 8);
    assert_eq!(wr(&mut g, 1, 0x204, 1 << 8), []);
    // Routing it elsewhere kicks the new target.
    g.dist_write(1, 0x6000 + 8 * 40, AccessWidth::Double, 0, &mut fx);
    assert_eq!(fx, [Effect::Kick(0)]);
    // IRM = 1: the vCPU hinted by the input gets it.
    g.dist_write(0, 0x6000 + 8 * 41, AccessWidth::Double, 1 << 31, &mut route);
    fx.clear();
    g.raise(41, 1, &mut fx).unwrap();
    assert_eq!(fx, [Effect::Kick(1)]);
    assert_eq!(ids(&flush(&mut g, 1, 4)), [(41, LrState::Pending)]);
}

#[test]
fn active_spi_stays_on_the_vcpu_that_took_it() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    g.raise(40, 0, &mut fx).unwrap();
    let mut lrs = flush(&mut g, 0, 2);
    lrs[0].state = LrState::Active;
    g.sync(0, &lrs, &mut fx);
    // The guest re-routes it while it is in service.
    g.dist_write(0, 0x6000 + 8 * 40, AccessWidth::Double, 1, &mut fx);
    assert_eq!(ids(&flush(&mut g, 1, 2)), []);
    g.sync(1, &[], &mut fx);
    let mut lrs = flush(&mut g, 0, 2);
    assert_eq!(ids(&lrs), [(40, LrState::Active)]);
    lrs[0].state = LrState::Invalid;
    g.sync(0, &lrs, &mut fx);
    g.raise(40, 0, &mut fx).unwrap();
    assert_eq!(ids(&flush(&mut g, 1, 2)), [(40, LrState::Pending)]);
}

#[test]
fn rerouted_spi_kicks_the_vcpu_still_holding_it() {
    let mut g = ready_v3(3);
    let mut fx = Vec::new();
    g.raise(40, 0, &mut fx).unwrap();
    let mut lrs = flush(&mut g, 0, 4);
    // vCPU 0's guest takes and deactivates it, and keeps running: no exit, no sync.
    lrs[0].state = LrState::Invalid;
    // vCPU 1 routes it to vCPU 2, then it fires again.
    g.dist_write(1, 0x6000 + 8 * 40, AccessWidth::Double, 2, &mut fx);
    fx.clear();
    g.raise(40, 0, &mut fx).unwrap();
    // vCPU 2 cannot take it while vCPU 0's list registers hold it: vCPU 0 must exit.
    assert!(fx.contains(&Effect::Kick(0)), "{fx:?}");
    assert_eq!(ids(&flush(&mut g, 2, 4)), []);
    g.sync(2, &[], &mut fx);
    fx.clear();
    g.sync(0, &lrs, &mut fx);
    assert_eq!(fx, [Effect::Kick(2)]);
    assert_eq!(ids(&flush(&mut g, 2, 4)), [(40, LrState::Pending)]);
}

#[test]
fn group_enable_kicks_the_vcpu_holding_the_interrupt() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    rwr(&mut g, 1, GICR_STRIDE + SGI + 0x100, 1 << 1);
    g.sgi1r(0, (1 << 24) | 0b10, &mut fx);
    let mut lrs = flush(&mut g, 1, 4);
    assert_eq!(ids(&lrs), [(1, LrState::Pending)]);
    // vCPU 1's guest acknowledges it and keeps running.
    lrs[0].state = LrState::Active;
    // vCPU 0 turns the groups off, sends the SGI again, and turns them back on.
    wr(&mut g, 0, 0x0, 0);
    g.sgi1r(0, (1 << 24) | 0b10, &mut fx);
    fx.clear();
    g.dist_write(0, 0x0, AccessWidth::Word, 0x3, &mut fx);
    // The new pending state waits behind vCPU 1's list register: vCPU 1 must exit.
    assert_eq!(fx, [Effect::Kick(1)]);
    g.sync(1, &lrs, &mut fx);
    assert_eq!(ids(&flush(&mut g, 1, 4)), [(1, LrState::PendingActive)]);
}

#[test]
fn flush_without_sync_keeps_state() {
    let mut g = ready_v3(1);
    let mut fx = Vec::new();
    g.raise(40, 0, &mut fx).unwrap();
    let _ = flush(&mut g, 0, 2);
    assert_eq!(ids(&flush(&mut g, 0, 2)), [(40, LrState::Pending)]);
    // Fewer list registers read back than were filled: the rest count as unchanged.
    g.sync(0, &[], &mut fx);
    assert_eq!(ids(&flush(&mut g, 0, 2)), [(40, LrState::Pending)]);
    // Cleared by the guest while in a list register: not pending after the sync.
    wr(&mut g, 0, 0x284, 1 << 8);
    let lrs = [ListRegister {
        state: LrState::Pending,
        ..ListRegister::INVALID
    }];
    g.sync(0, &lrs, &mut fx);
    assert_eq!(ids(&flush(&mut g, 0, 2)), []);
}

#[test]
fn hypervisor_inputs_are_checked() {
    let mut g = ready_v3(2);
    let mut fx = Vec::new();
    assert_eq!(g.raise(5, 0, &mut fx), Err(VgicError::IsSgi { intid: 5 }));
    assert_eq!(
        g.raise(96, 0, &mut fx),
        Err(VgicError::NoSuchIntid { intid: 96 })
    );
    assert_eq!(
        g.raise(40, 2, &mut fx),
        Err(VgicError::NoSuchVcpu { vcpu: 2 })
    );
    assert_eq!(
        g.set_level(1020, 0, true, &mut fx),
        Err(VgicError::NoSuchIntid { intid: 1020 })
    );
    let mut lrs = [ListRegister::INVALID; 2];
    assert_eq!(g.flush(7, &mut lrs, &mut fx).loaded, 0);
    g.sync(7, &lrs, &mut fx);
    assert_eq!(fx, []);
}

/// The fast path puts a forwarded interrupt in the next free list register exactly as a
/// flush would, and counts as that flush; it declines whenever a flush could decide
/// otherwise.
#[test]
fn forwarded_interrupt_fast_path() {
    let mut fx = Vec::new();
    // The same arrival, fast and ordinary: the same list register, the same model after.
    let setup = || {
        let mut g = ready_v3(2);
        let mut fx = Vec::new();
        rwr(&mut g, 1, GICR_STRIDE + SGI + 0x100, (1 << 27) | (1 << 20));
        g.set_forwarded(27, 1, Some(27), &mut fx).unwrap();
        g.raise(20, 1, &mut fx).unwrap();
        // PPI 20 loaded in list register 0: everything live is loaded.
        assert_eq!(ids(&flush(&mut g, 1, 4)), [(20, LrState::Pending)]);
        g
    };
    let mut fast = setup();
    let (index, lr) = fast
        .hw_arrived_loaded(27, 1, 4, &mut fx)
        .unwrap()
        .expect("a free list register and nothing left behind");
    assert_eq!(index, 1);
    assert!(
        fast.untouched_since_flush(1),
        "the fast path counts as a flush"
    );
    let mut slow = setup();
    slow.hw_arrived(27, 1, &mut fx).unwrap();
    let mut slow_lrs = vec![ListRegister::INVALID; 4];
    slow.flush(1, &mut slow_lrs, &mut fx);
    assert!(slow_lrs.contains(&lr), "{lr:?} not in {slow_lrs:?}");
    // Both read back the same: the guest took PPI 20 and the timer's interrupt is active.
    let mut fast_lrs = flush_back(&[LrState::Invalid, LrState::Active]);
    fast.sync(1, &fast_lrs, &mut fx);
    let slot = |lrs: &[ListRegister], id| lrs.iter().position(|l| l.vintid == id).unwrap();
    let mut back = [LrState::Invalid; 4];
    back[slot(&slow_lrs, 27)] = LrState::Active;
    slow_lrs = back
        .iter()
        .map(|&state| ListRegister {
            state,
            ..ListRegister::INVALID
        })
        .collect();
    slow.sync(1, &slow_lrs, &mut fx);
    for offset in [0x200, 0x300] {
        let (f, s) = (
            rrd(&fast, 1, GICR_STRIDE + SGI + offset),
            rrd(&slow, 1, GICR_STRIDE + SGI + offset),
        );
        assert_eq!(f, s, "GICR_ISPENDR0/ISACTIVER0 at {offset:#x}");
    }
    assert_eq!(rrd(&fast, 1, GICR_STRIDE + SGI + 0x300), 1 << 27);
    fast_lrs.clear();

    // No free list register: declined, the arrival still recorded for the flush.
    let mut g = setup();
    assert_eq!(g.hw_arrived_loaded(27, 1, 1, &mut fx), Ok(None));
    assert!(!g.untouched_since_flush(1));
    assert_eq!(
        ids(&flush(&mut g, 1, 2)),
        [(20, LrState::Pending), (27, LrState::Pending)]
    );

    // The model changed since the flush: declined.
    let mut g = setup();
    g.raise(21, 1, &mut fx).unwrap();
    assert_eq!(g.hw_arrived_loaded(27, 1, 4, &mut fx), Ok(None));

    // The last flush left an interrupt behind: declined, so priorities still decide.
    let mut g = ready_v3(2);
    rwr(
        &mut g,
        1,
        GICR_STRIDE + SGI + 0x100,
        (1 << 27) | (0b11 << 20),
    );
    g.set_forwarded(27, 1, Some(27), &mut fx).unwrap();
    g.raise(20, 1, &mut fx).unwrap();
    g.raise(21, 1, &mut fx).unwrap();
    assert_eq!(flush(&mut g, 1, 1).len(), 1);
    assert_eq!(g.hw_arrived_loaded(27, 1, 2, &mut fx), Ok(None));

    // Disabled in the guest: nothing to load, declined.
    let mut g = ready_v3(2);
    g.set_forwarded(27, 1, Some(27), &mut fx).unwrap();
    flush(&mut g, 1, 4);
    assert_eq!(g.hw_arrived_loaded(27, 1, 4, &mut fx), Ok(None));
}

/// List registers read back with these states, in flush order.
fn flush_back(states: &[LrState]) -> Vec<ListRegister> {
    states
        .iter()
        .map(|&state| ListRegister {
            state,
            ..ListRegister::INVALID
        })
        .collect()
}

/// A level raised for the running vCPU (the emulated EL1 physical timer) takes the same
/// fast path, with the end-of-interrupt maintenance a level-sensitive interrupt needs.
#[test]
fn level_fast_path_matches_a_flush() {
    let mut fx = Vec::new();
    let setup = || {
        let mut g = ready_v3(1);
        rwr(&mut g, 0, SGI + 0x100, 1 << 30);
        flush(&mut g, 0, 4);
        g
    };
    let mut fast = setup();
    assert!(fast.can_load_now(0, 4));
    fast.set_level(30, 0, true, &mut fx).unwrap();
    let (index, lr) = fast.load_now(30, 0).expect("deliverable, a register free");
    assert_eq!(index, 0);
    assert!(
        lr.eoi_maintenance,
        "level-sensitive: maintenance at the EOI"
    );
    assert!(fast.untouched_since_flush(0));
    let mut slow = setup();
    slow.set_level(30, 0, true, &mut fx).unwrap();
    assert_eq!(flush(&mut slow, 0, 4)[0], lr);
    // Nothing more for the same level.
    assert_eq!(fast.load_now(30, 0), None);
    // Not ready with no register free.
    let g = setup();
    assert!(!g.can_load_now(0, 0));
}
