//! The SMMUv3 from the board's DT, a PCI host bridge passed through behind it (its windows,
//! its INTx interrupts, its stream IDs), the SMMU's refusals, and the bridge's node in the
//! guest DTB. The fixtures are QEMU virt with `iommu=smmuv3`; regenerate them with
//! `scripts/gen-fixtures.sh` and `scripts/gen-config-fixtures.sh`.

mod common;

use platform::config::{self, Streams};
use platform::guest_dt::{generate, GuestLayout};
use platform::*;

const HYP: MemRange = MemRange {
    base: 0x4020_0000,
    size: 8 << 20,
};

fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(blob: &[u8]) -> Platform {
    Platform::parse(blob).unwrap_or_else(|e| panic!("{e}"))
}

fn spi(number: u32, flags: u32) -> Irq {
    Irq {
        kind: IrqKind::Spi,
        number,
        flags,
    }
}

#[test]
fn the_board_smmu_is_found() {
    let platform = parse(&fixture("virt-gicv3-smmu-4cpu-2g.dtb"));
    assert_eq!(
        platform.smmus,
        vec![Smmu {
            node: "/smmuv3@9050000".to_owned(),
            phandle: Some(0x8007),
            regs: MemRange {
                base: 0x905_0000,
                size: 0x2_0000
            },
            // interrupt-names = "eventq", "priq", "cmdq-sync", "gerror": SPIs 74 to 77, edge.
            eventq_irq: Some(spi(74, 1)),
            gerror_irq: Some(spi(77, 1)),
        }]
    );
    assert!(parse(&fixture("virt-gicv3-4cpu-2g.dtb")).smmus.is_empty());
}

#[test]
fn a_pci_host_bridge_behind_the_smmu() {
    let blob = fixture("config/virt-smmu-valid.dtb");
    let platform = parse(&blob);
    let report = config::check(&blob, &platform, &[HYP]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Every requester ID is behind the SMMU: no DMA warning for the isolated VM.
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let config = report.config.expect("valid");
    let bridge = &config.vms[0].devices[0];
    assert_eq!(bridge.node, "/pcie@10000000");
    // ECAM, then the I/O, 32-bit and 64-bit memory windows of `ranges`.
    let regs: Vec<(u64, u64)> = bridge.regs.iter().map(|r| (r.base, r.size)).collect();
    assert_eq!(
        regs,
        vec![
            (0x40_1000_0000, 0x1000_0000),
            (0x3eff_0000, 0x1_0000),
            (0x1000_0000, 0x2eff_0000),
            (0x80_0000_0000, 0x80_0000_0000),
        ]
    );
    // INTA-INTD of the four slots rotate over SPIs 3 to 6, level-triggered.
    assert_eq!(
        bridge.interrupts,
        vec![spi(3, 4), spi(4, 4), spi(5, 4), spi(6, 4)]
    );
    assert_eq!(
        bridge.streams,
        vec![Streams {
            smmu: "/smmuv3@9050000".to_owned(),
            first: 0,
            count: 0x1_0000,
        }]
    );
}

#[test]
fn smmu_refusals_name_the_fix() {
    let blob = fixture("config/bad-smmu.dtb");
    let platform = parse(&blob);
    let report = config::check(&blob, &platform, &[HYP]);
    let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        vec![
            "/hypervisor/vm@0: devices: /smmuv3@9050000 is the SMMU the hypervisor drives, which cannot be given to a VM; remove it from vm@0's devices".to_owned(),
            "/hypervisor/vm@1: devices: /dma-engine@9400000 masters DMA as stream IDs [0x10, 0x11) of /smmuv3@9050000, which overlap those of /pcie@10000000 [0x0, 0x10000) of vm@0 (linux); a stream ID translates through one VM's stage 2: fix the iommus or iommu-map of /dma-engine@9400000 or /pcie@10000000, or give both to the same VM".to_owned(),
        ]
    );
}

#[test]
fn the_guest_sees_the_bridge_without_the_smmu() {
    let blob = fixture("config/virt-smmu-valid.dtb");
    let platform = parse(&blob);
    let config = config::check(&blob, &platform, &[HYP])
        .config
        .expect("valid");
    let layout = GuestLayout {
        vm_labels: vec!["linux".to_owned(), "secure".to_owned()],
        ..GuestLayout::like_host(&platform, 0x0900_0000, 1)
    };
    let dtb =
        generate(&blob, &platform, &config.vms[0], &[], &layout).unwrap_or_else(|e| panic!("{e}"));
    let guest = parse(&dtb);
    assert!(guest.smmus.is_empty(), "the SMMU must stay hidden");
    let fdt = fdt::Fdt::new(&dtb).expect("fdt");
    let bridge = fdt
        .find_node("/pcie@4010000000")
        .expect("the bridge at its ECAM address");
    for dropped in ["iommu-map", "msi-map"] {
        assert!(
            bridge.property(dropped).is_none(),
            "{dropped} must be dropped"
        );
    }
    // Each interrupt-map entry: 3 address cells and 1 INTx cell of the child, the virtual
    // GIC's phandle, its 2 unit-address cells, then the GIC specifier unchanged.
    let map = bridge
        .property("interrupt-map")
        .expect("interrupt-map")
        .value;
    let cells: Vec<u32> = map
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(cells.len(), 16 * 10);
    let gic = fdt
        .all_nodes()
        .find(|n| n.property("interrupt-controller").is_some())
        .and_then(|n| n.property("phandle"))
        .and_then(|p| p.as_usize())
        .expect("the virtual GIC's phandle") as u32;
    for entry in cells.chunks_exact(10) {
        assert_eq!(entry[4], gic);
        assert_eq!(&entry[5..7], &[0, 0]);
        assert_eq!(entry[7], 0, "an SPI");
        assert!((3..=6).contains(&entry[8]));
    }
    assert_eq!(&cells[..10], &[0, 0, 0, 1, gic, 0, 0, 0, 3, 4]);
}

/// The valid config with `edit` applied to its PCIe host bridge node, checked.
fn check_with_bridge(edit: impl FnOnce(&mut common::Node)) -> config::ConfigReport {
    let (mut root, reserve) = common::edit(&fixture("config/virt-smmu-valid.dtb"));
    edit(root.at("pcie@10000000"));
    let blob = common::build(&root, &reserve, false);
    let platform = parse(&blob);
    config::check(&blob, &platform, &[HYP])
}

fn messages(report: &config::ConfigReport) -> Vec<String> {
    let errors = report.errors.iter().map(|e| format!("error: {e}"));
    let warnings = report.warnings.iter().map(|w| format!("warning: {w}"));
    errors.chain(warnings).collect()
}

#[test]
fn bridge_properties_that_cannot_be_used_are_refused() {
    // An INTx routed to another interrupt controller (phandle 0x8001 is not the GIC).
    let report = check_with_bridge(|n| {
        n.set(
            "interrupt-map",
            common::cells(&[0, 0, 0, 1, 0x8001, 0, 0, 0, 3, 4]),
        )
    });
    let got = messages(&report);
    assert!(
        got.iter().any(
            |m| m.starts_with("error: /hypervisor/vm@0: devices: /pcie@10000000: ")
                && m.contains("interrupt-map")
                && m.contains("not the GIC")
        ),
        "{got:?}"
    );
    // An iommu-map entry of no stream IDs.
    let report = check_with_bridge(|n| n.set("iommu-map", common::cells(&[0, 0x8007, 0, 0])));
    let got = messages(&report);
    assert!(
        got.iter()
            .any(|m| m.contains("/pcie@10000000's iommu-map has an entry of 0 stream IDs")),
        "{got:?}"
    );
}

#[test]
fn a_bridge_without_an_smmu_draws_the_dma_warning() {
    let report = check_with_bridge(|n| n.unset("iommu-map"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let got = messages(&report);
    assert_eq!(
        got,
        vec!["warning: /hypervisor/vm@1: tandem,isolated: DMA-capable devices of other VMs without an IOMMU can write this VM's memory: /pcie@10000000 (vm@0); put them behind an SMMU (an iommus property) or give them to no VM".to_owned()]
    );
    let config = report.config.expect("valid");
    assert!(config.vms[0].devices[0].streams.is_empty());
}
