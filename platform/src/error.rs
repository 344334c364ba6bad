//! Why a device tree could not be turned into a [`Platform`](crate::Platform).

use alloc::string::String;
use core::fmt;

use crate::MemRange;

/// Everything that can be wrong with the device tree the firmware handed over.
///
/// Each message names the node at fault, what is wrong with it, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtError {
    /// Fewer bytes than the 40-byte FDT header.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The first word is not the FDT magic `0xd00dfeed`: the pointer is not a device tree.
    BadMagic {
        /// The word found instead.
        found: u32,
    },
    /// The header's `totalsize` says the blob is longer than the bytes given.
    Truncated {
        /// `totalsize` from the header.
        totalsize: usize,
        /// Bytes given.
        given: usize,
    },
    /// The header's version fields describe a format this parser cannot read
    /// (it needs `version >= 17` and `last_comp_version <= 17`).
    UnsupportedVersion {
        /// `version` from the header.
        version: u32,
        /// `last_comp_version` from the header.
        last_comp_version: u32,
    },
    /// A block the header points to lies outside `totalsize`, or is misaligned.
    BadBlock {
        /// `"structure"`, `"strings"` or `"memory reservation"`.
        block: &'static str,
        /// Its offset from the start of the blob.
        offset: usize,
        /// Its size in bytes.
        size: usize,
        /// `totalsize` from the header.
        totalsize: usize,
    },
    /// The structure block is malformed (bad token, unterminated name, property outside the
    /// block, a name offset outside the strings block, nesting too deep, ...).
    BadStructure {
        /// Byte offset of the fault from the start of the blob.
        offset: usize,
        /// What is wrong there.
        problem: &'static str,
    },
    /// The `fdt` crate refused a blob that passed this crate's own checks.
    Fdt {
        /// The `fdt` crate's reason.
        problem: &'static str,
    },
    /// There is no `/cpus` node.
    NoCpusNode,
    /// `/cpus` has no `cpu` child.
    NoCpuNodes,
    /// More CPUs than the hypervisor supports.
    TooManyCpus {
        /// CPU nodes found.
        count: usize,
        /// The limit, [`MAX_CPUS`](crate::MAX_CPUS).
        max: usize,
    },
    /// A CPU node without `reg`.
    CpuWithoutReg {
        /// Full path of the CPU node.
        node: String,
    },
    /// Two CPU nodes with the same MPIDR.
    DuplicateMpidr {
        /// Full path of the second CPU node.
        node: String,
        /// The MPIDR both claim.
        mpidr: u64,
    },
    /// A CPU node whose `enable-method` is not one the hypervisor can use, or is missing
    /// on a board without a PSCI node (with one, a missing method means PSCI).
    CpuEnableMethod {
        /// Full path of the CPU node.
        node: String,
        /// The method found, if any.
        found: Option<String>,
    },
    /// A `spin-table` CPU without `cpu-release-addr`.
    SpinTableWithoutReleaseAddr {
        /// Full path of the CPU node.
        node: String,
    },
    /// No enabled node is compatible with a GIC this hypervisor drives.
    NoGic,
    /// The GIC node has fewer `reg` entries than its version needs.
    GicTooFewRegs {
        /// Full path of the GIC node.
        node: String,
        /// Entries found.
        found: usize,
        /// Entries needed.
        needed: usize,
    },
    /// No memory node, or only zero-sized banks.
    NoMemory,
    /// Two memory banks overlap.
    OverlappingMemory {
        /// The bank with the lower base.
        first: MemRange,
        /// The bank that starts inside `first`.
        second: MemRange,
    },
    /// A `reg` address cannot be turned into a CPU physical address through the parents'
    /// `ranges`.
    Untranslatable {
        /// Full path of the node whose `reg` it is.
        node: String,
        /// The bus node where translation stopped.
        bus: String,
        /// The address as the node's `reg` gives it.
        addr: u64,
        /// Why translation stopped.
        reason: &'static str,
    },
    /// A property has the wrong length or a value this parser cannot use.
    BadProperty {
        /// Full path of the node.
        node: String,
        /// Property name.
        property: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "device tree: only {len} bytes, less than the 40-byte FDT header; pass the whole blob"
            ),
            Self::BadMagic { found } => write!(
                f,
                "device tree: magic is {found:#010x}, not 0xd00dfeed; the address handed over (x0 at entry) does not point to a DTB"
            ),
            Self::Truncated { totalsize, given } => write!(
                f,
                "device tree: header says {totalsize} bytes but only {given} were given; pass at least totalsize bytes (see blob_size)"
            ),
            Self::UnsupportedVersion { version, last_comp_version } => write!(
                f,
                "device tree: version {version} (compatible with {last_comp_version}) is not readable; regenerate the blob with dtc (version 17)"
            ),
            Self::BadBlock { block, offset, size, totalsize } => write!(
                f,
                "device tree truncated or corrupt: the {block} block at {offset:#x} ({size:#x} bytes) is misaligned or ends past the {totalsize:#x}-byte blob the header describes; pass the whole blob, or regenerate it with dtc"
            ),
            Self::BadStructure { offset, problem } => write!(
                f,
                "device tree: structure block at byte {offset:#x}: {problem}; the blob is corrupt, regenerate it with dtc"
            ),
            Self::Fdt { problem } => write!(
                f,
                "device tree: {problem}; the blob is corrupt, regenerate it with dtc"
            ),
            Self::NoCpusNode => write!(
                f,
                "/cpus: node missing; the device tree must describe the CPUs under /cpus"
            ),
            Self::NoCpuNodes => write!(
                f,
                "/cpus: no cpu@N child; add one node with device_type = \"cpu\" per CPU"
            ),
            Self::TooManyCpus { count, max } => write!(
                f,
                "/cpus: {count} CPU nodes, more than the {max} the hypervisor supports; remove CPUs (e.g. QEMU -smp {max})"
            ),
            Self::CpuWithoutReg { node } => write!(
                f,
                "{node}: no \"reg\" property; a CPU node needs reg = <MPIDR> so the hypervisor can start it"
            ),
            Self::DuplicateMpidr { node, mpidr } => write!(
                f,
                "{node}: reg {mpidr:#x} is the MPIDR of an earlier CPU node too; each CPU needs its own MPIDR"
            ),
            Self::CpuEnableMethod { node, found: Some(m) } => write!(
                f,
                "{node}: enable-method \"{m}\" is not supported; use \"psci\" or \"spin-table\""
            ),
            Self::CpuEnableMethod { node, found: None } => write!(
                f,
                "{node}: no \"enable-method\" property and no PSCI node; add enable-method = \"psci\" (with a psci node) or \"spin-table\""
            ),
            Self::SpinTableWithoutReleaseAddr { node } => write!(
                f,
                "{node}: enable-method is \"spin-table\" but there is no \"cpu-release-addr\"; add the 64-bit address the CPU polls"
            ),
            Self::NoGic => write!(
                f,
                "/: no GIC: no enabled interrupt controller compatible with \"arm,gic-v3\", \"arm,gic-400\", \"arm,cortex-a15-gic\", \"arm,cortex-a9-gic\" or \"arm,cortex-a7-gic\"; the hypervisor needs a GICv2 or GICv3"
            ),
            Self::GicTooFewRegs { node, found, needed } => write!(
                f,
                "{node}: \"reg\" has {found} entries, this GIC needs at least {needed} (GICv2: GICD, GICC[, GICH, GICV]; GICv3: GICD, then #redistributor-regions GICR regions)"
            ),
            Self::NoMemory => write!(
                f,
                "/: no memory node with a non-zero \"reg\"; add memory@ADDR {{ device_type = \"memory\"; reg = <...>; }} (raspi firmware or QEMU fills in the size at boot)"
            ),
            Self::OverlappingMemory { first, second } => write!(
                f,
                "memory banks {:#x}+{:#x} and {:#x}+{:#x} overlap; fix the memory nodes' \"reg\" so each byte is described once",
                first.base, first.size, second.base, second.size
            ),
            Self::Untranslatable { node, bus, addr, reason } => write!(
                f,
                "{node}: reg address {addr:#x} cannot be translated to a CPU address at {bus}: {reason}; give the bus a \"ranges\" that covers it (an empty ranges means identity)"
            ),
            Self::BadProperty { node, property, problem } => {
                write!(f, "{node}: property \"{property}\": {problem}")
            }
        }
    }
}
