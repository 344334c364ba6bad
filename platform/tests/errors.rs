//! Malformed and unusual device trees: each error says which node and what is wrong, and
//! the corner cases of the bindings are read correctly.

mod common;

use common::*;
use platform::*;

fn parse_tree(root: &Node) -> Result<Platform, DtError> {
    Platform::parse(&build(root, &[], false))
}

fn err_of(root: &Node) -> DtError {
    match parse_tree(root) {
        Ok(p) => panic!("expected an error, parsed {p:#?}"),
        Err(e) => e,
    }
}

/// Sets a header word of a blob copy.
fn with_word(blob: &[u8], index: usize, value: u32) -> Vec<u8> {
    let mut b = blob.to_vec();
    b[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
    b
}

#[test]
fn minimal_board_parses() {
    let p = parse_tree(&minimal()).unwrap();
    assert_eq!(p.model, "test board");
    assert_eq!(p.compatible, ["test,board", "test,soc"]);
    assert_eq!(p.bootargs.as_deref(), Some("console=ttyAMA0 earlycon"));
    assert_eq!(
        p.psci,
        Some(Psci {
            conduit: Conduit::Hvc,
            version: PsciCompat::V0_2
        })
    );
    assert_eq!(p.timer, None);
    assert_eq!(p.console, None);
    assert_eq!(p.gic.maintenance(), None);
}

#[test]
fn header_errors() {
    assert_eq!(Platform::parse(&[]), Err(DtError::TooShort { len: 0 }));
    assert_eq!(
        Platform::parse(&VIRT_V3_4CPU[..39]),
        Err(DtError::TooShort { len: 39 })
    );

    let mut bad = VIRT_V3_4CPU.to_vec();
    bad[0] = 0;
    let e = Platform::parse(&bad).unwrap_err();
    assert_eq!(e, DtError::BadMagic { found: 0x000d_feed });
    assert!(e.to_string().contains("0xd00dfeed"), "{e}");
    assert_eq!(early_console(&bad), None);

    let short = &VIRT_V3_4CPU[..VIRT_V3_4CPU.len() - 1];
    let e = Platform::parse(short).unwrap_err();
    assert_eq!(
        e,
        DtError::Truncated {
            totalsize: VIRT_V3_4CPU.len(),
            given: short.len()
        }
    );
    assert!(e.to_string().contains("totalsize"), "{e}");
    // The early console still reads what is there: the blob only lost a string's NUL.
    assert_eq!(
        early_console(short),
        Some(EarlyUart {
            kind: UartKind::Pl011,
            base: 0x0900_0000
        })
    );

    let old = with_word(VIRT_V3_4CPU, 5, 16);
    assert!(matches!(
        Platform::parse(&old),
        Err(DtError::UnsupportedVersion { version: 16, .. })
    ));

    let total = VIRT_V3_4CPU.len() as u32;
    let outside = with_word(VIRT_V3_4CPU, 2, total);
    assert!(matches!(
        Platform::parse(&outside),
        Err(DtError::BadBlock {
            block: "structure",
            ..
        })
    ));
    let outside = with_word(VIRT_V3_4CPU, 8, total);
    assert!(matches!(
        Platform::parse(&outside),
        Err(DtError::BadBlock {
            block: "strings",
            ..
        })
    ));
    let outside = with_word(VIRT_V3_4CPU, 4, total + 8);
    assert!(matches!(
        Platform::parse(&outside),
        Err(DtError::BadBlock {
            block: "memory reservation",
            ..
        })
    ));
}

#[test]
fn structure_errors() {
    let blob = build(&minimal(), &[], false);
    let off_struct = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    let size_struct = u32::from_be_bytes(blob[36..40].try_into().unwrap()) as usize;

    // FDT_END replaced by 5, which the `fdt` crate would have taken for its end token.
    let mut b = blob.clone();
    let end = off_struct + size_struct - 4;
    b[end..end + 4].copy_from_slice(&5u32.to_be_bytes());
    assert_eq!(
        Platform::parse(&b),
        Err(DtError::BadStructure {
            offset: end,
            problem: "unknown token"
        })
    );

    // The first property's name offset points outside the strings block.
    let mut b = blob.clone();
    let nameoff = off_struct + 8 + 8;
    b[nameoff..nameoff + 4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let e = Platform::parse(&b).unwrap_err();
    assert!(matches!(e, DtError::BadStructure { .. }), "{e:?}");
    assert!(e.to_string().contains("strings block"), "{e}");

    // A property length running past the block.
    let mut b = blob.clone();
    b[off_struct + 12..off_struct + 16].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
    assert!(matches!(
        Platform::parse(&b),
        Err(DtError::BadStructure { .. })
    ));

    // A property after a child node: swap a child's block and a root property.
    let tail = Node::new("")
        .prop("y", vec![])
        .child(Node::new("a").prop("x", vec![]));
    let good = build(&tail, &[], false);
    assert!(Platform::parse(&good).is_err()); // not a board, but well-formed
    let s = u32::from_be_bytes(good[8..12].try_into().unwrap()) as usize;
    // root: BEGIN "" (8 bytes), PROP y (12 bytes), BEGIN "a" (8), PROP x (12), END, END, FDT_END
    let (prop_y, child) = (s + 8..s + 20, s + 20..s + 44);
    let mut swapped = good[..s + 8].to_vec();
    swapped.extend_from_slice(&good[child]);
    swapped.extend_from_slice(&good[prop_y]);
    swapped.extend_from_slice(&good[s + 44..]);
    assert_eq!(
        Platform::parse(&swapped),
        Err(DtError::BadStructure {
            offset: s + 32,
            problem: "a property after a child node"
        })
    );

    // Nesting deeper than 16 levels.
    let mut deep = Node::new("leaf");
    for i in 0..17 {
        deep = Node::new(&format!("n{i}")).child(deep);
    }
    let e = err_of(&minimal().child(deep));
    assert!(e.to_string().contains("deeper"), "{e}");
}

#[test]
fn cpu_errors() {
    let mut t = minimal();
    t.remove("/cpus");
    assert_eq!(err_of(&t), DtError::NoCpusNode);

    let mut t = minimal();
    t.remove("/cpus/cpu@0");
    assert_eq!(err_of(&t), DtError::NoCpuNodes);

    let mut t = minimal();
    t.at("/cpus/cpu@0").unset("reg");
    let e = err_of(&t);
    assert_eq!(
        e.to_string(),
        "/cpus/cpu@0: no \"reg\" property; a CPU node needs reg = <MPIDR> so the hypervisor can start it"
    );

    let mut t = minimal();
    t.at("/cpus/cpu@0")
        .set("enable-method", strs(&["brcm,bcm2836-smp"]));
    let e = err_of(&t);
    assert_eq!(
        e,
        DtError::CpuEnableMethod {
            node: "/cpus/cpu@0".into(),
            found: Some("brcm,bcm2836-smp".into())
        }
    );
    assert!(e.to_string().contains("\"psci\" or \"spin-table\""), "{e}");

    // No enable-method is fine with a PSCI node, an error without one.
    let mut t = minimal();
    t.at("/cpus/cpu@0").unset("enable-method");
    assert_eq!(
        parse_tree(&t).unwrap().cpus[0].enable_method,
        EnableMethod::Psci
    );
    t.remove("/psci");
    assert_eq!(
        err_of(&t),
        DtError::CpuEnableMethod {
            node: "/cpus/cpu@0".into(),
            found: None
        }
    );

    let mut t = minimal();
    t.at("/cpus/cpu@0")
        .set("enable-method", strs(&["spin-table"]));
    let e = err_of(&t);
    assert_eq!(
        e,
        DtError::SpinTableWithoutReleaseAddr {
            node: "/cpus/cpu@0".into()
        }
    );
    assert!(e.to_string().contains("cpu-release-addr"), "{e}");
    t.at("/cpus/cpu@0")
        .set("cpu-release-addr", cells(&[0, 0x8000_0000]));
    assert_eq!(
        parse_tree(&t).unwrap().cpus[0].enable_method,
        EnableMethod::SpinTable {
            release_addr: 0x8000_0000
        }
    );

    let mut t = minimal();
    let cpu = t.at("/cpus/cpu@0").clone();
    t.at("/cpus").children.push(Node {
        name: "cpu@1".into(),
        ..cpu
    });
    let e = err_of(&t);
    assert_eq!(
        e,
        DtError::DuplicateMpidr {
            node: "/cpus/cpu@1".into(),
            mpidr: 0
        }
    );

    let mut t = minimal();
    let cpus = t.at("/cpus");
    let cpu = cpus.children[0].clone();
    for i in 1..=64u32 {
        let mut c = Node {
            name: format!("cpu@{i}"),
            ..cpu.clone()
        };
        c.set("reg", cells(&[i]));
        cpus.children.push(c);
    }
    assert_eq!(err_of(&t), DtError::TooManyCpus { count: 65, max: 64 });
    t.remove("/cpus/cpu@64");
    assert_eq!(parse_tree(&t).unwrap().cpus.len(), 64);
}

#[test]
fn two_cell_mpidr_and_non_cpu_children() {
    let mut t = minimal();
    let cpus = t.at("/cpus");
    cpus.set("#address-cells", cells(&[2]));
    cpus.children[0].set("reg", cells(&[0x1, 0x0000_0100]));
    cpus.children
        .push(Node::new("cpu-map").child(Node::new("cluster0")));
    cpus.children
        .push(Node::new("l2-cache0").prop("compatible", strs(&["cache"])));
    let p = parse_tree(&t).unwrap();
    assert_eq!(p.cpus.len(), 1);
    assert_eq!(p.cpus[0].mpidr, 0x1_0000_0100);
}

#[test]
fn gic_errors() {
    let mut t = minimal();
    t.remove("/intc@8000000");
    let e = err_of(&t);
    assert_eq!(e, DtError::NoGic);
    assert!(e.to_string().contains("arm,gic-400"), "{e}");

    let mut t = minimal();
    t.at("/intc@8000000")
        .set("reg", cells(&[0, 0x0800_0000, 0, 0x1_0000]));
    let e = err_of(&t);
    assert_eq!(
        e,
        DtError::GicTooFewRegs {
            node: "/intc@8000000".into(),
            found: 1,
            needed: 2
        }
    );

    let mut t = minimal();
    t.at("/intc@8000000")
        .set("#redistributor-regions", cells(&[2]));
    assert!(matches!(
        err_of(&t),
        DtError::GicTooFewRegs {
            found: 2,
            needed: 3,
            ..
        }
    ));
    let gic = t.at("/intc@8000000");
    gic.set(
        "reg",
        cells(&[
            0,
            0x0800_0000,
            0,
            0x1_0000,
            0,
            0x080a_0000,
            0,
            0x2_0000,
            1,
            0,
            0,
            0x10_0000,
        ]),
    );
    gic.set("redistributor-stride", cells(&[0, 0x4_0000]));
    gic.set("interrupts", cells(&[1, 9, 4]));
    let p = parse_tree(&t).unwrap();
    assert_eq!(
        p.gic,
        Gic::V3 {
            gicd: MemRange {
                base: 0x0800_0000,
                size: 0x1_0000
            },
            redistributors: vec![
                MemRange {
                    base: 0x080a_0000,
                    size: 0x2_0000
                },
                MemRange {
                    base: 0x1_0000_0000,
                    size: 0x10_0000
                },
            ],
            redistributor_stride: Some(0x4_0000),
            maintenance: Some(Irq {
                kind: IrqKind::Ppi,
                number: 9,
                flags: 4
            }),
        }
    );

    let mut t = minimal();
    let gic = t.at("/intc@8000000");
    gic.set("compatible", strs(&["arm,cortex-a15-gic"]));
    gic.set("reg", cells(&[0, 0x0800_0000, 0, 0x1_0000]));
    assert!(matches!(
        err_of(&t),
        DtError::GicTooFewRegs {
            found: 1,
            needed: 2,
            ..
        }
    ));

    // A disabled GIC does not count.
    let mut t = minimal();
    t.at("/intc@8000000").set("status", strs(&["disabled"]));
    assert_eq!(err_of(&t), DtError::NoGic);

    let mut t = minimal();
    t.at("/intc@8000000").set("interrupts", cells(&[2, 9, 4]));
    let e = err_of(&t);
    assert!(
        matches!(&e, DtError::BadProperty { node, property: "interrupts", .. } if node == "/intc@8000000"),
        "{e:?}"
    );
}

#[test]
fn memory_errors_and_banks() {
    let mut t = minimal();
    t.remove("/memory@40000000");
    let e = err_of(&t);
    assert_eq!(e, DtError::NoMemory);

    let mut t = minimal();
    t.at("/memory@40000000")
        .set("reg", cells(&[0, 0x4000_0000, 0, 0]));
    assert_eq!(err_of(&t), DtError::NoMemory);

    // Several entries in one node, one node above 4 GiB, a zero-sized entry dropped.
    let mut t = minimal();
    t.at("/memory@40000000").set(
        "reg",
        cells(&[
            0,
            0x8000_0000,
            0,
            0x1000,
            0,
            0x4000_0000,
            0,
            0x1000,
            0,
            0x5000_0000,
            0,
            0,
        ]),
    );
    t.children.push(
        Node::new("memory@800000000")
            .prop("device_type", strs(&["memory"]))
            .prop("reg", cells(&[8, 0, 1, 0])),
    );
    let p = parse_tree(&t).unwrap();
    assert_eq!(
        p.memory,
        [
            MemRange {
                base: 0x4000_0000,
                size: 0x1000
            },
            MemRange {
                base: 0x8000_0000,
                size: 0x1000
            },
            MemRange {
                base: 0x8_0000_0000,
                size: 0x1_0000_0000
            },
        ]
    );

    t.children.push(
        Node::new("memory@880000000")
            .prop("device_type", strs(&["memory"]))
            .prop("reg", cells(&[8, 0x8000_0000, 0, 0x1000])),
    );
    let e = err_of(&t);
    assert_eq!(
        e,
        DtError::OverlappingMemory {
            first: MemRange {
                base: 0x8_0000_0000,
                size: 0x1_0000_0000
            },
            second: MemRange {
                base: 0x8_8000_0000,
                size: 0x1000
            },
        }
    );
    assert!(e.to_string().contains("0x800000000+0x100000000"), "{e}");

    let mut t = minimal();
    t.at("/memory@40000000")
        .set("reg", cells(&[0, 0x4000_0000, 0]));
    assert!(matches!(
        err_of(&t),
        DtError::BadProperty {
            property: "reg",
            ..
        }
    ));
}

#[test]
fn reserved_memory() {
    let mut t = minimal();
    t.children.push(
        Node::new("reserved-memory")
            .prop("#address-cells", cells(&[2]))
            .prop("#size-cells", cells(&[2]))
            .prop("ranges", vec![])
            .child(
                Node::new("secmon@40000000")
                    .prop("reg", cells(&[0, 0x4000_0000, 0, 0x10_0000]))
                    .prop("no-map", vec![]),
            )
            .child(Node::new("pool@50000000").prop("reg", cells(&[0, 0x5000_0000, 0, 0x20_0000])))
            .child(Node::new("cma").prop("size", cells(&[0, 0x400_0000])))
            .child(
                Node::new("off@60000000")
                    .prop("reg", cells(&[0, 0x6000_0000, 0, 0x1000]))
                    .prop("status", strs(&["disabled"])),
            ),
    );
    let p = Platform::parse(&build(
        &t,
        &[(0x4800_0000, 0x1000), (0x4900_0000, 0)],
        false,
    ))
    .unwrap();
    let got: Vec<_> = p
        .reserved
        .iter()
        .map(|r| (r.name.as_str(), r.range.base, r.range.size, r.no_map))
        .collect();
    assert_eq!(
        got,
        [
            ("/memreserve/", 0x4800_0000, 0x1000, false),
            ("secmon@40000000", 0x4000_0000, 0x10_0000, true),
            ("pool@50000000", 0x5000_0000, 0x20_0000, false),
        ]
    );
}

#[test]
fn translation_errors_name_node_and_bus() {
    // The Raspberry Pi 4 GIC sits on /soc; without /soc's ranges it is not CPU-addressable.
    let (mut root, rsv) = edit(RPI4_960M);
    root.at("/soc").unset("ranges");
    let e = Platform::parse(&build(&root, &rsv, false)).unwrap_err();
    match &e {
        DtError::Untranslatable {
            node, bus, addr, ..
        } => {
            assert_eq!(node, "/soc/interrupt-controller@40041000");
            assert_eq!(bus, "/soc");
            assert_eq!(*addr, 0x4004_1000);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("ranges"), "{e}");

    // A ranges window that does not cover the node.
    let (mut root, rsv) = edit(RPI4_960M);
    root.at("/soc")
        .set("ranges", cells(&[0x7e00_0000, 0, 0xfe00_0000, 0x180_0000]));
    let e = Platform::parse(&build(&root, &rsv, false)).unwrap_err();
    assert!(
        matches!(e, DtError::Untranslatable { ref node, .. } if node.ends_with("@40041000")),
        "{e:?}"
    );

    // Two levels of translation, an identity level in between.
    let t = minimal().child(
        Node::new("bus@f0000000")
            .prop("#address-cells", cells(&[1]))
            .prop("#size-cells", cells(&[1]))
            .prop("ranges", cells(&[0, 0, 0xf000_0000, 0x100_0000]))
            .child(
                Node::new("inner")
                    .prop("#address-cells", cells(&[1]))
                    .prop("#size-cells", cells(&[1]))
                    .prop("ranges", vec![])
                    .child(
                        Node::new("serial@1000")
                            .prop("compatible", strs(&["snps,dw-apb-uart"]))
                            .prop("reg", cells(&[0x1000, 0x100]))
                            .prop("reg-shift", cells(&[2]))
                            .prop("reg-io-width", cells(&[4])),
                    ),
            ),
    );
    let mut t = t;
    t.at("/chosen").set(
        "stdout-path",
        strs(&["/bus@f0000000/inner/serial@1000:115200n8"]),
    );
    let p = parse_tree(&t).unwrap();
    let kind = UartKind::Ns16550 {
        reg_shift: 2,
        reg_io_width: 4,
    };
    assert_eq!(
        p.console,
        Some(Uart {
            kind,
            base: 0xf000_1000,
            size: 0x100,
            node: "/bus@f0000000/inner/serial@1000".into(),
            interrupt: None,
        })
    );
    assert_eq!(
        early_console(&build(&t, &[], false)),
        Some(EarlyUart {
            kind,
            base: 0xf000_1000
        })
    );
}

#[test]
fn console_selection() {
    let pl011 = |addr: u32| {
        Node::new(&format!("pl011@{addr:x}"))
            .prop("compatible", strs(&["arm,pl011", "arm,primecell"]))
            .prop("reg", cells(&[0, addr, 0, 0x1000]))
    };
    let mut t = minimal()
        .child(Node::new("aliases").prop("serial1", strs(&["/pl011@9001000"])))
        .child(
            Node::new("rtc@9010000")
                .prop("compatible", strs(&["arm,pl031"]))
                .prop("reg", cells(&[0, 0x0901_0000, 0, 0x1000])),
        )
        .child(pl011(0x0900_0000).prop("status", strs(&["disabled"])))
        .child(pl011(0x0900_1000))
        .child(pl011(0x0900_2000));
    let console = |t: &Node| {
        let blob = build(t, &[], false);
        let early = early_console(&blob).map(|u| u.base);
        let full = Platform::parse(&blob).unwrap().console.map(|u| u.base);
        assert_eq!(early, full);
        full
    };
    // No stdout-path: the first enabled PL011.
    assert_eq!(console(&t), Some(0x0900_1000));
    // By alias with options.
    t.at("/chosen")
        .set("stdout-path", strs(&["serial1:115200n8"]));
    assert_eq!(console(&t), Some(0x0900_1000));
    // By path, unit address left out is not unique here: first match.
    t.at("/chosen")
        .set("stdout-path", strs(&["/pl011@9002000"]));
    assert_eq!(console(&t), Some(0x0900_2000));
    // A stdout-path to something that is not a UART falls back to the first PL011.
    t.at("/chosen").set("stdout-path", strs(&["/rtc@9010000"]));
    assert_eq!(console(&t), Some(0x0900_1000));
    // A dangling alias too.
    t.at("/chosen").set("stdout-path", strs(&["serial7"]));
    assert_eq!(console(&t), Some(0x0900_1000));
}

#[test]
fn psci_and_timer_errors() {
    let mut t = minimal();
    t.at("/psci").set("method", strs(&["svc"]));
    let e = err_of(&t);
    assert!(
        matches!(&e, DtError::BadProperty { node, property: "method", .. } if node == "/psci"),
        "{e:?}"
    );

    let mut t = minimal();
    t.at("/psci").set("compatible", strs(&["arm,psci"]));
    assert_eq!(
        parse_tree(&t).unwrap().psci.unwrap().version,
        PsciCompat::V0_1
    );

    let timer = Node::new("timer")
        .prop("compatible", strs(&["arm,armv7-timer"]))
        .prop("interrupts", cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4]));
    let e = err_of(&minimal().child(timer.clone()));
    assert!(
        matches!(&e, DtError::BadProperty { node, property: "interrupts", .. } if node == "/timer"),
        "{e:?}"
    );
    assert!(e.to_string().contains("hyp phys"), "{e}");

    let mut t = minimal().child(timer);
    t.at("/timer").set(
        "interrupts",
        cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]),
    );
    let timer = parse_tree(&t).unwrap().timer.unwrap();
    assert_eq!(
        timer.hyp_phys,
        Irq {
            kind: IrqKind::Ppi,
            number: 10,
            flags: 4
        }
    );
    assert_eq!(timer.hyp_phys.intid(), 26);
    assert_eq!(timer.hyp_virt, None);

    t.at("/timer").set(
        "interrupts",
        cells(&[1, 16, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]),
    );
    assert!(err_of(&t).to_string().contains("out of range"));
}

#[test]
fn every_error_message_names_a_node_or_the_blob() {
    let samples = [
        DtError::NoGic,
        DtError::NoMemory,
        DtError::NoCpusNode,
        DtError::Fdt {
            problem: "bad magic",
        },
        DtError::TooShort { len: 3 },
        DtError::BadProperty {
            node: "/x".into(),
            property: "reg",
            problem: "p",
        },
    ];
    for e in samples {
        let s = e.to_string();
        assert!(
            s.starts_with('/') || s.starts_with("device tree") || s.starts_with("memory"),
            "{s}"
        );
    }
}

#[test]
fn duplicate_property_is_refused() {
    let mut t = minimal();
    t.at("/intc@8000000")
        .props
        .push(("compatible".into(), strs(&["arm,gic-400"])));
    let e = err_of(&t);
    assert!(e.to_string().contains("appears twice"), "{e}");
}

#[test]
fn duplicate_node_names_first_match_wins_in_both_readers() {
    // Found by the fuzzer: stdout-path names two nodes, the first not a known UART.
    let (mut root, rsv) = edit(RPI4_960M);
    root.at("/soc/serial@7e215040")
        .set("compatible", strs(&["brcm,bcm2835-aux-??"]));
    root.at("/soc/serial@7e201600").name = "serial@7e215040".into();
    let blob = build(&root, &rsv, false);
    let console = Platform::parse(&blob).unwrap().console.unwrap();
    assert_eq!((console.kind, console.base), (UartKind::Pl011, 0xfe20_1000));
    assert_eq!(
        early_console(&blob),
        Some(EarlyUart {
            kind: UartKind::Pl011,
            base: 0xfe20_1000
        })
    );
}
