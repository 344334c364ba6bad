//! Unmodified Linux (Debian's arm64 kernel) in the shipped default layout
//! (`configs/virt.dtsi`, as `cargo xtask run` boots it): three vCPUs and 1 GiB, a virtio-blk
//! disk and a virtio-net device passed through, beside the secure guest; on QEMU virt with
//! GICv3 and with GICv2. Its initramfs, told `tandem.test=checks`, loads its modules, mounts
//! the disk, takes a DHCP lease and prints what it sees (CPUs, RAM, interrupt counts, the
//! disk's file, the lease), then powers off, or with `reboot` restarts. Either way the VM
//! stops or restarts alone: the secure guest's heartbeat goes on. The same checks pass
//! natively first (the same kernel, initramfs and devices straight on QEMU, as
//! `cargo xtask run --native` boots them), so a failure under the hypervisor is its own.

use std::time::Duration;

use tandem_tests::linux::{check_boot, Expected};
use tandem_tests::{
    default_layout, last_heartbeat, scratch_dir, vm_bootargs, Input, Qemu, Session,
};

/// One Linux boot to user space with the checks under MTTCG: 15-20 s of wall time on an
/// idle two-core machine; room for a loaded CI machine running two tests at once.
const LINUX_TIMEOUT: Duration = Duration::from_secs(150);
/// The secure guest prints a heartbeat every second of guest time.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// The linux VM's memory in configs/virt.dtsi: none of the secure guest's (0x90000000) or
/// the hypervisor's (0x40200000) may show up in Linux's /proc/iomem.
const VM_RAM: Expected = Expected {
    ram: (0x5000_0000, 0x9000_0000),
};

/// Linux to user space with the checks and off again, natively under MTTCG: 5 s on an
/// idle machine.
const NATIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// The default layout with the rich OS's devices, Linux told `tandem.test=<test>`.
fn boot_default_layout(gic: u8, test: &str, dir: &std::path::Path) -> Session {
    let bootargs = format!("console=ttyAMA0 earlycon tandem.test={test}");
    default_layout(gic, &vm_bootargs("vm@0", &bootargs), dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .spawn()
}

/// Fails with the console quoted unless the hypervisor stayed healthy.
fn assert_hypervisor_healthy(session: &Session) {
    let output = session.output();
    for bad in ["tandem: panic", "tandem: exception", "all VMs have stopped"] {
        assert!(
            !output.contains(bad),
            "{}",
            session.failure(&format!("the hypervisor printed {bad:?}"))
        );
    }
}

#[test]
fn linux_with_its_devices_powers_off_alone_gicv3() {
    let dir = scratch_dir("linux-userspace-v3");
    let session = boot_default_layout(3, "checks", &dir);
    session
        .wait_for_vm_start("linux", LINUX_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_in_order(
            &[
                "[cpu0] vm linux: cpus 0,1,2, memory 0x50000000-0x8fffffff",
                "[linux] [    0.000000] Booting Linux on physical CPU 0x0000000000",
                "GICv3: ",
                "[linux] tandem-check: done",
                "[linux] tandem-init: powering off",
                "vm linux: stopped (system-off)",
            ],
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    check_boot(&output, &VM_RAM).unwrap_or_else(|e| panic!("{}", session.failure(&e)));

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
    assert_hypervisor_healthy(&session);
    let _ = std::fs::remove_dir_all(dir);
}

/// The same on GICv2 (the emulated distributor, the hardware GICV as the CPU interface),
/// and then Linux's `reboot`: PSCI SYSTEM_RESET restarts that VM alone from pristine
/// images, and it reaches user space again with its devices working.
#[test]
fn linux_with_its_devices_reboots_alone_gicv2() {
    let dir = scratch_dir("linux-userspace-v2");
    let session = boot_default_layout(2, "checks,reboot", &dir);
    session
        .wait_for_vm_start("linux", LINUX_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_in_order(
            &[
                "[linux] [    0.000000] Booting Linux on physical CPU 0x0000000000",
                "[linux] tandem-check: done",
                "[linux] tandem-init: rebooting",
                "vm linux: restarted (system-reset)",
            ],
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // wait_for_in_order cannot wait for a line the second boot repeats.
    session
        .wait_for_count("[linux] tandem-check: done", 2, LINUX_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let restart = output
        .find("vm linux: restarted (system-reset)")
        .expect("waited for above");
    let (first, second) = output.split_at(restart);
    check_boot(first, &VM_RAM)
        .unwrap_or_else(|e| panic!("{}", session.failure(&format!("first boot: {e}"))));
    check_boot(second, &VM_RAM)
        .unwrap_or_else(|e| panic!("{}", session.failure(&format!("after the reboot: {e}"))));

    // The secure guest went on beating through Linux's restart and second boot.
    let before = last_heartbeat(first).unwrap_or(0);
    let after = last_heartbeat(&session.output()).unwrap_or(0);
    assert!(
        after > before,
        "{}",
        session.failure(&format!(
            "the secure guest's heartbeat stopped with Linux's restart (heartbeat {before} before, {after} after)"
        ))
    );
    assert!(
        !output.contains("vm linux: stopped") && !output.contains("vm secure: stopped"),
        "{}",
        session.failure("a reboot stopped a VM")
    );
    assert_hypervisor_healthy(&session);
    let _ = std::fs::remove_dir_all(dir);
}

/// The baseline: no hypervisor, at EL1 on three CPUs with 1 GiB, as the VM has.
#[test]
fn linux_with_its_devices_natively() {
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    let initramfs = Input::Initramfs.path().unwrap_or_else(|e| panic!("{e}"));
    let disk = Input::Disk.path().unwrap_or_else(|e| panic!("{e}"));
    let mut session = Qemu::virt()
        .el1()
        .cpus(3)
        .mem("1G")
        .multithreaded()
        .kernel(&linux)
        .initrd(&initramfs)
        .append("console=ttyAMA0 earlycon tandem.test=checks")
        .virtio_devices(&disk)
        .spawn();
    session
        .wait_for(
            "[    0.000000] Booting Linux on physical CPU",
            NATIVE_TIMEOUT,
        )
        .and_then(|()| session.wait_for("tandem-init: powering off", NATIVE_TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    // QEMU's own PSCI firmware powers the machine off.
    let status = session
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "QEMU exited with {status}");
    let native_ram = Expected {
        ram: (0x4000_0000, 0x8000_0000),
    };
    check_boot(&session.output(), &native_ram)
        .unwrap_or_else(|e| panic!("{}", session.failure(&e)));
}
