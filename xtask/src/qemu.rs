//! `cargo xtask run`: boots the hypervisor in QEMU (`virt` or `raspi4b`) on the serial console.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Args, ValueEnum};

use crate::build::{self, BuildArgs};
use crate::cmd::{self, bail, Error, Result};
use crate::vmconfig::{self, RichOs, RichOsOptions};
use crate::{debian, disk, prereq};

/// Where QEMU's `virt` machine starts RAM.
const VIRT_RAM_BASE: u64 = 0x4000_0000;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The machine QEMU emulates.
    #[arg(long, value_enum, default_value_t = Board::Virt)]
    pub board: Board,
    /// GIC version of the virt machine (raspi4b always has a GIC-400, i.e. v2). [default: 3]
    #[arg(long, value_enum)]
    pub gic: Option<Gic>,
    /// Number of CPUs, 1 to 8 (raspi4b always has 4). [default: 4]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub cpus: Option<u32>,
    /// RAM size with an M or G suffix, e.g. 512M, 2G, 6G (raspi4b always has 2G). [default: 2G]
    #[arg(long, value_parser = MemSize::parse)]
    pub mem: Option<MemSize>,
    /// How the hypervisor is started: QEMU's own loader, or Debian's U-Boot (virt only).
    #[arg(long, value_enum, default_value_t = Firmware::Direct)]
    pub firmware: Firmware,
    /// The hypervisor's command line (bootargs in /chosen), e.g. `tandem.loglevel=debug`.
    #[arg(long, value_name = "STR")]
    pub append: Option<String>,
    /// Wait for gdb on localhost:1234 before the first instruction (QEMU `-s -S`).
    #[arg(long)]
    pub gdb: bool,
    /// Deterministic timing: one instruction is one nanosecond of guest time.
    #[arg(long)]
    pub icount: bool,
    /// Build the debug profile of the hypervisor.
    #[arg(long)]
    pub debug: bool,
    /// VMs to run: a `/hypervisor` DT fragment merged into the board's DT, its modules
    /// placed with `-device loader` (see configs/ and docs/binding.md). [default: Linux
    /// beside the secure guest, configs/virt.dtsi or configs/raspi4b.dtsi, when the
    /// machine has the default CPUs and memory]
    #[arg(long, value_name = "FILE.dtsi")]
    pub config: Option<PathBuf>,
    /// Boot the hypervisor with no VMs.
    #[arg(long, conflicts_with = "config")]
    pub bare: bool,
    /// The rich OS's kernel instead of Debian's: an uncompressed arm64 Image or an AArch64
    /// ELF. The rich-OS options change the config's VM labelled `linux` (or else the first
    /// VM that boots `@linux`).
    #[arg(long, value_name = "FILE", value_parser = vmconfig::parse_kernel, conflicts_with = "bare")]
    pub kernel: Option<PathBuf>,
    /// The rich OS's initrd instead of the busybox initramfs.
    #[arg(long, value_name = "FILE", value_parser = vmconfig::parse_initrd, conflicts_with = "bare")]
    pub initrd: Option<PathBuf>,
    /// The rich OS's own guest DTB (a multiboot,device-tree module, which the hypervisor
    /// checks) instead of the one the hypervisor generates.
    #[arg(long, value_name = "FILE", value_parser = vmconfig::parse_dtb, conflicts_with = "bare")]
    pub dtb: Option<PathBuf>,
    /// The rich OS's kernel command line, replacing the config's `bootargs`, e.g.
    /// "console=ttyAMA0 earlycon tandem.test=checks".
    #[arg(
        long,
        value_name = "STRING",
        value_parser = vmconfig::parse_bootargs,
        allow_hyphen_values = true,
        conflicts_with = "bare"
    )]
    pub bootargs: Option<String>,
    /// Put QEMU's SMMUv3 in front of the PCIe bus (virt only; `iommu=smmuv3`: virt gives it
    /// both stages, `stage=nested`)
    /// and move the rich OS's disk onto PCI: the default layout becomes
    /// configs/virt-smmu.dtsi, where Linux also owns the PCIe host bridge and its disk's DMA
    /// goes through the SMMU.
    #[arg(long)]
    pub smmu: bool,
    /// Boot the rich OS straight on QEMU, without the hypervisor: its kernel, initrd, DTB,
    /// bootargs and devices, on as many CPUs and as much memory as its VM has (virt, at
    /// EL1, as under the hypervisor). For comparisons.
    #[arg(long, conflicts_with_all = ["bare", "append"])]
    pub native: bool,
    /// Extra arguments passed to QEMU as they are (after `--`).
    #[arg(last = true, value_name = "QEMU_ARGS")]
    pub qemu_args: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// QEMU's `virt` machine with EL2 enabled (`virtualization=on`).
    Virt,
    /// QEMU's Raspberry Pi 4 Model B, with Debian's bcm2711-rpi-4-b.dtb.
    Raspi4b,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gic {
    #[value(name = "2")]
    V2,
    #[value(name = "3")]
    V3,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU loads the Image itself and enters it at EL2 (`-kernel`).
    Direct,
    /// Debian's U-Boot (`-bios u-boot.bin`) boots the Image with `booti`.
    Uboot,
}

/// A RAM size in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSize(pub u64);

impl MemSize {
    const MIN_MIB: u64 = 128;
    /// The virt machine's RAM must end below 256 GiB (it starts at 1 GiB).
    const MAX_MIB: u64 = 255 * 1024;

    /// Parses `512M`, `2G`, `2048MiB`, `6g`...
    pub fn parse(text: &str) -> std::result::Result<MemSize, String> {
        let help = "use a number with an M or G suffix, e.g. 512M, 2G or 6G";
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let (digits, scale) = if let Some(d) = lower.strip_suffix("gib").or(lower.strip_suffix('g'))
        {
            (d, 1024)
        } else if let Some(d) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
            (d, 1)
        } else {
            return Err(format!("`{text}` has no size suffix: {help}"));
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a size: {help}"))?;
        let mib = n.saturating_mul(scale);
        if !(Self::MIN_MIB..=Self::MAX_MIB).contains(&mib) {
            return Err(format!(
                "`{text}` is out of range: RAM must be between {}M and {}G",
                Self::MIN_MIB,
                Self::MAX_MIB / 1024
            ));
        }
        Ok(MemSize(mib))
    }
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1024) {
            write!(f, "{}G", self.0 / 1024)
        } else {
            write!(f, "{}M", self.0)
        }
    }
}

/// A fully checked machine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub board: Board,
    pub gic: Gic,
    pub cpus: u32,
    pub mem: MemSize,
    pub firmware: Firmware,
    /// QEMU's SMMUv3 in front of the PCIe bus (virt only).
    pub smmu: bool,
}

impl Machine {
    /// Applies the defaults and refuses combinations a board cannot do.
    pub fn from_args(args: &RunArgs) -> Result<Machine> {
        if args.native && args.board != Board::Virt {
            bail!("--native boots the rich OS on --board virt only (Linux on raspi4b needs the hypervisor's generated DT)");
        }
        if args.native && args.firmware != Firmware::Direct {
            bail!("--native boots the rich OS with QEMU's own loader; leave out --firmware uboot");
        }
        match args.board {
            Board::Virt => Ok(Machine {
                board: Board::Virt,
                gic: args.gic.unwrap_or(Gic::V3),
                cpus: args.cpus.unwrap_or(4),
                mem: args.mem.unwrap_or(MemSize(2048)),
                firmware: args.firmware,
                smmu: args.smmu,
            }),
            Board::Raspi4b => {
                if args.gic == Some(Gic::V3) {
                    bail!("--gic 3: raspi4b has a GIC-400 (GICv2); --gic applies to --board virt");
                }
                if let Some(cpus) = args.cpus.filter(|&c| c != 4) {
                    bail!("--cpus {cpus}: QEMU's raspi4b always has 4 CPUs; leave --cpus out or use --board virt");
                }
                if let Some(mem) = args.mem.filter(|m| m.0 != 2048) {
                    bail!("--mem {mem}: QEMU's raspi4b always has 2G of RAM; leave --mem out or use --board virt");
                }
                if args.firmware == Firmware::Uboot {
                    bail!("--firmware uboot: Debian's U-Boot is built for virt only; use --firmware direct with raspi4b");
                }
                if args.smmu {
                    bail!("--smmu: QEMU's raspi4b has no SMMU; use --board virt");
                }
                Ok(Machine {
                    board: Board::Raspi4b,
                    gic: Gic::V2,
                    cpus: 4,
                    mem: MemSize(2048),
                    firmware: Firmware::Direct,
                    smmu: false,
                })
            }
        }
    }

    /// Where the firmware puts the Image (the hypervisor runs with VA == PA there).
    pub fn load_address(&self) -> u64 {
        match (self.board, self.firmware) {
            // QEMU loads an Image with text_offset 0 at RAM base + 2 MiB.
            (Board::Virt, Firmware::Direct) => VIRT_RAM_BASE + 0x20_0000,
            // U-Boot's kernel_addr_r on qemu_arm64.
            (Board::Virt, Firmware::Uboot) => VIRT_RAM_BASE + 0x40_0000,
            // raspi4b RAM starts at 0.
            (Board::Raspi4b, _) => 0x20_0000,
        }
    }
}

/// Files the QEMU command refers to.
pub struct Inputs<'a> {
    pub bin: &'a Path,
    /// Required for raspi4b.
    pub dtb: Option<&'a Path>,
    /// The rich OS's disk image: with it, the machine gets a virtio-blk disk and a
    /// virtio-net device on QEMU's user network (virt only); the disk is a PCI device with
    /// `--smmu`.
    pub disk: Option<&'a Path>,
    /// Boot this VM's images straight on QEMU instead of the hypervisor (`--native`).
    pub native: Option<&'a RichOs>,
}

/// The QEMU arguments of the rich OS's devices. QEMU's virt machine hands virtio-mmio
/// transports out from the highest down: the disk, created first, is
/// /virtio_mmio@a003e00 (SPI 47), the network device /virtio_mmio@a003c00 (SPI 46), as
/// configs/virt.dtsi assigns them. With `pci_disk` the disk is a virtio-blk PCI device
/// instead (00:01.0, behind the SMMU) and the network device takes /virtio_mmio@a003e00.
/// QEMU's virtio devices bypass an IOMMU unless they offer VIRTIO_F_ACCESS_PLATFORM
/// (`iommu_platform=on`, modern only). Writes to the disk go to a temporary overlay
/// (`snapshot=on`), so every boot starts from the same image.
pub fn device_args(disk: &Path, pci_disk: bool) -> Vec<String> {
    let blk = if pci_disk {
        "virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on"
    } else {
        "virtio-blk-device,drive=disk0"
    };
    [
        "-drive",
        &format!(
            "file={},format=raw,if=none,id=disk0,snapshot=on",
            disk.display()
        ),
        "-device",
        blk,
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-device,netdev=net0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Builds the QEMU argument list (without the program name).
pub fn qemu_args(
    machine: &Machine,
    args: &RunArgs,
    inputs: &Inputs<'_>,
    interactive: bool,
) -> Result<Vec<String>> {
    let console = if interactive { "mon:stdio" } else { "stdio" };
    let mut q: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| q.extend(items.iter().map(|s| s.to_string()));
    match (machine.board, inputs.native) {
        (Board::Virt, Some(vm)) => {
            let gic = match machine.gic {
                Gic::V2 => 2,
                Gic::V3 => 3,
            };
            let Some(kernel) = &vm.kernel else {
                bail!(
                    "--native: {} ({}) has no kernel module with xtask,file: nothing to boot",
                    vm.node,
                    vm.label
                );
            };
            // At EL1, as the VM runs under the hypervisor. With --smmu, natively Linux
            // drives the SMMU itself (stage 1), so QEMU's default stage suits it.
            let iommu = if machine.smmu { ",iommu=smmuv3" } else { "" };
            push(&["-M", &format!("virt,gic-version={gic}{iommu}")]);
            push(&["-cpu", "max", "-smp", &vm.cpus.to_string()]);
            push(&["-m", &format!("{}M", vm.memory >> 20)]);
            push(&["-serial", console]);
            push(&["-kernel", &kernel.to_string_lossy()]);
            if let Some(initrd) = &vm.initrd {
                push(&["-initrd", &initrd.to_string_lossy()]);
            }
            if let Some(dtb) = &vm.dtb {
                push(&["-dtb", &dtb.to_string_lossy()]);
            }
            if let Some(bootargs) = &vm.bootargs {
                push(&["-append", bootargs]);
            }
        }
        (Board::Virt, None) => {
            let gic = match machine.gic {
                Gic::V2 => 2,
                Gic::V3 => 3,
            };
            let iommu = if machine.smmu { ",iommu=smmuv3" } else { "" };
            push(&[
                "-M",
                &format!("virt,virtualization=on,gic-version={gic}{iommu}"),
            ]);
            push(&["-cpu", "max", "-smp", &machine.cpus.to_string()]);
            push(&["-m", &machine.mem.to_string()]);
            if machine.firmware == Firmware::Uboot {
                push(&["-bios", prereq::UBOOT_BIN]);
            }
            if let Some(dtb) = inputs.dtb {
                push(&["-dtb", &dtb.to_string_lossy()]);
            }
            push(&["-serial", console]);
        }
        (Board::Raspi4b, Some(_)) => bail!("--native boots on --board virt only"),
        (Board::Raspi4b, None) => {
            let Some(dtb) = inputs.dtb else {
                bail!("raspi4b needs Debian's bcm2711-rpi-4-b.dtb");
            };
            push(&["-M", "raspi4b", "-dtb", &dtb.to_string_lossy()]);
            // The first serial is the PL011 (unused); the second is the mini-UART, the
            // console named by the DTB's stdout-path.
            push(&["-serial", "null", "-serial", console]);
        }
    }
    if inputs.native.is_none() {
        push(&["-kernel", &inputs.bin.to_string_lossy()]);
    }
    push(&["-display", "none"]);
    if interactive {
        // QEMU's console escape moves from Ctrl-A to Ctrl-], so that Ctrl-A reaches the
        // hypervisor, where pressing it three times moves the input to the next VM.
        push(&["-echr", "0x1d"]);
    } else {
        push(&["-monitor", "none"]);
    }
    if let Some(append) = &args.append {
        push(&["-append", append]);
    }
    if args.icount {
        // The RTC follows guest time too, or a PL031 alarm comes on the host's clock while
        // the guest's counter runs at the instruction rate.
        push(&["-icount", "shift=0,align=off,sleep=off", "-rtc", "clock=vm"]);
    }
    if args.gdb {
        push(&["-s", "-S"]);
    }
    if let (Board::Virt, Some(disk)) = (machine.board, inputs.disk) {
        q.extend(device_args(disk, machine.smmu));
    }
    q.extend(args.qemu_args.iter().cloned());
    Ok(q)
}

/// The shipped layout for this machine: Linux beside the secure guest. The layouts name
/// four CPUs and need 2 GiB on virt, so other machines boot without VMs (and say so).
fn default_config(machine: &Machine) -> Option<PathBuf> {
    let file = match machine.board {
        Board::Virt if machine.cpus == 4 && machine.mem.0 >= 2048 && machine.smmu => {
            "configs/virt-smmu.dtsi"
        }
        Board::Virt if machine.cpus == 4 && machine.mem.0 >= 2048 => "configs/virt.dtsi",
        Board::Raspi4b => "configs/raspi4b.dtsi",
        Board::Virt => {
            eprintln!(
                "xtask: no shipped VM layout for this machine (configs/virt.dtsi needs --cpus 4 \
                 and --mem 2G or more): booting the hypervisor without VMs; pass --config \
                 FILE.dtsi for your own"
            );
            return None;
        }
    };
    Some(cmd::root().join(file))
}

/// The files of one `cargo xtask run`, `target/run/<pid>/`: removed when the run ends,
/// unless it failed before QEMU started (then they show what went wrong).
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    fn create() -> Result<RunDir> {
        let parent = cmd::target_dir().join("run");
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", parent.display())))?;
        // What runs that are gone left behind (and files of older xtasks, which wrote
        // into target/run/ itself).
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            } else if name.parse::<i32>().is_ok_and(|pid| !process_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let path = parent.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))?;
        Ok(RunDir { path, keep: false })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether a process with this id exists.
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The gdb command that attaches to `-s -S` with symbols at the load address.
pub fn gdb_command(elf: &Path, load_address: u64) -> String {
    let elf = cmd::quote(elf.as_os_str());
    format!(
        "gdb-multiarch -q -ex 'set confirm off' -ex 'add-symbol-file {elf} -o {load_address:#x}' \
         -ex 'target remote localhost:1234'"
    )
}

/// Builds, then runs QEMU in the foreground and returns its exit status.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let machine = Machine::from_args(args)?;
    prereq::ensure()?;
    let artifacts = build::build(&BuildArgs { debug: args.debug })?;
    let config = match (&args.config, args.bare) {
        (Some(config), _) => Some(config.clone()),
        (None, true) => None,
        (None, false) => default_config(&machine),
    };
    let options = RichOsOptions {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        dtb: args.dtb.clone(),
        bootargs: args.bootargs.clone(),
    };
    if config.is_none() && (options.any() || args.native) {
        bail!(
            "--native, --kernel, --initrd, --dtb and --bootargs apply to the rich-OS VM of a \
             config, and this machine has none: pass --config FILE.dtsi"
        );
    }
    let mut work = RunDir::create()?;
    let composed = match &config {
        Some(config) => match vmconfig::compose(&machine, config, &options, &work.path) {
            Ok(composed) => Some(composed),
            Err(e) => {
                work.keep = true;
                return Err(e);
            }
        },
        None => None,
    };
    let native = match (args.native, &composed) {
        (true, Some(c)) => Some(c.rich_os.as_ref().ok_or_else(|| {
            Error::new(
                "--native boots the rich-OS VM, and the config has none (no VM labelled \"linux\" \
                 and none boots xtask,file = \"@linux\")",
            )
        })?),
        _ => None,
    };
    let dtb: Option<PathBuf> = match (&composed, machine.board) {
        (Some(c), _) => Some(c.dtb.clone()),
        (None, Board::Raspi4b) => Some(debian::kernel()?.rpi4_dtb()),
        (None, Board::Virt) => None,
    };
    // The rich OS's devices come with a config on virt (raspi4b has no virtio-mmio).
    let disk = match (&composed, machine.board) {
        (Some(_), Board::Virt) => Some(disk::build()?),
        _ => None,
    };
    let inputs = Inputs {
        bin: &artifacts.bin,
        dtb: dtb.as_deref(),
        disk: disk.as_deref(),
        native,
    };
    let interactive = std::io::stdin().is_terminal();
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(qemu_args(&machine, args, &inputs, interactive)?);
    if native.is_none() {
        for (file, addr) in composed.iter().flat_map(|c| &c.modules) {
            qemu.args([
                "-device",
                &format!("loader,file={},addr={addr:#x},force-raw=on", file.display()),
            ]);
        }
    }
    die_with_parent(&mut qemu);

    eprintln!("xtask: {}", cmd::display(&qemu));
    if interactive {
        eprintln!(
            "xtask: Ctrl-A three times switches the console between VMs; \
             Ctrl-] X quits QEMU, Ctrl-] C switches to its monitor"
        );
    }
    if args.gdb && native.is_some() {
        eprintln!("xtask: QEMU waits for gdb on localhost:1234 (no hypervisor: the rich OS's kernel runs alone)");
    } else if args.gdb {
        eprintln!(
            "xtask: QEMU waits for gdb; in another terminal run:\n  {}",
            gdb_command(&artifacts.elf, machine.load_address())
        );
    }
    let status = cmd::status(&mut qemu)?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        (None, None) => ExitCode::FAILURE,
    })
}

/// Makes the child get SIGKILL when xtask dies, so no QEMU outlives an interrupted run.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it touches no locks or heap.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<RunArgs, String> {
        let mut full = vec!["run"];
        full.extend_from_slice(argv);
        Wrap::try_parse_from(full)
            .map(|w| w.run)
            .map_err(|e| e.to_string())
    }

    fn args_for(argv: &[&str], interactive: bool) -> Vec<String> {
        let args = parse(argv).unwrap();
        let machine = Machine::from_args(&args).unwrap();
        // As `run` does: a DTB for raspi4b (Debian's), none for virt without --config.
        let inputs = Inputs {
            bin: Path::new("/t/hyp.bin"),
            dtb: (machine.board == Board::Raspi4b).then_some(Path::new("/t/rpi4.dtb")),
            disk: None,
            native: None,
        };
        qemu_args(&machine, &args, &inputs, interactive).unwrap()
    }

    #[test]
    fn virt_with_a_composed_dtb_and_the_devices() {
        let args = parse(&["--", "-d", "guest_errors"]).unwrap();
        let machine = Machine::from_args(&args).unwrap();
        let inputs = Inputs {
            bin: Path::new("/t/hyp.bin"),
            dtb: Some(Path::new("/t/board+config.dtb")),
            disk: Some(Path::new("/t/disk.img")),
            native: None,
        };
        let q = qemu_args(&machine, &args, &inputs, false)
            .unwrap()
            .join(" ");
        assert!(
            q.contains("-m 2G -dtb /t/board+config.dtb -serial stdio -kernel /t/hyp.bin"),
            "{q}"
        );
        // The disk first: it gets the highest transport, /virtio_mmio@a003e00.
        assert!(
            q.ends_with(
                " -drive file=/t/disk.img,format=raw,if=none,id=disk0,snapshot=on \
                 -device virtio-blk-device,drive=disk0 -netdev user,id=net0 \
                 -device virtio-net-device,netdev=net0 -d guest_errors"
            ),
            "{q}"
        );
    }

    fn rich_os() -> RichOs {
        RichOs {
            node: "/hypervisor/vm@0".into(),
            label: "linux".into(),
            cpus: 3,
            memory: 1 << 30,
            kernel: Some("/u/Image".into()),
            initrd: Some("/u/initrd".into()),
            dtb: None,
            bootargs: Some("console=ttyAMA0 tandem.test=checks".into()),
        }
    }

    #[test]
    fn native_boots_the_vm_images_on_its_cpus_and_memory() {
        let args = parse(&["--native", "--gic", "2", "--icount"]).unwrap();
        let machine = Machine::from_args(&args).unwrap();
        let vm = rich_os();
        let inputs = Inputs {
            bin: Path::new("/t/hyp.bin"),
            dtb: Some(Path::new("/t/board+config.dtb")),
            disk: Some(Path::new("/t/disk.img")),
            native: Some(&vm),
        };
        let q = qemu_args(&machine, &args, &inputs, false).unwrap();
        let text = q.join(" ");
        assert!(
            text.starts_with(
                "-M virt,gic-version=2 -cpu max -smp 3 -m 1024M -serial stdio -kernel /u/Image \
                 -initrd /u/initrd -append"
            ),
            "{text}"
        );
        let append = q.iter().position(|a| a == "-append").unwrap();
        assert_eq!(q[append + 1], "console=ttyAMA0 tandem.test=checks");
        assert!(
            !text.contains("hyp.bin") && !text.contains("board+config"),
            "{text}"
        );
        assert!(
            text.contains("-icount shift=0,align=off,sleep=off"),
            "{text}"
        );
        assert!(
            text.contains("-device virtio-blk-device,drive=disk0"),
            "{text}"
        );
    }

    #[test]
    fn rich_os_options_parse_and_conflict() {
        let dir = std::env::temp_dir().join(format!("xtask-run-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("Image");
        let mut bytes = vec![0u8; 128];
        bytes[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(&image, &bytes).unwrap();
        let initrd = dir.join("initrd.cpio");
        std::fs::write(&initrd, b"070701").unwrap();
        let (image_arg, initrd_arg) = (image.to_string_lossy(), initrd.to_string_lossy());
        let args = parse(&[
            "--kernel",
            &image_arg,
            "--initrd",
            &initrd_arg,
            "--bootargs",
            "-- console=ttyAMA0",
        ])
        .unwrap();
        assert_eq!(args.kernel.as_deref(), Some(image.as_path()));
        assert_eq!(args.initrd.as_deref(), Some(initrd.as_path()));
        assert_eq!(args.bootargs.as_deref(), Some("-- console=ttyAMA0"));
        let err = parse(&["--kernel", &initrd_arg]).unwrap_err();
        assert!(err.contains("arm64 Image"), "{err}");
        let err = parse(&["--dtb", &initrd_arg]).unwrap_err();
        assert!(err.contains("not a device tree blob"), "{err}");
        assert!(parse(&["--bare", "--kernel", &image_arg]).is_err());
        assert!(parse(&["--native", "--bare"]).is_err());
        assert!(parse(&["--native", "--append", "x"]).is_err());
        for bad in [
            &["--native", "--board", "raspi4b"][..],
            &["--native", "--firmware", "uboot"],
        ] {
            let err = Machine::from_args(&parse(bad).unwrap()).unwrap_err();
            assert!(err.to_string().contains("--native"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uboot_gets_the_shipped_layout_too() {
        let m = |argv: &[&str]| Machine::from_args(&parse(argv).unwrap()).unwrap();
        let virt = default_config(&m(&["--firmware", "uboot"])).unwrap();
        assert!(virt.ends_with("configs/virt.dtsi"));
        assert!(default_config(&m(&["--cpus", "2"])).is_none());
        assert!(default_config(&m(&["--board", "raspi4b"]))
            .unwrap()
            .ends_with("configs/raspi4b.dtsi"));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(MemSize::parse("512M"), Ok(MemSize(512)));
        assert_eq!(MemSize::parse("2G"), Ok(MemSize(2048)));
        assert_eq!(MemSize::parse("6g"), Ok(MemSize(6144)));
        assert_eq!(MemSize::parse("1536MiB"), Ok(MemSize(1536)));
        assert_eq!(MemSize(6144).to_string(), "6G");
        assert_eq!(MemSize(1536).to_string(), "1536M");
        assert!(MemSize::parse("2").unwrap_err().contains("suffix"));
        assert!(MemSize::parse("xG").unwrap_err().contains("not a size"));
        assert!(MemSize::parse("64M").unwrap_err().contains("between"));
        assert!(MemSize::parse("300G").unwrap_err().contains("between"));
        assert!(MemSize::parse("99999999999999999999G").is_err());
    }

    #[test]
    fn default_virt_command() {
        let q = args_for(&[], false).join(" ");
        assert_eq!(
            q,
            "-M virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 2G -serial stdio \
             -kernel /t/hyp.bin -display none -monitor none"
        );
    }

    #[test]
    fn options_reach_qemu() {
        let q = args_for(
            &[
                "--gic",
                "2",
                "--cpus",
                "8",
                "--mem",
                "6G",
                "--firmware",
                "uboot",
                "--append",
                "tandem.loglevel=debug",
                "--icount",
                "--gdb",
                "--",
                "-d",
                "guest_errors",
            ],
            true,
        );
        let q = q.join(" ");
        assert!(q.starts_with("-M virt,virtualization=on,gic-version=2 -cpu max -smp 8 -m 6G"));
        assert!(q.contains("-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin"));
        assert!(q.contains("-serial mon:stdio"));
        assert!(!q.contains("-monitor none"));
        assert!(q.contains("-append tandem.loglevel=debug"));
        assert!(q.contains("-icount shift=0,align=off,sleep=off -rtc clock=vm"));
        assert!(q.ends_with("-s -S -d guest_errors"));
    }

    #[test]
    fn raspi4b_console_is_the_second_serial() {
        let q = args_for(&["--board", "raspi4b"], false).join(" ");
        assert!(q.starts_with("-M raspi4b -dtb /t/rpi4.dtb -serial null -serial stdio -kernel"));
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        assert!(parse(&["--cpus", "9"]).unwrap_err().contains("1..=8"));
        assert!(parse(&["--cpus", "0"]).unwrap_err().contains("1..=8"));
        assert!(parse(&["--gic", "4"])
            .unwrap_err()
            .contains("possible values: 2, 3"));
        assert!(parse(&["--board", "pi5"])
            .unwrap_err()
            .contains("virt, raspi4b"));
        assert!(parse(&["--firmware", "tfa"])
            .unwrap_err()
            .contains("direct, uboot"));
        assert!(parse(&["--mem", "lots"]).unwrap_err().contains("512M"));
        for bad in [
            &["--board", "raspi4b", "--mem", "1G"][..],
            &["--board", "raspi4b", "--cpus", "2"],
            &["--board", "raspi4b", "--gic", "3"],
            &["--board", "raspi4b", "--firmware", "uboot"],
        ] {
            let err = Machine::from_args(&parse(bad).unwrap()).unwrap_err();
            assert!(err.to_string().contains("raspi4b"), "{err}");
        }
        let ok = Machine::from_args(&parse(&["--board", "raspi4b", "--mem", "2G"]).unwrap());
        assert!(ok.is_ok());
    }

    #[test]
    fn load_addresses_and_gdb() {
        let m = |argv: &[&str]| Machine::from_args(&parse(argv).unwrap()).unwrap();
        assert_eq!(m(&[]).load_address(), 0x4020_0000);
        assert_eq!(m(&["--firmware", "uboot"]).load_address(), 0x4040_0000);
        assert_eq!(m(&["--board", "raspi4b"]).load_address(), 0x20_0000);
        assert_eq!(
            gdb_command(Path::new("/r/target/hyp.elf"), 0x4020_0000),
            "gdb-multiarch -q -ex 'set confirm off' -ex 'add-symbol-file /r/target/hyp.elf -o 0x40200000' \
             -ex 'target remote localhost:1234'"
        );
    }
}
