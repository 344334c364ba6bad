//! [`check_user_dtb`]: a user-supplied guest DTB may name only what the VM owns.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::host::Tree;
use super::{GuestDtError, GuestLayout};
use crate::config::{ShmemConfig, VmConfig};
use crate::MemRange;

/// Whether `r` lies wholly inside one of `windows`.
fn inside(windows: &[MemRange], r: &MemRange) -> bool {
    let end = u128::from(r.base) + u128::from(r.size);
    windows
        .iter()
        .any(|w| w.base <= r.base && end <= u128::from(w.base) + u128::from(w.size))
}

/// Checks a user's guest DTB (a `multiboot,device-tree` module) for `vm`.
///
/// Every problem is reported: memory nodes (`device_type = "memory"`) must lie inside the
/// VM's memory; `/reserved-memory` children inside its memory or its shared memory; every
/// other enabled node whose `reg` translates to a CPU address must lie inside the VM's
/// memory, shared memory, an assigned device's registers, or the virtual GIC and console of
/// `layout`. Nodes whose `reg` is not CPU-addressable (CPUs, devices on I2C or SPI buses)
/// are not MMIO and are not checked.
pub fn check_user_dtb(
    user_blob: &[u8],
    vm: &VmConfig,
    shmem: &[ShmemConfig],
    layout: &GuestLayout,
) -> Result<(), Vec<GuestDtError>> {
    let tree = Tree::read(user_blob).map_err(|error| {
        alloc::vec![GuestDtError::Unreadable {
            which: "user guest DTB",
            error,
        }]
    })?;
    let shared: Vec<MemRange> = shmem
        .iter()
        .filter(|s| s.vms.contains(&vm.index))
        .map(|s| s.memory)
        .collect();
    let mut mmio: Vec<MemRange> = vm.memory.clone();
    mmio.extend(&shared);
    mmio.extend(vm.devices.iter().flat_map(|d| d.regs.iter().copied()));
    mmio.extend(layout.gic.regions(vm.cpus.len()).map(|(_, r)| r));
    mmio.push(layout.console.range());
    let mut reserved_ok = vm.memory.clone();
    reserved_ok.extend(&shared);

    let reserved_parent = tree.nodes.iter().position(|n| n.path == "/reserved-memory");
    let mut errors = Vec::new();
    for node in &tree.nodes {
        if !node.enabled() {
            continue;
        }
        let is_memory = node
            .prop("device_type")
            .is_some_and(|v| v.split(|&b| b == 0).next() == Some(b"memory"));
        let Ok(Some(regs)) = &node.regs else {
            if is_memory {
                if let Err(e) = &node.regs {
                    errors.push(GuestDtError::Unreadable {
                        which: "user guest DTB",
                        error: e.clone(),
                    });
                }
            }
            continue;
        };
        let (allowed, memory) = if is_memory {
            (&vm.memory, true)
        } else if reserved_parent.is_some() && node.parent == reserved_parent {
            (&reserved_ok, true)
        } else {
            (&mmio, false)
        };
        for r in regs.iter().filter(|r| r.size != 0) {
            if inside(allowed, r) {
                continue;
            }
            let node = node.path.to_string();
            errors.push(if memory {
                GuestDtError::UserMemoryOutsideVm { node, range: *r }
            } else {
                GuestDtError::UserUnassignedMmio { node, range: *r }
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
