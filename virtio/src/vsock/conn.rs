//! One stream connection between the driver's side and the secure side: where it is in its
//! life, its two byte streams and the credit each side has given the other.

use super::packet::{Header, SHUTDOWN_RCV};
use crate::ring::ByteRing;

/// Where the connection stands towards the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// The driver sent REQUEST; the backend has not accepted or refused.
    Requested,
    /// The backend asked to connect; REQUEST is queued (`request_pending`) or sent, and
    /// the driver has not answered.
    Connecting,
    /// Open: RESPONSE sent (or received), data may flow.
    Established,
    /// An RST to the driver is queued; once it is sent the link is `Closed`.
    Resetting,
    /// The driver's side is finished (RST sent or received). The connection lives on only
    /// until the backend lets go of it.
    Closed,
}

/// Whether the backend has closed its side, and how far the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalShutdown {
    /// Open.
    Open,
    /// Closed: SHUTDOWN goes out once the queued data has.
    Pending,
    /// SHUTDOWN sent; waiting for the driver's RST (or its own SHUTDOWN).
    Sent,
}

/// Pending backend events, as bits in [`Connection::events`], reported in this order.
pub(crate) mod event {
    pub(crate) const REQUEST: u8 = 1 << 0;
    pub(crate) const CONNECTED: u8 = 1 << 1;
    pub(crate) const READABLE: u8 = 1 << 2;
    pub(crate) const WRITABLE: u8 = 1 << 3;
    pub(crate) const SHUTDOWN: u8 = 1 << 4;
    pub(crate) const RESET: u8 = 1 << 5;
}

/// The next packet a connection has for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    Request,
    Response,
    Rw,
    Shutdown,
    CreditUpdate,
    Rst,
}

#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// The secure side's port.
    pub(crate) port: u32,
    /// The driver's port.
    pub(crate) peer_port: u32,
    pub(crate) link: Link,
    /// The backend knows the connection (it polled the REQUEST event, or it connected).
    pub(crate) announced: bool,
    /// The backend let go of it (closed, refused, reset, or polled its Reset event).
    pub(crate) released: bool,
    /// Pending [`event`] bits.
    pub(crate) events: u8,

    /// Driver to secure side: bytes the backend has not taken yet.
    pub(crate) inbound: ByteRing,
    /// Bytes received from the driver since the connection opened (wrapping).
    pub(crate) rx_cnt: u32,
    /// Bytes of those the backend has taken (our `fwd_cnt`).
    pub(crate) fwd_cnt: u32,
    /// The `fwd_cnt` last told to the driver.
    pub(crate) fwd_cnt_sent: u32,
    pub(crate) credit_update_pending: bool,

    /// Secure side to driver: bytes not sent yet.
    pub(crate) outbound: ByteRing,
    /// Bytes sent to the driver since the connection opened (wrapping).
    pub(crate) tx_cnt: u32,
    /// The driver's `buf_alloc`, from its latest header.
    pub(crate) peer_buf_alloc: u32,
    /// The driver's `fwd_cnt`, from its latest header.
    pub(crate) peer_fwd_cnt: u32,
    /// A `send` came up short: report Writable when space frees.
    pub(crate) want_writable: bool,

    /// SHUTDOWN flags the driver has sent.
    pub(crate) peer_shutdown: u32,
    pub(crate) local_shutdown: LocalShutdown,
    pub(crate) request_pending: bool,
    pub(crate) response_pending: bool,
}

impl Connection {
    pub(crate) fn new(port: u32, peer_port: u32, link: Link, buffer_size: u32) -> Self {
        Self {
            port,
            peer_port,
            link,
            announced: false,
            released: false,
            events: 0,
            inbound: ByteRing::new(buffer_size as usize),
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            credit_update_pending: false,
            outbound: ByteRing::new(buffer_size as usize),
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            want_writable: false,
            peer_shutdown: 0,
            local_shutdown: LocalShutdown::Open,
            request_pending: false,
            response_pending: false,
        }
    }

    /// Bytes the driver has room for: its `buf_alloc` less what is in flight. A driver
    /// reporting more consumed than sent gets no credit rather than a wrapped huge one.
    pub(crate) fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Every header carries the sender's credit (§5.10.6.3).
    pub(crate) fn take_peer_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// After the backend took bytes: whether the driver should hear of the room. It is told
    /// once the room it knows of is at most half the buffer, so a driver that stopped for
    /// lack of credit always hears (it stops only at zero), without an update per read.
    pub(crate) fn note_consumed(&mut self, buf_alloc: u32) {
        let known_in_flight = self.rx_cnt.wrapping_sub(self.fwd_cnt_sent);
        let known_free = buf_alloc.saturating_sub(known_in_flight);
        if self.link == Link::Established
            && self.local_shutdown == LocalShutdown::Open
            && self.fwd_cnt != self.fwd_cnt_sent
            && known_free <= buf_alloc / 2
        {
            self.credit_update_pending = true;
        }
    }

    /// The packet this connection would send next, if any.
    pub(crate) fn outgoing(&self) -> Option<Outgoing> {
        match self.link {
            Link::Resetting => Some(Outgoing::Rst),
            Link::Connecting if self.request_pending => Some(Outgoing::Request),
            Link::Established if self.response_pending => Some(Outgoing::Response),
            Link::Established if !self.outbound.is_empty() && self.peer_credit() > 0 => {
                Some(Outgoing::Rw)
            }
            Link::Established
                if self.local_shutdown == LocalShutdown::Pending && self.outbound.is_empty() =>
            {
                Some(Outgoing::Shutdown)
            }
            Link::Established if self.credit_update_pending => Some(Outgoing::CreditUpdate),
            _ => None,
        }
    }

    /// Whether the driver has said it will receive nothing more.
    pub(crate) fn peer_stopped_receiving(&self) -> bool {
        self.peer_shutdown & SHUTDOWN_RCV != 0
    }

    /// Drops both streams and every pending packet: the connection is being reset.
    pub(crate) fn discard(&mut self) {
        self.inbound.clear();
        self.outbound.clear();
        self.fwd_cnt = self.rx_cnt;
        self.credit_update_pending = false;
        self.request_pending = false;
        self.response_pending = false;
        self.want_writable = false;
    }

    /// Whether nothing holds the connection any more: the driver's side and the backend
    /// are both done with it, and no event is left to report.
    pub(crate) fn finished(&self) -> bool {
        self.link == Link::Closed && self.released && self.events == 0
    }
}
