//! Record rings between the hypervisor and the secure guest.
//!
//! The binding's `vsock@N` node gives a region of memory that only the hypervisor and the
//! secure guest (the service) can reach. Its first half is the ring **to the service**
//! (the hypervisor produces, the service consumes), its second half the ring **to the
//! hypervisor**. Each half starts with two counters on their own cache lines, then data:
//!
//! | offset in the half | what |
//! |---|---|
//! | 0 | `head`: bytes the producer has written, ever (u32, wrapping) |
//! | 64 | `tail`: bytes the consumer has taken, ever (u32, wrapping) |
//! | 128 .. half | the data bytes, used as a circle |
//!
//! A record is a 16-byte header (`kind` u8, three zero bytes, `conn` u32, `arg` u32, `len`
//! u32, little-endian) and `len` payload bytes, written at `head` modulo the capacity, then
//! published by storing the new `head` with release order. The consumer loads `head` with
//! acquire order, copies the whole record into its own memory, and only then decodes it;
//! then stores the new `tail`.
//!
//! Neither side trusts the other: each keeps its own counter privately ([`Producer`] and
//! [`Consumer`] hold it) and only *publishes* it to the shared memory; the other side's
//! counter is checked (the bytes in use never exceed the capacity, a record never exceeds
//! what was published, a payload never exceeds [`MAX_PAYLOAD`]). A broken ring is reported
//! as [`RingError::Corrupt`], never acted on.

use core::fmt;

/// Bytes of a record header.
pub const HEADER_LEN: usize = 16;
/// Most payload bytes in one record.
pub const MAX_PAYLOAD: usize = 2048;
/// Bytes of one whole record, at most.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_PAYLOAD;
/// The smallest region: one 4 KiB page each way.
pub const MIN_REGION: usize = 8192;
/// Where `head` is in a half.
const HEAD: usize = 0;
/// Where `tail` is in a half.
const TAIL: usize = 64;
/// Where the data starts in a half.
const DATA: usize = 128;

/// Memory shared with the other side, as the ring code reaches it. Offsets are always
/// inside the region; the implementations for real memory are in [`raw`].
pub trait SharedMemory {
    /// Copies bytes out, as single-byte accesses the other side may race with.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copies bytes in.
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Loads a 32-bit counter (4-byte aligned) with acquire order.
    fn load_acquire(&self, offset: usize) -> u32;
    /// Stores a 32-bit counter (4-byte aligned) with release order: everything written
    /// before is visible to whoever sees the new value.
    fn store_release(&mut self, offset: usize, value: u32);
}

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// To the service: Linux asks to connect to port `arg`; answer `Accept` or `Reset`.
    /// To the hypervisor: unused.
    Open = 1,
    /// The service accepts connection `conn`.
    Accept = 2,
    /// Stream bytes on `conn`, in the payload.
    Data = 3,
    /// The sender will send nothing more on `conn` (Linux shut down or closed; the service
    /// closes gracefully). The connection ends when both sides have sent it, or on `Reset`.
    Shutdown = 4,
    /// `conn` is over at once, buffered data dropped (or a connection refused).
    Reset = 5,
    /// To the hypervisor: accept connections to port `arg` from now on.
    Listen = 6,
}

impl Kind {
    /// The kind with this code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Open,
            2 => Self::Accept,
            3 => Self::Data,
            4 => Self::Shutdown,
            5 => Self::Reset,
            6 => Self::Listen,
            _ => return None,
        })
    }
}

/// A record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// What it says.
    pub kind: Kind,
    /// The connection (the hypervisor's number for it; 0 for `Listen`).
    pub conn: u32,
    /// A port for `Open` and `Listen`; 0 otherwise.
    pub arg: u32,
}

impl Record {
    /// A record of `kind` on `conn` with no argument.
    pub const fn new(kind: Kind, conn: u32) -> Self {
        Self { kind, conn, arg: 0 }
    }
}

/// Why the ring could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Not enough room for the record now; try again after the consumer moves.
    Full,
    /// The payload is longer than [`MAX_PAYLOAD`].
    TooLong(usize),
    /// The other side broke the ring: what it published cannot be right. Nothing more can
    /// be taken from this ring until it is set up again.
    Corrupt(&'static str),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => write!(f, "the ring is full"),
            Self::TooLong(n) => write!(f, "a {n}-byte payload is over {MAX_PAYLOAD}"),
            Self::Corrupt(why) => write!(f, "the ring is corrupt: {why}"),
        }
    }
}

/// Which half of the region a ring is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The first half: the hypervisor writes, the service reads.
    ToService,
    /// The second half: the service writes, the hypervisor reads.
    ToHypervisor,
}

/// Where one ring is in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    base: usize,
    capacity: usize,
}

impl Layout {
    fn new(region: usize, direction: Direction) -> Option<Self> {
        if region < MIN_REGION {
            return None;
        }
        let half = region / 2;
        let base = match direction {
            Direction::ToService => 0,
            Direction::ToHypervisor => half,
        };
        Some(Self {
            base,
            capacity: half - DATA,
        })
    }

    /// Copies `data` into the circle at stream position `at`.
    fn write_wrapped(&self, mem: &mut impl SharedMemory, at: u32, data: &[u8]) {
        let start = at as usize % self.capacity;
        let first = data.len().min(self.capacity - start);
        let (a, b) = data.split_at(first);
        mem.write(self.base + DATA + start, a);
        if !b.is_empty() {
            mem.write(self.base + DATA, b);
        }
    }

    /// Copies out of the circle at stream position `at`.
    fn read_wrapped(&self, mem: &impl SharedMemory, at: u32, buf: &mut [u8]) {
        let start = at as usize % self.capacity;
        let first = buf.len().min(self.capacity - start);
        let (a, b) = buf.split_at_mut(first);
        mem.read(self.base + DATA + start, a);
        if !b.is_empty() {
            mem.read(self.base + DATA, b);
        }
    }

    /// Bytes in use from `tail` to `head`, if that can be right.
    fn used(&self, head: u32, tail: u32) -> Option<usize> {
        let used = head.wrapping_sub(tail) as usize;
        (used <= self.capacity).then_some(used)
    }
}

/// The writing end of one ring. Keeps its own `head`.
#[derive(Clone, Debug)]
pub struct Producer {
    layout: Layout,
    head: u32,
}

impl Producer {
    /// The writing end of `direction` in a region of `region` bytes, starting empty.
    /// `None` when the region is smaller than [`MIN_REGION`].
    pub fn new(region: usize, direction: Direction) -> Option<Self> {
        Some(Self {
            layout: Layout::new(region, direction)?,
            head: 0,
        })
    }

    /// Sets the ring up empty: both counters 0. Only the producer does this, and only
    /// while the consumer is not running (before it starts, or after it was reset).
    pub fn init(&mut self, mem: &mut impl SharedMemory) {
        self.head = 0;
        mem.store_release(self.layout.base + TAIL, 0);
        mem.store_release(self.layout.base + HEAD, 0);
    }

    /// Bytes of payload a record could carry now (0 when not even a header fits), or
    /// `Corrupt` when the consumer's `tail` cannot be right.
    pub fn room(&self, mem: &impl SharedMemory) -> Result<usize, RingError> {
        let tail = mem.load_acquire(self.layout.base + TAIL);
        let used = self.layout.used(self.head, tail).ok_or(RingError::Corrupt(
            "the consumer's tail is ahead of the head",
        ))?;
        Ok((self.layout.capacity - used)
            .saturating_sub(HEADER_LEN)
            .min(MAX_PAYLOAD))
    }

    /// Writes one record and publishes it.
    pub fn push(
        &mut self,
        mem: &mut impl SharedMemory,
        record: Record,
        payload: &[u8],
    ) -> Result<(), RingError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(RingError::TooLong(payload.len()));
        }
        if self.room(mem)? < payload.len() {
            return Err(RingError::Full);
        }
        let mut header = [0u8; HEADER_LEN];
        header[0] = record.kind as u8;
        header[4..8].copy_from_slice(&record.conn.to_le_bytes());
        header[8..12].copy_from_slice(&record.arg.to_le_bytes());
        // At most MAX_PAYLOAD: fits.
        header[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        self.layout.write_wrapped(mem, self.head, &header);
        let body_at = self.head.wrapping_add(HEADER_LEN as u32);
        self.layout.write_wrapped(mem, body_at, payload);
        self.head = body_at.wrapping_add(payload.len() as u32);
        mem.store_release(self.layout.base + HEAD, self.head);
        Ok(())
    }
}

/// The reading end of one ring. Keeps its own `tail`.
#[derive(Clone, Debug)]
pub struct Consumer {
    layout: Layout,
    tail: u32,
}

impl Consumer {
    /// The reading end of `direction` in a region of `region` bytes, at its start.
    /// `None` when the region is smaller than [`MIN_REGION`].
    pub fn new(region: usize, direction: Direction) -> Option<Self> {
        Some(Self {
            layout: Layout::new(region, direction)?,
            tail: 0,
        })
    }

    /// Bytes the ring holds when full: what the producer can have published at any instant.
    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    /// Starts over at an empty ring (both counters 0), as after [`Producer::init`].
    pub fn restart(&mut self) {
        self.tail = 0;
    }

    /// Whether a record is waiting (the producer's `head` moved), or `Corrupt`.
    pub fn pending(&self, mem: &impl SharedMemory) -> Result<bool, RingError> {
        let head = mem.load_acquire(self.layout.base + HEAD);
        let used = self
            .layout
            .used(head, self.tail)
            .ok_or(RingError::Corrupt("the producer's head is too far ahead"))?;
        Ok(used > 0)
    }

    /// Takes the next record: copies it whole into `buf` (the caller's own memory), checks
    /// it there, and returns its header and payload. `Ok(None)` when the ring is empty.
    pub fn pop<'b>(
        &mut self,
        mem: &mut impl SharedMemory,
        buf: &'b mut [u8; MAX_RECORD],
    ) -> Result<Option<(Record, &'b [u8])>, RingError> {
        let head = mem.load_acquire(self.layout.base + HEAD);
        let used = self
            .layout
            .used(head, self.tail)
            .ok_or(RingError::Corrupt("the producer's head is too far ahead"))?;
        if used == 0 {
            return Ok(None);
        }
        if used < HEADER_LEN {
            return Err(RingError::Corrupt("a record shorter than its header"));
        }
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        self.layout.read_wrapped(mem, self.tail, header);
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let len = word(12) as usize;
        if len > MAX_PAYLOAD {
            return Err(RingError::Corrupt("a payload over MAX_PAYLOAD"));
        }
        if HEADER_LEN + len > used {
            return Err(RingError::Corrupt("a record beyond the published head"));
        }
        let kind = Kind::from_code(header[0]).ok_or(RingError::Corrupt("an unknown kind"))?;
        let record = Record {
            kind,
            conn: word(4),
            arg: word(8),
        };
        let payload = &mut rest[..len];
        self.layout
            .read_wrapped(mem, self.tail.wrapping_add(HEADER_LEN as u32), payload);
        self.tail = self.tail.wrapping_add((HEADER_LEN + len) as u32);
        mem.store_release(self.layout.base + TAIL, self.tail);
        Ok(Some((record, payload)))
    }
}

/// [`SharedMemory`] over a plain byte slice: tests, fuzzing and tools.
#[derive(Debug)]
pub struct ByteMemory<'a>(pub &'a mut [u8]);

impl SharedMemory for ByteMemory<'_> {
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.0[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0[offset..offset + data.len()].copy_from_slice(data);
    }
    fn load_acquire(&self, offset: usize) -> u32 {
        let b = &self.0[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn store_release(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// [`SharedMemory`] over real memory, for the hypervisor and the secure guest.
pub mod raw {
    #![allow(unsafe_code)]

    use core::sync::atomic::{AtomicU32, Ordering};

    use super::SharedMemory;

    /// A region of memory the other side may write at any time.
    #[derive(Debug)]
    pub struct RawMemory {
        base: *mut u8,
        len: usize,
    }

    // SAFETY: the region is plain memory shared on purpose; every access is volatile or
    // atomic, and the ring protocol decides who writes what.
    unsafe impl Send for RawMemory {}

    impl RawMemory {
        /// The region at `base`, `len` bytes.
        ///
        /// # Safety
        /// `base..base + len` must be mapped, readable and writable normal memory for as
        /// long as this lives, 64-byte aligned, used by nothing else in this program, and
        /// shared only with the ring's other side.
        pub unsafe fn new(base: *mut u8, len: usize) -> Self {
            Self { base, len }
        }

        /// Where the region starts.
        pub fn base(&self) -> *mut u8 {
            self.base
        }

        fn counter(&self, offset: usize) -> &AtomicU32 {
            assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
            // SAFETY: in bounds and aligned (checked above; the base is 64-byte aligned),
            // valid memory per `new`'s contract; the other side touches it only with 32-bit
            // accesses too.
            unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
        }
    }

    impl SharedMemory for RawMemory {
        fn read(&self, offset: usize, buf: &mut [u8]) {
            assert!(offset
                .checked_add(buf.len())
                .is_some_and(|end| end <= self.len));
            for (i, b) in buf.iter_mut().enumerate() {
                // SAFETY: in bounds (checked above) of memory valid per `new`.
                *b = unsafe { self.base.add(offset + i).read_volatile() };
            }
        }

        fn write(&mut self, offset: usize, data: &[u8]) {
            assert!(offset
                .checked_add(data.len())
                .is_some_and(|end| end <= self.len));
            for (i, &b) in data.iter().enumerate() {
                // SAFETY: in bounds (checked above) of memory valid per `new`.
                unsafe { self.base.add(offset + i).write_volatile(b) };
            }
        }

        fn load_acquire(&self, offset: usize) -> u32 {
            self.counter(offset).load(Ordering::Acquire)
        }

        fn store_release(&mut self, offset: usize, value: u32) {
            self.counter(offset).store(value, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(region: usize, dir: Direction) -> (Producer, Consumer) {
        (
            Producer::new(region, dir).unwrap(),
            Consumer::new(region, dir).unwrap(),
        )
    }

    #[test]
    fn records_arrive_in_order_and_whole_across_the_wrap() {
        let mut bytes = [0u8; 65536];
        let mut mem = ByteMemory(&mut bytes);
        let (mut p, mut c) = pair(MIN_REGION, Direction::ToHypervisor);
        p.init(&mut mem);
        let mut buf = [0u8; MAX_RECORD];
        for round in 0u32..200 {
            let payload: [u8; 300] = core::array::from_fn(|i| (i as u32 + round) as u8);
            p.push(
                &mut mem,
                Record::new(Kind::Data, round),
                &payload[..round as usize],
            )
            .unwrap();
            let (rec, got) = c.pop(&mut mem, &mut buf).unwrap().unwrap();
            assert_eq!(rec, Record::new(Kind::Data, round));
            assert_eq!(got, &payload[..round as usize]);
            assert_eq!(c.pop(&mut mem, &mut buf).unwrap(), None);
        }
    }

    #[test]
    fn a_full_ring_says_so_and_takes_nothing() {
        let mut bytes = [0u8; 65536];
        let mut mem = ByteMemory(&mut bytes);
        let (mut p, mut c) = pair(MIN_REGION, Direction::ToService);
        p.init(&mut mem);
        let payload = [7u8; MAX_PAYLOAD];
        p.push(&mut mem, Record::new(Kind::Data, 1), &payload)
            .unwrap();
        assert_eq!(
            p.push(&mut mem, Record::new(Kind::Data, 2), &payload),
            Err(RingError::Full)
        );
        let mut buf = [0u8; MAX_RECORD];
        assert_eq!(c.pop(&mut mem, &mut buf).unwrap().unwrap().0.conn, 1);
        assert_eq!(c.pop(&mut mem, &mut buf).unwrap(), None);
        p.push(&mut mem, Record::new(Kind::Data, 2), &payload)
            .unwrap();
    }

    #[test]
    fn the_two_directions_do_not_overlap() {
        let mut bytes = [0u8; 65536];
        let mut mem = ByteMemory(&mut bytes);
        let (mut p1, mut c1) = pair(65536, Direction::ToService);
        let (mut p2, mut c2) = pair(65536, Direction::ToHypervisor);
        p1.init(&mut mem);
        p2.init(&mut mem);
        p1.push(
            &mut mem,
            Record {
                kind: Kind::Open,
                conn: 9,
                arg: 1234,
            },
            &[],
        )
        .unwrap();
        p2.push(
            &mut mem,
            Record {
                kind: Kind::Listen,
                conn: 0,
                arg: 77,
            },
            &[],
        )
        .unwrap();
        let mut buf = [0u8; MAX_RECORD];
        assert_eq!(c1.pop(&mut mem, &mut buf).unwrap().unwrap().0.arg, 1234);
        assert_eq!(c2.pop(&mut mem, &mut buf).unwrap().unwrap().0.arg, 77);
    }

    #[test]
    fn lies_about_the_counters_are_caught() {
        let mut bytes = [0u8; 65536];
        let mut mem = ByteMemory(&mut bytes);
        let (mut p, mut c) = pair(MIN_REGION, Direction::ToService);
        p.init(&mut mem);
        let mut buf = [0u8; MAX_RECORD];
        // A head far beyond the capacity.
        mem.store_release(HEAD, 1 << 30);
        assert!(matches!(
            c.pop(&mut mem, &mut buf),
            Err(RingError::Corrupt(_))
        ));
        // A tail ahead of the head.
        mem.store_release(HEAD, 0);
        mem.store_release(TAIL, 5);
        assert!(matches!(p.room(&mem), Err(RingError::Corrupt(_))));
        // A header announcing more than was published.
        mem.store_release(TAIL, 0);
        let mut header = [0u8; HEADER_LEN];
        header[0] = Kind::Data as u8;
        header[12..16].copy_from_slice(&100u32.to_le_bytes());
        mem.write(DATA, &header);
        mem.store_release(HEAD, 20);
        assert!(matches!(
            c.pop(&mut mem, &mut buf),
            Err(RingError::Corrupt(_))
        ));
    }

    proptest::proptest! {
        /// Whatever the other side writes into the region, reading it never panics and never
        /// returns a payload over the limit.
        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            head in proptest::prelude::any::<u32>(),
            tail in proptest::prelude::any::<u32>(),
        ) {
            let mut region = [0u8; 65536];
            let mut mem = ByteMemory(&mut region);
            mem.write(DATA, &bytes);
            mem.store_release(HEAD, head);
            mem.store_release(TAIL, tail);
            let mut c = Consumer::new(MIN_REGION, Direction::ToService).unwrap();
            let p = Producer::new(MIN_REGION, Direction::ToService).unwrap();
            let _ = p.room(&mem);
            let mut buf = [0u8; MAX_RECORD];
            for _ in 0..8 {
                match c.pop(&mut mem, &mut buf) {
                    Ok(Some((_, payload))) => proptest::prop_assert!(payload.len() <= MAX_PAYLOAD),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Any sequence of pushes and pops keeps order and content.
        #[test]
        fn pushes_and_pops_agree(ops in proptest::collection::vec((proptest::prelude::any::<bool>(), 0usize..MAX_PAYLOAD), 1..200)) {
            let mut bytes = [0u8; 65536];
        let mut mem = ByteMemory(&mut bytes);
            let (mut p, mut c) = pair(MIN_REGION, Direction::ToHypervisor);
            p.init(&mut mem);
            let mut sent = std::collections::VecDeque::new();
            let mut next = 0u32;
            let mut buf = [0u8; MAX_RECORD];
            for (push, len) in ops {
                if push {
                    let payload: std::vec::Vec<u8> = (0..len).map(|i| (i as u32 ^ next) as u8).collect();
                    match p.push(&mut mem, Record::new(Kind::Data, next), &payload) {
                        Ok(()) => { sent.push_back((next, payload)); next += 1; }
                        Err(RingError::Full) => {}
                        Err(e) => proptest::prop_assert!(false, "{e}"),
                    }
                } else {
                    let got = c.pop(&mut mem, &mut buf).unwrap().map(|(r, d)| (r.conn, d.to_vec()));
                    proptest::prop_assert_eq!(got, sent.pop_front());
                }
            }
        }
    }
}
