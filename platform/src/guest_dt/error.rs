//! Why a guest DTB could not be generated, or why a user's guest DTB was refused.

use alloc::string::String;
use core::fmt;

use crate::{DtError, MemRange};

/// Everything that stops [`generate`](super::generate) or
/// [`check_user_dtb`](super::check_user_dtb). Each message says what is wrong, at which node,
/// and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestDtError {
    /// The host device tree (or the user's guest DTB) cannot be read.
    Unreadable {
        /// `"host device tree"` or `"user guest DTB"`.
        which: &'static str,
        /// Why.
        error: DtError,
    },
    /// The VM has no vCPU, or more than its GIC can address.
    VcpuCount {
        /// The VM's node.
        vm: String,
        /// vCPUs it has.
        count: usize,
        /// Most the virtual GIC supports.
        max: usize,
    },
    /// The VM has no memory.
    NoMemory {
        /// The VM's node.
        vm: String,
    },
    /// The host device tree has no timer node, so there are no timer PPIs to hand on.
    NoHostTimer,
    /// Two things the VM sees claim the same addresses.
    Overlap {
        /// The VM's node.
        vm: String,
        /// One of them (`"virtual GIC distributor"`, `"memory"`, a device path, ...).
        first: String,
        /// Its range.
        first_range: MemRange,
        /// The other.
        second: String,
        /// Its range.
        second_range: MemRange,
    },
    /// The console SPI is out of range or already used by an assigned device or a doorbell.
    ConsoleIrq {
        /// The VM's node.
        vm: String,
        /// The SPI number.
        spi: u32,
        /// What else uses it, or why it is invalid.
        conflict: String,
    },
    /// The initrd does not lie inside the VM's memory.
    InitrdOutsideMemory {
        /// The VM's node.
        vm: String,
        /// Where the layout puts it.
        range: MemRange,
    },
    /// A shared-memory region lists the VM but gives it no doorbell.
    ShmemWithoutDoorbell {
        /// The `shmem@N` node.
        shmem: String,
    },
    /// An assigned device names a node the host device tree does not have.
    DeviceNotFound {
        /// The VM's node.
        vm: String,
        /// The device path from the config.
        device: String,
    },
    /// A copied node's interrupts go to a controller other than the GIC.
    InterruptParentNotGic {
        /// The node whose interrupts they are.
        node: String,
    },
    /// A copied node refers to a phandle that no host node has.
    DanglingReference {
        /// The node.
        node: String,
        /// The property holding the reference.
        property: String,
        /// The phandle.
        phandle: u32,
    },
    /// A copied node refers to a node with MMIO registers that is not assigned to the VM.
    DependencyHasRegisters {
        /// The node holding the reference.
        node: String,
        /// The property.
        property: String,
        /// The node it refers to.
        target: String,
    },
    /// A copied node has a property the generator cannot carry over faithfully.
    Unsupported {
        /// The node.
        node: String,
        /// The property.
        property: String,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A phandle-list property's length does not match the cells its targets declare.
    MalformedProperty {
        /// The node.
        node: String,
        /// The property.
        property: String,
    },
    /// The DTB writer refused a node or property (invalid name, NUL in a string, ...).
    Write {
        /// The guest node being written.
        node: String,
        /// The property being written, if one was.
        property: Option<String>,
        /// The writer's reason.
        problem: String,
    },
    /// A memory node of the user's guest DTB names memory the VM does not have.
    UserMemoryOutsideVm {
        /// The node in the user's DTB.
        node: String,
        /// The range.
        range: MemRange,
    },
    /// A node of the user's guest DTB has registers at an address the VM is not given.
    UserUnassignedMmio {
        /// The node in the user's DTB.
        node: String,
        /// The range.
        range: MemRange,
    },
}

impl fmt::Display for GuestDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = |r: &MemRange| alloc::format!("{:#x}+{:#x}", r.base, r.size);
        match self {
            Self::Unreadable { which, error } => write!(f, "{which}: {error}"),
            Self::VcpuCount { vm, count, max } => write!(
                f,
                "{vm}: {count} vCPUs; the VM needs 1 to {max} (one per entry of \"cpus\"); change its cpus"
            ),
            Self::NoMemory { vm } => write!(f, "{vm}: no memory; give the VM a \"memory\" range"),
            Self::NoHostTimer => write!(
                f,
                "/: the host device tree has no arm,armv8-timer node, so the guest's timer interrupts are unknown; add the timer node to the board DTS"
            ),
            Self::Overlap { vm, first, first_range, second, second_range } => write!(
                f,
                "{vm}: {first} ({}) overlaps {second} ({}); move one of them (the guest layout or the VM's memory and devices)",
                range(first_range),
                range(second_range)
            ),
            Self::ConsoleIrq { vm, spi, conflict } => write!(
                f,
                "{vm}: the virtual console's SPI {spi} {conflict}; pick a free SPI for the console"
            ),
            Self::InitrdOutsideMemory { vm, range: r } => write!(
                f,
                "{vm}: the initrd ({}) is not inside the VM's memory; place it in one of the VM's memory ranges",
                range(r)
            ),
            Self::ShmemWithoutDoorbell { shmem } => write!(
                f,
                "{shmem}: no doorbell for this VM; give \"doorbells\" one SPI per entry of \"vms\""
            ),
            Self::DeviceNotFound { vm, device } => write!(
                f,
                "{vm}: assigned device {device} is not in the host device tree; fix the phandle in \"devices\""
            ),
            Self::InterruptParentNotGic { node } => write!(
                f,
                "{node}: its interrupts go to a controller other than the GIC, which the VM does not have; assign a device wired to the GIC"
            ),
            Self::DanglingReference { node, property, phandle } => write!(
                f,
                "{node}: \"{property}\" refers to phandle {phandle:#x}, which no node has; fix the host device tree"
            ),
            Self::DependencyHasRegisters { node, property, target } => write!(
                f,
                "{node}: \"{property}\" refers to {target}, which has MMIO registers the VM is not given; assign {target} to the VM too, or give the device a clock/regulator the VM can own"
            ),
            Self::Unsupported { node, property, reason } => {
                write!(f, "{node}: \"{property}\" cannot be copied into the guest: {reason}")
            }
            Self::MalformedProperty { node, property } => write!(
                f,
                "{node}: \"{property}\" does not match the #...-cells of the nodes it refers to; fix the host device tree"
            ),
            Self::Write { node, property: Some(p), problem } => write!(
                f,
                "guest DTB {node}: property \"{p}\": {problem}; rename it in the host device tree or the config"
            ),
            Self::Write { node, property: None, problem } => write!(
                f,
                "guest DTB {node}: {problem}; rename the node in the host device tree"
            ),
            Self::UserMemoryOutsideVm { node, range: r } => write!(
                f,
                "user guest DTB {node}: memory {} is not the VM's; list only the VM's memory ranges",
                range(r)
            ),
            Self::UserUnassignedMmio { node, range: r } => write!(
                f,
                "user guest DTB {node}: registers at {} are not the VM's (not one of its devices, its memory, its virtual GIC or console); remove the node or assign the device to the VM",
                range(r)
            ),
        }
    }
}
