//! The VMs the device tree describes: validated at boot with the same code as
//! `cargo xtask check-config`, and listed in the banner.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use log::{error, info, warn};
use platform::config::{self, HypervisorConfig, ModuleKind, VmConfig};
use platform::{MemRange, Platform};

use crate::arch;

/// Validates `/hypervisor` against the board and what EL2 owns; prints every warning and
/// error. Returns the config only when it is valid, so an invalid one starts no VM.
pub fn load(blob: &[u8], platform: &Platform, el2_owned: &[MemRange]) -> Option<HypervisorConfig> {
    let report = config::check(blob, platform, el2_owned);
    for w in &report.warnings {
        warn!("config: {w}");
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            error!("config: {e}");
        }
        error!(
            "config: {} error{} in /hypervisor; no VM started (check it on the host with `cargo xtask check-config`)",
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
        return None;
    }
    let Some(config) = report.config else {
        info!("config: no /hypervisor node, so no VMs to start");
        return None;
    };
    let mut bad_images = 0;
    for vm in &config.vms {
        bad_images += check_images(vm, &platform.memory);
    }
    if bad_images > 0 {
        error!(
            "config: {bad_images} unusable image{}; no VM started",
            if bad_images == 1 { "" } else { "s" }
        );
        return None;
    }
    for vm in &config.vms {
        info!("{}", describe(vm));
    }
    Some(config)
}

/// Checks that each VM's kernel is an arm64 Image, an ELF64 or a declared raw binary that
/// fits its memory; returns how many are not.
fn check_images(vm: &VmConfig, ram: &[MemRange]) -> usize {
    let Some(kernel) = vm.module(ModuleKind::Kernel) else {
        return 0;
    };
    let Some(bytes) = arch::physical_bytes(ram, kernel.range.base, kernel.range.size) else {
        error!(
            "config: {}: the module is not in RAM mapped by the hypervisor",
            kernel.node
        );
        return 1;
    };
    let result = platform::image::probe(bytes, kernel.raw).and_then(|image| {
        platform::image::plan(&image, bytes.len(), &vm.memory, kernel.load_address)
    });
    match result {
        Ok(_) => 0,
        Err(e) => {
            error!("config: {}: {e}", kernel.node);
            1
        }
    }
}

/// `vm <label>: cpus <list>, memory <ranges>, devices <n>`.
fn describe(vm: &VmConfig) -> String {
    let cpus: Vec<String> = vm.cpus.iter().map(|c| alloc::format!("{c}")).collect();
    let mut s = String::new();
    let _ = write!(s, "vm {}: cpus {}, memory", vm.label, cpus.join(","));
    let mut total = 0;
    for m in &vm.memory {
        let _ = write!(
            s,
            " {:#x}-{:#x}",
            m.base,
            m.base.saturating_add(m.size).saturating_sub(1)
        );
        total += m.size;
    }
    let _ = write!(s, " ({} MiB), devices {}", total >> 20, vm.devices.len());
    if vm.isolated {
        s.push_str(", isolated");
    }
    s
}
