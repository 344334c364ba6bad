//! Debian arm64 packages, downloaded once with `apt-get download` and unpacked under `target/debian/`.
//!
//! Each package is unpacked into `target/debian/<name>/` and marked complete with a
//! `.tandem-complete` file naming the exact package that was fetched. A complete directory
//! is reused as it is, without asking apt anything, so later runs work offline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, bail, Error, Result};

/// The marker written after a package was unpacked completely.
const COMPLETE: &str = ".tandem-complete";

/// The cache directory, `target/debian/`.
pub fn cache_dir() -> PathBuf {
    cmd::target_dir().join("debian")
}

/// Debian's arm64 kernel package, unpacked.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The uncompressed arm64 `Image` (Debian ships it as `boot/vmlinuz-<version>`).
    pub image: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-arm64`.
    pub release: String,
    /// Where the package was unpacked.
    pub root: PathBuf,
}

impl Kernel {
    /// The Raspberry Pi 4 Model B device tree shipped with the kernel.
    pub fn rpi4_dtb(&self) -> PathBuf {
        self.root
            .join("usr/lib")
            .join(format!("linux-image-{}", self.release))
            .join("broadcom/bcm2711-rpi-4-b.dtb")
    }
}

/// Returns Debian's arm64 kernel (the package `linux-image-arm64` depends on), fetching it once.
pub fn kernel() -> Result<Kernel> {
    let root = unpacked("linux-image-arm64", || {
        let deps = apt_cache(&["depends", "linux-image-arm64:arm64"])?;
        kernel_package_from_depends(&deps).ok_or_else(|| {
            Error::new(format!(
                "cannot find the kernel package in `apt-cache depends linux-image-arm64:arm64`:\n{deps}"
            ))
        })
    })?;
    let boot = root.join("boot");
    let image = read_dir(&boot)?
        .into_iter()
        .find(|p| file_name(p).starts_with("vmlinuz-"))
        .ok_or_else(|| {
            Error::new(format!(
                "no boot/vmlinuz-* in {}: remove {} and retry",
                root.display(),
                root.display()
            ))
        })?;
    let release = file_name(&image)["vmlinuz-".len()..].to_string();
    let header = fs::read(&image)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", image.display())))?;
    if header.len() < 64 || &header[56..60] != b"ARM\x64" {
        bail!(
            "{} is not an uncompressed arm64 Image (Debian's arm64 kernels are); remove {} and retry",
            image.display(),
            root.display()
        );
    }
    let kernel = Kernel {
        image,
        release,
        root,
    };
    let dtb = kernel.rpi4_dtb();
    if !dtb.is_file() {
        bail!("the kernel package has no {}", dtb.display());
    }
    Ok(kernel)
}

/// Debian's Xen for arm64, the peer hypervisor of `cargo xtask bench`. Pinned to 4.17, the
/// release the benchmarks compare against, rather than whatever `xen-hypervisor-arm64`
/// would pull in.
const XEN_PACKAGE: &str = "xen-hypervisor-4.17-arm64";
/// The hypervisor's Image in that package (`boot/xen-4.17-arm64.efi` is the same Image for
/// UEFI loaders).
const XEN_IMAGE: &str = "boot/xen-4.17-arm64";

/// Returns Xen 4.17's arm64 Image from Debian's `xen-hypervisor-4.17-arm64`, fetching the
/// package once: an arm64 `Image` QEMU's `-kernel` starts at EL2.
pub fn xen() -> Result<PathBuf> {
    let root = unpacked(XEN_PACKAGE, || Ok(XEN_PACKAGE.into()))?;
    let image = root.join(XEN_IMAGE);
    let header = fs::read(&image).map_err(|e| {
        Error::new(format!(
            "cannot read {}: {e}; remove {} and retry",
            image.display(),
            root.display()
        ))
    })?;
    if header.len() < 64 || &header[56..60] != b"ARM\x64" {
        bail!(
            "{} is not an arm64 Image (Debian's Xen for arm64 is one); remove {} and retry",
            image.display(),
            root.display()
        );
    }
    Ok(image)
}

/// Picks `linux-image-<abi>-arm64` out of `apt-cache depends linux-image-arm64:arm64` output.
fn kernel_package_from_depends(deps: &str) -> Option<String> {
    deps.lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(|name| name.trim().trim_start_matches('<').trim_end_matches('>'))
        .map(|name| name.strip_suffix(":arm64").unwrap_or(name))
        .find(|name| {
            name.starts_with("linux-image-")
                && name.ends_with("-arm64")
                && name["linux-image-".len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .map(str::to_string)
}

/// Returns `target/debian/<name>/`, unpacking the arm64 package that `resolve` names into it
/// if it is not there yet. `resolve` runs only when a download is needed.
pub fn unpacked(name: &str, resolve: impl FnOnce() -> Result<String>) -> Result<PathBuf> {
    let cache = cache_dir();
    let dest = cache.join(name);
    if dest.join(COMPLETE).is_file() {
        return Ok(dest);
    }
    ensure_arm64_apt(name)?;
    let package = resolve()?;
    fs::create_dir_all(&cache)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", cache.display())))?;
    eprintln!(
        "xtask: downloading {package}:arm64 into {}",
        cmd::pretty(&cache)
    );
    // Keep only our own download: an older .deb of the same package may linger.
    let deb_prefix = format!("{package}_");
    remove_matching(&cache, &deb_prefix)?;
    let mut download = Command::new("apt-get");
    download.current_dir(&cache).arg("download");
    if cmd::is_root() {
        // apt's sandbox user cannot write into target/; root downloads directly (no warning).
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download.arg(format!("{package}:arm64"));
    cmd::run(&mut download).map_err(|e| {
        Error::new(format!(
            "{e}\nDownloading from Debian's archive failed; check the network and `apt-get update`"
        ))
    })?;
    let deb = read_dir(&cache)?
        .into_iter()
        .find(|p| {
            let n = file_name(p);
            n.starts_with(&deb_prefix) && n.ends_with(".deb")
        })
        .ok_or_else(|| {
            Error::new(format!(
                "apt-get download left no {package}_*.deb in {}",
                cache.display()
            ))
        })?;
    let partial = cache.join(format!("{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .map_err(|e| Error::new(format!("cannot remove {}: {e}", partial.display())))?;
    }
    let mut extract = Command::new("dpkg-deb");
    extract.arg("-x").arg(&deb).arg(&partial);
    cmd::run(&mut extract)?;
    fs::write(partial.join(COMPLETE), format!("{package}\n"))
        .map_err(|e| Error::new(format!("cannot write to {}: {e}", partial.display())))?;
    if dest.exists() {
        fs::remove_dir_all(&dest)
            .map_err(|e| Error::new(format!("cannot remove {}: {e}", dest.display())))?;
    }
    fs::rename(&partial, &dest).map_err(|e| {
        Error::new(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            dest.display()
        ))
    })?;
    // The unpacked tree is the cache; the .deb itself is not needed again.
    fs::remove_file(&deb)
        .map_err(|e| Error::new(format!("cannot remove {}: {e}", deb.display())))?;
    Ok(dest)
}

/// Makes sure apt knows arm64 packages: adds the architecture and updates the lists when
/// needed (as root), or says which commands to run.
fn ensure_arm64_apt(wanted: &str) -> Result<()> {
    for tool in ["apt-get", "apt-cache", "dpkg", "dpkg-deb"] {
        if !cmd::on_path(tool) {
            bail!("`{tool}` is missing: fetching Debian packages needs a Debian or Ubuntu host");
        }
    }
    let foreign = cmd::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    let has_arm64 = foreign.split_whitespace().any(|a| a == "arm64");
    if has_arm64 && apt_knows(wanted) {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "apt does not know the arm64 package {wanted}. As root, run:\n  \
             dpkg --add-architecture arm64 && apt-get update\nthen retry."
        );
    }
    if !has_arm64 {
        eprintln!("xtask: dpkg --add-architecture arm64");
        cmd::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    }
    eprintln!("xtask: apt-get update");
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    if !apt_knows(wanted) {
        bail!("apt still does not know {wanted}:arm64 after `apt-get update`: check /etc/apt/sources.list");
    }
    Ok(())
}

/// Whether apt has a candidate version of the arm64 package `name`.
fn apt_knows(name: &str) -> bool {
    apt_cache(&["policy", &format!("{name}:arm64")]).is_ok_and(|policy| {
        policy
            .lines()
            .filter_map(|line| line.trim().strip_prefix("Candidate:"))
            .any(|candidate| candidate.trim() != "(none)")
    })
}

fn apt_cache(args: &[&str]) -> Result<String> {
    cmd::output(Command::new("apt-cache").args(args))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::new(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

fn remove_matching(dir: &Path, prefix: &str) -> Result<()> {
    for path in read_dir(dir)? {
        if file_name(&path).starts_with(prefix) && path.is_file() {
            fs::remove_file(&path)
                .map_err(|e| Error::new(format!("cannot remove {}: {e}", path.display())))?;
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_kernel_package() {
        let deps = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            kernel_package_from_depends(deps).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        let none = "linux-image-arm64:arm64\n  Depends: <linux-base>\n";
        assert_eq!(kernel_package_from_depends(none), None);
    }

    #[test]
    fn rpi4_dtb_path() {
        let k = Kernel {
            image: PathBuf::from("/c/boot/vmlinuz-6.1.0-56-arm64"),
            release: "6.1.0-56-arm64".into(),
            root: PathBuf::from("/c"),
        };
        assert_eq!(
            k.rpi4_dtb(),
            PathBuf::from("/c/usr/lib/linux-image-6.1.0-56-arm64/broadcom/bcm2711-rpi-4-b.dtb")
        );
    }
}
