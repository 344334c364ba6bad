//! The generated guest DTB: golden files, re-parsing with `Platform::parse`, a property test
//! over random VMs, device copying, and `check_user_dtb`.
//!
//! Regenerate the goldens with `scripts/gen-guest-dt-goldens.sh` (it runs these tests with
//! `TANDEM_BLESS=1`, then decompiles each `.dtb` with dtc).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use platform::config::{Device, Module, ModuleKind, OnCrash, ShmemConfig, VmConfig};
use platform::guest_dt::{
    check_user_dtb, generate, EmulatedVirtio, GuestDtError, GuestLayout, ServiceRing, VirtualGic,
    GICR_FRAME_PAIR,
};
use platform::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// QEMU virt's PL011 (the hypervisor's own; the VM sees an emulated one at this address).
const CONSOLE_BASE: u64 = 0x0900_0000;
/// QEMU virt's PL011 SPI.
const CONSOLE_SPI: u32 = 1;

fn mem(base: u64, size: u64) -> MemRange {
    MemRange { base, size }
}

/// QEMU virt's `virtio_mmio` transport number `k` (0..32): 0x200 bytes at 0x0a000000 +
/// 0x200 k, SPI 16 + k, edge-triggered.
fn virtio(k: u64) -> Device {
    let base = 0x0a00_0000 + 0x200 * k;
    Device {
        node: format!("/virtio_mmio@{base:x}"),
        phandle: 0,
        regs: vec![mem(base, 0x200)],
        interrupts: vec![Irq {
            kind: IrqKind::Spi,
            number: 16 + k as u32,
            flags: 1,
        }],
        streams: Vec::new(),
    }
}

fn module(kind: ModuleKind, base: u64, size: u64) -> Module {
    Module {
        node: format!("/hypervisor/vm@0/module@{base:x}"),
        kind,
        range: mem(base, size),
        raw: false,
        load_address: None,
    }
}

fn vm(index: usize, label: &str, cpus: Vec<usize>, memory: Vec<MemRange>) -> VmConfig {
    VmConfig {
        node: format!("/hypervisor/vm@{index}"),
        index,
        label: label.to_owned(),
        cpus,
        memory,
        devices: vec![],
        bootargs: None,
        on_crash: OnCrash::Stop,
        isolated: false,
        modules: vec![],
    }
}

/// The rich OS of the goldens: CPUs 0-2, one virtio device, bootargs and a ramdisk.
fn linux(memory: MemRange) -> VmConfig {
    VmConfig {
        devices: vec![virtio(31)],
        bootargs: Some("console=ttyAMA0 earlycon rdinit=/init".to_owned()),
        modules: vec![
            module(ModuleKind::Kernel, 0x4800_0000, 40 * MIB),
            module(ModuleKind::Ramdisk, 0x4a80_0000, 8 * MIB),
        ],
        ..vm(0, "linux", vec![0, 1, 2], vec![memory])
    }
}

/// The secure guest of the goldens: one CPU, 64 MiB, no devices.
fn secure() -> VmConfig {
    VmConfig {
        isolated: true,
        ..vm(1, "secure", vec![3], vec![mem(0x4400_0000, 64 * MIB)])
    }
}

fn shmem() -> ShmemConfig {
    ShmemConfig {
        node: "/hypervisor/shmem@0".to_owned(),
        memory: mem(0x4800_0000, 2 * MIB),
        vms: vec![0, 1],
        doorbells: vec![40, 41],
    }
}

fn layout(platform: &Platform, initrd: Option<MemRange>) -> GuestLayout {
    GuestLayout {
        initrd,
        vm_labels: vec!["linux".to_owned(), "secure".to_owned()],
        ..GuestLayout::like_host(platform, CONSOLE_BASE, CONSOLE_SPI)
    }
}

fn parse(blob: &[u8]) -> Platform {
    Platform::parse(blob).unwrap_or_else(|e| panic!("{e}"))
}

struct Case {
    name: &'static str,
    host: &'static [u8],
    vm: VmConfig,
    initrd: Option<MemRange>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "linux-gicv3",
            host: VIRT_V3_4CPU,
            vm: linux(mem(0x5000_0000, GIB)),
            initrd: Some(mem(0x5800_0000, 8 * MIB)),
        },
        Case {
            name: "linux-gicv2",
            host: VIRT_V2_4CPU,
            vm: linux(mem(0x5000_0000, 512 * MIB)),
            initrd: Some(mem(0x5800_0000, 8 * MIB)),
        },
        Case {
            name: "secure-gicv3",
            host: VIRT_V3_4CPU,
            vm: secure(),
            initrd: None,
        },
    ]
}

fn generate_case(case: &Case) -> Vec<u8> {
    let platform = parse(case.host);
    generate(
        case.host,
        &platform,
        &case.vm,
        &[shmem()],
        &layout(&platform, case.initrd),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/guest_dt")
}

fn dtc_decompile(dtb: &[u8]) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("tandem-guest-dt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("in.dtb");
    std::fs::write(&path, dtb).ok()?;
    let out = Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "dtc failed on a generated DTB");
    Some(String::from_utf8(out.stdout).expect("dtc prints UTF-8"))
}

#[test]
fn goldens() {
    let bless = std::env::var_os("TANDEM_BLESS").is_some();
    for case in cases() {
        let dtb = generate_case(&case);
        let path = golden_dir().join(format!("{}.dtb", case.name));
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &dtb).unwrap();
            continue;
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/gen-guest-dt-goldens.sh",
                path.display()
            )
        });
        assert!(
            golden == dtb,
            "{}: generated DTB differs from the golden; if the change is intended, run scripts/gen-guest-dt-goldens.sh and review the .dts diff",
            case.name
        );
        if let Some(text) = dtc_decompile(&dtb) {
            let dts =
                std::fs::read_to_string(golden_dir().join(format!("{}.dts", case.name))).unwrap();
            assert_eq!(
                text, dts,
                "{}: dtc's decompile differs from the golden .dts",
                case.name
            );
        }
    }
}

#[test]
fn same_input_same_bytes() {
    for case in cases() {
        assert_eq!(generate_case(&case), generate_case(&case), "{}", case.name);
    }
}

#[test]
fn generated_dtbs_parse_back() {
    for case in cases() {
        let host = parse(case.host);
        let dtb = generate_case(&case);
        let guest = parse(&dtb);
        assert_eq!(guest.memory, case.vm.memory, "{}", case.name);
        let mpidrs: Vec<u64> = guest.cpus.iter().map(|c| c.mpidr).collect();
        let expect: Vec<u64> = (0..case.vm.cpus.len() as u64).collect();
        assert_eq!(mpidrs, expect, "{}", case.name);
        assert!(guest
            .cpus
            .iter()
            .all(|c| c.enable_method == EnableMethod::Psci));
        assert_eq!(
            guest.psci,
            Some(Psci {
                conduit: Conduit::Hvc,
                version: PsciCompat::V1_0
            })
        );
        assert_eq!(guest.gic.version(), host.gic.version(), "{}", case.name);
        assert_eq!(guest.gic.gicd(), host.gic.gicd());
        assert_eq!(guest.gic.maintenance(), None);
        match &guest.gic {
            Gic::V3 { redistributors, .. } => assert_eq!(
                redistributors,
                &[mem(
                    0x080a_0000,
                    GICR_FRAME_PAIR * case.vm.cpus.len() as u64
                )]
            ),
            Gic::V2 {
                gicc, gich, gicv, ..
            } => {
                assert_eq!(*gicc, mem(0x0801_0000, 0x1_0000));
                assert_eq!((gich, gicv), (&None, &None));
            }
        }
        let console = guest.console.expect("console");
        assert_eq!(
            (console.kind, console.base),
            (UartKind::Pl011, CONSOLE_BASE)
        );
        let timer = guest.timer.expect("timer");
        let host_timer = host.timer.unwrap();
        assert_eq!(
            [timer.secure_phys, timer.phys, timer.virt, timer.hyp_phys].map(|i| i.number),
            [13, 14, 11, 10]
        );
        assert_eq!(timer.hyp_virt, None);
        assert_eq!(timer.virt.flags & 0xff, host_timer.virt.flags & 0xff);
        let mask = if host.gic.version() == 2 {
            ((1 << case.vm.cpus.len()) - 1) << 8
        } else {
            0
        };
        assert_eq!(timer.virt.flags & 0xff00, mask);
        assert_eq!(guest.bootargs, case.vm.bootargs);
        assert_eq!(guest.model, format!("Tandem VM {}", case.vm.label));
        assert_eq!(
            guest.reserved,
            [Reserved {
                range: shmem().memory,
                name: "shmem@48000000".to_owned(),
                no_map: true
            }]
        );
    }
}

/// Every node of a generated tree, with its path.
fn nodes(dtb: &[u8]) -> Vec<(String, Node)> {
    fn walk(n: &Node, path: &str, out: &mut Vec<(String, Node)>) {
        out.push((path.to_owned(), n.clone()));
        for c in &n.children {
            let p = if path == "/" {
                format!("/{}", c.name)
            } else {
                format!("{path}/{}", c.name)
            };
            walk(c, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&Node::from_dtb(dtb), "/", &mut out);
    out
}

fn prop<'a>(n: &'a Node, name: &str) -> Option<&'a [u8]> {
    n.props
        .iter()
        .find(|(p, _)| p == name)
        .map(|(_, v)| v.as_slice())
}

fn u32s(v: &[u8]) -> Vec<u32> {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn chosen_and_phandles() {
    let case = &cases()[0];
    let dtb = generate_case(case);
    let all = nodes(&dtb);
    let chosen = &all.iter().find(|(p, _)| p == "/chosen").unwrap().1;
    assert_eq!(
        prop(chosen, "linux,initrd-start"),
        Some(&0x5800_0000u64.to_be_bytes()[..])
    );
    assert_eq!(
        prop(chosen, "linux,initrd-end"),
        Some(&0x5880_0000u64.to_be_bytes()[..])
    );
    assert_eq!(prop(chosen, "stdout-path"), Some(&b"/pl011@9000000\0"[..]));
    let phandles: Vec<u32> = all
        .iter()
        .filter_map(|(_, n)| prop(n, "phandle"))
        .flat_map(u32s)
        .collect();
    assert_eq!(phandles, [1, 2]);
    let virtio = &all
        .iter()
        .find(|(p, _)| p == "/virtio_mmio@a003e00")
        .unwrap()
        .1;
    assert_eq!(prop(virtio, "interrupt-parent").map(u32s), Some(vec![1]));
    assert_eq!(prop(virtio, "dma-coherent"), Some(&[][..]));
    // The secure VM's DTB has no /chosen/bootargs and no device.
    let secure = nodes(&generate_case(&cases()[2]));
    assert!(!secure.iter().any(|(p, _)| p.contains("virtio")));
    let chosen = &secure.iter().find(|(p, _)| p == "/chosen").unwrap().1;
    assert_eq!(prop(chosen, "bootargs"), None);
    let shm = &secure
        .iter()
        .find(|(p, _)| p == "/reserved-memory/shmem@48000000")
        .unwrap()
        .1;
    assert_eq!(prop(shm, "tandem,doorbell").map(u32s), Some(vec![41]));
    assert_eq!(prop(shm, "tandem,peers"), Some(&b"linux\0"[..]));
}

/// The v3 fixture with extra nodes for copying tests: a device with a clock, a regulator and
/// a GPIO, and one whose interrupts go to a GPIO controller.
fn host_with_dependencies() -> Vec<u8> {
    let mut root = Node::from_dtb(VIRT_V3_4CPU);
    root.children.push(
        Node::new("regulator-3v3")
            .prop("compatible", strs(&["regulator-fixed"]))
            .prop("regulator-name", strs(&["3v3"]))
            .prop("phandle", cells(&[0x9000])),
    );
    root.children.push(
        Node::new("sensor@a100000")
            .prop("compatible", strs(&["acme,sensor"]))
            .prop("reg", cells(&[0, 0x0a10_0000, 0, 0x1000]))
            .prop("interrupts", cells(&[0, 70, 4]))
            .prop("clocks", cells(&[0x8000]))
            .prop("vdd-supply", cells(&[0x9000]))
            .prop("iommus", cells(&[0x8005, 1]))
            .prop("pinctrl-0", cells(&[0x8007]))
            .prop("phandle", cells(&[0x9001])),
    );
    root.children.push(
        Node::new("button@a101000")
            .prop("compatible", strs(&["acme,button"]))
            .prop("reg", cells(&[0, 0x0a10_1000, 0, 0x1000]))
            .prop("reset-gpios", cells(&[0x8007, 3, 0])),
    );
    root.children.push(
        Node::new("key@a102000")
            .prop("compatible", strs(&["acme,key"]))
            .prop("reg", cells(&[0, 0x0a10_2000, 0, 0x1000]))
            .prop("interrupt-parent", cells(&[0x8007]))
            .prop("interrupts", cells(&[3, 4])),
    );
    build(&root, &[], false)
}

fn device(node: &str, base: u64) -> Device {
    Device {
        node: node.to_owned(),
        phandle: 0,
        regs: vec![mem(base, 0x1000)],
        interrupts: vec![],
        streams: Vec::new(),
    }
}

#[test]
fn copies_referenced_clock_and_regulator() {
    let host = host_with_dependencies();
    let platform = parse(&host);
    let vm = VmConfig {
        devices: vec![device("/sensor@a100000", 0x0a10_0000)],
        ..vm(0, "linux", vec![0], vec![mem(0x4000_0000, GIB)])
    };
    let dtb = generate(&host, &platform, &vm, &[], &layout(&platform, None)).unwrap();
    let all = nodes(&dtb);
    let get = |path: &str| {
        all.iter()
            .find(|(p, _)| p == path)
            .map(|(_, n)| n)
            .unwrap_or_else(|| panic!("no {path}"))
    };
    let sensor = get("/sensor@a100000");
    // The host's apb-pclk (0x8000) is named apart from the console's own clock.
    assert_eq!(prop(sensor, "clocks").map(u32s), Some(vec![3]));
    assert_eq!(prop(sensor, "vdd-supply").map(u32s), Some(vec![4]));
    assert_eq!(prop(sensor, "interrupt-parent").map(u32s), Some(vec![1]));
    assert_eq!(prop(sensor, "iommus"), None);
    assert_eq!(prop(sensor, "pinctrl-0"), None);
    assert_eq!(
        prop(sensor, "phandle"),
        None,
        "nothing refers to the sensor"
    );
    assert_eq!(prop(get("/apb-pclk-1"), "phandle").map(u32s), Some(vec![3]));
    assert_eq!(
        prop(get("/apb-pclk-1"), "clock-frequency").map(u32s),
        Some(vec![24_000_000])
    );
    assert_eq!(
        prop(get("/regulator-3v3"), "phandle").map(u32s),
        Some(vec![4])
    );
    assert!(!all.iter().any(|(p, _)| p.contains("pl061")));
    parse(&dtb);
}

#[test]
fn refuses_what_it_cannot_copy() {
    let host = host_with_dependencies();
    let platform = parse(&host);
    let with = |d: Device| VmConfig {
        devices: vec![d],
        ..vm(0, "linux", vec![0], vec![mem(0x4000_0000, GIB)])
    };
    let l = layout(&platform, None);
    let err = generate(
        &host,
        &platform,
        &with(device("/button@a101000", 0x0a10_1000)),
        &[],
        &l,
    )
    .unwrap_err();
    assert_eq!(
        err,
        GuestDtError::DependencyHasRegisters {
            node: "/button@a101000".to_owned(),
            property: "reset-gpios".to_owned(),
            target: "/pl061@9030000".to_owned()
        }
    );
    assert!(err
        .to_string()
        .contains("assign /pl061@9030000 to the VM too"));
    let err = generate(
        &host,
        &platform,
        &with(device("/key@a102000", 0x0a10_2000)),
        &[],
        &l,
    )
    .unwrap_err();
    assert_eq!(
        err,
        GuestDtError::InterruptParentNotGic {
            node: "/key@a102000".to_owned()
        }
    );
    let err = generate(&host, &platform, &with(device("/nowhere@0", 0)), &[], &l).unwrap_err();
    assert!(matches!(err, GuestDtError::DeviceNotFound { .. }), "{err}");
}

#[test]
fn refuses_bad_layouts() {
    let platform = parse(VIRT_V3_4CPU);
    let good = linux(mem(0x5000_0000, GIB));
    let l = layout(&platform, None);
    let run = |vm: &VmConfig, l: &GuestLayout| generate(VIRT_V3_4CPU, &platform, vm, &[], l);

    let mut console_on_device = l.clone();
    console_on_device.console.base = 0x0a00_3000;
    assert!(matches!(
        run(&good, &console_on_device),
        Err(GuestDtError::Overlap { .. })
    ));
    let mut console_in_memory = l.clone();
    console_in_memory.console.base = 0x5000_0000;
    let err = run(&good, &console_in_memory).unwrap_err();
    assert!(err.to_string().contains("virtual console"), "{err}");
    let mut spi_taken = l.clone();
    spi_taken.console.spi = 47;
    assert!(matches!(
        run(&good, &spi_taken),
        Err(GuestDtError::ConsoleIrq { .. })
    ));
    let mut initrd_outside = l.clone();
    initrd_outside.initrd = Some(mem(0x4000_0000, MIB));
    assert!(matches!(
        run(&good, &initrd_outside),
        Err(GuestDtError::InitrdOutsideMemory { .. })
    ));
    let nine = VmConfig {
        cpus: (0..9).collect(),
        ..good.clone()
    };
    let v2 = GuestLayout {
        gic: VirtualGic::V2 {
            gicd: mem(0x0800_0000, 0x1_0000),
            gicc: mem(0x0801_0000, 0x1_0000),
        },
        ..l.clone()
    };
    assert!(matches!(
        run(&nine, &v2),
        Err(GuestDtError::VcpuCount { .. })
    ));
    let none = VmConfig {
        cpus: vec![],
        ..good.clone()
    };
    assert!(matches!(
        run(&none, &l),
        Err(GuestDtError::VcpuCount { .. })
    ));
    let bad_args = VmConfig {
        bootargs: Some("a\0b".to_owned()),
        ..good
    };
    let err = run(&bad_args, &l).unwrap_err();
    assert!(
        err.to_string().contains("/chosen: property \"bootargs\""),
        "{err}"
    );
}

#[test]
fn user_dtb_checks() {
    let platform = parse(VIRT_V3_4CPU);
    let case = &cases()[0];
    let l = layout(&platform, case.initrd);
    let dtb = generate_case(case);
    assert_eq!(check_user_dtb(&dtb, &case.vm, &[shmem()], &l), Ok(()));

    let mut root = Node::from_dtb(&dtb);
    root.children.push(
        Node::new("memory@40000000")
            .prop("device_type", strs(&["memory"]))
            .prop("reg", cells(&[0, 0x4000_0000, 0, 0x1000_0000])),
    );
    root.at("/virtio_mmio@a003e00")
        .set("reg", cells(&[0, 0x0a00_3c00, 0, 0x200]));
    let errors = check_user_dtb(&build(&root, &[], false), &case.vm, &[shmem()], &l).unwrap_err();
    assert_eq!(
        errors,
        [
            GuestDtError::UserUnassignedMmio {
                node: "/virtio_mmio@a003e00".to_owned(),
                range: mem(0x0a00_3c00, 0x200)
            },
            GuestDtError::UserMemoryOutsideVm {
                node: "/memory@40000000".to_owned(),
                range: mem(0x4000_0000, 0x1000_0000)
            },
        ]
    );
    // The host's own tree names plenty the VM does not own.
    let errors = check_user_dtb(VIRT_V3_4CPU, &case.vm, &[shmem()], &l).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("/memory@40000000")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("/pl061@9030000")),
        "{text:#?}"
    );
    assert!(text
        .iter()
        .any(|t| t.contains("/interrupt-controller@8000000") || t.contains("/intc@8000000")));
    // Garbage is refused with the parser's reason.
    let err = check_user_dtb(b"not a dtb", &case.vm, &[], &l).unwrap_err();
    assert!(matches!(err[..], [GuestDtError::Unreadable { .. }]));
}

/// A random VM on the v3 (or v2) virt fixture.
#[derive(Debug, Clone)]
struct RandomVm {
    v2: bool,
    vm: VmConfig,
    shmem: Vec<ShmemConfig>,
    initrd: Option<MemRange>,
}

fn arb_vm() -> impl Strategy<Value = RandomVm> {
    (
        any::<bool>(),
        // Up to 4 banks: (gap, size) in 2 MiB units; host RAM is 1 GiB at 0x40000000 on v2.
        prop::collection::vec((0u64..64, 1u64..64), 1..=4),
        1usize..=4,
        prop::collection::btree_set(0u64..32, 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v2, banks, ncpu, devices, ramdisk, with_shmem)| {
            let mut at = 0x4000_0000u64;
            let mut memory = Vec::new();
            for (gap, size) in banks {
                at += gap * 2 * MIB;
                memory.push(mem(at, size * 2 * MIB));
                at += size * 2 * MIB;
            }
            let shmem = with_shmem.then(|| ShmemConfig {
                node: "/hypervisor/shmem@0".to_owned(),
                memory: mem(at + 2 * MIB, 2 * MIB),
                vms: vec![1, 0],
                doorbells: vec![100, 101],
            });
            let initrd = ramdisk.then(|| mem(memory[0].base, MIB));
            RandomVm {
                v2,
                vm: VmConfig {
                    devices: devices.into_iter().map(virtio).collect(),
                    ..vm(0, "random", (0..ncpu).collect(), memory)
                },
                shmem: shmem.into_iter().collect(),
                initrd,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_vms(r in arb_vm()) {
        let host = if r.v2 { VIRT_V2_4CPU } else { VIRT_V3_4CPU };
        let platform = parse(host);
        let l = GuestLayout { initrd: r.initrd, ..GuestLayout::like_host(&platform, CONSOLE_BASE, CONSOLE_SPI) };
        let dtb = generate(host, &platform, &r.vm, &r.shmem, &l).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let guest = parse(&dtb);
        prop_assert_eq!(&guest.memory, &r.vm.memory);
        let mpidrs: Vec<u64> = guest.cpus.iter().map(|c| c.mpidr).collect();
        prop_assert_eq!(mpidrs, (0..r.vm.cpus.len() as u64).collect::<Vec<_>>());
        prop_assert_eq!(guest.gic.version(), if r.v2 { 2 } else { 3 });
        // Every node with registers is the VM's: memory, GIC, console, shmem or an assigned
        // device, and every assigned device is there.
        let mut seen = Vec::new();
        for (path, node) in nodes(&dtb) {
            if prop(&node, "reg").is_none() || path.starts_with("/cpus/") {
                continue;
            }
            let expected = path.starts_with("/memory@")
                || path.starts_with("/interrupt-controller@")
                || path == "/pl011@9000000"
                || path.starts_with("/reserved-memory/shmem@");
            if !expected {
                prop_assert!(r.vm.devices.iter().any(|d| d.node == path), "unexpected {}", path);
                seen.push(path);
            }
        }
        prop_assert_eq!(seen.len(), r.vm.devices.len());
        prop_assert_eq!(check_user_dtb(&dtb, &r.vm, &r.shmem, &l), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Damaged blobs give errors, never panics, whether user or host supplied.
    #[test]
    fn damaged_blobs_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let case = &cases()[0];
        let platform = parse(case.host);
        let l = layout(&platform, case.initrd);
        for mut blob in [generate_case(case), case.host.to_vec()] {
            for (i, v) in &edits {
                let at = i.index(blob.len());
                blob[at] = *v;
            }
            blob.truncate(cut.index(blob.len()).max(blob.len() - 64));
            let _ = check_user_dtb(&blob, &case.vm, &[shmem()], &l);
            let _ = generate(&blob, &platform, &case.vm, &[shmem()], &l);
        }
    }
}

#[test]
fn vsock_device_and_service_ring_nodes() {
    let platform = parse(VIRT_V3_4CPU);
    let vm = vm(0, "linux", vec![0], vec![mem(0x5000_0000, GIB)]);
    let driver = GuestLayout {
        virtio: vec![EmulatedVirtio {
            base: 0x0b00_0000,
            spi: 48,
        }],
        ..layout(&platform, None)
    };
    let dtb = generate(VIRT_V3_4CPU, &platform, &vm, &[], &driver).unwrap();
    let all = nodes(&dtb);
    let (_, dev) = all
        .iter()
        .find(|(p, _)| p == "/virtio_mmio@b000000")
        .expect("the vsock device's node");
    assert_eq!(
        prop(dev, "reg").map(u32s),
        Some(vec![0, 0x0b00_0000, 0, 0x200])
    );
    assert_eq!(prop(dev, "interrupts").map(u32s), Some(vec![0, 48, 4]));
    assert!(prop(dev, "dma-coherent").is_some());
    assert!(!all.iter().any(|(p, _)| p.contains("vsock@")));

    let service = GuestLayout {
        service_ring: Some(ServiceRing {
            memory: mem(0x9410_0000, 0x1_0000),
            doorbell: 102,
        }),
        ..layout(&platform, None)
    };
    let dtb = generate(VIRT_V3_4CPU, &platform, &vm, &[], &service).unwrap();
    let all = nodes(&dtb);
    let (_, ring) = all
        .iter()
        .find(|(p, _)| p == "/reserved-memory/vsock@94100000")
        .expect("the service ring's node");
    assert_eq!(prop(ring, "tandem,doorbell").map(u32s), Some(vec![102]));
    assert_eq!(
        prop(ring, "reg").map(u32s),
        Some(vec![0, 0x9410_0000, 0, 0x1_0000])
    );
    assert!(prop(ring, "no-map").is_some());
    assert!(!all.iter().any(|(p, _)| p.contains("virtio_mmio@b")));
    parse(&dtb);
}
