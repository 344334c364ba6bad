//! The vsock bridge: the driver VM's virtio socket device on one side, the service VM's
//! record rings on the other.
//!
//! Linux drives a [`Vsock`] device (its virtqueues are walked here, in EL2, over its own
//! memory only); every stream connection it opens to the service's port becomes records on
//! the ring to the service ([`Kind::Open`], [`Kind::Data`], [`Kind::Shutdown`],
//! [`Kind::Reset`]), and the service's records come back the other way ([`Kind::Listen`],
//! [`Kind::Accept`], data, shutdown, reset). Pure: the glue passes in Linux's memory and the
//! ring region, and acts on the returned [`Outcome`] (interrupt levels, the doorbell).
//!
//! # Rules that keep either side from hurting the other
//! - Every record the service writes is copied out of the ring before it is decoded
//!   ([`Consumer::pop`]); a ring the service broke is left alone until it restarts, and
//!   its connections are reset.
//! - The bridge never waits for the service: when the ring to it is full, control records
//!   wait in a bounded outbox and stream bytes stay in the device's per-connection
//!   buffers, so Linux's credit runs out and it stops sending.
//! - The bridge never waits for Linux either: response bytes the device cannot buffer
//!   (Linux stopped reading) reset that connection rather than stall the service.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;

use tandem_proto::ring::{
    Consumer, Direction, Kind, Producer, Record, RingError, SharedMemory, HEADER_LEN, MAX_PAYLOAD,
    MAX_RECORD,
};
use virtio::{AccessWidth, ConfigError, ConnId, Effect, Event, GuestMemory, Vsock, VsockConfig};

/// Control records (open, shutdown, reset) that may wait for room on the ring to the
/// service: a few per connection. Beyond it the oldest connection-level news would be lost,
/// so the bridge resets the connection instead (counted).
const OUTBOX_LIMIT: usize = 256;
/// Calls of [`Vsock::process`] per bridge call while the device reports more work.
const PROCESS_ROUNDS: usize = 8;

/// What the glue must do after a bridge call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The device's interrupt line in the driver VM changed to this level.
    pub driver_irq: Option<bool>,
    /// Records were put on the ring to the service: raise its doorbell.
    pub service_doorbell: bool,
    /// The driver broke a virtqueue: the device now needs a reset (for the log).
    pub needs_reset: bool,
    /// The service broke its ring (for the log): it is ignored until it restarts.
    pub ring_broken: Option<&'static str>,
}

/// Counters beyond the device's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Records put on the ring to the service.
    pub records_to_service: u64,
    /// Records taken from the service's ring.
    pub records_from_service: u64,
    /// Records from the service that made no sense (unknown connection, wrong kind).
    pub bad_records: u64,
    /// Connections reset because Linux stopped reading the service's answers, or the
    /// outbox overflowed.
    pub overflow_resets: u64,
    /// Times the service broke its ring.
    pub ring_breaks: u64,
}

/// One vsock device and its service's rings.
#[derive(Debug)]
pub struct Bridge {
    device: Vsock,
    to_service: Producer,
    from_service: Consumer,
    /// Control records waiting for room on the ring to the service.
    outbox: VecDeque<Record>,
    /// Connections with bytes from Linux still in the device, to forward.
    backlog: BTreeSet<u32>,
    /// Connections Linux shut down, whose `Shutdown` record waits for their backlog.
    closing: BTreeSet<u32>,
    /// Connections the service has heard of and not yet let go.
    open: BTreeSet<u32>,
    /// Ports the service listens on.
    ports: BTreeSet<u32>,
    /// Why the service's ring is ignored, until it restarts; or it is not running.
    down: Option<&'static str>,
    scratch: Vec<u8>,
    stats: BridgeStats,
}

impl Bridge {
    /// A bridge for a device set up by `config`, with a ring region of `region` bytes
    /// (zeroed by the caller before the service starts). The service counts as down until
    /// [`service_started`](Self::service_started).
    pub fn new(config: VsockConfig, region: usize) -> Result<Self, BridgeError> {
        Self::with_device(Vsock::new(config).map_err(BridgeError::Config)?, region)
    }

    /// A bridge over a device already made (the tests bring one up first).
    fn with_device(device: Vsock, region: usize) -> Result<Self, BridgeError> {
        Ok(Self {
            device,
            to_service: Producer::new(region, Direction::ToService)
                .ok_or(BridgeError::RegionTooSmall(region))?,
            from_service: Consumer::new(region, Direction::ToHypervisor)
                .ok_or(BridgeError::RegionTooSmall(region))?,
            outbox: VecDeque::new(),
            backlog: BTreeSet::new(),
            closing: BTreeSet::new(),
            open: BTreeSet::new(),
            ports: BTreeSet::new(),
            down: Some("not started"),
            scratch: alloc::vec![0; MAX_RECORD],
            stats: BridgeStats::default(),
        })
    }

    /// The device's counters.
    pub fn device_stats(&self) -> virtio::Stats {
        self.device.stats()
    }

    /// The bridge's own counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Linux reads the device's register window.
    pub fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        self.device.mmio_read(offset, width)
    }

    /// Linux writes the device's register window; a queue notification is worked at once.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        width: AccessWidth,
        value: u64,
        mem: &mut impl GuestMemory,
        ring: &mut impl SharedMemory,
    ) -> Outcome {
        let mut fx = Vec::new();
        self.device.mmio_write(offset, width, value, &mut fx);
        self.run(mem, ring, fx)
    }

    /// The service rang: take its records, and move whatever can move.
    pub fn service_rang(
        &mut self,
        mem: &mut impl GuestMemory,
        ring: &mut impl SharedMemory,
    ) -> Outcome {
        self.run(mem, ring, Vec::new())
    }

    /// The service stopped (crashed, powered off, or is restarting): every connection it had
    /// is reset towards Linux, it listens on nothing, and its ring is ignored until
    /// [`service_started`](Self::service_started).
    pub fn service_stopped(
        &mut self,
        mem: &mut impl GuestMemory,
        ring: &mut impl SharedMemory,
        why: &'static str,
    ) -> Outcome {
        self.down = Some(why);
        self.drop_service_side();
        self.run(mem, ring, Vec::new())
    }

    /// The service (re)starts with the ring region zeroed: both rings start empty.
    pub fn service_started(&mut self, ring: &mut impl SharedMemory) {
        self.drop_service_side();
        self.to_service.init(ring);
        self.from_service.restart();
        self.down = None;
    }

    /// The driver VM restarts: the device goes back to its reset state (no queue of the old
    /// run is touched again) and the service hears that every connection was reset.
    pub fn driver_restarted(
        &mut self,
        mem: &mut impl GuestMemory,
        ring: &mut impl SharedMemory,
    ) -> Outcome {
        let mut fx = Vec::new();
        self.device.reset(&mut fx);
        self.run(mem, ring, fx)
    }

    fn drop_service_side(&mut self) {
        for port in core::mem::take(&mut self.ports) {
            self.device.unlisten(port);
        }
        for conn in core::mem::take(&mut self.open) {
            // Gone already if Linux reset it first; either way it ends.
            let _ = self.device.reset_connection(ConnId(conn));
        }
        self.outbox.clear();
        self.backlog.clear();
        self.closing.clear();
    }

    /// One round: the service's records, the device's queues, the device's events, the
    /// ring to the service.
    fn run(
        &mut self,
        mem: &mut impl GuestMemory,
        ring: &mut impl SharedMemory,
        mut fx: Vec<Effect>,
    ) -> Outcome {
        let mut out = Outcome::default();
        self.take_from_service(ring, &mut out);
        // Always once (the service's answers may be waiting for receive buffers, or Linux
        // for credit), then again while the device stopped at its budget.
        let mut rounds = 0;
        loop {
            let more = fx
                .iter()
                .any(|e| matches!(e, Effect::MoreWork | Effect::Notify(_)));
            for e in fx.drain(..) {
                match e {
                    Effect::Interrupt(level) => out.driver_irq = Some(level),
                    Effect::NeedsReset(_) => out.needs_reset = true,
                    Effect::Notify(_) | Effect::MoreWork => {}
                }
            }
            if (rounds > 0 && !more) || rounds == PROCESS_ROUNDS {
                break;
            }
            rounds += 1;
            self.device.process(mem, &mut fx);
        }
        self.take_events();
        self.give_to_service(ring, &mut out);
        out
    }

    /// Acts on every record the service published.
    fn take_from_service(&mut self, ring: &mut impl SharedMemory, out: &mut Outcome) {
        if self.down.is_some() {
            return;
        }
        let mut buf = [0u8; MAX_RECORD];
        // At most one ring's worth: everything published when the call began, and no more,
        // so a service that keeps refilling its ring cannot hold a Linux vCPU in EL2. What
        // it adds meanwhile comes with its own doorbell.
        let mut budget = self.from_service.capacity();
        loop {
            let (record, payload) = match self.from_service.pop(ring, &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(RingError::Corrupt(why)) => {
                    self.ring_broke(why, out);
                    return;
                }
                Err(_) => return,
            };
            self.stats.records_from_service += 1;
            budget = budget.saturating_sub(HEADER_LEN + payload.len());
            let conn = ConnId(record.conn);
            match record.kind {
                Kind::Listen => {
                    self.device.listen(record.arg);
                    self.ports.insert(record.arg);
                }
                Kind::Accept if self.open.contains(&record.conn) => {
                    // An error means Linux gave up on it meanwhile; its Reset event follows.
                    let _ = self.device.accept(conn);
                }
                Kind::Data if self.open.contains(&record.conn) => {
                    match self.device.send(conn, payload) {
                        Ok(n) if n == payload.len() => {}
                        Ok(_) => {
                            // Linux is not reading its answers: the connection goes, not
                            // the service's time.
                            self.stats.overflow_resets += 1;
                            self.reset_both(record.conn);
                        }
                        // Linux receives no more, or the connection is going: its
                        // Shutdown or Reset event tells the service.
                        Err(_) => {}
                    }
                }
                Kind::Shutdown if self.open.contains(&record.conn) => {
                    let _ = self.device.close(conn);
                    self.forget(record.conn);
                }
                Kind::Reset if self.open.contains(&record.conn) => {
                    let _ = self.device.reset_connection(conn);
                    self.forget(record.conn);
                }
                // Late news about a connection already over, or a kind the service does
                // not send.
                _ => self.stats.bad_records += 1,
            }
            if budget == 0 {
                return;
            }
        }
    }

    fn ring_broke(&mut self, why: &'static str, out: &mut Outcome) {
        self.stats.ring_breaks += 1;
        out.ring_broken = Some(why);
        self.down = Some(why);
        self.drop_service_side();
    }

    fn forget(&mut self, conn: u32) {
        self.open.remove(&conn);
        self.backlog.remove(&conn);
        self.closing.remove(&conn);
    }

    /// Resets `conn` towards Linux and tells the service.
    fn reset_both(&mut self, conn: u32) {
        let _ = self.device.reset_connection(ConnId(conn));
        self.forget(conn);
        self.queue(Record::new(Kind::Reset, conn));
    }

    fn queue(&mut self, record: Record) {
        if self.outbox.len() < OUTBOX_LIMIT {
            self.outbox.push_back(record);
        } else {
            // Only a service that stopped reading gets here: what it misses is a
            // connection, which Linux sees reset.
            self.stats.overflow_resets += 1;
            let _ = self.device.reset_connection(ConnId(record.conn));
            self.open.remove(&record.conn);
        }
    }

    /// Turns the device's events into records (queued) and backlog.
    fn take_events(&mut self) {
        while let Some(event) = self.device.poll_event() {
            match event {
                Event::Request { conn, port, .. } => {
                    if self.down.is_some() {
                        let _ = self.device.refuse(conn);
                    } else {
                        self.open.insert(conn.0);
                        self.queue(Record {
                            kind: Kind::Open,
                            conn: conn.0,
                            arg: port,
                        });
                    }
                }
                Event::Readable { conn } if self.open.contains(&conn.0) => {
                    self.backlog.insert(conn.0);
                }
                Event::Shutdown {
                    conn, send: true, ..
                } if self.open.contains(&conn.0) => {
                    self.closing.insert(conn.0);
                }
                Event::Reset { conn } => {
                    if self.open.contains(&conn.0) {
                        self.forget(conn.0);
                        self.queue(Record::new(Kind::Reset, conn.0));
                    }
                }
                Event::Readable { .. }
                | Event::Shutdown { .. }
                | Event::Writable { .. }
                | Event::Connected { .. } => {}
            }
        }
    }

    /// Fills the ring to the service: control records first, then stream bytes, then the
    /// shutdowns that waited for those bytes.
    fn give_to_service(&mut self, ring: &mut impl SharedMemory, out: &mut Outcome) {
        if self.down.is_some() {
            return;
        }
        while let Some(&record) = self.outbox.front() {
            match self.to_service.push(ring, record, &[]) {
                Ok(()) => {
                    self.outbox.pop_front();
                    self.stats.records_to_service += 1;
                    out.service_doorbell = true;
                }
                Err(RingError::Corrupt(why)) => return self.ring_broke(why, out),
                Err(_) => return,
            }
        }
        let backlog: Vec<u32> = self.backlog.iter().copied().collect();
        for conn in backlog {
            loop {
                let room = match self.to_service.room(ring) {
                    Ok(room) => room.min(MAX_PAYLOAD),
                    Err(RingError::Corrupt(why)) => return self.ring_broke(why, out),
                    Err(_) => return,
                };
                if room == 0 {
                    return;
                }
                let n = self
                    .device
                    .recv(ConnId(conn), &mut self.scratch[..room])
                    .unwrap_or(0);
                if n == 0 {
                    self.backlog.remove(&conn);
                    break;
                }
                if let Err(RingError::Corrupt(why)) =
                    self.to_service
                        .push(ring, Record::new(Kind::Data, conn), &self.scratch[..n])
                {
                    return self.ring_broke(why, out);
                }
                self.stats.records_to_service += 1;
                out.service_doorbell = true;
            }
        }
        let ready: Vec<u32> = self.closing.difference(&self.backlog).copied().collect();
        for conn in ready {
            match self
                .to_service
                .push(ring, Record::new(Kind::Shutdown, conn), &[])
            {
                Ok(()) => {
                    self.closing.remove(&conn);
                    self.stats.records_to_service += 1;
                    out.service_doorbell = true;
                }
                Err(RingError::Corrupt(why)) => return self.ring_broke(why, out),
                Err(_) => return,
            }
        }
    }
}

/// Why a bridge could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeError {
    /// The device's configuration was refused.
    Config(ConfigError),
    /// The ring region is smaller than the rings need.
    RegionTooSmall(usize),
}

impl core::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::RegionTooSmall(n) => write!(
                f,
                "the ring region is {n} bytes; it needs at least {}",
                tandem_proto::ring::MIN_REGION
            ),
        }
    }
}

/// The virtio crate's fake Linux driver, for the tests.
#[cfg(test)]
#[path = "../../../virtio/tests/common/mod.rs"]
mod linux;

#[cfg(test)]
mod tests {
    use super::linux::{config, Driver, LinuxSocket};
    use tandem_proto::ring::ByteMemory;
    use virtio::mmio::offset;
    use virtio::vsock::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};
    use virtio::vsock::TX_QUEUE;

    use super::*;

    const REGION: usize = 16 * 1024;
    const PORT: u32 = 5000;

    /// Linux (the fake driver, its device moved into the bridge), the ring region, and the
    /// service's ends of the rings.
    struct World {
        linux: Driver,
        bridge: Bridge,
        region: Vec<u8>,
        service_in: Consumer,
        service_out: Producer,
        irq: bool,
        doorbells: usize,
    }

    impl World {
        fn new() -> Self {
            let mut linux = Driver::new(config());
            let device = core::mem::replace(&mut linux.dev, Vsock::new(config()).unwrap());
            let mut world = Self {
                linux,
                bridge: Bridge::with_device(device, REGION).unwrap(),
                region: vec![0; REGION],
                service_in: Consumer::new(REGION, Direction::ToService).unwrap(),
                service_out: Producer::new(REGION, Direction::ToHypervisor).unwrap(),
                irq: false,
                doorbells: 0,
            };
            world
                .bridge
                .service_started(&mut ByteMemory(&mut world.region));
            world.service(
                Record {
                    kind: Kind::Listen,
                    conn: 0,
                    arg: PORT,
                },
                &[],
            );
            world
        }

        fn outcome(&mut self, out: Outcome) {
            if let Some(level) = out.driver_irq {
                self.irq = level;
            }
            if out.service_doorbell {
                self.doorbells += 1;
            }
        }

        /// The service writes a record and rings.
        fn service(&mut self, record: Record, payload: &[u8]) {
            self.service_out
                .push(&mut ByteMemory(&mut self.region), record, payload)
                .unwrap();
            let out = self
                .bridge
                .service_rang(&mut self.linux.mem, &mut ByteMemory(&mut self.region));
            self.outcome(out);
        }

        /// Everything on the ring to the service.
        fn service_reads(&mut self) -> Vec<(Kind, u32, u32, Vec<u8>)> {
            let mut got = Vec::new();
            let mut buf = [0u8; MAX_RECORD];
            let mut mem = ByteMemory(&mut self.region);
            while let Some((r, payload)) = self.service_in.pop(&mut mem, &mut buf).unwrap() {
                got.push((r.kind, r.conn, r.arg, payload.to_vec()));
            }
            got
        }

        /// Linux sends a packet and notifies the transmit queue.
        fn linux_sends(&mut self, socket: &LinuxSocket, op: Op, payload: &[u8]) {
            assert!(self.linux.queue_packet(&socket.header(op), payload));
            let out = self.bridge.mmio_write(
                offset::QUEUE_NOTIFY,
                AccessWidth::Word,
                u64::from(TX_QUEUE),
                &mut self.linux.mem,
                &mut ByteMemory(&mut self.region),
            );
            self.outcome(out);
        }

        /// Linux takes what the device put in its receive buffers.
        fn linux_receives(&mut self, socket: &mut LinuxSocket) {
            for (header, payload) in self.linux.receive() {
                if socket.owns(&header) {
                    socket.take(&header, &payload);
                }
            }
        }

        /// Linux connects; the service accepts. Returns the bridge's connection number.
        fn connect(&mut self, socket: &mut LinuxSocket) -> u32 {
            self.linux_sends(socket, Op::Request, &[]);
            let got = self.service_reads();
            let [(Kind::Open, conn, PORT, _)] = got[..] else {
                panic!("the service got {got:?}, not one Open");
            };
            self.service(Record::new(Kind::Accept, conn), &[]);
            self.linux_receives(socket);
            assert!(socket.connected, "Linux got no RESPONSE");
            conn
        }
    }

    #[test]
    fn a_conversation_goes_through_whole_and_in_order() {
        let mut w = World::new();
        let mut socket = LinuxSocket::new(49152, PORT, 64 * 1024);
        let conn = w.connect(&mut socket);

        // More than a record and more than the ring at once: it arrives whole, in order,
        // as the service makes room.
        let request: Vec<u8> = (0..12_000u32).map(|i| (i % 253) as u8).collect();
        for chunk in request.chunks(4000) {
            w.linux_sends(&socket, Op::Rw, chunk);
        }
        let mut got = Vec::new();
        for _ in 0..16 {
            for (kind, c, _, payload) in w.service_reads() {
                assert_eq!((kind, c), (Kind::Data, conn));
                assert!(payload.len() <= MAX_PAYLOAD);
                got.extend(payload);
            }
            // The service rings after reading: the bridge moves the rest.
            let out = w
                .bridge
                .service_rang(&mut w.linux.mem, &mut ByteMemory(&mut w.region));
            w.outcome(out);
        }
        assert_eq!(got, request);

        // The answer goes back to Linux.
        w.service(Record::new(Kind::Data, conn), b"signed");
        w.linux_receives(&mut socket);
        assert_eq!(socket.received, b"signed");
        assert!(w.irq, "Linux's interrupt is raised for its used buffers");

        // Linux shuts down: the service hears Shutdown after the data, closes, and Linux
        // sees the device's SHUTDOWN.
        w.linux_sends(&socket, Op::Rw, b"last");
        let mut shut = socket.header(Op::Shutdown);
        shut.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
        assert!(w.linux.queue_packet(&shut, &[]));
        let out = w.bridge.mmio_write(
            offset::QUEUE_NOTIFY,
            AccessWidth::Word,
            u64::from(TX_QUEUE),
            &mut w.linux.mem,
            &mut ByteMemory(&mut w.region),
        );
        w.outcome(out);
        let got = w.service_reads();
        assert_eq!(
            got,
            vec![
                (Kind::Data, conn, 0, b"last".to_vec()),
                (Kind::Shutdown, conn, 0, Vec::new())
            ]
        );
        w.service(Record::new(Kind::Shutdown, conn), &[]);
        assert!(w.doorbells > 0);
        assert_eq!(w.bridge.stats().bad_records, 0);
    }

    #[test]
    fn a_restarting_service_resets_linux_and_listens_again_only_when_told() {
        let mut w = World::new();
        let mut socket = LinuxSocket::new(49152, PORT, 64 * 1024);
        w.connect(&mut socket);
        let out =
            w.bridge
                .service_stopped(&mut w.linux.mem, &mut ByteMemory(&mut w.region), "crashed");
        w.outcome(out);
        w.linux_receives(&mut socket);
        assert!(socket.reset, "Linux's connection was not reset");

        // Down: a new connection is refused.
        let mut next = LinuxSocket::new(49153, PORT, 64 * 1024);
        w.linux_sends(&next, Op::Request, &[]);
        w.linux_receives(&mut next);
        assert!(next.reset && !next.connected);

        // Up again with a zeroed region; it listens again and serves.
        w.region.fill(0);
        w.bridge.service_started(&mut ByteMemory(&mut w.region));
        w.service_in.restart();
        w.service_out = Producer::new(REGION, Direction::ToHypervisor).unwrap();
        w.service(
            Record {
                kind: Kind::Listen,
                conn: 0,
                arg: PORT,
            },
            &[],
        );
        let mut again = LinuxSocket::new(49154, PORT, 64 * 1024);
        w.connect(&mut again);
    }

    #[test]
    fn a_broken_ring_is_left_alone_and_its_connections_reset() {
        let mut w = World::new();
        let mut socket = LinuxSocket::new(49152, PORT, 64 * 1024);
        w.connect(&mut socket);
        // The service publishes a head far beyond its ring.
        ByteMemory(&mut w.region).store_release(REGION / 2, 0x7fff_0000);
        let out = w
            .bridge
            .service_rang(&mut w.linux.mem, &mut ByteMemory(&mut w.region));
        assert!(out.ring_broken.is_some());
        w.outcome(out);
        w.linux_receives(&mut socket);
        assert!(socket.reset);
        assert_eq!(w.bridge.stats().ring_breaks, 1);
        // Ringing again changes nothing, and Linux's new connections are refused.
        let out = w
            .bridge
            .service_rang(&mut w.linux.mem, &mut ByteMemory(&mut w.region));
        assert_eq!(out.ring_broken, None);
        let mut next = LinuxSocket::new(49153, PORT, 64 * 1024);
        w.linux_sends(&next, Op::Request, &[]);
        w.linux_receives(&mut next);
        assert!(next.reset && !next.connected);
    }

    #[test]
    fn a_linux_that_stops_reading_loses_its_connection_not_the_service() {
        let mut w = World::new();
        let mut socket = LinuxSocket::new(49152, PORT, 4096);
        let conn = w.connect(&mut socket);
        // Linux never reads: the device buffers what its credit and buffer allow, then the
        // bridge resets the connection rather than hold the service's answers.
        let answer = [0x5au8; MAX_PAYLOAD];
        for _ in 0..64 {
            w.service(Record::new(Kind::Data, conn), &answer);
        }
        assert_eq!(w.bridge.stats().overflow_resets, 1);
        let got = w.service_reads();
        assert!(got.contains(&(Kind::Reset, conn, 0, Vec::new())), "{got:?}");
        w.linux_receives(&mut socket);
        assert!(socket.reset);
    }

    #[test]
    fn records_about_unknown_connections_are_counted_not_obeyed() {
        let mut w = World::new();
        w.service(Record::new(Kind::Data, 77), b"hello");
        w.service(Record::new(Kind::Accept, 78), &[]);
        w.service(Record::new(Kind::Open, 1), &[]);
        assert_eq!(w.bridge.stats().bad_records, 3);
        assert!(w.linux.receive().is_empty());
    }

    #[test]
    fn a_restarting_driver_resets_the_services_connections() {
        let mut w = World::new();
        let mut socket = LinuxSocket::new(49152, PORT, 64 * 1024);
        let conn = w.connect(&mut socket);
        let out = w
            .bridge
            .driver_restarted(&mut w.linux.mem, &mut ByteMemory(&mut w.region));
        w.outcome(out);
        assert_eq!(w.service_reads(), vec![(Kind::Reset, conn, 0, Vec::new())]);
    }
}
