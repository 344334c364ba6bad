//! VMs described in the device tree: a valid `/hypervisor` node is listed in the banner, an
//! invalid one is refused with every error and starts no VM.

use std::path::Path;

use tandem_tests::{dtb_with_fragment, scratch_dir, Input, Qemu, BANNER_TIMEOUT};

/// Where the test places the modules (between the DTB QEMU puts at 0x48000000 and the
/// first VM's memory at 0x50000000).
const LINUX_KERNEL_AT: u64 = 0x4900_0000;
const SECURE_KERNEL_AT: u64 = 0x4f00_0000;

/// The two-VM layout of the default configuration, on virt with 2 GiB: Linux on CPUs 0-2
/// with 1 GiB and a virtio-mmio device, the secure guest (a raw binary) on CPU 3.
fn two_vms(
    linux_kernel_size: u64,
    secure_kernel_size: u64,
    secure_cpu: &str,
    secure_mem: u64,
) -> String {
    format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
        vm@0 {{
            compatible = "tandem,vm";
            label = "linux";
            cpus = <&{{/cpus/cpu@0}} &{{/cpus/cpu@1}} &{{/cpus/cpu@2}}>;
            memory = <0x0 0x50000000 0x0 0x40000000>;
            devices = <&{{/virtio_mmio@a003e00}}>;
            bootargs = "console=ttyAMA0";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{LINUX_KERNEL_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {LINUX_KERNEL_AT:#x} 0x0 {linux_kernel_size:#x}>;
            }};
        }};
        vm@1 {{
            compatible = "tandem,vm";
            label = "secure";
            tandem,isolated;
            cpus = <&{{/cpus/{secure_cpu}}}>;
            memory = <0x0 {secure_mem:#x} 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{SECURE_KERNEL_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {SECURE_KERNEL_AT:#x} 0x0 {secure_kernel_size:#x}>;
                tandem,format = "raw";
            }};
        }};
        shmem@0 {{
            compatible = "tandem,shmem";
            memory = <0x0 0x94000000 0x0 0x100000>;
            vms = <&{{/hypervisor/vm@0}} &{{/hypervisor/vm@1}}>;
            doorbells = <100 101>;
        }};
    }};
}};
"#
    )
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A raw "secure guest" image: the config check only needs its bytes to exist.
fn raw_image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("secure.bin");
    // `b .` (0x14000000): a guest that would spin, never run by this test.
    let code: Vec<u8> = std::iter::repeat_n(0x1400_0000u32.to_le_bytes(), 1024)
        .flatten()
        .collect();
    std::fs::write(&path, code).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

#[test]
fn two_vms_are_listed_in_the_banner() {
    let dir = scratch_dir("two-vms");
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    let secure = raw_image(&dir);
    let machine = Qemu::virt().gic(3).cpus(4).mem("2G");
    let fragment = two_vms(file_size(&linux), file_size(&secure), "cpu@3", 0x9000_0000);
    let dtb =
        dtb_with_fragment(&machine, &dir, "two-vms", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&linux, LINUX_KERNEL_AT)
        .loader(&secure, SECURE_KERNEL_AT)
        .spawn();
    session
        .wait_for_in_order(
            &[
                "[cpu0] vm linux: cpus 0,1,2, memory 0x50000000-0x8fffffff (1024 MiB), devices 1",
                "[cpu0] vm secure: cpus 3, memory 0x90000000-0x93ffffff (64 MiB), devices 0, isolated",
                "[cpu0] cpus: 4/4 online",
            ],
            BANNER_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The secure VM takes CPU 2, which Linux has, and memory inside Linux's: both errors are
/// printed, and no VM is listed.
#[test]
fn invalid_config_starts_no_vm() {
    let dir = scratch_dir("bad-vms");
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    let secure = raw_image(&dir);
    let machine = Qemu::virt().gic(3).cpus(4).mem("2G");
    let fragment = two_vms(file_size(&linux), file_size(&secure), "cpu@2", 0x8000_0000);
    let dtb =
        dtb_with_fragment(&machine, &dir, "bad-vms", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&linux, LINUX_KERNEL_AT)
        .loader(&secure, SECURE_KERNEL_AT)
        .spawn();
    session
        .wait_for_in_order(
            &[
                "[cpu0] error: config: /hypervisor/vm@1: cpus:",
                "[cpu0] error: config: /hypervisor/vm@1: memory:",
                "no VM started",
                "[cpu0] cpus: 4/4 online",
            ],
            BANNER_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    assert!(
        !output.contains("] vm linux:"),
        "a VM was listed despite the errors:\n{output}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
