//! Interrupts under Tandem, as guests/irq sees them: SGI ping-pong between vCPUs, virtual
//! and EL1 physical timer deadlines, priorities, preemption and active state, and the PL031
//! RTC passed through with its SPI, on GICv3 and GICv2 VMs of 1, 2 and 4 vCPUs. The guest
//! prints one marker per check; each is waited for with its own bound. A second test runs
//! the guest's interrupt storm (a PL031 alarm never cleared, a level interrupt that stays
//! high) in one VM beside the victim guest in another, whose heartbeat must keep going.
//!
//! The same guest also runs natively on QEMU (EL1, no hypervisor) as the baseline: a check
//! that passes there and fails under Tandem is the hypervisor's doing.
//!
//! The latency figures the guest prints (`irq: ... min/median/max ... ticks`) are only
//! reported (on stderr, seen with `--nocapture`): without `-icount` they follow the host's
//! load.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_tests::{dtb_with_fragment, guest_image, scratch_dir, Qemu, Session};

/// Each VM's memory: 64 MiB.
const VM_MEM_SIZE: u64 = 0x400_0000;
const IRQ_MEM: u64 = 0x5000_0000;
const VICTIM_MEM: u64 = 0x6000_0000;
/// Where the boot loader puts the images: outside every VM's memory.
const IRQ_MODULE: u64 = 0x4f00_0000;
const VICTIM_MODULE: u64 = 0x4e00_0000;
/// QEMU virt's PL031 RTC, passed through to the irq VM.
const RTC_NODE: &str = "/pl031@9010000";

/// The checks, in the order the guest runs them, each with how long it may take under TCG
/// on a loaded two-core machine (two tests at a time). The first includes the boot.
const CHECKS: [(&str, Duration); 6] = [
    ("cost", Duration::from_secs(40)),
    ("sgi", Duration::from_secs(40)),
    ("vtimer", Duration::from_secs(15)),
    ("ptimer", Duration::from_secs(15)),
    ("priority", Duration::from_secs(15)),
    // Two alarms a second apart in real time, each allowed 3 s.
    ("spi-hw", Duration::from_secs(20)),
];
/// From the last check to the verdict, and from there to QEMU's exit.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Console lines that mean the hypervisor itself went wrong.
const HYPERVISOR_FAULTS: [&str; 2] = ["tandem: panic", "tandem: exception"];

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A VM node: `label` on the CPUs `cpus` (indices of /cpus/cpu@N) with 64 MiB at `mem`,
/// booting the module at `module`, with `devices` (host node paths) passed through.
fn vm(
    index: u32,
    label: &str,
    cpus: &[u32],
    mem: u64,
    module: (u64, u64),
    bootargs: &str,
    devices: &[&str],
) -> String {
    let (module_at, module_size) = module;
    let cpus: Vec<String> = cpus.iter().map(|c| format!("&{{/cpus/cpu@{c}}}")).collect();
    let devices = if devices.is_empty() {
        String::new()
    } else {
        let refs: Vec<String> = devices.iter().map(|d| format!("&{{{d}}}")).collect();
        format!("devices = <{}>;", refs.join(" "))
    };
    format!(
        r#"
        vm@{index} {{
            compatible = "tandem,vm";
            label = "{label}";
            cpus = <{cpus}>;
            memory = <0x0 {mem:#x} 0x0 {VM_MEM_SIZE:#x}>;
            {devices}
            bootargs = "{bootargs}";
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

/// The `/hypervisor` fragment holding `vms`.
fn hypervisor(vms: &[String]) -> String {
    format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
{}
    }};
}};
"#,
        vms.join("\n")
    )
}

/// A check's marker: `TEST PASS <check>...` or `TEST FAIL <check>: <why>`, the whole line.
enum Verdict {
    Pass(String),
    Fail(String),
}

/// Waits until the console shows `<prefix>TEST PASS <check>` or `<prefix>TEST FAIL
/// <check>:` on a complete line, for at most `timeout`. An error (the console quoted) when
/// neither comes or the hypervisor reports a fault of its own.
fn wait_for_verdict(
    session: &Session,
    prefix: &str,
    check: &str,
    timeout: Duration,
) -> Result<Verdict, String> {
    let pass = format!("{prefix}TEST PASS {check}");
    let fail = format!("{prefix}TEST FAIL {check}:");
    let deadline = Instant::now() + timeout;
    loop {
        let output = session.output();
        // The marker, then the end of the line, a note or the reason (not a longer name),
        // on a complete line: the note may still be on its way.
        let line = |needle: &str| {
            output
                .lines()
                .find(|l| {
                    l.strip_prefix(needle)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ':']))
                        && output.contains(&format!("{l}\n"))
                })
                .map(str::to_string)
        };
        if let Some(found) = line(&pass) {
            return Ok(Verdict::Pass(found));
        }
        if let Some(found) = line(&fail) {
            return Ok(Verdict::Fail(found));
        }
        if let Some(bad) = HYPERVISOR_FAULTS.iter().find(|f| output.contains(*f)) {
            return Err(session.failure(&format!(
                "the hypervisor reported {bad:?} while waiting for check {check}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(session.failure(&format!(
                "no verdict of check {check} within {:.0} s",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for every check's verdict, then the guest's; prints them and the figures to
/// stderr; fails naming every check that failed.
fn expect_all_checks(session: &Session, prefix: &str, what: &str) {
    let mut failed = Vec::new();
    for (check, timeout) in CHECKS {
        match wait_for_verdict(session, prefix, check, timeout) {
            Ok(Verdict::Pass(line)) => eprintln!("{what}: {line}"),
            Ok(Verdict::Fail(line)) => {
                eprintln!("{what}: {line}");
                failed.push(line);
            }
            Err(e) => panic!("{e}"),
        }
    }
    if let Err(e) = wait_for_verdict(session, prefix, "irq", VERDICT_TIMEOUT) {
        panic!("{e}");
    }
    for line in session.output().lines() {
        if line.contains("round trip:")
            || line.contains("latency:")
            || line.contains("counters when")
        {
            eprintln!("{what}: {line}");
        }
    }
    assert!(
        failed.is_empty(),
        "{}",
        session.failure(&format!(
            "{what}: {} checks failed:\n{}",
            failed.len(),
            failed.join("\n")
        ))
    );
}

/// guests/irq in a VM of `cpus` vCPUs (the machine's CPUs 0 to `cpus` - 1) on a GICv`gic`
/// machine, with the PL031 passed through: every check passes, the VM powers off and so
/// does the machine.
fn checks_under_tandem(gic: u8, cpus: u32) {
    let dir = scratch_dir(&format!("irq-gicv{gic}-{cpus}"));
    let image = guest_image("irq").unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<u32> = (0..cpus).collect();
    let fragment = hypervisor(&[vm(
        0,
        "irq",
        &all,
        IRQ_MEM,
        (IRQ_MODULE, size(&image)),
        "",
        &[RTC_NODE],
    )]);
    let machine = Qemu::virt().gic(gic).cpus(cpus).mem("1G");
    let dtb = dtb_with_fragment(&machine, &dir, "irq", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let mut session = machine.dtb(&dtb).loader(&image, IRQ_MODULE).spawn();
    let what = format!("GICv{gic}, {cpus} vCPUs");
    expect_all_checks(&session, "[irq] ", &what);
    for marker in [
        "vm irq: stopped (system-off)",
        "all VMs have stopped: powering off",
    ] {
        session
            .wait_for(marker, VERDICT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let output = session.output();
    let header = format!("[irq] irq: GICv{gic}, {cpus} vCPUs,");
    assert!(output.contains(&header), "no {header:?} line:\n{output}");
    for bad in HYPERVISOR_FAULTS.iter().chain(&["TEST FAIL"]) {
        assert!(!output.contains(bad), "{bad:?} on the console:\n{output}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn irq_gicv3_1_vcpu() {
    checks_under_tandem(3, 1);
}

#[test]
fn irq_gicv3_2_vcpus() {
    checks_under_tandem(3, 2);
}

#[test]
fn irq_gicv3_4_vcpus() {
    checks_under_tandem(3, 4);
}

#[test]
fn irq_gicv2_1_vcpu() {
    checks_under_tandem(2, 1);
}

#[test]
fn irq_gicv2_2_vcpus() {
    checks_under_tandem(2, 2);
}

#[test]
fn irq_gicv2_4_vcpus() {
    checks_under_tandem(2, 4);
}

/// The baseline: the same guest on QEMU without the hypervisor (EL1, QEMU's own GIC and
/// PSCI), where every check must pass too.
fn checks_native(gic: u8) {
    let image = guest_image("irq").unwrap_or_else(|e| panic!("{e}"));
    let mut session = Qemu::virt()
        .el1()
        .gic(gic)
        .cpus(2)
        .mem("1G")
        .kernel(image)
        .spawn();
    expect_all_checks(&session, "", &format!("native GICv{gic}"));
    let status = session
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the guest passed but did not power off: {e}"));
    assert!(status.success(), "QEMU exited with {status}");
}

#[test]
fn irq_native_gicv3() {
    checks_native(3);
}

#[test]
fn irq_native_gicv2() {
    checks_native(2);
}

/// How long the storm must run beside the victim, in victim heartbeats.
const STORM_BEATS: u64 = 8;
/// Interrupts the storm must have taken by its third count line (about 3 s): natively
/// QEMU delivers some 500 000 a second, under Tandem some 25 000.
const STORM_MIN_INTERRUPTS: u64 = 1_000;
const VICTIM_HEARTBEAT_MS: u64 = 250;
/// From QEMU's start to the storm's first interrupt (the alarm is a second ahead).
const STORM_START_TIMEOUT: Duration = Duration::from_secs(40);
/// For the beats to go by once the storm runs.
const STORM_RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The number of the last `<prefix><needle><n>` on the console after byte `from`.
fn last_number(output: &str, from: usize, needle: &str) -> Option<u64> {
    output.get(from..)?.lines().rev().find_map(|line| {
        let rest = &line[line.find(needle)? + needle.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// guests/irq in storm mode on CPU 0 with the PL031, guests/victim on CPU 1: once the
/// storm runs, the victim's heartbeat keeps advancing while the storm's count rises.
///
/// GICv3 only: QEMU's GICv2 model does not signal a still-asserted level interrupt again
/// after the guest deactivates it through a hardware list register (its EOI updates only
/// the virtual CPU interface, hw/intc/arm_gic.c), so there the storm is about one
/// interrupt per second, whenever something else updates the GIC.
fn storm_beside_victim(gic: u8) {
    let dir = scratch_dir(&format!("irq-storm-gicv{gic}"));
    let irq = guest_image("irq").unwrap_or_else(|e| panic!("{e}"));
    let victim = guest_image("victim").unwrap_or_else(|e| panic!("{e}"));
    let fragment = hypervisor(&[
        vm(
            0,
            "irq",
            &[0],
            IRQ_MEM,
            (IRQ_MODULE, size(&irq)),
            "mode=storm",
            &[RTC_NODE],
        ),
        vm(
            1,
            "victim",
            &[1],
            VICTIM_MEM,
            (VICTIM_MODULE, size(&victim)),
            &format!("duration_ms=600000 heartbeat_ms={VICTIM_HEARTBEAT_MS} buffer_kib=256"),
            &[],
        ),
    ]);
    let machine = Qemu::virt().gic(gic).cpus(2).mem("1G");
    let dtb =
        dtb_with_fragment(&machine, &dir, "storm", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&irq, IRQ_MODULE)
        .loader(&victim, VICTIM_MODULE)
        .spawn();
    session
        .wait_for("[irq] irq: storm: first interrupt", STORM_START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let start = session.output().len();
    let beat = "[victim] victim: heartbeat ";
    let count = "[irq] irq: storm: ";
    let deadline = Instant::now() + STORM_RUN_TIMEOUT;
    let first_beat = loop {
        let output = session.output();
        if let Some(n) = last_number(&output, 0, beat) {
            break n;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}",
                session.failure("the victim never printed a heartbeat")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    loop {
        let output = session.output();
        if let Some(bad) = HYPERVISOR_FAULTS
            .iter()
            .chain(&["TEST FAIL"])
            .find(|f| output.contains(*f))
        {
            panic!("{}", session.failure(&format!("{bad:?} during the storm")));
        }
        let beats = last_number(&output, start, beat).unwrap_or(first_beat) - first_beat;
        let counts: Vec<u64> = output[start..]
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(count)? + count.len()..];
                rest.split(' ').next()?.parse().ok()
            })
            .collect();
        if beats >= STORM_BEATS && counts.len() >= 3 {
            assert!(
                counts.windows(2).all(|w| w[0] < w[1])
                    && counts.last().is_some_and(|&n| n >= STORM_MIN_INTERRUPTS),
                "{}",
                session.failure(&format!(
                    "the storm's count does not rise to {STORM_MIN_INTERRUPTS}: {counts:?}"
                ))
            );
            eprintln!(
                "storm GICv{gic}: victim heartbeats {first_beat}..{} while the storm counted {counts:?}",
                first_beat + beats
            );
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}",
                session.failure(&format!(
                    "in {:.0} s of storm the victim beat {beats} times (want {STORM_BEATS}) and the storm printed {} counts (want 3)",
                    STORM_RUN_TIMEOUT.as_secs_f64(),
                    counts.len()
                ))
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(session);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn storm_beside_victim_gicv3() {
    storm_beside_victim(3);
}
