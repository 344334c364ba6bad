//! Isolation under attack: three VMs side by side on their own CPUs. `hostile` attacks the
//! victim's memory, the hypervisor's image, the GIC, unmapped addresses, hypercalls, system
//! registers and wild branches, and checks that every attempt gets the architecturally right
//! answer (guests/hostile); `victim` keeps checking a checksummed buffer all the while;
//! `mem` writes and reads back all of its memory. Nothing may be lost: all three pass, each
//! VM stops by itself, the hypervisor neither panics nor takes an exception, and QEMU
//! powers off.
//!
//! The hostile guest's PRNG seed differs on every run and is printed; set
//! `TANDEM_HOSTILE_SEED=<n>` to replay a failure. The hypervisor's debug log
//! (`.append("tandem.loglevel=debug")`) shows every abort it injects, but makes the run far
//! slower under TCG, so the test does not enable it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_tests::{
    dtb_with_fragment, guest_image, hypervisor_fragment, scratch_dir, Input, Qemu, Session,
};

/// Each VM's memory: 64 MiB.
const VM_MEM_SIZE: u64 = 0x400_0000;
const HOSTILE_MEM: u64 = 0x5000_0000;
const VICTIM_MEM: u64 = 0x6000_0000;
const MEM_MEM: u64 = 0x7000_0000;
/// Where the boot loader puts the images: outside every VM's memory.
const HOSTILE_MODULE: u64 = 0x4f00_0000;
const VICTIM_MODULE: u64 = 0x4e00_0000;
const MEM_MODULE: u64 = 0x4d00_0000;
/// QEMU's direct boot loads the hypervisor here (RAM base + 2 MiB).
const HYP_BASE: u64 = 0x4020_0000;
/// virt's GIC: distributor, CPU interfaces (v2), ITS (v3) and redistributors, below the
/// UART at 0x09000000.
const GIC_BASE: u64 = 0x0800_0000;
const GIC_SIZE: u64 = 0x100_0000;
/// Rounds of the hostile guest, each one attack of each of its 17 kinds, spread over
/// `HOSTILE_DURATION_MS` of guest time (TCG keeps it close to wall time).
const HOSTILE_ROUNDS: u64 = 200;
const HOSTILE_DURATION_MS: u64 = 2_000;
/// How long the victim keeps checking: well past the hostile guest's last attack. The
/// machine runs every vCPU on one host thread, so a busy neighbour (the mem guest) can
/// slow the hostile guest's rounds to more than twice their nominal time on a loaded
/// two-core host: 4 s was seen to fall short.
const VICTIM_DURATION_MS: u64 = 8_000;
const VICTIM_HEARTBEAT_MS: u64 = 100;
/// From QEMU's start to every guest's verdict (about 5 s on an idle machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// From the last verdict to QEMU's exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// The hypervisor's footprint: `image_size` of its Image header (bytes 16-23), which covers
/// .bss, its heap and stacks.
fn hyp_image_size() -> u64 {
    let path = Input::HypBin.path().unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let field: [u8; 8] = bytes
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("{} is too short for an Image header", path.display()));
    u64::from_le_bytes(field)
}

/// The seed from `TANDEM_HOSTILE_SEED`, or a new one from the clock.
fn seed() -> u64 {
    match std::env::var("TANDEM_HOSTILE_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("TANDEM_HOSTILE_SEED={text}: {e}")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000),
    }
}

/// A VM `label` on the CPU `cpu` with 64 MiB at `mem`, booting the module at `module_at`.
fn vm(index: u32, label: &str, cpu: &str, mem: u64, module: (u64, u64), bootargs: &str) -> String {
    let (module_at, module_size) = module;
    format!(
        r#"
        vm@{index} {{
            compatible = "tandem,vm";
            label = "{label}";
            cpus = <&{{/cpus/{cpu}}}>;
            memory = <0x0 {mem:#x} 0x0 {VM_MEM_SIZE:#x}>;
            bootargs = "{bootargs}";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{module_at:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {module_at:#x} 0x0 {module_size:#x}>;
            }};
        }};"#
    )
}

/// Index of the first line at or after `from` that contains `needle`.
fn line_index(lines: &[&str], from: usize, needle: &str) -> Option<usize> {
    lines
        .iter()
        .skip(from)
        .position(|l| l.contains(needle))
        .map(|i| i + from)
}

/// The victim kept its heartbeat while the hostile guest attacked, and checked its buffer
/// for the last time after the last attack.
fn check_overlap(session: &Session, output: &str, seed: u64) {
    let lines: Vec<&str> = output.lines().collect();
    let fail = |what: &str| -> ! {
        panic!(
            "{} (seed {seed})",
            session.failure(&format!("{what}\n--- whole console ---\n{output}"))
        )
    };
    let Some(first_round) = line_index(&lines, 0, "[hostile] hostile: round ") else {
        fail("no progress line from the hostile guest")
    };
    let Some(hostile_pass) = line_index(&lines, first_round, "[hostile] TEST PASS hostile") else {
        fail("no TEST PASS hostile after its first round")
    };
    let beats = lines[first_round..hostile_pass]
        .iter()
        .filter(|l| l.contains("[victim] victim: heartbeat "))
        .count();
    if beats == 0 {
        fail("no victim heartbeat while the hostile guest was attacking");
    }
    if line_index(&lines, hostile_pass, "[victim] TEST PASS victim").is_none() {
        fail(
            "the victim finished before the hostile guest's last attack: raise \
             VICTIM_DURATION_MS or lower HOSTILE_DURATION_MS",
        );
    }
    if line_index(&lines, hostile_pass, "[victim] victim: heartbeat ").is_none() {
        fail("no victim heartbeat after the hostile guest's last attack");
    }
}

fn hostile_beside_victim(gic: u8) {
    let dir = scratch_dir(&format!("hostile-gicv{gic}"));
    let hostile = guest_image("hostile").unwrap_or_else(|e| panic!("{e}"));
    let victim = guest_image("victim").unwrap_or_else(|e| panic!("{e}"));
    let mem = guest_image("mem").unwrap_or_else(|e| panic!("{e}"));
    let seed = seed();
    eprintln!("hostile guest seed {seed} (replay with TANDEM_HOSTILE_SEED={seed})");
    let hostile_args = format!(
        "victim={VICTIM_MEM:#x},{VM_MEM_SIZE:#x} hyp={HYP_BASE:#x},{:#x} \
         gic={GIC_BASE:#x},{GIC_SIZE:#x} seed={seed} rounds={HOSTILE_ROUNDS} duration_ms={HOSTILE_DURATION_MS}",
        hyp_image_size()
    );
    let victim_args =
        format!("duration_ms={VICTIM_DURATION_MS} heartbeat_ms={VICTIM_HEARTBEAT_MS}");
    let fragment = hypervisor_fragment(&[
        vm(
            0,
            "hostile",
            "cpu@1",
            HOSTILE_MEM,
            (HOSTILE_MODULE, size(&hostile)),
            &hostile_args,
        ),
        vm(
            1,
            "victim",
            "cpu@2",
            VICTIM_MEM,
            (VICTIM_MODULE, size(&victim)),
            &victim_args,
        ),
        vm(2, "mem", "cpu@3", MEM_MEM, (MEM_MODULE, size(&mem)), ""),
    ]);
    let machine = Qemu::virt().gic(gic).cpus(4).mem("2G");
    let dtb =
        dtb_with_fragment(&machine, &dir, "hostile", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine
        .dtb(&dtb)
        .loader(&hostile, HOSTILE_MODULE)
        .loader(&victim, VICTIM_MODULE)
        .loader(&mem, MEM_MODULE)
        .spawn();
    let deadline = Instant::now() + RUN_TIMEOUT;
    for marker in [
        &format!("[hostile] hostile: seed {seed}"),
        // The range the hostile guest was pointed at is the victim's own.
        &format!(
            "[victim] victim: memory {VICTIM_MEM:#x}..{:#x}",
            VICTIM_MEM + VM_MEM_SIZE
        ),
        "[victim] victim: buffer ",
        "[mem] TEST PASS mem",
        "vm mem: stopped (system-off)",
        "[hostile] TEST PASS hostile",
        "vm hostile: stopped (system-off)",
        "[victim] TEST PASS victim",
        "vm victim: stopped (system-off)",
        "all VMs have stopped: powering off",
    ] {
        session
            .wait_for(marker, deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("{e}\n(hostile guest seed {seed})"));
    }
    session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let output = session.output();
    for bad in ["TEST FAIL", "tandem: panic", "tandem: exception"] {
        assert!(
            !output.contains(bad),
            "{bad:?} on the console (seed {seed}):\n{output}"
        );
    }
    check_overlap(&session, &output, seed);
    // What each attack got, for whoever runs with --nocapture.
    for line in output
        .lines()
        .filter(|l| l.contains("hostile:") || l.contains(": exits:"))
    {
        eprintln!("{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hostile_beside_victim_gicv3() {
    hostile_beside_victim(3);
}

#[test]
fn hostile_beside_victim_gicv2() {
    hostile_beside_victim(2);
}
