//! `cargo xtask test`: host unit tests, fuzzing, the benchmarks' quick run, then the QEMU
//! integration tests in `tests/`.
//!
//! The QEMU tests find their inputs through environment variables holding absolute paths:
//! `TANDEM_HYP_BIN` (the flat Image), `TANDEM_HYP_ELF` (its ELF), `TANDEM_RPI4_DTB`
//! (Debian's bcm2711-rpi-4-b.dtb) and `TANDEM_UBOOT_BIN` (Debian's U-Boot for virt); also
//! `TANDEM_LINUX_IMAGE` (Debian's arm64 kernel `Image`, for tests that boot Linux),
//! `TANDEM_INITRAMFS` (its busybox initramfs, `target/initramfs.cpio`), `TANDEM_DISK` (its
//! ext4 disk image, `target/disk.img`), `TANDEM_GUESTS_DIR` (the test guests' Images,
//! `<name>.bin`, built by `cargo xtask build`), `TANDEM_SECURE_KEY_FILE` (the secure
//! guest's 32-byte device key, to check its tags) and `TANDEM_XTASK` (this xtask binary, for
//! tests of `cargo xtask run` itself).
//! The command ends with cargo test's own summary: nothing is printed after it.

use std::path::Path;
use std::process::{Command, ExitCode};

use clap::Args;

use crate::build::{self, BuildArgs};
use crate::cmd::{self, Error, Result};
use crate::qemu::die_with_parent;
use crate::{debian, prereq};

/// How long `cargo xtask test` runs each fuzz target (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u32 = 10;

/// QEMU tests run two at a time: each QEMU uses one host core (single-threaded TCG).
const QEMU_TEST_THREADS: &str = "--test-threads=2";

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    /// Extra arguments for the QEMU test run, e.g. a test name filter (after `--`).
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub test_args: Vec<String>,
}

pub fn test(args: &TestArgs) -> Result<ExitCode> {
    // 1. Host unit tests of the pure crates, then the host-testable library of hyp.
    step("host unit tests");
    let mut host = cmd::cargo();
    host.args([
        "test",
        "--workspace",
        "--exclude",
        "tandem-tests",
        "--exclude",
        "hyp",
    ]);
    run_tests(&mut host)?;
    if cmd::root().join("hyp/Cargo.toml").is_file() {
        let mut hyp = cmd::cargo();
        hyp.args(["test", "-p", "hyp", "--lib"]);
        run_tests(&mut hyp)?;
    } else {
        eprintln!("xtask: note: hyp/ does not exist yet, skipping `cargo test -p hyp --lib`");
    }

    // 2. Every fuzz target for a few seconds: a crash found since the last run fails CI.
    step("fuzz targets");
    crate::fuzz::fuzz(&crate::fuzz::FuzzArgs {
        seconds: FUZZ_SECONDS,
        targets: Vec::new(),
    })?;

    // 3. The hypervisor image and the files the QEMU tests boot with.
    step("build");
    prereq::ensure()?;
    let artifacts = build::build(&BuildArgs::default())?;
    let kernel = debian::kernel()?;
    let initramfs = crate::initramfs::build()?;
    let disk = crate::disk::build()?;
    let xtask = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find the xtask binary: {e}")))?;

    // 4. The benchmarks' short run: it proves `cargo xtask bench` still works (it builds,
    // boots, reads every figure it expects and writes the report); no figure is judged.
    step("cargo xtask bench --quick");
    crate::bench::bench(true)?;

    // 5. The QEMU integration tests. Their summary must be the last thing printed.
    step("QEMU integration tests");
    let mut qemu_tests = cmd::cargo();
    qemu_tests
        .args([
            "test",
            "-p",
            "tandem-tests",
            "--no-fail-fast",
            "--",
            QEMU_TEST_THREADS,
        ])
        .args(&args.test_args)
        .env("TANDEM_HYP_BIN", absolute(&artifacts.bin)?)
        .env("TANDEM_HYP_ELF", absolute(&artifacts.elf)?)
        .env("TANDEM_RPI4_DTB", absolute(&kernel.rpi4_dtb())?)
        .env("TANDEM_UBOOT_BIN", absolute(Path::new(prereq::UBOOT_BIN))?)
        .env("TANDEM_LINUX_IMAGE", absolute(&kernel.image)?)
        .env("TANDEM_INITRAMFS", absolute(&initramfs)?)
        .env("TANDEM_DISK", absolute(&disk)?)
        .env("TANDEM_GUESTS_DIR", absolute(&crate::guests::output_dir())?)
        .env(
            "TANDEM_SECURE_KEY_FILE",
            absolute(&crate::guests::secure_key_path())?,
        )
        .env("TANDEM_XTASK", absolute(&xtask)?);
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        // A failure message already quotes the console; a backtrace only buries it.
        qemu_tests.env("RUST_BACKTRACE", "0");
    }
    die_with_parent(&mut qemu_tests);
    eprintln!("xtask: {}", cmd::display(&qemu_tests));
    let status = cmd::status(&mut qemu_tests)?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn step(name: &str) {
    eprintln!("xtask: ==== {name} ====");
}

/// Runs a cargo test command; a failing test run fails the whole `xtask test`.
fn run_tests(command: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", cmd::display(command));
    let status = cmd::status(command)?;
    if !status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({status}); the QEMU tests were not run",
            cmd::display(command)
        )));
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<std::path::PathBuf> {
    path.canonicalize()
        .map_err(|e| Error::new(format!("{} is missing: {e}", path.display())))
}
