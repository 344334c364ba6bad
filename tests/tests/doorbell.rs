//! Shared memory and doorbells: two VMs share a region (`shmem@0`) and pass a counter back
//! and forth through it, each waking the other with the `TANDEM_DOORBELL` hypercall
//! (guests/doorbell), on GICv3 and GICv2.

use std::path::Path;
use std::time::Duration;

use tandem_tests::{dtb_with_fragment, guest_image, scratch_dir, Qemu};

/// Boot, 100 round trips under TCG with another test beside it, and the exits.
const TIMEOUT: Duration = Duration::from_secs(60);

const PING_AT: u64 = 0x4e00_0000;
const PONG_AT: u64 = 0x4f00_0000;
const SHARED: u64 = 0x5800_0000;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

fn vm(index: u32, role: &str, cpu: u32, mem: u64, module: u64, module_size: u64) -> String {
    format!(
        r#"
        vm@{index} {{
            compatible = "tandem,vm";
            label = "{role}";
            cpus = <&{{/cpus/cpu@{cpu}}}>;
            memory = <0x0 {mem:#x} 0x0 0x4000000>;
            bootargs = "role={role} rounds=100";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{module:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {module:#x} 0x0 {module_size:#x}>;
            }};
        }};"#
    )
}

fn ping_pong(gic: u8) {
    let dir = scratch_dir(&format!("doorbell-v{gic}"));
    let guest = guest_image("doorbell").unwrap_or_else(|e| panic!("{e}"));
    let len = size(&guest);
    let fragment = format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
{}
{}
        shmem@0 {{
            compatible = "tandem,shmem";
            memory = <0x0 {SHARED:#x} 0x0 0x1000>;
            vms = <&{{/hypervisor/vm@0}} &{{/hypervisor/vm@1}}>;
            doorbells = <100 101>;
        }};
    }};
}};
"#,
        vm(0, "ping", 1, 0x5000_0000, PING_AT, len),
        vm(1, "pong", 2, 0x5400_0000, PONG_AT, len),
    );
    let machine = Qemu::virt().gic(gic).cpus(4).mem("2G");
    let dtb =
        dtb_with_fragment(&machine, &dir, "doorbell", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine
        .dtb(&dtb)
        .loader(&guest, PING_AT)
        .loader(&guest, PONG_AT)
        .spawn();
    for needle in [
        "[ping] TEST PASS doorbell",
        "[pong] TEST PASS doorbell",
        "all VMs have stopped: powering off",
    ] {
        session
            .wait_for(needle, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    session.wait_exit(TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let trips = output
        .lines()
        .find(|l| l.contains("round trips:"))
        .unwrap_or("(no round-trip line)");
    eprintln!("GICv{gic}: {trips}");
    // 100 rings each way; ping's refused ring is not counted.
    for vm in ["ping", "pong"] {
        assert!(
            output
                .lines()
                .any(|l| l.contains(&format!("vm {vm}: exits:"))
                    && l.contains("doorbells rung 100 received 100")),
            "vm {vm}: want 100 doorbells rung and received:\n{output}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ping_pong_through_shared_memory_gicv3() {
    ping_pong(3);
}

#[test]
fn ping_pong_through_shared_memory_gicv2() {
    ping_pong(2);
}
