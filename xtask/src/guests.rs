//! Builds the test guests in `guests/` and writes each as an arm64 Image,
//! `target/guests/<name>.bin`, next to its ELF, `target/guests/<name>.elf`.
//!
//! `guests/` is a cargo workspace of its own, built only for [`TARGET`]. A guest is a member
//! directory with a `src/main.rs` whose binary has the directory's name; `rt/` is their
//! runtime library. The ELF is turned into an Image exactly like the hypervisor's.
//!
//! The secure guest embeds a 32-byte device key, read at build time from the file
//! [`secure_key_path`] names (`TANDEM_SECURE_KEY_FILE` tells its build script where). It
//! is also built a second time with its `test-requests` feature, as
//! `target/guests/secure-test.bin`, in a target directory of its own so that neither build
//! overwrites the other's binary.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::build::TARGET;
use crate::cmd::{self, bail, Error, Result};
use crate::image;

/// Image header flags every guest must carry: little-endian, 4 KiB pages, anywhere in memory.
const IMAGE_FLAGS: u64 = 0xa;
/// The guest that holds the device key.
const SECURE: &str = "secure";
/// The secure guest built with its test requests.
const SECURE_TEST: &str = "secure-test";
/// Names the vendor's key file; without it xtask keeps its own in the target directory.
const KEY_VAR: &str = "TANDEM_SECURE_KEY";
/// Tells the secure guest's build script where the key is.
const KEY_FILE_VAR: &str = "TANDEM_SECURE_KEY_FILE";
/// Bytes of the device key.
const KEY_LEN: usize = 32;

/// The guests' source workspace.
pub fn source_dir() -> PathBuf {
    cmd::root().join("guests")
}

/// Where the guest Images and ELFs are written.
pub fn output_dir() -> PathBuf {
    cmd::target_dir().join("guests")
}

/// The guests: member directories with a `src/main.rs`, sorted by name.
fn names(source: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(source)
        .map_err(|e| Error::new(format!("cannot list {}: {e}", source.display())))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::new(format!("cannot list {}: {e}", source.display())))?;
        if entry.path().join("src/main.rs").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The secure guest's device key file: the one `TANDEM_SECURE_KEY` names (the vendor's),
/// else `target/secure.key`, which [`build`] creates once and keeps, so tags stay the same
/// from one build to the next.
pub fn secure_key_path() -> PathBuf {
    match std::env::var_os(KEY_VAR) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                path
            } else {
                std::env::current_dir().unwrap_or_default().join(path)
            }
        }
        _ => cmd::target_dir().join("secure.key"),
    }
}

/// Makes sure the key file exists and holds [`KEY_LEN`] bytes (creating xtask's own from
/// /dev/urandom, readable by its owner only, the first time); returns its absolute path.
fn ensure_secure_key() -> Result<PathBuf> {
    let path = secure_key_path();
    let vendor = std::env::var_os(KEY_VAR).is_some_and(|p| !p.is_empty());
    if !vendor && !path.exists() {
        create_key(&path)?;
    }
    let key = fs::read(&path).map_err(|e| {
        Error::new(format!(
            "cannot read the secure guest's key {} ({}): {e}",
            path.display(),
            if vendor { KEY_VAR } else { "made by xtask" }
        ))
    })?;
    if key.len() != KEY_LEN {
        if vendor {
            bail!(
                "{} ({KEY_VAR}) holds {} bytes; the secure guest's key must be exactly {KEY_LEN}",
                path.display(),
                key.len()
            );
        }
        bail!(
            "{} holds {} bytes, not {KEY_LEN}: delete it and xtask makes a new key \
             (tags made with the old one no longer verify)",
            path.display(),
            key.len()
        );
    }
    path.canonicalize()
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// Writes a new random key to `path`, mode 0600.
fn create_key(path: &Path) -> Result<()> {
    let mut key = [0u8; KEY_LEN];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| {
            Error::new(format!(
                "cannot read /dev/urandom for the secure guest's key: {e}"
            ))
        })?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => file
            .write_all(&key)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?,
        // Another xtask made it meanwhile: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => bail!("cannot create {}: {e}", path.display()),
    }
    eprintln!(
        "xtask: made the secure guest's device key {} (kept for later builds; \
         set {KEY_VAR} to use a vendor key instead)",
        cmd::pretty(path)
    );
    Ok(())
}

/// Builds every guest (release profile unless `release` is false), and the secure guest
/// once more with its test requests; returns the paths of the Images written.
pub fn build(release: bool) -> Result<Vec<PathBuf>> {
    let source = source_dir();
    let guest_target = source.join("target");
    let key = ensure_secure_key()?;
    let mut cargo = cmd::cargo();
    // The guests' own target directory, even when CARGO_TARGET_DIR points elsewhere.
    cargo
        .current_dir(&source)
        .env(KEY_FILE_VAR, &key)
        .args(["build", "--target", TARGET, "--target-dir"])
        .arg(&guest_target);
    if release {
        cargo.arg("--release");
    }
    eprintln!("xtask: (in guests/) {}", cmd::display(&cargo));
    cmd::run(&mut cargo)
        .map_err(|e| Error::new(format!("building the test guests failed: {e}")))?;

    // The test build of the secure guest, in its own target directory.
    let test_target = guest_target.join(SECURE_TEST);
    let mut cargo = cmd::cargo();
    cargo
        .current_dir(&source)
        .env(KEY_FILE_VAR, &key)
        .args(["build", "-p", SECURE, "--features", "test-requests"])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&test_target);
    if release {
        cargo.arg("--release");
    }
    eprintln!("xtask: (in guests/) {}", cmd::display(&cargo));
    cmd::run(&mut cargo).map_err(|e| {
        Error::new(format!(
            "building the secure guest's test variant failed: {e}"
        ))
    })?;

    let profile = if release { "release" } else { "debug" };
    let built = guest_target.join(TARGET).join(profile);
    let out = output_dir();
    fs::create_dir_all(&out)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", out.display())))?;
    let mut images = Vec::new();
    for name in names(&source)? {
        images.push(install(&built.join(&name), &name, &out)?);
    }
    if images.is_empty() {
        bail!(
            "no guest found in {} (a guest is a directory with src/main.rs)",
            source.display()
        );
    }
    let test_elf = test_target.join(TARGET).join(profile).join(SECURE);
    images.push(install(&test_elf, SECURE_TEST, &out)?);
    Ok(images)
}

/// Checks the guest ELF at `elf_path`, converts it, and writes `<name>.elf` and
/// `<name>.bin` to `out`; returns the Image's path.
fn install(elf_path: &Path, name: &str, out: &Path) -> Result<PathBuf> {
    let elf = fs::read(elf_path).map_err(|e| {
        Error::new(format!(
            "cargo succeeded but {} cannot be read ({e}): is the binary of each guests/<dir> named after its directory?",
            elf_path.display()
        ))
    })?;
    let flat =
        image::elf_to_flat(&elf).map_err(|e| Error::new(format!("{}: {e}", elf_path.display())))?;
    let header = image::parse_header(&flat)
        .map_err(|e| Error::new(format!("{}: {e}", elf_path.display())))?;
    if header.text_offset != 0 || header.flags != IMAGE_FLAGS {
        bail!(
            "{}: Image header has text_offset {:#x} and flags {:#x}, want 0 and {IMAGE_FLAGS:#x}: \
             check guests/rt/src/entry.rs",
            elf_path.display(),
            header.text_offset,
            header.flags
        );
    }
    if header.image_size < flat.len() as u64 {
        bail!(
            "{}: Image header says image_size {} but the file is {} bytes: check guests/rt/linker/guest.ld",
            elf_path.display(),
            header.image_size,
            flat.len()
        );
    }
    let bin = out.join(format!("{name}.bin"));
    write(&out.join(format!("{name}.elf")), &elf)?;
    write(&bin, &flat)?;
    eprintln!(
        "xtask: {} {} bytes (image_size {} bytes with .bss, stacks and heap)",
        cmd::pretty(&bin),
        flat.len(),
        header.image_size
    );
    Ok(bin)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    cmd::write_atomically(path, bytes)
}
