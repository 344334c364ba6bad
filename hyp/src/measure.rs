//! Measured launch: the append-only log of what the hypervisor loaded into each VM (its
//! images and its configuration, each as a SHA-256 digest), and the attestation handover
//! made from it for the VMs with `tandem,attestation` (`docs/attestation.md`).
//!
//! The log's wire form, as `TANDEM_BOOT_LOG` copies it: 64-byte entries, each the VM's
//! label (16 bytes, NUL-padded), what was measured (16 bytes: `kernel`, `ramdisk`,
//! `device-tree` or `config`) and the digest (32 bytes). Every load appends, restarts too,
//! so the log tells the whole history since the board started.

use alloc::vec::Vec;

use tandem_proto::attest::{field_text, Digest};

/// Bytes of one encoded entry.
pub const ENTRY_LEN: usize = 64;
/// Entries kept at most: a VM restarting for ever must not exhaust EL2's heap. Later
/// loads are still measured (the handover uses them) but no longer logged; the log's last
/// entry then says so.
pub const MAX_ENTRIES: usize = 256;

/// The log.
#[derive(Debug, Default)]
pub struct BootLog {
    entries: Vec<[u8; ENTRY_LEN]>,
    dropped: u64,
}

impl BootLog {
    /// An empty log.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
            dropped: 0,
        }
    }

    /// Appends one measurement.
    pub fn append(&mut self, label: &str, what: &str, digest: &Digest) {
        if self.entries.len() >= MAX_ENTRIES {
            self.dropped += 1;
            return;
        }
        let mut entry = [0u8; ENTRY_LEN];
        let l = label.len().min(16);
        entry[..l].copy_from_slice(&label.as_bytes()[..l]);
        let w = what.len().min(16);
        entry[16..16 + w].copy_from_slice(&what.as_bytes()[..w]);
        entry[32..].copy_from_slice(digest);
        self.entries.push(entry);
    }

    /// Entries not logged because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The whole log in its wire form.
    pub fn encode(&self) -> Vec<u8> {
        self.entries.iter().flatten().copied().collect()
    }

    /// Entries in order: (label, what, digest).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &Digest)> {
        self.entries.iter().filter_map(|e| {
            let digest: &Digest = e[32..].try_into().ok()?;
            Some((field_text(&e[..16]), field_text(&e[16..32]), digest))
        })
    }
}

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 of `data` around a block function: `compress` folds whole 64-byte blocks into
/// the state, this does the rest (the padding and length of FIPS 180-4 §5.1.1, and the
/// big-endian digest). The CPU's SHA-256 instructions are such a block function
/// (`arch::sha256`); the host tests check the framing against a reference.
pub fn sha256_with(data: &[u8], mut compress: impl FnMut(&mut [u32; 8], &[u8])) -> Digest {
    let mut state = SHA256_H0;
    let (blocks, rest) = data.split_at(data.len() - data.len() % 64);
    if !blocks.is_empty() {
        compress(&mut state, blocks);
    }
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    // The 64-bit length must fit after the 0x80: a remainder of 56 bytes or more takes a
    // second block.
    let len = if rest.len() < 56 { 64 } else { 128 };
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[len - 8..len].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &tail[..len]);
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_append_only() {
        let mut log = BootLog::new();
        log.append("secure", "kernel", &[1; 32]);
        log.append("a-very-long-label-indeed", "config", &[2; 32]);
        let wire = log.encode();
        assert_eq!(wire.len(), 2 * ENTRY_LEN);
        let got: Vec<_> = log.entries().collect();
        assert_eq!(got[0], ("secure", "kernel", &[1; 32]));
        assert_eq!(got[1].0, "a-very-long-labe");
        assert_eq!(&wire[32..64], &[1; 32]);
    }

    /// Every remainder length, around block boundaries and the 56-byte one where the
    /// length needs a block of its own, against the `sha2` crate.
    #[test]
    fn sha256_framing_matches_the_reference() {
        use sha2::digest::generic_array::GenericArray;
        use sha2::{Digest as _, Sha256};
        let reference_blocks = |state: &mut [u32; 8], blocks: &[u8]| {
            assert_eq!(blocks.len() % 64, 0, "whole blocks only");
            for block in blocks.chunks_exact(64) {
                sha2::compress256(state, &[*GenericArray::from_slice(block)]);
            }
        };
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let want: Digest = Sha256::digest(&data[..len]).into();
            assert_eq!(
                sha256_with(&data[..len], reference_blocks),
                want,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn a_full_log_counts_what_it_drops() {
        let mut log = BootLog::new();
        for _ in 0..MAX_ENTRIES + 3 {
            log.append("vm", "kernel", &[0; 32]);
        }
        assert_eq!(log.entries().count(), MAX_ENTRIES);
        assert_eq!(log.dropped(), 3);
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }
}
