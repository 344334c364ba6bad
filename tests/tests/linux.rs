//! Unmodified Linux (Debian's arm64 kernel) as a guest beside the secure guest, on QEMU virt
//! with GICv3: it finds the virtual GIC and timer, brings up its three vCPUs with PSCI and
//! SGIs, and boots to the point of mounting its root file system (this test gives it no
//! initramfs, so it stops there; `linux_userspace.rs` goes on to user space), while the
//! secure guest's heartbeat goes on.

use std::path::Path;
use std::time::Duration;

use tandem_tests::{dtb_with_fragment, guest_image, scratch_dir, Input, Qemu};

/// Linux's boot under single-threaded TCG, with room for a loaded machine.
const LINUX_TIMEOUT: Duration = Duration::from_secs(180);

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

#[test]
fn linux_boots_beside_the_secure_guest_gicv3() {
    let dir = scratch_dir("linux");
    let linux = Input::LinuxImage.path().unwrap_or_else(|e| panic!("{e}"));
    let secure = guest_image("secure").unwrap_or_else(|e| panic!("{e}"));
    let fragment = format!(
        r#"
/ {{
    hypervisor {{
        compatible = "tandem,hypervisor";
        #address-cells = <2>;
        #size-cells = <2>;
        vm@0 {{
            compatible = "tandem,vm";
            label = "linux";
            cpus = <&{{/cpus/cpu@0}} &{{/cpus/cpu@1}} &{{/cpus/cpu@2}}>;
            memory = <0x0 0x50000000 0x0 0x40000000>;
            bootargs = "console=ttyAMA0 earlycon";
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@49000000 {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 0x49000000 0x0 {linux_size:#x}>;
            }};
        }};
        vm@1 {{
            compatible = "tandem,vm";
            label = "secure";
            tandem,isolated;
            cpus = <&{{/cpus/cpu@3}}>;
            memory = <0x0 0x90000000 0x0 0x4000000>;
            #address-cells = <2>;
            #size-cells = <2>;
            kernel@4f000000 {{
                compatible = "multiboot,kernel", "multiboot,module";
                reg = <0x0 0x4f000000 0x0 {secure_size:#x}>;
            }};
        }};
    }};
}};
"#,
        linux_size = size(&linux),
        secure_size = size(&secure),
    );
    let machine = Qemu::virt().gic(3).cpus(4).mem("2G").multithreaded();
    let dtb =
        dtb_with_fragment(&machine, &dir, "linux", &fragment).unwrap_or_else(|e| panic!("{e}"));
    let session = machine
        .dtb(&dtb)
        .loader(&linux, 0x4900_0000)
        .loader(&secure, 0x4f00_0000)
        .spawn();
    session
        .wait_for_in_order(
            &[
                "[linux] [    0.000000] Booting Linux on physical CPU 0x0000000000",
                "[linux] [    0.000000] psci: PSCIv1.1 detected in firmware.",
                "GICv3: 128 SPIs implemented",
                "arch_timer: cp15 timer(s) running at",
                "smp: Brought up 1 node, 3 CPUs",
                "VFS: Unable to mount root fs",
            ],
            LINUX_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let output = session.output();
    let beats = output.matches("[secure] secure: heartbeat").count();
    assert!(
        beats >= 1,
        "the secure guest's heartbeat stopped while Linux booted:\n{output}"
    );
    assert!(
        !output.contains("tandem: panic") && !output.contains("tandem: exception"),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
