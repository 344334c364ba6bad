//! Boot tests: the hypervisor comes up on every supported machine and firmware path, and
//! refuses bad boot conditions (no GIC, a truncated DTB, entry at EL1) with a clear error.

use std::time::Duration;

use tandem_tests::{
    dtb_to_dts, dts_to_dtb, remove_dts_node, scratch_dir, Firmware, Qemu, BANNER_TIMEOUT,
    UBOOT_BANNER_TIMEOUT,
};

/// A fatal error is printed before anything slow happens.
const FATAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Boots `qemu` and checks the banner lines appear in the documented order.
fn boots_with_banner(qemu: &Qemu, board: &str, gic: &str, cpus: &str, timeout: Duration) -> String {
    let session = qemu.spawn();
    let banner = [
        "[cpu0] tandem ",
        &format!(" on {board}"),
        &format!("[cpu0] gic: {gic}"),
        "[cpu0] memory: ",
        &format!("[cpu0] cpus: {cpus} online"),
        "[cpu0] boot: entry to banner ",
    ];
    if let Err(e) = session.wait_for_in_order(&banner, timeout) {
        panic!("{e}");
    }
    session.output()
}

/// Checks the line `image: loaded at <addr>` in `output`.
fn assert_loaded_at(output: &str, addr: u64) {
    let line = format!("image: loaded at {addr:#x}");
    assert!(
        output.contains(&line),
        "expected {line:?} in the console output:\n{output}"
    );
}

#[test]
fn virt_gicv3_four_cpus() {
    let qemu = Qemu::virt().gic(3).cpus(4).mem("2G");
    let output = boots_with_banner(&qemu, "linux,dummy-virt", "v3", "4/4", BANNER_TIMEOUT);
    for cpu in 1..4 {
        assert!(
            output.contains(&format!("[cpu{cpu}] online")),
            "cpu{cpu} not online:\n{output}"
        );
    }
}

#[test]
fn virt_gicv2_two_cpus() {
    let qemu = Qemu::virt().gic(2).cpus(2).mem("2G");
    boots_with_banner(&qemu, "linux,dummy-virt", "v2", "2/2", BANNER_TIMEOUT);
}

#[test]
fn virt_eight_cpus_six_gib() {
    let qemu = Qemu::virt().gic(3).cpus(8).mem("6G");
    boots_with_banner(&qemu, "linux,dummy-virt", "v3", "8/8", BANNER_TIMEOUT);
}

/// QEMU's loader puts the Image at RAM + 2 MiB, U-Boot at RAM + 4 MiB: the same binary must
/// run at both (it is position-independent).
#[test]
fn two_load_addresses() {
    let direct = Qemu::virt();
    let output = boots_with_banner(&direct, "linux,dummy-virt", "v3", "4/4", BANNER_TIMEOUT);
    assert_loaded_at(&output, direct.load_address());
    assert_eq!(direct.load_address(), 0x4020_0000);

    let uboot = Qemu::virt().firmware(Firmware::Uboot);
    let output = boots_with_banner(
        &uboot,
        "linux,dummy-virt",
        "v3",
        "4/4",
        UBOOT_BANNER_TIMEOUT,
    );
    assert_loaded_at(&output, uboot.load_address());
    assert_eq!(uboot.load_address(), 0x4040_0000);
}

/// Raspberry Pi 4 with Debian's DTB: GIC-400, CPUs released by spin-table, mini-UART console.
#[test]
fn raspi4b_debian_dtb() {
    boots_with_banner(
        &Qemu::raspi4b(),
        "Raspberry Pi 4 Model B",
        "v2",
        "4/4",
        BANNER_TIMEOUT,
    );
}

/// QEMU's own virt DTB with the GIC node cut out (decompiled, edited, recompiled).
#[test]
fn dtb_without_gic_is_fatal() {
    let dir = scratch_dir("no-gic");
    let machine = Qemu::virt().gic(3).cpus(4).mem("2G");
    let original = dir.join("virt.dtb");
    machine
        .dump_dtb(&original)
        .unwrap_or_else(|e| panic!("{e}"));
    let dts = dtb_to_dts(&original).unwrap_or_else(|e| panic!("{e}"));
    // The `interrupt-parent` phandles of other nodes now dangle; dtc -f accepts that.
    let dts = remove_dts_node(&dts, "intc@8000000").unwrap_or_else(|e| panic!("{e}"));
    let no_gic = dir.join("no-gic.dtb");
    dts_to_dtb(&dts, &no_gic).unwrap_or_else(|e| panic!("{e}"));

    let session = machine.dtb(&no_gic).spawn();
    session
        .wait_for_in_order(&["tandem: fatal:", "no GIC"], FATAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A DTB whose header says it ends 8 bytes before the end of its strings block: what a boot
/// loader that copied too little leaves behind. The hypervisor must still find its console
/// (tolerantly, from what is intact) and say the blob is truncated.
///
/// QEMU cannot be handed such a file: `-dtb` validates the blob and rewrites its header.
/// Nor can QEMU 10.0 patch it afterwards with `-device loader,data=...`: such writes did
/// not show in guest memory (checked with the monitor's `xp`), at the DTB (which virt puts
/// at RAM base + 128 MiB, 0x48000000, not at the start of RAM) or anywhere else. So the
/// machine starts halted under QEMU's gdb stub, runs to the hypervisor's first
/// instruction, reads the DTB address from x0 (the arm64 boot protocol), lowers the
/// header's `totalsize` there and lets the hypervisor run.
#[test]
fn truncated_dtb_is_fatal() {
    let machine = Qemu::virt().halted();
    let session = machine.spawn();
    let mut gdb = session.gdb().unwrap_or_else(|e| panic!("{e}"));
    let entry = machine.load_address();
    gdb.run_to(entry, BANNER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}", session.failure(&e)));
    let dtb = gdb.register(0).unwrap_or_else(|e| panic!("{e}"));
    let header = gdb.read_memory(dtb, 40).unwrap_or_else(|e| panic!("{e}"));
    let field = |offset: usize| {
        u32::from_be_bytes([
            header[offset],
            header[offset + 1],
            header[offset + 2],
            header[offset + 3],
        ])
    };
    assert_eq!(
        field(0),
        0xd00d_feed,
        "x0 = {dtb:#x} at entry does not point to a DTB"
    );
    let (off_dt_strings, size_dt_strings) = (field(12), field(32));
    let totalsize = off_dt_strings + size_dt_strings - 8;
    gdb.write_memory(dtb + 4, &totalsize.to_be_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    gdb.resume().unwrap_or_else(|e| panic!("{e}"));

    session
        .wait_for_in_order(&["tandem: fatal:", "truncated"], FATAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(gdb);
}

/// Without `virtualization=on` QEMU starts the CPUs at EL1, where a hypervisor cannot run.
#[test]
fn el1_entry_is_refused() {
    let session = Qemu::virt().el1().spawn();
    session
        .wait_for("tandem: must be entered at EL2", FATAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
}
