//! `attest`: asks the secure guest for a report over a fresh nonce and checks it as a
//! relying party would: the chain (`Report::verify`), then the pinned device key and the
//! expected image digest; or checks a saved report against a fresh nonce, which a replay
//! must fail.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tandem_proto::attest::{
    field_text, AttestError, Certificate, Digest, Report, NONCE_LEN, PUBLIC_KEY_LEN,
};

use crate::commands::{no, Error};
use crate::conn::{Conn, Endpoint};
use crate::hex;

/// What the relying party holds the report to, beyond the chain itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// The image digest the VM must have been launched from.
    pub image: Option<Digest>,
    /// The device key the chain must start from.
    pub device_key: Option<[u8; PUBLIC_KEY_LEN]>,
}

/// Why a report was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The chain does not hold (signatures, nonce, encoding).
    Chain(AttestError),
    /// The chain holds but starts from another device than the pinned one.
    DeviceKey {
        /// The key the report names.
        got: [u8; PUBLIC_KEY_LEN],
        /// The pinned key.
        want: [u8; PUBLIC_KEY_LEN],
    },
    /// The chain holds but vouches for another image than the expected one.
    Image {
        /// The digest the certificate names.
        got: Digest,
        /// The expected digest.
        want: Digest,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chain(e) => write!(f, "refused: {e}"),
            Self::DeviceKey { got, want } => write!(
                f,
                "device key {} is not the pinned {}",
                hex::encode(got),
                hex::encode(want)
            ),
            Self::Image { got, want } => write!(
                f,
                "image {} is not the expected {}",
                hex::encode(got),
                hex::encode(want)
            ),
        }
    }
}

/// Checks `report` as the answer to `nonce`: the chain, then the pinned device key (an
/// image named by another device's chain means nothing), then the image digest.
pub fn check(
    report: &Report,
    nonce: &[u8; NONCE_LEN],
    pins: &Pins,
) -> Result<Certificate, Refusal> {
    let certificate = report.verify(nonce).map_err(Refusal::Chain)?;
    if let Some(want) = pins.device_key {
        if report.device_key != want {
            return Err(Refusal::DeviceKey {
                got: report.device_key,
                want,
            });
        }
    }
    if let Some(want) = pins.image {
        if certificate.image != want {
            return Err(Refusal::Image {
                got: certificate.image,
                want,
            });
        }
    }
    Ok(certificate)
}

/// What a command prints, and whether the report was accepted (exit status 0, else 1).
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Lines for standard output.
    pub lines: Vec<String>,
    /// Whether the report was accepted.
    pub accepted: bool,
}

impl Verdict {
    fn refused(refusal: Refusal) -> Self {
        Verdict {
            lines: vec![format!("attest: {refusal}")],
            accepted: false,
        }
    }

    fn print(&self) -> ExitCode {
        for line in &self.lines {
            println!("{line}");
        }
        if self.accepted {
            ExitCode::SUCCESS
        } else {
            no()
        }
    }
}

/// The verdict on a report fetched for `nonce`: what it vouches for, or why it is refused.
pub fn judge(report: &Report, nonce: &[u8; NONCE_LEN], pins: &Pins) -> Verdict {
    match check(report, nonce, pins) {
        Ok(cert) => Verdict {
            lines: vec![
                "attest: verified (fresh nonce, chain intact)".into(),
                format!("vm: {}", field_text(&cert.label)),
                format!("image: {}", hex::encode(&cert.image)),
                format!("config: {}", hex::encode(&cert.config)),
                format!(
                    "hypervisor: {}, code {}",
                    field_text(&cert.hyp_version),
                    hex::encode(&cert.hyp_digest)
                ),
                format!("device key: {}", hex::encode(&report.device_key)),
                format!("vm key: {}", hex::encode(&cert.vm_key)),
            ],
            accepted: true,
        },
        Err(refusal) => Verdict::refused(refusal),
    }
}

/// The verdict on a saved report checked against a fresh `nonce`: it must be refused.
pub fn judge_replay(report: &Report, nonce: &[u8; NONCE_LEN]) -> Verdict {
    match report.verify(nonce) {
        Ok(_) => Verdict {
            lines: vec![
                "attest: REPLAY ACCEPTED: a saved report verified against a fresh nonce".into(),
            ],
            accepted: true,
        },
        Err(e) => Verdict::refused(Refusal::Chain(e)),
    }
}

/// A nonce never used before, from the kernel's random source.
fn fresh_nonce() -> Result<[u8; NONCE_LEN], Error> {
    let mut nonce = [0u8; NONCE_LEN];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut nonce))
        .map_err(Error::Random)?;
    Ok(nonce)
}

/// `attest [--expect DIGEST] [--root PUBKEY] [--save FILE]`: fetches a report over a fresh
/// nonce, saves it when asked, and prints the verdict.
pub fn attest(endpoint: &Endpoint, pins: &Pins, save: Option<&Path>) -> Result<ExitCode, Error> {
    let nonce = fresh_nonce()?;
    let report = Conn::connect(endpoint)?.attest(&nonce)?;
    if let Some(path) = save {
        fs::write(path, report.encode()).map_err(|source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(judge(&report, &nonce, pins).print())
}

/// `attest --replay-from FILE`: checks a saved report against a fresh nonce, as a relying
/// party would check a replayed one. Exit status 1 is the defence working.
pub fn replay(file: &Path) -> Result<ExitCode, Error> {
    let bytes = fs::read(file).map_err(|source| Error::File {
        path: file.to_path_buf(),
        source,
    })?;
    let report = Report::decode(&bytes).ok_or_else(|| Error::NotAReport {
        path: PathBuf::from(file),
        len: bytes.len(),
    })?;
    Ok(judge_replay(&report, &fresh_nonce()?).print())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::attest::{device_key, Handover};

    const UDS: [u8; 32] = [0x42; 32];
    const IMAGE: Digest = [1; 32];
    const NONCE: [u8; NONCE_LEN] = [9; NONCE_LEN];

    fn report(uds: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Report {
        let h = Handover::make(uds, "secure", IMAGE, [2; 32], "tandem 0.1.0", [3; 32]);
        Report::sign(&h, nonce)
    }

    fn device() -> [u8; PUBLIC_KEY_LEN] {
        *device_key(&UDS).pk
    }

    #[test]
    fn an_answer_to_our_nonce_is_accepted_and_described() {
        let r = report(&UDS, &NONCE);
        let pins = Pins {
            image: Some(IMAGE),
            device_key: Some(device()),
        };
        let verdict = judge(&r, &NONCE, &pins);
        assert!(verdict.accepted);
        let vm_key = Certificate::decode(&r.certificate).unwrap().vm_key;
        assert_eq!(
            verdict.lines,
            [
                "attest: verified (fresh nonce, chain intact)".to_string(),
                "vm: secure".into(),
                format!("image: {}", "01".repeat(32)),
                format!("config: {}", "02".repeat(32)),
                format!("hypervisor: tandem 0.1.0, code {}", "03".repeat(32)),
                format!("device key: {}", hex::encode(&device())),
                format!("vm key: {}", hex::encode(&vm_key)),
            ]
        );
        assert!(judge(&r, &NONCE, &Pins::default()).accepted);
    }

    #[test]
    fn another_image_is_refused_by_expect() {
        let want = [0; 32];
        let pins = Pins {
            image: Some(want),
            device_key: None,
        };
        let r = report(&UDS, &NONCE);
        assert_eq!(
            check(&r, &NONCE, &pins),
            Err(Refusal::Image { got: IMAGE, want })
        );
        let verdict = judge(&r, &NONCE, &pins);
        assert!(!verdict.accepted);
        assert_eq!(
            verdict.lines,
            [format!(
                "attest: image {} is not the expected {}",
                "01".repeat(32),
                "00".repeat(32)
            )]
        );
    }

    #[test]
    fn another_device_is_refused_by_the_pin_before_its_image_is_looked_at() {
        let foreign = report(&[1; 32], &NONCE);
        let pins = Pins {
            image: Some([0; 32]),
            device_key: Some(device()),
        };
        assert_eq!(
            check(&foreign, &NONCE, &pins),
            Err(Refusal::DeviceKey {
                got: foreign.device_key,
                want: device()
            })
        );
        let line = &judge(&foreign, &NONCE, &pins).lines[0];
        assert!(line.starts_with("attest: device key "), "{line}");
        assert!(line.ends_with(&format!(" is not the pinned {}", hex::encode(&device()))));
    }

    #[test]
    fn broken_chains_are_refused_with_the_reason() {
        let mut forged = report(&UDS, &NONCE);
        forged.certificate[20] ^= 1;
        let verdict = judge(&forged, &NONCE, &Pins::default());
        assert!(!verdict.accepted);
        assert_eq!(
            verdict.lines,
            [format!(
                "attest: refused: {}",
                AttestError::CertificateSignature
            )]
        );
        let zero = Report::decode(&[0; Report::LEN]).unwrap();
        assert!(!judge(&zero, &[0; NONCE_LEN], &Pins::default()).accepted);
    }

    #[test]
    fn a_replayed_report_is_refused_and_an_accepted_one_is_loud() {
        let saved = report(&UDS, &NONCE);
        let verdict = judge_replay(&saved, &[8; NONCE_LEN]);
        assert!(!verdict.accepted);
        assert_eq!(
            verdict.lines,
            [format!("attest: refused: {}", AttestError::Nonce)]
        );
        // The same nonce twice stands for a broken nonce source: the replay goes through.
        let verdict = judge_replay(&saved, &NONCE);
        assert!(verdict.accepted);
        assert!(verdict.lines[0].contains("REPLAY ACCEPTED"));
    }

    #[test]
    fn saved_reports_are_read_back_or_named_as_not_reports() {
        let dir = std::env::temp_dir().join(format!("tandem-client-attest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("report");
        fs::write(&good, report(&UDS, &NONCE).encode()).unwrap();
        // A fresh nonce from /dev/urandom is not NONCE: refused, exit status 1.
        assert_eq!(replay(&good).unwrap(), no());
        let short = dir.join("short");
        fs::write(&short, [0; 10]).unwrap();
        let err = replay(&short).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} holds 10 bytes, not a report of {}",
                short.display(),
                Report::LEN
            )
        );
        let missing = replay(&dir.join("missing")).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read "), "{missing}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fresh_nonces_differ() {
        assert_ne!(fresh_nonce().unwrap(), fresh_nonce().unwrap());
    }
}
