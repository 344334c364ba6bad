//! The hypervisor's own failures are reported, never silent: a panic, an exception at EL2,
//! a stack overflow into a guard page, and a CPU that firmware cannot start.

use std::time::Duration;

use tandem_tests::{dtb_to_dts, dts_to_dtb, scratch_dir, Qemu, BANNER_TIMEOUT};

/// Reports come right after the banner.
const REPORT_TIMEOUT: Duration = BANNER_TIMEOUT;

#[test]
fn panic_is_reported_with_its_location() {
    let session = Qemu::virt().cpus(2).append("tandem.selftest=panic").spawn();
    session
        .wait_for_in_order(
            &[
                "[cpu0] cpus: 2/2 online",
                "tandem: panic: self-test panic requested on the command line at hyp/src/boot.rs:",
            ],
            REPORT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn el2_data_abort_is_reported_by_name() {
    let session = Qemu::virt().cpus(1).append("tandem.selftest=abort").spawn();
    session
        .wait_for(
            "tandem: exception: synchronous from EL2 with SP_EL2: EC 0x25 (data abort at the same EL), ESR 0x96000004, FAR 0xfffffffff000",
            REPORT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn stack_overflow_hits_the_guard() {
    let session = Qemu::virt()
        .cpus(1)
        .append("tandem.selftest=stack-overflow")
        .spawn();
    session
        .wait_for("tandem: panic: stack overflow on cpu0", REPORT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_option_is_reported_and_ignored() {
    let session = Qemu::virt()
        .cpus(1)
        .append("tandem.loglevel=loud tandem.selftest=nap")
        .spawn();
    session
        .wait_for_in_order(
            &[
                "warn: bootargs: tandem.loglevel=loud is not a level; use error, warn, info, debug or trace",
                "warn: bootargs: tandem.selftest=nap is not a self-test",
                "[cpu0] cpus: 1/1 online",
            ],
            REPORT_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The DT lists a fifth CPU that QEMU does not have: PSCI CPU_ON refuses it, the error is
/// printed, and the other four run.
#[test]
fn cpu_that_does_not_start_is_reported() {
    let dir = scratch_dir("ghost-cpu");
    let machine = Qemu::virt().gic(3).cpus(4);
    let original = dir.join("virt.dtb");
    machine
        .dump_dtb(&original)
        .unwrap_or_else(|e| panic!("{e}"));
    let dts = dtb_to_dts(&original).unwrap_or_else(|e| panic!("{e}"));
    let anchor = "\t\tcpu@3 {";
    assert!(dts.contains(anchor), "no cpu@3 node in QEMU's DTB:\n{dts}");
    let ghost = "\t\tcpu@100 {\n\t\t\tdevice_type = \"cpu\";\n\t\t\tcompatible = \"arm,cortex-a57\";\n\t\t\treg = <0x100>;\n\t\t\tenable-method = \"psci\";\n\t\t};\n\n";
    let dts = dts.replacen(anchor, &format!("{ghost}{anchor}"), 1);
    let dtb = dir.join("ghost.dtb");
    dts_to_dtb(&dts, &dtb).unwrap_or_else(|e| panic!("{e}"));

    let session = machine.dtb(&dtb).spawn();
    session
        .wait_for_in_order(
            &[
                "error: cpu3 (/cpus/cpu@100): not started: CPU_ON(MPIDR 0x100) failed: PSCI",
                "[cpu0] cpus: 4/5 online",
            ],
            BANNER_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(dir);
}
