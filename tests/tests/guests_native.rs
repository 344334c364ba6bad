//! The test guests run natively on QEMU `virt` at EL1, without the hypervisor: each prints
//! its `TEST PASS` marker and powers the machine off with PSCI SYSTEM_OFF. These runs are
//! also the native baselines the guests' runs under Tandem are compared with.

use std::time::Duration;

use tandem_tests::{guest_image, lines_in_order, Qemu};

/// A guest runs in well under a second of TCG; this leaves room for a loaded machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// From the marker to QEMU's exit: one PSCI call.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Boots guest `name` as the kernel of `qemu`, waits for `TEST PASS <name>` and for QEMU
/// to exit cleanly; returns the console output.
fn passes_and_powers_off(name: &str, qemu: Qemu) -> String {
    let image = guest_image(name).unwrap_or_else(|e| panic!("{e}"));
    let mut session = qemu.kernel(image).spawn();
    if let Err(e) = session.wait_for(&format!("TEST PASS {name}"), GUEST_TIMEOUT) {
        panic!("{e}");
    }
    let status = session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the guest passed but did not power off: {e}"));
    let output = session.output();
    assert!(
        status.success(),
        "QEMU exited with {status} after SYSTEM_OFF:\n{output}"
    );
    assert!(
        !output.contains("TEST FAIL"),
        "a vCPU reported a failure:\n{output}"
    );
    output
}

#[test]
fn hello_native() {
    let output = passes_and_powers_off("hello", Qemu::virt().el1().cpus(2).mem("2G"));
    lines_in_order(
        &output,
        &[
            "hello from linux,dummy-virt (vCPU 0x0)",
            "memory: 0x40000000..0xc0000000 (2048 MiB)",
            "psci: version 1.",
            "TEST PASS hello",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}:\n{output}"));
}

/// QEMU's own PSCI is SMCCC 1.0 (it does not announce SMCCC_VERSION): the command line
/// lowers the guest's SMCCC requirement, and only here.
#[test]
fn psci_native() {
    let qemu = Qemu::virt().el1().cpus(2).append("psci.smccc=1.0");
    let output = passes_and_powers_off("psci", qemu);
    lines_in_order(
        &output,
        &[
            "psci: 2 vCPUs, running on 0x0",
            "psci: CPU_ON 0xffffff (no such vCPU): ok",
            "psci: AFFINITY_INFO 0x1 before CPU_ON: ok",
            "psci: vCPU 0x1 up (context 0x7a5c)",
            "psci: first start: AFFINITY_INFO 0x1 after CPU_OFF: ok",
            "psci: vCPU 0x1 up (context 0x7a5c)",
            "psci: restart: AFFINITY_INFO 0x1 after CPU_OFF: ok",
            "TEST PASS psci",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}:\n{output}"));
}
