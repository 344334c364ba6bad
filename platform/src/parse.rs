//! [`Platform::parse`]: the device tree, read through the `fdt` crate, turned into a board.
//!
//! `fdt` 0.1.5 gives nodes and properties but no parent links or full paths, finds only the
//! first `/memory` node, never applies `ranges`, and panics on blobs it does not expect. So
//! the blob is checked first ([`Blob::check`]), `FDT_NOP`s are removed, and the tree is
//! flattened here into a list of nodes with their paths, parents and bus cells; all
//! property values are decoded by this crate.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::blob::{be32, Blob};
use crate::board::{
    name_matches, prop_str, status_ok, strip_options, trim_nul, Conduit, Cpu, EnableMethod, Gic,
    Irq, IrqKind, MemRange, Platform, Psci, PsciCompat, Reserved, Smmu, Timer, Uart, UartKind,
    MAX_CPUS,
};
use crate::cells::{reg_entries, translate, Bus};
use crate::DtError;

/// Compatibles of the GICv2 family this hypervisor drives.
const GIC_V2: [&str; 4] = [
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
];
/// Compatible of a GICv3.
const GIC_V3: &str = "arm,gic-v3";

/// One node of the flattened tree.
pub(crate) struct Entry<'b, 'a> {
    pub path: String,
    pub node: FdtNode<'b, 'a>,
    pub parent: Option<usize>,
    /// What this node says about its children's addresses.
    pub bus: Bus<'a>,
}

/// The tree as a list in depth-first order; a node's parent comes before it.
pub(crate) struct Tree<'b, 'a> {
    pub nodes: Vec<Entry<'b, 'a>>,
}

impl<'b, 'a> Tree<'b, 'a> {
    fn build(root: FdtNode<'b, 'a>) -> Self {
        let mut tree = Tree { nodes: Vec::new() };
        tree.visit(root, "/".to_owned(), None);
        tree
    }

    // Recursion is bounded by the depth limit `Blob::check` enforces.
    fn visit(&mut self, node: FdtNode<'b, 'a>, path: String, parent: Option<usize>) {
        let mut bus = Bus::default();
        for prop in node.properties() {
            bus.apply(prop.name, prop.value);
        }
        let index = self.nodes.len();
        self.nodes.push(Entry {
            path,
            node,
            parent,
            bus,
        });
        for child in node.children() {
            let base = &self.nodes[index].path;
            let path = if base == "/" {
                format!("/{}", child.name)
            } else {
                format!("{base}/{}", child.name)
            };
            self.visit(child, path, Some(index));
        }
    }

    pub(crate) fn path(&self, i: usize) -> String {
        self.nodes[i].path.clone()
    }

    pub(crate) fn prop(&self, i: usize, name: &str) -> Option<&'a [u8]> {
        self.nodes[i].node.property(name).map(|p| p.value)
    }

    pub(crate) fn has_compatible(&self, i: usize, wanted: &[&str]) -> bool {
        self.prop(i, "compatible").is_some_and(|c| {
            c.split(|&b| b == 0)
                .any(|s| wanted.iter().any(|w| w.as_bytes() == s))
        })
    }

    pub(crate) fn enabled(&self, i: usize) -> bool {
        status_ok(self.prop(i, "status"))
    }

    pub(crate) fn is_device_type(&self, i: usize, ty: &str) -> bool {
        self.prop(i, "device_type")
            .is_some_and(|v| trim_nul(v) == ty.as_bytes())
    }

    /// The first node, in tree order, that passes `pred`.
    pub(crate) fn find(&self, pred: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| pred(i))
    }

    /// The node at `path`; a component may leave out its unit address.
    pub(crate) fn find_path(&self, path: &str) -> Option<usize> {
        let mut at = 0;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            at = self.find(|i| {
                self.nodes[i].parent == Some(at) && name_matches(component, self.nodes[i].node.name)
            })?;
        }
        Some(at)
    }

    /// Ancestors of node `i`, root first.
    pub(crate) fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.nodes[i].parent;
        while let Some(p) = at {
            out.push(p);
            at = self.nodes[p].parent;
        }
        out.reverse();
        out
    }

    /// Node `i`'s `reg` entries as CPU physical ranges; `None` without `reg`.
    pub(crate) fn regs(&self, i: usize) -> Result<Option<Vec<MemRange>>, DtError> {
        let Some(value) = self.prop(i, "reg") else {
            return Ok(None);
        };
        let ancestors = self.ancestors(i);
        let chain: Vec<Bus<'a>> = ancestors.iter().map(|&a| self.nodes[a].bus).collect();
        let parent = chain.last().copied().unwrap_or_default();
        let entries = reg_entries(value, &parent).map_err(|problem| DtError::BadProperty {
            node: self.path(i),
            property: "reg",
            problem,
        })?;
        self.to_cpu(i, &ancestors, &chain, entries).map(Some)
    }

    /// `(address, size)` pairs in the address space of node `i`'s parent bus as CPU
    /// physical ranges; `ancestors` and `chain` are `i`'s ancestors and their buses.
    fn to_cpu(
        &self,
        i: usize,
        ancestors: &[usize],
        chain: &[Bus<'a>],
        pairs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Vec<MemRange>, DtError> {
        let mut out = Vec::new();
        for (addr, size) in pairs {
            let base = translate(addr, size, chain).map_err(|e| DtError::Untranslatable {
                node: self.path(i),
                bus: ancestors
                    .get(e.level)
                    .map_or_else(|| "/".to_owned(), |&a| self.path(a)),
                addr,
                reason: e.reason,
            })?;
            out.push(MemRange { base, size });
        }
        Ok(out)
    }

    /// The CPU physical windows a bus bridge such as a PCI host bridge forwards to its bus:
    /// the parent side of each of its `ranges` entries, translated like `reg`. `None`
    /// without `ranges` or with an empty (identity) one.
    pub(crate) fn bus_windows(&self, i: usize) -> Result<Option<Vec<MemRange>>, DtError> {
        let Some(value) = self.prop(i, "ranges").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let bad = |problem| DtError::BadProperty {
            node: self.path(i),
            property: "ranges",
            problem,
        };
        let ancestors = self.ancestors(i);
        let chain: Vec<Bus<'a>> = ancestors.iter().map(|&a| self.nodes[a].bus).collect();
        let parent = chain.last().copied().unwrap_or_default();
        let own = self.nodes[i].bus;
        let (cac, pac, sc) = (own.address_cells, parent.address_cells, own.size_cells);
        if cac > 3 || !(1..=2).contains(&pac) || !(1..=2).contains(&sc) {
            return Err(bad(
                "a bridge's #address-cells must be at most 3, its parent's 1 or 2 and its #size-cells 1 or 2",
            ));
        }
        let stride = ((cac + pac + sc) * 4) as usize;
        if !value.len().is_multiple_of(stride) {
            return Err(bad(
                "length is not a whole number of (child, parent, size) entries",
            ));
        }
        let mut pairs = Vec::new();
        for entry in value.chunks_exact(stride) {
            let parent_at = (cac * 4) as usize;
            let size_at = ((cac + pac) * 4) as usize;
            let addr = entry
                .get(parent_at..)
                .and_then(|e| crate::cells::read_cells(e, pac));
            let size = entry
                .get(size_at..)
                .and_then(|e| crate::cells::read_cells(e, sc));
            let (Some(addr), Some(size)) = (addr, size) else {
                return Err(bad("an entry is cut short"));
            };
            if size != 0 {
                pairs.push((addr, size));
            }
        }
        self.to_cpu(i, &ancestors, &chain, pairs).map(Some)
    }

    /// The interrupts node `i`'s `interrupt-map` (a PCI host bridge's INTx routing) sends
    /// to the GIC `gic`, each once, in map order; `None` without `interrupt-map`. An entry
    /// whose parent is not the GIC is an error: the hypervisor could not route it.
    pub(crate) fn interrupt_map(&self, i: usize, gic: usize) -> Result<Option<Vec<Irq>>, DtError> {
        let Some(value) = self.prop(i, "interrupt-map") else {
            return Ok(None);
        };
        let bad = |problem| DtError::BadProperty {
            node: self.path(i),
            property: "interrupt-map",
            problem,
        };
        let child_cells = self.nodes[i].bus.address_cells as usize
            + self.u32_prop(i, "#interrupt-cells")?.unwrap_or(1) as usize;
        let gic_phandle = self.phandle(gic);
        let gic_address = self.u32_prop(gic, "#address-cells")?.unwrap_or(0) as usize;
        let gic_cells = self.u32_prop(gic, "#interrupt-cells")?.unwrap_or(3) as usize;
        if gic_cells != 3 || child_cells > 8 || gic_address > 4 {
            return Err(bad(
                "only GIC parents with 3 interrupt cells are understood",
            ));
        }
        let stride = (child_cells + 1 + gic_address + gic_cells) * 4;
        if value.is_empty() || !value.len().is_multiple_of(stride) {
            return Err(bad(
                "not a whole number of entries whose parent is the GIC; only maps into the GIC can be passed through",
            ));
        }
        let mut out: Vec<Irq> = Vec::new();
        for entry in value.chunks_exact(stride) {
            if be32(entry, child_cells * 4) != gic_phandle || gic_phandle.is_none() {
                return Err(bad(
                    "an entry's interrupt parent is not the GIC; only maps into the GIC can be passed through",
                ));
            }
            let at = (child_cells + 1 + gic_address) * 4;
            let word = |n: usize| be32(entry, at + n * 4);
            let irq = match (word(0), word(1), word(2)) {
                (Some(0), Some(number), Some(flags)) => Irq {
                    kind: IrqKind::Spi,
                    number,
                    flags,
                },
                (Some(1), Some(number), Some(flags)) => Irq {
                    kind: IrqKind::Ppi,
                    number,
                    flags,
                },
                _ => return Err(bad("an entry has a GIC specifier of an unknown type")),
            };
            if !out
                .iter()
                .any(|o| o.kind == irq.kind && o.number == irq.number)
            {
                out.push(irq);
            }
        }
        Ok(Some(out))
    }

    pub(crate) fn u32_prop(&self, i: usize, name: &'static str) -> Result<Option<u32>, DtError> {
        match self.prop(i, name) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(be32(v, 0)),
            Some(_) => Err(DtError::BadProperty {
                node: self.path(i),
                property: name,
                problem: "must be one 32-bit cell",
            }),
        }
    }

    /// A one- or two-cell number.
    pub(crate) fn u64_prop(&self, i: usize, name: &'static str) -> Result<Option<u64>, DtError> {
        match self.prop(i, name) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(crate::cells::read_cells(v, 1)),
            Some(v) if v.len() == 8 => Ok(crate::cells::read_cells(v, 2)),
            Some(_) => Err(DtError::BadProperty {
                node: self.path(i),
                property: name,
                problem: "must be one or two 32-bit cells",
            }),
        }
    }

    /// `phandle` (or the older `linux,phandle`).
    pub(crate) fn phandle(&self, i: usize) -> Option<u32> {
        self.prop(i, "phandle")
            .or_else(|| self.prop(i, "linux,phandle"))
            .and_then(|v| be32(v, 0))
    }

    /// The `interrupt-parent` in force at node `i` (its own or the nearest ancestor's).
    pub(crate) fn interrupt_parent(&self, i: usize) -> Option<u32> {
        let mut at = Some(i);
        while let Some(n) = at {
            if let Some(v) = self.prop(n, "interrupt-parent") {
                return be32(v, 0);
            }
            at = self.nodes[n].parent;
        }
        None
    }
}

impl Platform {
    /// Reads the board from a flattened device tree.
    ///
    /// `blob` may be longer than the tree (the header's `totalsize` bounds it). Never
    /// panics, whatever the bytes.
    pub fn parse(blob: &[u8]) -> Result<Platform, DtError> {
        with_tree(blob, Platform::from_tree)?
    }

    fn from_tree(tree: &Tree<'_, '_>, checked: &Blob<'_>) -> Result<Platform, DtError> {
        let compatible = tree
            .prop(0, "compatible")
            .map(|v| {
                trim_nul(v)
                    .split(|&b| b == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let gic_index = find_gic(tree)?;
        let psci = psci(tree)?;
        Ok(Platform {
            model: tree
                .prop(0, "model")
                .and_then(prop_str)
                .unwrap_or_default()
                .to_owned(),
            compatible,
            memory: memory(tree)?,
            reserved: reserved(tree, checked)?,
            cpus: cpus(tree, psci.is_some())?,
            psci,
            gic: gic(tree, gic_index)?,
            timer: timer(tree, gic_index)?,
            console: console(tree),
            bootargs: tree
                .find_path("/chosen")
                .and_then(|c| tree.prop(c, "bootargs"))
                .map(|v| String::from_utf8_lossy(trim_nul(v)).into_owned()),
            smmus: smmus(tree, gic_index)?,
        })
    }
}

/// Checks `blob`, flattens its tree and hands both to `f`.
///
/// The one way into the `fdt` crate: it panics on blobs [`Blob::check`] refuses and on
/// `FDT_NOP` tokens, so it only ever reads a checked copy without them.
pub(crate) fn with_tree<R>(
    blob: &[u8],
    f: impl FnOnce(&Tree<'_, '_>, &Blob<'_>) -> R,
) -> Result<R, DtError> {
    let checked = Blob::check(blob)?;
    let stripped;
    let data = if checked.nops > 0 {
        stripped = checked.without_nops();
        stripped.as_slice()
    } else {
        checked.data
    };
    let fdt = Fdt::new(data).map_err(|e| DtError::Fdt {
        problem: match e {
            fdt::FdtError::BadMagic => "bad magic",
            fdt::FdtError::BadPtr => "bad pointer",
            fdt::FdtError::BufferTooSmall => "buffer smaller than the header's totalsize",
        },
    })?;
    let root = fdt.find_node("/").ok_or(DtError::BadStructure {
        offset: 0,
        problem: "no root node",
    })?;
    let tree = Tree::build(root);
    Ok(f(&tree, &checked))
}

fn memory(tree: &Tree<'_, '_>) -> Result<Vec<MemRange>, DtError> {
    let mut banks = Vec::new();
    for i in 0..tree.nodes.len() {
        if !tree.is_device_type(i, "memory") || !tree.enabled(i) {
            continue;
        }
        for bank in tree.regs(i)?.unwrap_or_default() {
            if bank.size == 0 {
                continue;
            }
            if bank.end().is_none() {
                return Err(DtError::BadProperty {
                    node: tree.path(i),
                    property: "reg",
                    problem: "a memory bank ends beyond 2^64",
                });
            }
            banks.push(bank);
        }
    }
    banks.sort_by_key(|b| b.base);
    if let Some(pair) = banks.windows(2).find(|w| w[0].overlaps(&w[1])) {
        return Err(DtError::OverlappingMemory {
            first: pair[0],
            second: pair[1],
        });
    }
    if banks.is_empty() {
        return Err(DtError::NoMemory);
    }
    Ok(banks)
}

fn reserved(tree: &Tree<'_, '_>, blob: &Blob<'_>) -> Result<Vec<Reserved>, DtError> {
    let mut out: Vec<Reserved> = blob
        .reservations()
        .filter(|&(_, size)| size != 0)
        .map(|(base, size)| Reserved {
            range: MemRange { base, size },
            name: "/memreserve/".to_owned(),
            no_map: false,
        })
        .collect();
    let Some(parent) = tree.find_path("/reserved-memory") else {
        return Ok(out);
    };
    for i in 0..tree.nodes.len() {
        if tree.nodes[i].parent != Some(parent) || !tree.enabled(i) {
            continue;
        }
        let no_map = tree.prop(i, "no-map").is_some();
        for range in tree.regs(i)?.unwrap_or_default() {
            if range.size != 0 {
                out.push(Reserved {
                    range,
                    name: tree.nodes[i].node.name.to_owned(),
                    no_map,
                });
            }
        }
    }
    Ok(out)
}

/// The CPUs of `/cpus`. A CPU without `enable-method` is started with PSCI when the tree
/// has a PSCI node: QEMU `virt` with a single CPU leaves the property out, and firmware that
/// offers PSCI `CPU_ON` can start any core.
fn cpus(tree: &Tree<'_, '_>, has_psci: bool) -> Result<Vec<Cpu>, DtError> {
    let parent = tree.find_path("/cpus").ok_or(DtError::NoCpusNode)?;
    let bus = tree.nodes[parent].bus;
    let nodes: Vec<usize> = (0..tree.nodes.len())
        .filter(|&i| tree.nodes[i].parent == Some(parent))
        .filter(|&i| match tree.prop(i, "device_type") {
            Some(_) => tree.is_device_type(i, "cpu"),
            None => tree.nodes[i].node.name.split('@').next() == Some("cpu"),
        })
        .collect();
    if nodes.is_empty() {
        return Err(DtError::NoCpuNodes);
    }
    if nodes.len() > MAX_CPUS {
        return Err(DtError::TooManyCpus {
            count: nodes.len(),
            max: MAX_CPUS,
        });
    }
    let mut cpus: Vec<Cpu> = Vec::with_capacity(nodes.len());
    for i in nodes {
        let node = tree.path(i);
        let reg = tree
            .prop(i, "reg")
            .ok_or_else(|| DtError::CpuWithoutReg { node: node.clone() })?;
        let mpidr = reg_entries(reg, &bus)
            .map_err(|problem| DtError::BadProperty {
                node: node.clone(),
                property: "reg",
                problem,
            })?
            .next()
            .map(|(addr, _)| addr)
            .ok_or_else(|| DtError::CpuWithoutReg { node: node.clone() })?;
        if cpus.iter().any(|c| c.mpidr == mpidr) {
            return Err(DtError::DuplicateMpidr { node, mpidr });
        }
        let method = tree
            .prop(i, "enable-method")
            .map(|v| prop_str(v).unwrap_or("(not UTF-8)"));
        let enable_method = match method {
            Some("psci") => EnableMethod::Psci,
            None if has_psci => EnableMethod::Psci,
            Some("spin-table") => EnableMethod::SpinTable {
                release_addr: tree
                    .u64_prop(i, "cpu-release-addr")?
                    .ok_or_else(|| DtError::SpinTableWithoutReleaseAddr { node: node.clone() })?,
            },
            other => {
                return Err(DtError::CpuEnableMethod {
                    node,
                    found: other.map(ToString::to_string),
                })
            }
        };
        cpus.push(Cpu {
            mpidr,
            node,
            enable_method,
        });
    }
    Ok(cpus)
}

fn psci(tree: &Tree<'_, '_>) -> Result<Option<Psci>, DtError> {
    const VERSIONS: [(&str, PsciCompat); 3] = [
        ("arm,psci-1.0", PsciCompat::V1_0),
        ("arm,psci-0.2", PsciCompat::V0_2),
        ("arm,psci", PsciCompat::V0_1),
    ];
    let names = VERSIONS.map(|(name, _)| name);
    let Some(i) = tree.find(|i| tree.enabled(i) && tree.has_compatible(i, &names)) else {
        return Ok(None);
    };
    let version = VERSIONS
        .iter()
        .find(|(name, _)| tree.has_compatible(i, &[name]))
        .map_or(PsciCompat::V0_1, |&(_, v)| v);
    let conduit = match tree.prop(i, "method").and_then(prop_str) {
        Some("smc") => Conduit::Smc,
        Some("hvc") => Conduit::Hvc,
        _ => {
            return Err(DtError::BadProperty {
                node: tree.path(i),
                property: "method",
                problem: "missing or not \"smc\" or \"hvc\"; say how PSCI firmware is called",
            })
        }
    };
    Ok(Some(Psci { conduit, version }))
}

pub(crate) fn find_gic(tree: &Tree<'_, '_>) -> Result<usize, DtError> {
    let mut all = [GIC_V3; 5];
    all[1..].copy_from_slice(&GIC_V2);
    tree.find(|i| tree.enabled(i) && tree.has_compatible(i, &all))
        .ok_or(DtError::NoGic)
}

/// Interrupt specifiers of property `interrupts` of node `i`, in the GIC's format.
pub(crate) fn interrupts(
    tree: &Tree<'_, '_>,
    i: usize,
    gic: usize,
) -> Result<Option<Vec<Irq>>, DtError> {
    let Some(value) = tree.prop(i, "interrupts") else {
        return Ok(None);
    };
    let bad = |node: String, problem| DtError::BadProperty {
        node,
        property: "interrupts",
        problem,
    };
    let cells = tree.u32_prop(gic, "#interrupt-cells")?.unwrap_or(3);
    if !(3..=4).contains(&cells) {
        return Err(DtError::BadProperty {
            node: tree.path(gic),
            property: "#interrupt-cells",
            problem: "a GIC uses 3 (or 4) cells per interrupt",
        });
    }
    let stride = cells as usize * 4;
    if value.is_empty() || value.len() % stride != 0 {
        return Err(bad(
            tree.path(i),
            "length is not a whole number of GIC specifiers",
        ));
    }
    let mut out = Vec::new();
    for spec in value.chunks_exact(stride) {
        let word = |n: usize| be32(spec, n * 4).unwrap_or(u32::MAX);
        let (kind, limit) = match word(0) {
            0 => (IrqKind::Spi, 988),
            1 => (IrqKind::Ppi, 16),
            _ => {
                return Err(bad(
                    tree.path(i),
                    "specifier type is neither 0 (SPI) nor 1 (PPI)",
                ))
            }
        };
        if word(1) >= limit {
            return Err(bad(
                tree.path(i),
                "interrupt number out of range (SPI 0-987, PPI 0-15)",
            ));
        }
        out.push(Irq {
            kind,
            number: word(1),
            flags: word(2),
        });
    }
    Ok(Some(out))
}

fn gic(tree: &Tree<'_, '_>, i: usize) -> Result<Gic, DtError> {
    let regs = tree.regs(i)?.unwrap_or_default();
    let maintenance = interrupts(tree, i, i)?.and_then(|irqs| irqs.first().copied());
    let too_few = |needed| DtError::GicTooFewRegs {
        node: tree.path(i),
        found: regs.len(),
        needed,
    };
    if tree.has_compatible(i, &[GIC_V3]) {
        let regions = tree.u32_prop(i, "#redistributor-regions")?.unwrap_or(1);
        if regions == 0 {
            return Err(DtError::BadProperty {
                node: tree.path(i),
                property: "#redistributor-regions",
                problem: "must be at least 1",
            });
        }
        let needed = regions as usize + 1;
        let (gicd, redistributors) = match (regs.first(), regs.get(1..needed)) {
            (Some(&gicd), Some(r)) => (gicd, r.to_vec()),
            _ => return Err(too_few(needed)),
        };
        Ok(Gic::V3 {
            gicd,
            redistributors,
            redistributor_stride: tree.u64_prop(i, "redistributor-stride")?,
            maintenance,
        })
    } else {
        match regs.as_slice() {
            [gicd, gicc, rest @ ..] => Ok(Gic::V2 {
                gicd: *gicd,
                gicc: *gicc,
                gich: rest.first().copied(),
                gicv: rest.get(1).copied(),
                maintenance,
            }),
            _ => Err(too_few(2)),
        }
    }
}

/// Compatible of the IOMMU the hypervisor drives.
pub(crate) const SMMU_V3: &str = "arm,smmu-v3";

/// Every enabled SMMUv3. Its wired interrupts are found by `interrupt-names`; an SMMU that
/// signals only by MSI has none, and its faults are then found by polling.
fn smmus(tree: &Tree<'_, '_>, gic: usize) -> Result<Vec<Smmu>, DtError> {
    let mut out = Vec::new();
    for i in 0..tree.nodes.len() {
        if !tree.enabled(i) || !tree.has_compatible(i, &[SMMU_V3]) {
            continue;
        }
        let Some(regs) = tree.regs(i)?.and_then(|r| r.first().copied()) else {
            return Err(DtError::BadProperty {
                node: tree.path(i),
                property: "reg",
                problem: "an SMMUv3 needs its register window in reg",
            });
        };
        let irqs = if tree.interrupt_parent(i) == tree.phandle(gic) {
            interrupts(tree, i, gic)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        let names: Vec<&[u8]> = tree
            .prop(i, "interrupt-names")
            .map(|v| trim_nul(v).split(|&b| b == 0).collect())
            .unwrap_or_default();
        let named = |wanted: &str| {
            names
                .iter()
                .position(|n| *n == wanted.as_bytes())
                .and_then(|at| irqs.get(at).copied())
        };
        out.push(Smmu {
            node: tree.path(i),
            phandle: tree.phandle(i),
            regs,
            eventq_irq: named("eventq"),
            gerror_irq: named("gerror"),
        });
    }
    Ok(out)
}

fn timer(tree: &Tree<'_, '_>, gic: usize) -> Result<Option<Timer>, DtError> {
    let Some(i) = tree.find(|i| {
        tree.enabled(i) && tree.has_compatible(i, &["arm,armv8-timer", "arm,armv7-timer"])
    }) else {
        return Ok(None);
    };
    let bad = |problem| DtError::BadProperty {
        node: tree.path(i),
        property: "interrupts",
        problem,
    };
    if let (Some(parent), Some(gic_phandle)) = (tree.interrupt_parent(i), tree.phandle(gic)) {
        if parent != gic_phandle {
            return Err(bad("the timer's interrupt parent is not the GIC"));
        }
    }
    match interrupts(tree, i, gic)?.unwrap_or_default().as_slice() {
        [secure_phys, phys, virt, hyp_phys, rest @ ..] => Ok(Some(Timer {
            secure_phys: *secure_phys,
            phys: *phys,
            virt: *virt,
            hyp_phys: *hyp_phys,
            hyp_virt: rest.first().copied(),
        })),
        _ => Err(bad(
            "needs 4 or 5 interrupts: secure phys, phys, virt, hyp phys[, hyp virt]",
        )),
    }
}

/// The UART at node `i`, if it is one of a known kind whose `reg` translates.
fn uart(tree: &Tree<'_, '_>, i: usize) -> Option<Uart> {
    let reg_shift = tree.u32_prop(i, "reg-shift").ok().flatten();
    let reg_io_width = tree.u32_prop(i, "reg-io-width").ok().flatten();
    let kind = UartKind::from_node(tree.prop(i, "compatible")?, reg_shift, reg_io_width)?;
    let reg = *tree.regs(i).ok()??.first()?;
    let interrupt = find_gic(tree)
        .ok()
        .filter(|&gic| {
            tree.interrupt_parent(i)
                .is_none_or(|p| tree.phandle(gic) == Some(p))
        })
        .and_then(|gic| interrupts(tree, i, gic).ok().flatten())
        .and_then(|irqs| irqs.first().copied());
    Some(Uart {
        kind,
        base: reg.base,
        size: reg.size,
        node: tree.path(i),
        interrupt,
    })
}

fn console(tree: &Tree<'_, '_>) -> Option<Uart> {
    let chosen = tree.find_path("/chosen");
    let named = chosen
        .and_then(|c| {
            tree.prop(c, "stdout-path")
                .or_else(|| tree.prop(c, "linux,stdout-path"))
        })
        .and_then(prop_str)
        .map(strip_options)
        .and_then(|path| {
            if path.starts_with('/') {
                Some(path)
            } else {
                tree.find_path("/aliases")
                    .and_then(|a| tree.prop(a, path))
                    .and_then(prop_str)
            }
        })
        .and_then(|path| tree.find_path(path))
        .and_then(|i| uart(tree, i));
    named.or_else(|| {
        (0..tree.nodes.len())
            .filter(|&i| tree.enabled(i))
            .filter_map(|i| uart(tree, i))
            .find(|u| u.kind == UartKind::Pl011)
    })
}
