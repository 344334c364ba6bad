//! The vsock packet header, `struct virtio_vsock_hdr` (virtio 1.2 §5.10.6), and its codes.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of a packet header; the payload follows it.
pub const HEADER_LEN: usize = 44;

/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type the device offers.
pub const TYPE_STREAM: u16 = 1;

/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Largest payload the device puts in one packet, Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// `op`: what a packet does (virtio 1.2 §5.10.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// `VIRTIO_VSOCK_OP_REQUEST`: open a connection.
    Request = 1,
    /// `VIRTIO_VSOCK_OP_RESPONSE`: accept it.
    Response = 2,
    /// `VIRTIO_VSOCK_OP_RST`: refuse or abort it.
    Rst = 3,
    /// `VIRTIO_VSOCK_OP_SHUTDOWN`: no more sending and/or receiving (`flags`).
    Shutdown = 4,
    /// `VIRTIO_VSOCK_OP_RW`: stream data.
    Rw = 5,
    /// `VIRTIO_VSOCK_OP_CREDIT_UPDATE`: the sender's `buf_alloc`/`fwd_cnt`, unasked.
    CreditUpdate = 6,
    /// `VIRTIO_VSOCK_OP_CREDIT_REQUEST`: please send a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The op with code `code`, if there is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Rst,
            4 => Self::Shutdown,
            5 => Self::Rw,
            6 => Self::CreditUpdate,
            7 => Self::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, decoded. Fields keep their raw wire values (a driver may send any), so
/// `op` and `type_` are numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`Op`] as a number).
    pub op: u16,
    /// Op-specific flags (for SHUTDOWN: [`SHUTDOWN_RCV`], [`SHUTDOWN_SEND`]).
    pub flags: u32,
    /// The sender's receive buffer for this connection, in bytes.
    pub buf_alloc: u32,
    /// Bytes the sender has taken out of that buffer since the connection opened.
    pub fwd_cnt: u32,
}

/// The wire layout: all little-endian, no padding.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Wire {
    src_cid: U64,
    dst_cid: U64,
    src_port: U32,
    dst_port: U32,
    len: U32,
    type_: U16,
    op: U16,
    flags: U32,
    buf_alloc: U32,
    fwd_cnt: U32,
}

const _: () = assert!(core::mem::size_of::<Wire>() == HEADER_LEN);

impl Header {
    /// Decodes a header from its wire bytes.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let wire: Wire = zerocopy::transmute!(*bytes);
        Self {
            src_cid: wire.src_cid.get(),
            dst_cid: wire.dst_cid.get(),
            src_port: wire.src_port.get(),
            dst_port: wire.dst_port.get(),
            len: wire.len.get(),
            type_: wire.type_.get(),
            op: wire.op.get(),
            flags: wire.flags.get(),
            buf_alloc: wire.buf_alloc.get(),
            fwd_cnt: wire.fwd_cnt.get(),
        }
    }

    /// Encodes the header into its wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let wire = Wire {
            src_cid: U64::new(self.src_cid),
            dst_cid: U64::new(self.dst_cid),
            src_port: U32::new(self.src_port),
            dst_port: U32::new(self.dst_port),
            len: U32::new(self.len),
            type_: U16::new(self.type_),
            op: U16::new(self.op),
            flags: U32::new(self.flags),
            buf_alloc: U32::new(self.buf_alloc),
            fwd_cnt: U32::new(self.fwd_cnt),
        };
        zerocopy::transmute!(wire)
    }

    /// The header's [`Op`], if its code is a known one.
    pub fn op(&self) -> Option<Op> {
        Op::from_code(self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_44_little_endian_bytes_in_spec_order() {
        let header = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 3,
            src_port: 0x1122_3344,
            dst_port: 9,
            len: 5,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 0xa0b0_c0d0,
            buf_alloc: 0x1000,
            fwd_cnt: 7,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&bytes[20..24], &[9, 0, 0, 0]);
        assert_eq!(&bytes[24..28], &[5, 0, 0, 0]);
        assert_eq!(&bytes[28..30], &[1, 0]);
        assert_eq!(&bytes[30..32], &[5, 0]);
        assert_eq!(&bytes[32..36], &[0xd0, 0xc0, 0xb0, 0xa0]);
        assert_eq!(&bytes[36..40], &[0, 0x10, 0, 0]);
        assert_eq!(&bytes[40..44], &[7, 0, 0, 0]);
        assert_eq!(Header::decode(&bytes), header);
    }

    #[test]
    fn op_codes() {
        for code in 0..=10 {
            let op = Op::from_code(code);
            assert_eq!(
                op.map(|op| op as u16),
                (1..=7).contains(&code).then_some(code)
            );
        }
    }
}
