//! Unmodified Linux (Debian's arm64 kernel) boots to user space with the busybox initramfs
//! (`cargo xtask`'s `target/initramfs.cpio`, a `multiboot,ramdisk` module) on three vCPUs
//! beside the secure guest on QEMU virt with GICv3 and with GICv2. Its `/init` loads the virtio and vsock
//! modules and, seeing `tandem.test=poweroff`, powers off: PSCI SYSTEM_OFF stops that VM
//! alone, and the secure guest's heartbeat goes on.

use std::path::Path;
use std::time::Duration;

use tandem_tests::{dtb_with_fragment, guest_image, scratch_dir, Input, Qemu};

/// Linux to user space and back off under MTTCG: 7-10 s of wall time on an idle machine, 16 s
/// with three at once on two cores; room for a loaded two-core CI machine.
const LINUX_TIMEOUT: Duration = Duration::from_secs(150);
/// The secure guest prints a heartbeat every second of guest time.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

const KERNEL_AT: u64 = 0x4900_0000;
const RAMDISK_AT: u64 = 0x4b80_0000;
const SECURE_AT: u64 = 0x4f00_0000;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The number of the last `secure: heartbeat N` line in `output`.
fn last_heartbeat(output: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .filter_map(|l| l.split("secure: heartbeat ").nth(1))
        .find_map(|n| n.trim().parse().ok())
}

#[test]
fn linux_reaches_user_space_and_powers_off_alone_gicv3() {
    reaches_user_space(3);
}

/// The same on GICv2: the emulated distributor, the hardware GICV mapped at GICC.
#[test]
fn linux_reaches_user_space_and_powers_off_alone_gicv2() {
    reaches_user_space(2);
}

fn reaches_user_space(gic: u8) {
    let dir = scratch_dir(&format!("linux-userspace-v{gic}"));
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    let initramfs = Input::Initramfs.path().unwrap_or_else(|e| panic!("{e}"));
    let secure = guest_image("secure").unwrap_or_else(|e| panic!("{e}"));
    let (linux_size, ramdisk_size) = (size(&linux), size(&initramfs));
    assert!(
        KERNEL_AT + linux_size <= RAMDISK_AT && RAMDISK_AT + ramdisk_size <= SECURE_AT,
        "the modules overlap: kernel {linux_size:#x} bytes at {KERNEL_AT:#x}, initramfs \
         {ramdisk_size:#x} at {RAMDISK_AT:#x}, secure guest at {SECURE_AT:#x}; move them apart"
    );
    let fragment = format!(
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
            bootargs = "console=ttyAMA0 earlycon tandem.test=poweroff";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{KERNEL_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {KERNEL_AT:#x} 0x0 {linux_size:#x}>;
            }};
            ramdisk@{RAMDISK_AT:x} {{
                compatible = "multiboot,ramdisk", "multiboot,module";
                reg = <0x0 {RAMDISK_AT:#x} 0x0 {ramdisk_size:#x}>;
            }};
        }};
        vm@1 {{
            compatible = "tandem,vm";
            label = "secure";
            tandem,isolated;
            cpus = <&{{/cpus/cpu@3}}>;
            memory = <0x0 0x90000000 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{SECURE_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {SECURE_AT:#x} 0x0 {secure_size:#x}>;
            }};
        }};
    }};
}};
"#,
        secure_size = size(&secure),
    );
    let machine = Qemu::virt().gic(gic).cpus(4).mem("2G").multithreaded();
    let dtb = dtb_with_fragment(&machine, &dir, "linux-userspace", &fragment)
        .unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&linux, KERNEL_AT)
        .loader(&initramfs, RAMDISK_AT)
        .loader(&secure, SECURE_AT)
        .spawn();
    session
        .wait_for_in_order(
            &[
                "[linux] [    0.000000] Booting Linux on physical CPU 0x0000000000",
                "smp: Brought up 1 node, 3 CPUs",
                "Trying to unpack rootfs image as initramfs...",
                "Run /init as init process",
                "[linux] tandem-init: user space up on 3 CPUs",
                "[linux] tandem-init: kernel ",
                "[linux] tandem-init: loaded ",
                "[linux] tandem-init: powering off",
                "vm linux: stopped (system-off)",
            ],
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));

    let output = session.output();
    // Every module of the initramfs matches the kernel and loads, dependencies first.
    assert!(
        output.contains("[linux] tandem-init: loaded 8 modules")
            && !output.contains("tandem-init: insmod"),
        "a kernel module did not load:\n{}",
        session.failure("module loading")
    );
    assert!(
        !output.contains("Kernel panic") && !output.contains("initramfs unpacking failed"),
        "{}",
        session.failure("Linux reported an error")
    );

    // The secure guest keeps running after Linux's VM stopped.
    let stopped_at = output
        .find("vm linux: stopped (system-off)")
        .expect("waited for above");
    let before = last_heartbeat(&output[..stopped_at]).unwrap_or(0);
    session
        .wait_for(
            &format!("[secure] secure: heartbeat {}", before + 2),
            HEARTBEAT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("the secure guest stopped with Linux: {e}"));
    let output = session.output();
    assert!(
        !output.contains("tandem: panic")
            && !output.contains("tandem: exception")
            && !output.contains("all VMs have stopped"),
        "{}",
        session.failure("the hypervisor misbehaved")
    );
    let _ = std::fs::remove_dir_all(dir);
}
