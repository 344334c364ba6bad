//! Xen 4.17 on QEMU virt, the peer hypervisor of `cargo xtask bench`, started the way Xen's
//! ImageBuilder starts it: with Linux as its dom0, or with one dom0less domU and no dom0.
//!
//! QEMU's `-kernel` starts Debian's Xen Image at EL2 ([`crate::debian::xen`]); the DT it
//! gets is the machine's own (dumped by QEMU) with Xen's command line and the boot modules
//! added to `/chosen`, each module node's `reg` being where `-device loader` puts the file.
//!
//! - [`command`]: Linux as dom0, on the machine Tandem's default layout runs on
//!   (`configs/virt.dtsi`: 4 CPUs, 2 GiB, GICv3); dom0 gets what Linux's VM gets there
//!   (3 vCPUs, 1 GiB) and the same virtio disk and network device.
//! - [`dom0less_command`]: a bare-metal guest as a dom0less domU (a `xen,domain` node with
//!   a `multiboot,kernel` module), alone: Xen 4.17 starts without a dom0 when no module is
//!   dom0's kernel (`Xen dom0less mode detected`). Its console is Xen's `vpl011`, whose
//!   output Xen prints on its own console as `DOM<id>: <line>`.

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

/// Xen's command line with a dom0less domU alone, for interrupt and trap latencies:
/// - the console, `bootscrub=0` and `console_timestamps=raw` as in [`XEN_BOOTARGS`];
/// - `vwfi=native`: a vCPU's WFI stays in the guest (the physical CPU waits in it) instead
///   of trapping to Xen, which would block the vCPU and switch to the idle vCPU; with one
///   vCPU per physical CPU this is Xen's documented setting for low interrupt latency.
///
/// Its companion, `sched=null` (each vCPU pinned to a physical CPU, no scheduling
/// decisions), is not built into Debian's Xen (`CONFIG_SCHED_NULL` is unset in its
/// `boot/xen-4.17-arm64.config`: Xen says `Could not find scheduler: null` and uses
/// credit2), so the scheduler is credit2, the default, which with both vCPUs always
/// running (they never block, WFI being native) has nothing to decide.
pub const XEN_DOM0LESS_BOOTARGS: &str =
    "console=dtuart dtuart=/pl011@9000000 bootscrub=0 console_timestamps=raw vwfi=native";

/// The SMCCC call Xen 4.17 answers with its UID: `ARM_SMCCC_CALL_UID_FID(HYPERVISOR)` of
/// its `vsmc.c`, owner 5 (Standard Hypervisor Service). Xen has no handler for
/// `VENDOR_HYP_CALL_UID` (0x8600ff01, owner 6): it logs `Unhandled SMC/HVC: 0x8600ff01` on
/// its console and answers NOT_SUPPORTED, so timing that would time its console.
pub const XEN_UID_CALL: u32 = 0x8500_ff01;

/// Where `-device loader` puts the domU's kernel: where `target/bench/irq.dtsi` puts the
/// irq guest for Tandem, clear of QEMU's DTB (which QEMU puts at 0x48000000 after Xen's
/// Image) and of the top of RAM, where Xen relocates itself. Xen copies it into the domU.
const DOMU_KERNEL_AT: u64 = 0x4f00_0000;
const DOMU_KERNEL_END: u64 = 0x5000_0000;

/// A dom0less domU.
pub struct DomU<'a> {
    /// Its kernel: an arm64 Image.
    pub kernel: &'a Path,
    /// Its `/chosen/bootargs`.
    pub bootargs: &'a str,
    /// vCPUs.
    pub cpus: u32,
    /// RAM, in MiB.
    pub memory_mib: u64,
}

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
    let kernel = module(dom0.kernel, DOM0_KERNEL_AT, DOM0_RAMDISK_AT)?;
    let ramdisk = module(dom0.initrd, DOM0_RAMDISK_AT, DOM0_RAMDISK_END)?;
    let fragment = chosen(XEN_BOOTARGS, dom0.bootargs, kernel, ramdisk)?;
    let mut qemu = boot(
        xen,
        &MACHINE,
        &fragment,
        &[(dom0.kernel, kernel), (dom0.initrd, ramdisk)],
        work,
    )?;
    qemu.args(qemu::device_args(disk, false));
    Ok(qemu)
}

/// The QEMU command that boots `xen` on `machine` (virt, GICv3) with `domu` as its only
/// domain, without timing options; the DT goes to `work/` as in [`command`].
pub fn dom0less_command(
    xen: &Path,
    machine: &Machine,
    domu: &DomU<'_>,
    work: &Path,
) -> Result<Command> {
    if domu.cpus > machine.cpus {
        bail!(
            "the domU's {} vCPUs do not fit the machine's {} CPUs",
            domu.cpus,
            machine.cpus
        );
    }
    let kernel = module(domu.kernel, DOMU_KERNEL_AT, DOMU_KERNEL_END)?;
    let fragment = chosen_dom0less(XEN_DOM0LESS_BOOTARGS, domu, kernel)?;
    boot(xen, machine, &fragment, &[(domu.kernel, kernel)], work)
}

/// QEMU booting `xen` on `machine` with the machine's own DT plus `fragment`, and each
/// file of `loads` at its range's base.
fn boot(
    xen: &Path,
    machine: &Machine,
    fragment: &str,
    loads: &[(&Path, MemRange)],
    work: &Path,
) -> Result<Command> {
    if machine.board != Board::Virt || machine.gic != Gic::V3 {
        bail!("the Xen experiments run on QEMU virt with a GICv3");
    }
    std::fs::create_dir_all(work)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", work.display())))?;
    let host = work.join("host.dtb");
    vmconfig::base_dtb(machine, &host)?;
    let mut dts = cmd::output(
        Command::new("dtc")
            .args(["-q", "-I", "dtb", "-O", "dts"])
            .arg(&host),
    )?;
    dts.push_str(fragment);
    let source = work.join("host+xen.dts");
    let dtb = work.join("host+xen.dtb");
    std::fs::write(&source, &dts)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", source.display())))?;
    vmconfig::compile(&source, &dtb, work)?;

    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-M", "virt,virtualization=on,gic-version=3", "-cpu", "max"])
        .args([
            "-smp",
            &machine.cpus.to_string(),
            "-m",
            &machine.mem.to_string(),
        ])
        .arg("-dtb")
        .arg(&dtb)
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(xen);
    for (file, range) in loads {
        qemu.args([
            "-device",
            &format!(
                "loader,file={},addr={:#x},force-raw=on",
                file.display(),
                range.base
            ),
        ]);
    }
    Ok(qemu)
}

/// Where `file` goes: at `at`, and it must end by `end`.
fn module(file: &Path, at: u64, end: u64) -> Result<MemRange> {
    let size = std::fs::metadata(file)
        .map_err(|e| Error::new(format!("{}: {e}", file.display())))?
        .len();
    if size > end - at {
        bail!(
            "{} ({} MiB) does not fit in the {} MiB that the Xen experiments' layout has for it at {at:#x}",
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

/// The DTS fragment of a dom0less boot: Xen's command line and one `xen,domain` node with
/// the domU's vCPUs, memory (in KiB, two cells), a `vpl011` console and its kernel module,
/// whose `bootargs` are the domU's command line.
fn chosen_dom0less(xen_bootargs: &str, domu: &DomU<'_>, kernel: MemRange) -> Result<String> {
    let cells = (2, 2);
    let kib = domu.memory_mib * 1024;
    let mut s = String::from(
        "\n// Added by cargo xtask bench (xtask/src/xen.rs): Xen's command line and one dom0less\n\
         // domU, its kernel where -device loader puts it.\n/ {\n    chosen {\n",
    );
    let _ = writeln!(s, "        #address-cells = <2>;");
    let _ = writeln!(s, "        #size-cells = <2>;");
    let _ = writeln!(
        s,
        "        xen,xen-bootargs = {};",
        vmconfig::dts_string(xen_bootargs)
    );
    let _ = writeln!(s, "        domU1 {{");
    let _ = writeln!(s, "            compatible = \"xen,domain\";");
    let _ = writeln!(s, "            #address-cells = <2>;");
    let _ = writeln!(s, "            #size-cells = <2>;");
    let _ = writeln!(s, "            cpus = <{}>;", domu.cpus);
    let _ = writeln!(
        s,
        "            memory = <{:#x} {:#x}>;",
        kib >> 32,
        kib & 0xffff_ffff
    );
    let _ = writeln!(s, "            vpl011;");
    let _ = writeln!(s, "            module@{:x} {{", kernel.base);
    let _ = writeln!(
        s,
        "                compatible = \"multiboot,kernel\", \"multiboot,module\";"
    );
    let _ = writeln!(
        s,
        "                reg = <{}>;",
        vmconfig::reg_cells(&kernel, cells)?
    );
    let _ = writeln!(
        s,
        "                bootargs = {};",
        vmconfig::dts_string(domu.bootargs)
    );
    s.push_str("            };\n        };\n    };\n};\n");
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
    fn the_dom0less_domu_has_its_vcpus_memory_console_and_kernel() {
        let kernel = MemRange {
            base: DOMU_KERNEL_AT,
            size: 0x2_2aa8,
        };
        let domu = DomU {
            kernel: Path::new("irq.bin"),
            bootargs: "mode=check null_call=0x8500ff01",
            cpus: 2,
            memory_mib: 64,
        };
        let s = chosen_dom0less(XEN_DOM0LESS_BOOTARGS, &domu, kernel).unwrap();
        assert!(
            s.contains(
                "        xen,xen-bootargs = \"console=dtuart dtuart=/pl011@9000000 bootscrub=0 \
                 console_timestamps=raw vwfi=native\";\n"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "        domU1 {\n            compatible = \"xen,domain\";\n            \
                 #address-cells = <2>;\n            #size-cells = <2>;\n            cpus = <2>;\n            \
                 memory = <0x0 0x10000>;\n            vpl011;\n            module@4f000000 {\n"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "                reg = <0x0 0x4f000000 0x0 0x22aa8>;\n                \
                 bootargs = \"mode=check null_call=0x8500ff01\";\n"
            ),
            "{s}"
        );
        // No dom0: no module is dom0's kernel, and there is no dom0 command line.
        assert_eq!(s.matches("multiboot,kernel").count(), 1);
        assert!(!s.contains("dom0-bootargs"), "{s}");
        // Properties before the first subnode, in /chosen and in the domain.
        assert!(s.find("xen,xen-bootargs").unwrap() < s.find("domU1").unwrap());
        assert!(s.find("vpl011").unwrap() < s.find("module@").unwrap());
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
