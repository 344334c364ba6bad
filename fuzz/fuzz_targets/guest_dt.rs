//! Fuzzes the guest device-tree generator and the user-DTB check over real boards.
//!
//! The first bytes pick a fixture board and describe up to three VMs (CPUs, RAM banks,
//! devices, bootargs, modules) and the shared memory between them; they become a
//! `/hypervisor` node added to the board's tree, which `config::check` reads. For every VM
//! of a config it accepts, `guest_dt::generate` runs with the layout the hypervisor uses (or,
//! now and then, an arbitrary one). Then:
//! - with the hypervisor's layout, generation fails only for a reason the config check does
//!   not look at (an assigned device whose dependencies cannot be copied);
//! - every error names a real conflict of its inputs;
//! - a generated DTB reads back with `Platform::parse` as exactly the VM: its vCPUs (MPIDR
//!   0..n, PSCI), memory, bootargs, GIC, timer, console and shared memory; it is generated
//!   again byte for byte, and `check_user_dtb` accepts it for the same VM;
//! - the same DTB with one more node accepts or refuses exactly as that node's `reg` lies
//!   inside what the VM owns;
//! - damaged copies of it, and the rest of the input as a user DTB, never make either
//!   function panic.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use platform::config::{self, ShmemConfig, VmConfig};
use platform::guest_dt::{
    self, check_user_dtb, GuestDtError, GuestLayout, VirtualConsole, VirtualGic, CONSOLE_SIZE,
    CONSOLE_SPI, GICR_FRAME_PAIR,
};
use platform::{
    Conduit, EnableMethod, Gic, Irq, IrqKind, MemRange, Platform, Psci, PsciCompat, UartKind,
};

const MIB: u64 = 1 << 20;
/// See [`hypervisor_memory`].
const HYP_OFFSET: u64 = 2 * MIB;
const HYP_SIZE: u64 = 8 * MIB;

const BOARDS: [&[u8]; 6] = [
    include_bytes!("../../platform/fixtures/virt-gicv2-4cpu-1g.dtb"),
    include_bytes!("../../platform/fixtures/virt-gicv3-4cpu-2g.dtb"),
    include_bytes!("../../platform/fixtures/virt-gicv3-8cpu-6g.dtb"),
    include_bytes!("../../platform/fixtures/virt-gicv3-4cpu-numa.dtb"),
    include_bytes!("../../platform/fixtures/bcm2711-rpi-4-b-960m.dtb"),
    include_bytes!("../../platform/fixtures/virt-gicv2-1cpu-512m.dtb"),
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

/// True once in `n` times; false when the input has run out, so that the rare choice is
/// never the default (`Unstructured::ratio` is true then).
fn one_in(u: &mut Unstructured, n: u8) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? == n)
}

// ---------------------------------------------------------------------------------------
// A small editable device tree: read with the `fdt` crate, written back by hand.

#[derive(Clone, Debug)]
struct Node {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Node>,
}

impl Node {
    fn new(name: &str) -> Self {
        Node {
            name: name.to_owned(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    fn prop(mut self, name: &str, value: Vec<u8>) -> Self {
        self.set(name, value);
        self
    }

    fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value,
            None => self.props.push((name.to_owned(), value)),
        }
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Reads a well-formed blob (the fixtures, the generator's output).
    fn from_dtb(blob: &[u8]) -> Option<Node> {
        fn copy(n: fdt::node::FdtNode<'_, '_>) -> Node {
            Node {
                name: n.name.to_owned(),
                props: n
                    .properties()
                    .map(|p| (p.name.to_owned(), p.value.to_vec()))
                    .collect(),
                children: n.children().map(copy).collect(),
            }
        }
        let fdt = fdt::Fdt::new(blob).ok()?;
        let mut root = copy(fdt.find_node("/")?);
        root.name = String::new();
        Some(root)
    }

    /// Every node, depth first, with its path.
    fn walk<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Node)>) {
        out.push((path.to_owned(), self));
        for c in &self.children {
            let p = if path == "/" {
                format!("/{}", c.name)
            } else {
                format!("{path}/{}", c.name)
            };
            c.walk(&p, out);
        }
    }

    fn walk_mut(&mut self, path: &str, f: &mut impl FnMut(&str, &mut Node)) {
        f(path, self);
        for c in &mut self.children {
            let p = if path == "/" {
                format!("/{}", c.name)
            } else {
                format!("{path}/{}", c.name)
            };
            c.walk_mut(&p, f);
        }
    }
}

fn cells(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn strs(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|s| s.bytes().chain([0])).collect()
}

/// `<address size>` pairs in 2 + 2 cells.
fn ranges(list: &[MemRange]) -> Vec<u8> {
    list.iter()
        .flat_map(|r| [r.base, r.size])
        .flat_map(u64::to_be_bytes)
        .collect()
}

fn be32(v: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?))
}

/// The memory reservation map of a well-formed blob.
fn memreserve(blob: &[u8]) -> Vec<(u64, u64)> {
    let word = |at: usize| {
        blob.get(at..at + 8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
    };
    let mut at = be32(blob, 16).unwrap_or(0) as usize;
    let mut out = Vec::new();
    while at != 0 && at + 16 <= blob.len() {
        let entry = (word(at), word(at + 8));
        if entry == (0, 0) {
            break;
        }
        out.push(entry);
        at += 16;
    }
    out
}

/// Serialises a tree (version 17).
fn build(root: &Node, reserve: &[(u64, u64)]) -> Vec<u8> {
    fn push(out: &mut Vec<u8>, w: u32) {
        out.extend_from_slice(&w.to_be_bytes());
    }
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    /// The offset of `name` in the strings block, added on first use.
    fn string(strings: &mut Strings, name: &str) -> u32 {
        if let Some(&at) = strings.0.get(name) {
            return at;
        }
        let at = strings.1.len() as u32;
        strings.1.extend_from_slice(name.as_bytes());
        strings.1.push(0);
        strings.0.insert(name.to_owned(), at);
        at
    }
    type Strings = (HashMap<String, u32>, Vec<u8>);
    fn node(n: &Node, s: &mut Vec<u8>, strings: &mut Strings) {
        push(s, 1);
        s.extend_from_slice(n.name.as_bytes());
        s.push(0);
        pad(s);
        for (name, value) in &n.props {
            let at = string(strings, name);
            push(s, 3);
            push(s, value.len() as u32);
            push(s, at);
            s.extend_from_slice(value);
            pad(s);
        }
        for c in &n.children {
            node(c, s, strings);
        }
        push(s, 2);
    }
    let (mut strings, mut structs) = ((HashMap::new(), Vec::new()), Vec::new());
    node(root, &mut structs, &mut strings);
    let strings = strings.1;
    push(&mut structs, 9);
    let mut rsv = Vec::new();
    for &(a, s) in reserve.iter().chain(&[(0, 0)]) {
        rsv.extend_from_slice(&a.to_be_bytes());
        rsv.extend_from_slice(&s.to_be_bytes());
    }
    let off_struct = 40 + rsv.len();
    let off_strings = off_struct + structs.len();
    let total = off_strings + strings.len();
    let mut out = Vec::new();
    for w in [
        0xd00d_feed,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        40,
        17,
        16,
        0,
        strings.len() as u32,
        structs.len() as u32,
    ] {
        push(&mut out, w);
    }
    out.extend_from_slice(&rsv);
    out.extend_from_slice(&structs);
    out.extend_from_slice(&strings);
    out
}

// ---------------------------------------------------------------------------------------
// The boards, prepared once: every CPU and every node with `reg` gets a phandle, so that a
// config can name it.

struct Board {
    root: Node,
    reserve: Vec<(u64, u64)>,
    platform: Platform,
    /// The phandle of each of `platform.cpus`.
    cpus: Vec<u32>,
    /// Every node with `reg` but the CPUs: path and phandle.
    devices: Vec<(String, u32)>,
    /// Those a VM may be given (alone): `config::check` takes them.
    good_devices: Vec<(String, u32)>,
    /// The first phandle no node has.
    free_phandle: u32,
}

fn boards() -> &'static [Board] {
    static BOARDS_READY: OnceLock<Vec<Board>> = OnceLock::new();
    BOARDS_READY.get_or_init(|| BOARDS.iter().map(|b| prepare(b)).collect())
}

fn prepare(blob: &[u8]) -> Board {
    let mut root = Node::from_dtb(blob).expect("fixtures are well formed");
    let platform = Platform::parse(blob).expect("fixtures parse");
    let mut all = Vec::new();
    root.walk("/", &mut all);
    let mut next = all
        .iter()
        .filter_map(|(_, n)| n.get("phandle").and_then(|v| be32(v, 0)))
        .max()
        .unwrap_or(0)
        + 1;
    let mut cpus = vec![0; platform.cpus.len()];
    let mut devices = Vec::new();
    root.walk_mut("/", &mut |path, node| {
        let cpu = platform.cpus.iter().position(|c| c.node == path);
        if cpu.is_none() && (node.get("reg").is_none() || path == "/") {
            return;
        }
        let phandle = match node.get("phandle").and_then(|v| be32(v, 0)) {
            Some(p) => p,
            None => {
                next += 1;
                node.set("phandle", cells(&[next - 1]));
                next - 1
            }
        };
        match cpu {
            Some(i) => cpus[i] = phandle,
            None => devices.push((path.to_owned(), phandle)),
        }
    });
    let reserve = memreserve(blob);
    let edited = build(&root, &reserve);
    let again = Platform::parse(&edited).expect("phandles keep the board readable");
    assert_eq!(again, platform, "phandles changed the board");
    let mut board = Board {
        root,
        reserve,
        platform,
        cpus,
        devices,
        good_devices: Vec::new(),
        free_phandle: next,
    };
    // Asks the config check about each device, given alone to a VM of one CPU.
    for (path, phandle) in board.devices.clone() {
        let bytes = [0u8; 64];
        let mut u = Unstructured::new(&bytes);
        let Ok(mut hypervisor) = hypervisor(&mut u, &board) else {
            continue;
        };
        hypervisor.children[0].set("devices", cells(&[phandle]));
        let mut root = board.root.clone();
        root.children.push(hypervisor);
        let blob = build(&root, &board.reserve);
        let hyp = hypervisor_memory(&board.platform);
        if config::check(&blob, &board.platform, &hyp).config.is_some() {
            board.good_devices.push((path, phandle));
        }
    }
    board
}

// ---------------------------------------------------------------------------------------
// The configuration, from the input.

/// Hands out RAM from the board's banks in order, around what must stay free.
struct Ram<'a> {
    banks: &'a [MemRange],
    avoid: Vec<MemRange>,
    bank: usize,
    at: u64,
}

impl Ram<'_> {
    /// `size` bytes `gap` bytes after the last range handed out, or the next place they fit.
    fn take(&mut self, gap: u64, size: u64) -> Option<MemRange> {
        self.at = self.at.checked_add(gap)?;
        loop {
            let bank = self.banks.get(self.bank)?;
            let end = bank.base.saturating_add(bank.size);
            self.at = self.at.max(bank.base);
            let r = MemRange {
                base: self.at,
                size,
            };
            if self.at.checked_add(size).is_none_or(|e| e > end) {
                self.bank += 1;
                continue;
            }
            if let Some(a) = self.avoid.iter().find(|a| a.overlaps(&r)) {
                // On to the next 2 MiB boundary past it.
                self.at = a.base.saturating_add(a.size).next_multiple_of(2 * MIB);
                continue;
            }
            self.at += size;
            return Some(r);
        }
    }
}

/// A VM label: mostly `vm<N>`, now and then any short string.
fn label(u: &mut Unstructured, i: usize) -> Result<String> {
    Ok(match u.int_in_range(0..=31u8)? {
        30 => {
            let len = u.int_in_range(0..=17)?;
            String::from_utf8_lossy(u.bytes(len)?).into_owned()
        }
        31 => "same".to_owned(),
        _ => format!("vm{i}"),
    })
}

/// An address-ish value for the rare ranges that ignore RAM.
fn wild_range(u: &mut Unstructured, platform: &Platform) -> Result<MemRange> {
    let near = platform.memory.first().map_or(0, |m| m.base);
    Ok(match u.int_in_range(0..=2u8)? {
        0 => MemRange {
            base: u.arbitrary()?,
            size: u.arbitrary()?,
        },
        1 => MemRange {
            base: u.int_in_range(0..=0x1_0000u64)? * 0x1000,
            size: u.int_in_range(1..=0x400u64)? * 0x1000,
        },
        _ => MemRange {
            base: near + u64::from(u.arbitrary::<u32>()?),
            size: u64::from(u.arbitrary::<u16>()?) << 8,
        },
    })
}

/// Where the hypervisor itself is, as `cargo xtask check-config` assumes: 8 MiB, 2 MiB into
/// the first RAM bank.
fn hypervisor_memory(p: &Platform) -> [MemRange; 1] {
    let first = p.memory.first().map_or(0, |m| m.base);
    [MemRange {
        base: first + HYP_OFFSET,
        size: HYP_SIZE,
    }]
}

/// Builds `/hypervisor` for `board` from the input.
fn hypervisor(u: &mut Unstructured, board: &Board) -> Result<Node> {
    let p = &board.platform;
    let [hyp] = hypervisor_memory(p);
    let mut avoid: Vec<MemRange> = p.reserved.iter().map(|r| r.range).collect();
    avoid.push(hyp);
    let mut ram = Ram {
        banks: &p.memory,
        avoid,
        bank: 0,
        at: hyp.base + hyp.size,
    };
    let vms = u.int_in_range(1..=board.cpus.len().clamp(1, 3))?;
    let vm_phandle = |i: usize| board.free_phandle + i as u32;
    let mut cpu_pool: Vec<u32> = board.cpus.clone();
    let mut out = Node::new("hypervisor")
        .prop("compatible", strs(&["tandem,hypervisor"]))
        .prop("#address-cells", cells(&[2]))
        .prop("#size-cells", cells(&[2]));
    for i in 0..vms {
        let mut vm = Node::new(&format!("vm@{i}"))
            .prop("compatible", strs(&["tandem,vm"]))
            .prop("label", strs(&[&label(u, i)?]))
            .prop("#address-cells", cells(&[2]))
            .prop("#size-cells", cells(&[2]))
            .prop("phandle", cells(&[vm_phandle(i)]));
        // CPUs: a few of those no other VM has, leaving one for each VM still to come; now
        // and then any phandle.
        let mut cpus = Vec::new();
        let spare = cpu_pool.len().saturating_sub(vms - i - 1);
        for _ in 0..u.int_in_range(1..=spare.max(1))? {
            if one_in(u, 64)? {
                cpus.push(u.arbitrary()?);
            } else if !cpu_pool.is_empty() {
                let at = u.choose_index(cpu_pool.len())?;
                cpus.push(cpu_pool.remove(at));
            }
        }
        vm.set("cpus", cells(&cpus));
        // Modules first, then the VM's RAM, so that neither lies in the other.
        let kernel = ram.take(0, u.int_in_range(1..=512u64)? * 0x1000);
        let ramdisk = if u.arbitrary()? {
            ram.take(2 * MIB, u.int_in_range(1..=256u64)? * 0x1000)
        } else {
            None
        };
        let mut memory = Vec::new();
        for _ in 0..u.int_in_range(1..=4u8)? {
            let r = if one_in(u, 64)? {
                Some(wild_range(u, p)?)
            } else {
                let gap = u.int_in_range(0..=3u64)? * 2 * MIB;
                let size = if one_in(u, 4)? {
                    u.int_in_range(1..=512u64)? * 0x1000
                } else {
                    u.int_in_range(1..=16u64)? * 2 * MIB
                };
                ram.take(gap.next_multiple_of(2 * MIB), size)
            };
            memory.extend(r);
            // Keep the next bank on a 2 MiB boundary.
            ram.at = ram.at.next_multiple_of(2 * MIB);
        }
        vm.set("memory", ranges(&memory));
        // Devices: mostly those a config may hold, now and then any node with `reg`.
        let mut devices = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            let from = if one_in(u, 16)? || board.good_devices.is_empty() {
                &board.devices
            } else {
                &board.good_devices
            };
            if !from.is_empty() {
                devices.push(u.choose(from)?.1);
            }
        }
        if !devices.is_empty() {
            vm.set("devices", cells(&devices));
        }
        match u.int_in_range(0..=3u8)? {
            0 => {}
            1 => {
                let len = u.int_in_range(0..=48)?;
                vm.set("bootargs", u.bytes(len)?.to_vec());
            }
            _ => vm.set(
                "bootargs",
                strs(&["console=ttyAMA0 earlycon root=/dev/vda"]),
            ),
        }
        if one_in(u, 4)? {
            vm.set("tandem,isolated", Vec::new());
        }
        if let Some(k) = kernel {
            vm.children.push(
                Node::new(&format!("kernel@{:x}", k.base))
                    .prop(
                        "compatible",
                        strs(&["multiboot,kernel", "multiboot,module"]),
                    )
                    .prop("reg", ranges(&[k])),
            );
        }
        if let Some(r) = ramdisk {
            vm.children.push(
                Node::new(&format!("ramdisk@{:x}", r.base))
                    .prop(
                        "compatible",
                        strs(&["multiboot,ramdisk", "multiboot,module"]),
                    )
                    .prop("reg", ranges(&[r])),
            );
        }
        out.children.push(vm);
    }
    let regions = if vms > 1 || one_in(u, 16)? {
        u.int_in_range(0..=2u8)?
    } else {
        0
    };
    for s in 0..regions {
        // Two VMs or more, now and then any.
        let mut members: Vec<usize> = (0..vms).filter(|_| u.arbitrary().unwrap_or(true)).collect();
        if members.len() < 2 && !one_in(u, 16)? {
            members = (0..vms).collect();
        }
        let memory = if one_in(u, 64)? {
            Some(wild_range(u, p)?)
        } else {
            let size = u.int_in_range(1..=512u64)? * 0x1000;
            ram.take(0, size)
        };
        let Some(memory) = memory else { continue };
        ram.at = ram.at.next_multiple_of(2 * MIB);
        let doorbells: Vec<u32> = members
            .iter()
            .map(|_| match u.int_in_range(0..=15u8) {
                Ok(14) => u.int_in_range(0..=1000u32).unwrap_or(0),
                Ok(15) => u.int_in_range(0..=3u32).unwrap_or(0),
                _ => u.int_in_range(40..=60u32).unwrap_or(40),
            })
            .collect();
        let handles: Vec<u32> = members.iter().map(|&i| vm_phandle(i)).collect();
        out.children.push(
            Node::new(&format!("shmem@{s}"))
                .prop("compatible", strs(&["tandem,shmem"]))
                .prop("memory", ranges(&[memory]))
                .prop("vms", cells(&handles))
                .prop("doorbells", cells(&doorbells)),
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The run.

fn run(u: &mut Unstructured) -> Result<()> {
    let board = &boards()[u.choose_index(BOARDS.len())?];
    let mut root = board.root.clone();
    root.children.push(hypervisor(u, board)?);
    let blob = build(&root, &board.reserve);
    // `prepare` made sure the board reads the same with its added phandles; /hypervisor is
    // no part of the board.
    let platform = &board.platform;
    let hyp = hypervisor_memory(platform);
    let report = config::check(&blob, platform, &hyp);
    let Some(cfg) = report.config else {
        assert!(!report.errors.is_empty(), "no config and no error");
        return arbitrary_user_dtb(u, platform);
    };
    let labels: Vec<String> = cfg.vms.iter().map(|v| v.label.clone()).collect();
    for vm in &cfg.vms {
        let realistic = u.ratio(7, 8)?;
        let layout = if realistic {
            hypervisor_layout(u, platform, vm, &labels)?
        } else {
            wild_layout(u, platform, vm)?
        };
        match guest_dt::generate(&blob, platform, vm, &cfg.shmem, &layout) {
            Ok(dtb) => {
                generated(&dtb, &blob, platform, vm, &cfg.shmem, &layout);
                user_checks(u, &dtb, vm, &cfg.shmem, &layout, platform)?;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                explained(&e, vm, &cfg.shmem, &layout, realistic);
            }
        }
    }
    Ok(())
}

/// The layout `hyp/src/vmm.rs` builds: the GIC where the host has it, the console at the
/// host console's page (or QEMU virt's when that is in the VM's memory) on SPI 1, and an
/// initrd at the top of the last bank when the VM has a ramdisk.
fn hypervisor_layout(
    u: &mut Unstructured,
    platform: &Platform,
    vm: &VmConfig,
    labels: &[String],
) -> Result<GuestLayout> {
    let candidate = platform
        .console
        .as_ref()
        .map_or(0x0900_0000, |c| c.base & !0xfff);
    let window = MemRange {
        base: candidate,
        size: CONSOLE_SIZE,
    };
    let console = if vm.memory.iter().any(|m| m.overlaps(&window)) {
        0x0900_0000
    } else {
        candidate
    };
    let mut layout = GuestLayout::like_host(platform, console, CONSOLE_SPI);
    layout.vm_labels = labels.to_vec();
    if vm.module(config::ModuleKind::Ramdisk).is_some() {
        if let Some(last) = vm.memory.last() {
            let size = u.int_in_range(1..=last.size)?;
            layout.initrd = Some(MemRange {
                base: last.base + (last.size - size),
                size,
            });
        }
    }
    Ok(layout)
}

/// Any layout: a GIC, console and initrd anywhere, either conduit.
fn wild_layout(u: &mut Unstructured, platform: &Platform, vm: &VmConfig) -> Result<GuestLayout> {
    let page = |u: &mut Unstructured| -> Result<u64> {
        Ok(if one_in(u, 8)? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=0x20_0000u64)? * 0x1000
        })
    };
    let gic = match u.int_in_range(0..=2u8)? {
        0 => VirtualGic::like_host(&platform.gic),
        1 => VirtualGic::V2 {
            gicd: MemRange {
                base: page(u)?,
                size: 0x1_0000,
            },
            gicc: MemRange {
                base: page(u)?,
                size: 0x1_0000,
            },
        },
        _ => VirtualGic::V3 {
            gicd: MemRange {
                base: page(u)?,
                size: 0x1_0000,
            },
            gicr_base: page(u)?,
        },
    };
    let initrd = if u.arbitrary()? {
        let bank = u.choose(&vm.memory)?;
        let base = bank.base + u.int_in_range(0..=bank.size)?;
        Some(MemRange {
            base,
            size: u.int_in_range(0..=bank.size)?,
        })
    } else {
        None
    };
    Ok(GuestLayout {
        gic,
        console: VirtualConsole {
            base: if one_in(u, 4)? {
                u.choose(&vm.memory)?.base
            } else {
                page(u)?
            },
            spi: if one_in(u, 2)? {
                u.int_in_range(0..=64u32)?
            } else {
                u.arbitrary()?
            },
        },
        initrd,
        psci: if u.arbitrary()? {
            Conduit::Hvc
        } else {
            Conduit::Smc
        },
        vm_labels: Vec::new(),
        // The vsock pieces (an emulated virtio-mmio node, a service ring) are covered by
        // platform's unit tests only so far: this target's invariants name every MMIO
        // window a VM may see, and would need them added first.
        virtio: Vec::new(),
        service_ring: None,
    })
}

/// The windows the VM owns, by kind: memory, `/reserved-memory` children, any MMIO.
fn owned(vm: &VmConfig, shmem: &[ShmemConfig], layout: &GuestLayout) -> [Vec<MemRange>; 3] {
    let shared: Vec<MemRange> = shmem
        .iter()
        .filter(|s| s.vms.contains(&vm.index))
        .map(|s| s.memory)
        .collect();
    let mut reserved = vm.memory.clone();
    reserved.extend(&shared);
    let mut mmio = reserved.clone();
    mmio.extend(vm.devices.iter().flat_map(|d| d.regs.iter().copied()));
    mmio.extend(layout.gic.regions(vm.cpus.len()).map(|(_, r)| r));
    mmio.push(layout.console.range());
    [vm.memory.clone(), reserved, mmio]
}

/// Whether `r` lies wholly inside one of `windows`.
fn inside(windows: &[MemRange], r: &MemRange) -> bool {
    let end = u128::from(r.base) + u128::from(r.size);
    windows
        .iter()
        .any(|w| w.base <= r.base && end <= u128::from(w.base) + u128::from(w.size))
}

/// A generated DTB says exactly what the VM has.
fn generated(
    dtb: &[u8],
    host_blob: &[u8],
    host: &Platform,
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
) {
    assert_eq!(platform::blob_size(dtb), Some(dtb.len()));
    let g = Platform::parse(dtb).unwrap_or_else(|e| panic!("generated DTB unreadable: {e}"));
    let n = vm.cpus.len();
    assert_eq!(g.memory, vm.memory, "memory");
    let mpidrs: Vec<u64> = g.cpus.iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, (0..n as u64).collect::<Vec<_>>(), "vCPUs");
    assert!(g.cpus.iter().all(|c| c.enable_method == EnableMethod::Psci));
    assert_eq!(g.bootargs, vm.bootargs, "bootargs");
    assert_eq!(g.model, format!("Tandem VM {}", vm.label));
    assert_eq!(
        g.psci,
        Some(Psci {
            conduit: layout.psci,
            version: PsciCompat::V1_0
        })
    );
    match (&g.gic, &layout.gic) {
        (
            Gic::V2 {
                gicd,
                gicc,
                gich: None,
                gicv: None,
                maintenance: None,
            },
            VirtualGic::V2 { gicd: d, gicc: c },
        ) => assert_eq!((gicd, gicc), (d, c)),
        (
            Gic::V3 {
                gicd,
                redistributors,
                maintenance: None,
                ..
            },
            VirtualGic::V3 { gicd: d, gicr_base },
        ) => {
            assert_eq!(gicd, d);
            let frames = MemRange {
                base: *gicr_base,
                size: GICR_FRAME_PAIR * n as u64,
            };
            assert_eq!(redistributors, &[frames]);
        }
        (g, l) => panic!("GIC {g:?} for layout {l:?}"),
    }
    let (timer, host_timer) = (g.timer.expect("timer"), host.timer.expect("host timer"));
    let ppis = |t: &platform::Timer| [t.secure_phys, t.phys, t.virt, t.hyp_phys].map(|i| i.number);
    assert_eq!(ppis(&timer), ppis(&host_timer));
    let mask = match layout.gic {
        VirtualGic::V2 { .. } => ((1 << n.min(8)) - 1) << 8,
        VirtualGic::V3 { .. } => 0,
    };
    assert_eq!(timer.virt.flags & 0xff00, mask);
    let console = g.console.as_ref().expect("console");
    assert_eq!(
        (console.kind, console.base, console.interrupt),
        (
            UartKind::Pl011,
            layout.console.base,
            Some(Irq {
                kind: IrqKind::Spi,
                number: layout.console.spi,
                flags: 4
            })
        )
    );
    let early = platform::early_console(dtb).expect("early console");
    assert_eq!((early.kind, early.base), (console.kind, console.base));
    let shared: Vec<(MemRange, String, bool)> = shmem
        .iter()
        .filter(|s| s.vms.contains(&vm.index))
        .map(|s| (s.memory, format!("shmem@{:x}", s.memory.base), true))
        .collect();
    let reserved: Vec<(MemRange, String, bool)> = g
        .reserved
        .iter()
        .map(|r| (r.range, r.name.clone(), r.no_map))
        .collect();
    assert_eq!(reserved, shared, "shared memory");
    // No /hypervisor in a guest's tree.
    let report = config::check(dtb, &g, &[]);
    assert_eq!(report, config::ConfigReport::default());
    // The same inputs give the same bytes, and the check accepts what the generator wrote.
    assert_eq!(
        guest_dt::generate(host_blob, host, vm, shmem, layout).as_deref(),
        Ok(dtb)
    );
    assert_eq!(check_user_dtb(dtb, vm, shmem, layout), Ok(()));
}

/// One node added to a generated DTB is accepted exactly when its `reg` lies inside what
/// the VM owns; damaged copies and arbitrary bytes never panic.
fn user_checks(
    u: &mut Unstructured,
    dtb: &[u8],
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
    host: &Platform,
) -> Result<()> {
    let mut root = Node::from_dtb(dtb).expect("generated DTBs are well formed");
    let [memory, reserved, mmio] = owned(vm, shmem, layout);
    let r = match u.int_in_range(0..=3u8)? {
        0 => wild_range(u, host)?,
        1 => {
            let w = u.choose(&mmio)?;
            let base = w.base.saturating_add(u.int_in_range(0..=w.size)?);
            MemRange {
                base,
                size: u.int_in_range(0..=w.size)?,
            }
        }
        _ => {
            let w = u.choose(&mmio)?;
            let base = w
                .base
                .wrapping_add(u.int_in_range(0..=0x2000u64)?.wrapping_sub(0x1000));
            MemRange {
                base,
                size: u.int_in_range(0..=w.size + 0x1000)?,
            }
        }
    };
    let disabled = one_in(u, 8)?;
    let kind = u.int_in_range(0..=2u8)?;
    let mut node = Node::new(&format!("extra@{:x}", r.base)).prop("reg", ranges(&[r]));
    if disabled {
        node.set("status", strs(&["disabled"]));
    }
    let allowed = match kind {
        0 => {
            node.set("device_type", strs(&["memory"]));
            root.children.push(node);
            &memory
        }
        1 if root.children.iter().any(|c| c.name == "reserved-memory") => {
            let parent = root
                .children
                .iter_mut()
                .find(|c| c.name == "reserved-memory")
                .expect("just found");
            parent.children.push(node);
            &reserved
        }
        _ => {
            node.set("compatible", strs(&["acme,widget"]));
            root.children.push(node);
            &mmio
        }
    };
    let fits = disabled || r.size == 0 || inside(allowed, &r);
    let edited = build(&root, &memreserve(dtb));
    let result = check_user_dtb(&edited, vm, shmem, layout);
    match (&result, fits) {
        (Ok(()), true) => {}
        (Err(errors), false) => {
            let named = errors.iter().all(|e| match e {
                GuestDtError::UserMemoryOutsideVm { node, range }
                | GuestDtError::UserUnassignedMmio { node, range } => {
                    node.ends_with(&format!("/extra@{:x}", r.base)) && *range == r
                }
                _ => false,
            });
            assert!(named && errors.len() == 1, "{r:?}: {errors:?}");
        }
        _ => panic!("check_user_dtb with {r:?} (kind {kind}): {result:?}, fits {fits}"),
    }

    // Damaged copies: a few bytes changed, maybe cut short.
    let mut damaged = dtb.to_vec();
    for _ in 0..u.int_in_range(1..=4u8)? {
        let at = u.choose_index(damaged.len())?;
        damaged[at] = u.arbitrary()?;
    }
    if one_in(u, 4)? {
        damaged.truncate(u.choose_index(damaged.len())?);
    }
    let _ = check_user_dtb(&damaged, vm, shmem, layout);
    if let Ok(p) = Platform::parse(&damaged) {
        let early = platform::early_console(&damaged);
        assert_eq!(
            p.console.map(|c| (c.kind, c.base)),
            early.map(|c| (c.kind, c.base))
        );
    }
    let _ = guest_dt::generate(&damaged, host, vm, shmem, layout);
    let rest = u.bytes(u.len())?;
    let _ = check_user_dtb(rest, vm, shmem, layout);
    Ok(())
}

/// Without a config to compare against, the rest of the input is a user DTB for a made-up
/// VM; the check may refuse it but must not panic.
fn arbitrary_user_dtb(u: &mut Unstructured, platform: &Platform) -> Result<()> {
    let vm = VmConfig {
        node: "/hypervisor/vm@0".to_owned(),
        index: 0,
        label: "vm0".to_owned(),
        cpus: vec![0],
        memory: platform.memory.clone(),
        devices: Vec::new(),
        bootargs: None,
        on_crash: config::OnCrash::Stop,
        isolated: false,
        modules: Vec::new(),
    };
    let layout = GuestLayout::like_host(platform, 0x0900_0000, CONSOLE_SPI);
    let _ = check_user_dtb(u.bytes(u.len())?, &vm, &[], &layout);
    Ok(())
}

/// An error names a real problem of the inputs; with the hypervisor's own layout, only the
/// problems `config::check` does not look for.
fn explained(
    e: &GuestDtError,
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
    realistic: bool,
) {
    match e {
        GuestDtError::Overlap {
            first,
            first_range,
            second,
            second_range,
            ..
        } => {
            assert!(
                first_range.overlaps(second_range) || first_range.end().is_none(),
                "{e}"
            );
            // Config ranges never overlap each other: one side is the GIC or the console.
            assert!(
                first.starts_with("virtual") || second.starts_with("virtual"),
                "{e}"
            );
            assert!(
                !realistic,
                "check-config let the console or GIC meet the VM's: {e}"
            );
        }
        GuestDtError::ConsoleIrq { spi, .. } => {
            assert_eq!(*spi, layout.console.spi);
            let device = vm.devices.iter().any(|d| {
                d.interrupts
                    .iter()
                    .any(|i| i.kind == IrqKind::Spi && i.number == *spi)
            });
            let doorbell = shmem.iter().any(|s| {
                s.vms
                    .iter()
                    .position(|&v| v == vm.index)
                    .is_some_and(|at| s.doorbells.get(at) == Some(spi))
            });
            assert!(*spi >= 988 || device || doorbell, "{e}");
            assert!(
                !realistic,
                "check-config let the console's SPI be taken: {e}"
            );
        }
        GuestDtError::InitrdOutsideMemory { range, .. } => {
            assert!(!realistic, "{e}");
            assert!(!inside(&vm.memory, range), "{e}");
        }
        GuestDtError::VcpuCount { count, max, .. } => {
            assert!(*count == 0 || count > max, "{e}");
            assert!(!realistic || vm.cpus.len() > 8, "{e}");
        }
        GuestDtError::DependencyHasRegisters { .. }
        | GuestDtError::InterruptParentNotGic { .. }
        | GuestDtError::DanglingReference { .. }
        | GuestDtError::Unsupported { .. }
        | GuestDtError::MalformedProperty { .. } => {
            assert!(!vm.devices.is_empty(), "{e}");
        }
        _ => panic!("{e}"),
    }
}
