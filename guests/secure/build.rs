//! Embeds the device key: copies the 32-byte file named by `TANDEM_SECURE_KEY_FILE` to
//! `$OUT_DIR/key.bin`, which `src/main.rs` includes. `cargo xtask build` provides the file
//! (the vendor's, or one it generates once and keeps), so the key exists only in this
//! guest's image, never in the source tree.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::exit;

/// The variable naming the key file.
const KEY_FILE_VAR: &str = "TANDEM_SECURE_KEY_FILE";
/// Bytes of the key.
const KEY_LEN: usize = 32;

fn main() {
    println!("cargo:rerun-if-env-changed={KEY_FILE_VAR}");
    let Some(path) = env::var_os(KEY_FILE_VAR).filter(|p| !p.is_empty()) else {
        fail(&format!("{KEY_FILE_VAR} is not set"));
    };
    let path = PathBuf::from(path);
    println!("cargo:rerun-if-changed={}", path.display());
    let key = match fs::read(&path) {
        Ok(key) => key,
        Err(e) => fail(&format!(
            "cannot read {} ({KEY_FILE_VAR}): {e}",
            path.display()
        )),
    };
    if key.len() != KEY_LEN {
        fail(&format!(
            "{} ({KEY_FILE_VAR}) holds {} bytes; the key must be exactly {KEY_LEN}",
            path.display(),
            key.len()
        ));
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let copy = out.join("key.bin");
    if let Err(e) = write_private(&copy, &key) {
        fail(&format!("cannot write {}: {e}", copy.display()));
    }
}

/// Writes `bytes` to `path`, readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // The mode applies only to a new file: narrow an old one first.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
    std::io::Write::write_all(&mut options.open(path)?, bytes)
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: the secure guest needs its device key: {why}.\n\
         Build the guests with `cargo xtask build`, which provides the key \
         (TANDEM_SECURE_KEY names the vendor's key file; without it xtask keeps one in \
         target/secure.key)."
    );
    exit(1)
}
