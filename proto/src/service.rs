//! The secure service's request protocol, spoken inside one vsock stream.
//!
//! Every message is a frame: a 16-byte header, then `len` body bytes.
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `magic` u32 | [`MAGIC`], "TDM1" |
//! | 4 | `op` u16 | a request [`Op`], or the same with [`RESPONSE`] set, or [`ERROR`] |
//! | 6 | `flags` u16 | 0 |
//! | 8 | `id` u32 | chosen by the client; the response carries the same |
//! | 12 | `len` u32 | body bytes, at most [`MAX_BODY`] |
//!
//! All fields little-endian. The client picks ids that grow on each connection; the service
//! answers a request whose id is not above the last one it answered on that connection with
//! [`ErrorCode::Replay`]. Every request gets exactly one response: its result, or an error
//! frame (`op` = [`ERROR`], body = [`ErrorCode`] as u16 then UTF-8 text). After an error in
//! the framing itself ([`ErrorCode::BadMagic`], [`ErrorCode::TooLong`]) the stream cannot be
//! followed any more, and the service closes it after the error.
//!
//! | request | body | response body |
//! |---|---|---|
//! | [`Op::Sign`] | the data | the 32-byte HMAC-SHA256 tag |
//! | [`Op::Verify`] | a 32-byte tag, then the data | one byte: 1 valid, 0 not |
//! | [`Op::Stats`] | empty | [`ServiceStats`], [`ServiceStats::LEN`] bytes |
//! | [`Op::Crash`] | empty | none: a test build faults on purpose, others answer [`ErrorCode::NotAllowed`] |
//! | [`Op::Attest`] | a 32-byte nonce | a [`Report`](crate::attest::Report) ([`Report::LEN`](crate::attest::Report::LEN) bytes), or [`ErrorCode::NotAllowed`] when the VM may not attest |

use core::fmt;

/// "TDM1", little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TDM1");
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 16;
/// Most body bytes in one frame.
pub const MAX_BODY: usize = 64 * 1024;
/// Set in a response's `op`.
pub const RESPONSE: u16 = 0x8000;
/// The `op` of an error response.
pub const ERROR: u16 = 0xffff;
/// Bytes of a signature tag.
pub const TAG_LEN: usize = 32;
/// The port the service listens on.
pub const PORT: u32 = 5000;

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Sign the body.
    Sign = 1,
    /// Check a tag against data.
    Verify = 2,
    /// The service's counters.
    Stats = 3,
    /// A signed attestation report over the client's nonce.
    Attest = 4,
    /// Fault on purpose (test builds only): shows how a crash is contained.
    Crash = 0x7f00,
}

impl Op {
    /// The op with this code.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Sign,
            2 => Self::Verify,
            3 => Self::Stats,
            4 => Self::Attest,
            0x7f00 => Self::Crash,
            _ => return None,
        })
    }
}

/// Why a request was refused; the first two bytes of an error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The header's magic is wrong: not this protocol, or the stream lost its place.
    BadMagic = 1,
    /// `len` is over [`MAX_BODY`].
    TooLong = 2,
    /// No such request.
    UnknownOp = 3,
    /// The body does not fit the request (a `Verify` shorter than a tag, a `Stats` with
    /// a body, flags set).
    BadRequest = 4,
    /// The id is not above the last one answered on this connection.
    Replay = 5,
    /// The request exists but is not allowed in this build.
    NotAllowed = 6,
    /// Any other code: a newer service.
    Other = 0xffff,
}

impl ErrorCode {
    /// The code for a number.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::BadMagic,
            2 => Self::TooLong,
            3 => Self::UnknownOp,
            4 => Self::BadRequest,
            5 => Self::Replay,
            6 => Self::NotAllowed,
            _ => Self::Other,
        }
    }

    /// Whether the stream is beyond repair after this error.
    pub fn ends_stream(self) -> bool {
        matches!(self, Self::BadMagic | Self::TooLong)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadMagic => "bad magic",
            Self::TooLong => "frame too long",
            Self::UnknownOp => "unknown request",
            Self::BadRequest => "malformed request",
            Self::Replay => "replayed request id",
            Self::NotAllowed => "not allowed",
            Self::Other => "error",
        })
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request or response op.
    pub op: u16,
    /// Flags: 0.
    pub flags: u16,
    /// The request id.
    pub id: u32,
    /// Body bytes that follow.
    pub len: u32,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.op.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes and checks a header: the magic and the length. The error names the id when
    /// it could be read, so the answer can carry it.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, (ErrorCode, u32)> {
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let half = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        if word(0) != MAGIC {
            return Err((ErrorCode::BadMagic, 0));
        }
        let header = Self {
            op: half(4),
            flags: half(6),
            id: word(8),
            len: word(12),
        };
        if header.len as usize > MAX_BODY {
            return Err((ErrorCode::TooLong, header.id));
        }
        Ok(header)
    }
}

/// A request, checked, borrowing its body from the service's own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Sign `data`.
    Sign {
        /// What to sign.
        data: &'a [u8],
    },
    /// Check `tag` against `data`.
    Verify {
        /// The tag to check.
        tag: &'a [u8; TAG_LEN],
        /// The data it should sign.
        data: &'a [u8],
    },
    /// Report the counters.
    Stats,
    /// Fault on purpose, where allowed.
    Crash,
    /// Attest over `nonce`.
    Attest {
        /// The client's nonce.
        nonce: &'a [u8; crate::attest::NONCE_LEN],
    },
}

impl<'a> Request<'a> {
    /// Checks a whole frame's header and body (already copied into the caller's memory).
    pub fn parse(header: &Header, body: &'a [u8]) -> Result<Self, ErrorCode> {
        if body.len() != header.len as usize {
            return Err(ErrorCode::BadRequest);
        }
        let op = Op::from_code(header.op).ok_or(ErrorCode::UnknownOp)?;
        if header.flags != 0 {
            return Err(ErrorCode::BadRequest);
        }
        match op {
            Op::Sign => Ok(Self::Sign { data: body }),
            Op::Verify => {
                let (tag, data) = body.split_first_chunk().ok_or(ErrorCode::BadRequest)?;
                Ok(Self::Verify { tag, data })
            }
            Op::Stats if body.is_empty() => Ok(Self::Stats),
            Op::Attest => Ok(Self::Attest {
                nonce: body.try_into().map_err(|_| ErrorCode::BadRequest)?,
            }),
            Op::Crash if body.is_empty() => Ok(Self::Crash),
            Op::Stats | Op::Crash => Err(ErrorCode::BadRequest),
        }
    }
}

/// The service's counters, as `Stats` returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Requests answered (with a result or an error).
    pub requests: u64,
    /// Tags made.
    pub signed: u64,
    /// Verifications made (either outcome).
    pub verified: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Milliseconds since this secure guest started (its virtual counter): small again
    /// after a restart.
    pub uptime_ms: u64,
}

impl ServiceStats {
    /// Bytes of the encoded form.
    pub const LEN: usize = 48;

    /// Encodes, little-endian, in field order.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let fields = [
            self.requests,
            self.signed,
            self.verified,
            self.errors,
            self.connections,
            self.uptime_ms,
        ];
        for (chunk, v) in b.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes; `None` unless exactly [`Self::LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN {
            return None;
        }
        let mut v = b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
        let mut next = || v.next().unwrap_or_default();
        Some(Self {
            requests: next(),
            signed: next(),
            verified: next(),
            errors: next(),
            connections: next(),
            uptime_ms: next(),
        })
    }
}

/// Collects a stream's bytes into whole frames, in the caller's buffer (the service's own
/// memory): at most [`HEADER_LEN`] + [`MAX_BODY`] bytes are ever held.
#[derive(Debug)]
pub struct Assembler<B> {
    buf: B,
    have: usize,
    header: Option<Header>,
}

/// What [`Assembler::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not a whole frame yet.
    Incomplete,
    /// A whole frame.
    Complete(Header, &'a [u8]),
    /// The header is broken ([`ErrorCode::BadMagic`] or [`ErrorCode::TooLong`]): answer
    /// with the error for the id and close the stream.
    Broken(ErrorCode, u32),
}

impl<B: AsMut<[u8]> + AsRef<[u8]>> Assembler<B> {
    /// An assembler over `buf`, which must hold [`HEADER_LEN`] + [`MAX_BODY`] bytes.
    pub fn new(buf: B) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN + MAX_BODY).then_some(Self {
            buf,
            have: 0,
            header: None,
        })
    }

    /// How many more bytes the current frame needs: feed at most this much.
    pub fn wanted(&self) -> usize {
        match self.header {
            None => HEADER_LEN - self.have,
            Some(h) => HEADER_LEN + h.len as usize - self.have,
        }
    }

    /// Takes up to [`wanted`](Self::wanted) bytes of `data`; returns how many it took.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.wanted());
        self.buf.as_mut()[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        n
    }

    /// The frame, once whole; the next [`feed`](Self::feed) starts a new one.
    pub fn take(&mut self) -> Frame<'_> {
        if self.header.is_none() && self.have == HEADER_LEN {
            let mut raw = [0u8; HEADER_LEN];
            raw.copy_from_slice(&self.buf.as_ref()[..HEADER_LEN]);
            match Header::decode(&raw) {
                Ok(h) => self.header = Some(h),
                Err((code, id)) => {
                    self.have = 0;
                    return Frame::Broken(code, id);
                }
            }
        }
        match self.header {
            Some(h) if self.have == HEADER_LEN + h.len as usize => {
                self.header = None;
                self.have = 0;
                Frame::Complete(
                    h,
                    &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + h.len as usize],
                )
            }
            _ => Frame::Incomplete,
        }
    }
}

/// Writes an error response's header and body start into `out`; returns the length.
pub fn error_frame(id: u32, code: ErrorCode, text: &str, out: &mut [u8; 128]) -> usize {
    let text = &text.as_bytes()[..text.len().min(128 - HEADER_LEN - 2)];
    let len = 2 + text.len();
    let header = Header {
        op: ERROR,
        flags: 0,
        id,
        len: len as u32,
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&(code as u16).to_le_bytes());
    out[HEADER_LEN + 2..HEADER_LEN + len].copy_from_slice(text);
    HEADER_LEN + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(op: u16, id: u32, body: &[u8]) -> std::vec::Vec<u8> {
        let mut v = Header {
            op,
            flags: 0,
            id,
            len: body.len() as u32,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_come_whole_however_the_stream_is_cut() {
        let mut stream = frame(Op::Sign as u16, 1, b"hello");
        stream.extend(frame(Op::Stats as u16, 2, b""));
        let mut tag_and_data = [9u8; 40].to_vec();
        tag_and_data[39] = 1;
        stream.extend(frame(Op::Verify as u16, 3, &tag_and_data));
        for cut in 1..stream.len() {
            let mut asm = Assembler::new(std::vec![0u8; HEADER_LEN + MAX_BODY]).unwrap();
            let mut got = std::vec::Vec::new();
            for piece in stream.chunks(cut) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let n = asm.feed(piece);
                    piece = &piece[n..];
                    if let Frame::Complete(h, body) = asm.take() {
                        got.push((
                            h.id,
                            Request::parse(&h, body).map(|r| std::format!("{r:?}")),
                        ));
                    }
                }
            }
            assert_eq!(got.len(), 3, "cut {cut}");
            assert_eq!(
                got[0].1.as_deref(),
                Ok("Sign { data: [104, 101, 108, 108, 111] }")
            );
            assert_eq!(got[1].1.as_deref(), Ok("Stats"));
            assert!(got[2].1.as_ref().unwrap().starts_with("Verify"));
        }
    }

    #[test]
    fn broken_headers_are_named() {
        let mut asm = Assembler::new(std::vec![0u8; HEADER_LEN + MAX_BODY]).unwrap();
        asm.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(asm.take(), Frame::Broken(ErrorCode::BadMagic, 0));
        let mut h = Header {
            op: 1,
            flags: 0,
            id: 7,
            len: MAX_BODY as u32 + 1,
        }
        .encode();
        asm.feed(&h);
        assert_eq!(asm.take(), Frame::Broken(ErrorCode::TooLong, 7));
        h = Header {
            op: 99,
            flags: 0,
            id: 8,
            len: 0,
        }
        .encode();
        asm.feed(&h);
        let Frame::Complete(header, body) = asm.take() else {
            panic!("whole")
        };
        assert_eq!(Request::parse(&header, body), Err(ErrorCode::UnknownOp));
    }

    #[test]
    fn bodies_must_fit_their_request() {
        let h = |op: Op, len: usize| Header {
            op: op as u16,
            flags: 0,
            id: 1,
            len: len as u32,
        };
        assert_eq!(
            Request::parse(&h(Op::Verify, 31), &[0; 31]),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            Request::parse(&h(Op::Stats, 1), &[0]),
            Err(ErrorCode::BadRequest)
        );
        assert!(matches!(
            Request::parse(&h(Op::Verify, 32), &[0; 32]),
            Ok(Request::Verify { data: [], .. })
        ));
    }

    #[test]
    fn stats_round_trip() {
        let s = ServiceStats {
            requests: 1,
            signed: 2,
            verified: 3,
            errors: 4,
            connections: 5,
            uptime_ms: 6,
        };
        assert_eq!(ServiceStats::decode(&s.encode()), Some(s));
        assert_eq!(ServiceStats::decode(&[0; 47]), None);
    }

    #[test]
    fn error_frames_are_frames() {
        let mut out = [0u8; 128];
        let n = error_frame(
            42,
            ErrorCode::Replay,
            "id 42 was answered already",
            &mut out,
        );
        let header = Header::decode(out[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            (header.op, header.id, header.len as usize),
            (ERROR, 42, n - HEADER_LEN)
        );
        assert_eq!(&out[HEADER_LEN..HEADER_LEN + 2], &5u16.to_le_bytes());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut asm = Assembler::new(std::vec![0u8; HEADER_LEN + MAX_BODY]).unwrap();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let n = asm.feed(rest);
                rest = &rest[n..];
                if let Frame::Complete(h, body) = asm.take() {
                    let _ = Request::parse(&h, body);
                }
            }
        }
    }
}
