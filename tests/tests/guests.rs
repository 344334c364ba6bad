//! The test guests under Tandem: two VMs side by side on their own CPUs, each booted from
//! an arm64 Image module with its own generated DTB; each passes, stops alone, and when both
//! have stopped the machine powers off.

use std::path::Path;
use std::time::Duration;

use tandem_tests::{
    dtb_with_fragment, guest_image, hypervisor_fragment, scratch_dir, Qemu, BANNER_TIMEOUT,
};

/// From the last marker to QEMU's exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A VM `label` on `cpus` (node names under /cpus) with 64 MiB at `mem`, booting the
/// module at `module_at`.
fn vm(
    index: u32,
    label: &str,
    cpus: &[&str],
    mem: u64,
    module_at: u64,
    module_size: u64,
) -> String {
    let cpus: Vec<String> = cpus.iter().map(|c| format!("&{{/cpus/{c}}}")).collect();
    format!(
        r#"
        vm@{index} {{
            compatible = "tandem,vm";
            label = "{label}";
            cpus = <{cpus}>;
            memory = <0x0 {mem:#x} 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{module_at:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {module_at:#x} 0x0 {module_size:#x}>;
            }};
        }};"#,
        cpus = cpus.join(" ")
    )
}

fn hello_beside_psci(gic: u8) {
    let dir = scratch_dir("guests");
    let psci = guest_image("psci").unwrap_or_else(|e| panic!("{e}"));
    let hello = guest_image("hello").unwrap_or_else(|e| panic!("{e}"));
    let fragment = hypervisor_fragment(&[
        vm(
            0,
            "psci",
            &["cpu@1", "cpu@2"],
            0x5000_0000,
            0x4f00_0000,
            size(&psci),
        ),
        vm(
            1,
            "hello",
            &["cpu@3"],
            0x6000_0000,
            0x4e00_0000,
            size(&hello),
        ),
    ]);
    let machine = Qemu::virt().gic(gic).cpus(4).mem("2G");
    let dtb =
        dtb_with_fragment(&machine, &dir, "guests", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine
        .dtb(&dtb)
        .loader(&psci, 0x4f00_0000)
        .loader(&hello, 0x4e00_0000)
        .spawn();
    for marker in [
        "[hello] hello from Tandem VM hello (vCPU 0x0)",
        "[hello] psci: version 1.1",
        "[hello] TEST PASS hello",
        "vm hello: stopped (system-off)",
        "[psci] psci: first start: vCPU's MPIDR and context ID: ok",
        "[psci] TEST PASS psci",
        "vm psci: stopped (system-off)",
        "all VMs have stopped: powering off",
    ] {
        session
            .wait_for(marker, BANNER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let output = session.output();
    assert!(!output.contains("TEST FAIL"), "a guest failed:\n{output}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hello_beside_psci_gicv3() {
    hello_beside_psci(3);
}

#[test]
fn hello_beside_psci_gicv2() {
    hello_beside_psci(2);
}
