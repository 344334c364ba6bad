//! The one-request commands: sign, verify, stats and crash; and the error of every command.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tandem_proto::attest::Report;
use tandem_proto::service::{ErrorCode, Op, MAX_BODY, TAG_LEN};

use crate::conn::{self, Conn, Endpoint, Reply};
use crate::hex;

/// Why a command could not do its work (exit status 2).
#[derive(Debug)]
pub enum Error {
    /// The file to sign or verify cannot be read.
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is larger than one request can carry.
    FileTooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: usize,
        /// The most one request carries for this command.
        max: usize,
    },
    /// A file cannot be written.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file that should hold a saved attestation report does not.
    NotAReport {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: usize,
    },
    /// No nonce: the kernel's random source cannot be read.
    Random(io::Error),
    /// Talking to the service failed.
    Service(conn::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, source } => {
                write!(
                    f,
                    "cannot read {}: {}",
                    path.display(),
                    conn::describe(source)
                )
            }
            Self::FileTooBig { path, len, max } => write!(
                f,
                "{} is {len} bytes; one request carries at most {max}",
                path.display()
            ),
            Self::WriteFile { path, source } => {
                write!(
                    f,
                    "cannot write {}: {}",
                    path.display(),
                    conn::describe(source)
                )
            }
            Self::NotAReport { path, len } => write!(
                f,
                "{} holds {len} bytes, not a report of {}",
                path.display(),
                Report::LEN
            ),
            Self::Random(e) => write!(f, "cannot read /dev/urandom: {}", conn::describe(e)),
            Self::Service(e) => e.fmt(f),
        }
    }
}

impl From<conn::Error> for Error {
    fn from(e: conn::Error) -> Self {
        Error::Service(e)
    }
}

/// The exit status of a command that ran but whose answer is no.
pub fn no() -> ExitCode {
    ExitCode::from(1)
}

/// Reads `path` whole, if it is at most `max` bytes.
fn read(path: &Path, max: usize) -> Result<Vec<u8>, Error> {
    let data = fs::read(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
    if data.len() > max {
        return Err(Error::FileTooBig {
            path: path.to_path_buf(),
            len: data.len(),
            max,
        });
    }
    Ok(data)
}

/// `sign FILE`: prints the tag and the file's name, like `sha256sum`.
pub fn sign(endpoint: &Endpoint, file: &Path) -> Result<ExitCode, Error> {
    let data = read(file, MAX_BODY)?;
    let tag = Conn::connect(endpoint)?.sign(&data)?;
    println!("{}  {}", hex::encode(&tag), file.display());
    Ok(ExitCode::SUCCESS)
}

/// `verify FILE TAG`: `FILE: valid`, or `FILE: INVALID` and exit status 1.
pub fn verify(endpoint: &Endpoint, file: &Path, tag: &[u8; TAG_LEN]) -> Result<ExitCode, Error> {
    let data = read(file, MAX_BODY - TAG_LEN)?;
    if Conn::connect(endpoint)?.verify(tag, &data)? {
        println!("{}: valid", file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: INVALID", file.display());
        Ok(no())
    }
}

/// `stats`: the service's counters, one `name: value` per line.
pub fn stats(endpoint: &Endpoint) -> Result<ExitCode, Error> {
    let s = Conn::connect(endpoint)?.stats()?;
    println!("requests: {}", s.requests);
    println!("signed: {}", s.signed);
    println!("verified: {}", s.verified);
    println!("errors: {}", s.errors);
    println!("connections: {}", s.connections);
    println!("uptime_ms: {}", s.uptime_ms);
    Ok(ExitCode::SUCCESS)
}

/// `crash`: asks the service to fault. Success is the connection ending without an
/// answer; a build that does not allow it says so (exit status 1).
pub fn crash(endpoint: &Endpoint) -> Result<ExitCode, Error> {
    // A second connection, open before the crash: the request it makes afterwards is the
    // one an application would have in flight when the secure guest goes down.
    let mut bystander = Conn::connect(endpoint)?;
    let mut conn = Conn::connect(endpoint)?;
    let op = Op::Crash as u16;
    let id = conn.next_id();
    conn.send(op, id, &[])?;
    match conn.receive_reply(op, id) {
        Err(conn::Error::Closed | conn::Error::Reset) => {
            println!("crash: sent; the secure guest should now crash");
        }
        Ok(Reply::Refused(refusal)) if refusal.code == ErrorCode::NotAllowed => {
            println!("crash: the service refused: {refusal}");
            return Ok(no());
        }
        Ok(Reply::Refused(refusal)) => return Err(conn::Error::Refused(refusal).into()),
        Ok(Reply::Answer(_)) => {
            return Err(conn::Error::BadResponse(
                "an answer to crash: the service did not fault".into(),
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    }
    let sign = Op::Sign as u16;
    let id = bystander.next_id();
    let outcome = bystander
        .send(sign, id, b"in flight during the crash")
        .and_then(|()| bystander.receive_reply(sign, id));
    match outcome {
        Err(e) => println!("crash: a request in flight on another connection failed: {e}"),
        Ok(_) => println!(
            "crash: a request on another connection was answered: the secure guest did not go down"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
