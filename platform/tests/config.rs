//! `config::check` against the fixtures of `platform/fixtures/config/`: the valid configs
//! read back exactly, and each invalid one draws exactly the messages listed, in order.
//! Regenerate the `.dtb` files with `scripts/gen-config-fixtures.sh` after editing a `.dts`.

mod common;

use common::*;
use platform::config::{self, *};
use platform::*;

const MIB: u64 = 1 << 20;
/// Where QEMU's direct boot puts the hypervisor on virt, and the 8 MiB check-config assumes.
const HYP_VIRT: MemRange = MemRange {
    base: 0x4020_0000,
    size: 8 * MIB,
};
const HYP_RPI4: MemRange = MemRange {
    base: 0x20_0000,
    size: 8 * MIB,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/config/{name}.dtb", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn check(blob: &[u8], hyp: MemRange) -> ConfigReport {
    let platform = Platform::parse(blob).unwrap_or_else(|e| panic!("{e}"));
    config::check(blob, &platform, &[hyp])
}

/// `error: ...` and `warning: ...` lines, as check-config prints them.
fn messages(report: &ConfigReport) -> Vec<String> {
    let errors = report.errors.iter().map(|e| format!("error: {e}"));
    let warnings = report.warnings.iter().map(|w| format!("warning: {w}"));
    errors.chain(warnings).collect()
}

fn assert_messages(report: &ConfigReport, expected: &[&str]) {
    let got = messages(report);
    let got: Vec<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(got, expected, "\ngot:\n{}", got.join("\n"));
    assert_eq!(report.config.is_some(), report.errors.is_empty());
}

fn range(base: u64, size: u64) -> MemRange {
    MemRange { base, size }
}

fn module(node: &str, kind: ModuleKind, base: u64, size: u64) -> Module {
    Module {
        node: node.to_owned(),
        kind,
        range: range(base, size),
        raw: false,
        load_address: None,
    }
}

#[test]
fn virt_gicv3_reads_back_exactly() {
    let report = check(&fixture("virt-gicv3-valid"), HYP_VIRT);
    assert_messages(
        &report,
        &["warning: /hypervisor/vm@1: tandem,isolated: DMA-capable devices of other VMs without an IOMMU can write this VM's memory: /virtio_mmio@a003e00 (vm@0); put them behind an SMMU (an iommus property) or give them to no VM"],
    );
    let expected = HypervisorConfig {
        vms: vec![
            VmConfig {
                node: "/hypervisor/vm@0".into(),
                index: 0,
                label: "linux".into(),
                cpus: vec![0, 1, 2],
                memory: vec![range(0x5000_0000, 1 << 30)],
                devices: vec![Device {
                    node: "/virtio_mmio@a003e00".into(),
                    phandle: 1,
                    regs: vec![range(0xa00_3e00, 0x200)],
                    interrupts: vec![Irq {
                        kind: IrqKind::Spi,
                        number: 0x2f,
                        flags: 1,
                    }],
                    streams: Vec::new(),
                }],
                bootargs: Some("console=ttyAMA0 earlycon".into()),
                on_crash: OnCrash::Restart,
                isolated: false,
                modules: vec![
                    module(
                        "/hypervisor/vm@0/kernel@49000000",
                        ModuleKind::Kernel,
                        0x4900_0000,
                        32 * MIB,
                    ),
                    module(
                        "/hypervisor/vm@0/ramdisk@4b000000",
                        ModuleKind::Ramdisk,
                        0x4b00_0000,
                        16 * MIB,
                    ),
                ],
            },
            VmConfig {
                node: "/hypervisor/vm@1".into(),
                index: 1,
                label: "secure".into(),
                cpus: vec![3],
                memory: vec![range(0x9000_0000, 64 * MIB)],
                devices: vec![],
                bootargs: None,
                on_crash: OnCrash::Stop,
                isolated: true,
                modules: vec![Module {
                    raw: true,
                    load_address: Some(0x9000_0000),
                    ..module(
                        "/hypervisor/vm@1/kernel@4c000000",
                        ModuleKind::Kernel,
                        0x4c00_0000,
                        MIB,
                    )
                }],
            },
        ],
        shmem: vec![ShmemConfig {
            node: "/hypervisor/shmem@0".into(),
            memory: range(0x9400_0000, MIB),
            vms: vec![0, 1],
            doorbells: vec![100, 101],
        }],
        vsock: vec![VsockDevice {
            node: "/hypervisor/vsock@0".into(),
            window: 0x0b00_0000,
            memory: range(0x9410_0000, 0x1_0000),
            driver: 0,
            service: 1,
            driver_spi: 48,
            service_spi: 102,
            driver_cid: DEFAULT_DRIVER_CID,
            service_cid: DEFAULT_SERVICE_CID,
        }],
        unclean_memory: Vec::new(),
        attestation: None,
    };
    let config = report.config.unwrap();
    assert_eq!(config, expected);
    assert_eq!(
        config.vms[0]
            .module(ModuleKind::Ramdisk)
            .map(|m| m.range.base),
        Some(0x4b00_0000)
    );
    assert_eq!(config.vms[1].module(ModuleKind::Ramdisk), None);
}

#[test]
fn virt_gicv2_is_accepted() {
    let report = check(&fixture("virt-gicv2-valid"), HYP_VIRT);
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    // The PL031 does no DMA, so the isolated VM draws no warning.
    assert!(report.warnings.is_empty(), "{:?}", messages(&report));
    let config = report.config.unwrap();
    assert_eq!(config.vms.len(), 2);
    let linux = &config.vms[0];
    assert_eq!(linux.cpus, [0, 1]);
    assert_eq!(linux.devices[0].node, "/pl031@9010000");
    assert_eq!(linux.devices[0].regs, [range(0x901_0000, 0x1000)]);
    assert_eq!(linux.modules.len(), 3);
    assert_eq!(
        linux.module(ModuleKind::DeviceTree).map(|m| m.range),
        Some(range(0x4a80_0000, 0x1_0000))
    );
    assert_eq!(config.vms[1].cpus, [2, 3]);
    assert_eq!(config.shmem[0].doorbells, [64, 65]);
    // tandem,unclean-memory: each VM zeroes its own part; the shared memory is zeroed by
    // its first member.
    assert_eq!(
        config.unclean_parts(linux),
        [range(0x6ff0_0000, 0x10_0000), range(0x7200_0000, 0x1000)]
    );
    assert_eq!(
        config.unclean_parts(&config.vms[1]),
        [range(0x7000_0000, 0x10_0000)]
    );
}

#[test]
fn rpi4_is_accepted_with_translated_device_addresses() {
    let report = check(&fixture("rpi4-valid"), HYP_RPI4);
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    let config = report.config.unwrap();
    let linux = &config.vms[0];
    assert_eq!(linux.memory, [range(0x1000_0000, 512 * MIB)]);
    // /soc maps bus address 0x7e000000 to CPU address 0xfe000000.
    assert_eq!(linux.devices[0].regs, [range(0xfe20_1000, 0x200)]);
    assert_eq!(linux.devices[0].interrupts[0].number, 0x79);
    assert_eq!(config.vms[1].cpus, [3]);
    assert_eq!(config.shmem[0].memory, range(0x3400_0000, MIB));
}

#[test]
fn no_hypervisor_node_means_no_config() {
    // The Raspberry Pi 4 blob as shipped has no RAM and is not a board at all.
    for (name, blob) in ALL.iter().filter(|(name, _)| *name != "bcm2711-rpi-4-b") {
        let platform = Platform::parse(blob).unwrap();
        assert_eq!(
            config::check(blob, &platform, &[HYP_VIRT]),
            ConfigReport::default(),
            "{name}"
        );
    }
}

#[test]
fn unreadable_blob_is_an_error_not_a_panic() {
    let blob = fixture("virt-gicv3-valid");
    let platform = Platform::parse(&blob).unwrap();
    let report = config::check(&blob[..100], &platform, &[HYP_VIRT]);
    assert_eq!(report.config, None);
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0]
        .problem
        .starts_with("the device tree cannot be read"));
}

#[test]
fn memory_overlapping_a_memreserve_entry() {
    let (tree, mut reserve) = edit(&fixture("virt-gicv3-valid"));
    reserve.push((0x5000_0000, 0x1000));
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        messages(&report)[0],
        "error: /hypervisor/vm@0: memory: [0x50000000, 0x90000000) overlaps the /memreserve/ entry [0x50000000, 0x50001000); move vm@0's range clear of it: start at or above 0x50001000 or end at or below 0x50000000"
    );
    assert_eq!(report.errors.len(), 1);
}

#[test]
fn memory_overlapping_the_hypervisor_wherever_it_is() {
    let blob = fixture("virt-gicv3-valid");
    let report = check(&blob, range(0x9000_0000, 0x20_0000));
    let got = messages(&report);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        got[0],
        "error: /hypervisor/vm@1: memory: [0x90000000, 0x94000000) overlaps the hypervisor's own memory [0x90000000, 0x90200000); move vm@1's range clear of it: start at or above 0x90200000 or end at or below 0x90000000",
        "{got:#?}"
    );
}

#[test]
fn more_vms_than_vmids() {
    let (mut tree, reserve) = edit(&fixture("virt-gicv3-valid"));
    let hyp = tree.at("/hypervisor");
    let template = hyp.children[1].clone();
    for n in 2..=config::MAX_VMS {
        let mut vm = template.clone();
        vm.name = format!("vm@{n:x}");
        vm.set("label", strs(&[&format!("vm{n}")]));
        hyp.children.push(vm);
    }
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        messages(&report)[0],
        "error: /hypervisor: has 256 VMs; 8-bit VMIDs with VMID 0 reserved allow at most 255; remove 1 of them"
    );
}
/// VM memory overlapping the hypervisor, another VM, a device, /reserved-memory; outside RAM; unaligned; empty; missing.
#[test]
fn bad_memory() {
    assert_messages(
        &check(&fixture("bad-memory"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0: memory: [0x40000000, 0x41000000) overlaps the hypervisor's own memory [0x40200000, 0x40a00000); move vm@0's range clear of it: start at or above 0x40a00000 or end at or below 0x40200000",
            "error: /hypervisor/vm@1: memory: [0x58000000, 0x68000000) overlaps vm@0 (linux)'s memory [0x50000000, 0x60000000); move vm@1's range to start at or above 0x60000000 or end at or below 0x50000000, or shrink vm@0's; VMs share memory only through shmem@ nodes",
            "error: /hypervisor/vm@2: memory: range [0x68000800, 0x68001800) is not 4 KiB aligned; start and end it on 4 KiB boundaries, e.g. [0x68000000, 0x68002000)",
            "error: /hypervisor/vm@2: memory: range at 0x61000000 is empty; give every range a non-zero size, or remove it",
            "error: /hypervisor/vm@2: memory: [0x9000000, 0x9001000) overlaps the MMIO of /pl011@9000000 [0x9000000, 0x9001000); that is device address space, not RAM: pick a range inside RAM [0x40000000, 0xc0000000)",
            "error: /hypervisor/vm@2: memory: [0x70000000, 0x71000000) overlaps /reserved-memory/secure-fw@70000000 [0x70000000, 0x70100000); move vm@2's range clear of it: start at or above 0x70100000 or end at or below 0x70000000",
            "error: /hypervisor/vm@2: memory: [0xc0000000, 0xc1000000) is not inside RAM; RAM is [0x40000000, 0xc0000000): move the range inside it",
            "error: /hypervisor/vm@3: memory: missing: the VM has no memory; give vm@3 RAM, e.g. memory = <0x0 0x50000000 0x0 0x10000000>;",
        ],
    );
}

/// CPUs listed twice, given to two VMs, not a CPU, no node; none at all.
#[test]
fn bad_cpus() {
    assert_messages(
        &check(&fixture("bad-cpus"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0: cpus: lists /cpus/cpu@0 twice; list each physical CPU once; a vCPU runs on a CPU of its own",
            "error: /hypervisor/vm@1: cpus: entry 1 (phandle 0x1) is /cpus/cpu-map, not a cpu node of /cpus; list only cpu@N nodes of /cpus, e.g. <&{/cpus/cpu@0}>",
            "error: /hypervisor/vm@1: cpus: entry 2 (phandle 0xdead) names no node; list only cpu@N nodes of /cpus, e.g. <&{/cpus/cpu@0}>",
            "error: /hypervisor/vm@1: cpus: /cpus/cpu@0 is already given to vm@0 (linux); give each physical CPU to one VM: remove /cpus/cpu@0 from vm@1's or vm@0's cpus",
            "error: /hypervisor/vm@2: cpus: is empty: the VM has no CPU; list at least one /cpus node in vm@2's cpus",
            "error: /hypervisor/vm@3: cpus: missing: the VM has no CPU; give vm@3 at least one physical CPU, e.g. cpus = <&{/cpus/cpu@3}>;",
        ],
    );
}

/// Devices: no node, the GIC, a CPU, memory, the console, no reg, not wired to the GIC, given twice, sharing an SPI or a page.
#[test]
fn bad_devices() {
    assert_messages(
        &check(&fixture("bad-devices"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0: devices: entry 2 (phandle 0xdead) names no node; reference device nodes by label or path, e.g. <&{/pl031@9010000}>",
            "error: /hypervisor/vm@0: devices: /intc@8000000 is the interrupt controller the hypervisor drives, which cannot be given to a VM; remove it from vm@0's devices",
            "error: /hypervisor/vm@0: devices: /cpus/cpu@1 is a CPU, which cannot be given to a VM; remove it from vm@0's devices",
            "error: /hypervisor/vm@0: devices: /memory@40000000 is memory, which cannot be given to a VM; remove it from vm@0's devices",
            "error: /hypervisor/vm@0: devices: /pl011@9000000 is the hypervisor's own console, which cannot be given to a VM; remove it from vm@0's devices",
            "error: /hypervisor/vm@0: devices: /psci has no reg: nothing to map into the VM; remove /psci from vm@0's devices (only memory-mapped devices can be passed through)",
            "error: /hypervisor/vm@1: devices: /test-device@9200000's interrupt parent (phandle 0x8007) is not the GIC /intc@8000000; only devices wired to the GIC can be passed through: remove it from the VM",
            "error: /hypervisor/vm@1: devices: /virtio_mmio@a003e00 is already given to vm@0 (linux); give each device to one VM: remove it from vm@1's or vm@0's devices",
            "error: /hypervisor/vm@1: devices: /virtio_mmio@a003c00 [0xa003c00, 0xa003e00) shares a 4 KiB page with /virtio_mmio@a003e00 [0xa003e00, 0xa004000) of vm@0 (linux); stage 2 maps whole pages: give /virtio_mmio@a003c00 and /virtio_mmio@a003e00 to the same VM",
            "error: /hypervisor/vm@1: devices: /test-device@9100000 uses SPI 2, as does /pl031@9010000 of vm@0 (linux); an SPI goes to one VM: give /test-device@9100000 and /pl031@9010000 to the same VM, or leave one out",
        ],
    );
}

/// Modules: bad format, load address without raw or outside the VM, two of a kind, overlaps, outside RAM, no reg, size 0, unknown compatible, no kernel.
#[test]
fn bad_modules() {
    assert_messages(
        &check(&fixture("bad-modules"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0/kernel@48000000: tandem,format: is \"elf\"; the only format is \"raw\"; set tandem,format = \"raw\"; for a raw binary, or leave it out for an arm64 Image or ELF",
            "error: /hypervisor/vm@0/kernel@48000000: tandem,load-address: is only for raw images; Images and ELF files say where they go; add tandem,format = \"raw\"; or remove tandem,load-address",
            "error: /hypervisor/vm@0/kernel@4a000000: compatible: a second kernel module; vm@0 already has kernel@48000000; keep one module of each kind per VM",
            "error: /hypervisor/vm@0/ramdisk@48800000: reg: ramdisk [0x48800000, 0x49800000) overlaps module /hypervisor/vm@0/kernel@48000000 [0x48000000, 0x49000000); load the ramdisk elsewhere: start at or above 0x49000000 or end at or below 0x48000000",
            "error: /hypervisor/vm@0/device-tree: reg: missing: where did the boot loader put the image?; add reg = <address size>; in vm@0's #address-cells and #size-cells",
            "error: /hypervisor/vm@0/firmware@4f000000: compatible: \"vendor,firmware\" is not a known module; use \"multiboot,kernel\", \"multiboot,ramdisk\" or \"multiboot,device-tree\", each followed by \"multiboot,module\"",
            "error: /hypervisor/vm@1/kernel@40400000: reg: kernel [0x40400000, 0x40500000) overlaps the hypervisor's own memory [0x40200000, 0x40a00000); load the kernel elsewhere: start at or above 0x40a00000 or end at or below 0x40200000",
            "error: /hypervisor/vm@1/ramdisk@c0000000: reg: ramdisk [0xc0000000, 0xc0100000) is not inside RAM; RAM is [0x40000000, 0xc0000000): load the ramdisk inside it",
            "error: /hypervisor/vm@1/device-tree@5ff00000: reg: device-tree [0x5ff00000, 0x60100000) lies in vm@0 (linux)'s memory [0x50000000, 0x60000000), which is cleared before the VM starts; have the boot loader put the device-tree outside every VM's memory: start at or above 0x60000000 or end at or below 0x50000000",
            "error: /hypervisor/vm@1/device-tree@5ff00000: reg: device-tree [0x5ff00000, 0x60100000) lies in vm@1 (b)'s memory [0x60000000, 0x70000000), which is cleared before the VM starts; have the boot loader put the device-tree outside every VM's memory: start at or above 0x70000000 or end at or below 0x60000000",
            "error: /hypervisor/vm@2/kernel@4b000000: tandem,load-address: 0x80000000 puts the kernel at [0x80000000, 0x80100000), outside vm@2 (c)'s memory [0x70000000, 0x71000000); pick an address where all 0x100000 bytes fit inside the VM's memory",
            "error: /hypervisor/vm@2/ramdisk@4c000000: reg: is empty (size 0 at 0x4c000000); set the image's size in bytes",
            "error: /hypervisor/vm@2/device-tree@72000000: reg: device-tree [0x72000000, 0x72010000) overlaps shared memory shmem@72000000 [0x72000000, 0x72100000); load the device-tree elsewhere: start at or above 0x72100000 or end at or below 0x72000000",
            "error: /hypervisor/vm@3: has no kernel module; add a kernel@<address> child to vm@3 with compatible = \"multiboot,kernel\", \"multiboot,module\"; and reg = <address size>;",
        ],
    );
}

/// Shared memory: bad vms, bad doorbells, overlaps, unaligned, outside RAM.
#[test]
fn bad_shmem() {
    assert_messages(
        &check(&fixture("bad-shmem"), HYP_VIRT),
        &[
            "error: /hypervisor/shmem@0: vms: names only vm@0 (linux); shared memory is shared by two VMs or more; add the other VM to shmem@0's vms, or make the range part of that VM's memory",
            "error: /hypervisor/shmem@0: doorbells: has 2 entries but vms has 1; give one SPI number per VM, in the order of vms",
            "error: /hypervisor/shmem@1: memory: [0x80000800, 0x80001800) is not 4 KiB aligned; start and end it on 4 KiB boundaries, e.g. [0x80000000, 0x80002000)",
            "error: /hypervisor/shmem@1: vms: lists vm@0 (linux) twice; list each VM once",
            "error: /hypervisor/shmem@2: vms: entry 0 is /pl031@9010000, not a vm@ node of /hypervisor; list only vm@ nodes of /hypervisor, by label: vms = <&linux &secure>;",
            "error: /hypervisor/shmem@2: vms: entry 2 (phandle 0xdead) names no node; list only vm@ nodes of /hypervisor, by label: vms = <&linux &secure>;",
            "error: /hypervisor/shmem@2: doorbells: SPI 1000 is out of range 0-987; use SPI numbers (INTID - 32) from 0 to 987",
            "error: /hypervisor/shmem@2: memory: [0x5ff00000, 0x60000000) overlaps vm@0 (linux)'s memory [0x50000000, 0x60000000); shared memory is a range of its own: move shmem@2's to start at or above 0x60000000 or end at or below 0x50000000, or shrink vm@0's",
            "error: /hypervisor/shmem@3: memory: [0x80000000, 0x80100000) overlaps shmem@1's memory [0x80000800, 0x80001800); move shmem@3's range to start at or above 0x80001800 or end at or below 0x80000800",
            "error: /hypervisor/shmem@4: memory: [0x40800000, 0x40900000) overlaps the hypervisor's own memory [0x40200000, 0x40a00000); move shmem@4's range clear of it: start at or above 0x40a00000 or end at or below 0x40200000",
            "error: /hypervisor/shmem@4: doorbells: SPI 47 in vm@0 (linux) is also the SPI of its device /virtio_mmio@a003e00; pick a doorbell SPI no device of that VM uses",
            "error: /hypervisor/shmem@5: memory: [0xc0000000, 0xc0100000) is not inside RAM; RAM is [0x40000000, 0xc0000000): move the range inside it",
            "error: /hypervisor/shmem@5: doorbells: SPI 6 in vm@1 (secure) is also shmem@4's doorbell there; give each doorbell of a VM its own SPI",
        ],
    );
}

/// Labels, compatibles, on-crash, cells of a VM; unknown properties and nodes (warnings).
#[test]
fn bad_nodes() {
    assert_messages(
        &check(&fixture("bad-nodes"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0: compatible: missing; must be \"tandem,vm\"; set compatible = \"tandem,vm\";",
            "error: /hypervisor/vm@0: tandem,on-crash: is \"reboot\"; must be \"stop\" or \"restart\"; set tandem,on-crash = \"stop\"; or \"restart\"; or leave it out (stop)",
            "error: /hypervisor/vm@1: label: \"linux\" is also the label of vm@0; give vm@1 a label of its own",
            "error: /hypervisor/vm@2: label: missing; add label = \"vm2\"; (1 to 15 of a-z, 0-9, '_' and '-'), the VM's name in logs",
            "error: /hypervisor/vm@3: compatible: is \"tandem,domain\", not \"tandem,vm\"; set compatible = \"tandem,vm\";",
            "error: /hypervisor/vm@3: label: \"Secure World!\" is not 1 to 15 of a-z, 0-9, '_' and '-'; rename it, e.g. label = \"secure-world-\";",
            "error: /hypervisor/vm@3: #size-cells: missing; set #size-cells = <2>;",
            "warning: /hypervisor: tandem,verbose: unknown property, ignored; check its spelling against docs/binding.md or remove it",
            "warning: /hypervisor/vm@0: tandem,colour: unknown property, ignored; check its spelling against docs/binding.md or remove it",
            "warning: /hypervisor/vm@0/kernel@48000000: tandem,signature: unknown property, ignored; check its spelling against docs/binding.md or remove it",
            "warning: /hypervisor/console: unknown node, ignored; name VM nodes vm@N, shared memory shmem@N and vsock devices vsock@N (see docs/binding.md)",
        ],
    );
}

/// /hypervisor without compatible, with bad cells.
#[test]
fn bad_hypervisor() {
    assert_messages(
        &check(&fixture("bad-hypervisor"), HYP_VIRT),
        &[
            "error: /hypervisor: compatible: missing; must be \"tandem,hypervisor\"; set compatible = \"tandem,hypervisor\";",
            "error: /hypervisor: #address-cells: is 3; must be 1 or 2; set #address-cells = <2>;",
            "error: /hypervisor: #size-cells: missing; set #size-cells = <2>;",
        ],
    );
}

/// Raspberry Pi 4: a device on the legacy interrupt controller; the mini-UART console.
#[test]
fn bad_rpi4() {
    assert_messages(
        &check(&fixture("bad-rpi4"), HYP_RPI4),
        &[
            "error: /hypervisor/vm@0: devices: /soc/hdmi@7ef00700's interrupt parent (phandle 0x19) is not the GIC /soc/interrupt-controller@40041000; only devices wired to the GIC can be passed through: remove it from the VM",
            "error: /hypervisor/vm@0: devices: /soc/serial@7e215040 is the hypervisor's own console, which cannot be given to a VM; remove it from vm@0's devices",
        ],
    );
}

/// The refusals docs/binding.md lists under "Also refused", each on a mutation of the
/// valid virt config.
#[test]
fn also_refused() {
    type Case = (&'static str, fn(&mut Node), &'static str);
    let cases: [Case; 6] = [
        (
            "unclean memory outside RAM (a warning)",
            |t| {
                t.at("/hypervisor")
                    .set("tandem,unclean-memory", cells(&[0, 0x1000_0000, 0, 0x1000]))
            },
            "warning: /hypervisor: tandem,unclean-memory: [0x10000000, 0x10001000) is not inside RAM; nothing there is zeroed; list ranges of RAM [0x40000000, 0xc0000000)",
        ),
        (
            "overlapping ranges of one VM",
            |t| {
                t.at("/hypervisor/vm@0").set(
                    "memory",
                    cells(&[0, 0x5000_0000, 0, 0x100_0000, 0, 0x5080_0000, 0, 0x100_0000]),
                )
            },
            "error: /hypervisor/vm@0: memory: ranges [0x50000000, 0x51000000) and [0x50800000, 0x51800000) overlap; merge them into one range",
        ),
        (
            "a module of two ranges",
            |t| {
                t.at("/hypervisor/vm@0/kernel@49000000").set(
                    "reg",
                    cells(&[0, 0x4900_0000, 0, 0x1000, 0, 0x4910_0000, 0, 0x1000]),
                )
            },
            "error: /hypervisor/vm@0/kernel@49000000: reg: has 2 ranges; a module is one range; give the module one (address, size) pair",
        ),
        (
            "shared memory of two ranges",
            |t| {
                t.at("/hypervisor/shmem@0").set(
                    "memory",
                    cells(&[0, 0x9400_0000, 0, 0x1000, 0, 0x9410_0000, 0, 0x1000]),
                )
            },
            "error: /hypervisor/shmem@0: memory: has 2 ranges; shared memory is one range; split it into one shmem@ node per range",
        ),
        (
            "a disabled VM in vms",
            |t| t.at("/hypervisor/vm@1").set("status", strs(&["disabled"])),
            "error: /hypervisor/shmem@0: vms: entry 1 is /hypervisor/vm@1, which is disabled; list only vm@ nodes of /hypervisor, by label: vms = <&linux &secure>;",
        ),
        (
            "no VM at all",
            |t| {
                t.remove("/hypervisor/vm@0");
                t.remove("/hypervisor/vm@1");
            },
            "error: /hypervisor: has no vm@ node; describe at least one VM in a vm@0 child (see docs/binding.md)",
        ),
    ];
    let (tree, reserve) = edit(&fixture("virt-gicv3-valid"));
    for (what, change, expected) in cases {
        let mut tree = tree.clone();
        change(&mut tree);
        let report = check(&build(&tree, &reserve, false), HYP_VIRT);
        let got = messages(&report);
        assert!(got.iter().any(|m| m == expected), "{what}: {got:#?}");
    }
}

/// `bootargs` must be one string: the guest DTB's `/chosen/bootargs` cannot hold a NUL, so a
/// list used to pass the check and then stop the VM at boot (found by the `guest_dt` fuzz
/// target). Trailing NULs are fine.
#[test]
fn bootargs_is_one_string() {
    let (mut tree, reserve) = edit(&fixture("virt-gicv3-valid"));
    tree.at("/hypervisor/vm@0")
        .set("bootargs", strs(&["console=ttyAMA0", "earlycon"]));
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["/hypervisor/vm@0: bootargs: is a list of 2 strings; the command line is one string; join them into one string, the arguments separated by spaces"]
    );
    tree.at("/hypervisor/vm@0")
        .set("bootargs", b"console=ttyAMA0\0\0\0".to_vec());
    let config = check(&build(&tree, &reserve, false), HYP_VIRT)
        .config
        .expect("trailing NULs are one string");
    assert_eq!(config.vms[0].bootargs.as_deref(), Some("console=ttyAMA0"));
}

/// Every VM's virtual console is on SPI 1 (`guest_dt::CONSOLE_SPI`): a doorbell or an
/// assigned device there used to pass the check and then stop the VM at boot, as its guest
/// DTB could not be generated (found by the `guest_dt` fuzz target).
#[test]
fn console_spi_is_taken() {
    let (mut tree, reserve) = edit(&fixture("virt-gicv3-valid"));
    tree.at("/hypervisor/shmem@0")
        .set("doorbells", cells(&[100, guest_dt::CONSOLE_SPI]));
    tree.at("/virtio_mmio@a003e00")
        .set("interrupts", cells(&[0, guest_dt::CONSOLE_SPI, 1]));
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "/hypervisor/vm@0: devices: /virtio_mmio@a003e00 uses SPI 1, which is the VM's virtual console's; remove /virtio_mmio@a003e00 from vm@0's devices",
            "/hypervisor/shmem@0: doorbells: SPI 1 is every VM's virtual console's; pick another SPI for the doorbell",
        ]
    );
}

/// A device sharing a 4 KiB page with the hypervisor's console (the Pi's `aux` block and its
/// mini-UART) used to pass the check: stage 2 would have handed the VM the console's
/// registers, and its guest DTB could not be generated (the virtual console sits in that
/// page). Found by the `guest_dt` fuzz target.
#[test]
fn device_sharing_the_console_page() {
    let (mut tree, reserve) = edit(&fixture("rpi4-valid"));
    let aux = u32::from_be_bytes(
        tree.at("/soc/aux@7e215000")
            .props
            .iter()
            .find(|(n, _)| n == "phandle")
            .map(|(_, v)| v[..4].try_into().unwrap())
            .unwrap(),
    );
    tree.at("/hypervisor/vm@0").set("devices", cells(&[aux]));
    let report = check(&build(&tree, &reserve, false), HYP_RPI4);
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["/hypervisor/vm@0: devices: /soc/aux@7e215000 [0xfe215000, 0xfe215008) shares a 4 KiB page with the hypervisor's console /soc/serial@7e215040 [0xfe215040, 0xfe215080); stage 2 maps whole pages: remove /soc/aux@7e215000 from vm@0's devices"]
    );
}

#[test]
fn bad_vsock() {
    assert_messages(
        &check(&fixture("bad-vsock"), HYP_VIRT),
        &[
            "error: /hypervisor/vm@0: has no kernel module; add a kernel@<address> child to vm@0 with compatible = \"multiboot,kernel\", \"multiboot,module\"; and reg = <address size>;",
            "error: /hypervisor/vm@1: has no kernel module; add a kernel@<address> child to vm@1 with compatible = \"multiboot,kernel\", \"multiboot,module\"; and reg = <address size>;",
            "error: /hypervisor/vm@2: has no kernel module; add a kernel@<address> child to vm@2 with compatible = \"multiboot,kernel\", \"multiboot,module\"; and reg = <address size>;",
            "error: /hypervisor/vsock@0: vms: missing; name the VM that drives the device, then the one that serves it: vms = <&linux &secure>;",
            "error: /hypervisor/vsock@0: spis: missing; give the driver's device SPI and the service's doorbell SPI: spis = <48 102>;",
            "error: /hypervisor/vsock@0: window: missing; give the page where the driver VM sees the device, e.g. window = <0x0 0x0b000000>;",
            "error: /hypervisor/vsock@1: vms: names 1 VM; a vsock device has a driver VM and a service VM; write vms = <&driver &service>;, e.g. vms = <&linux &secure>;",
            "error: /hypervisor/vsock@1: window: 0xb000800 is not 4 KiB aligned; use 0xb000000",
            "error: /hypervisor/vsock@2: cids: <2 3> uses a reserved CID (0, 1, 2, 0xffffffff) or one CID twice; give the two VMs different CIDs from 3 up, e.g. cids = <4 3>;",
            "error: /hypervisor/vsock@2: spis: SPI 47 in vm@0 (linux) is also the SPI of its device /virtio_mmio@a003e00; pick a vsock SPI no device of that VM uses",
            "error: /hypervisor/vsock@2: vms: vm@0 (linux) already drives vsock@1; give each VM one vsock device at most",
            "error: /hypervisor/vsock@2: window: [0x50000000, 0x50001000) is in RAM ([0x40000000, 0xc0000000)); pick a free page outside RAM and every device, e.g. window = <0x0 0x0b000000>;",
            "error: /hypervisor/vsock@3: cids: <5 5> uses a reserved CID (0, 1, 2, 0xffffffff) or one CID twice; give the two VMs different CIDs from 3 up, e.g. cids = <4 3>;",
            "error: /hypervisor/vsock@3: memory: [0x6ff00000, 0x6ff10000) overlaps vm@1 (secure)'s memory [0x60000000, 0x70000000); shared memory is a range of its own: move vsock@3's to start at or above 0x70000000 or end at or below 0x60000000, or shrink vm@1's",
            "error: /hypervisor/vsock@3: vms: vm@0 (linux) already drives vsock@1; give each VM one vsock device at most",
            "error: /hypervisor/vsock@3: window: [0xa003000, 0xa004000) overlaps /virtio_mmio@a003000 [0xa003000, 0xa003200); pick a free page outside RAM and every device, e.g. window = <0x0 0x0b000000>;",
            "error: /hypervisor/vsock@4: vms: vm@1 (secure) already serves vsock@2; give each service VM one vsock device at most",
            "error: /hypervisor/vsock@5: vms: vm@2 (other) already serves vsock@3; give each service VM one vsock device at most",
            "error: /hypervisor/vsock@5: window: [0xb001000, 0xb002000) is also vsock@4's window; give vsock@5 a page of its own",
        ],
    );
}

/// Attestation: a VM may ask for it only when the board has a device secret of 32 bytes;
/// the secret never shows in the config's debug output.
#[test]
fn attestation_needs_a_device_secret() {
    let (mut tree, reserve) = edit(&fixture("virt-gicv3-valid"));
    tree.at("/hypervisor/vm@1")
        .set("tandem,attestation", Vec::new());
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["/hypervisor/vm@1: tandem,attestation: the board has no device secret to derive the VM's identity from; give /hypervisor a tandem,device-secret (32 bytes), or remove tandem,attestation"]
    );

    tree.at("/hypervisor")
        .set("tandem,device-secret", vec![7; 31]);
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "/hypervisor: tandem,device-secret: is 31 bytes; it must be 32; write 32 bytes, e.g. tandem,device-secret = [00 11 22 ... ff];",
            "/hypervisor/vm@1: tandem,attestation: the board has no device secret to derive the VM's identity from; give /hypervisor a tandem,device-secret (32 bytes), or remove tandem,attestation",
        ]
    );

    tree.at("/hypervisor")
        .set("tandem,device-secret", vec![7; 32]);
    let report = check(&build(&tree, &reserve, false), HYP_VIRT);
    let config = report.config.expect("valid");
    let attestation = config.attestation.as_ref().expect("attestation");
    assert_eq!(attestation.vms, [1]);
    assert_eq!(attestation.device_secret, [7; 32]);
    assert!(
        !format!("{config:?}").contains("7, 7, 7"),
        "the secret is in Debug"
    );
    assert!(config.vms[1].canonical().contains("label=secure"));
}
