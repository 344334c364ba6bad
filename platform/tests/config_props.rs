//! Property tests of `config::check`: random valid configs, built as device trees on QEMU
//! virt (8 CPUs, 6 GiB), are accepted and read back to exactly what was put in; random
//! mutations of them never panic.

mod common;

use common::*;
use platform::config::{self, *};
use platform::*;
use proptest::prelude::*;
use proptest::sample::Index;

const HYP: MemRange = MemRange {
    base: 0x4020_0000,
    size: 8 << 20,
};
const PAGE: u64 = 0x1000;
/// Modules go in 1 MiB slots here, below every VM's memory.
const MODULE_AREA: u64 = 0x4100_0000;
const MODULE_SLOTS: usize = 240;
/// VM memory and shared memory are laid out upwards from here (RAM ends at 0x1_c000_0000).
const VM_AREA: u64 = 0x5000_0000;
const VIRTIO_BASE: u64 = 0xa00_0000;
const VIRTIO_COUNT: usize = 32;
const CPUS: usize = 8;

/// What the generator decided for one VM.
#[derive(Debug, Clone)]
struct VmPlan {
    label_suffix: String,
    /// How many of the shuffled CPUs it takes.
    cpu_count: usize,
    /// Sizes of its memory ranges, in pages.
    ranges: Vec<u64>,
    /// Which of the 4 pages of virtio-mmio devices it may take devices from, and a mask.
    device_page: Option<usize>,
    device_mask: u8,
    ramdisk: bool,
    device_tree: bool,
    raw_kernel: bool,
    module_sizes: [u64; 3],
    bootargs: Option<String>,
    restart: bool,
    isolated: bool,
}

#[derive(Debug, Clone)]
struct Plan {
    vms: Vec<VmPlan>,
    cpu_order: Vec<usize>,
    /// Gap before each memory segment, in pages.
    gaps: Vec<u64>,
    /// A permutation of memory segments (VM ranges, then shmem).
    segment_order: Vec<usize>,
    /// Shared memory: size in pages, member picks, with doorbells.
    shmem: Vec<(u64, Vec<Index>, bool)>,
    module_slots: Vec<usize>,
}

fn vm_plan() -> impl Strategy<Value = VmPlan> {
    (
        "[a-z0-9_-]{0,12}",
        1..=2usize,
        prop::collection::vec(1..=0x1_0000u64, 1..=3),
        prop::option::of(0..4usize),
        any::<u8>(),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        [1..=0x10_0000u64, 1..=0x10_0000u64, 1..=0x10_0000u64],
        prop::option::of("[ -~]{0,40}"),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                label_suffix,
                cpu_count,
                ranges,
                device_page,
                device_mask,
                (ramdisk, device_tree, raw_kernel),
                module_sizes,
                bootargs,
                (restart, isolated),
            )| VmPlan {
                label_suffix,
                cpu_count,
                ranges,
                device_page,
                device_mask,
                ramdisk,
                device_tree,
                raw_kernel,
                module_sizes,
                bootargs,
                restart,
                isolated,
            },
        )
}

fn plan() -> impl Strategy<Value = Plan> {
    prop::collection::vec(vm_plan(), 1..=4).prop_flat_map(|vms| {
        let segments: usize = vms.iter().map(|v| v.ranges.len()).sum::<usize>() + 2;
        (
            Just(vms),
            Just((0..CPUS).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(0..=0x4000u64, segments),
            Just((0..segments).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(
                (
                    1..=0x100u64,
                    prop::collection::vec(any::<Index>(), 2..=3),
                    any::<bool>(),
                ),
                0..=2,
            ),
            Just((0..MODULE_SLOTS).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(
                |(vms, cpu_order, gaps, segment_order, shmem, module_slots)| Plan {
                    vms,
                    cpu_order,
                    gaps,
                    segment_order,
                    shmem,
                    module_slots,
                },
            )
    })
}

fn phandle(node: &Node) -> u32 {
    let (_, v) = node.props.iter().find(|(n, _)| n == "phandle").unwrap();
    u32::from_be_bytes(v[..4].try_into().unwrap())
}

fn reg(r: MemRange) -> Vec<u32> {
    vec![
        (r.base >> 32) as u32,
        r.base as u32,
        (r.size >> 32) as u32,
        r.size as u32,
    ]
}

/// Builds the tree and the config `check` must read back from it.
fn realise(plan: &Plan) -> (Vec<u8>, HypervisorConfig) {
    let (mut tree, reserve) = edit(VIRT_V3_8CPU);
    let cpu_phandles: Vec<u32> = (0..CPUS)
        .map(|i| phandle(tree.at(&format!("/cpus/cpu@{i}"))))
        .collect();
    for i in 0..VIRTIO_COUNT {
        let node = tree.at(&format!(
            "/virtio_mmio@{:x}",
            VIRTIO_BASE + 0x200 * i as u64
        ));
        node.set("phandle", cells(&[0x1000 + i as u32]));
    }

    // Memory segments, laid out upwards with random gaps, then handed out in random order.
    let mut segments = Vec::new();
    let mut at = VM_AREA;
    let mut sizes: Vec<u64> = plan.vms.iter().flat_map(|v| v.ranges.clone()).collect();
    sizes.extend(plan.shmem.iter().map(|s| s.0));
    sizes.resize(plan.gaps.len(), 1);
    for (size, gap) in sizes.iter().zip(&plan.gaps) {
        at += gap * PAGE;
        segments.push(MemRange {
            base: at,
            size: size * PAGE,
        });
        at += size * PAGE;
    }
    let mut segments = plan.segment_order.iter().map(|&i| segments[i]);

    // CPUs: consecutive runs of the shuffled order, while they last.
    let mut cpus_left = plan.cpu_order.iter().copied();
    let mut slots = plan.module_slots.iter().copied();
    let mut taken_pages: Vec<usize> = Vec::new();

    let mut hyp = Node::new("hypervisor")
        .prop("compatible", strs(&["tandem,hypervisor"]))
        .prop("#address-cells", cells(&[2]))
        .prop("#size-cells", cells(&[2]));
    let mut vms = Vec::new();
    for (n, v) in plan.vms.iter().enumerate() {
        let label: String = format!("{n}{}", v.label_suffix).chars().take(15).collect();
        let cpus: Vec<usize> = cpus_left.by_ref().take(v.cpu_count).collect();
        if cpus.is_empty() {
            break;
        }
        let mut memory: Vec<MemRange> = segments.by_ref().take(v.ranges.len()).collect();
        let mut node = Node::new(&format!("vm@{n:x}"))
            .prop("compatible", strs(&["tandem,vm"]))
            .prop("label", strs(&[&label]))
            .prop("phandle", cells(&[0x2000 + n as u32]))
            .prop(
                "cpus",
                cells(&cpus.iter().map(|&c| cpu_phandles[c]).collect::<Vec<_>>()),
            )
            .prop(
                "memory",
                cells(&memory.iter().flat_map(|&r| reg(r)).collect::<Vec<_>>()),
            )
            .prop("#address-cells", cells(&[2]))
            .prop("#size-cells", cells(&[2]));
        memory.sort_by_key(|r| r.base);

        let mut devices = Vec::new();
        if let Some(page) = v.device_page.filter(|p| !taken_pages.contains(p)) {
            taken_pages.push(page);
            for bit in 0..8 {
                if v.device_mask & (1 << bit) != 0 {
                    let i = page * 8 + bit;
                    devices.push(Device {
                        node: format!("/virtio_mmio@{:x}", VIRTIO_BASE + 0x200 * i as u64),
                        phandle: 0x1000 + i as u32,
                        regs: vec![MemRange {
                            base: VIRTIO_BASE + 0x200 * i as u64,
                            size: 0x200,
                        }],
                        interrupts: vec![Irq {
                            kind: IrqKind::Spi,
                            number: 16 + i as u32,
                            flags: 1,
                        }],
                        streams: Vec::new(),
                    });
                }
            }
        }
        if !devices.is_empty() {
            node.set(
                "devices",
                cells(&devices.iter().map(|d| d.phandle).collect::<Vec<_>>()),
            );
        }
        if let Some(args) = &v.bootargs {
            node.set("bootargs", strs(&[args]));
        }
        if v.restart {
            node.set("tandem,on-crash", strs(&["restart"]));
        }
        if v.isolated {
            node.set("tandem,isolated", Vec::new());
        }

        let mut modules = Vec::new();
        let kinds = [
            (ModuleKind::Kernel, "kernel", "multiboot,kernel", true),
            (
                ModuleKind::Ramdisk,
                "ramdisk",
                "multiboot,ramdisk",
                v.ramdisk,
            ),
            (
                ModuleKind::DeviceTree,
                "device-tree",
                "multiboot,device-tree",
                v.device_tree,
            ),
        ];
        for (k, &(kind, name, compatible, wanted)) in kinds.iter().enumerate() {
            if !wanted {
                continue;
            }
            let range = MemRange {
                base: MODULE_AREA + slots.next().unwrap() as u64 * (1 << 20),
                size: v.module_sizes[k],
            };
            let path = format!("/hypervisor/vm@{n:x}/{name}@{:x}", range.base);
            let mut child = Node::new(path.rsplit('/').next().unwrap())
                .prop("compatible", strs(&[compatible, "multiboot,module"]))
                .prop("reg", cells(&reg(range)));
            let raw = kind == ModuleKind::Kernel && v.raw_kernel && memory[0].size >= range.size;
            let load_address = raw.then_some(memory[0].base);
            if let Some(at) = load_address {
                child.set("tandem,format", strs(&["raw"]));
                child.set(
                    "tandem,load-address",
                    cells(&[(at >> 32) as u32, at as u32]),
                );
            }
            node.children.push(child);
            modules.push(Module {
                node: path,
                kind,
                range,
                raw,
                load_address,
            });
        }
        hyp.children.push(node);
        vms.push(VmConfig {
            node: format!("/hypervisor/vm@{n:x}"),
            index: n,
            label,
            cpus,
            memory,
            devices,
            bootargs: v.bootargs.clone(),
            on_crash: if v.restart {
                OnCrash::Restart
            } else {
                OnCrash::Stop
            },
            isolated: v.isolated,
            modules,
        });
    }

    let mut shmem = Vec::new();
    if vms.len() >= 2 {
        for (s, (_, picks, with_doorbells)) in plan.shmem.iter().enumerate() {
            let mut members: Vec<usize> = Vec::new();
            for p in picks {
                let vm = p.index(vms.len());
                if !members.contains(&vm) {
                    members.push(vm);
                }
            }
            if members.len() < 2 {
                continue;
            }
            let memory = segments.next().unwrap();
            let doorbells: Vec<u32> = if *with_doorbells {
                (0..members.len() as u32)
                    .map(|i| 500 + 10 * s as u32 + i)
                    .collect()
            } else {
                Vec::new()
            };
            let mut node = Node::new(&format!("shmem@{s:x}"))
                .prop("compatible", strs(&["tandem,shmem"]))
                .prop("memory", cells(&reg(memory)))
                .prop(
                    "vms",
                    cells(
                        &members
                            .iter()
                            .map(|&m| 0x2000 + m as u32)
                            .collect::<Vec<_>>(),
                    ),
                );
            if !doorbells.is_empty() {
                node.set("doorbells", cells(&doorbells));
            }
            hyp.children.push(node);
            shmem.push(ShmemConfig {
                node: format!("/hypervisor/shmem@{s:x}"),
                memory,
                vms: members,
                doorbells,
            });
        }
    }
    tree.children.push(hyp);
    (
        build(&tree, &reserve, false),
        HypervisorConfig {
            vms,
            shmem,
            vsock: Vec::new(),
            unclean_memory: Vec::new(),
            attestation: None,
        },
    )
}

/// One random edit of the tree under `/hypervisor` (or, rarely, elsewhere).
#[derive(Debug, Clone)]
enum Mutation {
    SetProperty {
        node: Index,
        name: Index,
        value: Vec<u8>,
    },
    DeleteProperty {
        node: Index,
        name: Index,
    },
    DeleteNode {
        node: Index,
    },
    FlipByte {
        at: Index,
        bit: u8,
    },
}

const NAMES: [&str; 22] = [
    "compatible",
    "label",
    "cpus",
    "memory",
    "devices",
    "bootargs",
    "tandem,on-crash",
    "tandem,isolated",
    "#address-cells",
    "#size-cells",
    "reg",
    "tandem,format",
    "tandem,load-address",
    "vms",
    "doorbells",
    "phandle",
    "interrupts",
    "interrupt-parent",
    "interrupts-extended",
    "status",
    "ranges",
    "iommus",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(any::<u32>(), 0..6)
            .prop_map(|w| w.iter().flat_map(|x| x.to_be_bytes()).collect()),
        prop::collection::vec(0..0x40u32, 0..6)
            .prop_map(|w| w.iter().flat_map(|x| x.to_be_bytes()).collect()),
    ];
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), value)
            .prop_map(|(node, name, value)| Mutation::SetProperty { node, name, value }),
        2 => (any::<Index>(), any::<Index>())
            .prop_map(|(node, name)| Mutation::DeleteProperty { node, name }),
        1 => any::<Index>().prop_map(|node| Mutation::DeleteNode { node }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
    ]
}

/// Paths of every node of `root`, depth first.
fn paths(node: &Node, base: &str, out: &mut Vec<String>) {
    for child in &node.children {
        let path = format!("{base}/{}", child.name);
        out.push(path.clone());
        paths(child, &path, out);
    }
}

fn mutate(blob: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let (mut tree, reserve) = edit(blob);
    let mut flips = Vec::new();
    for m in mutations {
        let mut all = Vec::new();
        paths(&tree, "", &mut all);
        // Nine times in ten, a node of the config.
        let targets: Vec<&String> = all
            .iter()
            .filter(|p| p.starts_with("/hypervisor"))
            .collect();
        let pick = |i: &Index| {
            if i.index(10) == 0 || targets.is_empty() {
                i.get(&all).clone()
            } else {
                (*i.get(&targets)).clone()
            }
        };
        match m {
            Mutation::SetProperty { node, name, value } => {
                let path = pick(node);
                tree.at(&path)
                    .set(NAMES[name.index(NAMES.len())], value.clone());
            }
            Mutation::DeleteProperty { node, name } => {
                let path = pick(node);
                tree.at(&path).unset(NAMES[name.index(NAMES.len())]);
            }
            Mutation::DeleteNode { node } => {
                let path = pick(node);
                if path != "/hypervisor" {
                    tree.remove(&path);
                }
            }
            Mutation::FlipByte { at, bit } => flips.push((*at, *bit)),
        }
    }
    let mut out = build(&tree, &reserve, false);
    for (at, bit) in flips {
        let i = at.index(out.len());
        out[i] ^= 1 << (bit % 8);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn valid_configs_read_back_exactly(plan in plan()) {
        let (blob, expected) = realise(&plan);
        let platform = Platform::parse(&blob).unwrap();
        let report = config::check(&blob, &platform, &[HYP]);
        prop_assert!(report.errors.is_empty(), "{:#?}", report.errors);
        // The only warning a valid generated config can draw: virtio DMA near an isolated VM.
        for w in &report.warnings {
            prop_assert_eq!(w.property.as_deref(), Some("tandem,isolated"), "{}", w);
        }
        prop_assert_eq!(report.config, Some(expected));
    }

    #[test]
    fn mutated_configs_never_panic(plan in plan(), mutations in prop::collection::vec(mutation(), 1..4)) {
        let (blob, _) = realise(&plan);
        let blob = mutate(&blob, &mutations);
        if let Ok(platform) = Platform::parse(&blob) {
            let report = config::check(&blob, &platform, &[HYP]);
            prop_assert!(report.config.is_none() || report.errors.is_empty());
            for e in report.errors.iter().chain(&report.warnings) {
                prop_assert!(!e.node.is_empty() && !e.problem.is_empty() && !e.fix.is_empty(), "{:?}", e);
            }
        }
    }
}
