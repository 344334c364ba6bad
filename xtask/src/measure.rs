//! `cargo xtask measure [GUEST]`: builds the guests as `cargo xtask build` does and prints
//! the SHA-256 of `target/guests/<GUEST>.bin`, the digest the hypervisor puts in the
//! guest's attestation certificate, so `tandem-client attest --expect` can be given it.

use std::fs;

use clap::Args;
use tandem_proto::attest::{sha256, Digest};

use crate::cmd::{self, bail, Error, Result};
use crate::guests;

#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// The guest to measure: its Image, `target/guests/<GUEST>.bin`.
    #[arg(default_value = "secure")]
    pub guest: String,
    /// Build and measure the debug profile of the guests instead of release.
    #[arg(long)]
    pub debug: bool,
}

/// Builds the guests and prints the digest of one, alone on a line of standard output
/// (cargo's and xtask's progress go to standard error).
pub fn measure(args: &MeasureArgs) -> Result<()> {
    if args.guest.is_empty() || args.guest.contains(['/', '.']) {
        bail!("{:?} is not a guest's name", args.guest);
    }
    guests::build(!args.debug)?;
    let image = guests::output_dir().join(format!("{}.bin", args.guest));
    let bytes = fs::read(&image).map_err(|e| {
        Error::new(format!(
            "cannot read {} ({e}): no guest {:?} was built (a guest is a directory of \
             guests/ with src/main.rs; the secure guest's test build is secure-test)",
            cmd::pretty(&image),
            args.guest
        ))
    })?;
    eprintln!(
        "xtask: SHA-256 of {} ({} bytes), as the hypervisor measures it:",
        cmd::pretty(&image),
        bytes.len()
    );
    println!("{}", hex(&sha256(&bytes)));
    Ok(())
}

/// A digest as 64 lower-case hex digits.
fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_in_lower_case_hex() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
