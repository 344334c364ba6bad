//! The vsock device driven the way Linux drives it: bring-up, a connection from Linux,
//! data both ways with credit, and the close handshake.

mod common;

use common::{config, Driver, LinuxSocket, LINUX_CID, PEER_CID, RX_BUF};
use virtio::mmio::{interrupt, offset};
use virtio::vsock::packet::{Op, HEADER_LEN, SHUTDOWN_RCV, SHUTDOWN_SEND};
use virtio::Event;

const PORT: u32 = 1234;
const LINUX_PORT: u32 = 49152;

/// Connects Linux's `socket` to the backend's listening `PORT`; returns the connection.
fn connect(driver: &mut Driver, socket: &mut LinuxSocket) -> virtio::ConnId {
    driver.send(&socket.header(Op::Request), &[]);
    let Some(Event::Request {
        conn,
        port,
        peer_port,
    }) = driver.dev.poll_event()
    else {
        panic!("no Request event");
    };
    assert_eq!((port, peer_port), (socket.peer_port, socket.port));
    driver.dev.accept(conn).unwrap();
    driver.process();
    let packets = driver.receive();
    assert_eq!(packets.len(), 1);
    let (header, _) = &packets[0];
    assert_eq!(header.op, Op::Response as u16);
    assert_eq!(header.src_cid, u64::from(PEER_CID));
    assert_eq!(header.dst_cid, u64::from(LINUX_CID));
    socket.take(header, &[]);
    assert!(socket.connected);
    conn
}

#[test]
fn linux_connects_exchanges_data_and_closes() {
    let mut driver = Driver::new(config());
    assert_eq!(
        driver
            .dev
            .mmio_read(offset::CONFIG, virtio::AccessWidth::Double),
        u64::from(LINUX_CID)
    );
    driver.dev.listen(PORT);
    let mut socket = LinuxSocket::new(LINUX_PORT, PORT, 64 * 1024);
    let conn = connect(&mut driver, &mut socket);
    assert!(driver.irq, "used buffers raise the interrupt");
    assert_eq!(driver.ack_interrupt(), interrupt::USED_BUFFER);
    assert!(!driver.irq, "acknowledging lowers it");
    assert_eq!(socket.peer_buf_alloc, config().buffer_size);

    // Linux → secure: a request of 10 KiB in 4 KiB packets, within the device's credit.
    let message: Vec<u8> = (0..10 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in message.chunks(4096) {
        assert!(chunk.len() as u32 <= socket.credit());
        driver.send(&socket.header(Op::Rw), chunk);
        socket.tx_cnt += chunk.len() as u32;
    }
    assert_eq!(driver.dev.poll_event(), Some(Event::Readable { conn }));
    let mut got = vec![0; 64 * 1024];
    let n = driver.dev.recv(conn, &mut got).unwrap();
    assert_eq!(&got[..n], &message[..]);

    // The device told Linux of the room once Linux's view of it fell to half.
    driver.process();
    let updates = driver.receive();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0.op, Op::CreditUpdate as u16);
    socket.take(&updates[0].0, &[]);
    assert_eq!(socket.credit(), config().buffer_size);

    // Secure → Linux: 100 KiB, more than Linux's 64 KiB buffer, so only as Linux reads.
    let reply: Vec<u8> = (0..100 * 1024).map(|i| (i % 253) as u8).collect();
    let mut sent = 0;
    let mut rounds = 0;
    while socket.received.len() < reply.len() {
        rounds += 1;
        assert!(rounds < 1000);
        if sent < reply.len() {
            sent += driver.dev.send(conn, &reply[sent..]).unwrap();
        }
        driver.process();
        for (header, payload) in driver.receive() {
            assert!(socket.owns(&header));
            assert!(payload.len() <= RX_BUF as usize - HEADER_LEN);
            socket.take(&header, &payload);
        }
        // Linux's app reads, and Linux sends a credit update.
        socket.consume_all();
        driver.send(&socket.header(Op::CreditUpdate), &[]);
        while let Some(event) = driver.dev.poll_event() {
            assert_eq!(event, Event::Writable { conn });
        }
    }
    assert_eq!(socket.received, reply);

    // Linux asks for credit, gets it.
    driver.send(&socket.header(Op::CreditRequest), &[]);
    let packets = driver.receive();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, Op::CreditUpdate as u16);

    // Linux closes: SHUTDOWN both ways, the device answers RST, the backend hears it.
    driver.send(&socket.header(Op::Shutdown), &[]);
    let mut shutdown = socket.header(Op::Shutdown);
    shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    driver.send(&shutdown, &[]);
    let packets = driver.receive();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].0.op, Op::Rst as u16);
    assert_eq!(
        driver.dev.poll_event(),
        Some(Event::Shutdown {
            conn,
            send: true,
            receive: true
        })
    );
    assert_eq!(
        driver.dev.connection_count(),
        1,
        "held until the backend closes"
    );
    driver.dev.close(conn).unwrap();
    assert_eq!(driver.dev.connection_count(), 0);

    let stats = driver.dev.stats();
    assert_eq!(stats.bytes_from_driver, message.len() as u64);
    assert_eq!(stats.bytes_to_driver, reply.len() as u64);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.resets_sent, 1);
    assert_eq!(stats.queue_errors, 0);
    assert_eq!(driver.needs_reset, 0);
}

#[test]
fn split_receive_buffers_carry_header_and_payload() {
    let mut driver = Driver::with_rx_split(config(), true);
    driver.dev.listen(PORT);
    let mut socket = LinuxSocket::new(LINUX_PORT, PORT, 64 * 1024);
    let conn = connect(&mut driver, &mut socket);
    let data: Vec<u8> = (0..9000).map(|i| i as u8).collect();
    assert_eq!(
        driver.dev.send(conn, &data).unwrap(),
        data.len().min(config().buffer_size as usize)
    );
    driver.process();
    for (header, payload) in driver.receive() {
        socket.take(&header, &payload);
    }
    assert_eq!(socket.received, data);
}

#[test]
fn backend_closes_first_and_linux_finishes_with_rst() {
    let mut driver = Driver::new(config());
    driver.dev.listen(PORT);
    let mut socket = LinuxSocket::new(LINUX_PORT, PORT, 64 * 1024);
    let conn = connect(&mut driver, &mut socket);
    driver.dev.send(conn, b"bye").unwrap();
    driver.dev.close(conn).unwrap();
    assert!(
        driver.dev.send(conn, b"more").is_err(),
        "the backend let go of it"
    );
    driver.process();
    let packets = driver.receive();
    let ops: Vec<u16> = packets.iter().map(|(h, _)| h.op).collect();
    assert_eq!(ops, [Op::Rw as u16, Op::Shutdown as u16]);
    assert_eq!(packets[0].1, b"bye");
    assert_eq!(packets[1].0.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(driver.dev.connection_count(), 1);
    driver.send(&socket.header(Op::Rst), &[]);
    assert_eq!(driver.dev.connection_count(), 0);
    assert_eq!(driver.dev.poll_event(), None);
}

#[test]
fn secure_side_connects_to_linux() {
    let mut driver = Driver::new(config());
    let conn = driver.dev.connect(7000, 5000).unwrap();
    assert_eq!(driver.dev.send(conn, b"early").unwrap(), 5);
    driver.process();
    let packets = driver.receive();
    assert_eq!(packets.len(), 1);
    let (request, _) = &packets[0];
    assert_eq!(request.op, Op::Request as u16);
    assert_eq!((request.src_port, request.dst_port), (7000, 5000));
    let mut socket = LinuxSocket::new(5000, 7000, 64 * 1024);
    socket.take(request, &[]);
    driver.send(&socket.header(Op::Response), &[]);
    assert_eq!(driver.dev.poll_event(), Some(Event::Connected { conn }));
    let packets = driver.receive();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].1, b"early");

    let refused = driver.dev.connect(7001, 5001).unwrap();
    driver.process();
    let packets = driver.receive();
    let socket = LinuxSocket::new(5001, 7001, 0);
    assert!(socket.owns(&packets[0].0));
    driver.send(&socket.header(Op::Rst), &[]);
    assert_eq!(
        driver.dev.poll_event(),
        Some(Event::Reset { conn: refused })
    );
    assert_eq!(driver.dev.connection_count(), 1);
}

#[test]
fn a_driver_reset_resets_every_connection() {
    let mut driver = Driver::new(config());
    driver.dev.listen(PORT);
    let mut socket = LinuxSocket::new(LINUX_PORT, PORT, 64 * 1024);
    let conn = connect(&mut driver, &mut socket);
    driver.write_reg(offset::STATUS, 0);
    assert_eq!(driver.read_reg(offset::STATUS), 0);
    assert_eq!(driver.dev.poll_event(), Some(Event::Reset { conn }));
    assert_eq!(driver.dev.connection_count(), 0);
    // One by the driver's bring-up, one now.
    assert_eq!(driver.dev.stats().device_resets, 2);

    // The driver brings it up again from fresh rings; listeners stayed.
    driver.restart();
    let mut socket = LinuxSocket::new(LINUX_PORT, PORT, 64 * 1024);
    connect(&mut driver, &mut socket);
}
