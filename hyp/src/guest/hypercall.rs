//! Tandem's own hypercalls, in the SMCCC range of the "vendor specific hypervisor service"
//! (owning entity 6, SMCCC 1.1 section 6.2). PSCI and the Arm architecture calls are
//! `psci.rs`; everything there answers NOT_SUPPORTED for an id it does not know, so these
//! are decoded first.
//!
//! | Function id | Name | Arguments | Result in x0 |
//! |---|---|---|---|
//! | `0x8600ff01` | `VENDOR_HYP_CALL_UID` | none | x0..x3: Tandem's UID, [`UID`] |
//! | `0xc6000001` | `TANDEM_DOORBELL` | x1: the base address of a `tandem,shmem` region of the caller | 0 rung, -2 not a region of the caller |
//! | `0xc6000002` | `TANDEM_BOOT_LOG` | x1: a buffer in the caller's memory, x2: its length | the log's whole length in bytes (as much as fits is copied), -2 for a buffer outside the caller's memory |
//! | `0xc6000003` | `TANDEM_ATTESTATION` | x1: a buffer in the caller's memory, x2: its length | 0 and the caller's `Handover` copied there; -1 when it may not attest; -2 for a bad buffer |
//!
//! A doorbell raises, in every other VM sharing the region, the SPI its DT names in that
//! region's `tandem,doorbell` (as an edge: rings before the peer takes the first one
//! merge into one interrupt, so a peer re-reads the shared memory on each interrupt).

/// `VENDOR_HYP_CALL_UID`: a 32-bit fast call (SMCCC 1.1, "Vendor Specific Hypervisor
/// Service Call UID").
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;
/// `TANDEM_DOORBELL`: a 64-bit fast call.
pub const TANDEM_DOORBELL: u32 = 0xc600_0001;
/// `TANDEM_BOOT_LOG`: a 64-bit fast call.
pub const TANDEM_BOOT_LOG: u32 = 0xc600_0002;
/// `TANDEM_ATTESTATION`: a 64-bit fast call.
pub const TANDEM_ATTESTATION: u32 = 0xc600_0003;

/// Tandem's UID, 7d4b6c5e-2f1a-4b8e-9c3d-74616e64656d, as SMCCC returns a UID: four
/// 32-bit words in x0..x3, the UUID's bytes in order, little-endian within each word.
pub const UID: [u32; 4] = [0x5e6c_4b7d, 0x8e4b_1a2f, 0x6174_3d9c, 0x6d65_646e];

/// SMCCC INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// SMCCC NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;

/// A decoded Tandem hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// Which hypervisor is this?
    Uid,
    /// Ring the doorbell of the shared-memory region at `base`.
    Doorbell {
        /// The region's base address, as its DT `reg` says.
        base: u64,
    },
    /// Copy the measured-launch log into the caller's buffer.
    BootLog {
        /// The buffer's address (the caller's IPA).
        buf: u64,
        /// Its length.
        len: u64,
    },
    /// Copy the caller's attestation handover into its buffer.
    Attestation {
        /// The buffer's address (the caller's IPA).
        buf: u64,
        /// Its length.
        len: u64,
    },
}

/// Decodes `x0..x7` of a trapped HVC or SMC: a Tandem hypercall, or None (then it is for
/// the PSCI/SMCCC handler). The function id is W0, the upper half of X0 ignored.
pub fn decode(x: [u64; 8]) -> Option<Hypercall> {
    match x[0] as u32 {
        VENDOR_HYP_CALL_UID => Some(Hypercall::Uid),
        TANDEM_DOORBELL => Some(Hypercall::Doorbell { base: x[1] }),
        TANDEM_BOOT_LOG => Some(Hypercall::BootLog {
            buf: x[1],
            len: x[2],
        }),
        TANDEM_ATTESTATION => Some(Hypercall::Attestation {
            buf: x[1],
            len: x[2],
        }),
        _ => None,
    }
}

/// The x0..x3 a UID call returns.
pub fn uid_registers() -> [u64; 4] {
    UID.map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_its_own_ids() {
        let hi = 0xffff_ffff_0000_0000;
        assert_eq!(
            decode([hi | 0xc600_0001, 0x9400_0000, 0, 0, 0, 0, 0, 0]),
            Some(Hypercall::Doorbell { base: 0x9400_0000 })
        );
        assert_eq!(
            decode([0x8600_ff01, 0, 0, 0, 0, 0, 0, 0]),
            Some(Hypercall::Uid)
        );
        assert_eq!(
            decode([0xc600_0003, 0x9000_1000, 512, 0, 0, 0, 0, 0]),
            Some(Hypercall::Attestation {
                buf: 0x9000_1000,
                len: 512
            })
        );
        for id in [0x8400_0000, 0x8000_0000, 0xc600_0004, 0x8600_ff00, 0] {
            assert_eq!(decode([id, 0, 0, 0, 0, 0, 0, 0]), None, "{id:#x}");
        }
    }

    #[test]
    fn uid_is_the_uuid_bytes_in_order() {
        let bytes: Vec<u8> = UID.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(
            bytes,
            [
                0x7d, 0x4b, 0x6c, 0x5e, 0x2f, 0x1a, 0x4b, 0x8e, 0x9c, 0x3d, 0x74, 0x61, 0x6e, 0x64,
                0x65, 0x6d
            ]
        );
    }
}
