//! Checks the host tools that `run` and `test` need, installing them through
//! `scripts/setup-host.sh` when running as root.

use std::path::Path;
use std::process::Command;

use crate::cmd::{self, bail, Result};

/// Debian's U-Boot build for QEMU's `virt` machine (package `u-boot-qemu`).
pub const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The oldest QEMU whose `virt` and `raspi4b` machines Tandem supports.
const MIN_QEMU_MAJOR: u32 = 9;

/// Makes sure QEMU (new enough), dtc, U-Boot and mke2fs are installed.
pub fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let script = cmd::root().join("scripts/setup-host.sh");
    if !cmd::is_root() {
        bail!(
            "missing host tools: {}.\nInstall them as root with:\n  sudo bash {}\n\
             (on Debian bookworm that is: add bookworm-backports, then\n  \
             apt-get install -t bookworm-backports qemu-system-arm\n  \
             apt-get install device-tree-compiler u-boot-qemu gdb-multiarch e2fsprogs)",
            missing.join(", "),
            script.display()
        );
    }
    eprintln!(
        "xtask: missing {}; running {}",
        missing.join(", "),
        cmd::pretty(&script)
    );
    cmd::run(Command::new("bash").arg(&script))?;
    let still = self::missing();
    if !still.is_empty() {
        bail!(
            "still missing after {}: {}",
            script.display(),
            still.join(", ")
        );
    }
    Ok(())
}

/// Describes each missing prerequisite.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    match qemu_major() {
        None => missing.push("qemu-system-aarch64 (Debian package qemu-system-arm)".to_string()),
        Some(v) if v < MIN_QEMU_MAJOR => missing.push(format!(
            "qemu-system-aarch64 >= {MIN_QEMU_MAJOR} (found version {v}; bookworm has it in bookworm-backports)"
        )),
        Some(_) => {}
    }
    if !cmd::on_path("dtc") {
        missing.push("dtc (Debian package device-tree-compiler)".to_string());
    }
    if !Path::new(UBOOT_BIN).is_file() {
        missing.push(format!("{UBOOT_BIN} (Debian package u-boot-qemu)"));
    }
    if crate::disk::mke2fs().is_none() {
        missing.push("mke2fs (Debian package e2fsprogs), for the rich OS's disk image".to_string());
    }
    missing
}

/// The major version of `qemu-system-aarch64`, or `None` when it is not installed.
fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-aarch64")
        .arg("--version")
        .output()
        .ok()?;
    parse_qemu_major(&String::from_utf8_lossy(&out.stdout))
}

/// Parses "QEMU emulator version 10.0.2 (...)".
fn parse_qemu_major(text: &str) -> Option<u32> {
    let rest = text.split("version ").nth(1)?;
    rest.split('.').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_qemu_major;

    #[test]
    fn qemu_version() {
        assert_eq!(
            parse_qemu_major(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"
            ),
            Some(10)
        );
        assert_eq!(parse_qemu_major("QEMU emulator version 7.2.15\n"), Some(7));
        assert_eq!(parse_qemu_major("garbage"), None);
    }
}
