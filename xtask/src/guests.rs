//! Builds the test guests in `guests/` and writes each as an arm64 Image,
//! `target/guests/<name>.bin`, next to its ELF, `target/guests/<name>.elf`.
//!
//! `guests/` is a cargo workspace of its own, built only for [`TARGET`]. A guest is a member
//! directory with a `src/main.rs` whose binary has the directory's name; `rt/` is their
//! runtime library. The ELF is turned into an Image exactly like the hypervisor's.

use std::fs;
use std::path::{Path, PathBuf};

use crate::build::TARGET;
use crate::cmd::{self, bail, Error, Result};
use crate::image;

/// Image header flags every guest must carry: little-endian, 4 KiB pages, anywhere in memory.
const IMAGE_FLAGS: u64 = 0xa;

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

/// Builds every guest (release profile unless `release` is false) and returns the paths of
/// the Images written.
pub fn build(release: bool) -> Result<Vec<PathBuf>> {
    let source = source_dir();
    let guest_target = source.join("target");
    let mut cargo = cmd::cargo();
    // The guests' own target directory, even when CARGO_TARGET_DIR points elsewhere.
    cargo
        .current_dir(&source)
        .args(["build", "--target", TARGET, "--target-dir"])
        .arg(&guest_target);
    if release {
        cargo.arg("--release");
    }
    eprintln!("xtask: (in guests/) {}", cmd::display(&cargo));
    cmd::run(&mut cargo)
        .map_err(|e| Error::new(format!("building the test guests failed: {e}")))?;

    let profile = if release { "release" } else { "debug" };
    let built = guest_target.join(TARGET).join(profile);
    let out = output_dir();
    fs::create_dir_all(&out)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", out.display())))?;
    let mut images = Vec::new();
    for name in names(&source)? {
        let elf_path = built.join(&name);
        let elf = fs::read(&elf_path).map_err(|e| {
            Error::new(format!(
                "cargo succeeded but {} cannot be read ({e}): is the binary of guests/{name} named `{name}`?",
                elf_path.display()
            ))
        })?;
        let flat = image::elf_to_flat(&elf)
            .map_err(|e| Error::new(format!("{}: {e}", elf_path.display())))?;
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
        images.push(bin);
    }
    if images.is_empty() {
        bail!(
            "no guest found in {} (a guest is a directory with src/main.rs)",
            source.display()
        );
    }
    Ok(images)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    cmd::write_atomically(path, bytes)
}
