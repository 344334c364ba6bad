//! A small flattened-device-tree builder for tests: edit a fixture's tree, or write one from
//! scratch, and serialise it back to a blob (optionally sprinkled with `FDT_NOP`s).
#![allow(dead_code)]

pub const VIRT_V2_1CPU: &[u8] = include_bytes!("../../fixtures/virt-gicv2-1cpu-512m.dtb");
pub const VIRT_V2_4CPU: &[u8] = include_bytes!("../../fixtures/virt-gicv2-4cpu-1g.dtb");
pub const VIRT_V3_4CPU: &[u8] = include_bytes!("../../fixtures/virt-gicv3-4cpu-2g.dtb");
pub const VIRT_V3_8CPU: &[u8] = include_bytes!("../../fixtures/virt-gicv3-8cpu-6g.dtb");
pub const VIRT_V3_NUMA: &[u8] = include_bytes!("../../fixtures/virt-gicv3-4cpu-numa.dtb");
pub const RPI4: &[u8] = include_bytes!("../../fixtures/bcm2711-rpi-4-b.dtb");
pub const RPI4_960M: &[u8] = include_bytes!("../../fixtures/bcm2711-rpi-4-b-960m.dtb");

pub const ALL: [(&str, &[u8]); 7] = [
    ("virt-gicv2-1cpu-512m", VIRT_V2_1CPU),
    ("virt-gicv2-4cpu-1g", VIRT_V2_4CPU),
    ("virt-gicv3-4cpu-2g", VIRT_V3_4CPU),
    ("virt-gicv3-8cpu-6g", VIRT_V3_8CPU),
    ("virt-gicv3-4cpu-numa", VIRT_V3_NUMA),
    ("bcm2711-rpi-4-b", RPI4),
    ("bcm2711-rpi-4-b-960m", RPI4_960M),
];

/// Big-endian cells.
pub fn cells(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// A NUL-terminated string list.
pub fn strs(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|s| s.bytes().chain([0])).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(name: &str) -> Self {
        Node {
            name: name.to_owned(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    pub fn prop(mut self, name: &str, value: Vec<u8>) -> Self {
        self.set(name, value);
        self
    }

    pub fn child(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }

    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value,
            None => self.props.push((name.to_owned(), value)),
        }
    }

    pub fn unset(&mut self, name: &str) {
        self.props.retain(|(n, _)| n != name);
    }

    /// The node at `path` (full names, e.g. "/cpus/cpu@1").
    pub fn at(&mut self, path: &str) -> &mut Node {
        let mut node = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node
                .children
                .iter_mut()
                .find(|c| c.name == part)
                .unwrap_or_else(|| panic!("no node {part} in {path}"));
        }
        node
    }

    /// Removes the node at `path`.
    pub fn remove(&mut self, path: &str) -> Node {
        let (parent, name) = path.rsplit_once('/').unwrap();
        let parent = self.at(parent);
        let i = parent.children.iter().position(|c| c.name == name).unwrap();
        parent.children.remove(i)
    }

    /// Reads a well-formed blob (the fixtures) with the `fdt` crate.
    pub fn from_dtb(blob: &[u8]) -> Node {
        let fdt = fdt::Fdt::new(blob).unwrap();
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
        let mut root = copy(fdt.find_node("/").unwrap());
        root.name = String::new();
        root
    }
}

/// The memory reservation map of a well-formed blob.
pub fn memreserve(blob: &[u8]) -> Vec<(u64, u64)> {
    let word = |o: usize| u32::from_be_bytes(blob[o..o + 4].try_into().unwrap()) as usize;
    let mut off = word(16);
    let mut out = Vec::new();
    loop {
        let a = u64::from_be_bytes(blob[off..off + 8].try_into().unwrap());
        let s = u64::from_be_bytes(blob[off + 8..off + 16].try_into().unwrap());
        if (a, s) == (0, 0) {
            return out;
        }
        out.push((a, s));
        off += 16;
    }
}

/// Serialises a tree. With `nops`, an `FDT_NOP` follows every property and every node end.
pub fn build(root: &Node, reserve: &[(u64, u64)], nops: bool) -> Vec<u8> {
    let mut strings: Vec<u8> = Vec::new();
    let mut structs: Vec<u8> = Vec::new();
    fn push(out: &mut Vec<u8>, w: u32) {
        out.extend_from_slice(&w.to_be_bytes());
    }
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    fn node(n: &Node, s: &mut Vec<u8>, strings: &mut Vec<u8>, nops: bool) {
        push(s, 1);
        s.extend_from_slice(n.name.as_bytes());
        s.push(0);
        pad(s);
        for (name, value) in &n.props {
            let off = find_or_add(strings, name);
            push(s, 3);
            push(s, value.len() as u32);
            push(s, off as u32);
            s.extend_from_slice(value);
            pad(s);
            if nops {
                push(s, 4);
            }
        }
        for c in &n.children {
            node(c, s, strings, nops);
        }
        push(s, 2);
        if nops {
            push(s, 4);
        }
    }
    fn find_or_add(strings: &mut Vec<u8>, name: &str) -> usize {
        let mut needle = name.as_bytes().to_vec();
        needle.push(0);
        if let Some(i) = strings
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            if i == 0 || strings[i - 1] == 0 {
                return i;
            }
        }
        let off = strings.len();
        strings.extend_from_slice(&needle);
        off
    }
    node(root, &mut structs, &mut strings, nops);
    push(&mut structs, 9);

    let mut rsv = Vec::new();
    for &(a, s) in reserve.iter().chain([(0, 0)].iter()) {
        rsv.extend_from_slice(&a.to_be_bytes());
        rsv.extend_from_slice(&s.to_be_bytes());
    }
    let off_rsv = 40;
    let off_struct = off_rsv + rsv.len();
    let off_strings = off_struct + structs.len();
    let total = off_strings + strings.len();
    let mut out = Vec::new();
    for w in [
        0xd00d_feed,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        off_rsv as u32,
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

/// A fixture as an editable tree plus its reservation map.
pub fn edit(blob: &[u8]) -> (Node, Vec<(u64, u64)>) {
    (Node::from_dtb(blob), memreserve(blob))
}

/// The smallest board `Platform::parse` accepts: one CPU, PSCI, a GICv3, 1 GiB of RAM.
pub fn minimal() -> Node {
    Node::new("")
        .prop("#address-cells", cells(&[2]))
        .prop("#size-cells", cells(&[2]))
        .prop("model", strs(&["test board"]))
        .prop("compatible", strs(&["test,board", "test,soc"]))
        .child(Node::new("chosen").prop("bootargs", strs(&["console=ttyAMA0 earlycon"])))
        .child(
            Node::new("memory@40000000")
                .prop("device_type", strs(&["memory"]))
                .prop("reg", cells(&[0, 0x4000_0000, 0, 0x4000_0000])),
        )
        .child(
            Node::new("psci")
                .prop("compatible", strs(&["arm,psci-0.2", "arm,psci"]))
                .prop("method", strs(&["hvc"])),
        )
        .child(
            Node::new("cpus")
                .prop("#address-cells", cells(&[1]))
                .prop("#size-cells", cells(&[0]))
                .child(
                    Node::new("cpu@0")
                        .prop("device_type", strs(&["cpu"]))
                        .prop("reg", cells(&[0]))
                        .prop("enable-method", strs(&["psci"])),
                ),
        )
        .child(
            Node::new("intc@8000000")
                .prop("compatible", strs(&["arm,gic-v3"]))
                .prop("#interrupt-cells", cells(&[3]))
                .prop(
                    "reg",
                    cells(&[0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0xf6_0000]),
                ),
        )
}
