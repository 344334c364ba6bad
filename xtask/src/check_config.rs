//! `cargo xtask check-config`: the `/hypervisor` check the hypervisor makes at boot, run on
//! the host against a board's `.dts` or `.dtb`, with a table of what each VM gets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use platform::config::{self, ConfigReport, HypervisorConfig, ModuleKind, OnCrash};
use platform::{MemRange, Platform};

use crate::cmd::{self, bail};
use crate::image;

const MIB: u64 = 1 << 20;
/// Where QEMU's direct boot (`-kernel`) puts an arm64 Image: 2 MiB into the first RAM bank.
const QEMU_LOAD_OFFSET: u64 = 2 * MIB;
/// The hypervisor's size when no `target/hyp.bin` says otherwise.
const DEFAULT_SIZE: u64 = 8 * MIB;

#[derive(clap::Args)]
pub struct CheckConfigArgs {
    /// The board's device tree with its /hypervisor node: .dts (compiled with dtc) or .dtb.
    pub file: PathBuf,
    /// Where the hypervisor is loaded [default: the first RAM bank + 2 MiB, QEMU's direct-boot address].
    #[arg(long, value_name = "ADDR", value_parser = parse_number)]
    pub hypervisor_at: Option<u64>,
    /// Bytes the hypervisor occupies [default: image_size from target/hyp.bin, else 8 MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_number)]
    pub hypervisor_size: Option<u64>,
}

/// `0x200000`, `2097152`, `2M`, `0x2M`, `512K`, `1G`.
fn parse_number(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => digits.replace('_', "").parse(),
    }
    .map_err(|_| format!("`{text}` is not a number (e.g. 0x40200000, 8M)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` does not fit in 64 bits"))
}

/// The hypervisor's range and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorPlacement {
    pub range: MemRange,
    /// Where the address came from, e.g. "--hypervisor-at".
    pub at_source: String,
    /// Where the size came from.
    pub size_source: String,
}

pub fn check_config(args: &CheckConfigArgs) -> cmd::Result<ExitCode> {
    let blob = load(&args.file)?;
    let platform = match Platform::parse(&blob) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let hyp_bin = cmd::target_dir().join("hyp.bin");
    let placement = placement(
        &platform,
        args.hypervisor_at,
        args.hypervisor_size,
        &hyp_bin,
    );
    let report = config::check(&blob, &platform, &[placement.range]);
    let (text, ok) = render(
        &args.file.display().to_string(),
        &platform,
        &placement,
        &report,
    );
    print!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The file's bytes; a `.dts` is compiled with dtc first.
fn load(file: &Path) -> cmd::Result<Vec<u8>> {
    if file.extension().is_some_and(|e| e == "dts") {
        let output = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb"])
            .arg(file)
            .output();
        return match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "dtc (device-tree-compiler) is needed to compile {}: run scripts/setup-host.sh, or give a .dtb",
                file.display()
            ),
            Err(e) => bail!("cannot run dtc: {e}"),
            Ok(out) if !out.status.success() => bail!(
                "dtc could not compile {}:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
            Ok(out) => Ok(out.stdout),
        };
    }
    std::fs::read(file).map_err(|e| cmd::Error::new(format!("cannot read {}: {e}", file.display())))
}

/// Chooses the hypervisor's range from the options, the board and `hyp_bin`.
pub fn placement(
    platform: &Platform,
    at: Option<u64>,
    size: Option<u64>,
    hyp_bin: &Path,
) -> HypervisorPlacement {
    let (base, at_source) = match (at, platform.memory.first()) {
        (Some(at), _) => (at, "--hypervisor-at".to_owned()),
        (None, Some(bank)) => (
            bank.base.saturating_add(QEMU_LOAD_OFFSET),
            "first RAM bank + 2 MiB, where QEMU's direct boot loads it".to_owned(),
        ),
        (None, None) => (QEMU_LOAD_OFFSET, "2 MiB (no RAM bank)".to_owned()),
    };
    let from_image = || {
        let bytes = std::fs::read(hyp_bin).ok()?;
        image::parse_header(&bytes).ok().map(|h| h.image_size)
    };
    let (size, size_source) = match size {
        Some(size) => (size, "--hypervisor-size".to_owned()),
        None => match from_image() {
            Some(size) => (size, format!("image_size of {}", hyp_bin.display())),
            None => (
                DEFAULT_SIZE,
                format!("8 MiB default, {} not found", hyp_bin.display()),
            ),
        },
    };
    HypervisorPlacement {
        range: MemRange { base, size },
        at_source,
        size_source,
    }
}

fn range(r: MemRange) -> String {
    let end = u128::from(r.base) + u128::from(r.size);
    format!("[{:#x}, {end:#x})", r.base)
}

/// `1024 MiB`, `64 KiB`, `100 bytes`.
fn size(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

fn last(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The report as text, and whether the config is valid.
pub fn render(
    file: &str,
    platform: &Platform,
    hyp: &HypervisorPlacement,
    report: &ConfigReport,
) -> (String, bool) {
    let mut out = String::new();
    let ram: Vec<String> = platform.memory.iter().map(|&r| range(r)).collect();
    let _ = writeln!(out, "board:      {} ({file})", platform.model);
    let _ = writeln!(out, "RAM:        {}", ram.join(", "));
    let _ = writeln!(
        out,
        "hypervisor: {} ({}; address: {}; size: {})",
        range(hyp.range),
        size(hyp.range.size),
        hyp.at_source,
        hyp.size_source
    );
    match &report.config {
        Some(config) => table(&mut out, platform, config),
        None if report.errors.is_empty() => {
            let _ = writeln!(out, "\nno /hypervisor node: nothing to check");
        }
        None => {}
    }
    if !report.errors.is_empty() || !report.warnings.is_empty() {
        out.push('\n');
    }
    for e in &report.errors {
        let _ = writeln!(out, "error: {e}");
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let ok = report.errors.is_empty();
    if let Some(config) = &report.config {
        let _ = writeln!(
            out,
            "\nconfig OK: {}, {}, {}",
            plural(config.vms.len(), "VM"),
            plural(config.shmem.len(), "shared-memory region"),
            plural(report.warnings.len(), "warning")
        );
    } else if !ok {
        let _ = writeln!(
            out,
            "\nconfig refused: {}, {}",
            plural(report.errors.len(), "error"),
            plural(report.warnings.len(), "warning")
        );
    }
    (out, ok)
}

fn table(out: &mut String, platform: &Platform, config: &HypervisorConfig) {
    for vm in &config.vms {
        let cpus: Vec<String> = vm
            .cpus
            .iter()
            .map(|&c| {
                platform
                    .cpus
                    .get(c)
                    .map_or_else(|| format!("#{c}"), |cpu| last(&cpu.node).to_owned())
            })
            .collect();
        let indices: Vec<String> = vm.cpus.iter().map(ToString::to_string).collect();
        let total: u64 = vm.memory.iter().map(|r| r.size).sum();
        let memory: Vec<String> = vm.memory.iter().map(|&r| range(r)).collect();
        let _ = writeln!(out, "\nvm {} \"{}\" ({})", vm.index, vm.label, vm.node);
        let _ = writeln!(
            out,
            "  cpus       {} (CPU {})",
            cpus.join(" "),
            indices.join(", ")
        );
        let _ = writeln!(out, "  memory     {} = {}", memory.join(", "), size(total));
        let devices: Vec<&str> = vm.devices.iter().map(|d| d.node.as_str()).collect();
        let _ = writeln!(
            out,
            "  devices    {}",
            if devices.is_empty() {
                "none".to_owned()
            } else {
                devices.join(", ")
            }
        );
        for d in vm.devices.iter().filter(|d| !d.streams.is_empty()) {
            let streams: Vec<String> = d
                .streams
                .iter()
                .map(|s| format!("[{:#x}, {:#x}) on {}", s.first, s.end(), s.smmu))
                .collect();
            let _ = writeln!(
                out,
                "  dma        {}: streams {}",
                d.node,
                streams.join(", ")
            );
        }
        for (n, m) in vm.modules.iter().enumerate() {
            let kind = match m.kind {
                ModuleKind::Kernel => "kernel",
                ModuleKind::Ramdisk => "ramdisk",
                ModuleKind::DeviceTree => "device-tree",
            };
            let mut line = format!("{kind} {} ({})", range(m.range), size(m.range.size));
            if m.raw {
                line.push_str(", raw");
            }
            if let Some(at) = m.load_address {
                let _ = write!(line, ", loaded at {at:#x}");
            }
            let head = if n == 0 { "modules" } else { "" };
            let _ = writeln!(out, "  {head:<10} {line}");
        }
        let on_crash = match vm.on_crash {
            OnCrash::Stop => "stop",
            OnCrash::Restart => "restart",
        };
        let _ = writeln!(out, "  on-crash   {on_crash}");
        let _ = writeln!(
            out,
            "  isolated   {}",
            if vm.isolated { "yes" } else { "no" }
        );
        if let Some(args) = &vm.bootargs {
            let _ = writeln!(out, "  bootargs   {args}");
        }
    }
    for s in &config.shmem {
        let members: Vec<String> = s
            .vms
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let label = config.vms.get(v).map_or("?", |vm| vm.label.as_str());
                match s.doorbells.get(i) {
                    Some(spi) => format!("{label} (doorbell SPI {spi})"),
                    None => label.to_owned(),
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "\nshmem {} {} ({})\n  vms        {}",
            s.node,
            range(s.memory),
            size(s.memory.size),
            members.join(", ")
        );
    }
    for v in &config.vsock {
        let label = |i: usize| config.vms.get(i).map_or("?", |vm| vm.label.as_str());
        let _ = writeln!(
            out,
            "\nvsock {}\n  driver     {} (CID {}), device at {:#x}, SPI {}\n  service    {} (CID {}), rings {} ({}), doorbell SPI {}",
            v.node,
            label(v.driver),
            v.driver_cid,
            v.window,
            v.driver_spi,
            label(v.service),
            v.service_cid,
            range(v.memory),
            size(v.memory.size),
            v.service_spi
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = include_bytes!("../../platform/fixtures/config/virt-gicv3-valid.dtb");
    const INVALID: &[u8] = include_bytes!("../../platform/fixtures/config/bad-memory.dtb");

    fn run(blob: &[u8]) -> (String, bool) {
        let platform = Platform::parse(blob).unwrap();
        let hyp = placement(&platform, None, None, Path::new("/nonexistent/hyp.bin"));
        let report = config::check(blob, &platform, &[hyp.range]);
        render("test.dtb", &platform, &hyp, &report)
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x40200000"), Ok(0x4020_0000));
        assert_eq!(parse_number("8M"), Ok(8 << 20));
        assert_eq!(parse_number("0x2M"), Ok(2 << 20));
        assert_eq!(parse_number("4096"), Ok(4096));
        assert_eq!(parse_number("1G"), Ok(1 << 30));
        assert!(parse_number("12q").is_err());
        assert!(parse_number("0xffffffffffffffffK").is_err());
    }

    #[test]
    fn default_placement() {
        let platform = Platform::parse(VALID).unwrap();
        let hyp = placement(&platform, None, None, Path::new("/nonexistent/hyp.bin"));
        assert_eq!(
            hyp.range,
            MemRange {
                base: 0x4020_0000,
                size: 8 << 20
            }
        );
        assert!(hyp.size_source.contains("not found"));
        let hyp = placement(&platform, Some(0x1000), Some(0x2000), Path::new("/x"));
        assert_eq!(
            hyp.range,
            MemRange {
                base: 0x1000,
                size: 0x2000
            }
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(1 << 30), "1024 MiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(100), "100 bytes");
    }

    /// Compares `text` with the golden file `name` in xtask/testdata/; with
    /// `TANDEM_BLESS=1` in the environment, rewrites the file instead.
    fn golden(name: &str, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        if std::env::var_os("TANDEM_BLESS").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, expected,
            "{name} changed: rerun with TANDEM_BLESS=1, and update docs/binding.md"
        );
        let docs = include_str!("../../docs/binding.md");
        assert!(
            docs.contains(text),
            "docs/binding.md does not show the current {name}"
        );
    }

    #[test]
    fn valid_table() {
        let (text, ok) = run(VALID);
        assert!(ok, "{text}");
        golden("check-config-valid.txt", &text);
    }

    #[test]
    fn invalid_listing() {
        let (text, ok) = run(INVALID);
        assert!(!ok);
        golden("check-config-invalid.txt", &text);
    }
}
