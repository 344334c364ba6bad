//! `cargo xtask run` with a user's own rich OS, run as a user would (the xtask binary,
//! without a terminal): `--kernel`, `--initrd` and `--bootargs` replace the files and the
//! command line of the default layout's VM `linux`; `--dtb` gives it the user's own guest
//! DTB, which the hypervisor checks and hands over instead of generating one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tandem_tests::linux::cpio_newc;
use tandem_tests::{dts_to_dtb, scratch_dir, Input, Session};

/// xtask's (no-op) build and composition, then Linux to its /init under MTTCG.
const TIMEOUT: Duration = Duration::from_secs(180);

/// `cargo xtask run <args>` with its console captured.
fn xtask_run(args: &[&str]) -> Session {
    let xtask = Input::Xtask.path().unwrap_or_else(|e| panic!("{e}"));
    let mut command = Command::new(xtask);
    command.arg("run").args(args);
    Session::run(command).unwrap_or_else(|e| panic!("{e}"))
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn users_kernel_initrd_and_bootargs() {
    let dir = scratch_dir("options-kernel-initrd");
    // The user's kernel: a copy of Debian's, so the command line shows which file boots.
    let kernel = dir.join("Image");
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&linux, &kernel).unwrap_or_else(|e| panic!("{}: {e}", kernel.display()));
    // The user's initrd: the busybox initramfs with its /init replaced (Linux unpacks the
    // appended archive last).
    let init = b"#!/bin/sh\n\
        /bin/busybox mount -t proc proc /proc\n\
        echo \"user-initrd: the user's own /init runs, with: $(/bin/busybox cat /proc/cmdline)\"\n\
        /bin/busybox poweroff -f\n";
    let mut initrd_bytes = std::fs::read(Input::Initramfs.path().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    initrd_bytes.extend(cpio_newc(&[("init", 0o755, init)]));
    let initrd = dir.join("initrd.cpio");
    std::fs::write(&initrd, initrd_bytes).unwrap_or_else(|e| panic!("{e}"));
    let bootargs = "console=ttyAMA0 earlycon tandem.user=options-test";

    let session = xtask_run(&[
        "--kernel",
        &text(&kernel),
        "--initrd",
        &text(&initrd),
        "--bootargs",
        bootargs,
    ]);
    session
        .wait_for_vm_start("linux", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_in_order(
            &[
                &format!("[linux] [    0.000000] Kernel command line: {bootargs}"),
                &format!("[linux] user-initrd: the user's own /init runs, with: {bootargs}"),
                "vm linux: stopped (system-off)",
            ],
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // The user's files went where configs/virt.dtsi puts Linux's.
    let stderr = session.stderr();
    for loader in [
        format!("loader,file={},addr=0xa0000000", kernel.display()),
        format!("loader,file={},addr=0xa4000000", initrd.display()),
    ] {
        assert!(
            stderr.contains(&loader),
            "{}",
            session.failure(&format!("xtask's QEMU command has no {loader}"))
        );
    }
    drop(session);
    let _ = std::fs::remove_dir_all(dir);
}

/// A guest DTB as a vendor writes one for the VM: its 1 GiB, three CPUs started with PSCI
/// over HVC, the virtual GICv3 (distributor, three redistributors), the timer and the
/// console; no initrd and no bootargs (`--bootargs` adds them).
const USER_DTS: &str = r#"/dts-v1/;
/ {
    model = "Tandem test: the user's own guest DTB";
    compatible = "linux,dummy-virt";
    #address-cells = <2>;
    #size-cells = <2>;
    interrupt-parent = <&gic>;

    chosen {
        stdout-path = "/pl011@9000000";
    };

    memory@50000000 {
        device_type = "memory";
        reg = <0x0 0x50000000 0x0 0x40000000>;
    };

    psci {
        compatible = "arm,psci-1.0", "arm,psci-0.2";
        method = "hvc";
    };

    cpus {
        #address-cells = <1>;
        #size-cells = <0>;
        cpu@0 { device_type = "cpu"; compatible = "arm,armv8"; reg = <0>; enable-method = "psci"; };
        cpu@1 { device_type = "cpu"; compatible = "arm,armv8"; reg = <1>; enable-method = "psci"; };
        cpu@2 { device_type = "cpu"; compatible = "arm,armv8"; reg = <2>; enable-method = "psci"; };
    };

    timer {
        compatible = "arm,armv8-timer";
        interrupts = <1 13 4>, <1 14 4>, <1 11 4>, <1 10 4>;
        always-on;
    };

    gic: intc@8000000 {
        compatible = "arm,gic-v3";
        #interrupt-cells = <3>;
        interrupt-controller;
        reg = <0x0 0x08000000 0x0 0x10000>, <0x0 0x080a0000 0x0 0x60000>;
    };

    apb_pclk: apb-pclk {
        compatible = "fixed-clock";
        #clock-cells = <0>;
        clock-frequency = <24000000>;
    };

    pl011@9000000 {
        compatible = "arm,pl011", "arm,primecell";
        reg = <0x0 0x09000000 0x0 0x1000>;
        interrupts = <0 1 4>;
        clocks = <&apb_pclk>, <&apb_pclk>;
        clock-names = "uartclk", "apb_pclk";
    };
};
"#;

#[test]
fn users_guest_dtb() {
    let dir = scratch_dir("options-dtb");
    let dtb = dir.join("guest.dtb");
    dts_to_dtb(USER_DTS, &dtb).unwrap_or_else(|e| panic!("{e}"));
    let bootargs = "console=ttyAMA0 earlycon tandem.user=dtb-test";
    let session = xtask_run(&["--dtb", &text(&dtb), "--bootargs", bootargs]);
    session
        .wait_for_vm_start("linux", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // The DTB names no initrd, so Linux boots as far as its root file system.
    session
        .wait_for_in_order(
            &[
                "[linux] [    0.000000] Machine model: Tandem test: the user's own guest DTB",
                &format!("[linux] [    0.000000] Kernel command line: {bootargs}"),
                "smp: Brought up 1 node, 3 CPUs",
                "VFS: Unable to mount root fs",
            ],
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = session.stderr();
    assert!(
        stderr.contains("/user-guest.dtb,addr="),
        "{}",
        session.failure("xtask's QEMU command does not load the user's DTB")
    );
    drop(session);
    let _ = std::fs::remove_dir_all(dir);
}
