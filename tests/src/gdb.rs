//! A minimal client for QEMU's gdb stub (the GDB remote serial protocol), so tests can stop
//! the machine at an address and read or patch registers and memory before it goes on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connection to a halted QEMU's gdb stub.
pub struct Gdb {
    stream: UnixStream,
    /// Bytes received but not yet consumed.
    pending: Vec<u8>,
}

impl Gdb {
    /// Connects to the stub's Unix socket, retrying while QEMU starts.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Gdb, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    return Ok(Gdb {
                        stream,
                        pending: Vec::new(),
                    })
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "cannot connect to QEMU's gdb stub at {}: {e}",
                        socket.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs until the CPU reaches `addr` (a temporary breakpoint), within `timeout`.
    pub fn run_to(&mut self, addr: u64, timeout: Duration) -> Result<(), String> {
        self.expect_ok(&format!("Z0,{addr:x},4"))?;
        self.send(b"c")?;
        let stop = self.receive(timeout)?;
        if !stop.starts_with('T') && !stop.starts_with('S') {
            return Err(format!(
                "the machine did not stop at {addr:#x}: stub said {stop:?}"
            ));
        }
        self.expect_ok(&format!("z0,{addr:x},4"))?;
        let pc = self.register(32)?;
        if pc != addr {
            return Err(format!(
                "stopped at {pc:#x}, not at the breakpoint {addr:#x}"
            ));
        }
        Ok(())
    }

    /// Reads a general-purpose register of the current CPU (0..=30 are x0..x30, 31 is sp,
    /// 32 is pc in QEMU's AArch64 register numbering).
    pub fn register(&mut self, number: u32) -> Result<u64, String> {
        let reply = self.request(&format!("p{number:x}"))?;
        let bytes = decode_hex(&reply)?;
        let bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("register {number}: short reply {reply:?}"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Reads `len` bytes of memory as the current CPU sees it.
    pub fn read_memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let reply = self.request(&format!("m{addr:x},{len:x}"))?;
        let bytes = decode_hex(&reply)?;
        if bytes.len() != len {
            return Err(format!(
                "reading {len} bytes at {addr:#x}: stub said {reply:?}"
            ));
        }
        Ok(bytes)
    }

    /// Writes memory as the current CPU sees it.
    pub fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        self.expect_ok(&format!(
            "M{addr:x},{:x}:{}",
            bytes.len(),
            encode_hex(bytes)
        ))
    }

    /// Lets the machine run on. The connection stays open until the `Gdb` is dropped.
    pub fn resume(&mut self) -> Result<(), String> {
        self.send(b"c")
    }

    fn expect_ok(&mut self, packet: &str) -> Result<(), String> {
        match self.request(packet)?.as_str() {
            "OK" => Ok(()),
            other => Err(format!("gdb stub refused {packet:?}: {other:?}")),
        }
    }

    fn request(&mut self, packet: &str) -> Result<String, String> {
        self.send(packet.as_bytes())?;
        let reply = self.receive(Duration::from_secs(10))?;
        if reply.len() == 3 && reply.starts_with('E') {
            return Err(format!("gdb stub error {reply} for {packet:?}"));
        }
        Ok(reply)
    }

    fn send(&mut self, payload: &[u8]) -> Result<(), String> {
        let packet = frame(payload);
        self.stream
            .write_all(&packet)
            .map_err(|e| format!("writing to the gdb stub: {e}"))
    }

    /// Reads the next packet's payload (skipping acknowledgements) and acknowledges it.
    fn receive(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((payload, used)) = parse_packet(&self.pending) {
                self.pending.drain(..used);
                self.stream
                    .write_all(b"+")
                    .map_err(|e| format!("writing to the gdb stub: {e}"))?;
                return Ok(payload);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no answer from the gdb stub within {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| format!("gdb socket: {e}"))?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("QEMU closed the gdb connection".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("reading from the gdb stub: {e}")),
            }
        }
    }
}

/// `$payload#checksum`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let sum = payload.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    let mut packet = Vec::with_capacity(payload.len() + 4);
    packet.push(b'$');
    packet.extend_from_slice(payload);
    packet.extend_from_slice(format!("#{sum:02x}").as_bytes());
    packet
}

/// Finds a complete `$...#xx` packet; returns its payload and the bytes consumed through it.
fn parse_packet(data: &[u8]) -> Option<(String, usize)> {
    let start = data.iter().position(|&b| b == b'$')?;
    let hash = start + data[start..].iter().position(|&b| b == b'#')?;
    if data.len() < hash + 3 {
        return None;
    }
    let payload = String::from_utf8_lossy(&data[start + 1..hash]).into_owned();
    Some((payload, hash + 3))
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd-length hex from the gdb stub: {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| format!("bad hex from the gdb stub: {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(frame(b"OK"), b"$OK#9a".to_vec());
        assert_eq!(frame(b""), b"$#00".to_vec());
        assert_eq!(parse_packet(b"+$OK#9a+"), Some(("OK".into(), 7)));
        assert_eq!(parse_packet(b"+$OK#9"), None);
        assert_eq!(parse_packet(b"+"), None);
    }

    #[test]
    fn hex() {
        assert_eq!(encode_hex(&[0, 0x10, 0xff]), "0010ff");
        assert_eq!(decode_hex("0010ff"), Ok(vec![0, 0x10, 0xff]));
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
