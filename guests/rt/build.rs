//! Puts the guests' linker script on the linker's search path: every guest binary links
//! with `-Tguest.ld` (guests/.cargo/config.toml), wherever cargo builds it.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = manifest.join("linker/guest.ld");
    fs::copy(&script, out.join("guest.ld"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", script.display()));
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={}", script.display());
}
