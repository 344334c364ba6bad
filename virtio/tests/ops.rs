//! The vsock device, one op or rule at a time, through a fake driver.

mod common;

use common::{config, linux_header, Driver, LinuxSocket, LINUX_CID, PEER_CID};
use stage2::IntermediatePhysAddr;
use virtio::mmio::{interrupt, offset, status};
use virtio::vsock::packet::{Header, Op, HEADER_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use virtio::vsock::{MAX_QUEUED_RESETS, RX_QUEUE, TX_QUEUE};
use virtio::{ConnId, Effect, Event, GuestMemory, Vsock, VsockConfig, VsockError};

const PORT: u32 = 80;

fn listening() -> Driver {
    let mut driver = Driver::new(config());
    driver.dev.listen(PORT);
    driver
}

/// Sends `header` and returns the ops of the packets the device answers with.
fn exchange(driver: &mut Driver, header: &Header, payload: &[u8]) -> Vec<Header> {
    driver.send(header, payload);
    driver.receive().into_iter().map(|(h, _)| h).collect()
}

fn ops(headers: &[Header]) -> Vec<Option<Op>> {
    headers.iter().map(Header::op).collect()
}

/// An accepted connection from Linux port `linux_port`.
fn open(driver: &mut Driver, linux_port: u32) -> (ConnId, LinuxSocket) {
    let mut socket = LinuxSocket::new(linux_port, PORT, 64 * 1024);
    driver.send(&socket.header(Op::Request), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.dev.accept(conn).unwrap();
    driver.process();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert!(socket.connected);
    (conn, socket)
}

#[test]
fn request_to_a_port_nobody_listens_on_gets_rst() {
    let mut driver = listening();
    let replies = exchange(&mut driver, &linux_header(Op::Request, 1000, PORT + 1), &[]);
    assert_eq!(ops(&replies), [Some(Op::Rst)]);
    let rst = replies[0];
    assert_eq!(
        (rst.src_cid, rst.dst_cid),
        (u64::from(PEER_CID), u64::from(LINUX_CID))
    );
    assert_eq!((rst.src_port, rst.dst_port), (PORT + 1, 1000));
    assert_eq!(rst.type_, TYPE_STREAM);
    assert_eq!(driver.dev.poll_event(), None);
    assert_eq!(driver.dev.stats().connections_refused, 1);
}

#[test]
fn packets_to_another_cid_get_rst_from_that_cid() {
    let mut driver = listening();
    let header = Header {
        dst_cid: 2,
        ..linux_header(Op::Request, 1000, PORT)
    };
    let replies = exchange(&mut driver, &header, &[]);
    assert_eq!(ops(&replies), [Some(Op::Rst)]);
    assert_eq!(replies[0].src_cid, 2, "so Linux matches it to its socket");
}

#[test]
fn other_socket_types_get_rst() {
    let mut driver = listening();
    let header = Header {
        type_: 2,
        ..linux_header(Op::Request, 1000, PORT)
    };
    assert_eq!(ops(&exchange(&mut driver, &header, &[])), [Some(Op::Rst)]);
    assert_eq!(driver.dev.connection_count(), 0);
}

#[test]
fn packets_from_a_cid_not_the_drivers_are_dropped() {
    let mut driver = listening();
    let header = Header {
        src_cid: 77,
        ..linux_header(Op::Request, 1000, PORT)
    };
    assert!(exchange(&mut driver, &header, &[]).is_empty());
    assert_eq!(driver.dev.stats().bad_packets, 1);
    assert_eq!(driver.dev.connection_count(), 0);
}

#[test]
fn rst_for_no_connection_gets_no_answer() {
    let mut driver = listening();
    assert!(exchange(&mut driver, &linux_header(Op::Rst, 1000, PORT), &[]).is_empty());
    assert_eq!(driver.dev.stats().resets_received, 1);
}

#[test]
fn other_ops_for_no_connection_get_rst() {
    for op in [
        Op::Response,
        Op::Shutdown,
        Op::Rw,
        Op::CreditUpdate,
        Op::CreditRequest,
    ] {
        let mut driver = listening();
        let payload: &[u8] = if op == Op::Rw { b"data" } else { &[] };
        let replies = exchange(&mut driver, &linux_header(op, 1000, PORT), payload);
        assert_eq!(ops(&replies), [Some(Op::Rst)], "{op:?}");
    }
}

#[test]
fn accept_answers_with_response_and_credit() {
    let mut driver = listening();
    driver.send(&linux_header(Op::Request, 1000, PORT), &[]);
    assert!(
        driver.receive().is_empty(),
        "nothing before the backend answers"
    );
    let Some(Event::Request {
        conn,
        port,
        peer_port,
    }) = driver.dev.poll_event()
    else {
        panic!("no Request");
    };
    assert_eq!((port, peer_port), (PORT, 1000));
    assert_eq!(driver.dev.accept(conn), Ok(()));
    assert_eq!(driver.dev.accept(conn), Err(VsockError::WrongState(conn)));
    driver.process();
    let replies: Vec<Header> = driver.receive().into_iter().map(|(h, _)| h).collect();
    assert_eq!(ops(&replies), [Some(Op::Response)]);
    assert_eq!(replies[0].buf_alloc, config().buffer_size);
    assert_eq!(replies[0].fwd_cnt, 0);
    assert_eq!((replies[0].src_port, replies[0].dst_port), (PORT, 1000));
}

#[test]
fn refuse_answers_with_rst() {
    let mut driver = listening();
    driver.send(&linux_header(Op::Request, 1000, PORT), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.dev.refuse(conn).unwrap();
    assert_eq!(
        driver.dev.refuse(conn),
        Err(VsockError::NoSuchConnection(conn))
    );
    driver.process();
    assert_eq!(
        ops(&driver
            .receive()
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()),
        [Some(Op::Rst)]
    );
    assert_eq!(driver.dev.connection_count(), 0);
    assert_eq!(driver.dev.stats().connections_refused, 1);
}

#[test]
fn a_request_reset_before_the_backend_saw_it_vanishes() {
    let mut driver = listening();
    driver.send(&linux_header(Op::Request, 1000, PORT), &[]);
    driver.send(&linux_header(Op::Rst, 1000, PORT), &[]);
    assert_eq!(driver.dev.poll_event(), None);
    assert_eq!(driver.dev.connection_count(), 0);
}

#[test]
fn data_within_credit_is_readable() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    driver.send(&socket.header(Op::Rw), b"hello");
    driver.send(&socket.header(Op::Rw), b", world");
    assert_eq!(driver.dev.poll_event(), Some(Event::Readable { conn }));
    assert_eq!(driver.dev.poll_event(), None, "coalesced");
    assert_eq!(driver.dev.readable(conn), 12);
    let mut buf = [0; 5];
    assert_eq!(driver.dev.recv(conn, &mut buf), Ok(5));
    assert_eq!(&buf, b"hello");
    let mut buf = [0; 64];
    assert_eq!(driver.dev.recv(conn, &mut buf), Ok(7));
    assert_eq!(&buf[..7], b", world");
    assert_eq!(driver.dev.recv(conn, &mut buf), Ok(0));
    assert_eq!(driver.dev.stats().bytes_from_driver, 12);
}

#[test]
fn data_beyond_the_credit_resets_the_connection() {
    let mut driver = Driver::new(VsockConfig {
        buffer_size: 8,
        ..config()
    });
    driver.dev.listen(PORT);
    let (conn, socket) = open(&mut driver, 1000);
    assert_eq!(socket.credit(), 8);
    let replies = exchange(&mut driver, &socket.header(Op::Rw), b"123456789");
    assert_eq!(ops(&replies), [Some(Op::Rst)]);
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    assert_eq!(
        driver.dev.recv(conn, &mut [0; 8]),
        Err(VsockError::NoSuchConnection(conn))
    );
    assert_eq!(driver.dev.connection_count(), 0);
    assert_eq!(driver.dev.stats().bad_packets, 1);
}

#[test]
fn a_payload_longer_than_its_chain_resets_the_connection() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    // Header says 100 bytes; the chain carries 44 + 10.
    let mut raw = socket.header(Op::Rw);
    raw.len = 100;
    let mut bytes = raw.encode().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    let addr = driver.tx.bufs;
    driver
        .mem
        .write(IntermediatePhysAddr(addr), &bytes)
        .unwrap();
    write_desc(&mut driver, TX_QUEUE, 0, addr, bytes.len() as u32, 0, 0);
    driver.tx.free.retain(|&d| d != 0);
    driver.make_available(TX_QUEUE, 0);
    driver.notify(TX_QUEUE);
    assert_eq!(
        ops(&driver
            .receive()
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()),
        [Some(Op::Rst)]
    );
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
}

#[test]
fn a_chain_shorter_than_a_header_is_dropped() {
    let mut driver = listening();
    let addr = driver.tx.bufs;
    write_desc(&mut driver, TX_QUEUE, 0, addr, HEADER_LEN as u32 - 1, 0, 0);
    driver.tx.free.retain(|&d| d != 0);
    driver.make_available(TX_QUEUE, 0);
    driver.notify(TX_QUEUE);
    assert!(driver.receive().is_empty());
    assert_eq!(driver.dev.stats().bad_packets, 1);
    assert_eq!(driver.needs_reset, 0);
}

#[test]
fn a_receive_buffer_too_small_for_a_header_comes_back_empty() {
    let mut driver = Driver::bare(config());
    driver.bring_up();
    driver.dev.listen(PORT);
    let addr = driver.rx.bufs;
    write_desc(&mut driver, RX_QUEUE, 0, addr, HEADER_LEN as u32 - 1, 2, 0);
    driver.rx.free.retain(|&d| d != 0);
    driver.make_available(RX_QUEUE, 0);
    driver.notify(RX_QUEUE);
    driver.send(&linux_header(Op::Request, 1000, PORT + 1), &[]);
    let used = driver
        .mem
        .read_u16(IntermediatePhysAddr(driver.rx.used + 2))
        .unwrap();
    assert_eq!(used, 1);
    let mut elem = [0; 8];
    driver
        .mem
        .read(IntermediatePhysAddr(driver.rx.used + 4), &mut elem)
        .unwrap();
    assert_eq!(elem, [0; 8], "head 0, 0 bytes");
    assert_eq!(driver.dev.stats().bad_buffers, 1);
    assert_eq!(
        driver.dev.stats().resets_sent,
        0,
        "the RST still waits for a buffer"
    );
}

#[test]
fn credit_request_gets_credit_update() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    driver.send(&socket.header(Op::Rw), b"abc");
    driver.dev.recv(conn, &mut [0; 3]).unwrap();
    let replies = exchange(&mut driver, &socket.header(Op::CreditRequest), &[]);
    assert_eq!(ops(&replies), [Some(Op::CreditUpdate)]);
    assert_eq!(
        (replies[0].buf_alloc, replies[0].fwd_cnt),
        (config().buffer_size, 3)
    );
}

#[test]
fn sending_waits_for_linux_credit() {
    let mut driver = listening();
    let mut socket = LinuxSocket::new(1000, PORT, 10);
    driver.send(&socket.header(Op::Request), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.dev.accept(conn).unwrap();
    assert_eq!(driver.dev.send(conn, b"0123456789abcdef"), Ok(16));
    driver.process();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert_eq!(socket.received, b"0123456789", "Linux's 10 bytes of credit");
    socket.consume_all();
    driver.send(&socket.header(Op::CreditUpdate), &[]);
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert_eq!(socket.received, b"0123456789abcdef");
}

#[test]
fn a_short_send_is_followed_by_writable() {
    let mut driver = Driver::new(VsockConfig {
        buffer_size: 4,
        ..config()
    });
    driver.dev.listen(PORT);
    let (conn, mut socket) = open(&mut driver, 1000);
    assert_eq!(driver.dev.send(conn, b"abcdef"), Ok(4));
    assert_eq!(driver.dev.send(conn, b"ef"), Ok(0));
    assert_eq!(driver.dev.poll_event(), None);
    driver.process();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert_eq!(driver.dev.poll_event(), Some(Event::Writable { conn }));
    assert_eq!(driver.dev.send(conn, b"ef"), Ok(2));
}

#[test]
fn shutdown_send_ends_the_stream_but_not_the_connection() {
    let mut driver = listening();
    let (conn, mut socket) = open(&mut driver, 1000);
    driver.send(&socket.header(Op::Rw), b"last words");
    let mut shutdown = socket.header(Op::Shutdown);
    shutdown.flags = SHUTDOWN_SEND;
    assert!(exchange(&mut driver, &shutdown, &[]).is_empty());
    assert_eq!(driver.dev.poll_event(), Some(Event::Readable { conn }));
    assert_eq!(
        driver.dev.poll_event(),
        Some(Event::Shutdown {
            conn,
            send: true,
            receive: false
        })
    );
    let mut buf = [0; 32];
    assert_eq!(driver.dev.recv(conn, &mut buf), Ok(10));
    // The reply still flows.
    driver.dev.send(conn, b"reply").unwrap();
    driver.process();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert_eq!(socket.received, b"reply");
    // Data after SHUTDOWN(SEND) breaks the protocol.
    assert_eq!(
        ops(&exchange(&mut driver, &socket.header(Op::Rw), b"x")),
        [Some(Op::Rst)]
    );
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
}

#[test]
fn shutdown_receive_drops_queued_data_and_fails_sends() {
    let mut driver = Driver::bare(config());
    driver.bring_up();
    driver.dev.listen(PORT);
    let mut socket = LinuxSocket::new(1000, PORT, 64 * 1024);
    driver.send(&socket.header(Op::Request), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.dev.accept(conn).unwrap();
    driver.dev.send(conn, b"never delivered").unwrap();
    let mut shutdown = socket.header(Op::Shutdown);
    shutdown.flags = SHUTDOWN_RCV;
    driver.send(&shutdown, &[]);
    assert_eq!(
        driver.dev.send(conn, b"x"),
        Err(VsockError::PeerClosed(conn))
    );
    driver.post_all_rx();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert!(socket.connected);
    assert!(socket.received.is_empty());
}

#[test]
fn rst_from_linux_resets_the_connection() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    driver.send(&socket.header(Op::Rw), b"unread");
    assert!(exchange(&mut driver, &socket.header(Op::Rst), &[]).is_empty());
    assert_eq!(
        driver.dev.poll_event(),
        Some(Event::Reset { conn }),
        "replaces Readable"
    );
    assert_eq!(driver.dev.poll_event(), None);
    assert_eq!(driver.dev.connection_count(), 0);
    assert_eq!(
        driver.dev.send(conn, b"x"),
        Err(VsockError::NoSuchConnection(conn))
    );
}

#[test]
fn calls_on_a_reset_connection_say_so_until_the_event_is_polled() {
    let mut driver = listening();
    driver.send(&linux_header(Op::Request, 1000, PORT), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.send(&linux_header(Op::Rst, 1000, PORT), &[]);
    assert_eq!(
        driver.dev.accept(conn),
        Err(VsockError::ConnectionReset(conn))
    );
    assert_eq!(
        driver.dev.send(conn, b"x"),
        Err(VsockError::ConnectionReset(conn))
    );
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    assert_eq!(
        driver.dev.accept(conn),
        Err(VsockError::NoSuchConnection(conn))
    );
}

#[test]
fn ops_that_do_not_fit_the_state_reset_the_connection() {
    for op in [Op::Request, Op::Response] {
        let mut driver = listening();
        let (conn, socket) = open(&mut driver, 1000);
        assert_eq!(
            ops(&exchange(&mut driver, &socket.header(op), &[])),
            [Some(Op::Rst)],
            "{op:?}"
        );
        assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    }
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    let unknown = Header {
        op: 99,
        ..socket.header(Op::Rw)
    };
    assert_eq!(ops(&exchange(&mut driver, &unknown, &[])), [Some(Op::Rst)]);
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    assert_eq!(driver.dev.stats().bad_packets, 1);
}

#[test]
fn connections_are_bounded() {
    let mut driver = Driver::new(VsockConfig {
        max_connections: 2,
        ..config()
    });
    driver.dev.listen(PORT);
    for port in 0..5 {
        driver.send(&linux_header(Op::Request, 1000 + port, PORT), &[]);
    }
    let replies: Vec<Header> = driver.receive().into_iter().map(|(h, _)| h).collect();
    assert_eq!(ops(&replies), [Some(Op::Rst); 3]);
    assert_eq!(driver.dev.connection_count(), 2);
    assert_eq!(driver.dev.stats().connections_refused, 3);
    assert_eq!(
        driver.dev.connect(1, 1),
        Err(VsockError::TooManyConnections)
    );
}

#[test]
fn queued_resets_are_bounded_while_linux_posts_no_buffers() {
    let mut driver = Driver::bare(config());
    driver.bring_up();
    for port in 0..100 {
        assert!(driver.queue_packet(&linux_header(Op::Request, port, PORT), &[]));
    }
    driver.notify(TX_QUEUE);
    assert_eq!(
        driver.dev.stats().resets_dropped,
        100 - MAX_QUEUED_RESETS as u64
    );
    driver.post_all_rx();
    let replies = driver.receive();
    assert_eq!(replies.len(), MAX_QUEUED_RESETS);
    assert_eq!(driver.dev.stats().resets_sent, MAX_QUEUED_RESETS as u64);
}

#[test]
fn a_duplicate_request_resets_the_connection() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    assert_eq!(
        ops(&exchange(&mut driver, &socket.header(Op::Request), &[])),
        [Some(Op::Rst)]
    );
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
}

#[test]
fn connection_ids_are_not_reused_while_held() {
    let mut driver = listening();
    let (first, _) = open(&mut driver, 1000);
    let (second, _) = open(&mut driver, 1001);
    assert_ne!(first, second);
    assert_eq!(
        driver.dev.connect(PORT, 1000),
        Err(VsockError::PortsInUse {
            port: PORT,
            peer_port: 1000
        })
    );
}

#[test]
fn connect_needs_a_live_driver() {
    let mut driver = Driver::bare(config());
    assert_eq!(driver.dev.connect(1, 2), Err(VsockError::NotReady));
}

#[test]
fn closing_a_request_refuses_it() {
    let mut driver = listening();
    driver.send(&linux_header(Op::Request, 1000, PORT), &[]);
    let Some(Event::Request { conn, .. }) = driver.dev.poll_event() else {
        panic!("no Request");
    };
    driver.dev.close(conn).unwrap();
    driver.process();
    assert_eq!(
        ops(&driver
            .receive()
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()),
        [Some(Op::Rst)]
    );
}

#[test]
fn reset_connection_sends_rst() {
    let mut driver = listening();
    let (conn, _) = open(&mut driver, 1000);
    driver.dev.send(conn, b"dropped").unwrap();
    driver.dev.reset_connection(conn).unwrap();
    driver.process();
    assert_eq!(
        ops(&driver
            .receive()
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()),
        [Some(Op::Rst)]
    );
    assert_eq!(driver.dev.connection_count(), 0);
}

#[test]
fn unlisten_refuses_new_requests_only() {
    let mut driver = listening();
    let (conn, socket) = open(&mut driver, 1000);
    driver.dev.unlisten(PORT);
    assert_eq!(
        ops(&exchange(
            &mut driver,
            &linux_header(Op::Request, 1001, PORT),
            &[]
        )),
        [Some(Op::Rst)]
    );
    driver.send(&socket.header(Op::Rw), b"still open");
    assert_eq!(driver.dev.poll_event(), Some(Event::Readable { conn }));
}

#[test]
fn a_broken_queue_needs_reset_and_resets_connections() {
    let mut driver = listening();
    let (conn, _) = open(&mut driver, 1000);
    driver.ack_interrupt();
    // avail.idx far ahead of what the device took.
    let at = IntermediatePhysAddr(driver.tx.avail + 2);
    driver
        .mem
        .write_u16(at, driver.tx.avail_idx.wrapping_add(1000))
        .unwrap();
    driver.notify(TX_QUEUE);
    assert_eq!(driver.needs_reset, 1);
    assert_ne!(
        driver.read_reg(offset::STATUS) & status::DEVICE_NEEDS_RESET,
        0
    );
    assert!(driver.irq);
    assert_eq!(
        driver.read_reg(offset::INTERRUPT_STATUS),
        interrupt::CONFIG_CHANGE
    );
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    assert_eq!(driver.dev.stats().queue_errors, 1);
    assert_eq!(driver.dev.connect(1, 2), Err(VsockError::NotReady));

    // Nothing more happens until the driver resets the device.
    let before = driver.dev.stats();
    assert!(driver.queue_packet(&linux_header(Op::Request, 1001, PORT), &[]));
    driver.process();
    assert_eq!(driver.dev.stats(), before);
    assert_eq!(driver.needs_reset, 1);

    driver.write_reg(offset::STATUS, 0);
    assert!(!driver.irq, "reset clears the interrupt");
    driver.restart();
    let (_, socket) = open(&mut driver, 1000);
    assert!(socket.connected);
}

#[test]
fn the_hypervisor_can_reset_the_device() {
    let mut driver = listening();
    let (conn, _) = open(&mut driver, 1000);
    let mut fx = Vec::new();
    driver.dev.reset(&mut fx);
    assert_eq!(fx, [Effect::Interrupt(false)]);
    assert_eq!(driver.dev.transport().status(), 0);
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
}

#[test]
fn nothing_is_processed_before_driver_ok() {
    let mut driver = Driver::bare(config());
    driver.dev.listen(PORT);
    let mut fx = Vec::new();
    driver.dev.process(&mut driver.mem, &mut fx);
    assert!(fx.is_empty());
    driver.write_reg(offset::QUEUE_NOTIFY, u32::from(TX_QUEUE));
    assert_eq!(driver.dev.stats().packets_from_driver, 0);
}

#[test]
fn one_call_takes_at_most_a_ring_then_asks_for_more() {
    let mut driver = Driver::new(VsockConfig {
        queue_size: 8,
        ..config()
    });
    for port in 0..8 {
        assert!(driver.queue_packet(&linux_header(Op::Rst, port, PORT), &[]));
    }
    let mut fx = Vec::new();
    driver.dev.process(&mut driver.mem, &mut fx);
    assert!(fx.contains(&Effect::MoreWork));
    assert_eq!(driver.dev.stats().packets_from_driver, 8);
    let mut fx = Vec::new();
    driver.dev.process(&mut driver.mem, &mut fx);
    assert!(!fx.contains(&Effect::MoreWork));
}

#[test]
fn the_event_queue_is_left_alone() {
    let mut driver = listening();
    driver.notify(2);
    let used = driver
        .mem
        .read_u16(IntermediatePhysAddr(driver.event.used + 2))
        .unwrap();
    assert_eq!(used, 0);
}

#[test]
fn config_validation() {
    use virtio::ConfigError;
    let ok = VsockConfig::new(5);
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.max_buffer_bytes(), 16 * 2 * 16 * 1024);
    for cid in [0, 1, 2, u32::MAX] {
        assert_eq!(
            VsockConfig::new(cid).validate(),
            Err(ConfigError::ReservedCid(cid))
        );
    }
    let cases = [
        (VsockConfig { peer_cid: 2, ..ok }, Ok(())),
        (
            VsockConfig { peer_cid: 5, ..ok },
            Err(ConfigError::SameCid(5)),
        ),
        (
            VsockConfig { peer_cid: 1, ..ok },
            Err(ConfigError::ReservedCid(1)),
        ),
        (
            VsockConfig {
                queue_size: 100,
                ..ok
            },
            Err(ConfigError::QueueSize(100)),
        ),
        (
            VsockConfig {
                queue_size: 2048,
                ..ok
            },
            Err(ConfigError::QueueSize(2048)),
        ),
        (
            VsockConfig {
                max_connections: 0,
                ..ok
            },
            Err(ConfigError::Connections(0)),
        ),
        (
            VsockConfig {
                max_connections: 1025,
                ..ok
            },
            Err(ConfigError::Connections(1025)),
        ),
        (
            VsockConfig {
                buffer_size: 0,
                ..ok
            },
            Err(ConfigError::BufferSize(0)),
        ),
        (
            VsockConfig {
                buffer_size: 5 << 20,
                ..ok
            },
            Err(ConfigError::BufferSize(5 << 20)),
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(config.validate(), expected, "{config:?}");
        assert_eq!(Vsock::new(config).map(|_| ()), expected);
    }
}

fn write_desc(
    driver: &mut Driver,
    queue: u16,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let ring = if queue == RX_QUEUE {
        &driver.rx
    } else {
        &driver.tx
    };
    let at = ring.desc + 16 * u64::from(index);
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    driver.mem.write(IntermediatePhysAddr(at), &raw).unwrap();
}
