//! Measured launch and attestation: the default layout with a device secret, the secure
//! guest (test build) with `tandem,attestation` and restarted on a crash. Linux's initramfs
//! runs the vsock sequence (which crashes the secure guest: it restarts) and then
//! `tandem.test=attest` as a relying party: `tandem-client attest` with the expected image
//! digest (`cargo xtask measure` computes the same) and the device key pinned.
//!
//! Checked: the report verifies and names the genuine image; the certified VM key is the
//! one derived from the device secret and the measurements (so the identity is the same
//! after the restart); a saved report replayed against a fresh nonce is refused; a wrong
//! expected digest fails; Linux cannot reach the device secret (in the host DTB) or the
//! secure guest's memory through `/dev/mem`, and neither the device secret nor the secure
//! guest's CDI is anywhere in Linux's RAM while the CDI is in the secure guest's. A
//! modified secure guest image boots with another measurement, and the check against the
//! genuine digest fails.

use std::path::Path;
use std::time::Duration;

use tandem_proto::attest;
use tandem_tests::{default_layout, guest_image, hex, physical_memory, scratch_dir, Session};

const TIMEOUT: Duration = Duration::from_secs(300);
/// The device secret the test gives the board.
const UDS: [u8; 32] = [
    0x5a, 0x17, 0x9c, 0x03, 0xe8, 0x41, 0x6d, 0xb2, 0x0f, 0x93, 0x7e, 0x25, 0xc4, 0x58, 0xa1, 0x3b,
    0x66, 0xd0, 0x0c, 0x9f, 0x72, 0x1e, 0xb5, 0x48, 0x83, 0x2a, 0xf7, 0x61, 0x0d, 0xbe, 0x34, 0xc9,
];
const LINUX_RAM: (u64, u64) = (0x5000_0000, 0x4000_0000);
const SECURE_RAM: (u64, u64) = (0x9000_0000, 0x400_0000);

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The default layout with the device secret and the attesting secure guest from `image`.
fn boot(dir: &Path, image: &Path, bootargs: &str, qmp: &Path) -> Session {
    let secret: Vec<String> = UDS.iter().map(|b| format!("{b:02x}")).collect();
    let extra = format!(
        r#"
/ {{
    hypervisor {{
        tandem,device-secret = [{}];
        vm@0 {{
            bootargs = "{bootargs}";
        }};
        vm@1 {{
            tandem,attestation;
            tandem,on-crash = "restart";
            kernel@49000000 {{
                xtask,file = "{}";
            }};
        }};
    }};
}};
"#,
        secret.join(" "),
        image.display()
    );
    default_layout(3, &extra, dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .arg("-qmp")
        .arg(&format!("unix:{},server=on,wait=off", qmp.display()))
        .spawn()
}

/// The text after `tandem-test: <prefix>` on the last line that has it.
fn result<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    let needle = format!("tandem-test: {prefix}");
    output
        .lines()
        .rev()
        .find_map(|l| l.split_once(&needle).map(|(_, rest)| rest.trim()))
}

fn memory(socket: &Path, dir: &Path, (base, size): (u64, u64)) -> Vec<u8> {
    physical_memory(socket, dir, base, size).unwrap_or_else(|e| panic!("{e}"))
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_secure_guest_proves_what_it_runs() {
    let dir = scratch_dir("attest");
    let qmp_socket = dir.join("qmp.sock");
    let image = guest_image("secure-test").unwrap_or_else(|e| panic!("{e}"));
    let genuine = attest::sha256(&std::fs::read(&image).unwrap_or_else(|e| panic!("{e}")));
    let device_key = hex(&*attest::device_key(&UDS).pk);
    let bootargs = format!(
        "console=ttyAMA0 earlycon tandem.test=vsock,attest,poweroff tandem.crash=1 \
         tandem.expect={} tandem.root={device_key} tandem.wrong-expect=1 \
         tandem.devmem=read:0x48000000,read:0x90000000,read:0x40200000,read:0x94100000",
        hex(&genuine)
    );
    let session = boot(&dir, &image, &bootargs, &qmp_socket);
    session
        .wait_for("tandem-test: attest done", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .wait_for("vm linux: stopped (system-off)", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let fail = |what: &str| -> ! { panic!("{}", session.failure(what)) };

    // The hypervisor names the device key the secret gives.
    if !output.contains(&format!("device key {device_key}")) {
        fail("the hypervisor's device key is not the one the secret derives");
    }
    // The secure guest restarted (crash), and was measured the same both times.
    let ready: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("vm secure: measured image"))
        .map(|l| l.split_once("measured").map_or(l, |(_, r)| r))
        .collect();
    if ready.len() < 2 || ready.iter().any(|r| *r != ready[0]) {
        fail(&format!("measurements at each load: {ready:?}"));
    }

    // The report: verified, the genuine image, the pinned device, the derived VM key.
    if result(&output, "attest exit") != Some("0") || result(&output, "attest: verified").is_none()
    {
        fail("the genuine secure guest did not attest");
    }
    if result(&output, "image: ") != Some(hex(&genuine).as_str()) {
        fail("the report names another image");
    }
    let config: [u8; 32] = unhex(result(&output, "config: ").unwrap_or_default())
        .try_into()
        .unwrap_or_else(|_| fail("no config digest in the report"));
    let cdi = attest::derive_cdi(&UDS, &genuine, &config);
    let vm_key = hex(&*attest::vm_key(&cdi).pk);
    if result(&output, "vm key: ") != Some(vm_key.as_str()) {
        fail(&format!(
            "the certified VM key is not {vm_key}, the one the chain derives"
        ));
    }
    if result(&output, "replay exit") != Some("1")
        || !output.contains("the report answers another nonce")
    {
        fail("a replayed report was not refused");
    }
    if result(&output, "wrong expect exit") != Some("1") {
        fail("a wrong expected digest did not fail the check");
    }

    // Nothing secret within Linux's reach.
    let devmem: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("tandem-test: devmem ").map(|(_, r)| r))
        .collect();
    if devmem.len() != 4 || devmem.iter().any(|l| !l.ends_with("SIGBUS")) {
        fail(&format!("/dev/mem attacks: {devmem:?}"));
    }
    let secure = memory(&qmp_socket, &dir, SECURE_RAM);
    if !holds(&secure, &cdi) {
        fail("the CDI is not in the secure guest's memory: the scan cannot be trusted");
    }
    let linux = memory(&qmp_socket, &dir, LINUX_RAM);
    if holds(&linux, &cdi) || holds(&linux, &UDS) {
        fail("the CDI or the device secret is in Linux's memory");
    }
    drop(session);

    // Another image: another measurement, and the check against the genuine one fails.
    let mut modified = std::fs::read(&image).unwrap_or_else(|e| panic!("{e}"));
    modified.extend_from_slice(b"a vendor's unreviewed patch");
    let other = dir.join("secure-modified.bin");
    std::fs::write(&other, &modified).unwrap_or_else(|e| panic!("{e}"));
    let dir2 = scratch_dir("attest-modified");
    let qmp2 = dir2.join("qmp.sock");
    let session = boot(
        &dir2,
        &other,
        &format!(
            "console=ttyAMA0 earlycon tandem.test=attest,poweroff tandem.expect={} tandem.root={device_key}",
            hex(&genuine)
        ),
        &qmp2,
    );
    session
        .wait_for("tandem-test: attest done", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    if result(&output, "attest exit") != Some("1") || !output.contains("is not the expected") {
        panic!(
            "{}",
            session.failure("a modified image passed the check against the genuine digest")
        );
    }
}
