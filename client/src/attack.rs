//! `attack KIND`: malformed input the service must refuse without losing its way. Each
//! attack checks the refusal it gets, then that the service still answers a valid request.

use std::fmt;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use tandem_proto::service::{ErrorCode, Header, Op, HEADER_LEN, MAGIC, MAX_BODY};

use crate::args::Attack;
use crate::commands::no;
use crate::conn::{self, Conn, Endpoint, Refusal, Reply};

/// Bytes of noise that `garbage` sends.
const GARBAGE_LEN: usize = 64;
/// An op no service knows, for `unknown-op`.
const UNKNOWN_OP: u16 = 0x1234;
/// Bytes of the too-short verify body of `short-verify` (a verify needs at least a tag).
const SHORT_VERIFY_LEN: usize = 10;
/// The id `replay` sends twice.
const REPLAYED_ID: u32 = 5;

/// Why an attack's check failed: what came instead of what was expected.
#[derive(Debug)]
struct Failed(String);

impl From<conn::Error> for Failed {
    fn from(e: conn::Error) -> Self {
        Failed(e.to_string())
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs one attack and reports it: exit status 0 when the service refused it as it should
/// and still answers, 1 otherwise.
pub fn attack(endpoint: &Endpoint, kind: Attack) -> ExitCode {
    let outcome = match kind {
        Attack::Garbage => garbage(endpoint),
        Attack::BadLen => bad_len(endpoint),
        Attack::ShortVerify => short_verify(endpoint),
        Attack::UnknownOp => unknown_op(endpoint),
        Attack::Replay => replay(endpoint),
        Attack::Truncated => truncated(endpoint),
    };
    match outcome {
        Ok(what) => {
            println!("attack {}: {what}; service still answers", kind.name());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("tandem-client: attack {} FAILED: {why}", kind.name());
            no()
        }
    }
}

/// Noise that is not a frame: it never starts with the magic.
fn garbage(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    conn.send_raw(&noise(seed()))?;
    // The service cannot know an id in noise: its answer carries id 0.
    let frame = conn
        .receive()
        .map_err(|e| Failed(format!("no error frame: {e}")))?;
    if frame.header.id != 0 {
        return Err(Failed(format!(
            "the answer carries id {}, not 0",
            frame.header.id
        )));
    }
    let refusal = frame.refusal()?;
    expect_code(Reply::Refused(refusal.clone()), ErrorCode::BadMagic)?;
    let end = expect_end(&mut conn)?;
    still_answers(endpoint)?;
    Ok(format!(
        "error frame \"{refusal}\", then the stream was {end}"
    ))
}

/// A header announcing one byte more than the protocol allows, and no body.
fn bad_len(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    let op = Op::Sign as u16;
    let id = conn.next_id();
    let header = Header {
        op,
        flags: 0,
        id,
        len: MAX_BODY as u32 + 1,
    };
    conn.send_raw(&header.encode())?;
    let refusal = expect_code(conn.receive_reply(op, id)?, ErrorCode::TooLong)?;
    let end = expect_end(&mut conn)?;
    still_answers(endpoint)?;
    Ok(format!(
        "error frame \"{refusal}\", then the stream was {end}"
    ))
}

/// A verify whose body is shorter than a tag; the connection must go on.
fn short_verify(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    let id = conn.next_id();
    let reply = conn.exchange(Op::Verify as u16, id, &[0x11; SHORT_VERIFY_LEN])?;
    let refusal = expect_code(reply, ErrorCode::BadRequest)?;
    conn.stats()
        .map_err(|e| Failed(format!("stats on the same connection: {e}")))?;
    Ok(format!(
        "error frame \"{refusal}\", then stats on the same connection"
    ))
}

/// A request op the service does not know; the connection must go on.
fn unknown_op(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    let id = conn.next_id();
    let reply = conn.exchange(UNKNOWN_OP, id, &[])?;
    let refusal = expect_code(reply, ErrorCode::UnknownOp)?;
    conn.stats()
        .map_err(|e| Failed(format!("stats on the same connection: {e}")))?;
    Ok(format!(
        "error frame \"{refusal}\", then stats on the same connection"
    ))
}

/// The same id twice: the second is refused, the next id works.
fn replay(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    let op = Op::Sign as u16;
    let data = b"tandem replay attack";
    let first = conn.exchange(op, REPLAYED_ID, data)?;
    if let Reply::Refused(refusal) = first {
        return Err(Failed(format!(
            "the first request with id {REPLAYED_ID} was refused: {refusal}"
        )));
    }
    let refusal = expect_code(conn.exchange(op, REPLAYED_ID, data)?, ErrorCode::Replay)?;
    let next = REPLAYED_ID + 1;
    match conn.exchange(op, next, data)? {
        Reply::Answer(_) => {}
        Reply::Refused(refusal) => {
            return Err(Failed(format!("id {next} was refused: {refusal}")));
        }
    }
    Ok(format!(
        "id {REPLAYED_ID} again got error frame \"{refusal}\", id {next} was signed"
    ))
}

/// Half a header, then the connection closed; a new connection must work.
fn truncated(endpoint: &Endpoint) -> Result<String, Failed> {
    let mut conn = Conn::connect(endpoint)?;
    let header = Header {
        op: Op::Sign as u16,
        flags: 0,
        id: conn.next_id(),
        len: 0,
    };
    let half = HEADER_LEN / 2;
    conn.send_raw(&header.encode()[..half])?;
    drop(conn);
    still_answers(endpoint)?;
    Ok(format!(
        "{half} of {HEADER_LEN} header bytes then close, nothing expected back; \
         a new connection got stats"
    ))
}

/// The refusal in `reply`, if its code is `want`.
fn expect_code(reply: Reply, want: ErrorCode) -> Result<Refusal, Failed> {
    match reply {
        Reply::Refused(refusal) if refusal.code == want => Ok(refusal),
        Reply::Refused(refusal) => Err(Failed(format!(
            "error frame \"{refusal}\" where \"{want}\" was expected"
        ))),
        Reply::Answer(_) => Err(Failed(format!(
            "an answer where error \"{want}\" was expected"
        ))),
    }
}

/// Waits for the service to end the stream: "closed" or "reset".
fn expect_end<S: std::io::Read + std::io::Write>(
    conn: &mut Conn<S>,
) -> Result<&'static str, Failed> {
    match conn.receive() {
        Err(conn::Error::Closed) => Ok("closed"),
        Err(conn::Error::Reset) => Ok("reset"),
        Err(conn::Error::Timeout(t)) => Err(Failed(format!(
            "the stream stayed open for {} s after the error",
            t.as_secs()
        ))),
        Ok(frame) => Err(Failed(format!(
            "the stream stayed open: another frame (op {:#06x}) came after the error",
            frame.header.op
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A new connection gets its stats.
fn still_answers(endpoint: &Endpoint) -> Result<(), Failed> {
    Conn::connect(endpoint)
        .and_then(|mut conn| conn.stats())
        .map(|_| ())
        .map_err(|e| Failed(format!("a new connection afterwards: {e}")))
}

/// A seed that differs from run to run; it need not be unpredictable.
fn seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
}

/// [`GARBAGE_LEN`] bytes from `seed` (xorshift64), never starting with the magic.
fn noise(seed: u64) -> [u8; GARBAGE_LEN] {
    let mut state = seed | 1;
    let mut out = [0u8; GARBAGE_LEN];
    for chunk in out.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    if out[..4] == MAGIC.to_le_bytes() {
        out[0] ^= 0xff;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_never_a_frame() {
        for seed in 0..1000 {
            let n = noise(seed);
            assert_ne!(n[..4], MAGIC.to_le_bytes());
        }
        assert_ne!(noise(1), noise(2));
    }

    #[test]
    fn only_the_expected_code_passes() {
        let refusal = |code| {
            Reply::Refused(Refusal {
                code,
                raw: code as u16,
                message: "why".into(),
            })
        };
        assert!(expect_code(refusal(ErrorCode::Replay), ErrorCode::Replay).is_ok());
        assert_eq!(
            expect_code(refusal(ErrorCode::BadRequest), ErrorCode::Replay)
                .unwrap_err()
                .0,
            "error frame \"malformed request: why\" where \"replayed request id\" was expected"
        );
        assert!(expect_code(Reply::Answer(vec![]), ErrorCode::Replay)
            .unwrap_err()
            .0
            .starts_with("an answer"));
    }
}
