//! The EL2 image. Everything lives in the `hyp` library; this binary only links it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use hyp as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hyp runs at EL2 on aarch64: build it with `cargo xtask build`");
    std::process::exit(1);
}
