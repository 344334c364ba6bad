//! `cargo xtask bench [--quick]`: figures measured natively and under Tandem on QEMU virt
//! with `-icount`, written to `target/bench/` as report.md, report.json and ratios.svg.
//!
//! Every QEMU runs with `-icount shift=0,align=off,sleep=off`: the guest's 1 GHz counter
//! advances one tick per instruction, so a figure depends on the instructions executed, not
//! on the host, and each experiment runs twice to show that it repeats. docs/benchmarks.md
//! says what the figures mean, what they do not, and documents report.json.
//!
//! The experiments are driven from the outside, the way a user would: the native guest is
//! QEMU itself, Tandem is this xtask's own `run` command, Xen 4.17 (Debian's) is QEMU booting
//! it with Linux as dom0 or with guests/irq as a dom0less domU (see [`crate::xen`]), and the
//! figures are read from the console. Each console is kept in `target/bench/logs/`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build::{self, BuildArgs};
use crate::cmd::{self, Error, Result};
use crate::qemu::{die_with_parent, Board, Firmware, Gic, Machine, MemSize};
use crate::xen::{self, Dom0, DomU};
use crate::{debian, disk, guests, initramfs, prereq};

/// The options that make guest time follow instructions (as `cargo xtask run --icount`).
const ICOUNT: [&str; 4] = ["-icount", "shift=0,align=off,sleep=off", "-rtc", "clock=vm"];
/// How many times each experiment runs: twice shows whether a figure repeats.
const RUNS: usize = 2;
/// guests/irq's machine: two CPUs (the SGI round trip needs a second), 1 GiB, GICv3;
/// natively, under Tandem and under Xen alike.
const IRQ_MACHINE: Machine = Machine {
    board: Board::Virt,
    gic: Gic::V3,
    cpus: 2,
    mem: MemSize(1024),
    firmware: Firmware::Direct,
    smmu: false,
};
/// The RAM of guests/irq's VM under Tandem and of its domU under Xen.
const IRQ_VM_MIB: u64 = 64;
/// The irq guest's arguments: its defaults for the full run, fewer samples for `--quick`.
const IRQ_ARGS_FULL: &str = "mode=check";
const IRQ_ARGS_QUICK: &str = "mode=check trips=200 deadlines=5 alarms=1";
/// Linux's console natively and under Tandem: the PL011. Under Xen, dom0's console is
/// [`xen::DOM0_CONSOLE`], as Xen keeps the PL011.
const LINUX_CONSOLE: &str = "console=ttyAMA0";
/// The rest of Linux's command line, the same bytes everywhere (they boot the same way): the
/// initramfs times its memory workload, then runs the vsock sequence, which ends with
/// `tandem-client bench` under Tandem (natively and under Xen, the run stops before it).
const LINUX_ARGS: &str = "earlycon tandem.test=memwork,vsock";
/// Host time an experiment may take before it counts as failed (TCG on a loaded machine).
const IRQ_TIMEOUT: Duration = Duration::from_secs(180);
const LINUX_TIMEOUT: Duration = Duration::from_secs(400);
/// Console lines after which nothing useful comes: Tandem's, and Xen's panic.
const HYPERVISOR_FAULTS: [&str; 3] = ["tandem: panic", "tandem: fatal:", "Panic on CPU"];
/// The line of the initramfs's memory workload (its figure, or `FAILED`): it comes after
/// the boot's first user-space line, so it ends every native and Xen Linux run.
const MEMWORK_LINE: &str = "tandem-test: memwork ";
/// Xen's `Freed <N>kB init memory.`: printed as Xen leaves its start-up code, right after
/// it unpaused dom0. Its stamp is when dom0 starts.
const XEN_DOM0_STARTED: &str = "kB init memory.";

/// `cargo xtask bench`.
pub fn bench(quick: bool) -> Result<()> {
    prereq::ensure()?;
    let artifacts = build::build(&BuildArgs::default())?;
    let out_dir = cmd::target_dir().join("bench");
    let logs = out_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", logs.display())))?;
    let xtask = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find the xtask binary: {e}")))?;
    let qemu_version = cmd::output(Command::new("qemu-system-aarch64").arg("--version"))?
        .lines()
        .next()
        .unwrap_or("unknown")
        .to_string();

    let irq_args = if quick { IRQ_ARGS_QUICK } else { IRQ_ARGS_FULL };
    let irq_cpus = IRQ_MACHINE.cpus.to_string();
    let irq_mem = IRQ_MACHINE.mem.to_string();
    let irq_dtsi = out_dir.join("irq.dtsi");
    cmd::write_atomically(&irq_dtsi, irq_config(irq_args).as_bytes())?;
    let irq_image = guests::output_dir().join("irq.bin");

    let mut experiments = vec![
        Experiment {
            name: "irq-native",
            what: "guests/irq natively (EL1, no hypervisor)",
            command: native_irq_command(&irq_image, irq_args),
            done: &["TEST PASS irq", "TEST FAIL irq"],
            timeout: IRQ_TIMEOUT,
        },
        Experiment {
            name: "irq-tandem",
            what: "guests/irq in a VM under Tandem",
            command: xtask_run(
                &xtask,
                &[
                    "--cpus",
                    &irq_cpus,
                    "--mem",
                    &irq_mem,
                    "--config",
                    &irq_dtsi.to_string_lossy(),
                ],
            ),
            done: &["TEST PASS irq", "TEST FAIL irq"],
            timeout: IRQ_TIMEOUT,
        },
    ];
    let linux_bootargs = format!("{LINUX_CONSOLE} {LINUX_ARGS}");
    let dom0_bootargs = format!("{} {LINUX_ARGS}", xen::DOM0_CONSOLE);
    let domu_irq_args = xen_irq_args(irq_args);
    // Xen is fetched and booted in the full run only: --quick boots neither it nor Linux.
    let mut xen_image = None;
    if !quick {
        let image = debian::xen()?;
        let domu = DomU {
            kernel: &irq_image,
            bootargs: &domu_irq_args,
            cpus: IRQ_MACHINE.cpus,
            memory_mib: IRQ_VM_MIB,
        };
        let mut command =
            xen::dom0less_command(&image, &IRQ_MACHINE, &domu, &out_dir.join("xen-irq"))?;
        command.args(ICOUNT);
        experiments.push(Experiment {
            name: "irq-xen",
            what: "guests/irq as Xen 4.17's only domain (dom0less, no dom0)",
            command,
            done: &["TEST PASS irq", "TEST FAIL irq"],
            timeout: IRQ_TIMEOUT,
        });
        experiments.push(Experiment {
            name: "linux-native",
            what: "Linux natively (EL1, no hypervisor), then the memory workload",
            command: xtask_run(&xtask, &["--native", "--bootargs", &linux_bootargs]),
            done: &[MEMWORK_LINE],
            timeout: LINUX_TIMEOUT,
        });
        experiments.push(Experiment {
            name: "linux-tandem",
            what: "Linux under Tandem (default layout), the memory workload, tandem-client bench",
            command: xtask_run(&xtask, &["--bootargs", &linux_bootargs]),
            done: &[
                "tandem-test: bench:",
                "tandem-test: vsock done",
                "tandem-test: vsock service DOWN",
            ],
            timeout: LINUX_TIMEOUT,
        });
        // dom0 boots the kernel, initramfs and disk that `run` gives Linux.
        let kernel = debian::kernel()?.image;
        let initrd = initramfs::build()?;
        let dom0 = Dom0 {
            kernel: &kernel,
            initrd: &initrd,
            bootargs: &dom0_bootargs,
        };
        let mut command = xen::command(&image, &dom0, &disk::build()?, &out_dir.join("xen"))?;
        command.args(ICOUNT);
        xen_image = Some(image);
        experiments.push(Experiment {
            name: "linux-xen",
            what: "Linux as Xen 4.17's dom0, then the memory workload",
            command,
            done: &[MEMWORK_LINE],
            timeout: LINUX_TIMEOUT,
        });
    }

    let total = experiments.len() * RUNS;
    let mut consoles: Vec<(&'static str, Vec<Console>)> = Vec::new();
    let mut step = 0;
    for experiment in &mut experiments {
        let mut runs = Vec::new();
        for run in 1..=RUNS {
            step += 1;
            eprintln!(
                "xtask: bench [{step}/{total}] {}: run {run} of {RUNS} ...",
                experiment.what
            );
            let started = Instant::now();
            let log = logs.join(format!("{}-run{run}.log", experiment.name));
            let console = experiment.run(&log)?;
            eprintln!(
                "xtask: bench [{step}/{total}] {} in {:.0} s of host time ({}): {}",
                experiment.name,
                started.elapsed().as_secs_f64(),
                console.ending,
                console.summary(),
            );
            runs.push(console);
        }
        consoles.push((experiment.name, runs));
    }

    let runs_of = |name: &str| -> Option<&[Console]> {
        consoles
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, runs)| runs.as_slice())
    };
    let file_size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))
    };
    let sizes = Sizes {
        hyp_bin: file_size(&artifacts.bin)?,
        xen_image: xen_image.as_deref().map(file_size).transpose()?,
    };
    let xen = xen_image.map(|_| XenRun {
        version: ["irq-xen", "linux-xen"]
            .into_iter()
            .filter_map(runs_of)
            .flatten()
            .find_map(|c| xen_version(&c.text)),
        dom0_bootargs,
        domu_irq_args,
    });
    let report = Report {
        quick,
        qemu_version,
        qemu_options: ICOUNT.join(" "),
        irq_args: irq_args.to_string(),
        linux_bootargs,
        xen,
        figures: figures(&runs_of, quick, sizes),
    };
    let md = out_dir.join("report.md");
    let json = out_dir.join("report.json");
    let svg = out_dir.join("ratios.svg");
    cmd::write_atomically(&md, report.markdown().as_bytes())?;
    cmd::write_atomically(&json, report.json().as_bytes())?;
    cmd::write_atomically(&svg, report.svg().as_bytes())?;
    eprintln!(
        "xtask: bench: wrote {}, {} and {} (consoles in {})",
        cmd::pretty(&md),
        cmd::pretty(&json),
        cmd::pretty(&svg),
        cmd::pretty(&logs)
    );
    Ok(())
}

/// The `/hypervisor` fragment of the irq experiment: guests/irq alone in a VM of both CPUs
/// with [`IRQ_VM_MIB`] and the PL031 RTC passed through, as tests/tests/irq.rs runs it.
fn irq_config(bootargs: &str) -> String {
    let vm_bytes = IRQ_VM_MIB << 20;
    format!(
        r#"// Written by `cargo xtask bench`: guests/irq alone under Tandem.
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
        vm@0 {{
            compatible = "tandem,vm";
            label = "irq";
            cpus = <&{{/cpus/cpu@0}} &{{/cpus/cpu@1}}>;
            memory = <0x0 0x50000000 0x0 {vm_bytes:#x}>;
            devices = <&{{/pl031@9010000}}>;
            bootargs = "{bootargs}";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@4f000000 {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 0x4f000000 0x0 0x0>;
                xtask,file = "@guest:irq";
            }};
        }};
    }};
}};
"#
    )
}

/// guests/irq straight on QEMU at EL1, as tests/tests/irq.rs boots its baseline.
fn native_irq_command(image: &Path, bootargs: &str) -> Command {
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-M", "virt,gic-version=3", "-cpu", "max"])
        .args(["-smp", &IRQ_MACHINE.cpus.to_string()])
        .args(["-m", &IRQ_MACHINE.mem.to_string()])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(image)
        .args(["-append", bootargs])
        .args(ICOUNT);
    qemu
}

/// guests/irq's arguments under Xen: `irq_args` and the null hypercall Xen answers
/// ([`xen::XEN_UID_CALL`]). The PL031 is not passed through to the domU (dom0less
/// passthrough needs a partial device tree with `xen,passthrough`), so the domU's DT lists
/// none and guests/irq skips its `spi-hw` check by itself.
fn xen_irq_args(irq_args: &str) -> String {
    format!("{irq_args} null_call={:#x}", xen::XEN_UID_CALL)
}

/// `cargo xtask run --icount <args>` through this very binary.
fn xtask_run(xtask: &Path, args: &[&str]) -> Command {
    let mut run = Command::new(xtask);
    run.args(["run", "--icount"]).args(args);
    run
}

/// One experiment: a command whose console carries figures.
struct Experiment {
    name: &'static str,
    what: &'static str,
    command: Command,
    /// A console line holding any of these ends the run (its figures are in).
    done: &'static [&'static str],
    timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A `done` line came; the machine was stopped there.
    Done,
    /// The command ended by itself first.
    Exited,
    /// Neither, within the timeout.
    TimedOut,
    /// The hypervisor reported a fault of its own.
    Fault,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ending::Done => "done",
            Ending::Exited => "QEMU exited before the last figure",
            Ending::TimedOut => "timed out",
            Ending::Fault => "hypervisor fault",
        })
    }
}

/// The console of one run.
struct Console {
    text: String,
    ending: Ending,
}

impl Console {
    /// The figures this console carries, for the progress line.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = median_ticks(&self.text, "irq: null hypercall round trip:") {
            parts.push(format!("hypercall {t}"));
        }
        if let Some(t) = median_ticks(&self.text, "irq: mmio read round trip:") {
            parts.push(format!("MMIO read {t}"));
        }
        if let Some(t) = median_ticks(&self.text, "irq: sgi round trip:") {
            parts.push(format!("SGI round trip {t}"));
        }
        if let Some(t) = median_ticks(&self.text, "irq: vtimer latency:") {
            parts.push(format!("vtimer {t}"));
        }
        if let Some(t) = median_ticks(&self.text, "irq: ptimer latency:") {
            parts.push(format!("ptimer {t}"));
        }
        if let Some(us) = user_space_us(&self.text) {
            parts.push(format!("user space at {us} us"));
        }
        if let Some(us) = banner_us(&self.text) {
            parts.push(format!("banner at {us} us"));
        }
        if let Some(us) = xen_dom0_start_us(&self.text) {
            parts.push(format!(
                "Xen done starting up (its domains unpaused) at {us} us"
            ));
        }
        if let Some(us) = memwork_us(&self.text) {
            parts.push(format!("memory workload {us} us"));
        }
        if let Some(b) = vsock_bench(&self.text) {
            parts.push(format!("{:.0} requests/s, p50 {} us", b.rate, b.p50_us));
        }
        if self.text.contains("TEST FAIL") {
            parts.push("a check FAILED, see its log".into());
        }
        if parts.is_empty() {
            "no figures".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Experiment {
    /// Runs the command once, reading its console until a `done` line, its end, a fault or
    /// the timeout; then stops it. The console goes to `log` (xtask's own messages to
    /// `log` with `.err` appended).
    fn run(&mut self, log: &Path) -> Result<Console> {
        let err_log = PathBuf::from(format!("{}.err", log.display()));
        let mut stderr = std::fs::File::create(&err_log)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", err_log.display())))?;
        // The command first, so that the log says what ran (the Xen and native irq
        // experiments are QEMU itself, which prints nothing of the kind).
        writeln!(stderr, "xtask: bench: {}", cmd::display(&self.command))
            .map_err(|e| Error::new(format!("cannot write {}: {e}", err_log.display())))?;
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut self.command);
        let mut child = self.command.spawn().map_err(|e| {
            Error::new(format!(
                "cannot start `{}`: {e}",
                cmd::display(&self.command)
            ))
        })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::new("no stdout"))?;
        let (send, receive) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + self.timeout;
        let mut text = String::new();
        let ending = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receive.recv_timeout(left) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                    if self.done.iter().any(|d| line.contains(d)) {
                        break Ending::Done;
                    }
                    if HYPERVISOR_FAULTS.iter().any(|f| line.contains(f)) {
                        break Ending::Fault;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break Ending::Exited,
                Err(mpsc::RecvTimeoutError::Timeout) => break Ending::TimedOut,
            }
        };
        // Killing xtask's `run` kills its QEMU too (die_with_parent).
        let _ = child.kill();
        let _ = child.wait();
        drop(receive);
        let _ = reader.join();
        std::fs::write(log, &text)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", log.display())))?;
        Ok(Console { text, ending })
    }
}

/// The median of an `irq: ... min A median B max C ticks` line that contains `what` (a
/// domU's line on Xen's console too, see [`xen_domu_lines`]).
fn median_ticks(console: &str, what: &str) -> Option<u64> {
    let console = xen_domu_lines(console);
    let line = console.lines().find(|l| l.contains(what))?;
    number_after(line, " median ")
}

/// How many bytes of a domU's line Xen 4.17 prints at most as one piece:
/// `SBSA_UART_OUT_BUF_SIZE - 2` in xen/arch/arm/vpl011.c.
const XEN_VPL011_PIECE: usize = 126;

/// `console` with each line a domU wrote to its `vpl011` whole again, as `DOM<id>: <line>`.
///
/// Xen prints what a domU writes line by line, as `(XEN) [stamp] DOM<id>: <line>`, and a
/// line longer than its buffer in pieces of [`XEN_VPL011_PIECE`] bytes, each printed as a
/// line of its own; its serial console then ends every line with `\r\n`. The test guests
/// end their lines with `\r\n` too, so a piece whose bytes (without the serial's `\r`) are
/// that long and do not end with the guest's `\r` goes on in the next piece of that domain.
/// Other lines stay as they are; a console without domU output is returned unchanged.
fn xen_domu_lines(console: &str) -> std::borrow::Cow<'_, str> {
    /// The domain's tag and the piece it printed, for a line of a domU's output.
    fn piece(line: &str) -> Option<(&str, &str)> {
        let rest = line.strip_prefix("(XEN) ")?;
        let rest = match rest.strip_prefix('[') {
            Some(stamped) => stamped.split_once("] ")?.1,
            None => rest,
        };
        let (tag, text) = rest.split_once(": ")?;
        let id = tag.strip_prefix("DOM")?;
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some((tag, text))
    }
    if !console.lines().any(|l| piece(l).is_some()) {
        return std::borrow::Cow::Borrowed(console);
    }
    let mut out = String::with_capacity(console.len());
    // The domain and the line it has not finished yet.
    let mut open: Option<(String, String)> = None;
    for line in console.lines() {
        let Some((tag, text)) = piece(line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let bytes = text.strip_suffix('\r').unwrap_or(text);
        let continues = bytes.len() == XEN_VPL011_PIECE && !bytes.ends_with('\r');
        let mut whole = match open.take() {
            Some((open_tag, mut so_far)) if open_tag == tag => {
                so_far.push_str(bytes);
                so_far
            }
            Some((open_tag, so_far)) => {
                let _ = writeln!(out, "{open_tag}: {so_far}");
                bytes.to_string()
            }
            None => bytes.to_string(),
        };
        if continues {
            open = Some((tag.to_string(), whole));
        } else {
            whole.truncate(whole.trim_end_matches('\r').len());
            let _ = writeln!(out, "{tag}: {whole}");
        }
    }
    if let Some((tag, so_far)) = open {
        let _ = writeln!(out, "{tag}: {so_far}");
    }
    std::borrow::Cow::Owned(out)
}

/// The digits right after `needle` in `line`.
fn number_after(line: &str, needle: &str) -> Option<u64> {
    let rest = &line[line.find(needle)? + needle.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The kernel-log timestamp of the initramfs's first line, `[    1.256267] tandem-init:
/// first user-space line`, in microseconds of the VM's counter.
fn user_space_us(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.contains("] tandem-init: first user-space line"))?;
    let stamp = &line[line.find('[').map(|i| i + 1)?..];
    // Under Tandem the line starts with the VM's `[linux] ` prefix.
    let stamp = if stamp.starts_with("linux]") {
        &stamp[stamp.find('[').map(|i| i + 1)?..]
    } else {
        stamp
    };
    let stamp = stamp[..stamp.find(']')?].trim();
    let (seconds, micros) = stamp.split_once('.')?;
    if micros.len() != 6 {
        return None;
    }
    Some(seconds.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?)
}

/// The initramfs's `tandem-test: memwork <N> us (...)`: the memory workload's guest time
/// (none when it printed `FAILED`).
fn memwork_us(console: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains(MEMWORK_LINE))?;
    number_after(line, MEMWORK_LINE)
}

/// The stamp `console_timestamps=raw` gives a line of Xen's, `(XEN) [0000000022a37eb8] ...`:
/// the physical counter (CNTPCT_EL0), in hex.
fn xen_stamp(line: &str) -> Option<u64> {
    const PREFIX: &str = "(XEN) [";
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    u64::from_str_radix(&rest[..rest.find(']')?], 16).ok()
}

/// The counter's frequency as Xen reads it, `Generic Timer IRQ: ... Freq: 1000000 KHz`, in Hz.
fn xen_counter_hz(console: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains("Generic Timer IRQ:"))?;
    Some(number_after(line, "Freq: ")? * 1000)
}

/// When Xen started dom0 (the stamp of [`XEN_DOM0_STARTED`]), in microseconds of guest time
/// since QEMU started the machine: under `-icount` the physical counter starts at 0 there.
fn xen_dom0_start_us(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.starts_with("(XEN)") && l.contains(XEN_DOM0_STARTED))?;
    let ticks = u128::from(xen_stamp(line)?);
    let hz = u128::from(xen_counter_hz(console)?);
    u64::try_from(ticks * 1_000_000 / hz).ok()
}

/// Xen's version as its first line gives it: `Xen version 4.17.7 (Debian 4.17.7+13-...)`.
fn xen_version(console: &str) -> Option<String> {
    let line = console.lines().find(|l| l.contains("Xen version "))?;
    let from = &line[line.find("Xen version ")?..];
    let end = from.find(')').map_or(from.len(), |i| i + 1);
    Some(from[..end].to_string())
}

/// The hypervisor's `boot: entry to banner <N> us`.
fn banner_us(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.contains("boot: entry to banner "))?;
    number_after(line, "boot: entry to banner ")
}

/// The hypervisor's `boot: entry to first guest instruction <N> us; ...`.
fn first_guest_us(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.contains("boot: entry to first guest instruction "))?;
    number_after(line, "boot: entry to first guest instruction ")
}

/// The `EL2 memory <N> KiB` of the same line: the image with its stacks and heap.
fn el2_memory_kib(console: &str) -> Option<u64> {
    let line = console
        .lines()
        .find(|l| l.contains("boot: entry to first guest instruction "))?;
    number_after(line, "EL2 memory ")
}

/// The `tandem-client bench` line's request rate and median latency.
#[derive(Debug, Clone, Copy, PartialEq)]
struct VsockBench {
    rate: f64,
    p50_us: u64,
}

fn vsock_bench(console: &str) -> Option<VsockBench> {
    let line = console
        .lines()
        .find(|l| l.contains("tandem-test: bench: "))?;
    let rate_text = line.split(" ms: ").nth(1)?.split(' ').next()?;
    Some(VsockBench {
        rate: rate_text.parse().ok()?,
        p50_us: number_after(line, "latency p50 ")?,
    })
}

/// One column of a figure: the value of each run, or why there is none.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    /// One entry per run; `None` where that run did not print the figure.
    Runs(Vec<Option<f64>>),
    /// The experiment does not exist in this setting.
    NotApplicable(&'static str),
    /// It exists but this version does not measure it.
    NotMeasured(&'static str),
}

impl Column {
    /// The runs' mean, when every run gave a value.
    fn value(&self) -> Option<f64> {
        match self {
            Column::Runs(runs) if !runs.is_empty() => {
                let values: Option<Vec<f64>> = runs.iter().copied().collect();
                values.map(|v| v.iter().sum::<f64>() / v.len() as f64)
            }
            _ => None,
        }
    }

    /// (max - min) / min over the runs: 0 when they agree exactly.
    fn spread(&self) -> Option<f64> {
        let Column::Runs(runs) = self else {
            return None;
        };
        let values: Vec<f64> = runs.iter().copied().collect::<Option<_>>()?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (values.len() >= 2 && min > 0.0).then(|| (max - min) / min)
    }

    /// Values by run, from the consoles of an experiment (absent: not measured).
    fn from_runs(runs: Option<&[Console]>, figure: impl Fn(&Console) -> Option<f64>) -> Column {
        match runs {
            Some(runs) => Column::Runs(runs.iter().map(figure).collect()),
            None => Column::NotMeasured("skipped by --quick"),
        }
    }
}

/// One row of the report.
struct Figure {
    key: &'static str,
    name: &'static str,
    unit: &'static str,
    native: Column,
    tandem: Column,
    xen: Column,
    note: String,
}

impl Figure {
    fn ratio_native(&self) -> Option<f64> {
        ratio(&self.tandem, &self.native)
    }
    fn ratio_xen(&self) -> Option<f64> {
        ratio(&self.tandem, &self.xen)
    }
}

fn ratio(a: &Column, b: &Column) -> Option<f64> {
    let (a, b) = (a.value()?, b.value()?);
    (b != 0.0).then(|| a / b)
}

/// Figures not measured yet, and why (listed under the table and in report.json).
const NOT_YET: &[(&str, &str)] = &[];

/// The sizes of the hypervisors' images, in bytes (Xen's only when the run fetched it).
struct Sizes {
    hyp_bin: u64,
    xen_image: Option<u64>,
}

/// Turns the consoles into the report's rows.
fn figures<'a>(
    runs_of: &impl Fn(&str) -> Option<&'a [Console]>,
    quick: bool,
    sizes: Sizes,
) -> Vec<Figure> {
    let irq_native = runs_of("irq-native");
    let irq_tandem = runs_of("irq-tandem");
    let irq_xen = runs_of("irq-xen");
    let linux_native = runs_of("linux-native");
    let linux_tandem = runs_of("linux-tandem");
    let linux_xen = runs_of("linux-xen");
    let ticks =
        |what: &'static str| move |c: &Console| median_ticks(&c.text, what).map(|t| t as f64);
    let memwork_ms = |c: &Console| memwork_us(&c.text).map(|us| us as f64 / 1000.0);
    let irq_note = if quick {
        "median ticks of the quick sample (200 trips, 5 deadlines per timer); 1 tick = 1 instruction"
    } else {
        "median ticks (guests/irq defaults: 1000 trips, 20 deadlines per timer); 1 tick = 1 \
         instruction; under Xen guests/irq is a dom0less domU with vwfi=native"
    };
    let n_a = "there is no hypervisor to measure natively";
    let banner_from = if quick {
        "the irq layout (2 CPUs, one VM)"
    } else {
        "the default layout (4 CPUs, Linux and the secure guest)"
    };
    let banner_runs = if quick { irq_tandem } else { linux_tandem };
    vec![
        Figure {
            key: "null_hypercall",
            name: "Null hypercall round trip",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: null hypercall round trip:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: null hypercall round trip:")),
            xen: Column::from_runs(irq_xen, ticks("irq: null hypercall round trip:")),
            note: format!(
                "median ticks of 200 VENDOR_HYP_CALL_UID calls over HVC; natively QEMU's own \
                 PSCI emulation answers them, outside the instruction count; under Xen, which \
                 has no handler for that call (it logs it and answers NOT_SUPPORTED), the UID \
                 call Xen answers, {:#x}",
                xen::XEN_UID_CALL
            ),
        },
        Figure {
            key: "mmio_round_trip",
            name: "MMIO read of an emulated register (GICD_TYPER)",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: mmio read round trip:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: mmio read round trip:")),
            xen: Column::from_runs(irq_xen, ticks("irq: mmio read round trip:")),
            note: "median ticks of 200 reads; natively QEMU's GIC model answers, outside the \
                   instruction count"
                .into(),
        },
        Figure {
            key: "sgi_round_trip",
            name: "SGI round trip",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: sgi round trip:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: sgi round trip:")),
            xen: Column::from_runs(irq_xen, ticks("irq: sgi round trip:")),
            note: irq_note.into(),
        },
        Figure {
            key: "vtimer_latency",
            name: "Virtual timer deadline to handler",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: vtimer latency:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: vtimer latency:")),
            xen: Column::from_runs(irq_xen, ticks("irq: vtimer latency:")),
            note: irq_note.into(),
        },
        Figure {
            key: "ptimer_latency",
            name: "EL1 physical timer deadline to handler",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: ptimer latency:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: ptimer latency:")),
            xen: Column::from_runs(irq_xen, ticks("irq: ptimer latency:")),
            note: irq_note.into(),
        },
        Figure {
            key: "wfi_wake_up",
            name: "WFI wake-up (virtual timer deadline, IRQs masked)",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: wfi wake-up:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: wfi wake-up:")),
            xen: Column::from_runs(irq_xen, ticks("irq: wfi wake-up:")),
            note: "median ticks from a virtual timer deadline to the first instruction after \
                   the WFI that waited for it, with IRQs masked so that no handler runs: the \
                   cost of waking an idle vCPU alone; 1 tick = 1 instruction"
                .into(),
        },
        Figure {
            key: "passthrough_irq_latency",
            name: "Passed-through device interrupt to handler (PL031 alarm)",
            unit: "ticks",
            native: Column::from_runs(irq_native, ticks("irq: spi-hw latency:")),
            tandem: Column::from_runs(irq_tandem, ticks("irq: spi-hw latency:")),
            xen: Column::NotMeasured(
                "the dom0less domU is given no device; passing the PL031 through to it needs \
                 a partial device tree with xen,passthrough, not set up here",
            ),
            note: "median ticks from the PL031's match (its alarm fires one second of the VM \
                   clock after the RTCMR write, which `-rtc clock=vm` makes the counter's \
                   clock) to the handler's entry, the RTC assigned to the VM; 1 tick = 1 \
                   instruction"
                .into(),
        },
        Figure {
            key: "linux_boot_to_user_space",
            name: "Linux boot to user space",
            unit: "ms",
            native: Column::from_runs(linux_native, |c| {
                user_space_us(&c.text).map(|us| us as f64 / 1000.0)
            }),
            tandem: Column::from_runs(linux_tandem, |c| {
                Some((user_space_us(&c.text)? + first_guest_us(&c.text)?) as f64 / 1000.0)
            }),
            xen: Column::from_runs(linux_xen, |c| {
                Some((user_space_us(&c.text)? + xen_dom0_start_us(&c.text)?) as f64 / 1000.0)
            }),
            note: "guest time: the kernel-log stamp of the first user-space line (which counts \
                   from the kernel's clock set-up, not its entry); under Tandem plus the \
                   hypervisor's entry-to-first-guest-instruction time (the VM's counter starts \
                   at 0 there), under Xen \
                   plus the counter's value when Xen started dom0 (`Freed ... init memory`)"
                .into(),
        },
        Figure {
            key: "memory_workload",
            name: "Memory workload",
            unit: "ms",
            native: Column::from_runs(linux_native, memwork_ms),
            tandem: Column::from_runs(linux_tandem, memwork_ms),
            xen: Column::from_runs(linux_xen, memwork_ms),
            note: format!(
                "guest time by Linux's own clock (`tandem.test=memwork`): dd of {} MiB from \
                 /dev/zero to /dev/null, then a {} MiB file in /tmp written, read back and \
                 removed; under Tandem beside the secure guest, under Xen in dom0",
                initramfs::MEMWORK_STREAM_MIB,
                initramfs::MEMWORK_FILE_MIB
            ),
        },
        Figure {
            key: "vsock_requests_per_second",
            name: "Secure channel throughput (tandem-client bench, 200 requests)",
            unit: "requests/s",
            native: Column::NotApplicable("the secure guest exists only under a hypervisor"),
            tandem: Column::from_runs(linux_tandem, |c| vsock_bench(&c.text).map(|b| b.rate)),
            xen: Column::NotApplicable("the secure channel is Tandem's"),
            note: "guest time; higher is better. 200 requests over a total that a few slow \
                   ones dominate, so it moves run to run; the p50 below is steadier"
                .into(),
        },
        Figure {
            key: "vsock_latency_p50",
            name: "Secure channel request round trip (p50)",
            unit: "us",
            native: Column::NotApplicable("the secure guest exists only under a hypervisor"),
            tandem: Column::from_runs(linux_tandem, |c| {
                vsock_bench(&c.text).map(|b| b.p50_us as f64)
            }),
            xen: Column::NotApplicable("the secure channel is Tandem's"),
            note: "guest time, as Linux's clock sees it".into(),
        },
        Figure {
            key: "hyp_bin_size",
            name: "Hypervisor image size",
            unit: "bytes",
            native: Column::NotApplicable(n_a),
            tandem: Column::Runs(vec![Some(sizes.hyp_bin as f64)]),
            xen: match sizes.xen_image {
                Some(size) => Column::Runs(vec![Some(size as f64)]),
                None => Column::NotMeasured("skipped by --quick"),
            },
            note: "target/hyp.bin, release build; Xen: the package's boot/xen-4.17-arm64, the \
                   Image QEMU loads"
                .into(),
        },
        Figure {
            key: "hyp_entry_to_banner",
            name: "Hypervisor entry to banner",
            unit: "us",
            native: Column::NotApplicable(n_a),
            tandem: Column::from_runs(banner_runs, |c| banner_us(&c.text).map(|us| us as f64)),
            xen: Column::NotMeasured(
                "Xen has no banner to match Tandem's; its entry to dom0's start is part of the \
                 Linux boot figure",
            ),
            note: format!("guest time, {banner_from}"),
        },
        Figure {
            key: "hyp_entry_to_first_guest",
            name: "Hypervisor entry to first guest instruction",
            unit: "us",
            native: Column::NotApplicable(n_a),
            tandem: Column::from_runs(banner_runs, |c| first_guest_us(&c.text).map(|us| us as f64)),
            xen: Column::from_runs(linux_xen, |c| {
                xen_dom0_start_us(&c.text).map(|us| us as f64)
            }),
            note: format!(
                "guest time, {banner_from}: start-up, building the VMs, loading and measuring \
                 their images; under Xen until it starts dom0 (`Freed ... init memory`)"
            ),
        },
        Figure {
            key: "el2_memory",
            name: "EL2 memory",
            unit: "KiB",
            native: Column::NotApplicable(n_a),
            tandem: Column::from_runs(banner_runs, |c| el2_memory_kib(&c.text).map(|k| k as f64)),
            xen: Column::NotMeasured("Xen's own memory use is not reported the same way"),
            note: format!(
                "{banner_from}: the hypervisor's image with its stacks and heap, all it ever \
                 uses (the boot log also says how much of the heap is in use)"
            ),
        },
    ]
}

/// Everything the three files say.
struct Report {
    quick: bool,
    qemu_version: String,
    qemu_options: String,
    irq_args: String,
    /// Linux's command line natively and under Tandem.
    linux_bootargs: String,
    /// How Xen ran, when it did (not with `--quick`).
    xen: Option<XenRun>,
    figures: Vec<Figure>,
}

/// The Xen runs' set-up, for the report.
struct XenRun {
    /// As Xen's console gives it; `None` when no run printed it.
    version: Option<String>,
    dom0_bootargs: String,
    /// guests/irq's arguments as a domU.
    domu_irq_args: String,
}

/// A number as the report prints it: integers without decimals, others with two.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(column: &Column) -> String {
    match column {
        Column::Runs(runs) => {
            let values: Vec<String> = runs
                .iter()
                .map(|v| v.map_or_else(|| "failed".into(), number))
                .collect();
            let first = &values[0];
            if values.iter().all(|v| v == first) {
                first.clone()
            } else {
                values.join(" / ")
            }
        }
        Column::NotApplicable(_) => "n/a".into(),
        Column::NotMeasured(_) => "not measured".into(),
    }
}

/// Whether the runs of each measured column agree: "exact", "x.xx % apart", "one value"
/// (a figure that is not a run, like a file's size) or "—" (nothing measured).
fn agreement(figure: &Figure) -> String {
    let mut parts = Vec::new();
    let mut measured = false;
    for (name, column) in [
        ("native", &figure.native),
        ("Tandem", &figure.tandem),
        ("Xen", &figure.xen),
    ] {
        let Column::Runs(runs) = column else { continue };
        measured = true;
        if runs.len() < 2 {
            continue;
        }
        match column.spread() {
            Some(0.0) => parts.push(format!("{name}: exact")),
            Some(s) => parts.push(format!("{name}: {:.2} % apart", s * 100.0)),
            None => parts.push(format!("{name}: a run failed")),
        }
    }
    if !measured {
        "—".into()
    } else if parts.is_empty() {
        "one value".into()
    } else {
        parts.join("; ")
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{r:.3}"))
}

impl Report {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Tandem benchmarks{}\n",
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            s,
            "Written by `cargo xtask bench{}`. Method and caveats: docs/benchmarks.md.\n",
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(s, "- QEMU: {}", self.qemu_version);
        let _ = writeln!(
            s,
            "- Options: `-M virt` with `-cpu max`, `{}` (1 counter tick = 1 instruction)",
            self.qemu_options
        );
        let _ = writeln!(s, "- guests/irq arguments: `{}`", self.irq_args);
        let _ = writeln!(
            s,
            "- Linux command line (native and Tandem): `{}`",
            self.linux_bootargs
        );
        match &self.xen {
            Some(xen) => {
                let _ = writeln!(
                    s,
                    "- Xen: {} (Debian's xen-hypervisor-4.17-arm64)",
                    xen.version
                        .as_deref()
                        .unwrap_or("version not seen on its console"),
                );
                let _ = writeln!(
                    s,
                    "  - guests/irq as a dom0less domU (no dom0): Xen's command line `{}`; the \
                     guest's arguments `{}`",
                    xen::XEN_DOM0LESS_BOOTARGS,
                    xen.domu_irq_args
                );
                let _ = writeln!(
                    s,
                    "  - Linux as dom0: Xen's command line `{}`; dom0's: `{}`",
                    xen::XEN_BOOTARGS,
                    xen.dom0_bootargs
                );
            }
            None => {
                let _ = writeln!(s, "- Xen 4.17: not run (`--quick`)");
            }
        }
        let _ = writeln!(
            s,
            "- Each experiment ran {RUNS} times; consoles in target/bench/logs/\n"
        );
        s.push_str(
            "| Figure | Unit | Native | Tandem | Xen 4.17 | Tandem/native | Tandem/Xen | Runs agree |\n\
             |---|---|---:|---:|---:|---:|---:|---|\n",
        );
        for f in &self.figures {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                f.unit,
                cell(&f.native),
                cell(&f.tandem),
                cell(&f.xen),
                ratio_cell(f.ratio_native()),
                ratio_cell(f.ratio_xen()),
                agreement(f)
            );
        }
        s.push_str("\n![Tandem/native ratios](ratios.svg)\n\n## Notes\n\n");
        for f in &self.figures {
            let _ = write!(s, "- **{}**: {}", f.name, f.note);
            for (which, column) in [("native", &f.native), ("Xen", &f.xen)] {
                match column {
                    Column::NotApplicable(why) => {
                        let _ = write!(s, "; {which} n/a: {why}");
                    }
                    Column::NotMeasured(why) => {
                        let _ = write!(s, "; {which} not measured: {why}");
                    }
                    Column::Runs(_) => {}
                }
            }
            s.push_str(".\n");
        }
        if !NOT_YET.is_empty() {
            s.push_str("\n## Not measured yet\n\n");
            for (_, why) in NOT_YET {
                let _ = writeln!(s, "- {why}.");
            }
        }
        s
    }

    fn json(&self) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"schema\": 1,");
        let _ = writeln!(s, "  \"quick\": {},", self.quick);
        let _ = writeln!(s, "  \"runs\": {RUNS},");
        let _ = writeln!(
            s,
            "  \"qemu\": {{\"version\": {}, \"machine\": \"virt\", \"cpu\": \"max\", \"options\": {}}},",
            json_string(&self.qemu_version),
            json_string(&self.qemu_options)
        );
        let _ = writeln!(s, "  \"irq_args\": {},", json_string(&self.irq_args));
        let _ = writeln!(
            s,
            "  \"linux_bootargs\": {},",
            json_string(&self.linux_bootargs)
        );
        match &self.xen {
            Some(xen) => {
                let _ = writeln!(
                    s,
                    "  \"xen\": {{\"version\": {}, \"bootargs\": {}, \"dom0_bootargs\": {}, \
                     \"dom0less_bootargs\": {}, \"domu_irq_args\": {}}},",
                    xen.version
                        .as_deref()
                        .map_or_else(|| "null".into(), json_string),
                    json_string(xen::XEN_BOOTARGS),
                    json_string(&xen.dom0_bootargs),
                    json_string(xen::XEN_DOM0LESS_BOOTARGS),
                    json_string(&xen.domu_irq_args)
                );
            }
            None => s.push_str("  \"xen\": null,\n"),
        }
        s.push_str("  \"figures\": [\n");
        for (i, f) in self.figures.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"key\": {}, \"name\": {}, \"unit\": {}, \"native\": {}, \"tandem\": {}, \
                 \"xen\": {}, \"tandem_over_native\": {}, \"tandem_over_xen\": {}, \"note\": {}}}",
                json_string(f.key),
                json_string(f.name),
                json_string(f.unit),
                json_column(&f.native),
                json_column(&f.tandem),
                json_column(&f.xen),
                json_number(f.ratio_native()),
                json_number(f.ratio_xen()),
                json_string(&f.note)
            );
            s.push_str(if i + 1 < self.figures.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        s.push_str("  ],\n  \"not_measured\": [\n");
        for (i, (key, why)) in NOT_YET.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"key\": {}, \"reason\": {}}}",
                json_string(key),
                json_string(why)
            );
            s.push_str(if i + 1 < NOT_YET.len() { ",\n" } else { "\n" });
        }
        s.push_str("  ]\n}\n");
        s
    }

    /// A horizontal bar per figure that has a Tandem/native ratio, with a line at 1.
    fn svg(&self) -> String {
        let bars: Vec<(&str, f64)> = self
            .figures
            .iter()
            .filter_map(|f| Some((f.name, f.ratio_native()?)))
            .collect();
        let (label_w, bar_w, row_h, top) = (300.0, 400.0, 28.0, 40.0);
        let width = label_w + bar_w + 80.0;
        let height = top + row_h * bars.len().max(1) as f64 + 30.0;
        let max = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.1;
        let x = |r: f64| label_w + bar_w * r / max;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Tandem / native \
             (lower is closer to native; 1 = no overhead)</text>"
        );
        if bars.is_empty() {
            let _ = writeln!(
                s,
                "<text x=\"10\" y=\"{}\">no figure was measured both ways</text>",
                top + 18.0
            );
        }
        for (i, (name, r)) in bars.iter().enumerate() {
            let y = top + row_h * i as f64;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                label_w - 8.0,
                y + 17.0,
                xml_escape(name)
            );
            let _ = writeln!(
                s,
                "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"#4a7ab5\"/>",
                y + 4.0,
                x(*r) - label_w,
                row_h - 8.0
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\">{r:.3}</text>",
                x(*r) + 5.0,
                y + 17.0
            );
        }
        let one = x(1.0);
        let _ = writeln!(
            s,
            "<line x1=\"{one:.1}\" y1=\"{}\" x2=\"{one:.1}\" y2=\"{}\" stroke=\"#c33\" \
             stroke-dasharray=\"4 3\"/>",
            top - 4.0,
            height - 24.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{one:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#c33\">1.0</text>",
            height - 10.0
        );
        s.push_str("</svg>\n");
        s
    }
}

fn json_column(column: &Column) -> String {
    match column {
        Column::Runs(runs) => {
            let values: Vec<String> = runs.iter().map(|v| json_number(*v)).collect();
            let agree = match column.spread() {
                Some(s) => format!("{}", s == 0.0),
                None => "null".into(),
            };
            format!(
                "{{\"status\": \"measured\", \"runs\": [{}], \"value\": {}, \"runs_agree\": {agree}, \
                 \"spread\": {}}}",
                values.join(", "),
                json_number(column.value()),
                json_number(column.spread())
            )
        }
        Column::NotApplicable(why) => {
            format!(
                "{{\"status\": \"not_applicable\", \"reason\": {}}}",
                json_string(why)
            )
        }
        Column::NotMeasured(why) => {
            format!(
                "{{\"status\": \"not_measured\", \"reason\": {}}}",
                json_string(why)
            )
        }
    }
}

fn json_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        }
        _ => "null".into(),
    }
}

fn json_string(text: &str) -> String {
    let mut s = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(text: &str) -> Console {
        Console {
            text: text.into(),
            ending: Ending::Done,
        }
    }

    #[test]
    fn figures_are_read_from_the_console() {
        let text = "\
[irq] irq: sgi round trip: min 800 median 912 max 4000 ticks (1000 trips; median 0 us, slowest trip 3)
[irq] irq: vtimer latency: min 300 median 420 max 900 ticks (20 deadlines; median 0 us)
[cpu0] boot: entry to banner 4305 us
[linux] [    1.256267] tandem-init: first user-space line
[linux] tandem-test: bench: 200 requests in 61 ms: 3238 requests/s; latency p50 140 us, p90 191 us, p99 2143 us, max 24225 us
";
        assert_eq!(median_ticks(text, "irq: sgi round trip:"), Some(912));
        assert_eq!(median_ticks(text, "irq: vtimer latency:"), Some(420));
        assert_eq!(median_ticks(text, "irq: ptimer latency:"), None);
        assert_eq!(banner_us(text), Some(4305));
        let boot = "[cpu0] boot: entry to first guest instruction 37903 us; EL2 memory 3904 KiB (the image with its stacks and heap), heap 84 KiB in use of 2048";
        assert_eq!(first_guest_us(boot), Some(37903));
        assert_eq!(el2_memory_kib(boot), Some(3904));
        assert_eq!(user_space_us(text), Some(1_256_267));
        assert_eq!(
            user_space_us("[   12.000001] tandem-init: first user-space line"),
            Some(12_000_001)
        );
        assert_eq!(
            vsock_bench(text),
            Some(VsockBench {
                rate: 3238.0,
                p50_us: 140
            })
        );
    }

    #[test]
    fn xen_and_the_memory_workload_are_read_from_the_console() {
        let text = "\
(XEN) [0000000000d18f8a] Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1) (pkg-xen-devel@lists.alioth.debian.org) (gcc) debug=n
(XEN) [0000000000d2c000] Generic Timer IRQ: phys=30 hyp=26 virt=27 Freq: 1000000 KHz
(XEN) [000000001c7abf1c] *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)
(XEN) [000000001c7fb636] Freed 348kB init memory.
[    0.828803] tandem-init: first user-space line
tandem-test: memwork 1879998 us (stream 2000 MiB 1087817 us; tmpfs file 256 MiB: write 467956 us, read 171946 us, remove 152279 us)
";
        assert_eq!(
            xen_stamp("(XEN) [000000001c7fb636] Freed"),
            Some(0x1c7f_b636)
        );
        assert_eq!(xen_counter_hz(text), Some(1_000_000_000));
        // 0x1c7fb636 ticks of a 1 GHz counter.
        assert_eq!(xen_dom0_start_us(text), Some(478_131));
        assert_eq!(
            xen_version(text).as_deref(),
            Some("Xen version 4.17.7 (Debian 4.17.7+13-g2445b30a44-0+deb12u1)")
        );
        assert_eq!(user_space_us(text), Some(828_803));
        assert_eq!(memwork_us(text), Some(1_879_998));
        assert_eq!(
            memwork_us("[linux] tandem-test: memwork FAILED: dd to /dev/null: no space"),
            None
        );
        // Without the counter's frequency there is no time.
        assert_eq!(
            xen_dom0_start_us("(XEN) [0000000000000010] Freed 348kB init memory."),
            None
        );
    }

    #[test]
    fn a_domus_lines_are_read_whole_from_xens_console() {
        // As Xen 4.17 printed guests/irq's lines (the serial console's `\r` of each line
        // left over after `lines()`): the third line cut after 126 bytes, the fourth line
        // exactly as long and ending where the guest ended it.
        let long = "x".repeat(XEN_VPL011_PIECE - 1);
        let text = format!(
            "(XEN) [000000000f60173a] Freed 348kB init memory.\n\
             (XEN) [0000000011a939ee] DOM1: irq: null hypercall round trip: min 557 median 557 max 557 ticks (200 calls of 0x8500ff01, x0 = 0xdc1218a7)\r\r\n\
             (XEN) [0000000011a939ee] d1v0 vpl011: unhandled read r9 offset 0x000030\n\
             (XEN) [0000000013b1ed3b] DOM1: TEST FAIL vtimer: 1 interrupts taken after the timer fired with IRQs masked and was stopped (then an HVC) before they were unm\r\n\
             (XEN) [0000000013b35ecd] DOM1: asked: the line had dropped (ISTATUS in the handler false)\r\r\n\
             (XEN) [0000000013b35ecd] DOM1: {long}\r\r\n\
             (XEN) [0000000013b35ecd] DOM1: \r\n\
             (XEN) [0000000012dd2db6] DOM1: irq: sgi round trip: min 3552 median 3871 max 3871 ticks (200 trips; median 3 us, slowest trip 199)\r\r\n"
        );
        let lines = xen_domu_lines(&text);
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(
            lines,
            [
                "(XEN) [000000000f60173a] Freed 348kB init memory.",
                "DOM1: irq: null hypercall round trip: min 557 median 557 max 557 ticks (200 calls of 0x8500ff01, x0 = 0xdc1218a7)",
                "(XEN) [0000000011a939ee] d1v0 vpl011: unhandled read r9 offset 0x000030",
                "DOM1: TEST FAIL vtimer: 1 interrupts taken after the timer fired with IRQs masked and was stopped (then an HVC) before they were unmasked: the line had dropped (ISTATUS in the handler false)",
                &format!("DOM1: {long}"),
                "DOM1: ",
                "DOM1: irq: sgi round trip: min 3552 median 3871 max 3871 ticks (200 trips; median 3 us, slowest trip 199)",
            ]
        );
        assert_eq!(median_ticks(&text, "irq: sgi round trip:"), Some(3871));
        assert_eq!(
            median_ticks(&text, "irq: null hypercall round trip:"),
            Some(557)
        );
        // A console without domU output is read as it is.
        let tandem = "[irq] irq: sgi round trip: min 1 median 250 max 9 ticks\n";
        assert!(matches!(
            xen_domu_lines(tandem),
            std::borrow::Cow::Borrowed(t) if t == tandem
        ));
    }

    #[test]
    fn runs_agree_or_say_how_far_apart() {
        let exact = Column::Runs(vec![Some(10.0), Some(10.0)]);
        assert_eq!(exact.spread(), Some(0.0));
        assert_eq!(exact.value(), Some(10.0));
        let apart = Column::Runs(vec![Some(100.0), Some(101.0)]);
        assert_eq!(cell(&apart), "100 / 101");
        assert!((apart.spread().unwrap() - 0.01).abs() < 1e-9);
        let failed = Column::Runs(vec![Some(1.0), None]);
        assert_eq!(failed.value(), None);
        assert_eq!(cell(&failed), "1 / failed");
        assert_eq!(ratio(&exact, &Column::Runs(vec![Some(5.0)])), Some(2.0));
        assert_eq!(ratio(&exact, &Column::NotMeasured("skipped")), None);
    }

    #[test]
    fn the_report_files_hold_every_figure() {
        let native = [console("irq: sgi round trip: min 1 median 100 max 9 ticks")];
        let tandem = [console(
            "[irq] irq: sgi round trip: min 1 median 250 max 9 ticks\n[cpu0] boot: entry to banner 7 us",
        )];
        let runs_of = |name: &str| -> Option<&[Console]> {
            match name {
                "irq-native" => Some(&native[..]),
                "irq-tandem" => Some(&tandem[..]),
                _ => None,
            }
        };
        let report = Report {
            quick: true,
            qemu_version: "QEMU emulator version 10.0.2 \"x\"".into(),
            qemu_options: ICOUNT.join(" "),
            irq_args: IRQ_ARGS_QUICK.into(),
            linux_bootargs: format!("{LINUX_CONSOLE} {LINUX_ARGS}"),
            xen: None,
            figures: figures(
                &runs_of,
                true,
                Sizes {
                    hyp_bin: 4096,
                    xen_image: None,
                },
            ),
        };
        let md = report.markdown();
        assert!(
            md.contains("| SGI round trip | ticks | 100 | 250 | not measured | 2.500 | — |"),
            "{md}"
        );
        assert!(
            md.contains("| Linux boot to user space | ms | not measured | not measured |"),
            "{md}"
        );
        assert!(
            md.contains("| Hypervisor image size | bytes | n/a | 4096 |"),
            "{md}"
        );
        assert!(md.contains("![Tandem/native ratios](ratios.svg)"));
        let json = report.json();
        assert!(
            json.contains("\"version\": \"QEMU emulator version 10.0.2 \\\"x\\\"\""),
            "{json}"
        );
        assert!(json.contains("\"tandem_over_native\": 2.5"), "{json}");
        assert!(json.contains("\"key\": \"null_hypercall\""), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        let svg = report.svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(">2.500</text>"), "{svg}");
    }

    #[test]
    fn the_full_report_has_the_xen_column() {
        let native = [console(
            "[    0.800000] tandem-init: first user-space line\ntandem-test: memwork 1800000 us (...)",
        )];
        let tandem = [console(
            "[cpu0] boot: entry to banner 5000 us\n\
             [cpu0] boot: entry to first guest instruction 5000 us; EL2 memory 3904 KiB (the image with its stacks and heap), heap 84 KiB in use of 2048\n\
             [linux] [    0.845000] tandem-init: first user-space line\n\
             [linux] tandem-test: memwork 1836000 us (...)",
        )];
        let xen = [console(
            "(XEN) [0000000000000100] Generic Timer IRQ: phys=30 hyp=26 virt=27 Freq: 1000000 KHz\n\
             (XEN) [000000001c9c3800] Freed 348kB init memory.\n\
             [    0.830000] tandem-init: first user-space line\n\
             tandem-test: memwork 1900000 us (...)",
        )];
        let irq_native = [console("irq: sgi round trip: min 1 median 422 max 9 ticks")];
        let irq_tandem = [console(
            "[irq] irq: sgi round trip: min 1 median 34121 max 9 ticks",
        )];
        let irq_xen = [
            console(
                "(XEN) [0000000012dd2db6] DOM1: irq: sgi round trip: min 3552 median 3871 max 3871 ticks (200 trips)\r\r",
            ),
            console("(XEN) [0000000012dd2db6] DOM1: TEST FAIL irq: the sgi line is missing\r\r"),
        ];
        let runs_of = |name: &str| -> Option<&[Console]> {
            match name {
                "linux-native" => Some(&native[..]),
                "linux-tandem" => Some(&tandem[..]),
                "linux-xen" => Some(&xen[..]),
                "irq-native" => Some(&irq_native[..]),
                "irq-tandem" => Some(&irq_tandem[..]),
                "irq-xen" => Some(&irq_xen[..]),
                _ => None,
            }
        };
        let report = Report {
            quick: false,
            qemu_version: "QEMU emulator version 10.0.2".into(),
            qemu_options: ICOUNT.join(" "),
            irq_args: IRQ_ARGS_FULL.into(),
            linux_bootargs: format!("{LINUX_CONSOLE} {LINUX_ARGS}"),
            xen: Some(XenRun {
                version: Some("Xen version 4.17.7 (Debian 4.17.7)".into()),
                dom0_bootargs: format!("{} {LINUX_ARGS}", xen::DOM0_CONSOLE),
                domu_irq_args: xen_irq_args(IRQ_ARGS_FULL),
            }),
            figures: figures(
                &runs_of,
                false,
                Sizes {
                    hyp_bin: 400_000,
                    xen_image: Some(1_000_000),
                },
            ),
        };
        let md = report.markdown();
        // Xen: 0x1c9c3800 ticks = 480 ms before dom0, then 830 ms to user space.
        assert!(
            md.contains("| Linux boot to user space | ms | 800 | 850 | 1310 | 1.062 | 0.649 |"),
            "{md}"
        );
        assert!(
            md.contains("| Memory workload | ms | 1800 | 1836 | 1900 | 1.020 | 0.966 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| Hypervisor image size | bytes | n/a | 400000 | 1000000 | — | 0.400 | one value |"
            ),
            "{md}"
        );
        assert!(
            md.contains("- Xen: Xen version 4.17.7 (Debian 4.17.7)"),
            "{md}"
        );
        assert!(md.contains("dom0's: `console=hvc0 earlycon tandem.test=memwork,vsock`"));
        // The second Xen run did not print the figure.
        assert!(
            md.contains("| SGI round trip | ticks | 422 | 34121 | 3871 / failed | 80.855 | — |"),
            "{md}"
        );
        assert!(
            md.contains(
                "  - guests/irq as a dom0less domU (no dom0): Xen's command line `console=dtuart \
                 dtuart=/pl011@9000000 bootscrub=0 console_timestamps=raw vwfi=native`; the \
                 guest's arguments `mode=check null_call=0x8500ff01`"
            ),
            "{md}"
        );
        assert!(md.contains("the UID call Xen answers, 0x8500ff01"), "{md}");
        let json = report.json();
        assert!(json.contains("\"key\": \"memory_workload\""), "{json}");
        assert!(
            !json.contains("\"key\": \"memory_workload\", \"reason\""),
            "{json}"
        );
        assert!(
            json.contains("\"xen\": {\"version\": \"Xen version 4.17.7 (Debian 4.17.7)\""),
            "{json}"
        );
        assert!(json.contains("\"tandem_over_xen\": 0.4,"), "{json}");
        assert!(
            json.contains("\"domu_irq_args\": \"mode=check null_call=0x8500ff01\"}"),
            "{json}"
        );
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }
}
