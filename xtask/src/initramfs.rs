//! The rich OS's initramfs, `target/initramfs.cpio`: an uncompressed `newc` cpio archive
//! holding Debian's static busybox (`busybox-static:arm64`), a `/init` shell script and the
//! virtio/vsock kernel modules of Debian's arm64 kernel.
//!
//! The archive is written here (no host `cpio` needed), with every timestamp 0 so the same
//! inputs give the same bytes. It is rewritten only when its inputs change: a stamp file
//! beside it holds a hash of the busybox binary, the init script and the modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use object::elf::FileHeader64;
use object::read::elf::{FileHeader, SectionHeader};
use object::Endianness;

use crate::cmd::{self, bail, Error, Result};
use crate::debian;

/// The kernel modules later work needs, relative to `lib/modules/<release>/`. They are
/// loaded in dependency order (from each module's `depends=`), whatever the order here.
const MODULES: [&str; 8] = [
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/net/vmw_vsock/vsock.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];

/// Bumped when the archive layout changes, so old archives are rebuilt.
const FORMAT: &str = "tandem-initramfs 1";

/// The archive, `target/initramfs.cpio`.
pub fn output() -> PathBuf {
    cmd::target_dir().join("initramfs.cpio")
}

/// Builds `target/initramfs.cpio` if its inputs changed, fetching busybox once.
pub fn build() -> Result<PathBuf> {
    let kernel = debian::kernel()?;
    let busybox_root = debian::unpacked("busybox-static", || Ok("busybox-static".into()))?;
    let busybox_path = busybox_root.join("bin/busybox");
    let busybox = read(&busybox_path)?;
    if busybox.len() < 4 || &busybox[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF binary: remove {} and retry",
            busybox_path.display(),
            busybox_root.display()
        );
    }

    let modules_dir = kernel.root.join("lib/modules").join(&kernel.release);
    let mut modules = Vec::new();
    for rel in MODULES {
        let path = modules_dir.join(rel);
        let data = read(&path)?;
        let depends =
            module_depends(&data).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        modules.push(Module {
            rel: rel.to_string(),
            depends,
            data,
        });
    }
    let order = load_order(&modules)?;
    let script = init_script(&order);

    let mut stamp = Fnv::new();
    stamp.add(FORMAT.as_bytes());
    stamp.add(&busybox);
    stamp.add(script.as_bytes());
    stamp.add(kernel.release.as_bytes());
    for m in &modules {
        stamp.add(m.rel.as_bytes());
        stamp.add(&m.data);
    }
    let stamp = format!("{:016x}\n", stamp.0);
    let out = output();
    let stamp_file = out.with_extension("cpio.stamp");
    if out.is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(out);
    }

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, script.as_bytes());
    let release_dir = format!("lib/modules/{}", kernel.release);
    cpio.dir(&release_dir, 0o755);
    let mut made = BTreeSet::new();
    for m in &modules {
        // Each parent directory once, outermost first: the kernel creates no parents.
        let dirs = m.rel.match_indices('/').map(|(i, _)| &m.rel[..i]);
        for dir in dirs {
            if made.insert(dir) {
                cpio.dir(&format!("{release_dir}/{dir}"), 0o755);
            }
        }
        cpio.file(&format!("{release_dir}/{}", m.rel), 0o644, &m.data);
    }
    let bytes = cpio.finish();

    let partial = out.with_extension("cpio.partial");
    fs::write(&partial, &bytes)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", partial.display())))?;
    fs::rename(&partial, &out)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", out.display())))?;
    fs::write(&stamp_file, stamp)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", stamp_file.display())))?;
    eprintln!(
        "xtask: wrote {} ({} KiB: busybox, /init, {} modules for {})",
        cmd::pretty(&out),
        bytes.len() / 1024,
        modules.len(),
        kernel.release
    );
    Ok(out)
}

/// The `/init` script: busybox sh as PID 1. `modules` are paths under
/// `/lib/modules/<release>/`, in load order.
fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# Tandem's initramfs /init (generated by xtask/src/initramfs.rs): busybox sh as PID 1.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
mount -t sysfs sysfs /sys
# Debian's kernel has no DEVTMPFS_MOUNT.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
echo "tandem-init: user space up on $(nproc) CPUs"
echo "tandem-init: kernel $(uname -r)"
echo "tandem-init: $(grep MemTotal /proc/meminfo)"
"#,
    );
    s.push_str("MODULES=\"");
    s.push_str(&modules.join(" "));
    s.push_str("\"\n");
    s.push_str(
        r#"dir=/lib/modules/$(uname -r)
if [ -d "$dir" ]; then
    loaded=0
    for m in $MODULES; do
        if insmod "$dir/$m"; then
            loaded=$((loaded + 1))
        else
            echo "tandem-init: insmod $m failed"
        fi
    done
    echo "tandem-init: loaded $loaded modules"
else
    echo "tandem-init: no modules for kernel $(uname -r) in this initramfs"
fi
case " $(cat /proc/cmdline) " in
*" tandem.test=poweroff "*)
    echo "tandem-init: powering off"
    poweroff -f
    ;;
esac
# PID 1 must never exit: start another shell when one ends.
while :; do
    setsid cttyhack sh
    echo "tandem-init: the shell exited; starting another"
    sleep 1
done
"#,
    );
    s
}

struct Module {
    /// The path under `lib/modules/<release>/`.
    rel: String,
    /// Module names from `depends=`.
    depends: Vec<String>,
    data: Vec<u8>,
}

/// The module's name as `depends=` spells it: the file name without `.ko`.
fn module_name(rel: &str) -> &str {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.strip_suffix(".ko").unwrap_or(file)
}

/// The `depends=` list of a kernel module's `.modinfo` section.
fn module_depends(ko: &[u8]) -> std::result::Result<Vec<String>, String> {
    let header = FileHeader64::<Endianness>::parse(ko).map_err(|e| format!("not ELF64: {e}"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let sections = header.sections(endian, ko).map_err(|e| e.to_string())?;
    let (_, modinfo) = sections
        .section_by_name(endian, b".modinfo")
        .ok_or("no .modinfo section: not a kernel module")?;
    let data = modinfo.data(endian, ko).map_err(|e| e.to_string())?;
    Ok(modinfo_depends(data))
}

fn modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).replace('-', "_"))
        .collect()
}

/// The modules' paths ordered so each comes after what it depends on (stable otherwise).
fn load_order(modules: &[Module]) -> Result<Vec<String>> {
    let by_name: BTreeMap<String, &Module> = modules
        .iter()
        .map(|m| (module_name(&m.rel).replace('-', "_"), m))
        .collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<&str, bool> = BTreeMap::new(); // false: visiting, true: done
    fn visit<'a>(
        m: &'a Module,
        by_name: &BTreeMap<String, &'a Module>,
        state: &mut BTreeMap<&'a str, bool>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        match state.get(m.rel.as_str()) {
            Some(true) => return Ok(()),
            Some(false) => bail!("kernel modules: a dependency cycle through {}", m.rel),
            None => {}
        }
        state.insert(&m.rel, false);
        for dep in &m.depends {
            let Some(d) = by_name.get(dep) else {
                bail!(
                    "kernel module {} depends on {dep}, which the initramfs does not include; add it to MODULES in xtask/src/initramfs.rs",
                    m.rel
                );
            };
            visit(d, by_name, state, order)?;
        }
        state.insert(&m.rel, true);
        order.push(m.rel.clone());
        Ok(())
    }
    for m in modules {
        visit(m, &by_name, &mut state, &mut order)?;
    }
    Ok(order)
}

/// An uncompressed `newc` cpio archive (what the kernel's initramfs unpacker reads).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" {
            0
        } else {
            self.next_ino
        };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("cpio newc entries are below 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // with its NUL
            0,                     // check (unused by newc)
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Header plus name, and data, each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }
}

/// 64-bit FNV-1a over length-prefixed pieces: enough to notice a changed input.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, data: &[u8]) {
        for &b in (data.len() as u64).to_le_bytes().iter().chain(data) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, nlink, rdev, data) of one archive entry.
    type Entry = (String, u32, u32, (u32, u32), Vec<u8>);

    /// Walks a newc archive: its entries, trailer excluded.
    fn entries(mut bytes: &[u8]) -> Vec<Entry> {
        let total = bytes.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((total - bytes.len()) % 4, 0, "entry not 4-byte aligned");
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, nlink, size, namesize) = (field(1), field(4), field(6), field(11));
            let rdev = (field(9), field(10));
            let name_end = 110 + namesize as usize;
            assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_string();
            let data_at = name_end.next_multiple_of(4);
            let data = bytes[data_at..data_at + size as usize].to_vec();
            bytes = &bytes[(data_at + size as usize).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return out;
            }
            out.push((name, mode, nlink, rdev, data));
        }
    }

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::default();
        c.dir("bin", 0o755);
        c.file("bin/busybox", 0o755, b"12345");
        c.symlink("bin/sh", "busybox");
        c.char_device("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        // The first header, field by field.
        assert_eq!(
            std::str::from_utf8(&bytes[..110]).unwrap(),
            "070701\
             00000001000041ed000000000000000000000002000000000000000000000000\
             00000000000000000000000000000004\
             00000000"
        );
        assert_eq!(&bytes[110..114], b"bin\0");
        let e = entries(&bytes);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].0, "bin/busybox");
        assert_eq!(e[1].1, 0o100755);
        assert_eq!(e[1].4, b"12345");
        assert_eq!((e[2].1, e[2].4.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!((e[3].1, e[3].3), (0o020600, (5, 1)));
    }

    #[test]
    fn depends_from_modinfo() {
        let info = b"license=GPL\0depends=vmw_vsock_virtio_transport_common,vsock\0name=x\0";
        assert_eq!(
            modinfo_depends(info),
            ["vmw_vsock_virtio_transport_common", "vsock"]
        );
        assert!(modinfo_depends(b"depends=\0name=virtio_mmio\0").is_empty());
    }

    fn module(rel: &str, deps: &[&str]) -> Module {
        Module {
            rel: rel.into(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            data: Vec::new(),
        }
    }

    #[test]
    fn dependencies_load_first() {
        let mods = [
            module("kernel/a/virtio_net.ko", &["net_failover"]),
            module("kernel/b/net_failover.ko", &["failover"]),
            module("kernel/c/failover.ko", &[]),
            module("kernel/d/virtio_mmio.ko", &[]),
        ];
        assert_eq!(
            load_order(&mods).unwrap(),
            [
                "kernel/c/failover.ko",
                "kernel/b/net_failover.ko",
                "kernel/a/virtio_net.ko",
                "kernel/d/virtio_mmio.ko"
            ]
        );
        let missing = [module("kernel/a/virtio_net.ko", &["net_failover"])];
        assert!(load_order(&missing)
            .unwrap_err()
            .to_string()
            .contains("depends on net_failover"));
        let cycle = [module("a.ko", &["b"]), module("b.ko", &["a"])];
        assert!(load_order(&cycle)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
    }

    #[test]
    fn init_script_markers() {
        let s = init_script(&["kernel/x.ko".into(), "kernel/y.ko".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("mount -t devtmpfs devtmpfs /dev"));
        assert!(s.contains("tandem-init: user space up on $(nproc) CPUs"));
        assert!(s.contains("MODULES=\"kernel/x.ko kernel/y.ko\"\n"));
        assert!(s.contains("tandem.test=poweroff"));
        assert!(s.contains("poweroff -f"));
    }
}
