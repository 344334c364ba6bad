//! Measured launch and attestation: what is derived from what, and the two signed
//! structures a relying party checks. `docs/attestation.md` tells the whole chain.
//!
//! ```text
//! UDS (the board's unique device secret: tandem,device-secret; fuses on real hardware)
//!  |-- device key   = Ed25519 from HMAC-SHA256(UDS, "tandem device key")
//!  `-- CDI of a VM  = HMAC-SHA256(UDS, "tandem cdi" || image digest || config digest)
//!        `-- VM key = Ed25519 from HMAC-SHA256(CDI, "tandem attestation key")
//! ```
//!
//! At each load of a VM with `tandem,attestation`, the hypervisor measures its kernel image
//! and its configuration, derives its CDI and its key pair, and signs a [`Certificate`] of
//! the VM's public key and measurements with the device key. The VM gets its CDI, the
//! certificate and the device's public key by hypercall ([`Handover`]); from the CDI it
//! derives the same key pair and signs [`Report`]s over a client's nonce. A client checks
//! the report's signature with the certificate's key, the certificate's with the device
//! key (pinned by the relying party), the nonce, and the digests.
//!
//! All structures are fixed-size little-endian byte strings, so the three programs that
//! handle them need no parser beyond slicing.

use core::fmt;

pub use ed25519_compact::KeyPair;
use ed25519_compact::{PublicKey, Seed, Signature};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Bytes of the device secret (UDS) and of a CDI.
pub const SECRET_LEN: usize = 32;
/// Bytes of an Ed25519 public key and of a signature.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of the hypervisor's version string in a certificate (NUL-padded).
pub const VERSION_LEN: usize = 32;
/// Bytes of a VM's label in a certificate (NUL-padded).
pub const LABEL_LEN: usize = 16;
/// Bytes of a client's nonce.
pub const NONCE_LEN: usize = 32;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The device's key pair, from the UDS.
pub fn device_key(uds: &[u8; SECRET_LEN]) -> KeyPair {
    KeyPair::from_seed(Seed::new(hmac(uds, &[b"tandem device key"])))
}

/// A VM's compound device identifier: its image and configuration bound to the device.
pub fn derive_cdi(uds: &[u8; SECRET_LEN], image: &Digest, config: &Digest) -> [u8; SECRET_LEN] {
    hmac(uds, &[b"tandem cdi", image, config])
}

/// A VM's attestation key pair, from its CDI.
pub fn vm_key(cdi: &[u8; SECRET_LEN]) -> KeyPair {
    KeyPair::from_seed(Seed::new(hmac(cdi, &[b"tandem attestation key"])))
}

/// Copies `text` into a NUL-padded field of `N` bytes (cut if longer).
fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = text.len().min(N);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// The fields laid end to end: the encoded form of every structure here.
fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out
}

/// Takes fixed-size fields off the front of an encoded structure.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (field, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*field)
    }
}

/// A NUL-padded field as text (up to the first NUL; `?` for bytes that are not UTF-8).
pub fn field_text(field: &[u8]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).unwrap_or("?")
}

/// What the hypervisor vouches for about one VM, signed with the device key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The VM's label.
    pub label: [u8; LABEL_LEN],
    /// SHA-256 of the VM's kernel image as loaded.
    pub image: Digest,
    /// SHA-256 of the VM's configuration as the hypervisor understood it.
    pub config: Digest,
    /// The hypervisor's version.
    pub hyp_version: [u8; VERSION_LEN],
    /// SHA-256 of the hypervisor's code (its `.text`).
    pub hyp_digest: Digest,
    /// The VM's attestation public key.
    pub vm_key: [u8; PUBLIC_KEY_LEN],
}

impl Certificate {
    /// Bytes of the encoded body (what the device key signs).
    pub const LEN: usize = 4 + LABEL_LEN + 32 + 32 + VERSION_LEN + 32 + PUBLIC_KEY_LEN;
    const MAGIC: &'static [u8; 4] = b"TCR1";

    /// A certificate's body from its parts.
    pub fn new(
        label: &str,
        image: Digest,
        config: Digest,
        hyp_version: &str,
        hyp_digest: Digest,
        vm_key: [u8; PUBLIC_KEY_LEN],
    ) -> Self {
        Self {
            label: padded(label),
            image,
            config,
            hyp_version: padded(hyp_version),
            hyp_digest,
            vm_key,
        }
    }

    /// Encodes the body.
    pub fn encode(&self) -> [u8; Self::LEN] {
        concat(&[
            Self::MAGIC,
            &self.label,
            &self.image,
            &self.config,
            &self.hyp_version,
            &self.hyp_digest,
            &self.vm_key,
        ])
    }

    /// Decodes a body; `None` unless it is one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut f = Fields(bytes);
        if &f.take::<4>()? != Self::MAGIC {
            return None;
        }
        Some(Self {
            label: f.take()?,
            image: f.take()?,
            config: f.take()?,
            hyp_version: f.take()?,
            hyp_digest: f.take()?,
            vm_key: f.take()?,
        })
    }
}

/// What the hypervisor hands a VM with `tandem,attestation` (hypercall
/// `TANDEM_ATTESTATION`): its CDI, its certificate and the device's signature over it, and
/// the device's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The VM's CDI: secret, the VM's alone.
    pub cdi: [u8; SECRET_LEN],
    /// The certificate body.
    pub certificate: [u8; Certificate::LEN],
    /// The device key's signature over the body.
    pub signature: [u8; SIGNATURE_LEN],
    /// The device's public key.
    pub device_key: [u8; PUBLIC_KEY_LEN],
}

impl Handover {
    /// Bytes of the encoded form.
    pub const LEN: usize = SECRET_LEN + Certificate::LEN + SIGNATURE_LEN + PUBLIC_KEY_LEN;

    /// What the hypervisor makes for a VM: derives its CDI and key, and signs.
    pub fn make(
        uds: &[u8; SECRET_LEN],
        label: &str,
        image: Digest,
        config: Digest,
        hyp_version: &str,
        hyp_digest: Digest,
    ) -> Self {
        let device = device_key(uds);
        Self::make_with(&device, uds, label, image, config, hyp_version, hyp_digest)
    }

    /// [`Handover::make`] with the device key already derived from `uds` (by
    /// [`device_key`]): a hypervisor derives it once, as each derivation costs a scalar
    /// multiplication.
    pub fn make_with(
        device: &KeyPair,
        uds: &[u8; SECRET_LEN],
        label: &str,
        image: Digest,
        config: Digest,
        hyp_version: &str,
        hyp_digest: Digest,
    ) -> Self {
        let cdi = derive_cdi(uds, &image, &config);
        let vm = vm_key(&cdi);
        let certificate =
            Certificate::new(label, image, config, hyp_version, hyp_digest, *vm.pk).encode();
        Self {
            cdi,
            certificate,
            signature: *device.sk.sign(certificate, None),
            device_key: *device.pk,
        }
    }

    /// Encodes it.
    pub fn encode(&self) -> [u8; Self::LEN] {
        concat(&[
            &self.cdi,
            &self.certificate,
            &self.signature,
            &self.device_key,
        ])
    }

    /// Decodes it; `None` when the length is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut f = Fields(bytes);
        Some(Self {
            cdi: f.take()?,
            certificate: f.take()?,
            signature: f.take()?,
            device_key: f.take()?,
        })
    }
}

/// An attestation report: the client's nonce, the certificate chain, and the VM's
/// signature over all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The client's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The certificate body.
    pub certificate: [u8; Certificate::LEN],
    /// The device key's signature over the certificate.
    pub cert_signature: [u8; SIGNATURE_LEN],
    /// The device's public key.
    pub device_key: [u8; PUBLIC_KEY_LEN],
    /// The VM key's signature over everything above.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Report {
    /// Bytes of the encoded form.
    pub const LEN: usize =
        NONCE_LEN + Certificate::LEN + SIGNATURE_LEN + PUBLIC_KEY_LEN + SIGNATURE_LEN;
    const SIGNED: usize = Self::LEN - SIGNATURE_LEN;

    /// The VM signs a report over `nonce` with the key its CDI gives.
    pub fn sign(handover: &Handover, nonce: &[u8; NONCE_LEN]) -> Self {
        let mut report = Self {
            nonce: *nonce,
            certificate: handover.certificate,
            cert_signature: handover.signature,
            device_key: handover.device_key,
            signature: [0; SIGNATURE_LEN],
        };
        let key = vm_key(&handover.cdi);
        report.signature = *key.sk.sign(&report.encode()[..Self::SIGNED], None);
        report
    }

    /// Encodes it.
    pub fn encode(&self) -> [u8; Self::LEN] {
        concat(&[
            &self.nonce,
            &self.certificate,
            &self.cert_signature,
            &self.device_key,
            &self.signature,
        ])
    }

    /// Decodes it; `None` when the length is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut f = Fields(bytes);
        Some(Self {
            nonce: f.take()?,
            certificate: f.take()?,
            cert_signature: f.take()?,
            device_key: f.take()?,
            signature: f.take()?,
        })
    }

    /// Checks the chain: the report's signature with the certificate's VM key, the
    /// certificate's with the device key in the report, and the nonce. What is left to the
    /// relying party: that the device key is the one it pinned, and the digests.
    pub fn verify(&self, nonce: &[u8; NONCE_LEN]) -> Result<Certificate, AttestError> {
        if &self.nonce != nonce {
            return Err(AttestError::Nonce);
        }
        let certificate =
            Certificate::decode(&self.certificate).ok_or(AttestError::BadCertificate)?;
        let device = PublicKey::from_slice(&self.device_key).map_err(|_| AttestError::BadKey)?;
        let cert_signature =
            Signature::from_slice(&self.cert_signature).map_err(|_| AttestError::BadKey)?;
        device
            .verify(self.certificate, &cert_signature)
            .map_err(|_| AttestError::CertificateSignature)?;
        let vm = PublicKey::from_slice(&certificate.vm_key).map_err(|_| AttestError::BadKey)?;
        let signature = Signature::from_slice(&self.signature).map_err(|_| AttestError::BadKey)?;
        vm.verify(&self.encode()[..Self::SIGNED], &signature)
            .map_err(|_| AttestError::ReportSignature)?;
        Ok(certificate)
    }
}

/// Why a report was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestError {
    /// The report answers another nonce: a replay, or not an answer to this request.
    Nonce,
    /// The certificate body is not one.
    BadCertificate,
    /// A key or signature is malformed.
    BadKey,
    /// The device key did not sign this certificate.
    CertificateSignature,
    /// The certificate's VM key did not sign this report.
    ReportSignature,
}

impl fmt::Display for AttestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nonce => "the report answers another nonce (a replay?)",
            Self::BadCertificate => "the certificate is malformed",
            Self::BadKey => "a key or signature is malformed",
            Self::CertificateSignature => "the device key did not sign the certificate",
            Self::ReportSignature => "the certified VM key did not sign the report",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDS: [u8; 32] = [0x42; 32];

    fn handover(image: u8) -> Handover {
        Handover::make(
            &UDS,
            "secure",
            [image; 32],
            [2; 32],
            "tandem 0.1.0",
            [3; 32],
        )
    }

    #[test]
    fn a_report_verifies_and_names_what_was_measured() {
        let h = Handover::decode(&handover(1).encode()).unwrap();
        let report = Report::decode(&Report::sign(&h, &[9; 32]).encode()).unwrap();
        let cert = report.verify(&[9; 32]).unwrap();
        assert_eq!(cert.image, [1; 32]);
        assert_eq!(field_text(&cert.label), "secure");
        assert_eq!(field_text(&cert.hyp_version), "tandem 0.1.0");
        assert_eq!(report.device_key, *device_key(&UDS).pk);
    }

    #[test]
    fn the_same_image_gives_the_same_identity_and_another_does_not() {
        assert_eq!(handover(1), handover(1));
        assert_ne!(handover(1).cdi, handover(2).cdi);
        assert_ne!(
            Certificate::decode(&handover(1).certificate)
                .unwrap()
                .vm_key,
            Certificate::decode(&handover(2).certificate)
                .unwrap()
                .vm_key
        );
    }

    #[test]
    fn replays_and_forgeries_are_refused() {
        let h = handover(1);
        let report = Report::sign(&h, &[9; 32]);
        assert_eq!(report.verify(&[8; 32]), Err(AttestError::Nonce));

        // A VM claiming another image: its certificate no longer matches the signature.
        let mut forged = report;
        forged.certificate[20] ^= 1;
        assert_eq!(
            forged.verify(&[9; 32]),
            Err(AttestError::CertificateSignature)
        );

        // A report signed with a key that is not the certified one.
        let mut other = h;
        other.cdi = [7; 32];
        let wrong = Report::sign(&other, &[9; 32]);
        assert_eq!(wrong.verify(&[9; 32]), Err(AttestError::ReportSignature));

        // A whole chain from another device verifies, but names another device key: the
        // relying party's pin catches it.
        let foreign = Handover::make(&[1; 32], "secure", [1; 32], [2; 32], "tandem", [3; 32]);
        let r = Report::sign(&foreign, &[9; 32]);
        assert!(r.verify(&[9; 32]).is_ok());
        assert_ne!(r.device_key, report.device_key);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(Report::decode(&[0; 10]), None);
        let r = Report::decode(&[0; Report::LEN]).unwrap();
        assert!(r.verify(&[0; 32]).is_err());
        assert_eq!(Certificate::decode(&[0; Certificate::LEN]), None);
    }
}
