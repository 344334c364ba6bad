//! The device tree a guest boots with: generated from the VM's config and the host tree, or,
//! when the user brings their own, checked against what the VM owns.
//!
//! [`generate`] writes a DTB that holds only what the VM has: its memory, its vCPUs (MPIDR
//! `0..n`), PSCI over HVC, a GIC without the virtualization extensions, the timer, a virtual
//! PL011 console, its shared-memory regions, its assigned devices, and `/chosen`. Phandles
//! are numbered from 1 (the GIC, then the console clock, then copied nodes in the order they
//! are first referred to), so the same inputs give the same bytes.
//!
//! An assigned device is copied with all its properties and children, placed at the root
//! with `reg` rewritten to CPU physical addresses. Its `interrupt-parent` becomes the virtual
//! GIC. References through `clocks`, `assigned-clocks`, `assigned-clock-parents`, `resets`,
//! `power-domains`, `phys`, `dmas`, `mboxes`, `pwms`, `gpios`/`*-gpios` and `*-supply` are
//! followed one level: the node referred to is copied too (refused if it has MMIO registers
//! and is not itself assigned). `iommus`, `msi-parent`, `iommu-map`, `msi-map` and
//! `pinctrl-*` are dropped (the hypervisor owns the SMMU, ITS and pins);
//! `interrupts-extended` and `memory-region` are refused. A parent bus's `dma-ranges` is not
//! carried over.
//!
//! [`check_user_dtb`] refuses a user's guest DTB that names memory or registers the VM is not
//! given.

mod check;
mod devices;
mod error;
mod host;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vm_fdt::{FdtWriter, FdtWriterNode};

pub use check::check_user_dtb;
pub use error::GuestDtError;

use crate::config::{ShmemConfig, VmConfig};
use crate::{Conduit, Gic, Irq, IrqKind, MemRange, Platform};

/// Size of one GICv3 redistributor: an RD_base and an SGI_base 64 KiB frame.
pub const GICR_FRAME_PAIR: u64 = 0x2_0000;
/// Size of the virtual PL011's register window.
pub const CONSOLE_SIZE: u64 = 0x1000;
/// Frequency the guest's PL011 clock claims (only baud-rate arithmetic sees it).
pub const CONSOLE_CLOCK_HZ: u32 = 24_000_000;
/// Most vCPUs a GICv2 guest can have (the distributor's 8-bit CPU target lists).
pub const MAX_VCPUS_GICV2: usize = 8;
/// Most vCPUs a GICv3 guest can have: vCPU `N` has MPIDR Aff0 = `N`, and SGI target lists
/// reach Aff0 0-15 without range selectors.
pub const MAX_VCPUS_GICV3: usize = 16;

/// The SPI of every VM's virtual console (INTID 33), as the hypervisor wires it.
/// `config::check` keeps doorbells and assigned devices off it: [`generate`] refuses a VM
/// whose console SPI is taken.
pub const CONSOLE_SPI: u32 = 1;

/// `IRQ_TYPE_LEVEL_HIGH` in the third cell of a GIC interrupt specifier.
const LEVEL_HIGH: u32 = 4;
/// The virtual GIC's phandle.
const VGIC_PHANDLE: u32 = 1;
/// The console clock's phandle.
const CLOCK_PHANDLE: u32 = 2;

/// The interrupt controller a VM sees (guest physical addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualGic {
    /// A GICv2: the distributor is emulated, the CPU interface is the hardware GICV frame
    /// mapped where the VM expects GICC.
    V2 {
        /// The distributor (GICD).
        gicd: MemRange,
        /// The CPU interface as the VM sees it (backed by the host's GICV).
        gicc: MemRange,
    },
    /// A GICv3: distributor and redistributors are emulated.
    V3 {
        /// The distributor (GICD).
        gicd: MemRange,
        /// Where the redistributors start: one [`GICR_FRAME_PAIR`] per vCPU, vCPU 0 first.
        gicr_base: u64,
    },
}

impl VirtualGic {
    /// A GIC at the host's addresses: the host GICD, and for v3 the host's first
    /// redistributor region, for v2 the host GICC (where the VM sees GICV).
    pub fn like_host(gic: &Gic) -> Self {
        match gic {
            Gic::V2 { gicd, gicc, .. } => Self::V2 {
                gicd: *gicd,
                gicc: *gicc,
            },
            Gic::V3 {
                gicd,
                redistributors,
                ..
            } => Self::V3 {
                gicd: *gicd,
                gicr_base: redistributors.first().map_or(gicd.base, |r| r.base),
            },
        }
    }

    /// 2 or 3.
    pub fn version(&self) -> u8 {
        match self {
            Self::V2 { .. } => 2,
            Self::V3 { .. } => 3,
        }
    }

    /// The register windows, named, for a VM with `vcpus` vCPUs.
    pub fn regions(&self, vcpus: usize) -> [(&'static str, MemRange); 2] {
        match *self {
            Self::V2 { gicd, gicc } => [
                ("virtual GIC distributor", gicd),
                ("virtual GIC CPU interface", gicc),
            ],
            Self::V3 { gicd, gicr_base } => [
                ("virtual GIC distributor", gicd),
                (
                    "virtual GIC redistributors",
                    MemRange {
                        base: gicr_base,
                        size: GICR_FRAME_PAIR.saturating_mul(vcpus as u64),
                    },
                ),
            ],
        }
    }
}

/// The VM's console: a PL011 the hypervisor emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualConsole {
    /// Guest physical address of its [`CONSOLE_SIZE`]-byte register window.
    pub base: u64,
    /// Its interrupt, an SPI number (INTID 32 + `spi`), level-high.
    pub spi: u32,
}

impl VirtualConsole {
    /// The register window.
    pub fn range(&self) -> MemRange {
        MemRange {
            base: self.base,
            size: CONSOLE_SIZE,
        }
    }

    /// The node's name, which `stdout-path` names too.
    fn node_name(&self) -> String {
        format!("pl011@{:x}", self.base)
    }
}

/// What the VM sees besides its memory and devices: where the hypervisor puts the emulated
/// pieces, and where it loaded the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// The virtual GIC: its version (2 or 3) and where its registers are.
    pub gic: VirtualGic,
    /// The virtual console.
    pub console: VirtualConsole,
    /// Where the initrd lies in guest memory (`linux,initrd-start`/`-end`), if the VM has one.
    pub initrd: Option<MemRange>,
    /// How the guest calls PSCI: [`Conduit::Hvc`] under Tandem, which answers HVC itself.
    pub psci: Conduit,
    /// Labels of every VM, indexed like `HypervisorConfig::vms`, to name the peers of each
    /// shared-memory region (`vm<N>` when a label is missing).
    pub vm_labels: Vec<String>,
    /// The virtio-mmio devices the hypervisor emulates for the VM (its vsock device).
    pub virtio: Vec<EmulatedVirtio>,
    /// The ring region through which the VM serves a vsock device, if it does.
    pub service_ring: Option<ServiceRing>,
}

/// A virtio-mmio device the hypervisor emulates: `compatible = "virtio,mmio"` like QEMU's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatedVirtio {
    /// Where its register window is.
    pub base: u64,
    /// Its SPI (level-high).
    pub spi: u32,
}

/// Bytes of a virtio-mmio register window as the VM's DTB gives it (registers and the
/// device's configuration space; the hypervisor traps the whole page).
pub const VIRTIO_WINDOW: u64 = 0x200;

/// The ring region of a vsock device the VM serves, and the doorbell that says records came.
/// In the DTB: `/reserved-memory/vsock@<base>`, `compatible = "tandem,vsock-service"`,
/// `reg`, `no-map`, `tandem,doorbell = <SPI>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRing {
    /// The region.
    pub memory: MemRange,
    /// The doorbell SPI.
    pub doorbell: u32,
}

impl GuestLayout {
    /// A layout with the GIC at the host's addresses, the console at `console_base` with SPI
    /// `console_spi`, PSCI over HVC, no initrd and no peer labels.
    pub fn like_host(platform: &Platform, console_base: u64, console_spi: u32) -> Self {
        Self {
            gic: VirtualGic::like_host(&platform.gic),
            console: VirtualConsole {
                base: console_base,
                spi: console_spi,
            },
            initrd: None,
            psci: Conduit::Hvc,
            vm_labels: Vec::new(),
            virtio: Vec::new(),
            service_ring: None,
        }
    }
}

/// Writes the guest DTB for `vm`.
///
/// `host_blob` is the host device tree `platform` was read from (assigned devices are copied
/// from it); `shmem` is every shared-memory region (those not listing the VM are skipped).
pub fn generate(
    host_blob: &[u8],
    platform: &Platform,
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
) -> Result<Vec<u8>, GuestDtError> {
    validate(vm, shmem, layout)?;
    let timer = platform.timer.ok_or(GuestDtError::NoHostTimer)?;
    let host = host::Tree::read(host_blob).map_err(|error| GuestDtError::Unreadable {
        which: "host device tree",
        error,
    })?;
    let vcpus = vm.cpus.len();
    let memory_name = format!("memory@{:x}", vm.memory.first().map_or(0, |m| m.base));
    let gic_name = format!(
        "interrupt-controller@{:x}",
        layout.gic.regions(vcpus)[0].1.base
    );
    let console_name = layout.console.node_name();
    let virtio_names: Vec<String> = layout
        .virtio
        .iter()
        .map(|v| format!("virtio_mmio@{:x}", v.base))
        .collect();
    let mut taken = [
        "chosen",
        &memory_name,
        "reserved-memory",
        "cpus",
        "psci",
        &gic_name,
        "timer",
        "apb-pclk",
        &console_name,
    ]
    .map(ToString::to_string)
    .to_vec();
    taken.extend(virtio_names.iter().cloned());
    let devices = devices::Planner::new(&host, VGIC_PHANDLE, CLOCK_PHANDLE + 1, &taken).plan(vm)?;

    let mut w = Writer::new()?;
    let root = w.begin("")?;
    w.u32("#address-cells", 2)?;
    w.u32("#size-cells", 2)?;
    w.strings("compatible", &["tandem,vm"])?;
    w.string("model", &format!("Tandem VM {}", vm.label))?;
    w.u32("interrupt-parent", VGIC_PHANDLE)?;

    let chosen = w.begin("chosen")?;
    if let Some(args) = &vm.bootargs {
        w.string("bootargs", args)?;
    }
    if let Some(initrd) = layout.initrd {
        w.u64("linux,initrd-start", initrd.base)?;
        w.u64("linux,initrd-end", initrd.base.saturating_add(initrd.size))?;
    }
    w.string("stdout-path", &format!("/{console_name}"))?;
    w.end(chosen)?;

    let memory = w.begin(&memory_name)?;
    w.string("device_type", "memory")?;
    w.regs("reg", &vm.memory)?;
    w.end(memory)?;

    shared_memory(&mut w, vm, shmem, layout)?;

    let cpus = w.begin("cpus")?;
    w.u32("#address-cells", 1)?;
    w.u32("#size-cells", 0)?;
    for n in 0..vcpus {
        let cpu = w.begin(&format!("cpu@{n:x}"))?;
        w.string("device_type", "cpu")?;
        w.strings("compatible", &["arm,armv8"])?;
        w.u32("reg", n as u32)?;
        w.string("enable-method", "psci")?;
        w.end(cpu)?;
    }
    w.end(cpus)?;

    let psci = w.begin("psci")?;
    w.strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.string(
        "method",
        match layout.psci {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        },
    )?;
    w.end(psci)?;

    let gic = w.begin(&gic_name)?;
    let compatible = match layout.gic {
        VirtualGic::V3 { .. } => "arm,gic-v3",
        VirtualGic::V2 { .. } => "arm,cortex-a15-gic",
    };
    w.strings("compatible", &[compatible])?;
    w.regs("reg", &layout.gic.regions(vcpus).map(|(_, r)| r))?;
    if let VirtualGic::V3 { .. } = layout.gic {
        w.u32("#redistributor-regions", 1)?;
    }
    w.empty("interrupt-controller")?;
    w.u32("#interrupt-cells", 3)?;
    // No children (no ITS, no v2m), but dtc and the bindings expect the cells on a GIC.
    w.u32("#address-cells", 2)?;
    w.u32("#size-cells", 2)?;
    w.empty("ranges")?;
    w.u32("phandle", VGIC_PHANDLE)?;
    w.end(gic)?;

    let node = w.begin("timer")?;
    w.strings("compatible", &["arm,armv8-timer"])?;
    let ppis = [timer.secure_phys, timer.phys, timer.virt, timer.hyp_phys];
    w.irqs(
        "interrupts",
        &ppis.map(|irq| ppi_for_vm(irq, &layout.gic, vcpus)),
    )?;
    w.end(node)?;

    let clock = w.begin("apb-pclk")?;
    w.strings("compatible", &["fixed-clock"])?;
    w.u32("#clock-cells", 0)?;
    w.u32("clock-frequency", CONSOLE_CLOCK_HZ)?;
    w.strings("clock-output-names", &["clk24mhz"])?;
    w.u32("phandle", CLOCK_PHANDLE)?;
    w.end(clock)?;

    let console = w.begin(&console_name)?;
    w.strings("compatible", &["arm,pl011", "arm,primecell"])?;
    w.regs("reg", &[layout.console.range()])?;
    w.irqs(
        "interrupts",
        &[Irq {
            kind: IrqKind::Spi,
            number: layout.console.spi,
            flags: LEVEL_HIGH,
        }],
    )?;
    w.cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end(console)?;

    for (v, name) in layout.virtio.iter().zip(&virtio_names) {
        let node = w.begin(name)?;
        w.strings("compatible", &["virtio,mmio"])?;
        w.regs(
            "reg",
            &[MemRange {
                base: v.base,
                size: VIRTIO_WINDOW,
            }],
        )?;
        w.irqs(
            "interrupts",
            &[Irq {
                kind: IrqKind::Spi,
                number: v.spi,
                flags: LEVEL_HIGH,
            }],
        )?;
        w.empty("dma-coherent")?;
        w.end(node)?;
    }

    for node in &devices {
        w.copied(node)?;
    }

    w.end(root)?;
    w.finish()
}

/// A timer PPI as the VM sees it: the host's trigger flags; on GICv2 the CPU mask (bits
/// [15:8]) names the VM's vCPUs, on GICv3 it is 0.
fn ppi_for_vm(irq: Irq, gic: &VirtualGic, vcpus: usize) -> Irq {
    let mask = match gic {
        VirtualGic::V2 { .. } => ((1u32 << vcpus.min(8)) - 1) << 8,
        VirtualGic::V3 { .. } => 0,
    };
    Irq {
        flags: (irq.flags & !0xff00) | mask,
        ..irq
    }
}

/// `/reserved-memory` with one child per shared-memory region the VM is in.
fn shared_memory(
    w: &mut Writer,
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
) -> Result<(), GuestDtError> {
    let mine: Vec<(&ShmemConfig, usize)> = shmem
        .iter()
        .filter_map(|s| Some((s, s.vms.iter().position(|&v| v == vm.index)?)))
        .collect();
    if mine.is_empty() && layout.service_ring.is_none() {
        return Ok(());
    }
    let parent = w.begin("reserved-memory")?;
    w.u32("#address-cells", 2)?;
    w.u32("#size-cells", 2)?;
    w.empty("ranges")?;
    if let Some(ring) = layout.service_ring {
        let node = w.begin(&format!("vsock@{:x}", ring.memory.base))?;
        w.strings("compatible", &["tandem,vsock-service"])?;
        w.regs("reg", &[ring.memory])?;
        w.empty("no-map")?;
        w.u32("tandem,doorbell", ring.doorbell)?;
        w.end(node)?;
    }
    for (s, at) in mine {
        let doorbell =
            s.doorbells
                .get(at)
                .copied()
                .ok_or_else(|| GuestDtError::ShmemWithoutDoorbell {
                    shmem: s.node.clone(),
                })?;
        let peers: Vec<String> = s
            .vms
            .iter()
            .filter(|&&v| v != vm.index)
            .map(|&v| {
                layout
                    .vm_labels
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| format!("vm{v}"))
            })
            .collect();
        let node = w.begin(&format!("shmem@{:x}", s.memory.base))?;
        w.strings("compatible", &["tandem,shmem"])?;
        w.regs("reg", &[s.memory])?;
        w.empty("no-map")?;
        w.u32("tandem,doorbell", doorbell)?;
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        w.strings("tandem,peers", &peers)?;
        w.end(node)?;
    }
    w.end(parent)
}

/// Checks what the layout adds against the VM's config.
fn validate(
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
) -> Result<(), GuestDtError> {
    let max = match layout.gic {
        VirtualGic::V2 { .. } => MAX_VCPUS_GICV2,
        VirtualGic::V3 { .. } => MAX_VCPUS_GICV3,
    };
    if vm.cpus.is_empty() || vm.cpus.len() > max {
        return Err(GuestDtError::VcpuCount {
            vm: vm.node.clone(),
            count: vm.cpus.len(),
            max,
        });
    }
    if vm.memory.iter().all(|m| m.size == 0) {
        return Err(GuestDtError::NoMemory {
            vm: vm.node.clone(),
        });
    }
    // Everything with an address the VM sees, named.
    let mut windows: Vec<(String, MemRange)> = Vec::new();
    windows.extend(vm.memory.iter().map(|m| ("memory".to_string(), *m)));
    for s in shmem.iter().filter(|s| s.vms.contains(&vm.index)) {
        windows.push((s.node.clone(), s.memory));
    }
    for d in &vm.devices {
        windows.extend(d.regs.iter().map(|r| (d.node.clone(), *r)));
    }
    let config_windows = windows.len();
    for (what, r) in layout.gic.regions(vm.cpus.len()) {
        windows.push((what.to_string(), r));
    }
    windows.push(("virtual console".to_string(), layout.console.range()));
    for (i, (first, a)) in windows.iter().enumerate().skip(config_windows) {
        if a.end().is_none() {
            return Err(overlap(vm, first, a, "the end of the address space", a));
        }
        if let Some((second, b)) = windows.iter().take(i).find(|(_, b)| a.overlaps(b)) {
            return Err(overlap(vm, first, a, second, b));
        }
    }
    if let Some(initrd) = layout.initrd {
        let end = u128::from(initrd.base) + u128::from(initrd.size);
        let inside = vm
            .memory
            .iter()
            .any(|m| m.base <= initrd.base && end <= u128::from(m.base) + u128::from(m.size));
        if !inside {
            return Err(GuestDtError::InitrdOutsideMemory {
                vm: vm.node.clone(),
                range: initrd,
            });
        }
    }
    let spi = layout.console.spi;
    let conflict = if spi >= 988 {
        Some("is out of range (SPIs are 0-987)".to_string())
    } else if let Some(d) = vm.devices.iter().find(|d| {
        d.interrupts
            .iter()
            .any(|i| i.kind == IrqKind::Spi && i.number == spi)
    }) {
        Some(format!("is also {}'s interrupt", d.node))
    } else {
        shmem
            .iter()
            .filter_map(|s| {
                let at = s.vms.iter().position(|&v| v == vm.index)?;
                (s.doorbells.get(at) == Some(&spi))
                    .then(|| format!("is also {}'s doorbell", s.node))
            })
            .next()
    };
    match conflict {
        Some(conflict) => Err(GuestDtError::ConsoleIrq {
            vm: vm.node.clone(),
            spi,
            conflict,
        }),
        None => Ok(()),
    }
}

fn overlap(vm: &VmConfig, first: &str, a: &MemRange, second: &str, b: &MemRange) -> GuestDtError {
    GuestDtError::Overlap {
        vm: vm.node.clone(),
        first: first.to_string(),
        first_range: *a,
        second: second.to_string(),
        second_range: *b,
    }
}

/// `vm_fdt::FdtWriter` with errors that name the node and property.
struct Writer {
    fdt: FdtWriter,
    path: Vec<String>,
}

impl Writer {
    fn new() -> Result<Self, GuestDtError> {
        Ok(Self {
            fdt: FdtWriter::new().map_err(|e| GuestDtError::Write {
                node: "/".to_string(),
                property: None,
                problem: e.to_string(),
            })?,
            path: Vec::new(),
        })
    }

    fn error(&self, property: Option<&str>, e: vm_fdt::Error) -> GuestDtError {
        let node = match self.path.as_slice() {
            [] | [_] => "/".to_string(),
            [_, rest @ ..] => rest.iter().fold(String::new(), |p, n| p + "/" + n),
        };
        GuestDtError::Write {
            node,
            property: property.map(ToString::to_string),
            problem: e.to_string(),
        }
    }

    fn begin(&mut self, name: &str) -> Result<FdtWriterNode, GuestDtError> {
        self.path.push(name.to_string());
        self.fdt.begin_node(name).map_err(|e| self.error(None, e))
    }

    fn end(&mut self, node: FdtWriterNode) -> Result<(), GuestDtError> {
        self.fdt.end_node(node).map_err(|e| self.error(None, e))?;
        self.path.pop();
        Ok(())
    }

    fn prop(&mut self, name: &str, value: &[u8]) -> Result<(), GuestDtError> {
        self.fdt
            .property(name, value)
            .map_err(|e| self.error(Some(name), e))
    }

    fn empty(&mut self, name: &str) -> Result<(), GuestDtError> {
        self.prop(name, &[])
    }

    fn u32(&mut self, name: &str, value: u32) -> Result<(), GuestDtError> {
        self.prop(name, &value.to_be_bytes())
    }

    fn u64(&mut self, name: &str, value: u64) -> Result<(), GuestDtError> {
        self.prop(name, &value.to_be_bytes())
    }

    fn cells(&mut self, name: &str, cells: &[u32]) -> Result<(), GuestDtError> {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes)
    }

    /// Address/size pairs for 2 address and 2 size cells.
    fn regs(&mut self, name: &str, ranges: &[MemRange]) -> Result<(), GuestDtError> {
        let bytes: Vec<u8> = ranges
            .iter()
            .flat_map(|r| [r.base, r.size])
            .flat_map(u64::to_be_bytes)
            .collect();
        self.prop(name, &bytes)
    }

    fn irqs(&mut self, name: &str, irqs: &[Irq]) -> Result<(), GuestDtError> {
        let cells: Vec<u32> = irqs
            .iter()
            .flat_map(|i| {
                let kind = match i.kind {
                    IrqKind::Spi => 0,
                    IrqKind::Ppi => 1,
                };
                [kind, i.number, i.flags]
            })
            .collect();
        self.cells(name, &cells)
    }

    fn string(&mut self, name: &str, value: &str) -> Result<(), GuestDtError> {
        self.strings(name, &[value])
    }

    fn strings(&mut self, name: &str, values: &[&str]) -> Result<(), GuestDtError> {
        if values.iter().any(|v| v.contains('\0')) {
            return Err(self.error(Some(name), vm_fdt::Error::InvalidString));
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.bytes().chain([0])).collect();
        self.prop(name, &bytes)
    }

    fn copied(&mut self, node: &devices::OutNode) -> Result<(), GuestDtError> {
        let handle = self.begin(&node.name)?;
        for (name, value) in &node.props {
            self.prop(name, value)?;
        }
        if let Some(ph) = node.phandle {
            self.u32("phandle", ph)?;
        }
        for child in &node.children {
            self.copied(child)?;
        }
        self.end(handle)
    }

    fn finish(self) -> Result<Vec<u8>, GuestDtError> {
        let path = self.path.clone();
        self.fdt.finish().map_err(|e| GuestDtError::Write {
            node: path.join("/"),
            property: None,
            problem: e.to_string(),
        })
    }
}
