//! SHA-256 with the Armv8 cryptographic extension, when the CPU has it: the digests of
//! measured launch (the hypervisor's own code, a VM's images) are the bulk of start-up
//! under software SHA-256 (about 20 instructions a byte), and the extension takes a few.
//! Without it (the Raspberry Pi 4's Cortex-A72 has none), the portable code of
//! `tandem_proto::attest` does the work; both give the same digest, which a known answer
//! checks on first use.
//!
//! The hypervisor is built soft-float: nothing else at EL2 touches the SIMD registers, so
//! the block function saves the ones it uses and puts them back. They belong to the guest
//! whose CPU this is; hashing happens only at start-up (before any guest runs) and when a
//! VM restarts on one of its own CPUs, whose guest state is about to be reset. (Writing a
//! SIMD register zeroes the upper bits of the SVE register it is part of: nothing outside
//! those two moments may call this.)

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

use tandem_proto::attest::{self, Digest};

/// The round constants (FIPS 180-4 §4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 of "abc" (FIPS 180-4's first example).
const ABC: Digest = [
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
];

/// Whether the extension is used: 0 not decided yet, 1 yes, 2 no.
static USE_EXTENSION: AtomicU8 = AtomicU8::new(0);

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    let decided = match USE_EXTENSION.load(Ordering::Relaxed) {
        0 => {
            let present = has_extension();
            let usable = present && with_extension(b"abc") == ABC;
            if present && !usable {
                log::warn!("sha256: the CPU's SHA-256 instructions give a wrong digest: not used");
            }
            USE_EXTENSION.store(if usable { 1 } else { 2 }, Ordering::Relaxed);
            usable
        }
        state => state == 1,
    };
    if decided {
        with_extension(data)
    } else {
        attest::sha256(data)
    }
}

/// ID_AA64ISAR0_EL1.SHA2 (bits [15:12]) is at least 1: SHA256H, SHA256H2, SHA256SU0 and
/// SHA256SU1 are implemented.
fn has_extension() -> bool {
    let isar0: u64;
    // SAFETY: reading an ID register has no effect.
    unsafe {
        asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack, preserves_flags))
    };
    (isar0 >> 12) & 0xf >= 1
}

/// The digest, the blocks compressed by the extension.
fn with_extension(data: &[u8]) -> Digest {
    crate::measure::sha256_with(data, compress)
}

/// Compresses `blocks` (a multiple of 64 bytes) into `state`.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    let count = blocks.len() / 64;
    if count == 0 {
        return;
    }
    let mut saved = [0u8; 160];
    super::with_simd(|| {
        // SAFETY: reads `count` blocks of 64 bytes from `blocks`, reads K and writes the 8
        // words of `state` and the 160 bytes of `saved`; the SIMD registers it uses (v0-v7,
        // v16, v17) are saved first and restored last, and nothing else is touched. The
        // caller checked the extension is implemented.
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                ".arch_extension sha2",
                "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [x4], #64",
                "st1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [x4], #64",
                "st1 {{v16.16b, v17.16b}}, [x4]",
                "sub x4, x4, #128",
                "ld1 {{v0.4s, v1.4s}}, [x0]",
                "2:",
                "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [x1], #64",
                "rev32 v4.16b, v4.16b",
                "rev32 v5.16b, v5.16b",
                "rev32 v6.16b, v6.16b",
                "rev32 v7.16b, v7.16b",
                "mov v2.16b, v0.16b",
                "mov v3.16b, v1.16b",
                "mov x5, x3",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v4.4s",
                "sha256su0 v4.4s, v5.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v4.4s, v6.4s, v7.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v5.4s",
                "sha256su0 v5.4s, v6.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v5.4s, v7.4s, v4.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v6.4s",
                "sha256su0 v6.4s, v7.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v6.4s, v4.4s, v5.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v7.4s",
                "sha256su0 v7.4s, v4.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v7.4s, v5.4s, v6.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v4.4s",
                "sha256su0 v4.4s, v5.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v4.4s, v6.4s, v7.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v5.4s",
                "sha256su0 v5.4s, v6.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v5.4s, v7.4s, v4.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v6.4s",
                "sha256su0 v6.4s, v7.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v6.4s, v4.4s, v5.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v7.4s",
                "sha256su0 v7.4s, v4.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v7.4s, v5.4s, v6.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v4.4s",
                "sha256su0 v4.4s, v5.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v4.4s, v6.4s, v7.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v5.4s",
                "sha256su0 v5.4s, v6.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v5.4s, v7.4s, v4.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v6.4s",
                "sha256su0 v6.4s, v7.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v6.4s, v4.4s, v5.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v7.4s",
                "sha256su0 v7.4s, v4.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "sha256su1 v7.4s, v5.4s, v6.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v4.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v5.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v6.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "ld1 {{v16.4s}}, [x5], #16",
                "add v16.4s, v16.4s, v7.4s",
                "mov v17.16b, v0.16b",
                "sha256h q0, q1, v16.4s",
                "sha256h2 q1, q17, v16.4s",
                "add v0.4s, v0.4s, v2.4s",
                "add v1.4s, v1.4s, v3.4s",
                "subs x2, x2, #1",
                "b.ne 2b",
                "st1 {{v0.4s, v1.4s}}, [x0]",
                "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [x4], #64",
                "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [x4], #64",
                "ld1 {{v16.16b, v17.16b}}, [x4]",
                in("x0") state.as_mut_ptr(),
                inout("x1") blocks.as_ptr() => _,
                inout("x2") count => _,
                in("x3") K.as_ptr(),
                inout("x4") saved.as_mut_ptr() => _,
                out("x5") _,
                options(nostack),
            );
        }
    });
}
