//! Builds `tandem-client` (`client/`), the rich OS's client of the secure guest's service,
//! as a static aarch64 Linux binary for the initramfs.
//!
//! It is linked against musl by the toolchain's own `rust-lld` (`.cargo/config.toml`), so
//! the host needs no cross compiler, only the rustup target [`TARGET`].

use std::path::PathBuf;
use std::process::Command;

use crate::cmd::{self, bail, Error, Result};

/// Static Linux binaries for arm64.
pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// The client's package, and its binary's name.
const PACKAGE: &str = "tandem-client";

/// Builds the client (release profile, without debug info) and returns the binary's path.
pub fn build() -> Result<PathBuf> {
    ensure_target()?;
    let mut cargo = cmd::cargo();
    cargo
        .args(["build", "-p", PACKAGE, "--release", "--target", TARGET])
        // The workspace's release profile keeps debug info (for the hypervisor's gdb);
        // here it would make the binary five times larger in every initramfs.
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    eprintln!("xtask: {}", cmd::display(&cargo));
    cmd::run(&mut cargo).map_err(|e| Error::new(format!("building {PACKAGE} failed: {e}")))?;
    let bin = cmd::target_dir().join(TARGET).join("release").join(PACKAGE);
    if !bin.is_file() {
        bail!(
            "cargo succeeded but {} is missing: does client/ still build a binary named {PACKAGE}?",
            bin.display()
        );
    }
    Ok(bin)
}

/// Makes sure rustup has musl's standard library for [`TARGET`]: rust-toolchain.toml names
/// it, but a toolchain installed before it did lacks it.
fn ensure_target() -> Result<()> {
    if !cmd::on_path("rustup") {
        // A toolchain not managed by rustup: cargo itself says if the target is missing.
        return Ok(());
    }
    let mut list = Command::new("rustup");
    list.current_dir(cmd::root())
        .args(["target", "list", "--installed"]);
    if cmd::output(&mut list)?
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: installing the rustup target {TARGET}");
    let mut add = Command::new("rustup");
    add.current_dir(cmd::root()).args(["target", "add", TARGET]);
    if cmd::run(&mut add).is_err() {
        bail!(
            "the Rust target {TARGET} (for tandem-client) is missing and `rustup target add \
             {TARGET}` failed; run scripts/setup-host.sh or that command in {}",
            cmd::root().display()
        );
    }
    Ok(())
}
