//! The virtio socket device (virtio 1.2 §5.10): stream connections between the driver's
//! VM and the secure side, with credit-based flow control in both directions.

mod conn;
pub mod packet;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use conn::{event, Connection, Link, LocalShutdown, Outgoing};
use packet::{Header, Op, HEADER_LEN, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

use crate::effect::{AccessWidth, Effect, EffectSink};
use crate::mem::GuestMemory;
use crate::mmio::{DeviceInfo, MmioTransport, Written, VIRTIO_F_VERSION_1};
use crate::queue::{Chain, QueueError, Segment};

/// `DeviceID` of the socket device.
pub const DEVICE_ID: u32 = 19;
/// `VendorID` the device reports: "TNDM".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"TNDM");
/// The receive queue: buffers the driver posts for packets to it.
pub const RX_QUEUE: u16 = 0;
/// The transmit queue: packets from the driver.
pub const TX_QUEUE: u16 = 1;
/// The event queue. The device never changes the driver's CID, so it never sends an event
/// and leaves the buffers posted here alone.
pub const EVENT_QUEUE: u16 = 2;
/// The secure side's CID unless configured otherwise.
pub const DEFAULT_PEER_CID: u32 = 3;
/// The largest queue size the device offers, bounding the work of one `process` call.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// The most connections a device may be configured for.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest per-connection buffer a device may be configured for (Linux's own default is
/// 256 KiB).
pub const MAX_BUFFER_SIZE: u32 = 4 << 20;
/// Replies to packets of no connection (RSTs) held while the driver posts no receive
/// buffers; more are dropped, so a flood costs a fixed amount of memory.
pub const MAX_QUEUED_RESETS: usize = 32;

/// CIDs no VM may have: `VMADDR_CID_HYPERVISOR`, `VMADDR_CID_LOCAL`, `VMADDR_CID_HOST`,
/// `VMADDR_CID_ANY`. The peer may be the host (2): Linux programs often connect there.
const RESERVED_GUEST_CIDS: [u32; 4] = [0, 1, 2, u32::MAX];
const RESERVED_PEER_CIDS: [u32; 3] = [0, 1, u32::MAX];

/// How a vsock device is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The driver's own CID, `guest_cid` in the configuration space: the address Linux
    /// sends from and is reached at.
    pub guest_cid: u32,
    /// The secure side's CID: the only destination the device connects to.
    pub peer_cid: u32,
    /// Connections open at once, counting ones being set up or torn down; REQUESTs beyond
    /// it get an RST.
    pub max_connections: usize,
    /// Bytes buffered per connection and direction; also the `buf_alloc` told to the
    /// driver. Buffers are allocated when first used and freed when the connection ends.
    pub buffer_size: u32,
    /// `QueueNumMax` of each queue (a power of two, at most [`MAX_QUEUE_SIZE`]).
    pub queue_size: u16,
}

impl VsockConfig {
    /// The defaults for a driver with CID `guest_cid`: peer [`DEFAULT_PEER_CID`], 16
    /// connections of 16 KiB each way (512 KiB at most), queues of 256.
    pub const fn new(guest_cid: u32) -> Self {
        Self {
            guest_cid,
            peer_cid: DEFAULT_PEER_CID,
            max_connections: 16,
            buffer_size: 16 * 1024,
            queue_size: 256,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if RESERVED_GUEST_CIDS.contains(&self.guest_cid) {
            return Err(ConfigError::ReservedCid(self.guest_cid));
        }
        if RESERVED_PEER_CIDS.contains(&self.peer_cid) {
            return Err(ConfigError::ReservedCid(self.peer_cid));
        }
        if self.guest_cid == self.peer_cid {
            return Err(ConfigError::SameCid(self.guest_cid));
        }
        if self.queue_size == 0
            || !self.queue_size.is_power_of_two()
            || self.queue_size > MAX_QUEUE_SIZE
        {
            return Err(ConfigError::QueueSize(self.queue_size));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::Connections(self.max_connections));
        }
        if self.buffer_size == 0 || self.buffer_size > MAX_BUFFER_SIZE {
            return Err(ConfigError::BufferSize(self.buffer_size));
        }
        Ok(())
    }

    /// The most memory connection buffers can take: every connection, both directions,
    /// full. The hypervisor's heap must have this to spare.
    pub fn max_buffer_bytes(&self) -> usize {
        self.max_connections
            .saturating_mul(2)
            .saturating_mul(self.buffer_size as usize)
    }
}

/// Why a [`VsockConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A reserved CID (0, 1, `u32::MAX`, and 2 for the driver).
    ReservedCid(u32),
    /// The driver and the peer would have the same CID.
    SameCid(u32),
    /// The queue size is not a power of two between 1 and [`MAX_QUEUE_SIZE`].
    QueueSize(u16),
    /// `max_connections` is 0 or above [`MAX_CONNECTIONS`].
    Connections(usize),
    /// `buffer_size` is 0 or above [`MAX_BUFFER_SIZE`].
    BufferSize(u32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedCid(cid) => write!(f, "CID {cid} is reserved"),
            Self::SameCid(cid) => write!(f, "driver and peer both have CID {cid}"),
            Self::QueueSize(size) => {
                write!(
                    f,
                    "queue size {size} is not a power of two from 1 to {MAX_QUEUE_SIZE}"
                )
            }
            Self::Connections(n) => {
                write!(
                    f,
                    "max_connections {n} is not between 1 and {MAX_CONNECTIONS}"
                )
            }
            Self::BufferSize(size) => {
                write!(
                    f,
                    "buffer size {size} is not between 1 and {MAX_BUFFER_SIZE}"
                )
            }
        }
    }
}

/// A connection, as the backend names it. Never reused while the backend may hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u32);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vsock connection {}", self.0)
    }
}

/// What the backend (the glue towards the secure side) learns from [`Vsock::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The driver asks to connect to listening `port` from its `peer_port`: answer with
    /// [`Vsock::accept`] or [`Vsock::refuse`].
    Request {
        /// The new connection.
        conn: ConnId,
        /// The secure side's (listening) port.
        port: u32,
        /// The driver's port.
        peer_port: u32,
    },
    /// The driver accepted a connection the backend opened with [`Vsock::connect`].
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// New bytes to take with [`Vsock::recv`].
    Readable {
        /// The connection.
        conn: ConnId,
    },
    /// Room again after a [`Vsock::send`] that took less than it was given.
    Writable {
        /// The connection.
        conn: ConnId,
    },
    /// The driver shut down a direction: it will send no more (`send`: take what is
    /// buffered, then the stream has ended) and/or receive no more (`receive`: sends now
    /// fail). When both are set the connection is over for the driver; take what is left,
    /// then [`Vsock::close`].
    Shutdown {
        /// The connection.
        conn: ConnId,
        /// The driver will send nothing more.
        send: bool,
        /// The driver will receive nothing more.
        receive: bool,
    },
    /// The driver reset the connection, or broke its rules, or the device was reset:
    /// buffered data is gone and so is the connection; forget `conn`.
    Reset {
        /// The connection.
        conn: ConnId,
    },
}

/// Why a backend call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VsockError {
    /// No such connection, or the backend already let go of it.
    NoSuchConnection(ConnId),
    /// The call does not fit the connection's state (accepting an open connection,
    /// sending on one not yet accepted).
    WrongState(ConnId),
    /// The connection was reset; its [`Event::Reset`] is pending.
    ConnectionReset(ConnId),
    /// The driver will receive nothing more on this connection.
    PeerClosed(ConnId),
    /// A connection with these ports exists already.
    PortsInUse {
        /// The secure side's port.
        port: u32,
        /// The driver's port.
        peer_port: u32,
    },
    /// [`VsockConfig::max_connections`] are open.
    TooManyConnections,
    /// The driver has not set the device up (`DRIVER_OK`), or it needs a reset.
    NotReady,
}

impl fmt::Display for VsockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchConnection(conn) => write!(f, "no {conn}"),
            Self::WrongState(conn) => write!(f, "{conn} is not in a state for that"),
            Self::ConnectionReset(conn) => write!(f, "{conn} was reset"),
            Self::PeerClosed(conn) => write!(f, "the driver receives nothing more on {conn}"),
            Self::PortsInUse { port, peer_port } => {
                write!(
                    f,
                    "a connection from port {port} to driver port {peer_port} exists"
                )
            }
            Self::TooManyConnections => write!(f, "too many vsock connections"),
            Self::NotReady => write!(f, "the vsock driver is not ready"),
        }
    }
}

/// Counters for the VM's statistics. "From the driver" is the transmit queue, "to the
/// driver" the receive queue; bytes are stream payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets taken from the transmit queue.
    pub packets_from_driver: u64,
    /// Packets put in receive buffers.
    pub packets_to_driver: u64,
    /// Payload bytes received from the driver.
    pub bytes_from_driver: u64,
    /// Payload bytes sent to the driver.
    pub bytes_to_driver: u64,
    /// Connections opened (accepted, or connected by the backend).
    pub connections_opened: u64,
    /// REQUESTs refused: no listener, too many connections, or the backend refused.
    pub connections_refused: u64,
    /// RSTs sent to the driver.
    pub resets_sent: u64,
    /// RSTs received from the driver.
    pub resets_received: u64,
    /// RSTs not sent because [`MAX_QUEUED_RESETS`] were waiting for receive buffers.
    pub resets_dropped: u64,
    /// Packets dropped or answered with an RST because they broke the protocol: short,
    /// from a CID not the driver's, a payload beyond the chain or the credit, an op that
    /// does not fit the connection's state.
    pub bad_packets: u64,
    /// Receive buffers too small for a header, returned empty.
    pub bad_buffers: u64,
    /// Times the driver broke a virtqueue and the device set `DEVICE_NEEDS_RESET`.
    pub queue_errors: u64,
    /// Device resets by the driver (`Status` = 0) or the hypervisor.
    pub device_resets: u64,
    /// Register accesses ignored (bad width or alignment, unknown or read-only register).
    pub ignored_accesses: u64,
}

/// What the next receive buffer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// The oldest queued RST to a packet of no connection.
    Reset,
    /// The next packet of this connection.
    Conn(u32),
}

/// A virtio-mmio socket device: transport registers, queues and connections.
#[derive(Clone, Debug)]
pub struct Vsock {
    config: VsockConfig,
    transport: MmioTransport<3>,
    conns: BTreeMap<u32, Connection>,
    next_id: u32,
    listeners: BTreeSet<u32>,
    resets: VecDeque<Header>,
    /// The connection served last, for round-robin sending.
    rx_cursor: u32,
    /// The connection whose event was reported last, for round-robin events.
    event_cursor: u32,
    /// Scratch space for one descriptor chain.
    segments: Vec<Segment>,
    stats: Stats,
}

impl Vsock {
    /// A device in its reset state, waiting for the driver.
    pub fn new(config: VsockConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let info = DeviceInfo {
            device_id: DEVICE_ID,
            vendor_id: VENDOR_ID,
            features: VIRTIO_F_VERSION_1,
            queue_max: config.queue_size,
        };
        Ok(Self {
            config,
            transport: MmioTransport::new(info),
            conns: BTreeMap::new(),
            next_id: 1,
            listeners: BTreeSet::new(),
            resets: VecDeque::with_capacity(MAX_QUEUED_RESETS),
            rx_cursor: 0,
            event_cursor: 0,
            segments: Vec::with_capacity(usize::from(config.queue_size)),
            stats: Stats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VsockConfig {
        &self.config
    }

    /// The transport's registers, read-only (status, queues, interrupt state).
    pub fn transport(&self) -> &MmioTransport<3> {
        &self.transport
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            ignored_accesses: self.transport.ignored_accesses(),
            ..self.stats
        }
    }

    /// Connections held, counting those being set up or torn down.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The configuration space: `guest_cid` as a little-endian `u64` (§5.10.4).
    fn config_space(&self) -> [u8; 8] {
        u64::from(self.config.guest_cid).to_le_bytes()
    }

    /// The guest reads `width` at `offset` of the register window.
    pub fn mmio_read(&mut self, offset: u64, width: AccessWidth) -> u64 {
        let config = self.config_space();
        self.transport.read(offset, width, &config)
    }

    /// The guest writes `value` of `width` at `offset` of the register window.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        width: AccessWidth,
        value: u64,
        fx: &mut impl EffectSink,
    ) {
        let level = self.transport.interrupt_level();
        match self.transport.write(offset, width, value) {
            Written::Nothing => {}
            Written::Notify(queue) => fx.push(Effect::Notify(queue)),
            Written::Reset => {
                self.stats.device_resets += 1;
                self.drop_connections();
            }
            Written::Broken(error) => self.broken(error, fx),
        }
        self.interrupt_effect(level, fx);
    }

    /// Resets the device from the hypervisor's side (the VM restarts): as if the driver
    /// had written 0 to `Status`. Listening ports stay.
    pub fn reset(&mut self, fx: &mut impl EffectSink) {
        let level = self.transport.interrupt_level();
        self.transport.reset();
        self.stats.device_resets += 1;
        self.drop_connections();
        self.interrupt_effect(level, fx);
    }

    fn interrupt_effect(&self, before: bool, fx: &mut impl EffectSink) {
        let after = self.transport.interrupt_level();
        if after != before {
            fx.push(Effect::Interrupt(after));
        }
    }

    /// The driver broke a queue: the transport already says `DEVICE_NEEDS_RESET`.
    fn broken(&mut self, error: QueueError, fx: &mut impl EffectSink) {
        self.stats.queue_errors += 1;
        self.drop_connections();
        fx.push(Effect::NeedsReset(error));
    }

    /// Ends every connection for the driver's side; the backend hears Reset for those it
    /// holds.
    fn drop_connections(&mut self) {
        self.resets.clear();
        self.conns.retain(|_, conn| {
            conn.discard();
            conn.link = Link::Closed;
            conn.events = if conn.announced && !conn.released {
                event::RESET
            } else {
                conn.released = true;
                0
            };
            !conn.finished()
        });
    }

    /// Does the device's work: takes the driver's packets from the transmit queue, then
    /// fills its receive buffers with what is waiting for it (replies, data, credit
    /// updates). Call it after [`Effect::Notify`] or [`Effect::MoreWork`], and after backend
    /// calls that give the driver something (accept, refuse, send, recv, close, reset,
    /// connect). At most one ring's worth of chains per queue is handled per call.
    pub fn process<M: GuestMemory>(&mut self, mem: &mut M, fx: &mut impl EffectSink) {
        if !self.transport.is_live() {
            return;
        }
        let level = self.transport.interrupt_level();
        let mut segments = core::mem::take(&mut self.segments);
        let result = self.process_queues(mem, &mut segments);
        self.segments = segments;
        match result {
            Ok(true) => fx.push(Effect::MoreWork),
            Ok(false) => {}
            Err(error) => {
                self.transport.set_needs_reset();
                self.broken(error, fx);
            }
        }
        self.interrupt_effect(level, fx);
    }

    /// Returns whether work was left for another call.
    fn process_queues<M: GuestMemory>(
        &mut self,
        mem: &mut M,
        segments: &mut Vec<Segment>,
    ) -> Result<bool, QueueError> {
        let mut more = false;
        let mut used = false;

        let tx = usize::from(TX_QUEUE);
        if self.transport.queue_mut(tx).ready() {
            let size = usize::from(self.transport.queue_mut(tx).size());
            // Chains and descriptors both bounded: a ring of maximal chains costs at most
            // a few rings' worth of descriptor reads.
            let (mut chains, mut descriptors) = (0, 0);
            while chains < size && descriptors < 4 * size {
                let Some(chain) = self.transport.queue_mut(tx).pop(mem, segments)? else {
                    break;
                };
                let head = chain.head;
                chains += 1;
                descriptors += chain.segments.len();
                self.receive_packet(mem, &chain)?;
                self.transport.queue_mut(tx).push_used(mem, head, 0)?;
            }
            more |= chains == size || descriptors >= 4 * size;
            used |= self.transport.queue_mut(tx).publish(mem)?;
        }

        let rx = usize::from(RX_QUEUE);
        if self.transport.queue_mut(rx).ready() {
            let size = usize::from(self.transport.queue_mut(rx).size());
            let mut chains = 0;
            while chains < size {
                let Some(pick) = self.pick() else { break };
                let Some(chain) = self.transport.queue_mut(rx).pop(mem, segments)? else {
                    break;
                };
                let head = chain.head;
                chains += 1;
                let written = if chain.writable_len() < HEADER_LEN as u64 {
                    self.stats.bad_buffers += 1;
                    0
                } else {
                    self.send_packet(mem, &chain, pick)?
                };
                self.transport.queue_mut(rx).push_used(mem, head, written)?;
            }
            more |= chains == size;
            used |= self.transport.queue_mut(rx).publish(mem)?;
        }

        if used {
            self.transport.raise_used_buffer();
        }
        Ok(more)
    }

    // ---- Driver to device: the transmit queue ----

    /// Handles one packet from the transmit queue.
    fn receive_packet<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &Chain<'_>,
    ) -> Result<(), QueueError> {
        self.stats.packets_from_driver += 1;
        let readable = chain.readable_len();
        if readable < HEADER_LEN as u64 {
            self.stats.bad_packets += 1;
            return Ok(());
        }
        let mut raw = [0; HEADER_LEN];
        chain.read_at(mem, 0, &mut raw)?;
        let header = Header::decode(&raw);
        let op = header.op();
        // A driver sends from its own CID only; anything else is not worth an answer.
        if header.src_cid != u64::from(self.config.guest_cid) {
            self.stats.bad_packets += 1;
            return Ok(());
        }
        if op == Some(Op::Rst) {
            self.stats.resets_received += 1;
        }
        if header.dst_cid != u64::from(self.config.peer_cid) || header.type_ != TYPE_STREAM {
            self.reply_reset(&header);
            return Ok(());
        }
        let id = self.find(header.dst_port, header.src_port);
        if op == Some(Op::Rw) && u64::from(header.len) > readable - HEADER_LEN as u64 {
            self.stats.bad_packets += 1;
            match id {
                Some(id) => self.abort(id),
                None => self.reply_reset(&header),
            }
            return Ok(());
        }
        match (id, op) {
            (Some(id), _) => self.connection_packet(mem, id, &header, op, chain)?,
            (None, Some(Op::Request)) => self.request(&header),
            (None, Some(Op::Rst)) => {}
            (None, _) => self.reply_reset(&header),
        }
        Ok(())
    }

    /// The connection the driver's packet from `peer_port` to `port` belongs to, unless
    /// its driver side is closed.
    fn find(&self, port: u32, peer_port: u32) -> Option<u32> {
        self.conns
            .iter()
            .find(|(_, c)| c.link != Link::Closed && c.port == port && c.peer_port == peer_port)
            .map(|(&id, _)| id)
    }

    /// Queues an RST answering `header`, which belongs to no connection (never for an RST).
    fn reply_reset(&mut self, header: &Header) {
        if header.op() == Some(Op::Rst) {
            return;
        }
        if self.resets.len() >= MAX_QUEUED_RESETS {
            self.stats.resets_dropped += 1;
            return;
        }
        self.resets.push_back(Header {
            src_cid: header.dst_cid,
            dst_cid: header.src_cid,
            src_port: header.dst_port,
            dst_port: header.src_port,
            type_: header.type_,
            op: Op::Rst as u16,
            ..Header::default()
        });
    }

    /// A REQUEST for no existing connection.
    fn request(&mut self, header: &Header) {
        if !self.listeners.contains(&header.dst_port)
            || self.conns.len() >= self.config.max_connections
        {
            self.stats.connections_refused += 1;
            self.reply_reset(header);
            return;
        }
        let id = self.new_id();
        let mut conn = Connection::new(
            header.dst_port,
            header.src_port,
            Link::Requested,
            self.config.buffer_size,
        );
        conn.take_peer_credit(header);
        conn.events = event::REQUEST;
        self.conns.insert(id, conn);
    }

    /// An unused connection number. There are fewer connections than numbers, so the
    /// search ends within `conns.len() + 1` steps.
    fn new_id(&mut self) -> u32 {
        while self.conns.contains_key(&self.next_id) {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// A packet for connection `id`.
    fn connection_packet<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u32,
        header: &Header,
        op: Option<Op>,
        chain: &Chain<'_>,
    ) -> Result<(), QueueError> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if conn.link == Link::Resetting {
            return Ok(());
        }
        conn.take_peer_credit(header);
        match (conn.link, op) {
            (_, Some(Op::Rst)) => self.peer_reset(id),
            (Link::Connecting, Some(Op::Response)) => {
                conn.link = Link::Established;
                self.stats.connections_opened += 1;
                if !conn.released {
                    conn.events |= event::CONNECTED;
                }
            }
            (Link::Requested, Some(Op::CreditUpdate | Op::CreditRequest)) => {}
            (Link::Established, Some(Op::Rw)) => self.data(mem, id, header.len, chain)?,
            (Link::Established, Some(Op::CreditUpdate)) => {}
            (Link::Established, Some(Op::CreditRequest)) => conn.credit_update_pending = true,
            (Link::Established, Some(Op::Shutdown)) => self.peer_shutdown(id, header.flags),
            _ => {
                self.stats.bad_packets += 1;
                self.abort(id);
            }
        }
        Ok(())
    }

    /// Stream data from the driver.
    fn data<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u32,
        len: u32,
        chain: &Chain<'_>,
    ) -> Result<(), QueueError> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if conn.peer_shutdown & SHUTDOWN_SEND != 0 {
            self.stats.bad_packets += 1;
            self.abort(id);
            return Ok(());
        }
        if conn.local_shutdown != LocalShutdown::Open {
            // The backend closed: nobody will read it, but the counters stay in step.
            conn.rx_cnt = conn.rx_cnt.wrapping_add(len);
            conn.fwd_cnt = conn.rx_cnt;
            return Ok(());
        }
        let len = len as usize;
        if len > conn.inbound.free() {
            // More than the credit the device gave.
            self.stats.bad_packets += 1;
            self.abort(id);
            return Ok(());
        }
        let (first, second) = conn.inbound.space_mut(len);
        chain.read_at(mem, HEADER_LEN as u64, first)?;
        chain.read_at(mem, (HEADER_LEN + first.len()) as u64, second)?;
        conn.inbound.commit(len);
        // `len` fits the buffer, so in u32.
        conn.rx_cnt = conn.rx_cnt.wrapping_add(len as u32);
        if len > 0 {
            conn.events |= event::READABLE;
        }
        self.stats.bytes_from_driver += len as u64;
        Ok(())
    }

    /// SHUTDOWN from the driver.
    fn peer_shutdown(&mut self, id: u32, flags: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let flags = flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        let new = flags & !conn.peer_shutdown;
        conn.peer_shutdown |= flags;
        if new != 0 && !conn.released {
            conn.events |= event::SHUTDOWN;
        }
        if conn.peer_stopped_receiving() {
            conn.outbound.clear();
            conn.want_writable = false;
        }
        if conn.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // Both directions closed: the driver waits for our RST to finish (§5.10.6.5);
            // what it sent before stays for the backend to read.
            conn.link = Link::Resetting;
            conn.credit_update_pending = false;
            conn.response_pending = false;
            self.maybe_free(id);
        }
    }

    /// The driver reset connection `id`.
    fn peer_reset(&mut self, id: u32) {
        self.end(id, Link::Closed);
    }

    /// The device resets connection `id` (the driver broke the protocol).
    fn abort(&mut self, id: u32) {
        self.end(id, Link::Resetting);
    }

    /// Ends connection `id` abruptly: buffers dropped, the link set to `link`, the backend
    /// told (if it knows of the connection).
    fn end(&mut self, id: u32, link: Link) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.discard();
        conn.link = link;
        if conn.announced && !conn.released {
            conn.events = event::RESET;
        } else {
            // A REQUEST the backend never saw vanishes unreported.
            conn.released = true;
            conn.events = 0;
        }
        self.maybe_free(id);
    }

    fn maybe_free(&mut self, id: u32) {
        if self.conns.get(&id).is_some_and(Connection::finished) {
            self.conns.remove(&id);
        }
    }

    // ---- Device to driver: the receive queue ----

    /// What the next receive buffer should carry, round-robin over connections after the
    /// queued RSTs.
    fn pick(&self) -> Option<Pick> {
        if !self.resets.is_empty() {
            return Some(Pick::Reset);
        }
        let after = self.conns.range(self.rx_cursor.saturating_add(1)..);
        let before = self.conns.range(..=self.rx_cursor);
        after
            .chain(before)
            .find(|(_, conn)| conn.outgoing().is_some())
            .map(|(&id, _)| Pick::Conn(id))
    }

    /// Writes the picked packet into the receive chain; returns the bytes written.
    fn send_packet<M: GuestMemory>(
        &mut self,
        mem: &mut M,
        chain: &Chain<'_>,
        pick: Pick,
    ) -> Result<u32, QueueError> {
        let id = match pick {
            Pick::Reset => {
                let Some(header) = self.resets.pop_front() else {
                    return Ok(0);
                };
                chain.write_at(mem, 0, &header.encode())?;
                self.stats.resets_sent += 1;
                self.stats.packets_to_driver += 1;
                return Ok(HEADER_LEN as u32);
            }
            Pick::Conn(id) => id,
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(0);
        };
        let room = chain.writable_len() - HEADER_LEN as u64;
        let outgoing = match conn.outgoing() {
            None => return Ok(0),
            // A buffer with room for the header alone still carries the credit.
            Some(Outgoing::Rw) if room == 0 => Outgoing::CreditUpdate,
            Some(outgoing) => outgoing,
        };
        let mut header = Header {
            src_cid: u64::from(self.config.peer_cid),
            dst_cid: u64::from(self.config.guest_cid),
            src_port: conn.port,
            dst_port: conn.peer_port,
            type_: TYPE_STREAM,
            buf_alloc: self.config.buffer_size,
            fwd_cnt: conn.fwd_cnt,
            ..Header::default()
        };
        let mut payload = 0;
        header.op = match outgoing {
            Outgoing::Request => {
                conn.request_pending = false;
                Op::Request
            }
            Outgoing::Response => {
                conn.response_pending = false;
                Op::Response
            }
            Outgoing::Shutdown => {
                conn.local_shutdown = LocalShutdown::Sent;
                header.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
                Op::Shutdown
            }
            Outgoing::CreditUpdate => Op::CreditUpdate,
            Outgoing::Rst => {
                conn.link = Link::Closed;
                self.stats.resets_sent += 1;
                Op::Rst
            }
            Outgoing::Rw => {
                // All four bounds are at most u32::MAX, so the result fits.
                payload = (conn.outbound.len() as u64)
                    .min(u64::from(conn.peer_credit()))
                    .min(room)
                    .min(MAX_PAYLOAD as u64) as usize;
                let (first, second) = conn.outbound.data(payload);
                chain.write_at(mem, HEADER_LEN as u64, first)?;
                chain.write_at(mem, (HEADER_LEN + first.len()) as u64, second)?;
                conn.outbound.consume(payload);
                conn.tx_cnt = conn.tx_cnt.wrapping_add(payload as u32);
                header.len = payload as u32;
                self.stats.bytes_to_driver += payload as u64;
                if conn.want_writable {
                    conn.want_writable = false;
                    conn.events |= event::WRITABLE;
                }
                Op::Rw
            }
        } as u16;
        conn.fwd_cnt_sent = conn.fwd_cnt;
        conn.credit_update_pending = false;
        chain.write_at(mem, 0, &header.encode())?;
        self.stats.packets_to_driver += 1;
        self.rx_cursor = id;
        self.maybe_free(id);
        Ok((HEADER_LEN + payload) as u32)
    }

    // ---- The backend's side ----

    /// Accepts REQUESTs to `port` from now on.
    pub fn listen(&mut self, port: u32) {
        self.listeners.insert(port);
    }

    /// Refuses new REQUESTs to `port`; connections already made stay.
    pub fn unlisten(&mut self, port: u32) {
        self.listeners.remove(&port);
    }

    /// The next event for the backend, round-robin over connections.
    pub fn poll_event(&mut self) -> Option<Event> {
        let (id, conn) = loop {
            let after = self.conns.range(self.event_cursor.saturating_add(1)..);
            let before = self.conns.range(..=self.event_cursor);
            let id = after
                .chain(before)
                .find(|(_, conn)| conn.events != 0)
                .map(|(&id, _)| id)?;
            self.event_cursor = id;
            let conn = self.conns.get_mut(&id)?;
            // Bytes the backend already took need no announcement. Each pass clears a
            // connection's last bit or returns, so this ends.
            if conn.inbound.is_empty() {
                conn.events &= !event::READABLE;
            }
            if conn.events != 0 {
                break (id, conn);
            }
        };
        let conn_id = ConnId(id);
        let bit = conn.events & conn.events.wrapping_neg();
        conn.events &= !bit;
        let event = match bit {
            event::REQUEST => {
                conn.announced = true;
                Event::Request {
                    conn: conn_id,
                    port: conn.port,
                    peer_port: conn.peer_port,
                }
            }
            event::CONNECTED => Event::Connected { conn: conn_id },
            event::READABLE => Event::Readable { conn: conn_id },
            event::WRITABLE => Event::Writable { conn: conn_id },
            event::SHUTDOWN => Event::Shutdown {
                conn: conn_id,
                send: conn.peer_shutdown & SHUTDOWN_SEND != 0,
                receive: conn.peer_shutdown & SHUTDOWN_RCV != 0,
            },
            _ => {
                conn.released = true;
                conn.events = 0;
                self.maybe_free(id);
                Event::Reset { conn: conn_id }
            }
        };
        Some(event)
    }

    fn conn_mut(&mut self, conn: ConnId) -> Result<&mut Connection, VsockError> {
        self.conns
            .get_mut(&conn.0)
            .filter(|c| c.announced && !c.released)
            .ok_or(VsockError::NoSuchConnection(conn))
    }

    /// Accepts the driver's REQUEST: RESPONSE goes out at the next [`process`](Self::process).
    pub fn accept(&mut self, conn: ConnId) -> Result<(), VsockError> {
        let c = self.conn_mut(conn)?;
        match c.link {
            Link::Requested => {
                c.link = Link::Established;
                c.response_pending = true;
                self.stats.connections_opened += 1;
                Ok(())
            }
            Link::Closed | Link::Resetting => Err(VsockError::ConnectionReset(conn)),
            Link::Connecting | Link::Established => Err(VsockError::WrongState(conn)),
        }
    }

    /// Refuses the driver's REQUEST with an RST; the backend lets go of `conn`.
    pub fn refuse(&mut self, conn: ConnId) -> Result<(), VsockError> {
        let c = self.conn_mut(conn)?;
        if c.link != Link::Requested {
            return Err(VsockError::WrongState(conn));
        }
        self.stats.connections_refused += 1;
        self.close(conn)
    }

    /// Queues `data` for the driver; returns how many bytes fit in the connection's buffer
    /// (possibly 0). After a short count, [`Event::Writable`] says when there is room.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, VsockError> {
        let c = self.conn_mut(conn)?;
        if c.peer_stopped_receiving() {
            return Err(VsockError::PeerClosed(conn));
        }
        match c.link {
            Link::Connecting | Link::Established => {}
            Link::Requested => return Err(VsockError::WrongState(conn)),
            Link::Resetting | Link::Closed => return Err(VsockError::ConnectionReset(conn)),
        }
        let taken = c.outbound.push(data);
        if taken < data.len() {
            c.want_writable = true;
        }
        Ok(taken)
    }

    /// Takes up to `buf.len()` bytes the driver sent; returns how many (0: nothing
    /// buffered). Room made is announced to the driver by a credit update when it runs low.
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, VsockError> {
        let buffer_size = self.config.buffer_size;
        let c = self.conn_mut(conn)?;
        let taken = c.inbound.pop(buf);
        // `taken` is at most the buffer size, so it fits in u32.
        c.fwd_cnt = c.fwd_cnt.wrapping_add(taken as u32);
        if taken > 0 {
            c.note_consumed(buffer_size);
        }
        Ok(taken)
    }

    /// Bytes waiting for [`recv`](Self::recv) on `conn`.
    pub fn readable(&self, conn: ConnId) -> usize {
        self.conns.get(&conn.0).map_or(0, |c| c.inbound.len())
    }

    /// Closes the backend's side, gracefully: data already queued still goes out, then
    /// SHUTDOWN, and the connection ends when the driver answers with RST. A REQUEST not
    /// accepted is refused. The backend lets go of `conn`.
    pub fn close(&mut self, conn: ConnId) -> Result<(), VsockError> {
        let c = self.conn_mut(conn)?;
        c.released = true;
        c.events = 0;
        c.want_writable = false;
        c.inbound.clear();
        c.fwd_cnt = c.rx_cnt;
        c.credit_update_pending = false;
        match c.link {
            Link::Requested => c.link = Link::Resetting,
            Link::Connecting if c.request_pending => c.link = Link::Closed,
            Link::Connecting => c.link = Link::Resetting,
            Link::Established if c.local_shutdown == LocalShutdown::Open => {
                c.local_shutdown = LocalShutdown::Pending;
            }
            Link::Established | Link::Resetting | Link::Closed => {}
        }
        self.maybe_free(conn.0);
        Ok(())
    }

    /// Resets the connection: RST to the driver, buffered data dropped. The backend lets go
    /// of `conn`.
    pub fn reset_connection(&mut self, conn: ConnId) -> Result<(), VsockError> {
        let c = self.conn_mut(conn)?;
        c.released = true;
        c.events = 0;
        let link = match c.link {
            Link::Connecting if c.request_pending => Link::Closed,
            Link::Closed => Link::Closed,
            _ => Link::Resetting,
        };
        c.discard();
        c.link = link;
        self.maybe_free(conn.0);
        Ok(())
    }

    /// Opens a connection from the secure side's `port` to the driver's `peer_port`. The
    /// answer comes as [`Event::Connected`] or [`Event::Reset`]; data sent before is held
    /// until then.
    pub fn connect(&mut self, port: u32, peer_port: u32) -> Result<ConnId, VsockError> {
        if !self.transport.is_live() {
            return Err(VsockError::NotReady);
        }
        if self.find(port, peer_port).is_some() {
            return Err(VsockError::PortsInUse { port, peer_port });
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(VsockError::TooManyConnections);
        }
        let id = self.new_id();
        let mut conn = Connection::new(port, peer_port, Link::Connecting, self.config.buffer_size);
        conn.announced = true;
        conn.request_pending = true;
        self.conns.insert(id, conn);
        Ok(ConnId(id))
    }
}
