//! The `/hypervisor` binding: which VMs run, on which CPUs, with which memory, devices and
//! images, and the shared memory between them. One parser and validator serves the host
//! tool (`cargo xtask check-config`) and the hypervisor at boot.
//!
//! The binding is documented in `docs/binding.md`.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::board::{Irq, MemRange, Platform};
use crate::parse::with_tree;

mod read;
mod text;
mod validate;

pub use read::{DEFAULT_DRIVER_CID, DEFAULT_SERVICE_CID};
pub use validate::MAX_VMS;

/// Reads and validates the `/hypervisor` node of `blob`, the board's device tree.
///
/// `platform` is the board read from the same blob; `hypervisor_memory` lists the ranges
/// the hypervisor itself occupies (its image and data), which no VM, shared memory or module
/// may overlap. Without a `/hypervisor` node the report is empty. Every error is collected,
/// not just the first; errors and warnings come in tree order. Never panics, whatever the
/// bytes.
pub fn check(blob: &[u8], platform: &Platform, hypervisor_memory: &[MemRange]) -> ConfigReport {
    let result = with_tree(blob, |tree, _| {
        let draft = read::read(tree, platform)?;
        let world = validate::World {
            platform,
            hypervisor: hypervisor_memory,
            mmio: validate::mmio_windows(tree, platform),
        };
        let (config, mut errors, mut warnings) = validate::validate(draft, &world);
        // Stable sorts: within one node, the order the checks found things in.
        let position = |e: &ConfigError| {
            (0..tree.nodes.len())
                .find(|&i| tree.nodes[i].path == e.node)
                .unwrap_or(usize::MAX)
        };
        errors.sort_by_cached_key(position);
        warnings.sort_by_cached_key(position);
        Some(ConfigReport {
            config,
            errors,
            warnings,
        })
    });
    match result {
        Ok(report) => report.unwrap_or_default(),
        Err(e) => ConfigReport {
            config: None,
            errors: alloc::vec![ConfigError {
                node: "/".to_owned(),
                property: None,
                problem: format!("the device tree cannot be read: {e}"),
                fix: "check it with dtc -I dtb -O dts".to_owned(),
            }],
            warnings: Vec::new(),
        },
    }
}

/// Everything under `/hypervisor`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervisorConfig {
    /// VMs in DT order; `VmConfig::index` is the position here.
    pub vms: Vec<VmConfig>,
    /// Shared-memory regions between VMs.
    pub shmem: Vec<ShmemConfig>,
    /// Vsock devices: a driver VM reaching a service VM over `AF_VSOCK`.
    pub vsock: Vec<VsockDevice>,
    /// `tandem,unclean-memory`: RAM the board says may hold data when the hypervisor
    /// starts (left by a boot loader or a previous run). The part of each VM's memory in
    /// these ranges is zeroed before the VM first boots; the rest is taken as clean, as
    /// zeroing a large VM's memory costs more boot time than the whole hypervisor may.
    pub unclean_memory: Vec<MemRange>,
    /// Measured launch and attestation: the device secret and the VMs that may attest.
    pub attestation: Option<Attestation>,
}

/// `tandem,device-secret` and the VMs with `tandem,attestation` (`docs/attestation.md`).
#[derive(Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The board's unique device secret: the root of every derived key. Never mapped into
    /// a VM, and left out of `Debug`.
    pub device_secret: [u8; 32],
    /// Indices into `HypervisorConfig::vms` of the VMs that get their identity.
    pub vms: Vec<usize>,
}

impl fmt::Debug for Attestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attestation")
            .field("device_secret", &"<secret>")
            .field("vms", &self.vms)
            .finish()
    }
}

impl HypervisorConfig {
    /// The parts of `vm`'s memory (and of the shared memory it is in) that must be zeroed
    /// before it first boots: where they overlap `tandem,unclean-memory`.
    pub fn unclean_parts(&self, vm: &VmConfig) -> Vec<MemRange> {
        let shared = self
            .shmem
            .iter()
            .filter(|s| s.vms.first() == Some(&vm.index))
            .map(|s| s.memory);
        let mut parts = Vec::new();
        for owned in vm.memory.iter().copied().chain(shared) {
            for dirty in &self.unclean_memory {
                let base = owned.base.max(dirty.base);
                let end = owned
                    .base
                    .saturating_add(owned.size)
                    .min(dirty.base.saturating_add(dirty.size));
                if base < end {
                    parts.push(MemRange {
                        base,
                        size: end - base,
                    });
                }
            }
        }
        parts
    }
}

/// One `vm@N` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Full path, e.g. `/hypervisor/vm@0`.
    pub node: String,
    /// Position among the VMs (DT order).
    pub index: usize,
    /// `label`: the VM's name in console tags and logs.
    pub label: String,
    /// `cpus`: indices into `Platform::cpus`; vCPU `i` runs on physical CPU `cpus[i]`.
    pub cpus: Vec<usize>,
    /// `memory`: host physical ranges, sorted; the VM sees them at the same addresses.
    pub memory: Vec<MemRange>,
    /// `devices`: host DT nodes passed through to the VM.
    pub devices: Vec<Device>,
    /// `bootargs`: the guest kernel's command line.
    pub bootargs: Option<String>,
    /// `tandem,on-crash`.
    pub on_crash: OnCrash,
    /// `tandem,isolated`: shares nothing but declared shared memory.
    pub isolated: bool,
    /// Module child nodes (kernel, ramdisk, device tree).
    pub modules: Vec<Module>,
}

impl VmConfig {
    /// The VM's configuration as the hypervisor understood it, as text that depends on
    /// nothing else (not on where the boot loader put the images): what is measured at
    /// launch as the VM's config digest.
    pub fn canonical(&self) -> String {
        let mut s = format!(
            "label={}\ncpus={:?}\nmemory={:?}\nbootargs={:?}\non-crash={:?}\nisolated={}\n",
            self.label, self.cpus, self.memory, self.bootargs, self.on_crash, self.isolated
        );
        for d in &self.devices {
            s.push_str(&format!(
                "device={} regs={:?} interrupts={:?}\n",
                d.node, d.regs, d.interrupts
            ));
            if !d.streams.is_empty() {
                s.push_str(&format!("streams={:?}\n", d.streams));
            }
        }
        s
    }

    /// The module of `kind`, if the VM has one.
    pub fn module(&self, kind: ModuleKind) -> Option<&Module> {
        self.modules.iter().find(|m| m.kind == kind)
    }
}

/// What a VM does when it crashes in a way that cannot be reflected to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnCrash {
    /// Stop the VM (the default).
    #[default]
    Stop,
    /// Restart it from pristine copies of its images.
    Restart,
}

/// A host device passed through to a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Full path of the host node.
    pub node: String,
    /// Its phandle in the host DT.
    pub phandle: u32,
    /// Its MMIO windows, translated to CPU physical addresses: its `reg` entries and, for a
    /// PCI host bridge, the bus windows of its `ranges` (where its devices' BARs live).
    pub regs: Vec<MemRange>,
    /// Its interrupts (GIC specifiers): `interrupts`, or the GIC interrupts a PCI host
    /// bridge's `interrupt-map` routes INTx to.
    pub interrupts: Vec<Irq>,
    /// The stream IDs its DMA carries, from `iommus` or `iommu-map`, on SMMUs the
    /// hypervisor drives.
    pub streams: Vec<Streams>,
}

/// A run of stream IDs on one SMMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streams {
    /// The SMMU's node path (one of `Platform::smmus`).
    pub smmu: String,
    /// First stream ID.
    pub first: u32,
    /// How many consecutive IDs, at least 1.
    pub count: u32,
}

impl Streams {
    /// One past the last ID.
    pub fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.count)
    }

    /// Whether both runs are on the same SMMU and share an ID.
    pub fn overlaps(&self, other: &Streams) -> bool {
        self.smmu == other.smmu
            && u64::from(self.first) < other.end()
            && u64::from(other.first) < self.end()
    }
}

/// What a module holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `multiboot,kernel`: the image the VM boots.
    Kernel,
    /// `multiboot,ramdisk`: an initrd, handed over in `/chosen`.
    Ramdisk,
    /// `multiboot,device-tree`: the user's own guest DTB, checked instead of generated.
    DeviceTree,
}

/// A module child node: an image a boot loader placed in memory for the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Full path of the module node.
    pub node: String,
    /// Which kind of module.
    pub kind: ModuleKind,
    /// Where the boot loader put it (host physical).
    pub range: MemRange,
    /// `tandem,format = "raw"`: a raw binary, not an Image or ELF.
    pub raw: bool,
    /// `tandem,load-address`: where a raw image goes in the VM (default: its memory start).
    pub load_address: Option<u64>,
}

/// One `shmem@N` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmemConfig {
    /// Full path.
    pub node: String,
    /// `memory`: the shared range (host physical == guest physical).
    pub memory: MemRange,
    /// `vms`: indices into `HypervisorConfig::vms`, at least two.
    pub vms: Vec<usize>,
    /// `doorbells`: the virtual SPI raised in `vms[i]`, one per VM.
    pub doorbells: Vec<u32>,
}

/// One `vsock@N` node: a virtio-mmio socket device in the driver VM, served by the
/// hypervisor's backend, which passes the streams to the service VM through record rings
/// in `memory` (see `docs/secure-guest.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockDevice {
    /// Full path.
    pub node: String,
    /// `window`: the page where the driver VM sees the device's registers.
    pub window: u64,
    /// `memory`: the ring region, shared by the hypervisor and the service VM only.
    pub memory: MemRange,
    /// `vms[0]`: index of the VM that drives the device (Linux).
    pub driver: usize,
    /// `vms[1]`: index of the VM that serves it (the secure guest).
    pub service: usize,
    /// `spis[0]`: the device's interrupt in the driver VM.
    pub driver_spi: u32,
    /// `spis[1]`: the doorbell raised in the service VM when records arrive.
    pub service_spi: u32,
    /// `cids[0]`: the driver's CID (default 4).
    pub driver_cid: u32,
    /// `cids[1]`: the service's CID (default 3).
    pub service_cid: u32,
}

/// One problem in the configuration, naming where it is and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Full path of the node at fault.
    pub node: String,
    /// The property at fault, if one is.
    pub property: Option<String>,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.property {
            Some(p) => write!(f, "{}: {}: {}; {}", self.node, p, self.problem, self.fix),
            None => write!(f, "{}: {}; {}", self.node, self.problem, self.fix),
        }
    }
}

/// The outcome of reading `/hypervisor`: the config when it is valid, every error
/// otherwise, and warnings either way.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfigReport {
    /// `Some` exactly when the DT has a `/hypervisor` node and `errors` is empty.
    pub config: Option<HypervisorConfig>,
    /// Everything that makes the config unusable, all of it, in DT order.
    pub errors: Vec<ConfigError>,
    /// Things that are suspicious but allowed (unknown properties, ...).
    pub warnings: Vec<ConfigError>,
}
