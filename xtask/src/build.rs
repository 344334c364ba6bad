//! `cargo xtask build`: compiles the EL2 binary and writes `target/hyp.elf` and `target/hyp.bin`.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::cmd::{self, bail, Error, Result};
use crate::image;

/// The target the hypervisor is built for: no FP/SIMD code at EL2, so guest FP state is
/// never touched by the hypervisor.
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

#[derive(Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// Build the debug profile instead of release (larger and slower, more checks).
    #[arg(long)]
    pub debug: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The ELF with symbols, for gdb (`target/hyp.elf`).
    pub elf: PathBuf,
    /// The flat arm64 Image that firmware loads (`target/hyp.bin`).
    pub bin: PathBuf,
}

/// Builds the hypervisor and converts it; returns the paths of the results.
pub fn build(args: &BuildArgs) -> Result<Artifacts> {
    ensure_target()?;
    let profile = if args.debug { "debug" } else { "release" };
    let mut cargo = cmd::cargo();
    cargo.args(["build", "-p", "hyp", "--target", TARGET]);
    if !args.debug {
        cargo.arg("--release");
    }
    eprintln!("xtask: {}", cmd::display(&cargo));
    cmd::run(&mut cargo).map_err(|e| Error::new(format!("building the hypervisor failed: {e}")))?;

    let target = cmd::target_dir();
    let built = target.join(TARGET).join(profile).join("hyp");
    let elf_bytes = fs::read(&built).map_err(|e| {
        Error::new(format!(
            "cargo succeeded but {} cannot be read ({e}): does the hyp crate build a binary named `hyp`?",
            built.display()
        ))
    })?;
    let flat = image::elf_to_flat(&elf_bytes)
        .map_err(|e| Error::new(format!("{}: {e}", built.display())))?;
    let header =
        image::parse_header(&flat).map_err(|e| Error::new(format!("{}: {e}", built.display())))?;

    let elf = target.join("hyp.elf");
    let bin = target.join("hyp.bin");
    write(&elf, &elf_bytes)?;
    write(&bin, &flat)?;
    eprintln!(
        "xtask: {} {} bytes; {} {} bytes (image_size {} bytes with .bss, text_offset {:#x})",
        cmd::pretty(&elf),
        elf_bytes.len(),
        cmd::pretty(&bin),
        flat.len(),
        header.image_size,
        header.text_offset,
    );
    crate::guests::build(!args.debug)?;
    Ok(Artifacts { elf, bin })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    cmd::write_atomically(path, bytes)
}

/// Makes sure rustup has the standard library for [`TARGET`] in the pinned toolchain.
fn ensure_target() -> Result<()> {
    if !cmd::on_path("rustup") {
        // A toolchain not managed by rustup: cargo itself will say if the target is missing.
        return Ok(());
    }
    let mut list = std::process::Command::new("rustup");
    list.current_dir(cmd::root())
        .args(["target", "list", "--installed"]);
    let installed = cmd::output(&mut list)?;
    if installed.lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the rustup target {TARGET}");
    let mut add = std::process::Command::new("rustup");
    add.current_dir(cmd::root()).args(["target", "add", TARGET]);
    if cmd::run(&mut add).is_err() {
        bail!(
            "the Rust target {TARGET} is missing and `rustup target add {TARGET}` failed; \
             run it by hand in {} (the toolchain is pinned in rust-toolchain.toml)",
            cmd::root().display()
        );
    }
    Ok(())
}
