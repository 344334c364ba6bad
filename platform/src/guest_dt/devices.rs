//! Copies assigned devices out of the host tree, with the nodes they depend on, renumbering
//! phandles.
//!
//! Which properties are references, and what happens to each:
//! - `interrupt-parent`: the GIC becomes the virtual GIC; a node inside a copied device stays
//!   (renumbered). A copied top-level device with `interrupts` always gets one.
//! - `clocks`, `assigned-clocks`, `assigned-clock-parents` (`#clock-cells`), `resets`
//!   (`#reset-cells`), `power-domains` (`#power-domain-cells`), `phys` (`#phy-cells`), `dmas`
//!   (`#dma-cells`), `mboxes` (`#mbox-cells`), `pwms` (`#pwm-cells`), `gpios` and `*-gpios`
//!   (`#gpio-cells`), `*-supply` (a single phandle): followed one level. The node referred
//!   to is copied to the root, unless it is another assigned device (then the reference
//!   points at that copy) or has MMIO registers (an error: the VM would not own them). In a
//!   node copied that way, references to nodes not copied anyway drop the property.
//! - `iommus`, `iommu-map(-mask)`, `msi-parent`, `msi-map(-mask)`, `pinctrl-*`: dropped; the
//!   hypervisor owns the SMMU, the ITS and pin muxing.
//! - `interrupt-map` (a PCI host bridge's INTx routing): every entry's parent must be the
//!   GIC; it becomes the virtual GIC, with the virtual GIC's two unit-address cells.
//! - `interrupts-extended`, `memory-region`: refused (see [`GuestDtError::Unsupported`]).
//! - Every other property is copied byte for byte.
//!
//! An assigned device is placed at the root with `reg` rewritten to CPU physical addresses
//! (2 address and 2 size cells) and its unit address set to match; its children come along
//! unchanged. A bus's `dma-ranges` above the device is not carried over.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::host::Tree;
use super::GuestDtError;
use crate::blob::be32;
use crate::config::VmConfig;

/// A node to write into the guest tree.
pub(super) struct OutNode {
    /// Host node it comes from.
    pub host: usize,
    /// Its name in the guest.
    pub name: String,
    /// Its properties, references already renumbered (`phandle` left out).
    pub props: Vec<(String, Vec<u8>)>,
    /// Child nodes (only for assigned devices).
    pub children: Vec<OutNode>,
    /// Its guest phandle, if something refers to it.
    pub phandle: Option<u32>,
}

/// What a property of a copied node is.
enum Kind {
    /// Copied as is.
    Verbatim,
    /// Left out.
    Drop,
    /// `interrupt-parent`.
    InterruptParent,
    /// `interrupt-map`.
    InterruptMap,
    /// A list of `<phandle args...>`; the target's cell-count property, if any.
    Refs(Option<&'static str>),
    /// Cannot be carried over.
    Unsupported(&'static str),
}

fn classify(name: &str) -> Kind {
    match name {
        "phandle" | "linux,phandle" => Kind::Drop,
        "interrupt-parent" => Kind::InterruptParent,
        "interrupt-map" => Kind::InterruptMap,
        "iommus" | "iommu-map" | "iommu-map-mask" | "msi-parent" | "msi-map" | "msi-map-mask"
        | "pinctrl-names" => Kind::Drop,
        n if n.starts_with("pinctrl-") => Kind::Drop,
        "clocks" | "assigned-clocks" | "assigned-clock-parents" => Kind::Refs(Some("#clock-cells")),
        "resets" => Kind::Refs(Some("#reset-cells")),
        "power-domains" => Kind::Refs(Some("#power-domain-cells")),
        "phys" => Kind::Refs(Some("#phy-cells")),
        "dmas" => Kind::Refs(Some("#dma-cells")),
        "mboxes" => Kind::Refs(Some("#mbox-cells")),
        "pwms" => Kind::Refs(Some("#pwm-cells")),
        "nr-gpios" => Kind::Verbatim,
        n if n == "gpios" || n.ends_with("-gpios") => Kind::Refs(Some("#gpio-cells")),
        n if n.ends_with("-supply") => Kind::Refs(None),
        "interrupts-extended" => Kind::Unsupported(
            "it may name controllers the VM does not have; use \"interrupts\" with the GIC as interrupt parent",
        ),
        "memory-region" => Kind::Unsupported(
            "reserved memory is not passed through; give the VM the memory (or a shmem region) instead",
        ),
        _ => Kind::Verbatim,
    }
}

/// Whether references are being followed from an assigned device or from a node copied
/// because a device refers to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Device,
    Dependency,
}

pub(super) struct Planner<'t> {
    tree: &'t Tree,
    vgic: u32,
    next_phandle: u32,
    /// Host phandle -> guest phandle.
    phandles: BTreeMap<u32, u32>,
    /// Host indices of the assigned devices' top nodes.
    devices: Vec<usize>,
    /// Host indices of nodes copied because something refers to them, in order.
    deps: Vec<usize>,
    /// Names already used at the root.
    names: BTreeSet<String>,
}

impl<'t> Planner<'t> {
    /// `vgic` is the virtual GIC's phandle, `first_free` the first phandle not yet used,
    /// `taken` the names of the root's generated nodes.
    pub fn new(tree: &'t Tree, vgic: u32, first_free: u32, taken: &[String]) -> Self {
        Self {
            tree,
            vgic,
            next_phandle: first_free,
            phandles: BTreeMap::new(),
            devices: Vec::new(),
            deps: Vec::new(),
            names: taken.iter().cloned().collect(),
        }
    }

    /// The nodes to add at the root for the VM's devices: the devices in config order, then
    /// the nodes they refer to.
    pub fn plan(mut self, vm: &VmConfig) -> Result<Vec<OutNode>, GuestDtError> {
        for device in &vm.devices {
            let i =
                self.tree
                    .by_path(&device.node)
                    .ok_or_else(|| GuestDtError::DeviceNotFound {
                        vm: vm.node.clone(),
                        device: device.node.clone(),
                    })?;
            self.devices.push(i);
        }
        let mut out = Vec::new();
        for d in self.devices.clone() {
            out.push(self.device(d)?);
        }
        let mut at = 0;
        while let Some(&dep) = self.deps.get(at) {
            out.push(self.dependency(dep)?);
            at += 1;
        }
        let phandles = self.phandles;
        let tree = self.tree;
        fn fill(node: &mut OutNode, tree: &Tree, phandles: &BTreeMap<u32, u32>) {
            node.phandle = tree
                .node(node.host)
                .and_then(|n| n.phandle())
                .and_then(|ph| phandles.get(&ph).copied());
            for child in &mut node.children {
                fill(child, tree, phandles);
            }
        }
        for node in &mut out {
            fill(node, tree, &phandles);
        }
        Ok(out)
    }

    fn path(&self, i: usize) -> String {
        self.tree
            .node(i)
            .map_or_else(String::new, |n| n.path.clone())
    }

    fn unique_name(&mut self, base: &str, unit: Option<String>) -> String {
        let with = |b: &str| match &unit {
            Some(u) => format!("{b}@{u}"),
            None => b.to_string(),
        };
        let mut name = with(base);
        let mut n = 1;
        while self.names.contains(&name) {
            name = with(&format!("{base}-{n}"));
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn device(&mut self, i: usize) -> Result<OutNode, GuestDtError> {
        let tree = self.tree;
        let node = tree.node(i).ok_or(GuestDtError::DeviceNotFound {
            vm: String::new(),
            device: String::new(),
        })?;
        let regs = node
            .regs
            .clone()
            .map_err(|error| GuestDtError::Unreadable {
                which: "host device tree",
                error,
            })?;
        let unit = regs
            .as_ref()
            .and_then(|r| r.first())
            .map(|r| format!("{:x}", r.base));
        let name = self.unique_name(node.base_name(), unit);
        if node.parent != Some(0) {
            for p in ["ranges", "dma-ranges"] {
                if node.prop(p).is_some_and(|v| !v.is_empty()) {
                    return Err(GuestDtError::Unsupported {
                        node: node.path.clone(),
                        property: p.to_string(),
                        reason: "the device is a bus below another bus, whose addresses would change at the guest's root; assign its children instead",
                    });
                }
            }
        }
        let mut props = self.props(i, Level::Device)?;
        if let Some(regs) = regs {
            let value = regs
                .iter()
                .flat_map(|r| [r.base, r.size])
                .flat_map(u64::to_be_bytes)
                .collect();
            if let Some(slot) = props.iter_mut().find(|(n, _)| n == "reg") {
                slot.1 = value;
            }
        }
        let has_irqs = node.prop("interrupts").is_some();
        if has_irqs && !props.iter().any(|(n, _)| n == "interrupt-parent") {
            props.push((
                "interrupt-parent".to_string(),
                self.vgic.to_be_bytes().to_vec(),
            ));
        }
        let mut children = Vec::new();
        for &c in &node.children {
            children.push(self.subtree(c)?);
        }
        Ok(OutNode {
            host: i,
            name,
            props,
            children,
            phandle: None,
        })
    }

    fn subtree(&mut self, i: usize) -> Result<OutNode, GuestDtError> {
        let tree = self.tree;
        let node = tree.node(i).ok_or(GuestDtError::MalformedProperty {
            node: String::new(),
            property: String::new(),
        })?;
        let props = self.props(i, Level::Device)?;
        let mut children = Vec::new();
        for &c in &node.children {
            children.push(self.subtree(c)?);
        }
        Ok(OutNode {
            host: i,
            name: node.name.clone(),
            props,
            children,
            phandle: None,
        })
    }

    fn dependency(&mut self, i: usize) -> Result<OutNode, GuestDtError> {
        let base = self
            .tree
            .node(i)
            .map_or_else(String::new, |n| n.name.clone());
        let name = self.unique_name(&base, None);
        let props = self.props(i, Level::Dependency)?;
        Ok(OutNode {
            host: i,
            name,
            props,
            children: Vec::new(),
            phandle: None,
        })
    }

    /// Whether host node `i` will be in the guest tree.
    fn copied(&self, i: usize) -> bool {
        self.deps.contains(&i) || self.devices.iter().any(|&d| self.tree.is_within(i, d))
    }

    /// The properties of host node `i`, references renumbered.
    fn props(&mut self, i: usize, level: Level) -> Result<Vec<(String, Vec<u8>)>, GuestDtError> {
        let tree = self.tree;
        let Some(node) = tree.node(i) else {
            return Ok(Vec::new());
        };
        if node.prop("interrupts").is_some() {
            self.check_interrupt_parent(i)?;
        }
        let mut out = Vec::new();
        for (name, value) in &node.props {
            match classify(name) {
                Kind::Verbatim => out.push((name.clone(), value.clone())),
                Kind::Drop => {}
                Kind::Unsupported(reason) => {
                    return Err(GuestDtError::Unsupported {
                        node: node.path.clone(),
                        property: name.clone(),
                        reason,
                    })
                }
                Kind::InterruptParent => {
                    let ph = be32(value, 0).unwrap_or(0);
                    if let Some(new) = self.resolve(i, name, ph, Level::Dependency)? {
                        out.push((name.clone(), new.to_be_bytes().to_vec()));
                    }
                }
                Kind::InterruptMap => out.push((name.clone(), self.interrupt_map(i, value)?)),
                Kind::Refs(cells) => {
                    if let Some(new) = self.rewrite_refs(i, name, value, cells, level)? {
                        out.push((name.clone(), new));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Node `i`'s `interrupt-map` with the virtual GIC as every entry's parent. The host
    /// GIC's unit-address cells (often 2, sometimes 0) become the virtual GIC's 2.
    fn interrupt_map(&self, i: usize, value: &[u8]) -> Result<Vec<u8>, GuestDtError> {
        let tree = self.tree;
        let node = tree.node(i);
        let malformed = || GuestDtError::MalformedProperty {
            node: node.map_or_else(String::new, |n| n.path.clone()),
            property: "interrupt-map".to_string(),
        };
        let cells = |n: Option<&super::host::Node>, name: &str, default: u32| {
            n.and_then(|n| n.prop(name))
                .map_or(Some(default), |v| be32(v, 0))
        };
        let gic = tree.gic.and_then(|g| tree.node(g));
        let child = cells(node, "#address-cells", 2)
            .zip(cells(node, "#interrupt-cells", 1))
            .map(|(a, b)| (a + b) as usize)
            .ok_or_else(malformed)?;
        let gic_address = cells(gic, "#address-cells", 0).ok_or_else(malformed)? as usize;
        let gic_phandle = gic.and_then(|g| g.phandle()).ok_or_else(malformed)?;
        let stride = (child + 1 + gic_address + 3) * 4;
        if child > 8 || gic_address > 4 || value.is_empty() || !value.len().is_multiple_of(stride) {
            return Err(malformed());
        }
        let mut out = Vec::with_capacity(value.len());
        for entry in value.chunks_exact(stride) {
            if be32(entry, child * 4) != Some(gic_phandle) {
                return Err(malformed());
            }
            out.extend_from_slice(&entry[..child * 4]);
            out.extend_from_slice(&self.vgic.to_be_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&entry[(child + 1 + gic_address) * 4..]);
        }
        Ok(out)
    }

    /// The interrupts of node `i` must go to the GIC or to a node copied with it.
    fn check_interrupt_parent(&self, i: usize) -> Result<(), GuestDtError> {
        let gic_phandle = self
            .tree
            .gic
            .and_then(|g| self.tree.node(g))
            .and_then(|g| g.phandle());
        let parent = self.tree.interrupt_parent(i);
        let ok = match parent {
            None => true,
            Some(p) if Some(p) == gic_phandle => true,
            Some(p) => self.tree.by_phandle(p).is_some_and(|t| self.copied(t)),
        };
        if ok {
            Ok(())
        } else {
            Err(GuestDtError::InterruptParentNotGic { node: self.path(i) })
        }
    }

    /// Rewrites a `<phandle args...>` list; `None` drops the property.
    fn rewrite_refs(
        &mut self,
        i: usize,
        name: &str,
        value: &[u8],
        cells: Option<&'static str>,
        level: Level,
    ) -> Result<Option<Vec<u8>>, GuestDtError> {
        let tree = self.tree;
        let malformed = || GuestDtError::MalformedProperty {
            node: tree.node(i).map_or_else(String::new, |n| n.path.clone()),
            property: name.to_string(),
        };
        let mut out = value.to_vec();
        let mut pos = 0usize;
        while pos < value.len() {
            let ph = be32(value, pos).ok_or_else(malformed)?;
            if ph == 0 || ph == u32::MAX {
                // An empty entry (e.g. a GPIO left out of a list).
                pos += 4;
                continue;
            }
            let args = match (cells, self.tree.by_phandle(ph)) {
                (Some(c), Some(t)) => self
                    .tree
                    .node(t)
                    .and_then(|n| n.prop(c))
                    .and_then(|v| be32(v, 0))
                    .unwrap_or(0),
                _ => 0,
            };
            let Some(new) = self.resolve(i, name, ph, level)? else {
                return Ok(None);
            };
            let slot = out.get_mut(pos..pos + 4).ok_or_else(malformed)?;
            slot.copy_from_slice(&new.to_be_bytes());
            pos = usize::try_from(args)
                .ok()
                .and_then(|a| a.checked_mul(4))
                .and_then(|a| a.checked_add(pos + 4))
                .ok_or_else(malformed)?;
        }
        if pos != value.len() {
            return Err(malformed());
        }
        Ok(Some(out))
    }

    /// The guest phandle for host phandle `ph`, referred to by `name` of node `i`; `None`
    /// when the reference is to be dropped.
    fn resolve(
        &mut self,
        i: usize,
        name: &str,
        ph: u32,
        level: Level,
    ) -> Result<Option<u32>, GuestDtError> {
        let tree = self.tree;
        let gic_phandle = tree
            .gic
            .and_then(|g| tree.node(g))
            .and_then(|g| g.phandle());
        if Some(ph) == gic_phandle {
            return Ok(Some(self.vgic));
        }
        let target = tree
            .by_phandle(ph)
            .ok_or_else(|| GuestDtError::DanglingReference {
                node: self.path(i),
                property: name.to_string(),
                phandle: ph,
            })?;
        if !self.copied(target) {
            if level == Level::Dependency {
                return Ok(None);
            }
            if tree.node(target).is_some_and(|t| t.prop("reg").is_some()) {
                return Err(GuestDtError::DependencyHasRegisters {
                    node: self.path(i),
                    property: name.to_string(),
                    target: self.path(target),
                });
            }
            self.deps.push(target);
        }
        let next = &mut self.next_phandle;
        Ok(Some(*self.phandles.entry(ph).or_insert_with(|| {
            let p = *next;
            *next = next.saturating_add(1);
            p
        })))
    }
}
