//! The checks that compare nodes: who owns which CPU, byte of RAM, device and interrupt.
//!
//! Each conflict is reported once, on the later of the two nodes in tree order, naming the
//! earlier one.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::read::{kind_name, problem, Draft, Sharing, ShmemDraft, VmDraft, VsockDraft, PAGE};
use super::text::{clear_of, hex, range, ranges, some_of};
use super::{Attestation, ConfigError, HypervisorConfig, ShmemConfig, VmConfig, VsockDevice};
use crate::board::{IrqKind, MemRange, Platform};
use crate::guest_dt::CONSOLE_SPI;
use crate::parse::Tree;

/// VMIDs are 8 bits and VMID 0 is the hypervisor's own (no guest runs with it).
pub const MAX_VMS: usize = 255;

/// Everything the cross-checks look at besides the drafts.
pub(crate) struct World<'p> {
    pub platform: &'p Platform,
    pub hypervisor: &'p [MemRange],
    /// Device register windows outside RAM, with the node they belong to.
    pub mmio: Vec<(MemRange, String)>,
}

/// The MMIO windows of every node with a translatable `reg` outside RAM, except memory,
/// reserved memory, CPUs and the hypervisor's configuration.
pub(crate) fn mmio_windows(tree: &Tree<'_, '_>, platform: &Platform) -> Vec<(MemRange, String)> {
    let skip: Vec<usize> = ["/cpus", "/reserved-memory", "/hypervisor"]
        .iter()
        .filter_map(|p| tree.find_path(p))
        .collect();
    let mut out = Vec::new();
    for i in 1..tree.nodes.len() {
        if tree.is_device_type(i, "memory")
            || skip.contains(&i)
            || tree.ancestors(i).iter().any(|a| skip.contains(a))
        {
            continue;
        }
        let Ok(Some(regs)) = tree.regs(i) else {
            continue;
        };
        for r in regs {
            if r.size != 0 && !covered(r, &platform.memory) {
                out.push((r, tree.path(i)));
            }
        }
    }
    out
}

/// Whether `banks` (sorted by base, disjoint) cover every byte of `r`.
pub(crate) fn covered(r: MemRange, banks: &[MemRange]) -> bool {
    let end = u128::from(r.base) + u128::from(r.size);
    let mut at = u128::from(r.base);
    loop {
        if at >= end {
            return true;
        }
        let Some(bank) = banks
            .iter()
            .find(|b| u128::from(b.base) <= at && at < u128::from(b.base) + u128::from(b.size))
        else {
            return false;
        };
        at = u128::from(bank.base) + u128::from(bank.size);
    }
}

/// The 4 KiB pages `r` touches, as a range.
pub(crate) fn pages(r: MemRange) -> MemRange {
    let base = r.base & !(PAGE - 1);
    let end =
        (u128::from(r.base) + u128::from(r.size)).div_ceil(u128::from(PAGE)) * u128::from(PAGE);
    MemRange {
        base,
        size: u64::try_from(end - u128::from(base)).unwrap_or(u64::MAX),
    }
}

struct Checker<'w, 'p> {
    world: &'w World<'p>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker<'_, '_> {
    fn error(&mut self, node: &str, property: &str, what: String, fix: String) {
        self.errors.push(problem(node, Some(property), what, fix));
    }

    fn ram(&self) -> String {
        ranges(&self.world.platform.memory)
    }

    /// Checks one range a VM or shmem owns against the hypervisor, reserved memory, device
    /// windows and the RAM banks.
    fn owned_range(&mut self, node: &str, property: &str, owner: &str, r: MemRange) {
        for &h in self.world.hypervisor {
            if h.overlaps(&r) {
                self.error(
                    node,
                    property,
                    format!(
                        "{} overlaps the hypervisor's own memory {}",
                        range(r),
                        range(h)
                    ),
                    format!("move {owner}'s range clear of it: {}", clear_of(h)),
                );
            }
        }
        for res in &self.world.platform.reserved {
            if res.range.overlaps(&r) {
                let what = if res.name == "/memreserve/" {
                    format!("the /memreserve/ entry {}", range(res.range))
                } else {
                    format!("/reserved-memory/{} {}", res.name, range(res.range))
                };
                self.error(
                    node,
                    property,
                    format!("{} overlaps {what}", range(r)),
                    format!("move {owner}'s range clear of it: {}", clear_of(res.range)),
                );
            }
        }
        let devices: Vec<String> = self
            .world
            .mmio
            .iter()
            .filter(|(w, _)| w.overlaps(&r))
            .map(|(w, n)| format!("{n} {}", range(*w)))
            .collect();
        if !devices.is_empty() {
            self.error(
                node,
                property,
                format!("{} overlaps the MMIO of {}", range(r), some_of(&devices)),
                format!(
                    "that is device address space, not RAM: pick a range inside RAM {}",
                    self.ram()
                ),
            );
        } else if !covered(r, &self.world.platform.memory) {
            self.error(
                node,
                property,
                format!("{} is not inside RAM", range(r)),
                format!("RAM is {}: move the range inside it", self.ram()),
            );
        }
    }
}

/// Runs every cross-check; returns the config when neither the reading nor the checks
/// found an error.
pub(crate) fn validate(
    draft: Draft,
    world: &World<'_>,
) -> (Option<HypervisorConfig>, Vec<ConfigError>, Vec<ConfigError>) {
    let mut c = Checker {
        world,
        errors: draft.errors,
        warnings: draft.warnings,
    };
    let vms = &draft.vms;
    if vms.len() > MAX_VMS {
        c.errors.push(problem(
            &draft.hypervisor,
            None,
            format!(
                "has {} VMs; 8-bit VMIDs with VMID 0 reserved allow at most {MAX_VMS}",
                vms.len()
            ),
            format!("remove {} of them", vms.len() - MAX_VMS),
        ));
    }
    for (b, vm) in vms.iter().enumerate() {
        let earlier = vms.get(..b).unwrap_or_default();
        check_vm(&mut c, vm, earlier);
    }
    // A vsock node's ring region is checked like shared memory: against every VM, every
    // other region, the hypervisor and the devices; its SPIs like doorbells.
    let mut regions: Vec<&ShmemDraft> = draft.shmem.iter().collect();
    regions.extend(draft.vsock.iter().map(|(s, _)| s));
    check_modules(&mut c, vms, &regions);
    for (s, shmem) in regions.iter().enumerate() {
        let earlier = regions.get(..s).unwrap_or_default();
        check_shmem(&mut c, shmem, earlier, vms);
    }
    for (n, (region, vsock)) in draft.vsock.iter().enumerate() {
        let earlier = draft.vsock.get(..n).unwrap_or_default();
        check_vsock(&mut c, region, vsock, earlier, vms);
    }
    isolation(&mut c, vms);
    for r in &draft.unclean {
        if r.size == 0 || !covered(*r, &c.world.platform.memory) {
            c.warnings.push(problem(
                &draft.hypervisor,
                Some("tandem,unclean-memory"),
                format!("{} is not inside RAM; nothing there is zeroed", range(*r)),
                format!("list ranges of RAM {}", c.ram()),
            ));
        }
    }

    let attested: Vec<usize> = vms
        .iter()
        .enumerate()
        .filter(|(_, v)| v.attestation)
        .map(|(i, _)| i)
        .collect();
    if draft.device_secret.is_none() {
        for v in vms.iter().filter(|v| v.attestation) {
            c.error(
                &v.path,
                "tandem,attestation",
                "the board has no device secret to derive the VM's identity from".to_owned(),
                "give /hypervisor a tandem,device-secret (32 bytes), or remove tandem,attestation"
                    .to_owned(),
            );
        }
    }
    let (errors, warnings) = (c.errors, c.warnings);
    if !errors.is_empty() {
        return (None, errors, warnings);
    }
    let config = HypervisorConfig {
        vms: draft
            .vms
            .into_iter()
            .enumerate()
            .map(|(index, vm)| VmConfig {
                node: vm.path,
                index,
                label: vm.label.unwrap_or_default(),
                cpus: vm.cpus.into_iter().map(|(cpu, _)| cpu).collect(),
                memory: vm.memory,
                devices: vm.devices.into_iter().map(|d| d.device).collect(),
                bootargs: vm.bootargs,
                on_crash: vm.on_crash,
                isolated: vm.isolated,
                modules: vm.modules,
            })
            .collect(),
        shmem: draft
            .shmem
            .into_iter()
            .filter_map(|s| {
                Some(ShmemConfig {
                    node: s.path,
                    memory: s.memory?,
                    vms: s.vms,
                    doorbells: s.doorbells,
                })
            })
            .collect(),
        vsock: draft
            .vsock
            .into_iter()
            .filter_map(|(s, v)| {
                Some(VsockDevice {
                    node: s.path,
                    window: v.window?,
                    memory: s.memory?,
                    driver: *s.vms.first()?,
                    service: *s.vms.get(1)?,
                    driver_spi: *s.doorbells.first()?,
                    service_spi: *s.doorbells.get(1)?,
                    driver_cid: v.cids.0,
                    service_cid: v.cids.1,
                })
            })
            .collect(),
        unclean_memory: draft.unclean,
        attestation: draft.device_secret.map(|device_secret| Attestation {
            device_secret,
            vms: attested,
        }),
    };
    (Some(config), errors, warnings)
}

fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn check_vm(c: &mut Checker<'_, '_>, vm: &VmDraft, earlier: &[VmDraft]) {
    let me = short(&vm.path);
    if let Some(label) = &vm.label {
        if let Some(other) = earlier.iter().find(|o| o.label.as_ref() == Some(label)) {
            c.error(
                &vm.path,
                "label",
                format!("\"{label}\" is also the label of {}", short(&other.path)),
                format!("give {me} a label of its own"),
            );
        }
    }
    for (cpu, path) in &vm.cpus {
        if let Some(other) = earlier
            .iter()
            .find(|o| o.cpus.iter().any(|(x, _)| x == cpu))
        {
            c.error(
                &vm.path,
                "cpus",
                format!("{path} is already given to {}", other.name),
                format!(
                    "give each physical CPU to one VM: remove {path} from {me}'s or {}'s cpus",
                    short(&other.path)
                ),
            );
        }
    }
    for &r in &vm.memory {
        for other in earlier {
            for &o in other.memory.iter().filter(|o| o.overlaps(&r)) {
                c.error(
                    &vm.path,
                    "memory",
                    format!(
                        "{} overlaps {}'s memory {}",
                        range(r),
                        other.name,
                        range(o)
                    ),
                    format!(
                        "move {me}'s range to {}, or shrink {}'s; VMs share memory only through shmem@ nodes",
                        clear_of(o),
                        short(&other.path)
                    ),
                );
            }
        }
        c.owned_range(&vm.path, "memory", me, r);
    }
    for d in &vm.devices {
        let dev = &d.device;
        // The VM's virtual console has this SPI: the guest DTB could not be generated.
        let console = dev
            .interrupts
            .iter()
            .any(|i| i.kind == IrqKind::Spi && i.number == CONSOLE_SPI);
        if console {
            c.error(
                &vm.path,
                "devices",
                format!(
                    "{} uses SPI {CONSOLE_SPI}, which is the VM's virtual console's",
                    dev.node
                ),
                format!("remove {} from {me}'s devices", dev.node),
            );
        }
        for other in earlier {
            for od in &other.devices {
                let o = &od.device;
                let other_short = short(&other.path);
                if o.node == dev.node {
                    c.error(
                        &vm.path,
                        "devices",
                        format!("{} is already given to {}", dev.node, other.name),
                        format!(
                            "give each device to one VM: remove it from {me}'s or {other_short}'s devices"
                        ),
                    );
                    continue;
                }
                let shared = dev.interrupts.iter().find(|i| {
                    i.kind == IrqKind::Spi
                        && o.interrupts
                            .iter()
                            .any(|j| j.kind == IrqKind::Spi && j.number == i.number)
                });
                if let Some(irq) = shared {
                    c.error(
                        &vm.path,
                        "devices",
                        format!(
                            "{} uses SPI {}, as does {} of {}",
                            dev.node, irq.number, o.node, other.name
                        ),
                        format!(
                            "an SPI goes to one VM: give {} and {} to the same VM, or leave one out",
                            dev.node, o.node
                        ),
                    );
                }
                let streams = dev
                    .streams
                    .iter()
                    .find_map(|a| o.streams.iter().find(|b| a.overlaps(b)).map(|b| (a, b)));
                if let Some((a, b)) = streams {
                    c.error(
                        &vm.path,
                        "devices",
                        format!(
                            "{} masters DMA as stream IDs [{}, {}) of {}, which overlap those of {} [{}, {}) of {}",
                            dev.node,
                            hex(u64::from(a.first)),
                            hex(a.end()),
                            a.smmu,
                            o.node,
                            hex(u64::from(b.first)),
                            hex(b.end()),
                            other.name
                        ),
                        format!(
                            "a stream ID translates through one VM's stage 2: fix the iommus or iommu-map of {} or {}, or give both to the same VM",
                            dev.node, o.node
                        ),
                    );
                }
                let page = dev.regs.iter().find_map(|&a| {
                    o.regs
                        .iter()
                        .find(|&&b| pages(a).overlaps(&pages(b)))
                        .map(|&b| (a, b))
                });
                if let Some((a, b)) = page {
                    c.error(
                        &vm.path,
                        "devices",
                        format!(
                            "{} {} shares a 4 KiB page with {} {} of {}",
                            dev.node,
                            range(a),
                            o.node,
                            range(b),
                            other.name
                        ),
                        format!(
                            "stage 2 maps whole pages: give {} and {} to the same VM",
                            dev.node, o.node
                        ),
                    );
                }
            }
        }
    }
}

fn check_modules(c: &mut Checker<'_, '_>, vms: &[VmDraft], shmem: &[&ShmemDraft]) {
    let mut seen: Vec<(MemRange, String)> = Vec::new();
    for vm in vms {
        for m in &vm.modules {
            let what = kind_name(m.kind);
            let r = m.range;
            for (o, node) in seen.iter().filter(|(o, _)| o.overlaps(&r)) {
                c.error(
                    &m.node,
                    "reg",
                    format!("{what} {} overlaps module {node} {}", range(r), range(*o)),
                    format!("load the {what} elsewhere: {}", clear_of(*o)),
                );
            }
            seen.push((r, m.node.clone()));
            for other in vms {
                for &o in other.memory.iter().filter(|o| o.overlaps(&r)) {
                    c.error(
                        &m.node,
                        "reg",
                        format!(
                            "{what} {} lies in {}'s memory {}, which is cleared before the VM starts",
                            range(r),
                            other.name,
                            range(o)
                        ),
                        format!(
                            "have the boot loader put the {what} outside every VM's memory: {}",
                            clear_of(o)
                        ),
                    );
                }
            }
            for s in shmem {
                if let Some(o) = s.memory.filter(|o| o.overlaps(&r)) {
                    c.error(
                        &m.node,
                        "reg",
                        format!(
                            "{what} {} overlaps shared memory {} {}",
                            range(r),
                            short(&s.path),
                            range(o)
                        ),
                        format!("load the {what} elsewhere: {}", clear_of(o)),
                    );
                }
            }
            for &h in c.world.hypervisor.iter().filter(|h| h.overlaps(&r)) {
                c.error(
                    &m.node,
                    "reg",
                    format!(
                        "{what} {} overlaps the hypervisor's own memory {}",
                        range(r),
                        range(h)
                    ),
                    format!("load the {what} elsewhere: {}", clear_of(h)),
                );
            }
            if !covered(r, &c.world.platform.memory) {
                c.error(
                    &m.node,
                    "reg",
                    format!("{what} {} is not inside RAM", range(r)),
                    format!("RAM is {}: load the {what} inside it", c.ram()),
                );
            }
            if let (Some(at), true) = (m.load_address, m.raw) {
                let target = MemRange {
                    base: at,
                    size: r.size,
                };
                if vm.memory.is_empty() || !covered(target, &vm.memory) {
                    c.error(
                        &m.node,
                        "tandem,load-address",
                        format!(
                            "{} puts the {what} at {}, outside {}'s memory {}",
                            hex(at),
                            range(target),
                            vm.name,
                            ranges(&vm.memory)
                        ),
                        format!(
                            "pick an address where all {} bytes fit inside the VM's memory",
                            hex(r.size)
                        ),
                    );
                }
            }
        }
    }
}

fn check_shmem(c: &mut Checker<'_, '_>, s: &ShmemDraft, earlier: &[&ShmemDraft], vms: &[VmDraft]) {
    let spis = s.kind.spi_property();
    let what = match s.kind {
        Sharing::Shmem => "doorbell",
        Sharing::Vsock => "vsock",
    };
    let me = short(&s.path);
    if let Some(r) = s.memory {
        for vm in vms {
            for &o in vm.memory.iter().filter(|o| o.overlaps(&r)) {
                c.error(
                    &s.path,
                    "memory",
                    format!("{} overlaps {}'s memory {}", range(r), vm.name, range(o)),
                    format!(
                        "shared memory is a range of its own: move {me}'s to {}, or shrink {}'s",
                        clear_of(o),
                        short(&vm.path)
                    ),
                );
            }
        }
        for other in earlier {
            if let Some(o) = other.memory.filter(|o| o.overlaps(&r)) {
                c.error(
                    &s.path,
                    "memory",
                    format!(
                        "{} overlaps {}'s memory {}",
                        range(r),
                        short(&other.path),
                        range(o)
                    ),
                    format!("move {me}'s range to {}", clear_of(o)),
                );
            }
        }
        c.owned_range(&s.path, "memory", me, r);
    }
    for (&vm, &spi) in s.vms.iter().zip(&s.doorbells) {
        let Some(v) = vms.get(vm) else { continue };
        let device = v.devices.iter().find(|d| {
            d.device
                .interrupts
                .iter()
                .any(|i| i.kind == IrqKind::Spi && i.number == spi)
        });
        if let Some(d) = device {
            c.error(
                &s.path,
                spis,
                format!(
                    "SPI {spi} in {} is also the SPI of its device {}",
                    v.name, d.device.node
                ),
                format!("pick a {what} SPI no device of that VM uses"),
            );
        }
        let clash = earlier.iter().find(|o| {
            o.vms
                .iter()
                .zip(&o.doorbells)
                .any(|(&ov, &os)| ov == vm && os == spi)
        });
        if let Some(o) = clash {
            c.error(
                &s.path,
                spis,
                format!(
                    "SPI {spi} in {} is also {}'s {} there",
                    v.name,
                    short(&o.path),
                    match o.kind {
                        Sharing::Shmem => "doorbell",
                        Sharing::Vsock => "SPI",
                    }
                ),
                "give each doorbell of a VM its own SPI".to_owned(),
            );
        }
    }
}

/// What only a vsock device needs: two different VMs, a window clear of everything the
/// driver VM has, and one device per driver and per service.
fn check_vsock(
    c: &mut Checker<'_, '_>,
    s: &ShmemDraft,
    v: &VsockDraft,
    earlier: &[(ShmemDraft, VsockDraft)],
    vms: &[VmDraft],
) {
    let me = short(&s.path);
    if let [driver, service] = s.vms[..] {
        if let Some(o) = earlier.iter().find(|(o, _)| o.vms.first() == Some(&driver)) {
            c.error(
                &s.path,
                "vms",
                format!("{} already drives {}", vms[driver].name, short(&o.0.path)),
                "give each VM one vsock device at most".to_owned(),
            );
        }
        if let Some(o) = earlier.iter().find(|(o, _)| o.vms.get(1) == Some(&service)) {
            c.error(
                &s.path,
                "vms",
                format!("{} already serves {}", vms[service].name, short(&o.0.path)),
                "give each service VM one vsock device at most".to_owned(),
            );
        }
    }
    let Some(at) = v.window else { return };
    let window = MemRange {
        base: at,
        size: PAGE,
    };
    let fix = "pick a free page outside RAM and every device, e.g. window = <0x0 0x0b000000>;";
    if c.world.platform.memory.iter().any(|m| m.overlaps(&window)) {
        c.error(
            &s.path,
            "window",
            format!("{} is in RAM ({})", range(window), c.ram()),
            fix.to_owned(),
        );
    }
    let clash = c
        .world
        .mmio
        .iter()
        .find(|(r, _)| r.overlaps(&window))
        .map(|(r, node)| (*r, node.clone()));
    if let Some((r, node)) = clash {
        c.error(
            &s.path,
            "window",
            format!("{} overlaps {node} {}", range(window), range(r)),
            fix.to_owned(),
        );
    }
    if let Some((o, _)) = earlier.iter().find(|(_, o)| o.window == Some(at)) {
        c.error(
            &s.path,
            "window",
            format!("{} is also {}'s window", range(window), short(&o.path)),
            format!("give {me} a page of its own"),
        );
    }
}

/// An isolated VM's memory is already kept from every other VM, the hypervisor and every
/// device window by the checks above; what is left is DMA, which only an IOMMU stops.
fn isolation(c: &mut Checker<'_, '_>, vms: &[VmDraft]) {
    for vm in vms.iter().filter(|v| v.isolated) {
        let exposed: Vec<String> = vms
            .iter()
            .filter(|o| o.index != vm.index)
            .flat_map(|o| {
                o.devices
                    .iter()
                    .filter(|d| d.unchecked_dma)
                    .map(move |d| format!("{} ({})", d.device.node, short(&o.path)))
            })
            .collect();
        if !exposed.is_empty() {
            c.warnings.push(problem(
                &vm.path,
                Some("tandem,isolated"),
                format!(
                    "DMA-capable devices of other VMs without an IOMMU can write this VM's memory: {}",
                    some_of(&exposed)
                ),
                "put them behind an SMMU (an iommus property) or give them to no VM".to_owned(),
            ));
        }
    }
}
