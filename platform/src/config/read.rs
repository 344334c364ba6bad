//! Reading `/hypervisor`: each node's own properties decoded and checked on their own;
//! everything that compares two nodes is left to [`super::validate`].

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::text::{hex, range};
use super::validate::pages;
use super::{ConfigError, Device, Module, ModuleKind, OnCrash, Streams};
use crate::blob::be32;
use crate::board::{trim_nul, Irq, MemRange, Platform};
use crate::cells::{read_cells, reg_entries, Bus};
use crate::guest_dt::CONSOLE_SPI;
use crate::parse::{find_gic, interrupts, Tree};

/// Properties every node may carry whatever the binding.
const ANY_NODE: [&str; 4] = ["phandle", "linux,phandle", "name", "status"];
const HYPERVISOR_PROPS: [&str; 5] = [
    "compatible",
    "#address-cells",
    "#size-cells",
    "tandem,unclean-memory",
    "tandem,device-secret",
];
/// `reg` on a `vm@` or `shmem@` node only gives dtc the unit address it expects; ignored.
const VM_PROPS: [&str; 12] = [
    "tandem,attestation",
    "reg",
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
];
const SHMEM_PROPS: [&str; 5] = ["compatible", "memory", "vms", "doorbells", "reg"];
const VSOCK_PROPS: [&str; 7] = [
    "compatible",
    "memory",
    "vms",
    "spis",
    "window",
    "cids",
    "reg",
];

/// The two kinds of node that give memory to more than one party: `shmem@N` (VMs share it)
/// and `vsock@N` (the service VM shares its ring region with the hypervisor's backend for
/// the driver VM's vsock device). They are read, and their memory and SPIs checked, alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    Shmem,
    Vsock,
}

impl Sharing {
    fn compatible(self) -> &'static str {
        match self {
            Self::Shmem => "tandem,shmem",
            Self::Vsock => "tandem,vsock",
        }
    }

    /// The property with one SPI per entry of `vms`.
    pub(crate) fn spi_property(self) -> &'static str {
        match self {
            Self::Shmem => "doorbells",
            Self::Vsock => "spis",
        }
    }

    fn props(self) -> &'static [&'static str] {
        match self {
            Self::Shmem => &SHMEM_PROPS,
            Self::Vsock => &VSOCK_PROPS,
        }
    }
}
const MODULE_PROPS: [&str; 4] = ["compatible", "reg", "tandem,format", "tandem,load-address"];

/// The driver's CID when `cids` is absent.
pub const DEFAULT_DRIVER_CID: u32 = 4;
/// The service's CID when `cids` is absent.
pub const DEFAULT_SERVICE_CID: u32 = 3;

/// Page size of stage 2: every range a VM owns starts and ends on it.
pub(crate) const PAGE: u64 = 0x1000;

/// A `vm@N` node as read, before the cross-checks.
pub(crate) struct VmDraft {
    /// Tree index of the node.
    pub index: usize,
    pub path: String,
    /// `vm@0 (linux)`: how messages name the VM.
    pub name: String,
    pub label: Option<String>,
    pub phandle: Option<u32>,
    /// `(Platform::cpus index, node path)`.
    pub cpus: Vec<(usize, String)>,
    pub memory: Vec<MemRange>,
    pub devices: Vec<DeviceDraft>,
    pub bootargs: Option<String>,
    pub on_crash: OnCrash,
    pub isolated: bool,
    /// `tandem,attestation`.
    pub attestation: bool,
    pub modules: Vec<Module>,
}

/// A device as read, with what the cross-checks need beyond [`Device`].
pub(crate) struct DeviceDraft {
    pub device: Device,
    /// The device can master DMA (virtio, `dmas`, `dma-coherent`) and no IOMMU (`iommus`)
    /// stands between it and memory: it can reach any physical address.
    pub unchecked_dma: bool,
}

/// A `shmem@N` or `vsock@N` node as read.
pub(crate) struct ShmemDraft {
    pub kind: Sharing,
    pub path: String,
    pub memory: Option<MemRange>,
    /// Indices into the drafts' `vms`.
    pub vms: Vec<usize>,
    pub doorbells: Vec<u32>,
}

/// What a `vsock@N` node has beyond a shared region: `vms` is `<driver service>`, `spis`
/// the driver's device SPI and the service's doorbell SPI.
pub(crate) struct VsockDraft {
    /// `window`: where the device's registers are in the driver's address space.
    pub window: Option<u64>,
    /// `cids`: `<driver service>`.
    pub cids: (u32, u32),
}

/// Everything read from `/hypervisor`.
pub(crate) struct Draft {
    /// Path of `/hypervisor`.
    pub hypervisor: String,
    pub vms: Vec<VmDraft>,
    pub shmem: Vec<ShmemDraft>,
    /// `vsock@N` nodes, with what only they have.
    pub vsock: Vec<(ShmemDraft, VsockDraft)>,
    /// `tandem,unclean-memory`: RAM that may hold data when the hypervisor starts.
    pub unclean: Vec<MemRange>,
    /// `tandem,device-secret`: the board's unique device secret, when given and valid.
    pub device_secret: Option<[u8; 32]>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// Builds a [`ConfigError`].
pub(crate) fn problem(
    node: &str,
    property: Option<&str>,
    problem: String,
    fix: String,
) -> ConfigError {
    ConfigError {
        node: node.to_owned(),
        property: property.map(ToOwned::to_owned),
        problem,
        fix,
    }
}

struct Reader<'t, 'b, 'a> {
    tree: &'t Tree<'b, 'a>,
    platform: &'t Platform,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// The GIC node, if the tree has one (it does whenever `platform` came from it).
    gic: Option<usize>,
}

/// Reads `/hypervisor`, or `None` when the tree has no such node.
pub(crate) fn read(tree: &Tree<'_, '_>, platform: &Platform) -> Option<Draft> {
    let hypervisor = (0..tree.nodes.len())
        .find(|&i| tree.nodes[i].parent == Some(0) && tree.nodes[i].node.name == "hypervisor")?;
    let mut r = Reader {
        tree,
        platform,
        errors: Vec::new(),
        warnings: Vec::new(),
        gic: find_gic(tree).ok(),
    };
    let cells = r.hypervisor_node(hypervisor);
    let unclean = cells
        .and_then(|bus| r.ranges(hypervisor, "tandem,unclean-memory", &bus))
        .unwrap_or_default();
    let device_secret = r.device_secret(hypervisor);
    let mut vms = Vec::new();
    let mut shmem_nodes = Vec::new();
    let mut vsock_nodes = Vec::new();
    for i in r.children(hypervisor) {
        let name = tree.nodes[i].node.name;
        let base = name.split('@').next().unwrap_or(name);
        if !tree.enabled(i) {
            continue;
        }
        match base {
            "vm" => vms.push(r.vm(i, cells)),
            "shmem" => shmem_nodes.push(i),
            "vsock" => vsock_nodes.push(i),
            _ => r.warnings.push(problem(
                &tree.path(i),
                None,
                "unknown node, ignored".to_owned(),
                "name VM nodes vm@N, shared memory shmem@N and vsock devices vsock@N (see docs/binding.md)"
                    .to_owned(),
            )),
        }
    }
    if vms.is_empty() {
        r.errors.push(problem(
            &tree.path(hypervisor),
            None,
            "has no vm@ node".to_owned(),
            "describe at least one VM in a vm@0 child (see docs/binding.md)".to_owned(),
        ));
    }
    let shmem = shmem_nodes
        .into_iter()
        .map(|i| r.shmem(i, cells, &vms, Sharing::Shmem))
        .collect();
    let vsock = vsock_nodes
        .into_iter()
        .map(|i| (r.shmem(i, cells, &vms, Sharing::Vsock), r.vsock(i, cells)))
        .collect();
    Some(Draft {
        hypervisor: tree.path(hypervisor),
        vms,
        shmem,
        vsock,
        unclean,
        device_secret,
        errors: r.errors,
        warnings: r.warnings,
    })
}

impl Reader<'_, '_, '_> {
    fn children(&self, parent: usize) -> Vec<usize> {
        (0..self.tree.nodes.len())
            .filter(|&i| self.tree.nodes[i].parent == Some(parent))
            .collect()
    }

    fn error(&mut self, node: usize, property: Option<&str>, what: String, fix: String) {
        let path = self.tree.path(node);
        self.errors.push(problem(&path, property, what, fix));
    }

    /// Warns about every property of node `i` outside `known`.
    fn unknown_properties(&mut self, i: usize, known: &[&str]) {
        let node = self.tree.nodes[i].node;
        for prop in node.properties() {
            if !known.contains(&prop.name) && !ANY_NODE.contains(&prop.name) {
                self.warnings.push(problem(
                    &self.tree.path(i),
                    Some(prop.name),
                    "unknown property, ignored".to_owned(),
                    "check its spelling against docs/binding.md or remove it".to_owned(),
                ));
            }
        }
    }

    /// Checks that `compatible` lists `wanted`.
    fn require_compatible(&mut self, i: usize, wanted: &str) -> bool {
        if self.tree.has_compatible(i, &[wanted]) {
            return true;
        }
        let found = self.tree.prop(i, "compatible").map(string_list);
        let what = match found {
            None => format!("missing; must be \"{wanted}\""),
            Some(list) => format!("is {list}, not \"{wanted}\""),
        };
        self.error(
            i,
            Some("compatible"),
            what,
            format!("set compatible = \"{wanted}\";"),
        );
        false
    }

    /// `#address-cells` and `#size-cells` of node `i`, both required and 1 or 2.
    fn cells(&mut self, i: usize) -> Option<Bus<'static>> {
        let mut ok = true;
        let mut get = |r: &mut Self, name: &str| {
            let value = r.tree.prop(i, name);
            match value.filter(|v| v.len() == 4).and_then(|v| be32(v, 0)) {
                Some(n @ 1..=2) => n,
                _ => {
                    let what = match value {
                        None => "missing".to_owned(),
                        Some(v) => match (v.len(), be32(v, 0)) {
                            (4, Some(n)) => format!("is {n}; must be 1 or 2"),
                            _ => "is not one 32-bit cell".to_owned(),
                        },
                    };
                    r.error(i, Some(name), what, format!("set {name} = <2>;"));
                    ok = false;
                    0
                }
            }
        };
        let address_cells = get(self, "#address-cells");
        let size_cells = get(self, "#size-cells");
        ok.then_some(Bus {
            address_cells,
            size_cells,
            ranges: None,
        })
    }

    /// `tandem,device-secret`: exactly 32 bytes (e.g. `[01 02 ...]` or eight cells).
    fn device_secret(&mut self, i: usize) -> Option<[u8; 32]> {
        let value = self.tree.prop(i, "tandem,device-secret")?;
        match <[u8; 32]>::try_from(value) {
            Ok(secret) if secret.iter().all(|&b| b == 0) => {
                self.error(
                    i,
                    Some("tandem,device-secret"),
                    "is all zeros".to_owned(),
                    "give the board's own 32 random bytes (firmware or fuses provide them on real hardware)"
                        .to_owned(),
                );
                None
            }
            Ok(secret) => Some(secret),
            Err(_) => {
                self.error(
                    i,
                    Some("tandem,device-secret"),
                    format!("is {} bytes; it must be 32", value.len()),
                    "write 32 bytes, e.g. tandem,device-secret = [00 11 22 ... ff];".to_owned(),
                );
                None
            }
        }
    }

    fn hypervisor_node(&mut self, i: usize) -> Option<Bus<'static>> {
        self.unknown_properties(i, &HYPERVISOR_PROPS);
        self.require_compatible(i, "tandem,hypervisor");
        self.cells(i)
    }

    /// A list of `(address, size)` pairs in `bus`'s cells; errors are reported.
    fn ranges(&mut self, i: usize, name: &str, bus: &Bus<'_>) -> Option<Vec<MemRange>> {
        let value = self.tree.prop(i, name)?;
        match reg_entries(value, bus) {
            Ok(entries) => Some(
                entries
                    .map(|(base, size)| MemRange { base, size })
                    .collect(),
            ),
            Err(_) => {
                self.error(
                    i,
                    Some(name),
                    format!(
                        "length {} is not a whole number of (address, size) pairs of {} + {} cells",
                        value.len(),
                        bus.address_cells,
                        bus.size_cells
                    ),
                    format!(
                        "write each range as {} address cell(s) then {} size cell(s), as the parent's #address-cells and #size-cells say",
                        bus.address_cells, bus.size_cells
                    ),
                );
                None
            }
        }
    }

    /// The cells of a phandle list; `None` (reported) when the length is wrong.
    fn phandles(&mut self, i: usize, name: &str) -> Option<Vec<u32>> {
        let value = self.tree.prop(i, name)?;
        if value.len() % 4 != 0 {
            self.error(
                i,
                Some(name),
                format!(
                    "length {} is not a whole number of 32-bit phandles",
                    value.len()
                ),
                format!("write it as {name} = <&a &b>;"),
            );
            return None;
        }
        Some(value.chunks_exact(4).filter_map(|c| be32(c, 0)).collect())
    }

    fn node_of(&self, phandle: u32) -> Option<usize> {
        (0..self.tree.nodes.len()).find(|&i| self.tree.phandle(i) == Some(phandle))
    }

    /// Whether `i` is `ancestor` or lies below it.
    fn within(&self, i: usize, ancestor: usize) -> bool {
        i == ancestor || self.tree.ancestors(i).contains(&ancestor)
    }

    fn vm(&mut self, i: usize, hyp_cells: Option<Bus<'static>>) -> VmDraft {
        let tree = self.tree;
        let path = tree.path(i);
        let short = tree.nodes[i].node.name.to_owned();
        self.unknown_properties(i, &VM_PROPS);
        self.require_compatible(i, "tandem,vm");
        let label = self.label(i, &short);
        let name = match &label {
            Some(l) => format!("{short} ({l})"),
            None => short.clone(),
        };

        let cpus = self.vm_cpus(i, &short);
        let memory = match hyp_cells {
            Some(bus) => self.vm_memory(i, &short, &bus),
            None => Vec::new(),
        };
        let devices = self.vm_devices(i, &short);
        let on_crash = match tree.prop(i, "tandem,on-crash").map(trim_nul) {
            None | Some(b"stop") => OnCrash::Stop,
            Some(b"restart") => OnCrash::Restart,
            Some(other) => {
                self.error(
                    i,
                    Some("tandem,on-crash"),
                    format!(
                        "is \"{}\"; must be \"stop\" or \"restart\"",
                        String::from_utf8_lossy(other)
                    ),
                    "set tandem,on-crash = \"stop\"; or \"restart\"; or leave it out (stop)"
                        .to_owned(),
                );
                OnCrash::Stop
            }
        };
        let modules = self.modules(i, &short);
        VmDraft {
            index: i,
            path,
            name,
            label,
            phandle: tree.phandle(i),
            cpus,
            memory,
            devices,
            bootargs: self.bootargs(i),
            on_crash,
            isolated: tree.prop(i, "tandem,isolated").is_some(),
            attestation: tree.prop(i, "tandem,attestation").is_some(),
            modules,
        }
    }

    /// `bootargs`: one string. The guest DTB's `/chosen/bootargs` is one string too, so a
    /// list of several (a NUL inside) could never be written there; refusing it here keeps
    /// a config check-config accepts from failing at boot.
    fn bootargs(&mut self, i: usize) -> Option<String> {
        let value = trim_nul(self.tree.prop(i, "bootargs")?);
        let strings = value.split(|&b| b == 0).count();
        if strings > 1 {
            self.error(
                i,
                Some("bootargs"),
                format!("is a list of {strings} strings; the command line is one string"),
                "join them into one string, the arguments separated by spaces".to_owned(),
            );
            return None;
        }
        Some(String::from_utf8_lossy(value).into_owned())
    }

    fn label(&mut self, i: usize, short: &str) -> Option<String> {
        let Some(value) = self.tree.prop(i, "label") else {
            let unit = short.split('@').nth(1).unwrap_or("0");
            self.error(
                i,
                Some("label"),
                "missing".to_owned(),
                format!(
                    "add label = \"vm{unit}\"; (1 to 15 of a-z, 0-9, '_' and '-'), the VM's name in logs"
                ),
            );
            return None;
        };
        let text = String::from_utf8_lossy(trim_nul(value)).into_owned();
        if valid_label(&text) {
            return Some(text);
        }
        let mut suggestion: String = text
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(15)
            .collect();
        if suggestion.is_empty() {
            suggestion = "vm".to_owned();
        }
        self.error(
            i,
            Some("label"),
            format!("\"{text}\" is not 1 to 15 of a-z, 0-9, '_' and '-'"),
            format!("rename it, e.g. label = \"{suggestion}\";"),
        );
        None
    }

    fn vm_cpus(&mut self, i: usize, short: &str) -> Vec<(usize, String)> {
        let tree = self.tree;
        let Some(handles) = self.phandles(i, "cpus") else {
            if tree.prop(i, "cpus").is_none() {
                self.error(
                    i,
                    Some("cpus"),
                    "missing: the VM has no CPU".to_owned(),
                    format!(
                        "give {short} at least one physical CPU, e.g. cpus = <&{{{}}}>;",
                        self.platform
                            .cpus
                            .last()
                            .map_or("/cpus/cpu@0", |c| c.node.as_str())
                    ),
                );
            }
            return Vec::new();
        };
        if handles.is_empty() {
            self.error(
                i,
                Some("cpus"),
                "is empty: the VM has no CPU".to_owned(),
                format!("list at least one /cpus node in {short}'s cpus"),
            );
        }
        let mut out: Vec<(usize, String)> = Vec::new();
        for (n, handle) in handles.into_iter().enumerate() {
            let node = self.node_of(handle);
            let cpu = node.and_then(|c| {
                let path = tree.path(c);
                self.platform.cpus.iter().position(|cpu| cpu.node == path)
            });
            match (node, cpu) {
                (_, Some(cpu)) => {
                    let path = self.platform.cpus.get(cpu).map(|c| c.node.clone());
                    let path = path.unwrap_or_default();
                    if out.iter().any(|(c, _)| *c == cpu) {
                        self.error(
                            i,
                            Some("cpus"),
                            format!("lists {path} twice"),
                            "list each physical CPU once; a vCPU runs on a CPU of its own"
                                .to_owned(),
                        );
                    } else {
                        out.push((cpu, path));
                    }
                }
                (Some(node), None) => self.error(
                    i,
                    Some("cpus"),
                    format!(
                        "entry {n} (phandle {}) is {}, not a cpu node of /cpus",
                        hex(u64::from(handle)),
                        tree.path(node)
                    ),
                    "list only cpu@N nodes of /cpus, e.g. <&{/cpus/cpu@0}>".to_owned(),
                ),
                (None, None) => self.error(
                    i,
                    Some("cpus"),
                    format!(
                        "entry {n} (phandle {}) names no node",
                        hex(u64::from(handle))
                    ),
                    "list only cpu@N nodes of /cpus, e.g. <&{/cpus/cpu@0}>".to_owned(),
                ),
            }
        }
        out
    }

    fn vm_memory(&mut self, i: usize, short: &str, bus: &Bus<'_>) -> Vec<MemRange> {
        let Some(ranges) = self.ranges(i, "memory", bus) else {
            if self.tree.prop(i, "memory").is_none() {
                self.error(
                    i,
                    Some("memory"),
                    "missing: the VM has no memory".to_owned(),
                    format!("give {short} RAM, e.g. memory = <0x0 0x50000000 0x0 0x10000000>;"),
                );
            }
            return Vec::new();
        };
        let before = self.errors.len();
        let mut out: Vec<MemRange> = Vec::new();
        for r in ranges {
            if r.size == 0 {
                self.error(
                    i,
                    Some("memory"),
                    format!("range at {} is empty", hex(r.base)),
                    "give every range a non-zero size, or remove it".to_owned(),
                );
                continue;
            }
            if r.end().is_none() {
                self.error(
                    i,
                    Some("memory"),
                    format!("range {} ends beyond 2^64", range(r)),
                    "shrink it".to_owned(),
                );
                continue;
            }
            if !aligned(r) {
                self.error(
                    i,
                    Some("memory"),
                    format!("range {} is not 4 KiB aligned", range(r)),
                    align_fix(r),
                );
            }
            if let Some(other) = out.iter().find(|o| o.overlaps(&r)) {
                let other = *other;
                self.error(
                    i,
                    Some("memory"),
                    format!("ranges {} and {} overlap", range(other), range(r)),
                    "merge them into one range".to_owned(),
                );
                continue;
            }
            out.push(r);
        }
        if out.is_empty() && self.errors.len() == before {
            self.error(
                i,
                Some("memory"),
                "is empty: the VM has no memory".to_owned(),
                format!("give {short} RAM, e.g. memory = <0x0 0x50000000 0x0 0x10000000>;"),
            );
        }
        out.sort_by_key(|r| r.base);
        out
    }

    fn vm_devices(&mut self, i: usize, short: &str) -> Vec<DeviceDraft> {
        let tree = self.tree;
        let mut out: Vec<DeviceDraft> = Vec::new();
        for (n, handle) in self
            .phandles(i, "devices")
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let Some(node) = self.node_of(handle) else {
                self.error(
                    i,
                    Some("devices"),
                    format!(
                        "entry {n} (phandle {}) names no node",
                        hex(u64::from(handle))
                    ),
                    "reference device nodes by label or path, e.g. <&{/pl031@9010000}>".to_owned(),
                );
                continue;
            };
            let path = tree.path(node);
            if let Some(why) = self.not_a_device(node) {
                self.error(
                    i,
                    Some("devices"),
                    format!("{path} is {why}, which cannot be given to a VM"),
                    format!("remove it from {short}'s devices"),
                );
                continue;
            }
            if out.iter().any(|d| d.device.node == path) {
                self.error(
                    i,
                    Some("devices"),
                    format!("lists {path} twice"),
                    "list each device once".to_owned(),
                );
                continue;
            }
            let mut regs: Vec<MemRange> = match tree.regs(node) {
                Ok(Some(regs)) if regs.iter().any(|r| r.size != 0) => {
                    regs.into_iter().filter(|r| r.size != 0).collect()
                }
                Ok(_) => {
                    self.error(
                        i,
                        Some("devices"),
                        format!("{path} has no reg: nothing to map into the VM"),
                        format!(
                            "remove {path} from {short}'s devices (only memory-mapped devices can be passed through)"
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    self.error(
                        i,
                        Some("devices"),
                        format!("{path}: {e}"),
                        "fix the device node's reg, or remove it from the VM".to_owned(),
                    );
                    continue;
                }
            };
            // Stage 2 maps whole pages: a device sharing one with the hypervisor's console
            // would hand the VM the console's registers, where its virtual console sits too.
            let console = self.platform.console.as_ref().map(|c| {
                let window = pages(MemRange {
                    base: c.base,
                    size: c.size.max(1),
                });
                (c, window)
            });
            let shared = console.and_then(|(c, window)| {
                let r = regs.iter().find(|r| pages(**r).overlaps(&window))?;
                Some((c, *r))
            });
            if let Some((c, r)) = shared {
                self.error(
                    i,
                    Some("devices"),
                    format!(
                        "{path} {} shares a 4 KiB page with the hypervisor's console {} {}",
                        range(r),
                        c.node,
                        range(MemRange {
                            base: c.base,
                            size: c.size
                        })
                    ),
                    format!("stage 2 maps whole pages: remove {path} from {short}'s devices"),
                );
                continue;
            }
            let Some(mut interrupts) = self.device_interrupts(i, node, &path) else {
                continue;
            };
            let pci = tree.is_device_type(node, "pci");
            if pci {
                let Some((windows, intx)) = self.pci_bridge(i, node, &path) else {
                    continue;
                };
                regs.extend(windows);
                interrupts.extend(intx);
            }
            let Some((streams, foreign_iommu)) = self.device_streams(i, node, &path) else {
                continue;
            };
            let masters = pci
                || tree.has_compatible(node, &["virtio,mmio"])
                || tree.prop(node, "dmas").is_some()
                || tree.prop(node, "dma-coherent").is_some();
            out.push(DeviceDraft {
                unchecked_dma: masters && streams.is_empty() && !foreign_iommu,
                device: Device {
                    node: path,
                    phandle: handle,
                    regs,
                    interrupts,
                    streams,
                },
            });
        }
        out
    }

    /// A PCI host bridge's bus windows and INTx interrupts; `None` (reported) when its
    /// `ranges` or `interrupt-map` cannot be used.
    fn pci_bridge(
        &mut self,
        vm: usize,
        node: usize,
        path: &str,
    ) -> Option<(Vec<MemRange>, Vec<Irq>)> {
        let tree = self.tree;
        let windows = match tree.bus_windows(node) {
            Ok(w) => w.unwrap_or_default(),
            Err(e) => {
                self.error(
                    vm,
                    Some("devices"),
                    format!("{path}: {e}"),
                    "fix the host bridge's ranges, or remove it from the VM".to_owned(),
                );
                return None;
            }
        };
        let gic = self.gic?;
        match tree.interrupt_map(node, gic) {
            Ok(intx) => Some((windows, intx.unwrap_or_default())),
            Err(e) => {
                self.error(
                    vm,
                    Some("devices"),
                    format!("{path}: {e}"),
                    "fix the host bridge's interrupt-map, or remove it from the VM".to_owned(),
                );
                None
            }
        }
    }

    /// The stream IDs of device `node` on the SMMUs the hypervisor drives (`iommus` with one
    /// cell, or `iommu-map`), and whether it names an IOMMU the hypervisor does not drive;
    /// `None` (reported) when the properties are malformed.
    fn device_streams(
        &mut self,
        vm: usize,
        node: usize,
        path: &str,
    ) -> Option<(Vec<Streams>, bool)> {
        let tree = self.tree;
        let mut streams = Vec::new();
        let mut foreign = false;
        let smmu_of = |phandle: u32| {
            self.platform
                .smmus
                .iter()
                .find(|s| s.phandle == Some(phandle))
                .map(|s| s.node.clone())
        };
        if let Some(value) = tree.prop(node, "iommus") {
            // Every SMMUv3 binding has #iommu-cells = <1>: the stream ID.
            for entry in value.chunks(8) {
                let (Some(phandle), Some(sid)) = (be32(entry, 0), be32(entry, 4)) else {
                    if be32(entry, 0).is_some_and(|p| smmu_of(p).is_none()) {
                        foreign = true;
                        break;
                    }
                    self.error(
                        vm,
                        Some("devices"),
                        format!("{path}'s iommus is not a list of <&smmu stream-id> pairs"),
                        "fix the device node's iommus".to_owned(),
                    );
                    return None;
                };
                match smmu_of(phandle) {
                    Some(smmu) => streams.push(Streams {
                        smmu,
                        first: sid,
                        count: 1,
                    }),
                    // Another kind of IOMMU, whose cells this reader does not know.
                    None => {
                        foreign = true;
                        break;
                    }
                }
            }
        }
        if let Some(value) = tree.prop(node, "iommu-map") {
            if value.is_empty() || !value.len().is_multiple_of(16) {
                self.error(
                    vm,
                    Some("devices"),
                    format!("{path}'s iommu-map is not a list of <rid-base &smmu sid-base length>"),
                    "fix the host bridge's iommu-map".to_owned(),
                );
                return None;
            }
            for entry in value.chunks_exact(16) {
                let word = |n: usize| be32(entry, n * 4).unwrap_or(0);
                let (phandle, first, count) = (word(1), word(2), word(3));
                let Some(smmu) = smmu_of(phandle) else {
                    foreign = true;
                    continue;
                };
                if count == 0 || u64::from(first) + u64::from(count) > 1 << 32 {
                    self.error(
                        vm,
                        Some("devices"),
                        format!(
                            "{path}'s iommu-map has an entry of {count} stream IDs from {}",
                            hex(u64::from(first))
                        ),
                        "give every entry a length of at least 1 that stays below 2^32".to_owned(),
                    );
                    return None;
                }
                streams.push(Streams { smmu, first, count });
            }
        }
        Some((streams, foreign))
    }

    /// Why node `i` cannot be passed through, if it cannot.
    fn not_a_device(&self, i: usize) -> Option<&'static str> {
        let tree = self.tree;
        if i == 0 {
            return Some("the root node");
        }
        if self.gic.is_some_and(|g| self.within(i, g)) {
            return Some("the interrupt controller the hypervisor drives");
        }
        if tree.find_path("/cpus").is_some_and(|c| self.within(i, c)) {
            return Some("a CPU");
        }
        if tree.is_device_type(i, "memory")
            || tree
                .find_path("/reserved-memory")
                .is_some_and(|r| self.within(i, r))
        {
            return Some("memory");
        }
        if tree
            .find_path("/hypervisor")
            .is_some_and(|h| self.within(i, h))
        {
            return Some("part of the hypervisor's configuration");
        }
        let path = tree.path(i);
        if self.platform.smmus.iter().any(|s| s.node == path) {
            return Some("the SMMU the hypervisor drives");
        }
        if self
            .platform
            .console
            .as_ref()
            .is_some_and(|c| c.node == path)
        {
            return Some("the hypervisor's own console");
        }
        None
    }

    /// The GIC interrupts of device node `node`; `None` (reported) when they are not usable.
    fn device_interrupts(&mut self, vm: usize, node: usize, path: &str) -> Option<Vec<Irq>> {
        let tree = self.tree;
        let gic = self.gic?;
        let gic_phandle = tree.phandle(gic);
        let not_gic = |parent: u32| {
            format!(
                "{path}'s interrupt parent (phandle {}) is not the GIC {}",
                hex(u64::from(parent)),
                tree.path(gic)
            )
        };
        let fix =
            "only devices wired to the GIC can be passed through: remove it from the VM".to_owned();
        if let Some(value) = tree.prop(node, "interrupts-extended") {
            let cells = tree
                .u32_prop(gic, "#interrupt-cells")
                .ok()
                .flatten()
                .unwrap_or(3);
            let stride = (cells as usize + 1) * 4;
            if value.is_empty() || value.len() % stride != 0 {
                self.error(
                    vm,
                    Some("devices"),
                    format!("{path}'s interrupts-extended is not a list of GIC specifiers"),
                    fix,
                );
                return None;
            }
            let mut irqs = Vec::new();
            for spec in value.chunks_exact(stride) {
                let parent = be32(spec, 0).unwrap_or(0);
                if Some(parent) != gic_phandle {
                    self.error(vm, Some("devices"), not_gic(parent), fix);
                    return None;
                }
                let word = |n: usize| be32(spec, 4 + n * 4).unwrap_or(u32::MAX);
                match decode_irq(word(0), word(1), word(2)) {
                    Some(irq) => irqs.push(irq),
                    None => {
                        self.error(
                            vm,
                            Some("devices"),
                            format!("{path}'s interrupts-extended has a bad GIC specifier"),
                            "fix the device node".to_owned(),
                        );
                        return None;
                    }
                }
            }
            return Some(irqs);
        }
        if tree.prop(node, "interrupts").is_none() {
            return Some(Vec::new());
        }
        if let (Some(parent), Some(g)) = (tree.interrupt_parent(node), gic_phandle) {
            if parent != g {
                self.error(vm, Some("devices"), not_gic(parent), fix);
                return None;
            }
        }
        match interrupts(tree, node, gic) {
            Ok(irqs) => Some(irqs.unwrap_or_default()),
            Err(e) => {
                self.error(
                    vm,
                    Some("devices"),
                    format!("{path}: {e}"),
                    "fix the device node's interrupts, or remove it from the VM".to_owned(),
                );
                None
            }
        }
    }

    fn modules(&mut self, vm: usize, short: &str) -> Vec<Module> {
        let tree = self.tree;
        let children = self.children(vm);
        let bus = if children.iter().any(|&c| tree.prop(c, "reg").is_some()) {
            self.cells(vm)
        } else {
            None
        };
        let mut out: Vec<Module> = Vec::new();
        // Every module node of a known kind, whether or not its `reg` could be read.
        let mut kinds: Vec<(ModuleKind, String)> = Vec::new();
        for c in children {
            if !tree.enabled(c) {
                continue;
            }
            let path = tree.path(c);
            self.unknown_properties(c, &MODULE_PROPS);
            let kind = if tree.has_compatible(c, &["multiboot,kernel"]) {
                ModuleKind::Kernel
            } else if tree.has_compatible(c, &["multiboot,ramdisk"]) {
                ModuleKind::Ramdisk
            } else if tree.has_compatible(c, &["multiboot,device-tree"]) {
                ModuleKind::DeviceTree
            } else {
                let what = match tree.prop(c, "compatible") {
                    None => "missing: the node is not a known module".to_owned(),
                    Some(v) => format!("{} is not a known module", string_list(v)),
                };
                self.error(
                    c,
                    Some("compatible"),
                    what,
                    "use \"multiboot,kernel\", \"multiboot,ramdisk\" or \"multiboot,device-tree\", each followed by \"multiboot,module\"".to_owned(),
                );
                continue;
            };
            if let Some((_, first)) = kinds.iter().find(|(k, _)| *k == kind) {
                let first = first.rsplit('/').next().unwrap_or_default().to_owned();
                self.error(
                    c,
                    Some("compatible"),
                    format!(
                        "a second {} module; {short} already has {first}",
                        kind_name(kind)
                    ),
                    "keep one module of each kind per VM".to_owned(),
                );
                continue;
            }
            kinds.push((kind, path.clone()));
            let reg = match (tree.prop(c, "reg"), bus) {
                (None, _) => {
                    self.error(
                        c,
                        Some("reg"),
                        "missing: where did the boot loader put the image?".to_owned(),
                        format!(
                            "add reg = <address size>; in {short}'s #address-cells and #size-cells"
                        ),
                    );
                    continue;
                }
                (Some(_), None) => continue,
                (Some(_), Some(bus)) => self.ranges(c, "reg", &bus),
            };
            let Some(reg) = reg else { continue };
            let r = match reg.as_slice() {
                [r] => *r,
                _ => {
                    self.error(
                        c,
                        Some("reg"),
                        format!("has {} ranges; a module is one range", reg.len()),
                        "give the module one (address, size) pair".to_owned(),
                    );
                    continue;
                }
            };
            if r.size == 0 {
                self.error(
                    c,
                    Some("reg"),
                    format!("is empty (size 0 at {})", hex(r.base)),
                    "set the image's size in bytes".to_owned(),
                );
                continue;
            }
            if r.end().is_none() {
                self.error(
                    c,
                    Some("reg"),
                    format!("{} ends beyond 2^64", range(r)),
                    "fix the address or size".to_owned(),
                );
                continue;
            }
            let raw = match tree.prop(c, "tandem,format").map(trim_nul) {
                None => false,
                Some(b"raw") => true,
                Some(other) => {
                    self.error(
                        c,
                        Some("tandem,format"),
                        format!(
                            "is \"{}\"; the only format is \"raw\"",
                            String::from_utf8_lossy(other)
                        ),
                        "set tandem,format = \"raw\"; for a raw binary, or leave it out for an arm64 Image or ELF".to_owned(),
                    );
                    false
                }
            };
            let load_address = match tree.prop(c, "tandem,load-address") {
                None => None,
                Some(v) => match v.len() {
                    4 => read_cells(v, 1),
                    8 => read_cells(v, 2),
                    _ => {
                        self.error(
                            c,
                            Some("tandem,load-address"),
                            "must be one or two 32-bit cells".to_owned(),
                            "write it as tandem,load-address = <0x0 0x50080000>;".to_owned(),
                        );
                        None
                    }
                },
            };
            if load_address.is_some() && !raw {
                self.error(
                    c,
                    Some("tandem,load-address"),
                    "is only for raw images; Images and ELF files say where they go".to_owned(),
                    "add tandem,format = \"raw\"; or remove tandem,load-address".to_owned(),
                );
            }
            out.push(Module {
                node: path,
                kind,
                range: r,
                raw,
                load_address,
            });
        }
        if !kinds.iter().any(|(k, _)| *k == ModuleKind::Kernel) {
            self.error(
                vm,
                None,
                "has no kernel module".to_owned(),
                format!(
                    "add a kernel@<address> child to {short} with compatible = \"multiboot,kernel\", \"multiboot,module\"; and reg = <address size>;"
                ),
            );
        }
        out
    }

    fn shmem(
        &mut self,
        i: usize,
        cells: Option<Bus<'static>>,
        vms: &[VmDraft],
        kind: Sharing,
    ) -> ShmemDraft {
        let tree = self.tree;
        let path = tree.path(i);
        let short = tree.nodes[i].node.name.to_owned();
        self.unknown_properties(i, kind.props());
        self.require_compatible(i, kind.compatible());
        let mut memory = None;
        match cells.map(|bus| self.ranges(i, "memory", &bus)) {
            None => {}
            Some(None) if tree.prop(i, "memory").is_none() => self.error(
                i,
                Some("memory"),
                "missing".to_owned(),
                "add memory = <address size>; in /hypervisor's cells".to_owned(),
            ),
            Some(None) => {}
            Some(Some(ranges)) => match ranges.as_slice() {
                [r] if r.size == 0 => self.error(
                    i,
                    Some("memory"),
                    format!("is empty (size 0 at {})", hex(r.base)),
                    "give it a size, a multiple of 4 KiB".to_owned(),
                ),
                [r] if r.end().is_none() => self.error(
                    i,
                    Some("memory"),
                    format!("{} ends beyond 2^64", range(*r)),
                    "shrink it".to_owned(),
                ),
                [r] => {
                    if !aligned(*r) {
                        self.error(
                            i,
                            Some("memory"),
                            format!("{} is not 4 KiB aligned", range(*r)),
                            align_fix(*r),
                        );
                    }
                    memory = Some(*r);
                }
                _ => self.error(
                    i,
                    Some("memory"),
                    format!("has {} ranges; shared memory is one range", ranges.len()),
                    match kind {
                        Sharing::Shmem => "split it into one shmem@ node per range".to_owned(),
                        Sharing::Vsock => "give the vsock rings one range".to_owned(),
                    },
                ),
            },
        }

        let mut members: Vec<usize> = Vec::new();
        let handles = self.phandles(i, "vms");
        if tree.prop(i, "vms").is_none() {
            self.error(
                i,
                Some("vms"),
                "missing".to_owned(),
                match kind {
                    Sharing::Shmem => "list the VMs that share it, e.g. vms = <&linux &secure>;",
                    Sharing::Vsock => {
                        "name the VM that drives the device, then the one that serves it: vms = <&linux &secure>;"
                    }
                }
                .to_owned(),
            );
        }
        for (n, handle) in handles.clone().unwrap_or_default().into_iter().enumerate() {
            let vm = vms.iter().position(|v| v.phandle == Some(handle));
            match vm {
                Some(v) if members.contains(&v) => self.error(
                    i,
                    Some("vms"),
                    format!("lists {} twice", vms.get(v).map_or("", |d| d.name.as_str())),
                    "list each VM once".to_owned(),
                ),
                Some(v) => members.push(v),
                None => {
                    let what = match self.node_of(handle) {
                        Some(node) if !tree.enabled(node) => {
                            format!("entry {n} is {}, which is disabled", tree.path(node))
                        }
                        Some(node) => {
                            format!(
                                "entry {n} is {}, not a vm@ node of /hypervisor",
                                tree.path(node)
                            )
                        }
                        None => format!(
                            "entry {n} (phandle {}) names no node",
                            hex(u64::from(handle))
                        ),
                    };
                    self.error(
                        i,
                        Some("vms"),
                        what,
                        "list only vm@ nodes of /hypervisor, by label: vms = <&linux &secure>;"
                            .to_owned(),
                    );
                }
            }
        }
        if kind == Sharing::Vsock {
            let count = handles.as_ref().map_or(0, Vec::len);
            if count != 2 && tree.prop(i, "vms").is_some() {
                self.error(
                    i,
                    Some("vms"),
                    format!(
                        "names {count} VM{}; a vsock device has a driver VM and a service VM",
                        if count == 1 { "" } else { "s" }
                    ),
                    "write vms = <&driver &service>;, e.g. vms = <&linux &secure>;".to_owned(),
                );
            }
        } else if handles.as_ref().is_some_and(|h| h.len() == 1) && members.len() == 1 {
            self.error(
                i,
                Some("vms"),
                format!(
                    "names only {}; shared memory is shared by two VMs or more",
                    vms.get(members.first().copied().unwrap_or_default())
                        .map_or("", |d| d.name.as_str())
                ),
                format!(
                    "add the other VM to {short}'s vms, or make the range part of that VM's memory"
                ),
            );
        }

        let prop = kind.spi_property();
        let mut doorbells = Vec::new();
        if let Some(value) = tree.prop(i, prop) {
            if value.len() % 4 != 0 {
                self.error(
                    i,
                    Some(prop),
                    "is not a list of 32-bit SPI numbers".to_owned(),
                    format!("write it as {prop} = <100 101>;"),
                );
            } else {
                doorbells = value.chunks_exact(4).filter_map(|c| be32(c, 0)).collect();
                let count = handles.as_ref().map_or(0, Vec::len);
                if doorbells.len() != count {
                    self.error(
                        i,
                        Some(prop),
                        format!("has {} entries but vms has {count}", doorbells.len()),
                        "give one SPI number per VM, in the order of vms".to_owned(),
                    );
                }
                for &spi in &doorbells {
                    if spi > 987 {
                        self.error(
                            i,
                            Some(prop),
                            format!("SPI {spi} is out of range 0-987"),
                            "use SPI numbers (INTID - 32) from 0 to 987".to_owned(),
                        );
                    }
                    // The guest DTB could not be generated: both would claim one SPI.
                    if spi == CONSOLE_SPI {
                        self.error(
                            i,
                            Some(prop),
                            format!("SPI {spi} is every VM's virtual console's"),
                            match kind {
                                Sharing::Shmem => "pick another SPI for the doorbell".to_owned(),
                                Sharing::Vsock => format!("pick another SPI in {prop}"),
                            },
                        );
                    }
                }
            }
        }
        ShmemDraft {
            kind,
            path,
            memory,
            vms: members,
            doorbells,
        }
    }
}

impl Reader<'_, '_, '_> {
    /// What only a `vsock@N` node has: its `window` and `cids`, and `spis` required.
    fn vsock(&mut self, i: usize, cells: Option<Bus<'static>>) -> VsockDraft {
        let tree = self.tree;
        if tree.prop(i, "spis").is_none() {
            self.error(
                i,
                Some("spis"),
                "missing".to_owned(),
                "give the driver's device SPI and the service's doorbell SPI: spis = <48 102>;"
                    .to_owned(),
            );
        }
        let mut window = None;
        match (tree.prop(i, "window"), cells) {
            (None, _) => self.error(
                i,
                Some("window"),
                "missing".to_owned(),
                "give the page where the driver VM sees the device, e.g. window = <0x0 0x0b000000>;"
                    .to_owned(),
            ),
            (Some(_), None) => {}
            (Some(value), Some(bus)) => {
                let cell_bytes = bus.address_cells as usize * 4;
                match read_cells(value, bus.address_cells) {
                    Some(at) if value.len() == cell_bytes && at % PAGE == 0 => window = Some(at),
                    Some(at) if value.len() == cell_bytes => self.error(
                        i,
                        Some("window"),
                        format!("{} is not 4 KiB aligned", hex(at)),
                        format!("use {}", hex(at & !(PAGE - 1))),
                    ),
                    _ => self.error(
                        i,
                        Some("window"),
                        format!("is not one address of {} cells", bus.address_cells),
                        "write one address in /hypervisor's #address-cells".to_owned(),
                    ),
                }
            }
        }
        let mut cids = (DEFAULT_DRIVER_CID, DEFAULT_SERVICE_CID);
        if let Some(value) = tree.prop(i, "cids") {
            match (value.len(), be32(value, 0), be32(value, 4)) {
                (8, Some(driver), Some(service)) => {
                    // The reserved ones: any, hypervisor, local, host.
                    let reserved = |c: u32| c <= 2 || c == u32::MAX;
                    if reserved(driver) || reserved(service) || driver == service {
                        self.error(
                            i,
                            Some("cids"),
                            format!("<{driver} {service}> uses a reserved CID (0, 1, 2, 0xffffffff) or one CID twice"),
                            "give the two VMs different CIDs from 3 up, e.g. cids = <4 3>;".to_owned(),
                        );
                    } else {
                        cids = (driver, service);
                    }
                }
                _ => self.error(
                    i,
                    Some("cids"),
                    "is not two 32-bit CIDs".to_owned(),
                    "write cids = <driver service>;, e.g. cids = <4 3>;".to_owned(),
                ),
            }
        }
        VsockDraft { window, cids }
    }
}

/// A GIC specifier `<type number flags>`, if valid.
fn decode_irq(kind: u32, number: u32, flags: u32) -> Option<Irq> {
    use crate::board::IrqKind;
    let kind = match kind {
        0 if number < 988 => IrqKind::Spi,
        1 if number < 16 => IrqKind::Ppi,
        _ => return None,
    };
    Some(Irq {
        kind,
        number,
        flags,
    })
}

/// Whether `label` is 1 to 15 of `[a-z0-9_-]`.
pub(crate) fn valid_label(label: &str) -> bool {
    (1..=15).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether both ends of `r` fall on 4 KiB pages.
pub(crate) fn aligned(r: MemRange) -> bool {
    r.base.is_multiple_of(PAGE) && r.size.is_multiple_of(PAGE)
}

fn align_fix(r: MemRange) -> String {
    let base = r.base & !(PAGE - 1);
    let end = r
        .end()
        .map_or(!(PAGE - 1), |e| e.saturating_add(PAGE - 1) & !(PAGE - 1));
    format!(
        "start and end it on 4 KiB boundaries, e.g. {}",
        range(MemRange {
            base,
            size: end.saturating_sub(base)
        })
    )
}

/// `"a", "b"` for a string-list value.
fn string_list(value: &[u8]) -> String {
    let items: Vec<String> = trim_nul(value)
        .split(|&b| b == 0)
        .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
        .collect();
    items.join(", ")
}

pub(crate) fn kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Kernel => "kernel",
        ModuleKind::Ramdisk => "ramdisk",
        ModuleKind::DeviceTree => "device-tree",
    }
}
