//! Guests run: a VM's vCPU enters its image at EL1, its console output comes out tagged
//! with its label, and PSCI SYSTEM_OFF stops it; when every VM has stopped the machine
//! powers off.

use std::path::Path;
use std::time::Duration;

use tandem_tests::{dtb_with_fragment, scratch_dir, Qemu, BANNER_TIMEOUT};

/// Where the test places the guest image (outside the VM's memory, like a boot loader).
const MODULE_AT: u64 = 0x4f00_0000;

/// A raw guest, hand-assembled so the test needs no toolchain: it writes "H\n" to the
/// PL011 its DTB names (at 0x09000000 on virt), then calls PSCI SYSTEM_OFF over HVC.
const TINY_GUEST: [u32; 9] = [
    0xd2a1_2001, // movz x1, #0x0900, lsl #16
    0x5280_0902, // movz w2, #'H'
    0xb900_0022, // str  w2, [x1]
    0x5280_0142, // movz w2, #'\n'
    0xb900_0022, // str  w2, [x1]
    0x5280_0100, // movz w0, #0x0008
    0x72b0_8000, // movk w0, #0x8400, lsl #16   (SYSTEM_OFF)
    0xd400_0002, // hvc  #0
    0x1400_0000, // b    .
];

/// The same guest with PSCI SYSTEM_RESET (0x84000009) instead of SYSTEM_OFF: it prints
/// and restarts, for good.
fn resetting_guest() -> [u32; 9] {
    let mut words = TINY_GUEST;
    words[5] = 0x5280_0120; // movz w0, #0x0009
    words
}

/// A raw guest that reads the word at 0x50100000, inside its memory, and prints `Z` if it
/// is zero or `D` (dirty) if not, then calls SYSTEM_OFF.
const PEEKING_GUEST: [u32; 13] = [
    0xd2a1_2001, // movz x1, #0x0900, lsl #16
    0xd2aa_0203, // movz x3, #0x5010, lsl #16
    0xb940_0064, // ldr  w4, [x3]
    0x5280_0b42, // movz w2, #'Z'
    0x3400_0044, // cbz  w4, +8
    0x5280_0882, // movz w2, #'D'
    0xb900_0022, // str  w2, [x1]
    0x5280_0142, // movz w2, #'\n'
    0xb900_0022, // str  w2, [x1]
    0x5280_0100, // movz w0, #0x0008
    0x72b0_8000, // movk w0, #0x8400, lsl #16   (SYSTEM_OFF)
    0xd400_0002, // hvc  #0
    0x1400_0000, // b    .
];

fn write_tiny(dir: &Path) -> std::path::PathBuf {
    write_words(dir, &TINY_GUEST)
}

fn write_words(dir: &Path, words: &[u32]) -> std::path::PathBuf {
    let path = dir.join("tiny.bin");
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn one_vm(cpu: &str, size: usize) -> String {
    format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
        vm@0 {{
            compatible = "tandem,vm";
            label = "tiny";
            cpus = <&{{/cpus/{cpu}}}>;
            memory = <0x0 0x50000000 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{MODULE_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {MODULE_AT:#x} 0x0 {size:#x}>;
                tandem,format = "raw";
            }};
        }};
    }};
}};
"#
    )
}

fn raw_guest_runs(gic: u8, cpu: &str) {
    let dir = scratch_dir("tiny");
    let tiny = write_tiny(&dir);
    let machine = Qemu::virt().gic(gic).cpus(2).mem("2G");
    let dtb = dtb_with_fragment(&machine, &dir, "tiny", &one_vm(cpu, TINY_GUEST.len() * 4))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine.dtb(&dtb).loader(&tiny, MODULE_AT).spawn();
    session
        .wait_for_in_order(
            &[
                "vm tiny: cpus",
                "[tiny] H",
                "vm tiny: stopped (system-off)",
                "vm tiny: exits: hvc 1 smc 0 mmio 2",
                "all VMs have stopped: powering off",
            ],
            BANNER_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The guest on the secondary CPU 1, the boot CPU idle.
#[test]
fn raw_guest_prints_and_powers_off_gicv3() {
    raw_guest_runs(3, "cpu@1");
}

/// The guest on the boot CPU itself, on GICv2.
#[test]
fn raw_guest_on_the_boot_cpu_gicv2() {
    raw_guest_runs(2, "cpu@0");
}

/// SYSTEM_RESET restarts the VM alone from a pristine copy of its image, again and again,
/// while the machine stays up.
#[test]
fn system_reset_restarts_the_vm() {
    let dir = scratch_dir("reset");
    let guest = write_words(&dir, &resetting_guest());
    let machine = Qemu::virt().gic(3).cpus(2).mem("2G");
    let dtb = dtb_with_fragment(
        &machine,
        &dir,
        "reset",
        &one_vm("cpu@1", TINY_GUEST.len() * 4),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let session = machine.dtb(&dtb).loader(&guest, MODULE_AT).spawn();
    session
        .wait_for("vm tiny: restarted (system-reset)", BANNER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Each run prints once and restarts (wait_for_in_order cannot wait for a repeated
    // line): poll for two restarts and the third run's line.
    let deadline = std::time::Instant::now() + BANNER_TIMEOUT;
    let output = loop {
        let output = session.output();
        let runs = output.matches("[tiny] H").count();
        let restarts = output.matches("vm tiny: restarted (system-reset)").count();
        if runs >= 3 && restarts >= 2 {
            break output;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{runs} runs and {restarts} restarts after {BANNER_TIMEOUT:?}:\n{output}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !output.contains("powering off"),
        "a restart is not a power-off:\n{output}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What a boot loader left in a VM's memory reaches the guest unless the board marks it
/// with `tandem,unclean-memory`, and then it is zeroed before the VM first runs.
#[test]
fn unclean_memory_is_zeroed_before_first_boot() {
    for (marked, expected) in [(false, "[tiny] D"), (true, "[tiny] Z")] {
        let dir = scratch_dir(&format!("unclean-{marked}"));
        let guest = write_words(&dir, &PEEKING_GUEST);
        let leftovers = dir.join("leftovers.bin");
        std::fs::write(&leftovers, [0xa5u8; 64]).unwrap_or_else(|e| panic!("{e}"));
        let mut fragment = one_vm("cpu@1", PEEKING_GUEST.len() * 4);
        if marked {
            fragment = fragment.replace(
                "#size-cells = <2>;\n        vm@0",
                "#size-cells = <2>;\n        tandem,unclean-memory = <0x0 0x500ff000 0x0 0x2000>;\n        vm@0",
            );
            assert!(fragment.contains("unclean"), "{fragment}");
        }
        let machine = Qemu::virt().gic(3).cpus(2).mem("2G");
        let dtb = dtb_with_fragment(&machine, &dir, "unclean", &fragment)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut session = machine
            .dtb(&dtb)
            .loader(&guest, MODULE_AT)
            .loader(&leftovers, 0x5010_0000)
            .spawn();
        session
            .wait_for(expected, BANNER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        if marked {
            session
                .wait_for(
                    "vm tiny: zeroed 8 KiB that tandem,unclean-memory marks",
                    BANNER_TIMEOUT,
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        session
            .wait_exit(BANNER_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
