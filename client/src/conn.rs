//! One connection to the secure service: the AF_VSOCK socket and the request framing of
//! `tandem_proto::service`.
//!
//! [`Conn`] speaks the protocol over any byte stream, so the host tests run it over a
//! Unix socket pair; [`VsockStream`] is the real stream, the only code here that calls
//! the C library.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tandem_proto::attest::{Report, NONCE_LEN};
use tandem_proto::service::{
    ErrorCode, Header, Op, ServiceStats, ERROR, HEADER_LEN, MAGIC, MAX_BODY, RESPONSE, TAG_LEN,
};

/// `AF_VSOCK` (`<linux/socket.h>`).
const AF_VSOCK: libc::c_int = 40;
/// `SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD` (`<linux/vm_sockets.h>`), at level `AF_VSOCK`: how
/// long `connect` waits for the other side. It takes a `struct timeval`, which on 64-bit
/// Linux is the same as the old one. Without it `connect` gives up after 2 s.
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;

/// The secure guest's CID in the shipped layouts (`cids` in `configs/virt.dtsi`).
pub const SECURE_GUEST_CID: u32 = 3;

/// Where the service listens, and how long to wait for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The VM's context id.
    pub cid: u32,
    /// The vsock port.
    pub port: u32,
    /// How long a connect, a send or a receive may take.
    pub timeout: Duration,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            cid: SECURE_GUEST_CID,
            port: tandem_proto::service::PORT,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The service's answer to a request, whose error frame it is, and what it said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The code, as the protocol names it.
    pub code: ErrorCode,
    /// The code as sent (it differs from `code` for [`ErrorCode::Other`]).
    pub raw: u16,
    /// The service's explanation.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            ErrorCode::Other => write!(f, "error code {}", self.raw)?,
            code => write!(f, "{code}")?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Why talking to the service failed.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be made or connected.
    Connect {
        /// Where it tried to connect.
        endpoint: Endpoint,
        /// What the kernel said.
        source: io::Error,
    },
    /// The secure guest closed the connection: the stream ended, or a write came after
    /// its close.
    Closed,
    /// The connection was reset: the secure guest (or the hypervisor for it) dropped it.
    Reset,
    /// Nothing came, or nothing could be sent, within this time.
    Timeout(Duration),
    /// A request body over [`MAX_BODY`] bytes: the service would refuse the frame.
    BodyTooLong(usize),
    /// What came back is not a valid answer to the request; the text says why.
    BadResponse(String),
    /// The service answered with an error frame.
    Refused(Refusal),
    /// Any other error of the socket.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { endpoint, source } => {
                write!(
                    f,
                    "cannot connect to vsock {}:{}: ",
                    endpoint.cid, endpoint.port
                )?;
                match source.raw_os_error() {
                    // virtio-vsock refuses a connection to a port nobody listens on with a
                    // reset, which connect reports as ECONNRESET.
                    Some(libc::ECONNREFUSED | libc::ECONNRESET) => {
                        f.write_str("connection refused (is the secure guest running?)")
                    }
                    Some(libc::ETIMEDOUT) => {
                        f.write_str("connection timed out (is the secure guest running?)")
                    }
                    Some(libc::ENODEV) => f.write_str(
                        "no such device (no vsock transport reaches that CID: \
                         is vmw_vsock_virtio_transport loaded?)",
                    ),
                    Some(libc::EAFNOSUPPORT) => f.write_str(
                        "address family not supported (is the vsock kernel module loaded?)",
                    ),
                    _ => f.write_str(&describe(source)),
                }
            }
            Self::Closed => f.write_str("the secure guest closed the connection"),
            Self::Reset => f.write_str("connection reset by the secure guest"),
            Self::Timeout(t) => write!(f, "no answer within {} s", t.as_secs()),
            Self::BodyTooLong(len) => write!(
                f,
                "a request body of {len} bytes is over the service's limit of {MAX_BODY}"
            ),
            Self::BadResponse(why) => write!(f, "bad response: {why}"),
            Self::Refused(refusal) => write!(f, "the service refused: {refusal}"),
            Self::Io(e) => f.write_str(&describe(e)),
        }
    }
}

/// An I/O error's text without Rust's "(os error N)", in lower case like the rest.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What an I/O error on an established stream means for the caller.
fn stream_error(e: io::Error, timeout: Duration) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => Error::Timeout(timeout),
        K::ConnectionReset | K::ConnectionAborted | K::NotConnected => Error::Reset,
        K::BrokenPipe | K::UnexpectedEof | K::WriteZero => Error::Closed,
        _ => Error::Io(e),
    }
}

/// A connected `AF_VSOCK` stream socket, closed when dropped.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    /// Connects to `endpoint`, with its timeout for the connect, every send and every
    /// receive.
    pub fn connect(endpoint: &Endpoint) -> io::Result<Self> {
        // SAFETY: socket() takes no pointers; its result is checked before use.
        let fd = unsafe { libc::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stream = VsockStream { fd };
        stream.set_time(libc::SOL_SOCKET, libc::SO_RCVTIMEO, endpoint.timeout)?;
        stream.set_time(libc::SOL_SOCKET, libc::SO_SNDTIMEO, endpoint.timeout)?;
        stream.set_time(AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, endpoint.timeout)?;
        let addr = libc::sockaddr_vm {
            svm_family: AF_VSOCK as libc::sa_family_t,
            svm_reserved1: 0,
            svm_port: endpoint.port,
            svm_cid: endpoint.cid,
            svm_zero: [0; 4],
        };
        // SAFETY: `addr` is a whole sockaddr_vm that lives across the call, and its size
        // is the length passed.
        let r = unsafe {
            libc::connect(
                stream.fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }

    /// Sets a socket option that takes a `struct timeval`.
    fn set_time(&self, level: libc::c_int, name: libc::c_int, time: Duration) -> io::Result<()> {
        // Both fit in an i32, which converts into `time_t` and `suseconds_t` of any width.
        let secs = i32::try_from(time.as_secs()).unwrap_or(i32::MAX);
        let micros = i32::try_from(time.subsec_micros()).unwrap_or(0);
        let tv = libc::timeval {
            tv_sec: secs.into(),
            tv_usec: micros.into(),
        };
        // SAFETY: `tv` is a whole timeval that lives across the call, and its size is the
        // length passed.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes for the whole call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is readable for `buf.len()` bytes for the whole call.
            // MSG_NOSIGNAL: a closed peer gives EPIPE rather than SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast::<libc::c_void>(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One frame as it came, header checked (magic, length) and body read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its header.
    pub header: Header,
    /// Its `len` body bytes.
    pub body: Vec<u8>,
}

impl Frame {
    /// The error frame's code and text, or why this frame is not a well-formed one.
    pub fn refusal(&self) -> Result<Refusal, Error> {
        if self.header.op != ERROR {
            return Err(Error::BadResponse(format!(
                "op {:#06x} where an error frame was expected",
                self.header.op
            )));
        }
        let Some((code, text)) = self.body.split_first_chunk::<2>() else {
            return Err(Error::BadResponse(format!(
                "an error frame of {} bytes, too short for its code",
                self.body.len()
            )));
        };
        let raw = u16::from_le_bytes(*code);
        Ok(Refusal {
            code: ErrorCode::from_code(raw),
            raw,
            message: String::from_utf8_lossy(text).into_owned(),
        })
    }
}

/// The service's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The result: the response frame's body.
    Answer(Vec<u8>),
    /// An error frame.
    Refused(Refusal),
}

/// A connection to the service. Each request made through [`Conn::call`] gets an id above
/// every id sent before on this connection, as the service demands.
#[derive(Debug)]
pub struct Conn<S = VsockStream> {
    stream: S,
    /// The highest id sent so far (0: none).
    last_id: u32,
    /// The stream's timeout, named in [`Error::Timeout`].
    timeout: Duration,
}

impl Conn<VsockStream> {
    /// Connects to the service at `endpoint`.
    pub fn connect(endpoint: &Endpoint) -> Result<Self, Error> {
        let stream = VsockStream::connect(endpoint).map_err(|source| Error::Connect {
            endpoint: *endpoint,
            source,
        })?;
        Ok(Conn::new(stream, endpoint.timeout))
    }
}

impl<S: Read + Write> Conn<S> {
    /// Speaks the protocol over `stream`, whose reads and writes give up after `timeout`.
    pub fn new(stream: S, timeout: Duration) -> Self {
        Conn {
            stream,
            last_id: 0,
            timeout,
        }
    }

    /// An id above every one sent so far.
    pub fn next_id(&mut self) -> u32 {
        self.last_id.wrapping_add(1)
    }

    /// Sends a request and returns its result; an error frame becomes [`Error::Refused`].
    pub fn call(&mut self, op: Op, body: &[u8]) -> Result<Vec<u8>, Error> {
        let id = self.next_id();
        match self.exchange(op as u16, id, body)? {
            Reply::Answer(result) => Ok(result),
            Reply::Refused(refusal) => Err(Error::Refused(refusal)),
        }
    }

    /// The service's tag for `data`.
    pub fn sign(&mut self, data: &[u8]) -> Result<[u8; TAG_LEN], Error> {
        let body = self.call(Op::Sign, data)?;
        <[u8; TAG_LEN]>::try_from(body.as_slice()).map_err(|_| {
            Error::BadResponse(format!("a tag of {} bytes, not {TAG_LEN}", body.len()))
        })
    }

    /// Whether `tag` is the service's tag for `data`.
    pub fn verify(&mut self, tag: &[u8; TAG_LEN], data: &[u8]) -> Result<bool, Error> {
        let mut body = Vec::with_capacity(TAG_LEN + data.len());
        body.extend_from_slice(tag);
        body.extend_from_slice(data);
        match self.call(Op::Verify, &body)?.as_slice() {
            [1] => Ok(true),
            [0] => Ok(false),
            other => Err(Error::BadResponse(format!(
                "a verdict of {:02x?}, not one byte 0 or 1",
                other
            ))),
        }
    }

    /// The service's counters.
    pub fn stats(&mut self) -> Result<ServiceStats, Error> {
        let body = self.call(Op::Stats, &[])?;
        ServiceStats::decode(&body).ok_or_else(|| {
            Error::BadResponse(format!(
                "statistics of {} bytes, not {}",
                body.len(),
                ServiceStats::LEN
            ))
        })
    }

    /// The service's attestation report over `nonce`, decoded but not checked.
    pub fn attest(&mut self, nonce: &[u8; NONCE_LEN]) -> Result<Report, Error> {
        let body = self.call(Op::Attest, nonce)?;
        Report::decode(&body).ok_or_else(|| {
            Error::BadResponse(format!(
                "a report of {} bytes, not {}",
                body.len(),
                Report::LEN
            ))
        })
    }

    /// Sends a request with any `op` and `id` and waits for its answer, checking that it
    /// carries the same id and answers that op.
    pub fn exchange(&mut self, op: u16, id: u32, body: &[u8]) -> Result<Reply, Error> {
        self.send(op, id, body)?;
        self.receive_reply(op, id)
    }

    /// Sends one request frame (flags 0).
    pub fn send(&mut self, op: u16, id: u32, body: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len as usize <= MAX_BODY)
            .ok_or(Error::BodyTooLong(body.len()))?;
        let header = Header {
            op,
            flags: 0,
            id,
            len,
        };
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend_from_slice(&header.encode());
        frame.extend_from_slice(body);
        self.send_raw(&frame)?;
        self.last_id = self.last_id.max(id);
        Ok(())
    }

    /// Sends bytes as they are, framed or not.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(bytes)
            .map_err(|e| stream_error(e, self.timeout))
    }

    /// Waits for the answer to request `id` of `op`.
    pub fn receive_reply(&mut self, op: u16, id: u32) -> Result<Reply, Error> {
        let frame = self.receive()?;
        if frame.header.id != id {
            return Err(Error::BadResponse(format!(
                "id {} in the answer to request {id}",
                frame.header.id
            )));
        }
        if frame.header.flags != 0 {
            return Err(Error::BadResponse(format!(
                "flags {:#06x}, not 0",
                frame.header.flags
            )));
        }
        if frame.header.op == ERROR {
            return frame.refusal().map(Reply::Refused);
        }
        if frame.header.op != op | RESPONSE {
            return Err(Error::BadResponse(format!(
                "op {:#06x} in the answer to op {op:#06x}",
                frame.header.op
            )));
        }
        Ok(Reply::Answer(frame.body))
    }

    /// Waits for the next frame, whatever it answers. The end of the stream is
    /// [`Error::Closed`] or [`Error::Reset`].
    pub fn receive(&mut self) -> Result<Frame, Error> {
        let mut raw = [0u8; HEADER_LEN];
        self.read_exact(&mut raw)?;
        let header = Header::decode(&raw).map_err(|(code, _)| match code {
            ErrorCode::TooLong => Error::BadResponse(format!(
                "a body of {} bytes, over the protocol's {MAX_BODY}",
                u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]])
            )),
            _ => Error::BadResponse(format!(
                "magic {:02x?}, not {:02x?} (\"TDM1\")",
                &raw[..4],
                MAGIC.to_le_bytes()
            )),
        })?;
        let mut body = vec![0; header.len as usize];
        self.read_exact(&mut body)?;
        Ok(Frame { header, body })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.stream
            .read_exact(buf)
            .map_err(|e| stream_error(e, self.timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::thread;

    const TIMEOUT: Duration = Duration::from_millis(500);

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

    fn error(id: u32, code: ErrorCode, text: &str) -> Vec<u8> {
        let mut body = (code as u16).to_le_bytes().to_vec();
        body.extend_from_slice(text.as_bytes());
        frame(ERROR, id, &body)
    }

    /// Reads one request frame from the client's side of the pair.
    fn request(s: &mut UnixStream) -> (Header, Vec<u8>) {
        let mut raw = [0u8; HEADER_LEN];
        s.read_exact(&mut raw).unwrap();
        let h = Header::decode(&raw).unwrap();
        let mut body = vec![0; h.len as usize];
        s.read_exact(&mut body).unwrap();
        (h, body)
    }

    /// A connection whose other end runs `service` on a thread.
    fn with_service(
        service: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (Conn<UnixStream>, thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();
        let handle = thread::spawn(move || service(theirs));
        (Conn::new(ours, TIMEOUT), handle)
    }

    #[test]
    fn requests_get_growing_ids_and_typed_results() {
        let (mut conn, service) = with_service(|mut s| {
            let (h, body) = request(&mut s);
            assert_eq!(
                (h.op, h.id, h.flags, body.as_slice()),
                (1, 1, 0, &b"abc"[..])
            );
            s.write_all(&frame(RESPONSE | 1, 1, &[7; TAG_LEN])).unwrap();
            let (h, body) = request(&mut s);
            assert_eq!((h.op, h.id, body.len()), (2, 2, TAG_LEN + 3));
            s.write_all(&frame(RESPONSE | 2, 2, &[0])).unwrap();
            let (h, _) = request(&mut s);
            assert_eq!((h.op, h.id), (3, 3));
            let stats = ServiceStats {
                requests: 3,
                ..Default::default()
            };
            s.write_all(&frame(RESPONSE | 3, 3, &stats.encode()))
                .unwrap();
        });
        assert_eq!(conn.sign(b"abc").unwrap(), [7; TAG_LEN]);
        assert!(!conn.verify(&[1; TAG_LEN], b"abc").unwrap());
        assert_eq!(conn.stats().unwrap().requests, 3);
        service.join().unwrap();
    }

    #[test]
    fn attest_sends_the_nonce_and_decodes_the_report_or_names_the_refusal() {
        let (mut conn, service) = with_service(|mut s| {
            let (h, body) = request(&mut s);
            assert_eq!((h.op, body.as_slice()), (4, &[5; NONCE_LEN][..]));
            let report = [7; Report::LEN];
            s.write_all(&frame(RESPONSE | 4, h.id, &report)).unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&frame(RESPONSE | 4, h.id, &[0; 3])).unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&error(h.id, ErrorCode::NotAllowed, "no attestation"))
                .unwrap();
        });
        let report = conn.attest(&[5; NONCE_LEN]).unwrap();
        assert_eq!(report.encode(), [7; Report::LEN]);
        assert_eq!(
            conn.attest(&[5; NONCE_LEN]).unwrap_err().to_string(),
            format!("bad response: a report of 3 bytes, not {}", Report::LEN)
        );
        assert_eq!(
            conn.attest(&[5; NONCE_LEN]).unwrap_err().to_string(),
            "the service refused: not allowed: no attestation"
        );
        service.join().unwrap();
    }

    #[test]
    fn explicit_ids_move_the_next_one_on() {
        let (mut conn, service) = with_service(|mut s| {
            for _ in 0..2 {
                let (h, _) = request(&mut s);
                s.write_all(&frame(RESPONSE | 1, h.id, &[0; TAG_LEN]))
                    .unwrap();
            }
        });
        conn.exchange(Op::Sign as u16, 41, b"x").unwrap();
        assert_eq!(conn.next_id(), 42);
        conn.sign(b"y").unwrap();
        assert_eq!(conn.next_id(), 43);
        service.join().unwrap();
    }

    #[test]
    fn error_frames_become_refusals() {
        let (mut conn, service) = with_service(|mut s| {
            let (h, _) = request(&mut s);
            s.write_all(&error(h.id, ErrorCode::BadRequest, "short"))
                .unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&frame(ERROR, h.id, &[0x34, 0x12, b'?']))
                .unwrap();
        });
        let err = conn.call(Op::Verify, &[0; 10]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the service refused: malformed request: short"
        );
        match conn.exchange(0x1234, 9, &[]).unwrap() {
            Reply::Refused(r) => {
                assert_eq!((r.code, r.raw), (ErrorCode::Other, 0x1234));
                assert_eq!(r.to_string(), "error code 4660: ?");
            }
            other => panic!("{other:?}"),
        }
        service.join().unwrap();
    }

    #[test]
    fn answers_that_do_not_fit_are_bad_responses() {
        let (mut conn, service) = with_service(|mut s| {
            let (h, _) = request(&mut s);
            s.write_all(&frame(RESPONSE | 1, h.id + 1, &[0; TAG_LEN]))
                .unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&frame(RESPONSE | 3, h.id, &[0; TAG_LEN]))
                .unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&frame(RESPONSE | 1, h.id, &[0; 31])).unwrap();
            let (h, _) = request(&mut s);
            s.write_all(&frame(ERROR, h.id, &[1])).unwrap();
            request(&mut s);
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap();
        });
        let text = |r: Result<[u8; TAG_LEN], Error>| r.unwrap_err().to_string();
        assert_eq!(
            text(conn.sign(b"a")),
            "bad response: id 2 in the answer to request 1"
        );
        assert_eq!(
            text(conn.sign(b"a")),
            "bad response: op 0x8003 in the answer to op 0x0001"
        );
        assert_eq!(
            text(conn.sign(b"a")),
            "bad response: a tag of 31 bytes, not 32"
        );
        assert!(text(conn.sign(b"a")).contains("too short for its code"));
        assert!(text(conn.sign(b"a")).starts_with("bad response: magic [48, 54, 54, 50]"));
        service.join().unwrap();
    }

    #[test]
    fn the_end_of_the_stream_and_silence_are_named() {
        let (mut conn, service) = with_service(|mut s| {
            request(&mut s);
            // Silence, then the end of the stream.
            thread::sleep(TIMEOUT * 2);
        });
        let err = conn.stats().unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        service.join().unwrap();
        assert!(matches!(conn.receive(), Err(Error::Closed)));
        assert!(matches!(conn.send_raw(b"x"), Err(Error::Closed)));
    }

    #[test]
    fn oversize_bodies_are_not_sent() {
        let (mut conn, service) = with_service(|_| {});
        let err = conn.sign(&vec![0; MAX_BODY + 1]).unwrap_err();
        assert!(matches!(err, Error::BodyTooLong(n) if n == MAX_BODY + 1));
        service.join().unwrap();
    }

    #[test]
    fn connect_errors_name_the_endpoint_and_a_likely_cause() {
        let endpoint = Endpoint::default();
        let err = Error::Connect {
            endpoint,
            source: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            err.to_string(),
            "cannot connect to vsock 3:5000: connection refused (is the secure guest running?)"
        );
        let reset = Error::Connect {
            endpoint,
            source: io::Error::from_raw_os_error(libc::ECONNRESET),
        };
        assert_eq!(err.to_string(), reset.to_string());
        let other = Error::Connect {
            endpoint,
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            other.to_string(),
            "cannot connect to vsock 3:5000: permission denied"
        );
        assert_eq!(
            Error::Timeout(endpoint.timeout).to_string(),
            "no answer within 5 s"
        );
        assert_eq!(
            Error::Reset.to_string(),
            "connection reset by the secure guest"
        );
    }
}
