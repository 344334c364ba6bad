//! The U-Boot firmware path with VMs (`cargo xtask run --firmware uboot`): Debian's U-Boot
//! boots the hypervisor with `booti`, handing it QEMU's DTB, which carries the
//! `/hypervisor` node of the shipped layout; the hypervisor then starts Linux, with its
//! devices, beside the secure guest.

use std::time::Duration;

use tandem_tests::{
    last_heartbeat, scratch_dir, shipped_config, vm_bootargs, Firmware, Input, Qemu,
};

/// U-Boot's autoboot and `qfw` load, then Linux to user space under MTTCG.
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn uboot_boots_the_hypervisor_and_its_vms() {
    let dir = scratch_dir("linux-uboot");
    let disk = Input::Disk.path().unwrap_or_else(|e| panic!("{e}"));
    let machine = Qemu::virt()
        .firmware(Firmware::Uboot)
        .multithreaded()
        .virtio_devices(&disk);
    let session = machine
        .clone()
        .config(
            &shipped_config("virt"),
            &vm_bootargs("vm@0", "console=ttyAMA0 earlycon tandem.test=poweroff"),
            &dir,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .spawn();
    session
        .wait_for_vm_start("linux", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_in_order(
            &[
                "U-Boot",
                &format!("image: loaded at {:#x}", machine.load_address()),
                "[cpu0] vm linux: cpus 0,1,2, memory 0x50000000-0x8fffffff",
                "[cpu0] vm secure: cpus 3",
                "[linux] tandem-init: user space up on 3 CPUs",
                "[linux] tandem-init: /dev/vda mounted on /mnt",
                "[linux] tandem-init: powering off",
                "vm linux: stopped (system-off)",
            ],
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // The secure guest beats on.
    let before = last_heartbeat(&session.output()).unwrap_or(0);
    session
        .wait_for(
            &format!("[secure] secure: heartbeat {}", before + 1),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    assert!(
        !output.contains("tandem: panic") && !output.contains("not started"),
        "{}",
        session.failure("a VM did not start")
    );
    let _ = std::fs::remove_dir_all(dir);
}
