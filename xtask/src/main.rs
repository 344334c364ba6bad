//! `cargo xtask`: Tandem's one build driver (build the EL2 image, boot it in QEMU, run every test).

mod bench;
mod build;
mod check_config;
mod client;
mod cmd;
mod debian;
mod disk;
mod fuzz;
mod guests;
mod image;
mod initramfs;
mod measure;
mod prereq;
mod qemu;
mod test;
mod vmconfig;
mod xen;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tandem's build driver. Run from anywhere inside the repository as `cargo xtask <command>`.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the hypervisor: target/hyp.elf (symbols) and target/hyp.bin (the flashable Image).
    Build(build::BuildArgs),
    /// Build, then boot the hypervisor in QEMU on the serial console.
    Run(qemu::RunArgs),
    /// Run every test: host unit tests, then the QEMU integration tests.
    Test(test::TestArgs),
    /// Check the /hypervisor node of a board's .dts or .dtb, as the hypervisor does at boot.
    CheckConfig(check_config::CheckConfigArgs),
    /// Build the libFuzzer targets in fuzz/ and run each for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Build the guests and print the SHA-256 of one guest's Image (default: secure), the
    /// digest its attestation certificate names (for `tandem-client attest --expect`).
    Measure(measure::MeasureArgs),
    /// Measure figures natively and under Tandem on QEMU virt with -icount (each experiment
    /// twice) and write target/bench/report.md, report.json and ratios.svg.
    Bench {
        /// A short subset: guests/irq with fewer samples, no Linux boots.
        #[arg(long)]
        quick: bool,
    },
    /// Download (once) Debian's arm64 kernel and busybox into target/debian/, build
    /// target/initramfs.cpio and target/disk.img, and print their paths.
    Fetch,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::build(&args).map(|_| ExitCode::SUCCESS),
        Command::Run(args) => qemu::run(&args),
        Command::Test(args) => test::test(&args),
        Command::CheckConfig(args) => check_config::check_config(&args),
        Command::Fuzz(args) => fuzz::fuzz(&args).map(|_| ExitCode::SUCCESS),
        Command::Measure(args) => measure::measure(&args).map(|_| ExitCode::SUCCESS),
        Command::Bench { quick } => bench::bench(quick).map(|_| ExitCode::SUCCESS),
        Command::Fetch => fetch().map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask fetch`: fills the download cache and says where things are.
fn fetch() -> cmd::Result<()> {
    let kernel = debian::kernel()?;
    println!("linux image: {}", kernel.image.display());
    println!("rpi4 dtb:    {}", kernel.rpi4_dtb().display());
    println!("initramfs:   {}", initramfs::build()?.display());
    println!("disk:        {}", disk::build()?.display());
    Ok(())
}
