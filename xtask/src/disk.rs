//! The rich OS's disk, `target/disk.img`: a raw ext4 image (made with e2fsprogs' `mke2fs -d`)
//! that `cargo xtask run` attaches as a virtio-blk device, holding a known file the
//! initramfs reads back.
//!
//! The image is rewritten only when its inputs change: a stamp file beside it holds a hash
//! of the files it carries, its size and the `mke2fs` version. QEMU opens it with
//! `snapshot=on`, so a VM's writes never reach the cached file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, bail, Error, Result};
use crate::initramfs::Fnv;

/// The file on the disk that the initramfs prints (`tandem.test=checks`), and its text.
pub const KNOWN_FILE: (&str, &str) = ("tandem.txt", "tandem disk: hello from ext4 on virtio-blk\n");

/// The image size: ext4 with a journal needs a few MiB; the rest is room to play in.
const SIZE_MIB: u64 = 32;

/// Fixed so that the same inputs give the same bytes (the UUID, the directory hash seed and
/// every timestamp; e2fsprogs reads `E2FSPROGS_FAKE_TIME`).
const UUID: &str = "7a6e6465-6d00-4e00-8000-000000000001";

/// Bumped when the image layout changes, so old images are rebuilt.
const FORMAT: &str = "tandem-disk 1";

/// The files on the disk: (path inside the file system, contents).
fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        KNOWN_FILE,
        (
            "README",
            "This ext4 file system is target/disk.img, made by `cargo xtask run` \
             (xtask/src/disk.rs)\nand attached to the rich OS as a virtio-blk disk. \
             Writes go to a temporary overlay\n(QEMU snapshot=on) and are gone when QEMU exits.\n",
        ),
    ]
}

/// The image, `target/disk.img`.
pub fn output() -> PathBuf {
    cmd::target_dir().join("disk.img")
}

/// Finds e2fsprogs' `mke2fs`: Debian keeps it in /sbin, which a user's PATH may lack.
pub fn mke2fs() -> Option<PathBuf> {
    if cmd::on_path("mke2fs") {
        return Some(PathBuf::from("mke2fs"));
    }
    ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Builds `target/disk.img` if its inputs changed.
pub fn build() -> Result<PathBuf> {
    let Some(mke2fs) = mke2fs() else {
        bail!("mke2fs is missing: install e2fsprogs (scripts/setup-host.sh does)");
    };
    let version = Command::new(&mke2fs)
        .arg("-V")
        .output()
        .map_err(|e| Error::new(format!("cannot run {}: {e}", mke2fs.display())))?;
    let mut stamp = Fnv::new();
    stamp.add(FORMAT.as_bytes());
    stamp.add(&version.stderr);
    stamp.add(&version.stdout);
    stamp.add(&SIZE_MIB.to_le_bytes());
    for (path, contents) in files() {
        stamp.add(path.as_bytes());
        stamp.add(contents.as_bytes());
    }
    let stamp = format!("{:016x}\n", stamp.0);
    let out = output();
    let stamp_file = out.with_extension("img.stamp");
    if out.is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(out);
    }

    // Per-process names: two xtask runs may build at once; the rename is atomic.
    let pid = std::process::id();
    let root = cmd::target_dir().join(format!("disk-root.{pid}"));
    let partial = out.with_extension(format!("img.{pid}.partial"));
    let result = make_image(&mke2fs, &root, &partial);
    let _ = fs::remove_dir_all(&root);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, &out)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    fs::write(&stamp_file, stamp)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", stamp_file.display())))?;
    eprintln!(
        "xtask: wrote {} ({SIZE_MIB} MiB ext4 with /{})",
        cmd::pretty(&out),
        KNOWN_FILE.0
    );
    Ok(out)
}

fn make_image(mke2fs: &Path, root: &Path, image: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", root.display())))?;
    for (path, contents) in files() {
        let file = root.join(path);
        fs::write(&file, contents)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", file.display())))?;
    }
    let _ = fs::remove_file(image);
    let mut command = Command::new(mke2fs);
    command
        .args(["-q", "-F", "-t", "ext4", "-L", "tandem", "-U", UUID, "-E"])
        .arg(format!("root_owner=0:0,hash_seed={UUID}"))
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg(format!("{SIZE_MIB}M"))
        .env("E2FSPROGS_FAKE_TIME", "1")
        .env("SOURCE_DATE_EPOCH", "1");
    cmd::output(&mut command).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_file_is_one_line() {
        let (name, text) = KNOWN_FILE;
        assert!(!name.contains('/'));
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with('\n'));
        assert!(files().iter().any(|(n, _)| *n == name));
    }
}
