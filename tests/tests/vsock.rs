//! The secure guest at work: Linux (the shipped default layout) reaches the secure guest's
//! signing service over `AF_VSOCK` with Debian's stock modules and `tandem-client`, and
//! attacks it. Its initramfs, told `tandem.test=vsock`, signs and verifies, sends malformed
//! requests, reads the secure guest's and the hypervisor's memory through `/dev/mem`, floods
//! the service, measures it, and (`tandem.crash=1`) makes the secure guest crash on purpose
//! and waits for it to come back. The test checks every answer, that the tag is the real
//! HMAC-SHA256 under the key the secure guest was built with, and that the key is nowhere in
//! Linux's memory while it is in the secure guest's.

use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tandem_tests::{
    default_layout, dtb_with_fragment, guest_image, hex, physical_memory, scratch_dir,
    shipped_config, vm_bootargs, Input, Qemu, Session,
};

/// Linux to user space and the service answering: 20-40 s of wall time under MTTCG.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(180);
/// The whole sequence after that: attacks, a 5 s flood, 200 timed requests, a crash and
/// the restart (the client retries for up to 60 s).
const SEQUENCE_TIMEOUT: Duration = Duration::from_secs(300);
/// raspi4b runs on one host thread (no MTTCG): Linux takes a few times longer.
const RASPI_TIMEOUT: Duration = Duration::from_secs(400);
/// What the init script signs.
const MESSAGE: &[u8] = b"tandem says hello\n";
/// Linux's memory in configs/virt.dtsi, and the secure guest's.
const LINUX_RAM: (u64, u64) = (0x5000_0000, 0x4000_0000);
const SECURE_RAM: (u64, u64) = (0x9000_0000, 0x400_0000);

/// The default layout with the test build of the secure guest (it honours the crash
/// request) restarted on a crash, Linux told `tandem.test=<test>`.
fn boot(gic: u8, bootargs: &str, dir: &Path, monitor: &Path) -> Session {
    let secure = "\n/ {\n    hypervisor {\n        vm@1 {\n            tandem,on-crash = \"restart\";\n            kernel@49000000 {\n                xtask,file = \"@guest:secure-test\";\n            };\n        };\n    };\n};\n";
    let extra = format!("{}{secure}", vm_bootargs("vm@0", bootargs));
    default_layout(gic, &extra, dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .arg("-qmp")
        .arg(&format!("unix:{},server=on,wait=off", monitor.display()))
        .spawn()
}

/// The text after `tandem-test: <prefix>` on the first line that has it.
fn result<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    let needle = format!("tandem-test: {prefix}");
    output
        .lines()
        .find_map(|l| l.split_once(&needle).map(|(_, rest)| rest.trim()))
}

fn key() -> Vec<u8> {
    let path = Input::SecureKey.path().unwrap_or_else(|e| panic!("{e}"));
    let key = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(key.len(), 32, "{}: not a 32-byte key", path.display());
    key
}

/// Whether `needle` occurs in physical memory `[base, base + size)` of the machine.
fn memory_holds(socket: &Path, dir: &Path, (base, size): (u64, u64), needle: &[u8]) -> bool {
    physical_memory(socket, dir, base, size)
        .unwrap_or_else(|e| panic!("{e}"))
        .windows(needle.len())
        .any(|w| w == needle)
}

fn secure_channel(gic: u8, name: &str) {
    let dir = scratch_dir(name);
    let socket = dir.join("qmp.sock");
    let session = boot(
        gic,
        "console=ttyAMA0 earlycon tandem.test=vsock,poweroff tandem.crash=1",
        &dir,
        &socket,
    );
    session
        .wait_for("tandem-test: vsock service up", SERVICE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for("tandem-test: vsock done", SEQUENCE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for("vm linux: stopped (system-off)", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let fail = |what: &str| -> ! { panic!("{}", session.failure(what)) };

    // The tag is HMAC-SHA256 over the message under the key the secure guest holds.
    let key = key();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap_or_else(|e| panic!("{e}"));
    mac.update(MESSAGE);
    let expected = hex(&mac.finalize().into_bytes());
    match result(&output, "sign ") {
        Some(line) if line.starts_with(&expected) => {}
        other => fail(&format!("sign printed {other:?}, not the tag {expected}")),
    }
    if !result(&output, "verify good: ").is_some_and(|l| l.ends_with("valid")) {
        fail("the service did not find its own tag valid");
    }
    if !result(&output, "verify tampered: ").is_some_and(|l| l.ends_with("INVALID")) {
        fail("the service found a tampered message valid");
    }

    // Malformed requests: each gets its error answer and the service goes on.
    for attack in [
        "garbage",
        "badlen",
        "short-verify",
        "unknown-op",
        "replay",
        "truncated",
    ] {
        if result(&output, &format!("attack {attack} ")) != Some("ok") {
            fail(&format!("attack {attack} was not answered as it should be"));
        }
    }

    // /dev/mem cannot reach the secure guest, its rings or the hypervisor.
    let devmem: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("tandem-test: devmem ").map(|(_, r)| r))
        .collect();
    if devmem.len() < 4 || devmem.iter().any(|l| !l.ends_with("SIGBUS")) {
        fail(&format!("/dev/mem attacks: {devmem:?}"));
    }

    // The flood: everything sent is answered, and Linux stays responsive.
    match result(&output, "flood ") {
        Some(l) if l.contains(" lost 0 errors 0 ") => {}
        other => fail(&format!("flood: {other:?}")),
    }
    if result(&output, "responsive during flood").is_none() {
        fail("Linux was not responsive during the flood");
    }
    if result(&output, "bench: ").is_none() {
        fail("no bench figures");
    }

    // The crash: logged, the VM restarted, the client saw an error, then service again.
    session
        .wait_for_in_order(
            &[
                "vm secure: crashed (",
                "vm secure: restarted (crashed)",
                "tandem-test: recovered after crash: ",
            ],
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    if result(&output, "after crash first error: ").is_none() {
        fail("the client never saw the secure guest down");
    }

    // The key: in the secure guest's memory (the scan works), nowhere in Linux's.
    if !memory_holds(&socket, &dir, SECURE_RAM, &key) {
        fail("the key is not in the secure guest's memory: the scan cannot be trusted");
    }
    if memory_holds(&socket, &dir, LINUX_RAM, &key) {
        fail("the signing key is in Linux's memory");
    }

    // The secure guest went on after Linux stopped; the hypervisor never faltered.
    let after = session.output();
    for bad in ["tandem: panic", "tandem: exception", "all VMs have stopped"] {
        if after.contains(bad) {
            fail(&format!("the hypervisor printed {bad:?}"));
        }
    }
    let beats = after.matches("secure: heartbeat").count();
    let started = Instant::now();
    session
        .wait_for_count("secure: heartbeat", beats + 2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e} after {:?}", started.elapsed()));
}

#[test]
fn linux_uses_and_attacks_the_secure_service_gicv3() {
    secure_channel(3, "vsock-v3");
}

#[test]
fn linux_uses_and_attacks_the_secure_service_gicv2() {
    secure_channel(2, "vsock-v2");
}

/// The same channel on QEMU raspi4b (GIC-400, Debian's bcm2711-rpi-4-b.dtb,
/// configs/raspi4b.dtsi): the service answers, signs with the built-in key, refuses
/// malformed input, `/dev/mem` cannot reach the secure guest, its rings or the hypervisor
/// (this layout's addresses), and a flood loses nothing.
#[test]
fn linux_uses_the_secure_service_on_raspi4b() {
    let dir = scratch_dir("vsock-raspi4b");
    let session = Qemu::raspi4b()
        .config(
            &shipped_config("raspi4b"),
            &vm_bootargs(
                "vm@0",
                "console=ttyAMA0 earlycon tandem.test=vsock,poweroff \
                 tandem.devmem=read:0x30000000,write:0x30000000,read:0x200000,read:0x34100000",
            ),
            &dir,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .spawn();
    session
        .wait_for("tandem-test: vsock service up", RASPI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for("tandem-test: vsock done", RASPI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let fail = |what: &str| -> ! { panic!("{}", session.failure(what)) };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key()).unwrap_or_else(|e| panic!("{e}"));
    mac.update(MESSAGE);
    let expected = hex(&mac.finalize().into_bytes());
    if !result(&output, "sign ").is_some_and(|l| l.starts_with(&expected)) {
        fail(&format!("sign did not print the tag {expected}"));
    }
    if !result(&output, "verify tampered: ").is_some_and(|l| l.ends_with("INVALID")) {
        fail("the service found a tampered message valid");
    }
    for attack in ["garbage", "badlen", "replay"] {
        if result(&output, &format!("attack {attack} ")) != Some("ok") {
            fail(&format!("attack {attack} was not answered as it should be"));
        }
    }
    let devmem: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("tandem-test: devmem ").map(|(_, r)| r))
        .collect();
    let probed = ["0x30000000", "0x200000", "0x34100000"];
    if devmem.len() != 4
        || devmem.iter().any(|l| !l.ends_with("SIGBUS"))
        || !probed.iter().all(|a| devmem.iter().any(|l| l.contains(a)))
    {
        fail(&format!("/dev/mem attacks: {devmem:?}"));
    }
    if !result(&output, "flood ").is_some_and(|l| l.contains(" lost 0 errors 0 ")) {
        fail("the flood lost requests");
    }
}

/// Linux reboots with connections busy (`tandem.test=midstream,reboot`, again on every
/// boot): the secure guest neither restarts nor stops, and serves the next Linux as it
/// served the first, with the same key.
fn reboot_mid_stream(gic: u8) {
    let dir = scratch_dir(&format!("vsock-reboot-v{gic}"));
    let session = default_layout(
        gic,
        &vm_bootargs(
            "vm@0",
            "console=ttyAMA0 earlycon tandem.test=midstream,reboot",
        ),
        &dir,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .spawn();
    session
        .wait_for_in_order(
            &[
                "tandem-test: mid-stream: 2 connections busy",
                "vm linux: restarted (system-reset)",
            ],
            SERVICE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for_count("tandem-test: sign ", 2, SERVICE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let tags: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("tandem-test: sign ").map(|(_, t)| t.trim()))
        .collect();
    if tags.len() < 2 || tags[0] != tags[1] || tags[0].len() < 64 {
        panic!(
            "{}",
            session.failure(&format!("the signatures before and after: {tags:?}"))
        );
    }
    for bad in [
        "vm secure: restarted",
        "vm secure: crashed",
        "vm secure: stopped",
        "tandem: panic",
        "tandem: exception",
    ] {
        if output.contains(bad) {
            panic!("{}", session.failure(&format!("printed {bad:?}")));
        }
    }
}

#[test]
fn linux_rebooting_mid_stream_leaves_the_secure_guest_alone_gicv3() {
    reboot_mid_stream(3);
}

#[test]
fn linux_rebooting_mid_stream_leaves_the_secure_guest_alone_gicv2() {
    reboot_mid_stream(2);
}

/// A hostile bare-metal guest in Linux's place breaks its vsock virtqueues every way it
/// can (guests/vqhostile): each time the device ends in DEVICE_NEEDS_RESET and comes back
/// after a reset, the hypervisor logs it, and the secure guest serving the device goes on.
fn hostile_driver(gic: u8) {
    let dir = scratch_dir(&format!("vsock-hostile-v{gic}"));
    let hostile = guest_image("vqhostile").unwrap_or_else(|e| panic!("{e}"));
    let secure = guest_image("secure").unwrap_or_else(|e| panic!("{e}"));
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    const HOSTILE_AT: u64 = 0x4e00_0000;
    const SECURE_AT: u64 = 0x4900_0000;
    let fragment = format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
        vm@0 {{
            compatible = "tandem,vm";
            label = "vqhostile";
            cpus = <&{{/cpus/cpu@0}}>;
            memory = <0x0 0x50000000 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{HOSTILE_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {HOSTILE_AT:#x} 0x0 {:#x}>;
            }};
        }};
        vm@1 {{
            compatible = "tandem,vm";
            label = "secure";
            tandem,isolated;
            cpus = <&{{/cpus/cpu@1}}>;
            memory = <0x0 0x90000000 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@{SECURE_AT:x} {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 {SECURE_AT:#x} 0x0 {:#x}>;
            }};
        }};
        vsock@0 {{
            compatible = "tandem,vsock";
            vms = <&{{/hypervisor/vm@0}} &{{/hypervisor/vm@1}}>;
            window = <0x0 0x0b000000>;
            memory = <0x0 0x94100000 0x0 0x10000>;
            spis = <48 102>;
        }};
    }};
}};
"#,
        len(&hostile),
        len(&secure)
    );
    let machine = Qemu::virt().gic(gic).cpus(2).mem("2G");
    let dtb =
        dtb_with_fragment(&machine, &dir, "vqhostile", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&hostile, HOSTILE_AT)
        .loader(&secure, SECURE_AT)
        .spawn();
    session
        .wait_for("[vqhostile] TEST PASS vqhostile", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let answered = output.matches("needs reset, reset OK").count();
    let logged = output
        .matches("the driver broke a virtqueue: the device needs a reset")
        .count();
    if answered != 8 || logged < 8 {
        panic!(
            "{}",
            session.failure(&format!(
                "{answered} attacks answered with a reset, {logged} logged; want 8 each"
            ))
        );
    }
    for bad in ["tandem: panic", "tandem: exception", "vm secure: stopped"] {
        if output.contains(bad) {
            panic!("{}", session.failure(&format!("printed {bad:?}")));
        }
    }
    let beats = output.matches("secure: heartbeat").count();
    session
        .wait_for_count("secure: heartbeat", beats + 2, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_hostile_driver_breaking_its_virtqueues_harms_nobody_gicv3() {
    hostile_driver(3);
}

#[test]
fn a_hostile_driver_breaking_its_virtqueues_harms_nobody_gicv2() {
    hostile_driver(2);
}
