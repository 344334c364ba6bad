//! The QEMU integration-test harness: boots the hypervisor in a fresh QEMU and watches its console.
//!
//! Tests describe a machine with the [`Qemu`] builder, [`Qemu::spawn`] it and wait for console
//! lines with [`Session::wait_for`]. Each QEMU runs single-threaded TCG (one host core), so
//! `cargo xtask test` runs two tests at a time on a two-core machine.
//!
//! The files QEMU boots come from environment variables that `cargo xtask test` sets to
//! absolute paths: `TANDEM_HYP_BIN`, `TANDEM_HYP_ELF`, `TANDEM_RPI4_DTB`, `TANDEM_UBOOT_BIN`,
//! `TANDEM_LINUX_IMAGE`, `TANDEM_INITRAMFS` (its busybox initramfs) and `TANDEM_GUESTS_DIR`
//! (the test guests' Images, see [`guest_image`]).

pub mod gdb;

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
    /// The directory of the test guests' Images (`target/guests`, `<name>.bin`).
    GuestsDir,
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
            Input::GuestsDir => "TANDEM_GUESTS_DIR",
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
    halted: bool,
    multithreaded: bool,
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
            halted: false,
            multithreaded: false,
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
                format!(
                    "virt,virtualization={virtualization},gic-version={}",
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
        command
            .args(self.args(&files))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let command_line = render(&command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-aarch64 ({e}): is QEMU installed? `cargo xtask test` checks"))?;
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

    /// Has QEMU write the DTB it would generate for this machine to `out` (`dumpdtb=`).
    pub fn dump_dtb(&self, out: &Path) -> Result<(), String> {
        let mut args = self.machine_args();
        args[1] = format!("{},dumpdtb={}", args[1], out.display());
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
