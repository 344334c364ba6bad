//! Xen 4.17 booting Linux as its dom0 on QEMU virt: the peer hypervisor of `cargo xtask
//! bench`, started the way Xen's ImageBuilder starts it.
//!
//! QEMU's `-kernel` starts Debian's Xen Image at EL2 ([`crate::debian::xen`]); the DT it
//! gets is the machine's own (dumped by QEMU) with Xen's and dom0's command lines added to
//! `/chosen`, and a `multiboot,kernel` and a `multiboot,ramdisk` module node whose `reg` is
//! where `-device loader` puts dom0's kernel and initramfs. The machine is the one Tandem's
//! default layout runs on (`configs/virt.dtsi`: 4 CPUs, 2 GiB, GICv3), dom0 gets what Linux's
//! VM gets there (3 vCPUs, 1 GiB), and Linux gets the same virtio disk and network device.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use platform::MemRange;

use crate::cmd::{self, bail, Error, Result};
use crate::qemu::{self, Board, Firmware, Gic, Machine, MemSize};
use crate::vmconfig;

/// The machine Xen runs on: the one of Tandem's default layout, so that both hypervisors
/// have the same CPUs and RAM to manage.
const MACHINE: Machine = Machine {
    board: Board::Virt,
    gic: Gic::V3,
    cpus: 4,
    mem: MemSize(2048),
    firmware: Firmware::Direct,
    smmu: false,
};

/// Where `-device loader` puts dom0's kernel and initramfs: where `configs/virt.dtsi` puts
/// Linux's, which leaves 64 MiB for the kernel and keeps the initramfs below
/// [`DOM0_RAMDISK_END`], clear of the top of RAM, where Xen relocates itself.
const DOM0_KERNEL_AT: u64 = 0xa000_0000;
const DOM0_RAMDISK_AT: u64 = 0xa400_0000;
const DOM0_RAMDISK_END: u64 = 0xb000_0000;

/// Xen's command line:
/// - its console on the PL011 (which Xen then hides from dom0);
/// - `bootscrub=0`: no scrubbing of all free memory at boot, 0.37 s of guest time spent on
///   neither dom0 nor anything Tandem does (QEMU-FACTS.md);
/// - dom0 as large as Linux's VM in `configs/virt.dtsi`: 1 GiB, 3 vCPUs;
/// - `console_timestamps=raw`: every console line starts with the physical counter
///   (CNTPCT_EL0) in hex, which under `-icount` is guest time since QEMU started the machine.
///   `boot` stamps would count from Xen's timer set-up instead, some 14 ms after its entry.
pub const XEN_BOOTARGS: &str = "console=dtuart dtuart=/pl011@9000000 bootscrub=0 \
                                dom0_mem=1G dom0_max_vcpus=3 console_timestamps=raw";

/// dom0's console: Xen keeps the PL011, and dom0 writes its console through hypercalls.
pub const DOM0_CONSOLE: &str = "console=hvc0";

/// What dom0 boots.
pub struct Dom0<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub bootargs: &'a str,
}

/// The QEMU command that boots `xen` with `dom0` and the rich OS's `disk`, without timing
/// options. Its DT is written to `work/` first: `host.dtb` as QEMU makes it for the
/// machine, `host+xen.dts` and `host+xen.dtb` with Xen's `/chosen`.
pub fn command(xen: &Path, dom0: &Dom0<'_>, disk: &Path, work: &Path) -> Result<Command> {
    std::fs::create_dir_all(work)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", work.display())))?;
    let kernel = module(dom0.kernel, DOM0_KERNEL_AT, DOM0_RAMDISK_AT)?;
    let ramdisk = module(dom0.initrd, DOM0_RAMDISK_AT, DOM0_RAMDISK_END)?;

    let host = work.join("host.dtb");
    vmconfig::base_dtb(&MACHINE, &host)?;
    let mut dts = cmd::output(
        Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dts"])
            .arg(&host),
    )?;
    dts.push_str(&chosen(XEN_BOOTARGS, dom0.bootargs, kernel, ramdisk)?);
    let source = work.join("host+xen.dts");
    let dtb = work.join("host+xen.dtb");
    std::fs::write(&source, &dts)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", source.display())))?;
    vmconfig::compile(&source, &dtb, work)?;

    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-M", "virt,virtualization=on,gic-version=3", "-cpu", "max"])
        .args([
            "-smp",
            &MACHINE.cpus.to_string(),
            "-m",
            &MACHINE.mem.to_string(),
        ])
        .arg("-dtb")
        .arg(&dtb)
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(xen);
    for (file, range) in [(dom0.kernel, kernel), (dom0.initrd, ramdisk)] {
        qemu.args([
            "-device",
            &format!(
                "loader,file={},addr={:#x},force-raw=on",
                file.display(),
                range.base
            ),
        ]);
    }
    qemu.args(qemu::device_args(disk, false));
    Ok(qemu)
}

/// Where `file` goes: at `at`, and it must end by `end`.
fn module(file: &Path, at: u64, end: u64) -> Result<MemRange> {
    let size = std::fs::metadata(file)
        .map_err(|e| Error::new(format!("{}: {e}", file.display())))?
        .len();
    if size > end - at {
        bail!(
            "{} ({} MiB) does not fit in the {} MiB that Xen's dom0 layout has for it at {at:#x}",
            file.display(),
            size.div_ceil(1 << 20),
            (end - at) >> 20
        );
    }
    Ok(MemRange { base: at, size })
}

/// The DTS fragment merged after the machine's DT: Xen's and dom0's command lines and
/// dom0's boot modules, in `/chosen` (properties first: dtc refuses a property after a
/// subnode).
fn chosen(
    xen_bootargs: &str,
    dom0_bootargs: &str,
    kernel: MemRange,
    ramdisk: MemRange,
) -> Result<String> {
    let cells = (2, 2);
    let mut s = String::from(
        "\n// Added by cargo xtask bench (xtask/src/xen.rs): Xen's and dom0's command lines, and\n\
         // dom0's kernel and initramfs where -device loader puts them.\n/ {\n    chosen {\n",
    );
    let _ = writeln!(s, "        #address-cells = <2>;");
    let _ = writeln!(s, "        #size-cells = <2>;");
    let _ = writeln!(
        s,
        "        xen,xen-bootargs = {};",
        vmconfig::dts_string(xen_bootargs)
    );
    let _ = writeln!(
        s,
        "        xen,dom0-bootargs = {};",
        vmconfig::dts_string(dom0_bootargs)
    );
    for (kind, range) in [("kernel", kernel), ("ramdisk", ramdisk)] {
        let _ = writeln!(s, "        module@{:x} {{", range.base);
        let _ = writeln!(
            s,
            "            compatible = \"multiboot,{kind}\", \"multiboot,module\";"
        );
        let _ = writeln!(
            s,
            "            reg = <{}>;",
            vmconfig::reg_cells(&range, cells)?
        );
        let _ = writeln!(s, "        }};");
    }
    s.push_str("    };\n};\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_names_the_command_lines_and_the_modules() {
        let kernel = MemRange {
            base: DOM0_KERNEL_AT,
            size: 0x1f6_e0c0,
        };
        let ramdisk = MemRange {
            base: DOM0_RAMDISK_AT,
            size: 0x49_5e08,
        };
        let s = chosen(XEN_BOOTARGS, "console=hvc0 earlycon", kernel, ramdisk).unwrap();
        assert!(
            s.contains(
                "        xen,xen-bootargs = \"console=dtuart dtuart=/pl011@9000000 bootscrub=0 \
             dom0_mem=1G dom0_max_vcpus=3 console_timestamps=raw\";\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("        xen,dom0-bootargs = \"console=hvc0 earlycon\";\n"),
            "{s}"
        );
        assert!(s.contains(
            "        module@a0000000 {\n            compatible = \"multiboot,kernel\", \
             \"multiboot,module\";\n            reg = <0x0 0xa0000000 0x0 0x1f6e0c0>;\n        };\n"
        ), "{s}");
        assert!(
            s.contains("module@a4000000 {\n            compatible = \"multiboot,ramdisk\""),
            "{s}"
        );
        // Properties before the first subnode.
        assert!(s.find("xen,dom0-bootargs").unwrap() < s.find("module@").unwrap());
    }

    #[test]
    fn a_module_too_large_for_its_room_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-xen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("initrd");
        std::fs::write(&file, vec![0u8; 4096]).unwrap();
        assert_eq!(
            module(&file, DOM0_RAMDISK_AT, DOM0_RAMDISK_END).unwrap(),
            MemRange {
                base: DOM0_RAMDISK_AT,
                size: 4096
            }
        );
        let err = module(&file, DOM0_RAMDISK_AT, DOM0_RAMDISK_AT + 1024)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
