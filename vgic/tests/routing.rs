//! Where forwarded SPIs go: the guest's routing writes tell the hypervisor to move the
//! physical interrupt to the CPU of the vCPU it now targets.

use vgic::{AccessWidth, Effect, GicVersion, Vgic, VgicConfig};

fn vgic(version: GicVersion, vcpus: usize) -> Vgic {
    Vgic::new(VgicConfig {
        version,
        vcpus,
        spis: 64,
    })
    .expect("valid configuration")
}

fn write(g: &mut Vgic, offset: u64, width: AccessWidth, value: u64) -> Vec<Effect> {
    let mut fx = Vec::new();
    g.dist_write(0, offset, width, value, &mut fx);
    fx.retain(|e| matches!(e, Effect::Route { .. }));
    fx
}

#[test]
fn v3_irouter_moves_a_forwarded_spi() {
    let mut g = vgic(GicVersion::V3, 4);
    g.set_forwarded(48, 0, Some(79), &mut Vec::new()).unwrap();
    assert_eq!(g.spi_route(48), Some(0));
    // GICD_IROUTER<48> at 0x6000 + 8 * 48: Aff0 = 2.
    let irouter = 0x6000 + 8 * 48;
    assert_eq!(
        write(&mut g, irouter, AccessWidth::Double, 2),
        [Effect::Route {
            pintid: 79,
            vcpu: Some(2)
        }]
    );
    // The same route again moves nothing.
    assert_eq!(write(&mut g, irouter, AccessWidth::Double, 2), []);
    // A vCPU the VM does not have: routed nowhere.
    assert_eq!(
        write(&mut g, irouter, AccessWidth::Word, 7),
        [Effect::Route {
            pintid: 79,
            vcpu: None
        }]
    );
    // 1-of-N: the physical interrupt goes to vCPU 0's CPU.
    assert_eq!(
        write(&mut g, irouter, AccessWidth::Word, 1 << 31),
        [Effect::Route {
            pintid: 79,
            vcpu: Some(0)
        }]
    );
    // An SPI that is not forwarded moves nothing physical.
    assert_eq!(write(&mut g, 0x6000 + 8 * 49, AccessWidth::Double, 3), []);
    assert_eq!(g.spi_route(49), Some(3));
    assert_eq!(g.spi_route(27), None);
}

#[test]
fn v2_itargetsr_moves_a_forwarded_spi() {
    let mut g = vgic(GicVersion::V2, 2);
    g.set_forwarded(34, 0, Some(34), &mut Vec::new()).unwrap();
    // GICD_ITARGETSR8 holds INTIDs 32..35; byte 2 is INTID 34.
    assert_eq!(
        write(&mut g, 0x820, AccessWidth::Word, 0x0002_0000),
        [Effect::Route {
            pintid: 34,
            vcpu: Some(1)
        }]
    );
    assert_eq!(
        write(&mut g, 0x822, AccessWidth::Byte, 0),
        [Effect::Route {
            pintid: 34,
            vcpu: None
        }]
    );
}
