//! DMA isolation by the SMMUv3 (QEMU virt, `iommu=smmuv3`): a VM that owns the PCIe host
//! bridge, and with it QEMU's `edu` DMA engine, programs it to write into another VM's
//! memory and to read the hypervisor's. The SMMU refuses both; the hypervisor logs each
//! fault with the stream, the address and the VM and counts it; the other VM's checksum
//! holds; and the same device's DMA into its own VM's memory works before and after.
//! And Linux, given the PCIe host bridge, reads its virtio-blk PCI disk through the SMMU.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_tests::{
    dtb_with_fragment, guest_image, hypervisor_fragment, scratch_dir, shipped_config, vm_bootargs,
    Input, Qemu,
};

/// Each VM's memory: 64 MiB.
const VM_MEM_SIZE: u64 = 0x400_0000;
const DMA_MEM: u64 = 0x5000_0000;
const VICTIM_MEM: u64 = 0x6000_0000;
const DMA_MODULE: u64 = 0x4f00_0000;
const VICTIM_MODULE: u64 = 0x4e00_0000;
/// QEMU's direct boot loads the hypervisor here; its code is not all zeros.
const HYP_BASE: u64 = 0x4020_0000;
/// Inside the victim's checksummed buffer, which starts at the first 2 MiB boundary after
/// its image (checked against what it prints).
const VICTIM_TARGET: u64 = VICTIM_MEM + 0x30_0000;
/// edu is the only PCI device (`-nic none`): 00:01.0, requester and stream ID 0x8.
const EDU_STREAM: u32 = 0x8;
const VICTIM_DURATION_MS: u64 = 6_000;
/// The DMA guest waits this long before attacking, so the victim has filled its buffer.
const DMA_DELAY_MS: u64 = 1_000;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

fn vm(index: u32, label: &str, cpu: &str, mem: u64, module: (u64, u64), extra: &str) -> String {
    let (module_at, module_size) = module;
    format!(
        r#"
        vm@{index} {{
            compatible = "tandem,vm";
            label = "{label}";
            cpus = <&{{/cpus/{cpu}}}>;
            memory = <0x0 {mem:#x} 0x0 {VM_MEM_SIZE:#x}>;
            {extra}
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{module_at:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {module_at:#x} 0x0 {module_size:#x}>;
            }};
        }};"#
    )
}

/// The DMA guest beside an isolated victim, on GICv`gic` (the SMMU's wired interrupts go
/// through the physical GIC of either version).
fn dma_into_another_vm_is_refused(gic: u8) {
    let dir = scratch_dir(&format!("smmu-dma-v{gic}"));
    let dma = guest_image("dma").unwrap_or_else(|e| panic!("{e}"));
    let victim = guest_image("victim").unwrap_or_else(|e| panic!("{e}"));
    let dma_args = format!(
        "bootargs = \"delay_ms={DMA_DELAY_MS} write={VICTIM_TARGET:#x} read={VICTIM_TARGET:#x} read={HYP_BASE:#x} expect=blocked\"; devices = <&{{/pcie@10000000}}>;"
    );
    // Isolated, as the secure guest is: the config would warn about a DMA-capable device
    // of another VM that no SMMU confines.
    let victim_args = format!("bootargs = \"duration_ms={VICTIM_DURATION_MS}\"; tandem,isolated;");
    let fragment = hypervisor_fragment(&[
        vm(
            0,
            "dma",
            "cpu@1",
            DMA_MEM,
            (DMA_MODULE, size(&dma)),
            &dma_args,
        ),
        vm(
            1,
            "victim",
            "cpu@2",
            VICTIM_MEM,
            (VICTIM_MODULE, size(&victim)),
            &victim_args,
        ),
    ]);
    let machine = Qemu::virt()
        .smmu()
        .gic(gic)
        .cpus(4)
        .mem("2G")
        .arg("-nic")
        .arg("none")
        .arg("-device")
        .arg("edu,dma_mask=0xffffffffffffffff");
    let dtb =
        dtb_with_fragment(&machine, &dir, "smmu", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine
        .dtb(&dtb)
        .loader(&dma, DMA_MODULE)
        .loader(&victim, VICTIM_MODULE)
        .spawn();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    session
        .wait_for_in_order(
            &[
                "smmu: /smmuv3@9050000 at 0x9050000: stage 2 for dma;",
                "[dma] dma: own memory round trip ok",
                &format!("[dma] dma: write to {VICTIM_TARGET:#x} issued"),
                &format!("[dma] dma: read from {VICTIM_TARGET:#x} blocked"),
                &format!("[dma] dma: read from {HYP_BASE:#x} blocked"),
                "[dma] dma: own memory round trip ok (after the experiments)",
                "[dma] TEST PASS dma",
                "vm dma: stopped (system-off)",
                "vm dma: smmu faults ",
                "[victim] TEST PASS victim",
                "all VMs have stopped: powering off",
            ],
            left(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let output = session.output();
    for bad in ["TEST FAIL", "tandem: panic", "tandem: exception"] {
        assert!(!output.contains(bad), "{bad:?} on the console:\n{output}");
    }
    // The victim had filled its buffer before the device wrote, and the buffer covers the
    // address the device was pointed at.
    let at = |needle: &str| {
        output
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{output}"))
    };
    assert!(
        at("[victim] victim: buffer ") < at("issued"),
        "the device wrote before the victim filled its buffer: raise DMA_DELAY_MS"
    );
    let buffer = output
        .lines()
        .find_map(|l| l.split("[victim] victim: buffer ").nth(1))
        .unwrap_or_else(|| panic!("no buffer line:\n{output}"));
    let (start, end) = buffer
        .split_whitespace()
        .next()
        .and_then(|r| r.split_once(".."))
        .and_then(|(a, b)| {
            let parse = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
            Some((
                parse(a)?,
                parse(b.trim_end_matches(|c: char| !c.is_ascii_hexdigit()))?,
            ))
        })
        .unwrap_or_else(|| panic!("cannot read the buffer range from {buffer:?}"));
    assert!(
        (start..end).contains(&VICTIM_TARGET),
        "the victim's buffer {start:#x}..{end:#x} does not hold {VICTIM_TARGET:#x}"
    );
    // Each refused transfer is logged with the VM, the stream and the address.
    // (One line per refused page: the first address, then how many more faults.)
    for (dir, addr) in [
        ("write", VICTIM_TARGET),
        ("read", VICTIM_TARGET),
        ("read", HYP_BASE),
    ] {
        let line = format!(
            "smmu: fault: vm dma: F_TRANSLATION (0x10) stream {EDU_STREAM:#x}, {dir} of {:#x}",
            addr >> 12
        );
        assert!(output.contains(&line), "no {line:?} in:\n{output}");
    }
    let faults: u64 = output
        .lines()
        .find_map(|l| l.split("vm dma: smmu faults ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fault count:\n{output}"));
    assert!(faults >= 3, "{faults} faults counted:\n{output}");
    assert!(
        !output.contains("DMA-capable devices of other VMs"),
        "the edu behind the SMMU drew the unconfined-DMA warning:\n{output}"
    );
    for line in output
        .lines()
        .filter(|l| l.contains("smmu") || l.contains("[dma]"))
    {
        eprintln!("{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dma_into_another_vm_is_refused_gicv3() {
    dma_into_another_vm_is_refused(3);
}

#[test]
fn dma_into_another_vm_is_refused_gicv2() {
    dma_into_another_vm_is_refused(2);
}

/// Linux's disk as a virtio-blk PCI device: QEMU's virtio devices bypass the IOMMU unless
/// they offer VIRTIO_F_ACCESS_PLATFORM (`iommu_platform=on`).
const PCI_DISK: &str = "virtio-blk-pci,drive=disk0,iommu_platform=on,disable-legacy=on";
/// One Linux boot to user space with the checks under MTTCG.
const LINUX_TIMEOUT: Duration = Duration::from_secs(180);

/// The shipped default layout with the PCIe host bridge given to Linux as well, and
/// Linux's disk on PCI behind the SMMU: Linux enumerates the bus itself, its virtio-pci
/// driver's DMA translates through Linux's stage 2 in the SMMU, and it reads its disk.
/// Then it reboots: its streams are cut off while the VM reloads and come back with fresh
/// SMMU TLB entries, and the second boot reads the disk again.
#[test]
fn linux_reads_its_pci_disk_through_the_smmu() {
    let dir = scratch_dir("smmu-linux-pci");
    let disk = Input::Disk.path().unwrap_or_else(|e| panic!("{e}"));
    let extra = format!(
        "{}\n/ {{ hypervisor {{ vm@0 {{ devices = <&{{/virtio_mmio@a003e00}} &{{/virtio_mmio@a003c00}} &{{/pcie@10000000}}>; }}; }}; }};\n",
        vm_bootargs("vm@0", "console=ttyAMA0 earlycon tandem.test=checks,reboot")
    );
    let session = Qemu::virt()
        .smmu()
        .gic(3)
        .cpus(4)
        .mem("2G")
        .multithreaded()
        .arg("-drive")
        .arg(&format!(
            "file={},format=raw,if=none,id=disk0,snapshot=on",
            disk.display()
        ))
        .arg("-device")
        .arg(PCI_DISK)
        .arg("-netdev")
        .arg("user,id=net0")
        .arg("-device")
        .arg("virtio-net-device,netdev=net0")
        .config(&shipped_config("virt"), &extra, &dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .spawn();
    session
        .wait_for_in_order(
            &[
                "smmu: /smmuv3@9050000 at 0x9050000: stage 2 for linux;",
                "[linux] [    0.000000] Booting Linux on physical CPU 0x0000000000",
                "pci-host-generic 4010000000.pcie: host bridge /pcie@4010000000",
                "[linux] tandem-init: virtio",
                "block device on 0000:00:01.0",
                "[linux] tandem-init: /dev/vda mounted on /mnt",
                "[linux] tandem-check: done",
                "[linux] tandem-init: rebooting",
                "vm linux: smmu faults 0",
                "vm linux: restarted (system-reset)",
            ],
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // wait_for_in_order cannot wait for a line the second boot repeats.
    session
        .wait_for_count(
            "[linux] tandem-init: /dev/vda mounted on /mnt",
            2,
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_count("[linux] tandem-check: done", 2, LINUX_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    // The default layout's checks, less the virtio-mmio disk (it is on PCI here).
    for line in [
        "[linux] tandem-check: ram 50000000-8fffffff",
        "[linux] tandem-check: disk tandem.txt: tandem disk: hello from ext4 on virtio-blk",
        "[linux] tandem-init: virtio1: network device on a003e00.virtio_mmio",
        "[linux] tandem-check: lease eth0 10.0.2.15/24",
    ] {
        assert!(
            output.matches(line).count() >= 2,
            "{}",
            session.failure(&format!("{line:?} not in both boots"))
        );
    }
    for bad in ["tandem: panic", "tandem: exception", "smmu: fault"] {
        assert!(
            !output.contains(bad),
            "{}",
            session.failure(&format!("the hypervisor printed {bad:?}"))
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
