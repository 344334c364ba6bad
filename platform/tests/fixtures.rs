//! Concrete facts of the QEMU virt and Raspberry Pi 4 device trees, as `Platform::parse` and
//! `early_console` read them.

mod common;

use common::*;
use platform::*;

fn parse(blob: &[u8]) -> Platform {
    Platform::parse(blob).unwrap_or_else(|e| panic!("{e}"))
}

const GIB: u64 = 1 << 30;
const PL011_VIRT: EarlyUart = EarlyUart {
    kind: UartKind::Pl011,
    base: 0x0900_0000,
};

fn ppi(number: u32, flags: u32) -> Irq {
    Irq {
        kind: IrqKind::Ppi,
        number,
        flags,
    }
}

/// The interrupt without the GICv2 CPU mask (flags bits [15:8]), which QEMU sets to the
/// number of CPUs on GICv2 and leaves 0 on GICv3.
fn no_mask(irq: Irq) -> Irq {
    Irq {
        flags: irq.flags & 0xff,
        ..irq
    }
}

fn assert_virt_common(p: &Platform) {
    assert_eq!(p.model, "linux,dummy-virt");
    assert_eq!(p.compatible, ["linux,dummy-virt"]);
    assert_eq!(
        p.psci,
        Some(Psci {
            conduit: Conduit::Smc,
            version: PsciCompat::V1_0
        })
    );
    assert_eq!(
        p.gic.gicd(),
        MemRange {
            base: 0x0800_0000,
            size: 0x1_0000
        }
    );
    let maintenance = no_mask(p.gic.maintenance().unwrap());
    assert_eq!(maintenance, ppi(9, 4));
    assert_eq!(maintenance.intid(), 25);
    let timer = p.timer.unwrap();
    assert_eq!(no_mask(timer.secure_phys), ppi(13, 4));
    assert_eq!(no_mask(timer.phys), ppi(14, 4));
    assert_eq!(no_mask(timer.virt), ppi(11, 4));
    assert_eq!(timer.virt.intid(), 27);
    assert_eq!(no_mask(timer.hyp_phys), ppi(10, 4));
    assert_eq!(timer.hyp_virt.map(no_mask), Some(ppi(12, 4)));
    let console = p.console.as_ref().unwrap();
    assert_eq!(console.kind, UartKind::Pl011);
    assert_eq!((console.base, console.size), (0x0900_0000, 0x1000));
    assert_eq!(console.node, "/pl011@9000000");
    assert_eq!(p.bootargs, None);
    assert!(p.reserved.is_empty());
    for (i, cpu) in p.cpus.iter().enumerate() {
        assert_eq!(cpu.mpidr, i as u64);
        assert_eq!(cpu.node, format!("/cpus/cpu@{i}"));
        assert_eq!(cpu.enable_method, EnableMethod::Psci);
    }
}

#[test]
fn virt_gicv3_4cpu_2g() {
    let p = parse(VIRT_V3_4CPU);
    assert_virt_common(&p);
    assert_eq!(p.cpus.len(), 4);
    assert_eq!(
        p.memory,
        [MemRange {
            base: 0x4000_0000,
            size: 2 * GIB
        }]
    );
    let Gic::V3 {
        gicd,
        redistributors,
        redistributor_stride,
        ..
    } = &p.gic
    else {
        panic!("expected GICv3, got {:?}", p.gic)
    };
    assert_eq!(p.gic.version(), 3);
    assert_eq!(
        *gicd,
        MemRange {
            base: 0x0800_0000,
            size: 0x1_0000
        }
    );
    assert_eq!(
        redistributors,
        &[MemRange {
            base: 0x080a_0000,
            size: 0xf6_0000
        }]
    );
    assert_eq!(*redistributor_stride, None);
}

#[test]
fn virt_gicv3_8cpu_6g_crosses_4g() {
    let p = parse(VIRT_V3_8CPU);
    assert_virt_common(&p);
    assert_eq!(p.cpus.len(), 8);
    assert_eq!(
        p.memory,
        [MemRange {
            base: 0x4000_0000,
            size: 6 * GIB
        }]
    );
    let end = p.memory[0].end().unwrap();
    assert_eq!(end, 0x1_c000_0000);
    assert!(p.memory[0].contains(0x1_0000_0000));
    assert!(!p.memory[0].contains(end));
}

#[test]
fn virt_gicv3_numa_two_memory_nodes_sorted() {
    let p = parse(VIRT_V3_NUMA);
    assert_virt_common(&p);
    // The blob lists memory@80000000 first.
    assert_eq!(
        p.memory,
        [
            MemRange {
                base: 0x4000_0000,
                size: GIB
            },
            MemRange {
                base: 0x8000_0000,
                size: GIB
            }
        ]
    );
}

#[test]
fn virt_gicv2_4cpu_1g() {
    let p = parse(VIRT_V2_4CPU);
    assert_virt_common(&p);
    assert_eq!(p.cpus.len(), 4);
    assert_eq!(
        p.memory,
        [MemRange {
            base: 0x4000_0000,
            size: GIB
        }]
    );
    let r = |base| MemRange {
        base,
        size: 0x1_0000,
    };
    assert_eq!(
        p.gic,
        Gic::V2 {
            gicd: r(0x0800_0000),
            gicc: r(0x0801_0000),
            gich: Some(r(0x0803_0000)),
            gicv: Some(r(0x0804_0000)),
            maintenance: Some(ppi(9, 4)),
        }
    );
    assert_eq!(p.gic.version(), 2);
    // GICv2 PPIs carry a CPU mask: all four CPUs.
    assert_eq!(p.timer.unwrap().virt, ppi(11, 0xf04));
}

#[test]
fn virt_gicv2_1cpu_has_no_enable_method_but_psci() {
    // QEMU leaves enable-method out with -smp 1; the PSCI node makes it Psci.
    let p = parse(VIRT_V2_1CPU);
    assert_virt_common(&p);
    assert_eq!(p.cpus.len(), 1);
    assert_eq!(
        p.memory,
        [MemRange {
            base: 0x4000_0000,
            size: 512 << 20
        }]
    );
    assert_eq!(p.gic.version(), 2);
}

#[test]
fn rpi4_unpatched_has_no_memory() {
    let err = Platform::parse(RPI4).unwrap_err();
    assert_eq!(err, DtError::NoMemory);
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn rpi4_patched_960m() {
    let p = parse(RPI4_960M);
    assert_eq!(p.model, "Raspberry Pi 4 Model B");
    assert_eq!(p.compatible, ["raspberrypi,4-model-b", "brcm,bcm2711"]);
    assert_eq!(
        p.memory,
        [MemRange {
            base: 0,
            size: 960 << 20
        }]
    );
    // The spin table page; nvram@0 is zero-sized and disabled, linux,cma has no reg.
    assert_eq!(
        p.reserved,
        [Reserved {
            range: MemRange {
                base: 0,
                size: 0x1000
            },
            name: "/memreserve/".into(),
            no_map: false
        }]
    );
    assert_eq!(p.psci, None);
    let release: Vec<_> = p
        .cpus
        .iter()
        .map(|c| match c.enable_method {
            EnableMethod::SpinTable { release_addr } => (c.mpidr, release_addr),
            EnableMethod::Psci => panic!("{} uses PSCI", c.node),
        })
        .collect();
    assert_eq!(release, [(0, 0xd8), (1, 0xe0), (2, 0xe8), (3, 0xf0)]);
    let Gic::V2 {
        gicd,
        gicc,
        gich,
        gicv,
        maintenance,
    } = p.gic
    else {
        panic!("expected GIC-400, got {:?}", p.gic)
    };
    assert_eq!(
        gicd,
        MemRange {
            base: 0xff84_1000,
            size: 0x1000
        }
    );
    assert_eq!(
        gicc,
        MemRange {
            base: 0xff84_2000,
            size: 0x2000
        }
    );
    assert_eq!(
        gich,
        Some(MemRange {
            base: 0xff84_4000,
            size: 0x2000
        })
    );
    assert_eq!(
        gicv,
        Some(MemRange {
            base: 0xff84_6000,
            size: 0x2000
        })
    );
    assert_eq!(maintenance, Some(ppi(9, 0xf04)));
    let timer = p.timer.unwrap();
    assert_eq!(
        [timer.secure_phys, timer.phys, timer.virt, timer.hyp_phys],
        [
            ppi(13, 0xf08),
            ppi(14, 0xf08),
            ppi(11, 0xf08),
            ppi(10, 0xf08)
        ]
    );
    assert_eq!(timer.hyp_virt, None);
    assert_eq!(
        p.console,
        Some(Uart {
            kind: UartKind::Bcm2835Aux,
            base: 0xfe21_5040,
            size: 0x40,
            node: "/soc/serial@7e215040".into(),
            interrupt: Some(Irq {
                kind: IrqKind::Spi,
                number: 93,
                flags: 4
            }),
        })
    );
}

#[test]
fn early_console_on_every_fixture() {
    let rpi = EarlyUart {
        kind: UartKind::Bcm2835Aux,
        base: 0xfe21_5040,
    };
    for (name, blob) in ALL {
        let expected = if name.starts_with("bcm2711") {
            rpi
        } else {
            PL011_VIRT
        };
        assert_eq!(early_console(blob), Some(expected), "{name}");
        if let Ok(p) = Platform::parse(blob) {
            let c = p.console.unwrap();
            assert_eq!(
                EarlyUart {
                    kind: c.kind,
                    base: c.base
                },
                expected,
                "{name}"
            );
        }
    }
}

#[test]
fn blob_size_reads_totalsize() {
    for (name, blob) in ALL {
        assert_eq!(blob_size(blob), Some(blob.len()), "{name}");
        assert_eq!(blob_size(&blob[..8]), Some(blob.len()), "{name}");
        // Trailing bytes past totalsize are ignored.
        let mut longer = blob.to_vec();
        longer.extend_from_slice(&[0xff; 64]);
        assert_eq!(Platform::parse(&longer), Platform::parse(blob), "{name}");
    }
    assert_eq!(blob_size(&[0xd0, 0x0d, 0xfe, 0xed]), None);
    assert_eq!(blob_size(b"not a device tree"), None);
}

#[test]
fn rebuilt_fixtures_parse_the_same_with_and_without_nops() {
    for (name, blob) in ALL {
        let (root, rsv) = edit(blob);
        let plain = build(&root, &rsv, false);
        let nops = build(&root, &rsv, true);
        assert_eq!(Platform::parse(&plain), Platform::parse(blob), "{name}");
        assert_eq!(
            Platform::parse(&nops),
            Platform::parse(blob),
            "{name} with FDT_NOPs"
        );
        assert_eq!(
            early_console(&nops),
            early_console(blob),
            "{name} with FDT_NOPs"
        );
    }
}

#[test]
fn mem_range_helpers() {
    let a = MemRange {
        base: 0x1000,
        size: 0x1000,
    };
    assert_eq!(a.end(), Some(0x2000));
    assert!(a.contains(0x1000) && a.contains(0x1fff) && !a.contains(0x2000) && !a.contains(0xfff));
    assert!(a.overlaps(&MemRange {
        base: 0x1fff,
        size: 1
    }));
    assert!(!a.overlaps(&MemRange {
        base: 0x2000,
        size: 1
    }));
    assert!(!a.overlaps(&MemRange {
        base: 0x1800,
        size: 0
    }));
    let top = MemRange {
        base: u64::MAX,
        size: 2,
    };
    assert_eq!(top.end(), None);
    assert!(top.contains(u64::MAX));
    assert!(top.overlaps(&MemRange {
        base: u64::MAX,
        size: 1
    }));
    assert_eq!(
        Irq {
            kind: IrqKind::Spi,
            number: 1,
            flags: 4
        }
        .intid(),
        33
    );
}
