//! Asks the hypervisor for this VM's attestation handover (`TANDEM_ATTESTATION`).
//!
//! The hypervisor writes the encoded [`Handover`] into a buffer of this guest's image and
//! cleans it to the point of coherency before the call returns; with the MMU off every
//! access here is Device-nGnRnE, so the bytes read back are the ones it wrote. The buffer
//! holds the CDI only until it is decoded: it is zeroed straight after.

use core::cell::UnsafeCell;
use core::fmt;

use tandem_guest_rt::psci;
use tandem_proto::attest::{Certificate, Handover};

/// `TANDEM_ATTESTATION`: x1 = the IPA of a buffer in this VM's memory, x2 = its length (at
/// least [`Handover::LEN`]).
const TANDEM_ATTESTATION: u32 = 0xc600_0003;
/// The answer when the VM may not attest or the board has no device secret (SMCCC
/// NOT_SUPPORTED).
const NOT_SUPPORTED: u64 = -1i64 as u64;
/// The answer to a buffer the hypervisor refuses (SMCCC INVALID_PARAMETERS).
const INVALID_PARAMETERS: u64 = -2i64 as u64;

/// Where the hypervisor writes the handover: a cache line of its own at the start.
#[repr(C, align(64))]
struct Buffer(UnsafeCell<[u8; Handover::LEN]>);

// SAFETY: only `request` touches the buffer, and it runs on the boot vCPU alone: the secure
// guest starts no other vCPU.
unsafe impl Sync for Buffer {}

static BUFFER: Buffer = Buffer(UnsafeCell::new([0; Handover::LEN]));

/// Why there is no handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The VM has no `tandem,attestation`, or the board no device secret.
    NotProvided,
    /// The hypervisor refused the buffer.
    InvalidParameters,
    /// Another answer in x0.
    Status(u64),
    /// The call succeeded but the certificate in the handover is not one.
    Malformed,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProvided => f.write_str(
                "not provided (the VM has no tandem,attestation, or the board no device secret)",
            ),
            Self::InvalidParameters => {
                f.write_str("TANDEM_ATTESTATION refused the buffer (INVALID_PARAMETERS)")
            }
            Self::Status(status) => write!(f, "TANDEM_ATTESTATION answered {status:#x}"),
            Self::Malformed => f.write_str("the certificate in the handover is malformed"),
        }
    }
}

/// Asks the hypervisor for the handover; returns it with its certificate decoded.
pub fn request() -> Result<(Handover, Certificate), Unavailable> {
    let base = BUFFER.0.get().cast::<u8>();
    // With the MMU off, the buffer's address is its IPA.
    let status = psci::call(TANDEM_ATTESTATION, &[base as u64, Handover::LEN as u64])[0];
    match status {
        0 => {}
        NOT_SUPPORTED => return Err(Unavailable::NotProvided),
        INVALID_PARAMETERS => return Err(Unavailable::InvalidParameters),
        other => return Err(Unavailable::Status(other)),
    }
    let mut bytes = [0u8; Handover::LEN];
    for (i, byte) in bytes.iter_mut().enumerate() {
        // SAFETY: `i` is within the buffer, which nothing else accesses (see `Sync` above);
        // the read is volatile so that it is not folded into the zeroes the buffer started
        // with.
        *byte = unsafe { base.add(i).read_volatile() };
    }
    for i in 0..Handover::LEN {
        // SAFETY: as above; the CDI does not stay in the buffer once decoded.
        unsafe { base.add(i).write_volatile(0) };
    }
    // `bytes` is exactly Handover::LEN long: this cannot fail.
    let handover = Handover::decode(&bytes)
        .unwrap_or_else(|| unreachable!("a buffer of Handover::LEN bytes decodes"));
    let certificate = Certificate::decode(&handover.certificate).ok_or(Unavailable::Malformed)?;
    Ok((handover, certificate))
}

/// The first 8 bytes of a digest or key, in hex: enough to tell one from another on the
/// console.
pub struct ShortHex<'a>(pub &'a [u8]);

impl fmt::Display for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().take(8).try_for_each(|b| write!(f, "{b:02x}"))
    }
}
