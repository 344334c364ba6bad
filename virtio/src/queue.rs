//! Split virtqueues (virtio 1.2 §2.7): the driver's descriptor table and available ring
//! read, the used ring written, every index and address checked.
//!
//! # Memory ordering
//! The driver fills descriptors and available-ring entries, then publishes them by
//! advancing `avail.idx`; the device returns buffers by filling used-ring entries and then
//! advancing `used.idx` (§2.7.13, §2.7.8). Two barriers on the device side follow from that,
//! and both are here, as [`fence`]s, which on AArch64 are `dmb ishld` (acquire) and
//! `dmb ish` (release): inner shareable, like the driver's own `virt_rmb`/`virt_wmb`
//! (Linux's virtio-mmio rings use weak barriers), since both sides are CPUs of one system.
//! - after reading `avail.idx` and before reading the entries it covers (acquire), and
//! - after writing used-ring entries (and the buffers they describe) and before writing
//!   `used.idx` (release).
//!
//! What stays with the glue: making the interrupt visible only after `used.idx` is (a
//! `dsb ishst` before the GIC write that sends an SGI to another CPU, as Linux's own IPI
//! path does), and the single-copy-atomic index accesses of
//! [`GuestMemory::read_u16`]/[`GuestMemory::write_u16`].
//!
//! The device never sets `VIRTQ_USED_F_NO_NOTIFY` and ignores `VIRTQ_AVAIL_F_NO_INTERRUPT`
//! (allowed: §2.7.10, the flag is only a hint), so it needs no barrier between publishing
//! `used.idx` and reading the driver's flags.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{fence, Ordering};

use stage2::IntermediatePhysAddr;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::mem::{GuestMemory, MemoryError};

/// The largest queue size a split virtqueue may have (§2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable.
const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of descriptors; not offered.
const DESC_F_INDIRECT: u16 = 4;

/// Bytes of a descriptor-table entry.
const DESC_SIZE: u64 = 16;
/// Bytes of a used-ring element.
const USED_ELEM_SIZE: u64 = 8;
/// Bytes of the `flags` and `idx` fields at the start of both rings.
const RING_HEADER: u64 = 4;

/// A descriptor-table entry, `struct virtq_desc` (§2.7.5).
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Descriptor {
    addr: U64,
    len: U32,
    flags: U16,
    next: U16,
}

/// A used-ring element, `struct virtq_used_elem` (§2.7.8).
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct UsedElem {
    id: U32,
    len: U32,
}

const _: () = assert!(core::mem::size_of::<Descriptor>() == DESC_SIZE as usize);
const _: () = assert!(core::mem::size_of::<UsedElem>() == USED_ELEM_SIZE as usize);

/// How a driver broke a virtqueue. Any of these puts the device in `DEVICE_NEEDS_RESET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The driver enabled a queue whose size is zero, not a power of two or above
    /// `QueueNumMax`.
    Size(u16),
    /// The driver enabled a queue with a misaligned ring (descriptor table 16 bytes, driver
    /// area 2, device area 4: §2.7) or one that wraps around the address space.
    Layout,
    /// A ring, descriptor table or buffer lies outside the VM's RAM.
    Memory(MemoryError),
    /// `avail.idx` is more than the queue size ahead of the entries the device has taken.
    AvailIndex {
        /// The index the driver published.
        avail: u16,
        /// The next entry the device would take.
        next: u16,
    },
    /// A head or `next` index beyond the descriptor table.
    DescriptorIndex(u16),
    /// A chain longer than the queue: the `next` links loop.
    ChainTooLong,
    /// A descriptor with `VIRTQ_DESC_F_INDIRECT`, which the device does not offer.
    Indirect,
    /// A device-readable descriptor after a device-writable one (§2.7.4.2).
    ReadableAfterWritable,
    /// A buffer whose end wraps around the address space.
    BufferWraps,
    /// An access past the end of a chain's buffers. The device checks lengths before it
    /// copies, so this names a device bug, not a driver's.
    OutsideChain,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(size) => write!(
                f,
                "queue size {size} is not a power of two up to QueueNumMax"
            ),
            Self::Layout => write!(f, "queue rings misaligned or wrapping the address space"),
            Self::Memory(error) => write!(f, "queue memory: {error}"),
            Self::AvailIndex { avail, next } => {
                write!(f, "avail.idx {avail} is more than a ring ahead of {next}")
            }
            Self::DescriptorIndex(index) => write!(f, "descriptor index {index} beyond the table"),
            Self::ChainTooLong => write!(f, "descriptor chain longer than the queue (a loop)"),
            Self::Indirect => write!(f, "indirect descriptor, not negotiated"),
            Self::ReadableAfterWritable => {
                write!(f, "device-readable descriptor after a device-writable one")
            }
            Self::BufferWraps => write!(f, "buffer wraps around the address space"),
            Self::OutsideChain => write!(f, "access past the end of a descriptor chain"),
        }
    }
}

impl From<MemoryError> for QueueError {
    fn from(error: MemoryError) -> Self {
        Self::Memory(error)
    }
}

/// One buffer of a descriptor chain, as read (once) from the descriptor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its guest physical address.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u32,
    /// Whether it is device-writable (else device-readable).
    pub writable: bool,
}

/// A descriptor chain taken from the available ring: its head index and its buffers, the
/// device-readable ones first.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a> {
    /// The head descriptor's index, returned in the used ring.
    pub head: u16,
    /// The buffers, in chain order.
    pub segments: &'a [Segment],
}

impl Chain<'_> {
    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| !s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Reads `buf.len()` bytes starting `offset` bytes into the readable buffers, taken as
    /// one byte stream. Reading past their end is [`QueueError::OutsideChain`]; callers
    /// check [`readable_len`](Self::readable_len) first.
    pub fn read_at<M: GuestMemory>(
        &self,
        mem: &M,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), QueueError> {
        self.copy(false, offset, buf.len(), |addr, range| {
            mem.read(addr, &mut buf[range])
        })
    }

    /// Writes `data` starting `offset` bytes into the writable buffers, taken as one byte
    /// stream.
    pub fn write_at<M: GuestMemory>(
        &self,
        mem: &mut M,
        offset: u64,
        data: &[u8],
    ) -> Result<(), QueueError> {
        self.copy(true, offset, data.len(), |addr, range| {
            mem.write(addr, &data[range])
        })
    }

    /// Walks the buffers of one direction, calling `step` for each piece of the byte range
    /// `offset..offset + len` with its guest address and its range within the caller's slice.
    fn copy(
        &self,
        writable: bool,
        mut offset: u64,
        len: usize,
        mut step: impl FnMut(IntermediatePhysAddr, core::ops::Range<usize>) -> Result<(), MemoryError>,
    ) -> Result<(), QueueError> {
        let mut done = 0;
        for segment in self.segments.iter().filter(|s| s.writable == writable) {
            if done == len {
                return Ok(());
            }
            let seg_len = u64::from(segment.len);
            if offset >= seg_len {
                offset -= seg_len;
                continue;
            }
            // Both fit in usize: the piece is at most `len - done`.
            let piece = (seg_len - offset).min((len - done) as u64) as usize;
            // Cannot wrap: `walk` checked that `addr + len` fits in u64.
            step(
                IntermediatePhysAddr(segment.addr + offset),
                done..done + piece,
            )?;
            done += piece;
            offset = 0;
        }
        if done == len {
            Ok(())
        } else {
            Err(QueueError::OutsideChain)
        }
    }
}

/// One split virtqueue: the addresses and size the driver configured through the transport,
/// and the device's position in its rings.
#[derive(Clone, Debug)]
pub struct SplitQueue {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
    /// The next available-ring entry the device will take.
    next_avail: u16,
    /// The next used-ring entry the device will fill.
    next_used: u16,
    /// Used entries written since `used.idx` was last published.
    unpublished: bool,
}

impl SplitQueue {
    /// A disabled queue whose size may be at most `max_size` (a power of two).
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
            next_avail: 0,
            next_used: 0,
            unpublished: false,
        }
    }

    /// Back to the state after device reset: disabled, size `QueueNumMax`, addresses zero.
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// `QueueNumMax`.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// `QueueNum`: the size the driver chose.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// `QueueReady`.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The descriptor table, driver area and device area addresses.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc, self.driver, self.device)
    }

    /// Sets `QueueNum`; the low 16 bits of the register, as queue sizes are 16-bit.
    pub(crate) fn set_size(&mut self, size: u16) {
        self.size = size;
    }

    pub(crate) fn desc_mut(&mut self) -> &mut u64 {
        &mut self.desc
    }

    pub(crate) fn driver_mut(&mut self) -> &mut u64 {
        &mut self.driver
    }

    pub(crate) fn device_mut(&mut self) -> &mut u64 {
        &mut self.device
    }

    /// Enables the queue (`QueueReady` = 1) after checking its size and layout; the rings
    /// themselves are checked against RAM at every access.
    pub(crate) fn enable(&mut self) -> Result<(), QueueError> {
        let size = self.size;
        if size == 0 || !size.is_power_of_two() || size > self.max_size {
            return Err(QueueError::Size(size));
        }
        let n = u64::from(size);
        let aligned = self.desc.is_multiple_of(16)
            && self.driver.is_multiple_of(2)
            && self.device.is_multiple_of(4);
        // Both rings end with an event field, counted here though it is never used.
        let fits = self.desc.checked_add(n * DESC_SIZE).is_some()
            && self.driver.checked_add(RING_HEADER + n * 2 + 2).is_some()
            && self
                .device
                .checked_add(RING_HEADER + n * USED_ELEM_SIZE + 2)
                .is_some();
        if !aligned || !fits {
            return Err(QueueError::Layout);
        }
        self.ready = true;
        self.next_avail = 0;
        self.next_used = 0;
        self.unpublished = false;
        Ok(())
    }

    /// Disables the queue (`QueueReady` = 0).
    pub(crate) fn disable(&mut self) {
        self.ready = false;
    }

    /// Takes the next chain the driver made available, if any, reading its descriptors
    /// into `segments` (cleared first). Walks at most `size` descriptors.
    pub fn pop<'s, M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &'s mut Vec<Segment>,
    ) -> Result<Option<Chain<'s>>, QueueError> {
        segments.clear();
        if !self.ready {
            return Ok(None);
        }
        let avail = mem.read_u16(IntermediatePhysAddr(self.driver + 2))?;
        // The entries below `avail` (and the descriptors they name) were written before
        // the driver published `avail`: read them only after it.
        fence(Ordering::Acquire);
        let pending = avail.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::AvailIndex {
                avail,
                next: self.next_avail,
            });
        }
        let slot = u64::from(self.next_avail % self.size);
        let head = mem.read_u16(IntermediatePhysAddr(self.driver + RING_HEADER + 2 * slot))?;
        self.walk(mem, head, segments)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(Chain {
            head,
            segments: segments.as_slice(),
        }))
    }

    /// Reads the chain starting at `head` into `segments`, each descriptor once.
    fn walk<M: GuestMemory>(
        &self,
        mem: &M,
        head: u16,
        segments: &mut Vec<Segment>,
    ) -> Result<(), QueueError> {
        let mut index = head;
        let mut seen_writable = false;
        for _ in 0..self.size {
            if index >= self.size {
                return Err(QueueError::DescriptorIndex(index));
            }
            let mut raw = [0; DESC_SIZE as usize];
            mem.read(
                IntermediatePhysAddr(self.desc + u64::from(index) * DESC_SIZE),
                &mut raw,
            )?;
            let desc = Descriptor::read_from_bytes(&raw).map_err(|_| QueueError::Layout)?;
            let flags = desc.flags.get();
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            let writable = flags & DESC_F_WRITE != 0;
            if seen_writable && !writable {
                return Err(QueueError::ReadableAfterWritable);
            }
            seen_writable |= writable;
            let addr = desc.addr.get();
            let len = desc.len.get();
            if addr.checked_add(u64::from(len)).is_none() {
                return Err(QueueError::BufferWraps);
            }
            if !mem.contains(IntermediatePhysAddr(addr), u64::from(len)) {
                return Err(QueueError::Memory(MemoryError {
                    addr: IntermediatePhysAddr(addr),
                    len: u64::from(len),
                }));
            }
            segments.push(Segment {
                addr,
                len,
                writable,
            });
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = desc.next.get();
        }
        Err(QueueError::ChainTooLong)
    }

    /// Returns the chain with head `head` to the driver, `len` bytes written into it. Seen
    /// by the driver at the next [`publish`](Self::publish).
    pub fn push_used<M: GuestMemory>(
        &mut self,
        mem: &mut M,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(self.next_used % self.size);
        let elem = UsedElem {
            id: U32::new(u32::from(head)),
            len: U32::new(len),
        };
        mem.write(
            IntermediatePhysAddr(self.device + RING_HEADER + slot * USED_ELEM_SIZE),
            elem.as_bytes(),
        )?;
        self.next_used = self.next_used.wrapping_add(1);
        self.unpublished = true;
        Ok(())
    }

    /// Publishes the used entries pushed since the last call by writing `used.idx`.
    /// Returns whether there were any (then the driver should be interrupted).
    pub fn publish<M: GuestMemory>(&mut self, mem: &mut M) -> Result<bool, QueueError> {
        if !self.unpublished {
            return Ok(false);
        }
        // The used entries and the buffers they describe must be visible before the index
        // that hands them over.
        fence(Ordering::Release);
        mem.write_u16(IntermediatePhysAddr(self.device + 2), self.next_used)?;
        self.unpublished = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::FakeMemory;

    const BASE: u64 = 0x8000_0000;
    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;
    const DATA: u64 = BASE + 0x3000;

    struct Rig {
        mem: FakeMemory,
        queue: SplitQueue,
        segments: Vec<Segment>,
        avail_idx: u16,
    }

    impl Rig {
        fn new(size: u16) -> Self {
            let mut queue = SplitQueue::new(size);
            *queue.desc_mut() = DESC;
            *queue.driver_mut() = AVAIL;
            *queue.device_mut() = USED;
            queue.enable().unwrap();
            Self {
                mem: FakeMemory::new(BASE, 0x8000),
                queue,
                segments: Vec::new(),
                avail_idx: 0,
            }
        }

        fn desc(&mut self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let desc = Descriptor {
                addr: U64::new(addr),
                len: U32::new(len),
                flags: U16::new(flags),
                next: U16::new(next),
            };
            self.mem
                .write(
                    IntermediatePhysAddr(DESC + 16 * u64::from(index)),
                    desc.as_bytes(),
                )
                .unwrap();
        }

        fn offer(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % self.queue.size());
            self.mem
                .write_u16(IntermediatePhysAddr(AVAIL + 4 + 2 * slot), head)
                .unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.mem
                .write_u16(IntermediatePhysAddr(AVAIL + 2), self.avail_idx)
                .unwrap();
        }

        fn pop(&mut self) -> Result<Option<(u16, Vec<Segment>)>, QueueError> {
            let chain = self.queue.pop(&self.mem, &mut self.segments)?;
            Ok(chain.map(|c| (c.head, c.segments.to_vec())))
        }
    }

    #[test]
    fn pops_chains_in_order_and_reads_across_buffers() {
        let mut rig = Rig::new(4);
        rig.mem
            .write(IntermediatePhysAddr(DATA), b"hello, world")
            .unwrap();
        rig.desc(2, DATA, 5, DESC_F_NEXT, 0);
        rig.desc(0, DATA + 5, 7, DESC_F_NEXT, 3);
        rig.desc(3, DATA + 0x100, 16, DESC_F_WRITE, 0);
        rig.desc(1, DATA + 0x200, 4, 0, 0);
        rig.offer(2);
        rig.offer(1);
        let mut segments = Vec::new();
        let chain = rig.queue.pop(&rig.mem, &mut segments).unwrap().unwrap();
        assert_eq!(chain.head, 2);
        assert_eq!(chain.segments.len(), 3);
        assert_eq!((chain.readable_len(), chain.writable_len()), (12, 16));
        let mut buf = [0; 6];
        chain.read_at(&rig.mem, 3, &mut buf).unwrap();
        assert_eq!(&buf, b"lo, wo");
        assert_eq!(
            chain.read_at(&rig.mem, 8, &mut buf),
            Err(QueueError::OutsideChain)
        );
        chain.write_at(&mut rig.mem, 2, b"xyz").unwrap();
        let mut out = [0; 3];
        rig.mem
            .read(IntermediatePhysAddr(DATA + 0x102), &mut out)
            .unwrap();
        assert_eq!(&out, b"xyz");
        assert_eq!(rig.pop().unwrap().unwrap().0, 1);
        assert_eq!(rig.pop().unwrap(), None);
    }

    #[test]
    fn used_entries_are_published_by_the_index() {
        let mut rig = Rig::new(2);
        rig.queue.push_used(&mut rig.mem, 1, 44).unwrap();
        assert_eq!(
            rig.mem.read_u16(IntermediatePhysAddr(USED + 2)),
            Ok(0),
            "not yet published"
        );
        rig.queue.push_used(&mut rig.mem, 0, 7).unwrap();
        rig.queue.push_used(&mut rig.mem, 1, 9).unwrap();
        assert_eq!(rig.queue.publish(&mut rig.mem), Ok(true));
        assert_eq!(rig.queue.publish(&mut rig.mem), Ok(false), "nothing new");
        assert_eq!(rig.mem.read_u16(IntermediatePhysAddr(USED + 2)), Ok(3));
        let mut elem = [0; 8];
        rig.mem
            .read(IntermediatePhysAddr(USED + 4), &mut elem)
            .unwrap();
        assert_eq!(
            elem,
            [1, 0, 0, 0, 9, 0, 0, 0],
            "slot 0 wrapped over by the third"
        );
    }

    #[test]
    fn the_avail_index_wraps_at_u16() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 1, 0, 0);
        rig.avail_idx = u16::MAX;
        rig.queue.next_avail = u16::MAX;
        rig.offer(0);
        rig.offer(0);
        assert!(rig.pop().unwrap().is_some());
        assert!(rig.pop().unwrap().is_some());
        assert_eq!(rig.pop().unwrap(), None);
    }

    #[test]
    fn an_avail_index_too_far_ahead_is_an_error() {
        let mut rig = Rig::new(4);
        rig.mem
            .write_u16(IntermediatePhysAddr(AVAIL + 2), 5)
            .unwrap();
        assert_eq!(rig.pop(), Err(QueueError::AvailIndex { avail: 5, next: 0 }));
    }

    #[test]
    fn a_head_beyond_the_table_is_an_error() {
        let mut rig = Rig::new(4);
        rig.offer(4);
        assert_eq!(rig.pop(), Err(QueueError::DescriptorIndex(4)));
    }

    #[test]
    fn a_next_beyond_the_table_is_an_error() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 1, DESC_F_NEXT, 9);
        rig.offer(0);
        assert_eq!(rig.pop(), Err(QueueError::DescriptorIndex(9)));
    }

    #[test]
    fn a_looping_chain_is_an_error() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 1, DESC_F_NEXT, 1);
        rig.desc(1, DATA, 1, DESC_F_NEXT, 0);
        rig.offer(0);
        assert_eq!(rig.pop(), Err(QueueError::ChainTooLong));
        let mut rig = Rig::new(4);
        rig.desc(2, DATA, 1, DESC_F_NEXT, 2);
        rig.offer(2);
        assert_eq!(rig.pop(), Err(QueueError::ChainTooLong));
    }

    #[test]
    fn a_chain_as_long_as_the_queue_is_fine() {
        let mut rig = Rig::new(4);
        for i in 0..4 {
            rig.desc(i, DATA, 1, if i < 3 { DESC_F_NEXT } else { 0 }, i + 1);
        }
        rig.offer(0);
        assert_eq!(rig.pop().unwrap().unwrap().1.len(), 4);
    }

    #[test]
    fn indirect_descriptors_are_refused() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 32, DESC_F_INDIRECT, 0);
        rig.offer(0);
        assert_eq!(rig.pop(), Err(QueueError::Indirect));
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 4, DESC_F_WRITE | DESC_F_NEXT, 1);
        rig.desc(1, DATA, 4, 0, 0);
        rig.offer(0);
        assert_eq!(rig.pop(), Err(QueueError::ReadableAfterWritable));
    }

    #[test]
    fn a_wrapping_buffer_is_refused() {
        let mut rig = Rig::new(4);
        rig.desc(0, u64::MAX - 1, 4, 0, 0);
        rig.offer(0);
        assert_eq!(rig.pop(), Err(QueueError::BufferWraps));
    }

    #[test]
    fn rings_and_buffers_outside_ram_are_errors() {
        let mut rig = Rig::new(4);
        // A buffer outside RAM, and one that starts inside and runs past the end: the
        // chain is refused when it is taken, before anything reads it.
        rig.desc(0, 0x1000, 4, 0, 0);
        rig.offer(0);
        assert!(matches!(rig.pop(), Err(QueueError::Memory(_))));
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, u32::MAX, 0, 0);
        rig.offer(0);
        assert!(matches!(rig.pop(), Err(QueueError::Memory(_))));
        // Read past a chain's end by the device itself: refused too.
        let chain = Chain {
            head: 0,
            segments: &[Segment {
                addr: 0x1000,
                len: 4,
                writable: false,
            }],
        };
        assert!(matches!(
            chain.read_at(&rig.mem, 0, &mut [0; 4]),
            Err(QueueError::Memory(_))
        ));

        let mut queue = SplitQueue::new(4);
        *queue.driver_mut() = BASE + 0x10_0000;
        queue.enable().unwrap();
        assert!(matches!(
            queue.pop(&rig.mem, &mut Vec::new()),
            Err(QueueError::Memory(_))
        ));
        assert!(matches!(
            queue.push_used(&mut rig.mem, 0, 0),
            Err(QueueError::Memory(_))
        ));
    }

    #[test]
    fn a_disabled_queue_yields_nothing() {
        let mut rig = Rig::new(4);
        rig.desc(0, DATA, 1, 0, 0);
        rig.offer(0);
        rig.queue.disable();
        assert_eq!(rig.pop(), Ok(None));
    }
}
