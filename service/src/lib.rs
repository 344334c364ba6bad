//! The signing service: records from the hypervisor in, records to push back out.
//!
//! Pure logic with no hardware in it, so it is tested on the host: the secure guest's ring
//! glue (`guests/secure/src/channel.rs`) hands each record
//! to [`Service::on_record`] with the guest's uptime, and the service pushes its answers
//! through an [`Outbox`]. Each connection keeps an [`Assembler`] (its own copy of the
//! stream, so every frame is checked in this guest's memory) and the last request id it
//! answered.
//!
//! When the hypervisor gave the guest its attestation [`Handover`]
//! ([`Service::set_handover`]), `Attest` is answered with a [`Report`] signed with the key
//! its CDI gives; the CDI itself never leaves the service.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tandem_proto::attest::{Handover, Report};
use tandem_proto::ring::{Kind, Record, MAX_PAYLOAD};
use tandem_proto::service::{
    error_frame, Assembler, ErrorCode, Frame, Header, Op, Request, ServiceStats, HEADER_LEN,
    MAX_BODY, PORT, RESPONSE, TAG_LEN,
};

/// Bytes of the device key.
pub const KEY_LEN: usize = 32;
/// Connections open at once: the hypervisor's limit.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes of a connection's frame buffer.
const ASSEMBLER_LEN: usize = HEADER_LEN + MAX_BODY;
/// Bytes of an error answer (what [`error_frame`] writes into).
const ERROR_LEN: usize = 128;
/// Bytes of the longest result body: an attestation report.
const MAX_RESULT: usize = Report::LEN;
/// Bytes of the longest answer.
const REPLY_LEN: usize = HEADER_LEN + MAX_RESULT;
const _: () = assert!(REPLY_LEN >= ERROR_LEN, "an error answer must fit a reply");

type HmacSha256 = Hmac<Sha256>;

/// Why a record could not be handed to the hypervisor (its ring stayed full, or broke).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undelivered;

/// Where the service's records go: the ring to the hypervisor.
pub trait Outbox {
    /// Pushes one record with its payload (at most [`MAX_PAYLOAD`] bytes).
    fn push(&mut self, record: Record, payload: &[u8]) -> Result<(), Undelivered>;
}

/// Whether the requests that exist only for tests are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestRequests {
    /// `Crash` faults on purpose (the `test-requests` build).
    Served,
    /// `Crash` is answered with [`ErrorCode::NotAllowed`].
    Refused,
}

/// What the guest must do after a record, beyond the records pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on.
    Continue,
    /// A `Crash` request was taken: fault now (nothing was answered).
    Crash,
}

/// What went wrong outside the requests themselves, for the console: none of it is a
/// client's request, so none of it is in [`ServiceStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// Connections refused: a port other than [`PORT`], no free slot, or no memory.
    pub refused: u64,
    /// Records ignored: for a connection the service does not have (one it just reset,
    /// say), or of a kind the hypervisor does not send.
    pub ignored: u64,
    /// Connections reset because their answer could not be pushed.
    pub dropped: u64,
}

impl fmt::Display for Anomalies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections refused, {} records ignored, {} connections dropped (ring full)",
            self.refused, self.ignored, self.dropped
        )
    }
}

/// One open connection.
struct Connection {
    /// The hypervisor's number for it.
    conn: u32,
    /// The stream's bytes until a frame is whole.
    assembler: Assembler<Vec<u8>>,
    /// The id of the last request answered, once there was one.
    last_id: Option<u32>,
}

/// A response, built in the service's memory before it is pushed.
struct Reply {
    bytes: [u8; REPLY_LEN],
    len: usize,
}

impl Reply {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A successful answer to request `op` with `id`; `body` is at most [`MAX_RESULT`]
    /// bytes.
    fn result(op: Op, id: u32, body: &[u8]) -> Self {
        let header = Header {
            op: op as u16 | RESPONSE,
            flags: 0,
            id,
            // At most MAX_RESULT bytes: fits.
            len: body.len() as u32,
        };
        let mut bytes = [0u8; REPLY_LEN];
        bytes[..HEADER_LEN].copy_from_slice(&header.encode());
        bytes[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        Self {
            bytes,
            len: HEADER_LEN + body.len(),
        }
    }

    /// An error answer to the request with `id`.
    fn error(id: u32, code: ErrorCode) -> Self {
        let mut bytes = [0u8; REPLY_LEN];
        let frame = bytes
            .first_chunk_mut::<ERROR_LEN>()
            .unwrap_or_else(|| unreachable!("REPLY_LEN is at least ERROR_LEN"));
        let len = error_frame(id, code, explain(code), frame);
        Self { bytes, len }
    }
}

/// The text of an error answer.
fn explain(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMagic => "not a TDM1 frame: closing the stream",
        ErrorCode::TooLong => "frame body over 65536 bytes: closing the stream",
        ErrorCode::UnknownOp => "no such request",
        ErrorCode::BadRequest => "the body or flags do not fit the request",
        ErrorCode::Replay => "request id not above the last one answered",
        ErrorCode::NotAllowed => "not served by this build or this VM",
        ErrorCode::Other => "error",
    }
}

/// What a whole frame comes to.
enum Answer {
    /// Push this, then go on.
    Reply(Reply),
    /// Push this, then shut the stream: it cannot be followed any more.
    Last(Reply),
    /// Fault on purpose, answering nothing.
    Crash,
}

/// The signing service.
pub struct Service {
    /// HMAC-SHA256 keyed with the device key, cloned for each tag.
    mac: HmacSha256,
    connections: Vec<Connection>,
    stats: ServiceStats,
    anomalies: Anomalies,
    test_requests: TestRequests,
    /// What `Attest` signs with, once the hypervisor handed it over.
    handover: Option<Handover>,
}

impl Service {
    /// A service signing with `key`, with no connections yet.
    pub fn new(key: &[u8; KEY_LEN], test_requests: TestRequests) -> Self {
        Self {
            // HMAC takes a key of any length: this cannot fail.
            mac: <HmacSha256 as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
            connections: Vec::new(),
            stats: ServiceStats::default(),
            anomalies: Anomalies::default(),
            test_requests,
            handover: None,
        }
    }

    /// Gives the service the VM's attestation handover: from now on `Attest` is answered
    /// with a report signed with the key its CDI gives (without one, with
    /// [`ErrorCode::NotAllowed`]).
    pub fn set_handover(&mut self, handover: Handover) {
        self.handover = Some(handover);
    }

    /// What went wrong outside requests.
    pub fn anomalies(&self) -> Anomalies {
        self.anomalies
    }

    /// Asks the hypervisor for connections to [`PORT`]: the first record the service pushes.
    pub fn listen(&mut self, out: &mut impl Outbox) -> Result<(), Undelivered> {
        out.push(
            Record {
                kind: Kind::Listen,
                conn: 0,
                arg: PORT,
            },
            &[],
        )
    }

    /// Handles one record from the hypervisor (already copied into this guest's memory);
    /// `uptime_ms` is the guest's uptime, for `Stats`.
    pub fn on_record(
        &mut self,
        record: Record,
        payload: &[u8],
        uptime_ms: u64,
        out: &mut impl Outbox,
    ) -> Step {
        match record.kind {
            Kind::Open => self.open(record.conn, record.arg, out),
            Kind::Data => return self.data(record.conn, payload, uptime_ms, out),
            Kind::Shutdown => match self.find(record.conn) {
                // Every whole frame was answered as it came: the rest is an unfinished one.
                Some(slot) => {
                    self.forget(slot);
                    self.push_or_drop(None, Record::new(Kind::Shutdown, record.conn), &[], out);
                }
                None => self.anomalies.ignored += 1,
            },
            Kind::Reset => match self.find(record.conn) {
                Some(slot) => self.forget(slot),
                None => self.anomalies.ignored += 1,
            },
            Kind::Accept | Kind::Listen => self.anomalies.ignored += 1,
        }
        Step::Continue
    }

    fn find(&self, conn: u32) -> Option<usize> {
        self.connections.iter().position(|c| c.conn == conn)
    }

    fn forget(&mut self, slot: usize) {
        // Dropping the connection frees its frame buffer.
        self.connections.swap_remove(slot);
    }

    /// Linux connects to `port`: accept it with a fresh frame buffer, or refuse it.
    fn open(&mut self, conn: u32, port: u32, out: &mut impl Outbox) {
        if let Some(slot) = self.find(conn) {
            // The hypervisor reused a number the service still holds: neither stream can be
            // trusted to be what its client sent.
            self.forget(slot);
            self.refuse(conn, out);
            return;
        }
        if port != PORT || self.connections.len() >= MAX_CONNECTIONS {
            self.refuse(conn, out);
            return;
        }
        let Some(assembler) = new_assembler() else {
            self.refuse(conn, out);
            return;
        };
        self.connections.push(Connection {
            conn,
            assembler,
            last_id: None,
        });
        self.stats.connections += 1;
        let slot = self.connections.len() - 1;
        self.push_or_drop(Some(slot), Record::new(Kind::Accept, conn), &[], out);
    }

    fn refuse(&mut self, conn: u32, out: &mut impl Outbox) {
        self.anomalies.refused += 1;
        // Nothing more to undo if even this cannot be pushed.
        let _ = out.push(Record::new(Kind::Reset, conn), &[]);
    }

    /// Stream bytes on `conn`: answers every frame they complete.
    fn data(&mut self, conn: u32, payload: &[u8], uptime_ms: u64, out: &mut impl Outbox) -> Step {
        let Some(slot) = self.find(conn) else {
            self.anomalies.ignored += 1;
            return Step::Continue;
        };
        let mut rest = payload;
        while !rest.is_empty() {
            let connection = &mut self.connections[slot];
            let taken = connection.assembler.feed(rest);
            rest = &rest[taken..];
            let answer = match connection.assembler.take() {
                // Taking nothing while no frame is whole cannot happen (the assembler wants
                // bytes until it holds a frame); stop rather than spin if it ever did.
                Frame::Incomplete if taken == 0 => break,
                Frame::Incomplete => continue,
                Frame::Complete(header, body) => answer(
                    &Keys {
                        mac: &self.mac,
                        handover: self.handover.as_ref(),
                    },
                    &mut self.stats,
                    &mut connection.last_id,
                    self.test_requests,
                    &header,
                    body,
                    uptime_ms,
                ),
                Frame::Broken(code, id) => {
                    self.stats.requests += 1;
                    self.stats.errors += 1;
                    Answer::Last(Reply::error(id, code))
                }
            };
            match answer {
                Answer::Reply(reply) => {
                    if !self.send(slot, conn, reply.bytes(), out) {
                        return Step::Continue;
                    }
                }
                Answer::Last(reply) => {
                    if self.send(slot, conn, reply.bytes(), out) {
                        self.forget(slot);
                        self.push_or_drop(None, Record::new(Kind::Shutdown, conn), &[], out);
                    }
                    return Step::Continue;
                }
                Answer::Crash => return Step::Crash,
            }
        }
        Step::Continue
    }

    /// Pushes `bytes` as stream data on `conn` (in `slot`); false when the connection had
    /// to be dropped instead.
    fn send(&mut self, slot: usize, conn: u32, bytes: &[u8], out: &mut impl Outbox) -> bool {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            if out.push(Record::new(Kind::Data, conn), chunk).is_err() {
                self.drop_connection(Some(slot), conn, out);
                return false;
            }
        }
        true
    }

    /// Pushes `record`; when it cannot be pushed, drops its connection (forgetting `slot`
    /// if the service still holds it).
    fn push_or_drop(
        &mut self,
        slot: Option<usize>,
        record: Record,
        payload: &[u8],
        out: &mut impl Outbox,
    ) {
        if out.push(record, payload).is_err() {
            self.drop_connection(slot, record.conn, out);
        }
    }

    /// The ring to the hypervisor stayed full: the connection cannot be answered, so it
    /// ends (with a reset, if even that can be pushed).
    fn drop_connection(&mut self, slot: Option<usize>, conn: u32, out: &mut impl Outbox) {
        if let Some(slot) = slot {
            self.forget(slot);
        }
        self.anomalies.dropped += 1;
        self.stats.errors += 1;
        let _ = out.push(Record::new(Kind::Reset, conn), &[]);
    }
}

/// A frame buffer from the heap, or `None` when the heap cannot spare one.
fn new_assembler() -> Option<Assembler<Vec<u8>>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(ASSEMBLER_LEN).ok()?;
    // Within the capacity just reserved: no allocation.
    buf.resize(ASSEMBLER_LEN, 0);
    Assembler::new(buf)
}

/// What the service signs with.
struct Keys<'a> {
    /// HMAC-SHA256 keyed with the device key.
    mac: &'a HmacSha256,
    /// The attestation handover, when the VM has one.
    handover: Option<&'a Handover>,
}

/// Answers one whole frame. Every request is counted in `stats` and gets exactly one
/// answer (a `Crash` that is served gets none: the guest goes down instead). An `Attest`
/// answered with a report counts as a request only: [`ServiceStats`] has no field for it.
fn answer(
    keys: &Keys<'_>,
    stats: &mut ServiceStats,
    last_id: &mut Option<u32>,
    test_requests: TestRequests,
    header: &Header,
    body: &[u8],
    uptime_ms: u64,
) -> Answer {
    stats.requests += 1;
    let id = header.id;
    if last_id.is_some_and(|last| id <= last) {
        stats.errors += 1;
        return Answer::Reply(Reply::error(id, ErrorCode::Replay));
    }
    *last_id = Some(id);
    let request = match Request::parse(header, body) {
        Ok(request) => request,
        Err(code) => {
            stats.errors += 1;
            return Answer::Reply(Reply::error(id, code));
        }
    };
    Answer::Reply(match request {
        Request::Sign { data } => {
            stats.signed += 1;
            let mut mac = keys.mac.clone();
            mac.update(data);
            let tag: [u8; TAG_LEN] = mac.finalize().into_bytes().into();
            Reply::result(Op::Sign, id, &tag)
        }
        Request::Verify { tag, data } => {
            stats.verified += 1;
            let mut mac = keys.mac.clone();
            mac.update(data);
            // `verify_slice` compares in constant time.
            let valid = mac.verify_slice(tag).is_ok();
            Reply::result(Op::Verify, id, &[u8::from(valid)])
        }
        Request::Stats => {
            let now = ServiceStats {
                uptime_ms,
                ..*stats
            };
            Reply::result(Op::Stats, id, &now.encode())
        }
        Request::Crash => match test_requests {
            TestRequests::Served => return Answer::Crash,
            TestRequests::Refused => {
                stats.errors += 1;
                Reply::error(id, ErrorCode::NotAllowed)
            }
        },
        Request::Attest { nonce } => match keys.handover {
            Some(handover) => {
                Reply::result(Op::Attest, id, &Report::sign(handover, nonce).encode())
            }
            None => {
                stats.errors += 1;
                Reply::error(id, ErrorCode::NotAllowed)
            }
        },
    })
}

#[cfg(test)]
mod tests {
    //! Host tests of the service logic (`cargo test -p tandem-service`).

    use super::*;
    use std::vec;
    use tandem_proto::attest::{field_text, AttestError, NONCE_LEN, SECRET_LEN};
    use tandem_proto::service::ERROR;

    const KEY: [u8; KEY_LEN] = [0x0b; KEY_LEN];

    /// HMAC-SHA256 of "Hi There" with KEY, computed independently (Python's `hmac`).
    const HI_THERE_TAG: [u8; TAG_LEN] = [
        0x19, 0x8a, 0x60, 0x7e, 0xb4, 0x4b, 0xfb, 0xc6, 0x99, 0x03, 0xa0, 0xf1, 0xcf, 0x2b, 0xbd,
        0xc5, 0xba, 0x0a, 0xa3, 0xf3, 0xd9, 0xae, 0x3c, 0x1c, 0x7a, 0x3b, 0x16, 0x96, 0xa0, 0xb6,
        0x8c, 0xf7,
    ];

    /// Records the service pushed; refuses pushes once `room` runs out.
    #[derive(Default)]
    struct Sink {
        records: Vec<(Record, Vec<u8>)>,
        room: Option<usize>,
    }

    impl Outbox for Sink {
        fn push(&mut self, record: Record, payload: &[u8]) -> Result<(), Undelivered> {
            match &mut self.room {
                Some(0) => return Err(Undelivered),
                Some(n) => *n -= 1,
                None => {}
            }
            self.records.push((record, payload.to_vec()));
            Ok(())
        }
    }

    impl Sink {
        fn take(&mut self) -> Vec<(Record, Vec<u8>)> {
            core::mem::take(&mut self.records)
        }
    }

    fn frame(op: u16, id: u32, body: &[u8]) -> Vec<u8> {
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

    fn record(kind: Kind, conn: u32) -> Record {
        Record::new(kind, conn)
    }

    fn open(service: &mut Service, sink: &mut Sink, conn: u32) {
        let rec = Record {
            kind: Kind::Open,
            conn,
            arg: PORT,
        };
        assert_eq!(service.on_record(rec, &[], 0, sink), Step::Continue);
        assert_eq!(sink.take(), vec![(record(Kind::Accept, conn), vec![])]);
    }

    /// Sends `bytes` on `conn` and returns the stream the service answered with.
    fn exchange(service: &mut Service, sink: &mut Sink, conn: u32, bytes: &[u8]) -> Vec<u8> {
        service.on_record(record(Kind::Data, conn), bytes, 1234, sink);
        sink.take()
            .into_iter()
            .flat_map(|(rec, payload)| {
                assert_eq!(rec, record(Kind::Data, conn));
                payload
            })
            .collect()
    }

    /// The (header, body) of each frame in `stream`.
    fn frames(mut stream: &[u8]) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while !stream.is_empty() {
            let header = Header::decode(stream[..HEADER_LEN].try_into().unwrap()).unwrap();
            let end = HEADER_LEN + header.len as usize;
            out.push((header, stream[HEADER_LEN..end].to_vec()));
            stream = &stream[end..];
        }
        out
    }

    fn error_code(body: &[u8]) -> ErrorCode {
        ErrorCode::from_code(u16::from_le_bytes([body[0], body[1]]))
    }

    #[test]
    fn it_listens_on_its_port() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        service.listen(&mut sink).unwrap();
        let listen = Record {
            kind: Kind::Listen,
            conn: 0,
            arg: PORT,
        };
        assert_eq!(sink.take(), vec![(listen, vec![])]);
    }

    #[test]
    fn sign_gives_the_hmac_and_verify_checks_it() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 7);
        let got = frames(&exchange(
            &mut service,
            &mut sink,
            7,
            &frame(Op::Sign as u16, 1, b"Hi There"),
        ));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.op, got[0].0.id), (Op::Sign as u16 | RESPONSE, 1));
        assert_eq!(got[0].1, HI_THERE_TAG);

        let mut good = HI_THERE_TAG.to_vec();
        good.extend_from_slice(b"Hi There");
        let mut bad = good.clone();
        bad[5] ^= 1;
        let mut stream = frame(Op::Verify as u16, 2, &good);
        stream.extend(frame(Op::Verify as u16, 3, &bad));
        let got = frames(&exchange(&mut service, &mut sink, 7, &stream));
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.id, got[0].1.as_slice()), (2, &[1u8][..]));
        assert_eq!((got[1].0.id, got[1].1.as_slice()), (3, &[0u8][..]));
        let stats = service.stats;
        assert_eq!((stats.requests, stats.signed, stats.verified), (3, 1, 2));
        assert_eq!((stats.errors, stats.connections), (0, 1));
    }

    #[test]
    fn frames_cut_anywhere_are_answered_once() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let mut stream = frame(Op::Sign as u16, 10, &[0x55; 3000]);
        stream.extend(frame(Op::Stats as u16, 11, &[]));
        let mut answers = Vec::new();
        for byte in &stream {
            answers.extend(exchange(&mut service, &mut sink, 1, &[*byte]));
        }
        let got = frames(&answers);
        assert_eq!(got.iter().map(|f| f.0.id).collect::<Vec<_>>(), [10, 11]);
        let stats = ServiceStats::decode(&got[1].1).unwrap();
        assert_eq!(
            (stats.requests, stats.signed, stats.uptime_ms),
            (2, 1, 1234)
        );
    }

    #[test]
    fn ids_must_grow_on_each_connection() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        open(&mut service, &mut sink, 2);
        let mut stream = frame(Op::Sign as u16, 0, b"a");
        stream.extend(frame(Op::Sign as u16, 0, b"a"));
        stream.extend(frame(Op::Sign as u16, 5, b"a"));
        stream.extend(frame(Op::Sign as u16, 4, b"a"));
        stream.extend(frame(Op::Sign as u16, 6, b"a"));
        let got = frames(&exchange(&mut service, &mut sink, 1, &stream));
        let ops: Vec<_> = got.iter().map(|f| (f.0.id, f.0.op)).collect();
        let sign = Op::Sign as u16 | RESPONSE;
        let error = tandem_proto::service::ERROR;
        assert_eq!(
            ops,
            [(0, sign), (0, error), (5, sign), (4, error), (6, sign)]
        );
        assert_eq!(error_code(&got[1].1), ErrorCode::Replay);
        // Another connection keeps its own count.
        let got = frames(&exchange(
            &mut service,
            &mut sink,
            2,
            &frame(Op::Stats as u16, 1, &[]),
        ));
        let stats = ServiceStats::decode(&got[0].1).unwrap();
        assert_eq!((stats.requests, stats.errors, stats.signed), (6, 2, 3));
    }

    #[test]
    fn a_broken_stream_is_answered_then_shut() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 3);
        let mut stream = frame(Op::Sign as u16, 1, b"ok");
        stream.extend(b"GET / HTTP/1.1\r\n\r\n");
        service.on_record(record(Kind::Data, 3), &stream, 0, &mut sink);
        let pushed = sink.take();
        assert_eq!(pushed.len(), 3);
        assert_eq!(pushed[2], (record(Kind::Shutdown, 3), vec![]));
        let got = frames(&pushed[1].1);
        assert_eq!(got[0].0.op, tandem_proto::service::ERROR);
        assert_eq!(error_code(&got[0].1), ErrorCode::BadMagic);
        assert_eq!(service.connections.len(), 0);
        // Whatever else comes for it is ignored.
        service.on_record(record(Kind::Data, 3), b"more", 0, &mut sink);
        assert!(sink.take().is_empty());
        assert_eq!(service.anomalies().ignored, 1);

        open(&mut service, &mut sink, 4);
        let mut header = frame(Op::Sign as u16, 9, &[]);
        header[12..16].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
        service.on_record(record(Kind::Data, 4), &header, 0, &mut sink);
        let pushed = sink.take();
        let got = frames(&pushed[0].1);
        assert_eq!(
            (got[0].0.id, error_code(&got[0].1)),
            (9, ErrorCode::TooLong)
        );
        assert_eq!(pushed[1], (record(Kind::Shutdown, 4), vec![]));
    }

    #[test]
    fn bad_requests_get_errors_and_the_stream_goes_on() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let mut stream = frame(0x1234, 1, &[]);
        stream.extend(frame(Op::Verify as u16, 2, &[0; 31]));
        stream.extend(frame(Op::Crash as u16, 3, &[]));
        stream.extend(frame(Op::Sign as u16, 4, &[]));
        let got = frames(&exchange(&mut service, &mut sink, 1, &stream));
        let codes: Vec<_> = got[..3].iter().map(|f| error_code(&f.1)).collect();
        assert_eq!(
            codes,
            [
                ErrorCode::UnknownOp,
                ErrorCode::BadRequest,
                ErrorCode::NotAllowed
            ]
        );
        assert_eq!(got[3].0.op, Op::Sign as u16 | RESPONSE);
        assert_eq!(service.stats.errors, 3);
    }

    /// A handover as the hypervisor would make it for an image whose digest is all `image`.
    fn handover(image: u8) -> Handover {
        Handover::make(
            &[0x42; SECRET_LEN],
            "secure",
            [image; 32],
            [2; 32],
            "tandem test",
            [3; 32],
        )
    }

    fn attest(id: u32, nonce: &[u8]) -> Vec<u8> {
        frame(Op::Attest as u16, id, nonce)
    }

    #[test]
    fn attest_gives_a_report_over_the_nonce_naming_the_image() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        service.set_handover(handover(7));
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let nonce = [0x5a; NONCE_LEN];
        let got = frames(&exchange(&mut service, &mut sink, 1, &attest(1, &nonce)));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.op, got[0].0.id),
            (Op::Attest as u16 | RESPONSE, 1)
        );
        let report = Report::decode(&got[0].1).expect("a report");
        let certificate = report.verify(&nonce).expect("a report that verifies");
        assert_eq!(certificate.image, [7; 32]);
        assert_eq!(field_text(&certificate.label), "secure");
        assert_eq!(report.device_key, handover(7).device_key);
        assert_eq!(report.verify(&[0; NONCE_LEN]), Err(AttestError::Nonce));
        // Counted as a request, and as nothing else.
        assert_eq!(
            service.stats,
            ServiceStats {
                requests: 1,
                connections: 1,
                ..ServiceStats::default()
            }
        );
    }

    #[test]
    fn attest_without_a_handover_is_not_allowed() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let got = frames(&exchange(
            &mut service,
            &mut sink,
            1,
            &attest(1, &[1; NONCE_LEN]),
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, ERROR);
        assert_eq!(error_code(&got[0].1), ErrorCode::NotAllowed);
        assert_eq!((service.stats.requests, service.stats.errors), (1, 1));
    }

    #[test]
    fn attest_with_a_nonce_of_the_wrong_size_is_a_bad_request() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        service.set_handover(handover(1));
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let mut stream = attest(1, &[1; NONCE_LEN - 1]);
        stream.extend(attest(2, &[]));
        stream.extend(attest(3, &[1; NONCE_LEN + 1]));
        stream.extend(attest(4, &[1; NONCE_LEN]));
        let got = frames(&exchange(&mut service, &mut sink, 1, &stream));
        let codes: Vec<_> = got[..3].iter().map(|f| error_code(&f.1)).collect();
        assert_eq!(codes, [ErrorCode::BadRequest; 3]);
        assert_eq!(got[3].0.op, Op::Attest as u16 | RESPONSE);
        assert_eq!((service.stats.requests, service.stats.errors), (4, 3));
    }

    #[test]
    fn the_cdi_is_in_no_record_the_service_pushes() {
        let handover = handover(3);
        let mut service = Service::new(&KEY, TestRequests::Refused);
        service.set_handover(handover);
        let mut sink = Sink::default();
        service.listen(&mut sink).unwrap();
        let mut pushed = sink.take();
        let opened = Record {
            kind: Kind::Open,
            conn: 1,
            arg: PORT,
        };
        service.on_record(opened, &[], 0, &mut sink);
        let mut stream = attest(1, &[0; NONCE_LEN]);
        // A client that sends the CDI's bytes as its nonce gets them back in the nonce
        // field: this shows the search below finds what it looks for.
        stream.extend(attest(2, &handover.cdi));
        stream.extend(frame(Op::Sign as u16, 3, b"data"));
        stream.extend(frame(Op::Verify as u16, 4, &[0; TAG_LEN]));
        stream.extend(frame(Op::Stats as u16, 5, &[]));
        stream.extend(frame(Op::Crash as u16, 6, &[]));
        stream.extend(frame(0x1234, 7, &[]));
        stream.extend(attest(8, &[0xff; NONCE_LEN - 1]));
        stream.extend(attest(8, &[0xee; NONCE_LEN]));
        service.on_record(record(Kind::Data, 1), &stream, 0, &mut sink);
        // A header with no magic: answered, then the stream is shut.
        service.on_record(record(Kind::Data, 1), &[0; HEADER_LEN], 0, &mut sink);
        pushed.extend(sink.take());

        let contains_cdi = |bytes: &[u8]| bytes.windows(SECRET_LEN).any(|w| w == handover.cdi);
        let output: Vec<u8> = pushed.iter().flat_map(|(_, p)| p.clone()).collect();
        let answers = frames(&output);
        assert_eq!(answers.len(), 10, "every request answered");
        // The one report whose nonce is the CDI's bytes carries them back, as the nonce.
        let echoes: Vec<_> = answers
            .iter()
            .filter(|(_, body)| contains_cdi(body))
            .collect();
        assert_eq!(echoes.len(), 1);
        assert_eq!(echoes[0].0.id, 2);
        assert_eq!(&echoes[0].1[..NONCE_LEN], handover.cdi);
        assert!(!contains_cdi(&echoes[0].1[NONCE_LEN..]));
        // Nowhere else, in any record or across records.
        let others: Vec<u8> = answers
            .iter()
            .filter(|(header, _)| header.id != 2)
            .flat_map(|(header, body)| {
                let mut bytes = header.encode().to_vec();
                bytes.extend_from_slice(body);
                bytes
            })
            .collect();
        assert!(!contains_cdi(&others));
        assert!(pushed.iter().all(|(_, p)| p.len() <= MAX_PAYLOAD));
    }

    #[test]
    fn crash_is_served_only_in_test_builds() {
        let mut service = Service::new(&KEY, TestRequests::Served);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        let step = service.on_record(
            record(Kind::Data, 1),
            &frame(Op::Crash as u16, 1, &[]),
            0,
            &mut sink,
        );
        assert_eq!(step, Step::Crash);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn connections_are_refused_beyond_the_limit_or_on_other_ports() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        for conn in 0..MAX_CONNECTIONS as u32 {
            open(&mut service, &mut sink, conn);
        }
        let over = Record {
            kind: Kind::Open,
            conn: 100,
            arg: PORT,
        };
        service.on_record(over, &[], 0, &mut sink);
        assert_eq!(sink.take(), vec![(record(Kind::Reset, 100), vec![])]);
        service.on_record(record(Kind::Reset, 0), &[], 0, &mut sink);
        service.on_record(record(Kind::Shutdown, 1), &[], 0, &mut sink);
        assert_eq!(sink.take(), vec![(record(Kind::Shutdown, 1), vec![])]);
        open(&mut service, &mut sink, 100);
        let elsewhere = Record {
            kind: Kind::Open,
            conn: 101,
            arg: PORT + 1,
        };
        service.on_record(elsewhere, &[], 0, &mut sink);
        assert_eq!(sink.take(), vec![(record(Kind::Reset, 101), vec![])]);
        assert_eq!(service.anomalies().refused, 2);
        assert_eq!(service.connections.len(), MAX_CONNECTIONS - 1);
    }

    #[test]
    fn an_answer_that_cannot_be_pushed_drops_its_connection() {
        let mut service = Service::new(&KEY, TestRequests::Refused);
        let mut sink = Sink::default();
        open(&mut service, &mut sink, 1);
        sink.room = Some(0);
        service.on_record(
            record(Kind::Data, 1),
            &frame(Op::Sign as u16, 1, b"x"),
            0,
            &mut sink,
        );
        assert_eq!(service.connections.len(), 0);
        assert_eq!(service.anomalies().dropped, 1);
        assert_eq!(service.stats.errors, 1);
        // With room for one record, the reset after a failed answer gets through.
        open_with_room(&mut service, &mut sink, 2);
        sink.room = Some(1);
        let mut stream = frame(Op::Sign as u16, 1, b"x");
        stream.extend(frame(Op::Sign as u16, 2, b"y"));
        service.on_record(record(Kind::Data, 2), &stream, 0, &mut sink);
        let pushed = sink.take();
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].0, record(Kind::Data, 2));
        assert_eq!(service.connections.len(), 0);
    }

    fn open_with_room(service: &mut Service, sink: &mut Sink, conn: u32) {
        sink.room = None;
        open(service, sink, conn);
    }
}
