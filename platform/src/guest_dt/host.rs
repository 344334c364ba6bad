//! A device tree read through the crate's checked path and copied out into owned nodes, so
//! the generator can walk it freely (parents, children, phandles).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::blob::be32;
use crate::board::status_ok;
use crate::parse::{find_gic, with_tree};
use crate::{DtError, MemRange};

/// One node, with its properties in blob order.
pub(crate) struct Node {
    /// Full path.
    pub path: String,
    /// Name with unit address.
    pub name: String,
    /// Index of the parent node; `None` for the root.
    pub parent: Option<usize>,
    /// Indices of the children, in blob order.
    pub children: Vec<usize>,
    /// `(name, value)` in blob order.
    pub props: Vec<(String, Vec<u8>)>,
    /// `reg` as CPU physical ranges (`Ok(None)` without `reg`).
    pub regs: Result<Option<Vec<MemRange>>, DtError>,
}

impl Node {
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn phandle(&self) -> Option<u32> {
        self.prop("phandle")
            .or_else(|| self.prop("linux,phandle"))
            .and_then(|v| be32(v, 0))
    }

    pub fn enabled(&self) -> bool {
        status_ok(self.prop("status"))
    }

    /// The name without its unit address.
    pub fn base_name(&self) -> &str {
        self.name.split('@').next().unwrap_or(&self.name)
    }
}

/// The whole tree; index 0 is the root.
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// The GIC node, if the tree has one.
    pub gic: Option<usize>,
    phandles: BTreeMap<u32, usize>,
}

impl Tree {
    pub fn read(blob: &[u8]) -> Result<Self, DtError> {
        with_tree(blob, |tree, _| {
            let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes.len());
            for (i, entry) in tree.nodes.iter().enumerate() {
                nodes.push(Node {
                    path: entry.path.clone(),
                    name: entry.node.name.to_string(),
                    parent: entry.parent,
                    children: Vec::new(),
                    props: entry
                        .node
                        .properties()
                        .map(|p| (p.name.to_string(), p.value.to_vec()))
                        .collect(),
                    regs: tree.regs(i),
                });
                // Parents come before their children in the list.
                if let Some(parent) = entry.parent.and_then(|p| nodes.get_mut(p)) {
                    parent.children.push(i);
                }
            }
            let mut phandles = BTreeMap::new();
            for (i, node) in nodes.iter().enumerate() {
                if let Some(ph) = node.phandle() {
                    phandles.entry(ph).or_insert(i);
                }
            }
            Tree {
                nodes,
                gic: find_gic(tree).ok(),
                phandles,
            }
        })
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)
    }

    pub fn by_phandle(&self, phandle: u32) -> Option<usize> {
        self.phandles.get(&phandle).copied()
    }

    pub fn by_path(&self, path: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.path == path)
    }

    /// The `interrupt-parent` in force at node `i` (its own or the nearest ancestor's).
    pub fn interrupt_parent(&self, i: usize) -> Option<u32> {
        let mut at = Some(i);
        while let Some(node) = at.and_then(|n| self.nodes.get(n)) {
            if let Some(v) = node.prop("interrupt-parent") {
                return be32(v, 0);
            }
            at = node.parent;
        }
        None
    }

    /// Whether `i` is `ancestor` or lies below it.
    pub fn is_within(&self, i: usize, ancestor: usize) -> bool {
        let mut at = Some(i);
        while let Some(n) = at {
            if n == ancestor {
                return true;
            }
            at = self.nodes.get(n).and_then(|node| node.parent);
        }
        false
    }
}
