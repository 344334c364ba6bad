//! The QEMU integration-test harness: boots the hypervisor in a fresh QEMU and watches its console.
//!
//! Tests describe a machine with the [`Qemu`] builder, [`Qemu::spawn`] it and wait for console
//! lines with [`Session::wait_for`]. Each QEMU runs single-threaded TCG (one host core), so
//! `cargo xtask test` runs two tests at a time on a two-core machine.
//!
//! The files QEMU boots come from environment variables that `cargo xtask test` sets to
//! absolute paths: `TANDEM_HYP_BIN`, `TANDEM_HYP_ELF`, `TANDEM_RPI4_DTB`, `TANDEM_UBOOT_BIN`,
//! `TANDEM_LINUX_IMAGE`, `TANDEM_INITRAMFS` (its busybox initramfs), `TANDEM_DISK` (its ext4
//! disk image), `TANDEM_GUESTS_DIR` (the test guests' Images, see [`guest_image`]) and
//! `TANDEM_XTASK` (the xtask binary, for tests of `cargo xtask run`).
//!
//! [`Qemu::config`] composes a machine's DTB with a `/hypervisor` fragment from `configs/`
//! the way `cargo xtask run` does, so tests boot the shipped layouts themselves.

pub mod gdb;
pub mod linux;

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use gdb::Gdb;

/// How long a boot may take to reach the banner under TCG on a loaded CI machine.
pub const BANNER_TIMEOUT: Duration = Duration::from_secs(60);
/// U-Boot's autoboot countdown and `qfw` load come before the hypervisor.
pub const UBOOT_BANNER_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of console output quoted in a failure message.
const TAIL_LINES: usize = 60;
/// Console lines after which the hypervisor prints nothing more: waiting for anything else
/// fails at once instead of at the timeout.
pub const STOP_MARKERS: [&str; 3] = [
    "tandem: fatal:",
    "tandem: must be entered at EL2",
    "tandem: panic:",
];

/// Where QEMU's `virt` machine starts RAM.
pub const VIRT_RAM_BASE: u64 = 0x4000_0000;
/// The file on the rich OS's disk that the initramfs prints with `tandem.test=checks`, and
/// its text (written by xtask/src/disk.rs).
pub const DISK_FILE: (&str, &str) = ("tandem.txt", "tandem disk: hello from ext4 on virtio-blk");
/// Where QEMU itself loads an Image with `text_offset` 0 on virt: RAM base + 2 MiB.
pub const VIRT_DIRECT_LOAD_ADDR: u64 = VIRT_RAM_BASE + 0x20_0000;
/// Where Debian's U-Boot (`kernel_addr_r`) loads the Image on virt.
pub const VIRT_UBOOT_LOAD_ADDR: u64 = VIRT_RAM_BASE + 0x40_0000;
/// Where QEMU loads an Image on raspi4b (RAM starts at 0).
pub const RASPI4B_LOAD_ADDR: u64 = 0x20_0000;

/// One of the files `cargo xtask test` provides.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// The flat hypervisor Image (`target/hyp.bin`).
    HypBin,
    /// The hypervisor ELF with symbols (`target/hyp.elf`).
    HypElf,
    /// Debian's `bcm2711-rpi-4-b.dtb`.
    Rpi4Dtb,
    /// Debian's U-Boot for virt (`u-boot.bin`).
    UbootBin,
    /// Debian's arm64 kernel `Image`.
    LinuxImage,
    /// The busybox initramfs for that kernel (`target/initramfs.cpio`, uncompressed newc).
    Initramfs,
    /// The rich OS's ext4 disk image (`target/disk.img`), with [`DISK_FILE`] on it.
    Disk,
    /// The directory of the test guests' Images (`target/guests`, `<name>.bin`).
    GuestsDir,
    /// The xtask binary that runs the tests (`cargo xtask run` without cargo).
    Xtask,
    /// The 32-byte key the secure guest signs with (`target/secure.key` unless the
    /// vendor's `TANDEM_SECURE_KEY` names another).
    SecureKey,
}

impl Input {
    fn var(self) -> &'static str {
        match self {
            Input::HypBin => "TANDEM_HYP_BIN",
            Input::HypElf => "TANDEM_HYP_ELF",
            Input::Rpi4Dtb => "TANDEM_RPI4_DTB",
            Input::UbootBin => "TANDEM_UBOOT_BIN",
            Input::LinuxImage => "TANDEM_LINUX_IMAGE",
            Input::Initramfs => "TANDEM_INITRAMFS",
            Input::Disk => "TANDEM_DISK",
            Input::GuestsDir => "TANDEM_GUESTS_DIR",
            Input::Xtask => "TANDEM_XTASK",
            Input::SecureKey => "TANDEM_SECURE_KEY_FILE",
        }
    }

    /// The file's path, or an error saying how to run the tests.
    pub fn path(self) -> Result<PathBuf, String> {
        let var = self.var();
        let path = std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!("{var} is not set: run the QEMU tests through `cargo xtask test`")
            })?;
        let exists = match self {
            Input::GuestsDir => path.is_dir(),
            _ => path.is_file(),
        };
        if !exists {
            return Err(format!(
                "{var}={} does not exist: run the QEMU tests through `cargo xtask test`",
                path.display()
            ));
        }
        Ok(path)
    }
}

/// The Image of test guest `name` (`guests/<name>`), from [`Input::GuestsDir`].
pub fn guest_image(name: &str) -> Result<PathBuf, String> {
    let path = Input::GuestsDir.path()?.join(format!("{name}.bin"));
    if !path.is_file() {
        return Err(format!(
            "{} does not exist: is there a guest guests/{name}? `cargo xtask build` builds them",
            path.display()
        ));
    }
    Ok(path)
}

/// The machine QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// `virt` (EL2 on unless [`Qemu::el1`]).
    Virt,
    /// `raspi4b` with Debian's DTB; console on the mini-UART (QEMU's second serial).
    Raspi4b,
}

/// How the hypervisor is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's `-kernel` loader enters the Image directly.
    Direct,
    /// Debian's U-Boot (`-bios`) loads the Image through `qfw` and enters it with `booti`.
    Uboot,
}

/// A QEMU machine to boot; every test spawns its own.
#[derive(Debug, Clone)]
pub struct Qemu {
    board: Board,
    gic: u8,
    cpus: u32,
    mem: String,
    firmware: Firmware,
    el2: bool,
    append: Option<String>,
    dtb: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    halted: bool,
    multithreaded: bool,
    smmu: bool,
    extra: Vec<String>,
}

impl Qemu {
    /// QEMU `virt` with EL2, GICv3, 4 CPUs and 2 GiB of RAM.
    pub fn virt() -> Qemu {
        Qemu {
            board: Board::Virt,
            gic: 3,
            cpus: 4,
            mem: "2G".into(),
            firmware: Firmware::Direct,
            el2: true,
            append: None,
            dtb: None,
            kernel: None,
            initrd: None,
            halted: false,
            multithreaded: false,
            smmu: false,
            extra: Vec::new(),
        }
    }

    /// QEMU `raspi4b` (4 CPUs, 2 GiB, GIC-400) with Debian's `bcm2711-rpi-4-b.dtb`.
    pub fn raspi4b() -> Qemu {
        Qemu {
            board: Board::Raspi4b,
            gic: 2,
            cpus: 4,
            mem: "2G".into(),
            ..Qemu::virt()
        }
    }

    /// The GIC version (2 or 3) of a virt machine.
    pub fn gic(mut self, version: u8) -> Qemu {
        self.gic = version;
        self
    }

    /// The CPU count of a virt machine.
    pub fn cpus(mut self, cpus: u32) -> Qemu {
        self.cpus = cpus;
        self
    }

    /// The RAM size of a virt machine, in QEMU's syntax (`512M`, `6G`).
    pub fn mem(mut self, size: &str) -> Qemu {
        self.mem = size.into();
        self
    }

    /// How the hypervisor is started.
    pub fn firmware(mut self, firmware: Firmware) -> Qemu {
        self.firmware = firmware;
        self
    }

    /// Puts QEMU's SMMUv3 in front of a virt machine's PCIe host bridge (`iommu=smmuv3`;
    /// virt makes it `stage=nested`, so it has the stage-2 translation the hypervisor uses).
    pub fn smmu(mut self) -> Qemu {
        self.smmu = true;
        self
    }

    /// Starts the CPUs at EL1 (a virt machine without `virtualization=on`).
    pub fn el1(mut self) -> Qemu {
        self.el2 = false;
        self
    }

    /// The hypervisor's command line (`-append`).
    pub fn append(mut self, bootargs: &str) -> Qemu {
        self.append = Some(bootargs.into());
        self
    }

    /// Boots with this DTB instead of the one QEMU generates (or Debian's, on raspi4b).
    pub fn dtb(mut self, path: impl Into<PathBuf>) -> Qemu {
        self.dtb = Some(path.into());
        self
    }

    /// Boots this Image instead of the hypervisor.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Qemu {
        self.kernel = Some(path.into());
        self
    }

    /// Hands this initrd to the kernel of [`Qemu::kernel`] (`-initrd`).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Qemu {
        self.initrd = Some(path.into());
        self
    }

    /// The rich OS's devices, as `cargo xtask run` gives them: a virtio-blk disk backed by
    /// `disk` (writes go to a temporary overlay), then a virtio-net device on QEMU's user
    /// network. virt hands transports out from the highest down, so they are
    /// /virtio_mmio@a003e00 (SPI 47) and /virtio_mmio@a003c00 (SPI 46).
    pub fn virtio_devices(self, disk: &Path) -> Qemu {
        self.arg("-drive")
            .arg(&format!(
                "file={},format=raw,if=none,id=disk0,snapshot=on",
                disk.display()
            ))
            .arg("-device")
            .arg("virtio-blk-device,drive=disk0")
            .arg("-netdev")
            .arg("user,id=net0")
            .arg("-device")
            .arg("virtio-net-device,netdev=net0")
    }

    /// Boots with `config` (a `/hypervisor` fragment, e.g. [`shipped_config`]) and then
    /// `extra` (more DTS source, e.g. from [`vm_bootargs`]) merged into this machine's DTB,
    /// as `cargo xtask run --config` does: every module that names its file with
    /// `xtask,file` gets its `reg` and is loaded at its unit address. The files go to
    /// `dir`. `xtask,file` values: `@linux`, `@initramfs`, `@guest:<name>` or a path
    /// relative to the fragment; VMs use two cells for addresses and sizes.
    pub fn config(self, config: &Path, extra: &str, dir: &Path) -> Result<Qemu, String> {
        let qemu_dtb = dir.join("qemu.dtb");
        self.dump_dtb(&qemu_dtb)?;
        let mut dts = dtb_to_dts(&qemu_dtb)?;
        let fragment = std::fs::read_to_string(config)
            .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let config_dir = config.parent().unwrap_or(Path::new("."));
        dts.push('\n');
        dts.push_str(&fragment);
        dts.push('\n');
        dts.push_str(extra);
        let as_written = dir.join("as-written.dtb");
        dts_to_dtb(&dts, &as_written)?;

        let mut machine = self;
        let mut overrides = String::from("\n/ {\n    hypervisor {\n");
        for vm in fdt_children(&as_written, "/hypervisor")? {
            if !vm.starts_with("vm@") {
                continue;
            }
            let vm_path = format!("/hypervisor/{vm}");
            let mut body = String::new();
            for module in fdt_children(&as_written, &vm_path)? {
                let node = format!("{vm_path}/{module}");
                let Some(value) = fdt_string(&as_written, &node, "xtask,file") else {
                    continue;
                };
                let file = match value.as_str() {
                    "@linux" => Input::LinuxImage.path()?,
                    "@initramfs" => Input::Initramfs.path()?,
                    v if v.starts_with("@guest:") => guest_image(&v["@guest:".len()..])?,
                    v => config_dir.join(v),
                };
                let address = module
                    .split_once('@')
                    .and_then(|(_, a)| u64::from_str_radix(a, 16).ok())
                    .ok_or_else(|| format!("{node}: no unit address to load {value} at"))?;
                let size = std::fs::metadata(&file)
                    .map_err(|e| format!("{node}: {}: {e}", file.display()))?
                    .len();
                let _ = writeln!(
                    body,
                    "            {module} {{\n                reg = <{:#x} {:#x} {:#x} {:#x}>;\n                /delete-property/ xtask,file;\n            }};",
                    address >> 32,
                    address & 0xffff_ffff,
                    size >> 32,
                    size & 0xffff_ffff
                );
                machine = machine.loader(&file, address);
            }
            if !body.is_empty() {
                let _ = write!(overrides, "        {vm} {{\n{body}        }};\n");
            }
        }
        overrides.push_str("    };\n};\n");
        dts.push_str(&overrides);
        let composed = dir.join("composed.dtb");
        dts_to_dtb(&dts, &composed)?;
        Ok(machine.dtb(composed))
    }

    /// Freezes the CPUs before the first instruction; [`Session::gdb`] then controls them.
    /// One host thread per vCPU (MTTCG) instead of one for the whole machine: for guests
    /// like Linux that keep several CPUs busy, so a test takes seconds, not minutes.
    pub fn multithreaded(mut self) -> Qemu {
        self.multithreaded = true;
        self
    }

    /// Freezes the CPUs before the first instruction; [`Session::gdb`] then controls them.
    pub fn halted(mut self) -> Qemu {
        self.halted = true;
        self
    }

    /// Loads `file` at guest physical address `addr` (`-device loader`).
    pub fn loader(self, file: impl AsRef<Path>, addr: u64) -> Qemu {
        let file = file.as_ref().display();
        self.arg("-device")
            .arg(&format!("loader,file={file},addr={addr:#x},force-raw=on"))
    }

    /// Appends one raw QEMU argument.
    pub fn arg(mut self, arg: &str) -> Qemu {
        self.extra.push(arg.into());
        self
    }

    /// Where the firmware of this machine loads the Image.
    pub fn load_address(&self) -> u64 {
        match (self.board, self.firmware) {
            (Board::Virt, Firmware::Direct) => VIRT_DIRECT_LOAD_ADDR,
            (Board::Virt, Firmware::Uboot) => VIRT_UBOOT_LOAD_ADDR,
            (Board::Raspi4b, _) => RASPI4B_LOAD_ADDR,
        }
    }

    /// The `-M` value.
    fn machine(&self) -> String {
        match self.board {
            Board::Virt => {
                let virtualization = if self.el2 { "on" } else { "off" };
                let iommu = if self.smmu { ",iommu=smmuv3" } else { "" };
                format!(
                    "virt,virtualization={virtualization},gic-version={}{iommu}",
                    self.gic
                )
            }
            Board::Raspi4b => "raspi4b".into(),
        }
    }

    /// The machine-describing arguments shared by booting and dumping the DTB.
    fn machine_args(&self) -> Vec<String> {
        let mut args = vec!["-M".to_string(), self.machine()];
        if self.board == Board::Virt {
            args.extend([
                "-cpu".into(),
                "max".into(),
                "-smp".into(),
                self.cpus.to_string(),
                "-m".into(),
                self.mem.clone(),
            ]);
        }
        args
    }

    /// The full QEMU argument list for booting.
    fn args(&self, files: &Files) -> Vec<String> {
        let thread = if self.multithreaded {
            "multi"
        } else {
            "single"
        };
        let mut args = vec!["-accel".to_string(), format!("tcg,thread={thread}")];
        args.extend(self.machine_args());
        args.extend([
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
        ]);
        if self.board == Board::Raspi4b {
            // Serial 0 is the PL011; the DTB's stdout-path is the mini-UART, serial 1.
            args.extend(["-serial".into(), "null".into()]);
        }
        args.extend(["-serial".into(), "stdio".into()]);
        if let Some(bios) = &files.bios {
            args.extend(["-bios".into(), bios.display().to_string()]);
        }
        args.extend(["-kernel".into(), files.kernel.display().to_string()]);
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        if let Some(dtb) = &files.dtb {
            args.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        if let Some(append) = &self.append {
            args.extend(["-append".into(), append.clone()]);
        }
        if let Some(socket) = &files.gdb_socket {
            args.extend([
                "-chardev".into(),
                format!(
                    "socket,id=tandem-gdb,path={},server=on,wait=off",
                    socket.display()
                ),
                "-gdb".into(),
                "chardev:tandem-gdb".into(),
                "-S".into(),
            ]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Resolves the files this machine boots from the environment.
    fn files(&self, gdb_socket: Option<PathBuf>) -> Result<Files, String> {
        let kernel = match &self.kernel {
            Some(path) => path.clone(),
            None => Input::HypBin.path()?,
        };
        let bios = match self.firmware {
            Firmware::Uboot => Some(Input::UbootBin.path()?),
            Firmware::Direct => None,
        };
        let dtb = match (&self.dtb, self.board) {
            (Some(path), _) => Some(path.clone()),
            (None, Board::Raspi4b) => Some(Input::Rpi4Dtb.path()?),
            (None, Board::Virt) => None,
        };
        Ok(Files {
            kernel,
            bios,
            dtb,
            gdb_socket,
        })
    }

    /// Starts QEMU; panics with the reason if it cannot (tests fail on it).
    pub fn spawn(&self) -> Session {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts QEMU with its console captured.
    pub fn try_spawn(&self) -> Result<Session, String> {
        let gdb_socket = self.halted.then(|| scratch_dir("gdb").join("gdb.sock"));
        let files = self.files(gdb_socket.clone())?;
        let mut command = Command::new("qemu-system-aarch64");
        command.args(self.args(&files));
        Session::start(command, gdb_socket)
            .map_err(|e| format!("{e}: is QEMU installed? `cargo xtask test` checks"))
    }

    /// Has QEMU write the DTB it would generate for this machine to `out` (`dumpdtb=`).
    pub fn dump_dtb(&self, out: &Path) -> Result<(), String> {
        let mut args = self.machine_args();
        args[1] = format!("{},dumpdtb={}", args[1], out.display());
        if self.board == Board::Raspi4b {
            // raspi4b has no DTB of its own: QEMU dumps Debian's as it patches it.
            let dtb = match &self.dtb {
                Some(dtb) => dtb.clone(),
                None => Input::Rpi4Dtb.path()?,
            };
            args.extend(["-dtb".into(), dtb.display().to_string()]);
        }
        if let Some(append) = &self.append {
            args.extend(["-append".into(), append.clone()]);
        }
        let mut command = Command::new("qemu-system-aarch64");
        command.args(&args).args(["-display", "none"]);
        run_tool(&mut command)?;
        if !out.is_file() {
            return Err(format!("`{}` wrote no DTB", render(&command)));
        }
        Ok(())
    }
}

/// The files one boot uses.
struct Files {
    kernel: PathBuf,
    bios: Option<PathBuf>,
    dtb: Option<PathBuf>,
    gdb_socket: Option<PathBuf>,
}

/// Bytes from one of QEMU's output streams, shared with the thread that reads them.
#[derive(Default)]
struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

#[derive(Default)]
struct ConsoleState {
    bytes: Vec<u8>,
    closed: bool,
}

impl Console {
    fn text(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&state.bytes).replace('\r', "")
    }
}

/// Copies a child's output stream into `sink` until it closes.
fn pump(stream: Option<impl Read + Send + 'static>, sink: Arc<Console>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        if let Some(mut stream) = stream {
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut state = sink.state.lock().unwrap_or_else(|e| e.into_inner());
                        state.bytes.extend_from_slice(&buf[..n]);
                        sink.changed.notify_all();
                    }
                }
            }
        }
        let mut state = sink.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        sink.changed.notify_all();
    })
}

/// A running QEMU; killed when dropped.
pub struct Session {
    child: Child,
    console: Arc<Console>,
    stderr: Arc<Console>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    command_line: String,
    gdb_socket: Option<PathBuf>,
}

impl Session {
    /// Runs `command` (QEMU, or a program that runs QEMU, such as `cargo xtask run`) with
    /// standard input closed and its standard output as the console.
    pub fn run(command: Command) -> Result<Session, String> {
        Session::start(command, None)
    }

    fn start(mut command: Command, gdb_socket: Option<PathBuf>) -> Result<Session, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let command_line = render(&command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start `{command_line}`: {e}"))?;
        let console = Arc::new(Console::default());
        let stderr = Arc::new(Console::default());
        let readers = vec![
            pump(child.stdout.take(), console.clone()),
            pump(child.stderr.take(), stderr.clone()),
        ];
        Ok(Session {
            child,
            console,
            stderr,
            readers,
            started: Instant::now(),
            command_line,
            gdb_socket,
        })
    }

    /// Waits until `needle` has appeared `count` times on the console (a line each boot
    /// prints, for a VM that restarts), with the same failure rules as [`Session::wait_for`].
    pub fn wait_for_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.wait_for(needle, deadline.saturating_duration_since(Instant::now()))?;
            let seen = self.output().matches(needle).count();
            if seen >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "timed out waiting for {needle:?} to appear {count} times (seen {seen})"
                )));
            }
            // Poll: the console grows a line at a time.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the console output contains `needle`. It fails on timeout, when QEMU
    /// exits first, or when the hypervisor printed a complete [`STOP_MARKERS`] line without
    /// `needle`; the error quotes the end of the console and QEMU's own messages.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let waiting = Instant::now();
        let deadline = waiting + timeout;
        let mut state = self.console.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Search only the text: a '\r' may sit anywhere in the raw bytes.
            let text = String::from_utf8_lossy(&state.bytes).replace('\r', "");
            if text.contains(needle) {
                return Ok(());
            }
            let stopped = stop_line(&text, needle);
            let now = Instant::now();
            if state.closed || now >= deadline || stopped.is_some() {
                let why = if let Some(line) = stopped {
                    format!("the hypervisor stopped ({line:?})")
                } else if state.closed {
                    "QEMU closed its console (it exited)".to_string()
                } else {
                    "timed out".to_string()
                };
                drop(state);
                return Err(self.failure(&format!(
                    "{why} after {:.1} s waiting for {needle:?} ({:.1} s since QEMU started)",
                    waiting.elapsed().as_secs_f64(),
                    self.started.elapsed().as_secs_f64()
                )));
            }
            state = self
                .console
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the console output contains one of `needles` and returns its index,
    /// with the same failure rules as [`Session::wait_for`]: e.g. a guest's first line or
    /// the hypervisor's refusal to start it, whichever comes first.
    pub fn wait_for_any(&self, needles: &[&str], timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.console.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text = String::from_utf8_lossy(&state.bytes).replace('\r', "");
            if let Some(i) = needles.iter().position(|n| text.contains(n)) {
                return Ok(i);
            }
            // A stop marker ends the wait unless one of the needles is part of it.
            let stopped = needles
                .iter()
                .map(|n| stop_line(&text, n))
                .collect::<Option<Vec<_>>>()
                .and_then(|lines| lines.first().copied());
            let now = Instant::now();
            if state.closed || now >= deadline || stopped.is_some() {
                drop(state);
                let why = match stopped {
                    Some(line) => format!("the hypervisor stopped ({line:?})"),
                    None if now >= deadline => "timed out".to_string(),
                    None => "QEMU closed its console (it exited)".to_string(),
                };
                return Err(self.failure(&format!("{why} waiting for one of {needles:?}")));
            }
            state = self
                .console
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the VM `label` to start (its first console line, `[label] `), failing at
    /// once if the hypervisor says it was not started.
    pub fn wait_for_vm_start(&self, label: &str, timeout: Duration) -> Result<(), String> {
        let started = format!("[{label}] ");
        let refused = format!("vm {label}: not started");
        match self.wait_for_any(&[&started, &refused], timeout)? {
            0 => Ok(()),
            _ => Err(self.failure(&format!("the hypervisor did not start vm {label}"))),
        }
    }

    /// Waits for each needle in turn, each appearing after the previous one.
    pub fn wait_for_in_order(&self, needles: &[&str], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for needle in needles {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_for(needle, left)?;
        }
        lines_in_order(&self.output(), needles).map_err(|e| self.failure(&e))
    }

    /// Everything QEMU printed on the console so far, with `\r` removed.
    pub fn output(&self) -> String {
        self.console.text()
    }

    /// What QEMU printed on its standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits for QEMU to exit by itself (e.g. after PSCI SYSTEM_OFF).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    return Err(self.failure(&format!(
                        "QEMU still running after {:.1} s",
                        timeout.as_secs_f64()
                    )))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("cannot wait for QEMU: {e}")),
            }
        }
    }

    /// Connects to the gdb stub of a machine started with [`Qemu::halted`].
    pub fn gdb(&self) -> Result<Gdb, String> {
        let socket = self
            .gdb_socket
            .as_ref()
            .ok_or("this QEMU has no gdb stub: build it with Qemu::halted()")?;
        Gdb::connect(socket, Duration::from_secs(10)).map_err(|e| self.failure(&e))
    }

    /// A failure message: `what`, then the console tail, QEMU's stderr and its command line.
    pub fn failure(&self, what: &str) -> String {
        let mut message = format!("{what}\n");
        let console = self.output();
        let _ = writeln!(
            message,
            "--- last {TAIL_LINES} console lines ---\n{}",
            tail(&console, TAIL_LINES)
        );
        let stderr = self.stderr();
        if !stderr.trim().is_empty() {
            let _ = writeln!(message, "--- QEMU stderr ---\n{}", tail(&stderr, 20));
        }
        let _ = write!(message, "--- QEMU command ---\n{}", self.command_line);
        message
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if let Some(dir) = self.gdb_socket.as_ref().and_then(|s| s.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The first complete console line holding a stop marker that `needle` is not part of.
fn stop_line<'t>(text: &'t str, needle: &str) -> Option<&'t str> {
    let complete = &text[..text.rfind('\n')?];
    complete.lines().find(|line| {
        STOP_MARKERS.iter().any(|marker| {
            line.contains(marker) && !needle.contains(marker) && !marker.contains(needle)
        })
    })
}

/// Checks that `needles` occur in `text` in this order (each after the end of the previous).
pub fn lines_in_order(text: &str, needles: &[&str]) -> Result<(), String> {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None if text.contains(needle) => {
                return Err(format!(
                    "{needle:?} appears, but not after the lines before it in {needles:?}"
                ))
            }
            None => return Err(format!("{needle:?} does not appear")),
        }
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        let _ = writeln!(out, "[... {skip} earlier lines]");
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

/// The number of the last `secure: heartbeat N` line the secure guest printed in `output`.
pub fn last_heartbeat(output: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .filter_map(|l| l.split("secure: heartbeat ").nth(1))
        .find_map(|n| n.trim().parse().ok())
}

/// A shipped VM layout, `configs/<name>.dtsi` (e.g. `virt`: Linux with its virtio disk and
/// network beside the secure guest).
pub fn shipped_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("configs")
        .join(format!("{name}.dtsi"))
}

/// The shipped default layout (`configs/virt.dtsi`, as `cargo xtask run` boots it) on the
/// machine it is for: QEMU virt with GICv`gic`, 4 CPUs, 2 GiB, MTTCG and the rich OS's
/// virtio disk and network, with `extra` DTS merged after the config (see [`Qemu::config`]).
pub fn default_layout(gic: u8, extra: &str, dir: &Path) -> Result<Qemu, String> {
    let disk = Input::Disk.path()?;
    Qemu::virt()
        .gic(gic)
        .cpus(4)
        .mem("2G")
        .multithreaded()
        .virtio_devices(&disk)
        .config(&shipped_config("virt"), extra, dir)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `/hypervisor` fragment (DTS source, for [`dtb_with_fragment`]) holding `vms`, each the
/// source of one `vm@N` node, with two cells for addresses and sizes.
pub fn hypervisor_fragment(vms: &[String]) -> String {
    format!(
        "\n/ {{\n    hypervisor {{\n        compatible = \"tandem,hypervisor\";\n        #address-cells = <2>;\n        #size-cells = <2>;\n{}\n    }};\n}};\n",
        vms.join("\n")
    )
}

/// DTS source that sets `bootargs` of `/hypervisor/<vm>` (to merge after a config).
pub fn vm_bootargs(vm: &str, bootargs: &str) -> String {
    let quoted = bootargs.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\n/ {{\n    hypervisor {{\n        {vm} {{\n            bootargs = \"{quoted}\";\n        }};\n    }};\n}};\n")
}

/// Child node names of `node` in a DTB (`fdtget -l`).
fn fdt_children(dtb: &Path, node: &str) -> Result<Vec<String>, String> {
    let mut command = Command::new("fdtget");
    command.arg("-l").arg(dtb).arg(node);
    Ok(run_tool(&mut command)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// A string property of a DTB node, or `None` when it has none.
fn fdt_string(dtb: &Path, node: &str, prop: &str) -> Option<String> {
    let mut command = Command::new("fdtget");
    command.arg("-ts").arg(dtb).arg(node).arg(prop);
    run_tool(&mut command)
        .ok()
        .map(|v| v.trim_end_matches('\n').to_string())
}

/// A fresh, empty directory for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tandem-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// Decompiles a DTB to DTS source with `dtc`.
pub fn dtb_to_dts(dtb: &Path) -> Result<String, String> {
    let mut command = Command::new("dtc");
    command.args(["-q", "-I", "dtb", "-O", "dts"]).arg(dtb);
    run_tool(&mut command)
}

/// Compiles DTS source to a DTB with `dtc`. `-f` keeps going past dangling phandles, which
/// tests that cut nodes out on purpose leave behind.
pub fn dts_to_dtb(dts: &str, out: &Path) -> Result<(), String> {
    let source = out.with_extension("dts");
    std::fs::write(&source, dts).map_err(|e| format!("cannot write {}: {e}", source.display()))?;
    let mut command = Command::new("dtc");
    command
        .args(["-q", "-f", "-I", "dts", "-O", "dtb", "-o"])
        .arg(out)
        .arg(&source);
    run_tool(&mut command).map(|_| ())
}

/// Builds the DTB `machine` would get from QEMU with `fragment` (DTS source, e.g. a
/// `/ { hypervisor { ... }; };` block) merged in, written to `dir/<name>.dtb`; as Xen's
/// ImageBuilder does for dom0less. Nodes of QEMU's DTB have no labels: the fragment names
/// them by path, `&{/cpus/cpu@0}`.
pub fn dtb_with_fragment(
    machine: &Qemu,
    dir: &Path,
    name: &str,
    fragment: &str,
) -> Result<PathBuf, String> {
    let original = dir.join(format!("{name}-qemu.dtb"));
    machine.dump_dtb(&original)?;
    let mut dts = dtb_to_dts(&original)?;
    dts.push('\n');
    dts.push_str(fragment);
    let out = dir.join(format!("{name}.dtb"));
    dts_to_dtb(&dts, &out)?;
    Ok(out)
}

/// Removes the node named `name` (e.g. `intc@8000000`), with its children, from DTS source
/// as `dtc` prints it (one node or property per line).
pub fn remove_dts_node(dts: &str, name: &str) -> Result<String, String> {
    let header = format!("{name} {{");
    let mut out = String::new();
    let mut depth = 0usize;
    let mut found = false;
    for line in dts.lines() {
        let trimmed = line.trim();
        if depth == 0 {
            // A node header may carry a label: `label: name {`.
            let is_target = trimmed == header || trimmed.ends_with(&format!(": {header}"));
            if is_target {
                found = true;
                depth = 1;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        } else if trimmed.ends_with('{') {
            depth += 1;
        } else if trimmed == "};" {
            depth -= 1;
        }
    }
    if !found {
        return Err(format!("no node {name:?} in the DTS"));
    }
    if depth != 0 {
        return Err(format!("node {name:?} is not closed in the DTS"));
    }
    Ok(out)
}

/// Makes the child get SIGKILL when the thread that spawned it ends (a test that panics or
/// a killed test binary leaves no QEMU behind). Spawn and drop a session on the same thread.
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl, getppid and _exit.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Runs a host tool to completion and returns its standard output.
fn run_tool(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", render(command)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            render(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line, for failure messages.
fn render(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        text.push(' ');
        if arg.contains([' ', '\'', '"']) || arg.is_empty() {
            text.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Runs one QMP command on the control socket QEMU was given with
/// `-qmp unix:<socket>,server=on,wait=off`, after the capabilities handshake; returns its
/// reply line (events are skipped). An error reply is an error.
pub fn qmp(socket: &Path, command: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| format!("qmp: {e}"))?;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut line = |stream: &mut std::os::unix::net::UnixStream,
                    seen: &mut String|
     -> Result<String, String> {
        loop {
            if let Some(end) = seen.find('\n') {
                let l: String = seen.drain(..=end).collect();
                if !l.contains("\"event\"") {
                    return Ok(l);
                }
                continue;
            }
            let n = stream.read(&mut buf).map_err(|e| format!("qmp: {e}"))?;
            if n == 0 {
                return Err("QMP closed the socket".into());
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    line(&mut stream, &mut seen)?;
    let mut reply = String::new();
    for message in [r#"{"execute":"qmp_capabilities"}"#, command] {
        stream
            .write_all(format!("{message}\n").as_bytes())
            .map_err(|e| format!("qmp: {e}"))?;
        reply = line(&mut stream, &mut seen)?;
        if !reply.contains("\"return\"") {
            return Err(format!("QMP {message}: {reply}"));
        }
    }
    Ok(reply)
}

/// The machine's physical memory `[base, base + size)`, through QMP `pmemsave` into a file
/// of `dir`.
pub fn physical_memory(socket: &Path, dir: &Path, base: u64, size: u64) -> Result<Vec<u8>, String> {
    let file = dir.join(format!("mem-{base:x}.bin"));
    qmp(
        socket,
        &format!(
            r#"{{"execute":"pmemsave","arguments":{{"val":{base},"size":{size},"filename":"{}"}}}}"#,
            file.display()
        ),
    )?;
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    if bytes.len() as u64 != size {
        return Err(format!("pmemsave wrote {} of {size} bytes", bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        Files {
            kernel: "/t/hyp.bin".into(),
            bios: None,
            dtb: None,
            gdb_socket: None,
        }
    }

    #[test]
    fn virt_arguments() {
        let q = Qemu::virt()
            .gic(2)
            .cpus(8)
            .mem("6G")
            .append("a=b c")
            .args(&files());
        assert_eq!(
            q.join(" "),
            "-accel tcg,thread=single -M virt,virtualization=on,gic-version=2 -cpu max -smp 8 -m 6G \
             -display none -monitor none -serial stdio -kernel /t/hyp.bin -append a=b c"
        );
        let el1 = Qemu::virt().el1().args(&files()).join(" ");
        assert!(el1.contains("-M virt,virtualization=off,gic-version=3"));
    }

    #[test]
    fn devices_initrd_and_bootargs() {
        let q = Qemu::virt()
            .el1()
            .kernel("/t/Image")
            .initrd("/t/initrd")
            .virtio_devices(Path::new("/t/disk.img"))
            .args(&files())
            .join(" ");
        assert!(
            q.ends_with(
                "-kernel /t/hyp.bin -initrd /t/initrd \
                 -drive file=/t/disk.img,format=raw,if=none,id=disk0,snapshot=on \
                 -device virtio-blk-device,drive=disk0 -netdev user,id=net0 \
                 -device virtio-net-device,netdev=net0"
            ),
            "{q}"
        );
        assert_eq!(
            vm_bootargs("vm@0", r#"a "b""#),
            "\n/ {\n    hypervisor {\n        vm@0 {\n            bootargs = \"a \\\"b\\\"\";\n        };\n    };\n};\n"
        );
        assert!(shipped_config("virt").is_file());
        assert_eq!(
            last_heartbeat(
                "[secure] secure: heartbeat 3\n[linux] x\n[secure] secure: heartbeat 4\n"
            ),
            Some(4)
        );
    }

    fn echo(text: &str) -> Session {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("printf '{text}'; exec sleep 10"));
        Session::run(command).unwrap()
    }

    #[test]
    fn a_vm_the_hypervisor_refuses_fails_the_wait_at_once() {
        let started = Instant::now();
        let refused = echo("[cpu0] vm linux: not started: cannot map it\\n");
        let err = refused
            .wait_for_vm_start("linux", Duration::from_secs(8))
            .unwrap_err();
        assert!(err.contains("did not start vm linux"), "{err}");
        let ok = echo("[cpu0] banner\\n[linux] [    0.000000] Booting Linux\\n");
        ok.wait_for_vm_start("linux", Duration::from_secs(8))
            .unwrap();
        let fatal = echo("tandem: fatal: no GIC\\n");
        let err = fatal
            .wait_for_any(&["[linux] ", "[secure] "], Duration::from_secs(8))
            .unwrap_err();
        assert!(err.contains("the hypervisor stopped"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn raspi4b_console_is_serial_one() {
        let mut f = files();
        f.dtb = Some("/t/rpi.dtb".into());
        let q = Qemu::raspi4b().args(&f).join(" ");
        assert_eq!(
            q,
            "-accel tcg,thread=single -M raspi4b -display none -monitor none -serial null -serial stdio \
             -kernel /t/hyp.bin -dtb /t/rpi.dtb"
        );
    }

    #[test]
    fn halted_machines_get_a_gdb_socket_and_loaders() {
        let mut f = files();
        f.gdb_socket = Some("/tmp/x/gdb.sock".into());
        let q = Qemu::virt()
            .loader("/t/blob", 0x4800_0000)
            .args(&f)
            .join(" ");
        assert!(q.contains("-chardev socket,id=tandem-gdb,path=/tmp/x/gdb.sock,server=on,wait=off"));
        assert!(q.contains("-gdb chardev:tandem-gdb -S"));
        assert!(q.ends_with("-device loader,file=/t/blob,addr=0x48000000,force-raw=on"));
    }

    #[test]
    fn load_addresses() {
        assert_eq!(Qemu::virt().load_address(), 0x4020_0000);
        assert_eq!(
            Qemu::virt().firmware(Firmware::Uboot).load_address(),
            0x4040_0000
        );
        assert_eq!(Qemu::raspi4b().load_address(), 0x20_0000);
    }

    #[test]
    fn tail_keeps_the_end() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text, 3);
        assert_eq!(t, "[... 97 earlier lines]\nline 97\nline 98\nline 99");
        assert_eq!(tail("a\nb", 5), "a\nb");
    }

    #[test]
    fn order_check() {
        let text = "x one y two z three";
        assert!(lines_in_order(text, &["one", "two", "three"]).is_ok());
        assert!(lines_in_order(text, &["two", "one"])
            .unwrap_err()
            .contains("not after"));
        assert!(lines_in_order(text, &["four"])
            .unwrap_err()
            .contains("does not appear"));
    }

    #[test]
    fn stop_markers_end_the_wait_on_complete_lines() {
        let fatal = "[cpu0] boot\ntandem: fatal: no GIC in the device tree\n";
        assert_eq!(
            stop_line(fatal, "gic: v3"),
            Some("tandem: fatal: no GIC in the device tree")
        );
        assert_eq!(stop_line(fatal, "tandem: fatal:"), None);
        assert_eq!(stop_line(fatal, "fatal"), None);
        // An unfinished line may still be followed by the needle.
        assert_eq!(stop_line("tandem: fatal: no", "GIC"), None);
        assert_eq!(stop_line("[cpu0] memory: 2 GiB\n", "cpus:"), None);
    }

    #[test]
    fn node_removal() {
        let dts = "/ {\n\tintc@8000000 {\n\t\treg = <1>;\n\t\tits@8080000 {\n\t\t\tx;\n\t\t};\n\t};\n\n\tpl011@9000000 {\n\t\tinterrupt-parent = <0x8005>;\n\t};\n};\n";
        let out = remove_dts_node(dts, "intc@8000000").unwrap();
        assert_eq!(
            out,
            "/ {\n\n\tpl011@9000000 {\n\t\tinterrupt-parent = <0x8005>;\n\t};\n};\n"
        );
        assert!(remove_dts_node(dts, "gic@1").is_err());
    }

    #[test]
    fn missing_inputs_say_how_to_run() {
        let err = Qemu::virt()
            .kernel("/nonexistent")
            .firmware(Firmware::Uboot)
            .files(None)
            .err();
        if std::env::var_os("TANDEM_UBOOT_BIN").is_none() {
            assert!(err.unwrap().contains("cargo xtask test"));
        }
    }
}
