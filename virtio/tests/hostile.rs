//! A hostile driver: random descriptor tables, rings, headers and register writes never
//! panic the device or make it loop; it either keeps working or ends in
//! `DEVICE_NEEDS_RESET`.

mod common;

use common::{config, Driver, LINUX_CID, PEER_CID};
use proptest::prelude::*;
use stage2::IntermediatePhysAddr;
use virtio::mmio::{offset, status, VIRTIO_F_VERSION_1, WINDOW_SIZE};
use virtio::vsock::packet::{Header, Op, HEADER_LEN};
use virtio::vsock::{RX_QUEUE, TX_QUEUE};
use virtio::{AccessWidth, Event, GuestMemory, Vsock, VsockConfig};

const PORTS: [u32; 3] = [80, 81, 1000];

/// One descriptor as a hostile driver might write it.
#[derive(Clone, Debug)]
struct Desc {
    /// Inside the buffer area (offset), or anywhere at all.
    addr: Result<u64, u64>,
    len: u32,
    flags: u16,
    next: u16,
}

fn desc(size: u16) -> impl Strategy<Value = Desc> {
    (
        prop_oneof![
            8 => (0u64..16 * 4096).prop_map(Ok),
            1 => any::<u64>().prop_map(Err),
        ],
        prop_oneof![4 => 0u32..200, 2 => 0u32..5000, 1 => any::<u32>()],
        prop_oneof![4 => 0u16..4, 1 => 0u16..8, 1 => any::<u16>()],
        prop_oneof![4 => 0..size, 1 => any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| Desc {
            addr,
            len,
            flags,
            next,
        })
}

/// A header that is mostly plausible, sometimes not.
fn header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![6 => Just(u64::from(LINUX_CID)), 1 => any::<u64>()],
        prop_oneof![6 => Just(u64::from(PEER_CID)), 1 => 0u64..6, 1 => any::<u64>()],
        prop_oneof![4 => proptest::sample::select(PORTS.to_vec()), 1 => any::<u32>()],
        prop_oneof![4 => proptest::sample::select(PORTS.to_vec()), 1 => any::<u32>()],
        prop_oneof![4 => 0u32..300, 1 => any::<u32>()],
        prop_oneof![6 => Just(1u16), 1 => any::<u16>()],
        prop_oneof![6 => 1u16..8, 1 => any::<u16>()],
        any::<u32>(),
        prop_oneof![2 => Just(65536u32), 1 => any::<u32>()],
        any::<u32>(),
    )
        .prop_map(
            |(src_cid, dst_cid, src_port, dst_port, len, type_, op, flags, buf_alloc, fwd_cnt)| {
                Header {
                    src_cid,
                    dst_cid,
                    src_port,
                    dst_port,
                    len,
                    type_,
                    op,
                    flags: flags % 4,
                    buf_alloc,
                    fwd_cnt,
                }
            },
        )
}

/// A header Linux could send: its CID to the peer's, known ports, a real op.
fn plausible_header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![Just(PORTS[2]), Just(PORTS[0])],
        prop_oneof![Just(PORTS[0]), Just(PORTS[2])],
        prop_oneof![3 => Just(Op::Request as u16), 4 => Just(Op::Rw as u16), 2 => 1u16..8],
        0u32..4,
        prop_oneof![Just(65536u32), 0u32..100],
        prop_oneof![4 => Just(0u32), 1 => 0u32..100],
    )
        .prop_map(
            |(src_port, dst_port, op, flags, buf_alloc, fwd_cnt)| Header {
                src_cid: u64::from(LINUX_CID),
                dst_cid: u64::from(PEER_CID),
                src_port,
                dst_port,
                type_: 1,
                op,
                flags,
                buf_alloc,
                fwd_cnt,
                ..Header::default()
            },
        )
}

#[derive(Clone, Debug)]
enum Step {
    /// Overwrite descriptor `index` of the queue.
    Desc { queue: u16, index: u16, desc: Desc },
    /// Offer `head` in the available ring, with `avail.idx` advanced by `advance`.
    Offer { queue: u16, head: u16, advance: u16 },
    /// Write a header (and payload bytes) at an offset of the buffer area.
    Packet {
        at: u64,
        header: Header,
        payload: Vec<u8>,
    },
    /// A well-formed packet through the driver's own path, so connections form.
    Honest { header: Header, payload: Vec<u8> },
    /// Notify a queue (any value).
    Notify(u32),
    /// A register write at any offset, width and value.
    Register { offset: u64, width: u8, value: u64 },
    /// A register read.
    Read { offset: u64, width: u8 },
    /// The backend: poll events, accepting requests, sending, reading, closing.
    Backend { send: Vec<u8>, close: bool },
    /// Process, as after a notify.
    Process,
    /// The driver resets the device and brings it up again.
    Restart,
}

fn step(size: u16) -> impl Strategy<Value = Step> {
    let queue = prop_oneof![Just(RX_QUEUE), Just(TX_QUEUE), Just(2u16)];
    prop_oneof![
        4 => (queue.clone(), 0..size, desc(size)).prop_map(|(queue, index, desc)| Step::Desc { queue, index, desc }),
        4 => (queue, prop_oneof![4 => 0..size, 1 => any::<u16>()], prop_oneof![8 => Just(1u16), 1 => any::<u16>()])
            .prop_map(|(queue, head, advance)| Step::Offer { queue, head, advance }),
        3 => (0u64..16 * 4096, header(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(at, header, payload)| Step::Packet { at, header, payload }),
        6 => (plausible_header(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(header, payload)| Step::Honest { header, payload }),
        3 => prop_oneof![4 => 0u32..3, 1 => any::<u32>()].prop_map(Step::Notify),
        1 => (0..WINDOW_SIZE + 8, prop_oneof![Just(1u8), Just(2), Just(4), Just(8)], any::<u64>())
            .prop_map(|(offset, width, value)| Step::Register { offset, width, value }),
        1 => (0..WINDOW_SIZE + 8, prop_oneof![Just(1u8), Just(2), Just(4), Just(8)])
            .prop_map(|(offset, width)| Step::Read { offset, width }),
        2 => (proptest::collection::vec(any::<u8>(), 0..100), any::<bool>())
            .prop_map(|(send, close)| Step::Backend { send, close }),
        2 => Just(Step::Process),
        1 => Just(Step::Restart),
    ]
}

/// Checks what must hold after every step.
fn check(driver: &Driver) {
    let dev = &driver.dev;
    let status = dev.transport().status();
    let stats = dev.stats();
    assert!(dev.connection_count() <= dev.config().max_connections);
    assert_eq!(stats.queue_errors as usize, driver.needs_reset);
    if status & status::DRIVER_OK != 0 {
        assert_ne!(
            status & status::FEATURES_OK,
            0,
            "DRIVER_OK without FEATURES_OK"
        );
    }
    if status & status::FEATURES_OK != 0 {
        let features = dev.transport().driver_features();
        assert_eq!(
            features, VIRTIO_F_VERSION_1,
            "only VERSION_1 can be negotiated"
        );
    }
    if status & status::DEVICE_NEEDS_RESET != 0 {
        assert!(!dev.transport().is_live());
    }
    assert_eq!(
        dev.transport().interrupt_level(),
        dev.transport().interrupt_status() != 0
    );
}

/// Where the device may write while it runs: the used rings of the receive and transmit
/// queues, and the buffers the receive table marks device-writable. Not the descriptor
/// tables, the available rings, the event queue or any device-readable buffer (unless a
/// writable buffer the driver chose overlaps them).
fn writable_ranges(driver: &Driver) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for ring in [&driver.rx, &driver.tx] {
        ranges.push((ring.used, ring.used + 4 + 8 * u64::from(ring.size) + 2));
    }
    for index in 0..u64::from(driver.rx.size) {
        let mut raw = [0u8; 16];
        driver
            .mem
            .read(IntermediatePhysAddr(driver.rx.desc + 16 * index), &mut raw)
            .unwrap();
        let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
        let len = u64::from(u32::from_le_bytes(raw[8..12].try_into().unwrap()));
        let flags = u16::from_le_bytes(raw[12..14].try_into().unwrap());
        if flags & 2 != 0 {
            ranges.push((addr, addr.saturating_add(len)));
        }
    }
    ranges
}

/// Checks that every byte the device changed lies in `ranges`.
fn wrote_only(before: &[u8], driver: &Driver, ranges: &[(u64, u64)]) {
    let chunks = before.chunks(64).zip(driver.mem.bytes().chunks(64));
    for (chunk, (old, new)) in chunks.enumerate().filter(|(_, (old, new))| old != new) {
        for (i, _) in old
            .iter()
            .zip(new.iter())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
        {
            let addr = driver.mem.base() + (chunk * 64 + i) as u64;
            assert!(
                ranges
                    .iter()
                    .any(|&(start, end)| (start..end).contains(&addr)),
                "the device wrote {addr:#x}, outside the used rings and writable buffers"
            );
        }
    }
}

fn run(driver: &mut Driver, steps: &[Step]) {
    let buffers = driver.tx.bufs;
    for step in steps {
        // Steps where only the device touches memory: check where it wrote.
        let watch = matches!(
            step,
            Step::Notify(_) | Step::Register { .. } | Step::Backend { .. } | Step::Process
        )
        .then(|| (driver.mem.bytes().to_vec(), writable_ranges(driver)));
        match step {
            Step::Desc { queue, index, desc } => {
                let ring = [&driver.rx, &driver.tx, &driver.event][usize::from(*queue)];
                let at = ring.desc + 16 * u64::from(*index);
                let addr = match desc.addr {
                    Ok(offset) => buffers + offset,
                    Err(addr) => addr,
                };
                let mut raw = [0u8; 16];
                raw[0..8].copy_from_slice(&addr.to_le_bytes());
                raw[8..12].copy_from_slice(&desc.len.to_le_bytes());
                raw[12..14].copy_from_slice(&desc.flags.to_le_bytes());
                raw[14..16].copy_from_slice(&desc.next.to_le_bytes());
                driver.mem.write(IntermediatePhysAddr(at), &raw).unwrap();
            }
            Step::Offer {
                queue,
                head,
                advance,
            } => {
                let ring = driver.ring_mut(*queue);
                let slot = u64::from(ring.avail_idx % ring.size);
                let (avail, idx) = (ring.avail, ring.avail_idx.wrapping_add(*advance));
                ring.avail_idx = idx;
                driver
                    .mem
                    .write_u16(IntermediatePhysAddr(avail + 4 + 2 * slot), *head)
                    .unwrap();
                driver
                    .mem
                    .write_u16(IntermediatePhysAddr(avail + 2), idx)
                    .unwrap();
            }
            Step::Packet {
                at,
                header,
                payload,
            } => {
                let mut bytes = header.encode().to_vec();
                bytes.extend_from_slice(payload);
                let end = driver.mem.base() + driver.mem.size() as u64;
                let start = buffers + at;
                if start < end {
                    let len = bytes.len().min((end - start) as usize);
                    driver
                        .mem
                        .write(IntermediatePhysAddr(start), &bytes[..len])
                        .unwrap();
                }
            }
            Step::Honest { header, payload } => {
                if driver.queue_packet(header, payload) {
                    driver.notify(TX_QUEUE);
                }
            }
            Step::Notify(value) => driver.write_reg(offset::QUEUE_NOTIFY, *value),
            Step::Register {
                offset,
                width,
                value,
            } => {
                let width = AccessWidth::from_bytes(usize::from(*width)).unwrap();
                let mut fx = Vec::new();
                driver.dev.mmio_write(*offset, width, *value, &mut fx);
                driver.apply(fx);
            }
            Step::Read { offset, width } => {
                let width = AccessWidth::from_bytes(usize::from(*width)).unwrap();
                driver.dev.mmio_read(*offset, width);
            }
            Step::Backend { send, close } => {
                let mut held = Vec::new();
                for _ in 0..64 {
                    let Some(event) = driver.dev.poll_event() else {
                        break;
                    };
                    match event {
                        Event::Request { conn, .. } => {
                            driver.dev.accept(conn).unwrap();
                            held.push(conn);
                        }
                        Event::Readable { conn }
                        | Event::Writable { conn }
                        | Event::Connected { conn } => {
                            held.push(conn);
                        }
                        Event::Shutdown { conn, .. } => held.push(conn),
                        Event::Reset { .. } => {}
                    }
                }
                for conn in held {
                    let _ = driver.dev.send(conn, send);
                    let _ = driver.dev.recv(conn, &mut [0; 512]);
                    if *close {
                        let _ = driver.dev.close(conn);
                    }
                }
                let _ = driver.dev.connect(PORTS[0], PORTS[2]);
                driver.process();
            }
            Step::Process => driver.process(),
            Step::Restart => {
                driver.write_reg(offset::STATUS, 0);
                driver.restart();
            }
        }
        if let Some((before, ranges)) = watch {
            wrote_only(&before, driver, &ranges);
        }
        check(driver);
    }
}

fn hostile_config(queue_size: u16, buffer_size: u32) -> VsockConfig {
    VsockConfig {
        queue_size,
        buffer_size,
        max_connections: 4,
        ..config()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A driver that set the device up properly, then writes whatever it likes.
    #[test]
    fn a_live_device_survives_any_ring_contents(
        (queue_size, steps) in prop_oneof![Just(4u16), Just(8), Just(16)]
            .prop_flat_map(|size| (Just(size), proptest::collection::vec(step(size), 1..60))),
        buffer_size in prop_oneof![Just(16u32), Just(4096)],
    ) {
        let mut driver = Driver::new(hostile_config(queue_size, buffer_size));
        for port in PORTS {
            driver.dev.listen(port);
        }
        run(&mut driver, &steps);
    }

    /// Random register traffic from reset, with processing in between: whatever the
    /// order, negotiation rules hold and nothing panics.
    #[test]
    fn any_register_traffic_is_answered(
        accesses in proptest::collection::vec(
            (
                prop_oneof![
                    4 => proptest::sample::select(vec![
                        offset::STATUS, offset::QUEUE_SEL, offset::QUEUE_NUM, offset::QUEUE_READY,
                        offset::QUEUE_NOTIFY, offset::INTERRUPT_ACK, offset::DRIVER_FEATURES,
                        offset::DRIVER_FEATURES_SEL, offset::DEVICE_FEATURES_SEL,
                        offset::QUEUE_DESC_LOW, offset::QUEUE_DRIVER_LOW, offset::QUEUE_DEVICE_LOW,
                        offset::QUEUE_DESC_HIGH,
                    ]),
                    1 => 0..WINDOW_SIZE,
                ],
                prop_oneof![8 => Just(4u8), 1 => Just(1), 1 => Just(8)],
                prop_oneof![4 => 0u64..16, 2 => 0x4000_0000u64..0x4010_0000, 1 => any::<u64>()],
                any::<bool>(),
            ),
            1..200,
        ),
    ) {
        let mut driver = Driver::bare(hostile_config(8, 64));
        for (offset, width, value, read) in accesses {
            let width = AccessWidth::from_bytes(usize::from(width)).unwrap();
            if read {
                driver.dev.mmio_read(offset, width);
            } else {
                let mut fx = Vec::new();
                driver.dev.mmio_write(offset, width, value, &mut fx);
                driver.apply(fx);
            }
            driver.process();
            check(&driver);
        }
    }

    /// Headers alone, every field random, through well-formed rings: the device answers
    /// each one and stays live.
    #[test]
    fn any_header_through_a_good_ring_keeps_the_device_live(
        packets in proptest::collection::vec((header(), proptest::collection::vec(any::<u8>(), 0..300)), 1..40),
    ) {
        let mut driver = Driver::new(hostile_config(16, 256));
        for port in PORTS {
            driver.dev.listen(port);
        }
        for (header, payload) in packets {
            // `queue_packet` sets `len` honestly; write the raw one over it.
            prop_assert!(driver.queue_packet(&header, &payload));
            let head_at = driver.tx.bufs + driver.tx.slot * u64::from(last_head(&driver));
            driver.mem.write(IntermediatePhysAddr(head_at), &header.encode()).unwrap();
            driver.notify(TX_QUEUE);
            while let Some(event) = driver.dev.poll_event() {
                if let Event::Request { conn, .. } = event {
                    driver.dev.accept(conn).unwrap();
                    let _ = driver.dev.send(conn, b"hi");
                }
            }
            driver.process();
            driver.receive();
            check(&driver);
            prop_assert!(driver.dev.transport().is_live());
            prop_assert_eq!(driver.needs_reset, 0);
        }
    }
}

/// The head of the chain most recently made available on the transmit queue.
fn last_head(driver: &Driver) -> u16 {
    let ring = &driver.tx;
    let slot = u64::from(ring.avail_idx.wrapping_sub(1) % ring.size);
    driver
        .mem
        .read_u16(IntermediatePhysAddr(ring.avail + 4 + 2 * slot))
        .unwrap()
}

#[test]
fn a_device_config_is_what_the_driver_reads() {
    let mut dev = Vsock::new(config()).unwrap();
    assert_eq!(
        dev.mmio_read(offset::CONFIG, AccessWidth::Word),
        u64::from(LINUX_CID)
    );
    assert_eq!(dev.mmio_read(offset::CONFIG + 4, AccessWidth::Word), 0);
    let _ = HEADER_LEN;
}
