//! `cargo xtask run --config FILE.dtsi`: builds the DT QEMU boots, the way Xen's ImageBuilder
//! does for dom0less. The board's own DTB (dumped from QEMU for the chosen machine, or
//! Debian's for raspi4b) gets the `/hypervisor` fragment of FILE; each module node that
//! names its file with the xtask-only property `xtask,file` gets its `reg` filled in (its
//! unit address, the file's size) and is placed there with QEMU's `-device loader`; the
//! result is checked with `check-config` before QEMU starts.
//!
//! `xtask,file` values: `@guest:<name>` (a test guest, `target/guests/<name>.bin`), `@linux`
//! (Debian's arm64 kernel `Image`), `@initramfs` (the busybox initramfs,
//! `target/initramfs.cpio`, built when needed), or a path relative to FILE. The property is removed
//! before boot: the hypervisor never sees it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check_config::{self, CheckConfigArgs};
use crate::cmd::{self, bail, Result};
use crate::debian;
use crate::qemu::{Board, Machine};

/// The DTB to boot and the files to load.
pub struct Composed {
    pub dtb: PathBuf,
    /// (file, physical address) pairs for `-device loader`.
    pub modules: Vec<(PathBuf, u64)>,
}

fn tool(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    cmd::output(&mut command)
}

/// The machine's DTB as QEMU would generate it.
fn base_dtb(machine: &Machine, out: &Path) -> Result<()> {
    match machine.board {
        Board::Virt => {
            let gic = match machine.gic {
                crate::qemu::Gic::V2 => 2,
                crate::qemu::Gic::V3 => 3,
            };
            let m = format!(
                "virt,virtualization=on,gic-version={gic},dumpdtb={}",
                out.display()
            );
            let cpus = machine.cpus.to_string();
            let mem = machine.mem.to_string();
            tool(
                "qemu-system-aarch64",
                &[
                    "-M", &m, "-cpu", "max", "-smp", &cpus, "-m", &mem, "-display", "none",
                ],
            )?;
        }
        Board::Raspi4b => {
            let dtb = debian::kernel()?.rpi4_dtb();
            std::fs::copy(&dtb, out)
                .map_err(|e| cmd::Error::new(format!("{}: {e}", dtb.display())))?;
            // The file's memory node is zero-sized; QEMU writes 960 MiB into it at boot.
            // Do the same here, so the config is checked against the RAM the board has.
            let file = out.to_string_lossy();
            tool(
                "fdtput",
                &["-t", "x", &file, "/memory@0", "reg", "0", "0", "0x3c000000"],
            )?;
        }
    }
    Ok(())
}

/// Resolves an `xtask,file` value.
fn resolve(value: &str, config_dir: &Path) -> Result<PathBuf> {
    let path = if let Some(name) = value.strip_prefix("@guest:") {
        cmd::target_dir().join("guests").join(format!("{name}.bin"))
    } else if value == "@linux" {
        debian::kernel()?.image
    } else if value == "@initramfs" {
        crate::initramfs::build()?
    } else if value.starts_with('@') {
        bail!("xtask,file = \"{value}\": unknown; use @guest:<name>, @linux, @initramfs or a path");
    } else {
        config_dir.join(value)
    };
    if !path.is_file() {
        bail!(
            "xtask,file = \"{value}\": {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Child node names of `node` in `dtb`.
fn children(dtb: &Path, node: &str) -> Result<Vec<String>> {
    let out = tool("fdtget", &["-l", &dtb.to_string_lossy(), node])?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

pub fn compose(machine: &Machine, config: &Path) -> Result<Composed> {
    let work = cmd::target_dir().join("run");
    std::fs::create_dir_all(&work)
        .map_err(|e| cmd::Error::new(format!("{}: {e}", work.display())))?;
    let base = work.join("board.dtb");
    base_dtb(machine, &base)?;
    let mut dts = tool(
        "dtc",
        &["-q", "-I", "dtb", "-O", "dts", &base.to_string_lossy()],
    )?;
    let fragment = std::fs::read_to_string(config)
        .map_err(|e| cmd::Error::new(format!("--config {}: {e}", config.display())))?;
    dts.push('\n');
    dts.push_str(&fragment);
    let merged_dts = work.join("board+config.dts");
    let dtb = work.join("board+config.dtb");
    std::fs::write(&merged_dts, dts)
        .map_err(|e| cmd::Error::new(format!("{}: {e}", merged_dts.display())))?;
    let config_dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let include = config_dir.to_string_lossy().to_string();
    tool(
        "dtc",
        &[
            "-q",
            "-i",
            &include,
            "-I",
            "dts",
            "-O",
            "dtb",
            "-o",
            &dtb.to_string_lossy(),
            &merged_dts.to_string_lossy(),
        ],
    )?;

    let mut modules = Vec::new();
    let file = dtb.to_string_lossy().to_string();
    for vm in children(&dtb, "/hypervisor")? {
        let vm_path = format!("/hypervisor/{vm}");
        for module in children(&dtb, &vm_path)? {
            let node = format!("{vm_path}/{module}");
            let Ok(value) = tool("fdtget", &["-ts", &file, &node, "xtask,file"]) else {
                continue;
            };
            let path = resolve(value.trim(), &config_dir)?;
            let Some(addr) = module
                .split_once('@')
                .and_then(|(_, a)| u64::from_str_radix(a, 16).ok())
            else {
                bail!("{node}: xtask,file needs the node's unit address to say where to load it (e.g. kernel@49000000)");
            };
            let size = std::fs::metadata(&path)
                .map_err(|e| cmd::Error::new(format!("{}: {e}", path.display())))?
                .len();
            let cells = [
                addr >> 32,
                addr & 0xffff_ffff,
                size >> 32,
                size & 0xffff_ffff,
            ]
            .map(|c| format!("{c:#x}"));
            let mut args = vec!["-t", "x", &file, &node, "reg"];
            args.extend(cells.iter().map(String::as_str));
            tool("fdtput", &args)?;
            tool("fdtput", &["-d", &file, &node, "xtask,file"])?;
            modules.push((path, addr));
        }
    }

    let check = CheckConfigArgs {
        file: dtb.clone(),
        hypervisor_at: Some(machine.load_address()),
        hypervisor_size: None,
    };
    let code = check_config::check_config(&check)?;
    if code != std::process::ExitCode::SUCCESS {
        bail!(
            "--config {}: the configuration is refused (see the errors above)",
            config.display()
        );
    }
    Ok(Composed { dtb, modules })
}
