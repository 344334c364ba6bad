//! A fake Linux driver for the vsock device: registers, rings in fake RAM, packets.

#![allow(dead_code)]

use std::collections::VecDeque;

use stage2::IntermediatePhysAddr;
use virtio::mmio::{offset, status, VIRTIO_F_VERSION_1};
use virtio::vsock::packet::{Header, Op, HEADER_LEN, TYPE_STREAM};
use virtio::vsock::{RX_QUEUE, TX_QUEUE};
use virtio::{AccessWidth, Effect, FakeMemory, GuestMemory, Vsock, VsockConfig};

pub const RAM_BASE: u64 = 0x4000_0000;
pub const LINUX_CID: u32 = 5;
pub const PEER_CID: u32 = 3;
/// Bytes of each transmit descriptor's buffer.
pub const TX_SLOT: u64 = 4096;
/// Linux's receive buffer: 4 KiB of payload after the header.
pub const RX_BUF: u32 = 4096 + HEADER_LEN as u32;

/// Where a queue's parts live in fake RAM.
#[derive(Clone, Debug)]
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub bufs: u64,
    pub slot: u64,
    pub avail_idx: u16,
    pub last_used: u16,
    pub free: VecDeque<u16>,
}

/// A driver of one vsock device, with its RAM.
pub struct Driver {
    pub dev: Vsock,
    pub mem: FakeMemory,
    pub rx: Ring,
    pub tx: Ring,
    pub event: Ring,
    /// Receive buffers as two descriptors (header, payload), as older Linux posts them.
    pub rx_split: bool,
    /// The interrupt line, as the device's effects set it.
    pub irq: bool,
    /// `NeedsReset` effects seen.
    pub needs_reset: usize,
    /// `process` calls made.
    pub process_calls: usize,
}

pub fn config() -> VsockConfig {
    VsockConfig {
        peer_cid: PEER_CID,
        ..VsockConfig::new(LINUX_CID)
    }
}

impl Driver {
    /// A driver that has brought the device up, with every receive buffer posted.
    pub fn new(config: VsockConfig) -> Self {
        Self::with_rx_split(config, false)
    }

    pub fn with_rx_split(config: VsockConfig, rx_split: bool) -> Self {
        let mut driver = Self::bare(config);
        driver.rx_split = rx_split;
        driver.bring_up();
        driver.post_all_rx();
        driver
    }

    /// Forgets the rings' state (after a device reset) and brings the device up again.
    pub fn restart(&mut self) {
        for which in 0..3 {
            let ring = self.ring_mut(which);
            ring.avail_idx = 0;
            ring.last_used = 0;
            ring.free = (0..ring.size).collect();
            let (avail, used) = (ring.avail, ring.used);
            self.mem
                .write_u16(IntermediatePhysAddr(avail + 2), 0)
                .unwrap();
            self.mem
                .write_u16(IntermediatePhysAddr(used + 2), 0)
                .unwrap();
        }
        self.bring_up();
        self.post_all_rx();
    }

    /// A driver that has not touched the device yet.
    pub fn bare(config: VsockConfig) -> Self {
        let size = config.queue_size;
        let n = u64::from(size);
        let mut next = RAM_BASE;
        let mut ring = |slot: u64| {
            let desc = next;
            let avail = desc + 16 * n;
            let used = (avail + 6 + 2 * n + 3) & !3;
            let bufs = (used + 6 + 8 * n + 4095) & !4095;
            next = bufs + slot * n;
            Ring {
                size,
                desc,
                avail,
                used,
                bufs,
                slot,
                avail_idx: 0,
                last_used: 0,
                free: (0..size).collect(),
            }
        };
        let rx = ring(u64::from(RX_BUF).next_multiple_of(64));
        let tx = ring(TX_SLOT);
        let event = ring(64);
        Self {
            dev: Vsock::new(config).expect("valid config"),
            mem: FakeMemory::new(RAM_BASE, (next - RAM_BASE) as usize),
            rx,
            tx,
            event,
            rx_split: false,
            irq: false,
            needs_reset: 0,
            process_calls: 0,
        }
    }

    pub fn read_reg(&mut self, off: u64) -> u32 {
        self.dev.mmio_read(off, AccessWidth::Word) as u32
    }

    pub fn write_reg(&mut self, off: u64, value: u32) {
        let mut fx = Vec::new();
        self.dev
            .mmio_write(off, AccessWidth::Word, u64::from(value), &mut fx);
        self.apply(fx);
    }

    /// Feature negotiation and queue setup, as Linux's virtio-mmio and vsock drivers do.
    pub fn bring_up(&mut self) {
        assert_eq!(self.read_reg(offset::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(self.read_reg(offset::VERSION), 2);
        assert_eq!(self.read_reg(offset::DEVICE_ID), 19);
        self.write_reg(offset::STATUS, 0);
        self.write_reg(offset::STATUS, status::ACKNOWLEDGE);
        self.write_reg(offset::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write_reg(offset::DEVICE_FEATURES_SEL, 1);
        let high = self.read_reg(offset::DEVICE_FEATURES);
        self.write_reg(offset::DEVICE_FEATURES_SEL, 0);
        let low = self.read_reg(offset::DEVICE_FEATURES);
        let features = u64::from(high) << 32 | u64::from(low);
        assert_eq!(features, VIRTIO_F_VERSION_1);
        self.write_reg(offset::DRIVER_FEATURES_SEL, 1);
        self.write_reg(offset::DRIVER_FEATURES, (features >> 32) as u32);
        self.write_reg(offset::DRIVER_FEATURES_SEL, 0);
        self.write_reg(offset::DRIVER_FEATURES, features as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write_reg(offset::STATUS, s);
        assert_ne!(self.read_reg(offset::STATUS) & status::FEATURES_OK, 0);
        for (index, ring) in [self.rx.clone(), self.tx.clone(), self.event.clone()]
            .iter()
            .enumerate()
        {
            self.write_reg(offset::QUEUE_SEL, index as u32);
            assert_eq!(self.read_reg(offset::QUEUE_READY), 0);
            assert_eq!(self.read_reg(offset::QUEUE_NUM_MAX), u32::from(ring.size));
            self.write_reg(offset::QUEUE_NUM, u32::from(ring.size));
            self.write_reg(offset::QUEUE_DESC_LOW, ring.desc as u32);
            self.write_reg(offset::QUEUE_DESC_HIGH, (ring.desc >> 32) as u32);
            self.write_reg(offset::QUEUE_DRIVER_LOW, ring.avail as u32);
            self.write_reg(offset::QUEUE_DRIVER_HIGH, (ring.avail >> 32) as u32);
            self.write_reg(offset::QUEUE_DEVICE_LOW, ring.used as u32);
            self.write_reg(offset::QUEUE_DEVICE_HIGH, (ring.used >> 32) as u32);
            self.write_reg(offset::QUEUE_READY, 1);
            assert_eq!(self.read_reg(offset::QUEUE_READY), 1);
        }
        self.write_reg(offset::STATUS, s | status::DRIVER_OK);
        assert_eq!(self.read_reg(offset::STATUS), s | status::DRIVER_OK);
    }

    /// Handles effects: the interrupt line, and `process` when asked (bounded).
    pub fn apply(&mut self, fx: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = fx.into();
        let mut rounds = 0;
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Interrupt(level) => self.irq = level,
                Effect::NeedsReset(_) => self.needs_reset += 1,
                Effect::Notify(_) | Effect::MoreWork => {
                    rounds += 1;
                    assert!(rounds < 1000, "process keeps asking for more");
                    let mut more = Vec::new();
                    self.process_calls += 1;
                    self.dev.process(&mut self.mem, &mut more);
                    queue.extend(more);
                }
            }
        }
    }

    /// Runs the device as the glue would after backend calls.
    pub fn process(&mut self) {
        self.apply(vec![Effect::MoreWork]);
    }

    pub fn notify(&mut self, queue: u16) {
        self.write_reg(offset::QUEUE_NOTIFY, u32::from(queue));
    }

    /// Acknowledges the interrupt as Linux's handler does.
    pub fn ack_interrupt(&mut self) -> u32 {
        let status = self.read_reg(offset::INTERRUPT_STATUS);
        self.write_reg(offset::INTERRUPT_ACK, status);
        status
    }

    fn write_desc(&mut self, which: u16, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let ring = self.ring(which);
        let at = ring.desc + 16 * u64::from(index);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write(IntermediatePhysAddr(at), &raw).unwrap();
    }

    pub fn ring(&self, which: u16) -> &Ring {
        match which {
            0 => &self.rx,
            1 => &self.tx,
            _ => &self.event,
        }
    }

    pub fn ring_mut(&mut self, which: u16) -> &mut Ring {
        match which {
            0 => &mut self.rx,
            1 => &mut self.tx,
            _ => &mut self.event,
        }
    }

    /// Makes the chain at `head` available (without notifying).
    pub fn make_available(&mut self, which: u16, head: u16) {
        let ring = self.ring(which).clone();
        let slot = u64::from(ring.avail_idx % ring.size);
        self.mem
            .write_u16(IntermediatePhysAddr(ring.avail + 4 + 2 * slot), head)
            .unwrap();
        let idx = ring.avail_idx.wrapping_add(1);
        self.mem
            .write_u16(IntermediatePhysAddr(ring.avail + 2), idx)
            .unwrap();
        self.ring_mut(which).avail_idx = idx;
    }

    /// Posts every free receive descriptor (one buffer, or two with `rx_split`).
    pub fn post_all_rx(&mut self) {
        let mut posted = false;
        while let Some(head) = self.rx.free.pop_front() {
            let addr = self.rx.bufs + self.rx.slot * u64::from(head);
            if self.rx_split {
                let Some(second) = self.rx.free.pop_front() else {
                    self.rx.free.push_front(head);
                    break;
                };
                let addr2 = self.rx.bufs + self.rx.slot * u64::from(second);
                self.write_desc(RX_QUEUE, head, addr, HEADER_LEN as u32, 2 | 1, second);
                self.write_desc(RX_QUEUE, second, addr2, RX_BUF - HEADER_LEN as u32, 2, 0);
            } else {
                self.write_desc(RX_QUEUE, head, addr, RX_BUF, 2, 0);
            }
            self.make_available(RX_QUEUE, head);
            posted = true;
        }
        if posted {
            self.notify(RX_QUEUE);
        }
    }

    /// Free transmit descriptors.
    pub fn tx_free(&self) -> usize {
        self.tx.free.len()
    }

    /// Puts one packet on the transmit queue (header and payload in their own descriptors,
    /// `len` set to the payload's) without notifying. Returns false if the queue is full.
    pub fn queue_packet(&mut self, header: &Header, payload: &[u8]) -> bool {
        let header = &Header {
            len: payload.len() as u32,
            ..*header
        };
        self.reclaim_tx();
        let need = if payload.is_empty() { 1 } else { 2 };
        if self.tx.free.len() < need || payload.len() as u64 > TX_SLOT {
            return false;
        }
        let head = self.tx.free.pop_front().unwrap();
        let addr = self.tx.bufs + self.tx.slot * u64::from(head);
        self.mem
            .write(IntermediatePhysAddr(addr), &header.encode())
            .unwrap();
        if payload.is_empty() {
            self.write_desc(TX_QUEUE, head, addr, HEADER_LEN as u32, 0, 0);
        } else {
            let second = self.tx.free.pop_front().unwrap();
            let addr2 = self.tx.bufs + self.tx.slot * u64::from(second);
            self.mem
                .write(IntermediatePhysAddr(addr2), payload)
                .unwrap();
            self.write_desc(TX_QUEUE, head, addr, HEADER_LEN as u32, 1, second);
            self.write_desc(TX_QUEUE, second, addr2, payload.len() as u32, 0, 0);
        }
        self.make_available(TX_QUEUE, head);
        true
    }

    /// Sends one packet and notifies.
    pub fn send(&mut self, header: &Header, payload: &[u8]) {
        assert!(self.queue_packet(header, payload), "transmit queue full");
        self.notify(TX_QUEUE);
    }

    /// Frees the transmit descriptors of used chains.
    pub fn reclaim_tx(&mut self) {
        while let Some((head, _)) = self.take_used(TX_QUEUE) {
            if head >= self.tx.size {
                continue;
            }
            let mut index = head;
            // Bounded: a hostile test may have rewritten the table into a loop.
            for _ in 0..self.tx.size {
                self.tx.free.push_back(index);
                let at = self.tx.desc + 16 * u64::from(index);
                let flags = self.mem.read_u16(IntermediatePhysAddr(at + 12)).unwrap();
                if flags & 1 == 0 {
                    break;
                }
                index = self.mem.read_u16(IntermediatePhysAddr(at + 14)).unwrap();
                if index >= self.tx.size {
                    break;
                }
            }
        }
    }

    fn take_used(&mut self, which: u16) -> Option<(u16, u32)> {
        let ring = self.ring(which).clone();
        let idx = self
            .mem
            .read_u16(IntermediatePhysAddr(ring.used + 2))
            .unwrap();
        if idx == ring.last_used {
            return None;
        }
        let slot = u64::from(ring.last_used % ring.size);
        let mut raw = [0u8; 8];
        self.mem
            .read(IntermediatePhysAddr(ring.used + 4 + 8 * slot), &mut raw)
            .unwrap();
        self.ring_mut(which).last_used = ring.last_used.wrapping_add(1);
        let id = u32::from_le_bytes(raw[0..4].try_into().unwrap());
        let len = u32::from_le_bytes(raw[4..8].try_into().unwrap());
        Some((
            u16::try_from(id).expect("the device returned a head beyond the table"),
            len,
        ))
    }

    /// Packets the device put in receive buffers since the last call; the buffers are
    /// posted again.
    pub fn receive(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut packets = Vec::new();
        while let Some((head, len)) = self.take_used(RX_QUEUE) {
            let addr = self.rx.bufs + self.rx.slot * u64::from(head);
            let mut bytes = vec![0u8; len as usize];
            if self.rx_split {
                let next_at = self.rx.desc + 16 * u64::from(head) + 14;
                let second = self.mem.read_u16(IntermediatePhysAddr(next_at)).unwrap();
                let addr2 = self.rx.bufs + self.rx.slot * u64::from(second);
                let first = bytes.len().min(HEADER_LEN);
                self.mem
                    .read(IntermediatePhysAddr(addr), &mut bytes[..first])
                    .unwrap();
                self.mem
                    .read(IntermediatePhysAddr(addr2), &mut bytes[first..])
                    .unwrap();
                self.rx.free.push_back(head);
                self.rx.free.push_back(second);
            } else {
                self.mem
                    .read(IntermediatePhysAddr(addr), &mut bytes)
                    .unwrap();
                self.rx.free.push_back(head);
            }
            assert!(
                len as usize >= HEADER_LEN,
                "device used a receive buffer for {len} bytes"
            );
            let header = Header::decode(bytes[..HEADER_LEN].try_into().unwrap());
            assert_eq!(
                header.len as usize,
                len as usize - HEADER_LEN,
                "header length vs used length"
            );
            packets.push((header, bytes[HEADER_LEN..].to_vec()));
        }
        self.post_all_rx();
        packets
    }
}

/// A header from the driver (Linux, `LINUX_CID`) to the peer.
pub fn linux_header(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: u64::from(LINUX_CID),
        dst_cid: u64::from(PEER_CID),
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 256 * 1024,
        ..Header::default()
    }
}

/// Linux's side of one stream connection: its counters and what it received.
#[derive(Clone, Debug)]
pub struct LinuxSocket {
    pub port: u32,
    pub peer_port: u32,
    pub buf_alloc: u32,
    /// Bytes received (all "read" by the app at once, unless `hold` is used).
    pub rx_cnt: u32,
    pub fwd_cnt: u32,
    pub tx_cnt: u32,
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: u32,
    pub received: Vec<u8>,
    pub peer_shutdown: u32,
    pub reset: bool,
    pub connected: bool,
}

impl LinuxSocket {
    pub fn new(port: u32, peer_port: u32, buf_alloc: u32) -> Self {
        Self {
            port,
            peer_port,
            buf_alloc,
            rx_cnt: 0,
            fwd_cnt: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            received: Vec::new(),
            peer_shutdown: 0,
            reset: false,
            connected: false,
        }
    }

    pub fn header(&self, op: Op) -> Header {
        Header {
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
            ..linux_header(op, self.port, self.peer_port)
        }
    }

    /// Bytes the device can still take.
    pub fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Whether a packet from the device belongs to this socket.
    pub fn owns(&self, header: &Header) -> bool {
        header.dst_port == self.port && header.src_port == self.peer_port
    }

    /// Takes in a packet from the device.
    pub fn take(&mut self, header: &Header, payload: &[u8]) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
        match Op::from_code(header.op) {
            Some(Op::Response) => self.connected = true,
            Some(Op::Rw) => {
                assert!(
                    self.rx_cnt.wrapping_sub(self.fwd_cnt) as usize + payload.len()
                        <= self.buf_alloc as usize,
                    "the device overran Linux's credit"
                );
                self.received.extend_from_slice(payload);
                self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
            }
            Some(Op::Shutdown) => self.peer_shutdown |= header.flags,
            Some(Op::Rst) => self.reset = true,
            _ => {}
        }
    }

    /// The app reads everything received so far.
    pub fn consume_all(&mut self) {
        self.fwd_cnt = self.rx_cnt;
    }
}
