//! Well-formed conversations, at random: every byte arrives exactly once and in order, in
//! both directions, whatever the interleaving, buffer sizes and credit.

mod common;

use common::{config, Driver, LinuxSocket};
use proptest::prelude::*;
use virtio::vsock::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};
use virtio::vsock::TX_QUEUE;
use virtio::{ConnId, Event, VsockConfig};

const PORT: u32 = 9000;

/// One connection as both ends see it.
struct Pair {
    linux: LinuxSocket,
    conn: Option<ConnId>,
    /// Linux → secure: the stream, how much Linux has sent, what the backend got.
    up: Vec<u8>,
    up_sent: usize,
    up_got: Vec<u8>,
    /// Secure → Linux: the stream, how much the backend handed to `send`.
    down: Vec<u8>,
    down_sent: usize,
}

#[derive(Clone, Debug)]
enum Action {
    /// Linux writes up to `n` bytes on connection `c`, as credit and the ring allow.
    LinuxWrite { c: usize, n: usize, packet: usize },
    /// The secure side sends up to `n` bytes.
    SecureWrite { c: usize, n: usize },
    /// The secure side reads up to `n` bytes.
    SecureRead { c: usize, n: usize },
    /// Linux's app reads what arrived; Linux sends a credit update if it wants.
    LinuxRead { c: usize, update: bool },
    /// Linux asks for credit.
    CreditRequest { c: usize },
    /// Linux takes the receive queue's used buffers and reposts them.
    LinuxReceive,
    /// The glue runs the device.
    Process,
}

fn action(conns: usize) -> impl Strategy<Value = Action> {
    let c = 0..conns;
    prop_oneof![
        3 => (c.clone(), 1usize..20_000, 1usize..5000).prop_map(|(c, n, packet)| Action::LinuxWrite { c, n, packet }),
        3 => (c.clone(), 1usize..20_000).prop_map(|(c, n)| Action::SecureWrite { c, n }),
        3 => (c.clone(), 1usize..20_000).prop_map(|(c, n)| Action::SecureRead { c, n }),
        3 => (c.clone(), any::<bool>()).prop_map(|(c, update)| Action::LinuxRead { c, update }),
        1 => c.prop_map(|c| Action::CreditRequest { c }),
        2 => Just(Action::LinuxReceive),
        1 => Just(Action::Process),
    ]
}

struct World {
    driver: Driver,
    pairs: Vec<Pair>,
    max_packet: usize,
}

impl World {
    fn new(config: VsockConfig, rx_split: bool, sizes: &[(usize, usize, u32)]) -> Self {
        let mut driver = Driver::with_rx_split(config, rx_split);
        driver.dev.listen(PORT);
        let mut pairs = Vec::new();
        for (i, &(up, down, linux_buf)) in sizes.iter().enumerate() {
            let seed = i as u8;
            pairs.push(Pair {
                linux: LinuxSocket::new(40_000 + i as u32, PORT, linux_buf),
                conn: None,
                up: (0..up)
                    .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect(),
                up_sent: 0,
                up_got: Vec::new(),
                down: (0..down)
                    .map(|k| (k as u8).wrapping_mul(17).wrapping_add(seed ^ 0x5a))
                    .collect(),
                down_sent: 0,
            });
        }
        let mut world = Self {
            driver,
            pairs,
            max_packet: 4096,
        };
        for i in 0..world.pairs.len() {
            let header = world.pairs[i].linux.header(Op::Request);
            world.driver.send(&header, &[]);
        }
        world.backend();
        // A small receive queue may take a few rounds to carry every RESPONSE.
        for _ in 0..world.pairs.len() {
            world.linux_receive();
        }
        assert!(world
            .pairs
            .iter()
            .all(|p| p.linux.connected && p.conn.is_some()));
        world
    }

    /// The backend handles its events: it accepts requests; nothing else may happen.
    fn backend(&mut self) {
        while let Some(event) = self.driver.dev.poll_event() {
            match event {
                Event::Request {
                    conn, peer_port, ..
                } => {
                    let pair = self
                        .pairs
                        .iter_mut()
                        .find(|p| p.linux.port == peer_port)
                        .unwrap();
                    assert!(pair.conn.is_none());
                    pair.conn = Some(conn);
                    self.driver.dev.accept(conn).unwrap();
                }
                Event::Readable { .. } | Event::Writable { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        self.driver.process();
    }

    fn linux_receive(&mut self) {
        for (header, payload) in self.driver.receive() {
            assert_ne!(
                header.op,
                Op::Rst as u16,
                "a well-formed conversation got an RST"
            );
            let pair = self
                .pairs
                .iter_mut()
                .find(|p| p.linux.owns(&header))
                .unwrap();
            pair.linux.take(&header, &payload);
        }
    }

    fn conn(&self, c: usize) -> ConnId {
        self.pairs[c].conn.unwrap()
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::LinuxWrite { c, n, packet } => {
                let packet = packet.min(self.max_packet);
                let mut left = n;
                let mut queued = false;
                loop {
                    let pair = &mut self.pairs[c];
                    let len = left
                        .min(pair.up.len() - pair.up_sent)
                        .min(pair.linux.credit() as usize)
                        .min(packet);
                    if len == 0 {
                        break;
                    }
                    let header = pair.linux.header(Op::Rw);
                    let chunk = pair.up[pair.up_sent..pair.up_sent + len].to_vec();
                    if !self.driver.queue_packet(&header, &chunk) {
                        break;
                    }
                    let pair = &mut self.pairs[c];
                    pair.up_sent += len;
                    pair.linux.tx_cnt = pair.linux.tx_cnt.wrapping_add(len as u32);
                    left -= len;
                    queued = true;
                }
                if queued {
                    self.driver.notify(TX_QUEUE);
                }
            }
            Action::SecureWrite { c, n } => {
                let conn = self.conn(c);
                let pair = &mut self.pairs[c];
                let end = pair.down_sent.saturating_add(n).min(pair.down.len());
                let taken = self
                    .driver
                    .dev
                    .send(conn, &pair.down[pair.down_sent..end])
                    .unwrap();
                pair.down_sent += taken;
            }
            Action::SecureRead { c, n } => {
                let conn = self.conn(c);
                let mut buf = vec![0; n];
                let got = self.driver.dev.recv(conn, &mut buf).unwrap();
                self.pairs[c].up_got.extend_from_slice(&buf[..got]);
            }
            Action::LinuxRead { c, update } => {
                self.pairs[c].linux.consume_all();
                if update {
                    let header = self.pairs[c].linux.header(Op::CreditUpdate);
                    self.driver.send(&header, &[]);
                }
            }
            Action::CreditRequest { c } => {
                let header = self.pairs[c].linux.header(Op::CreditRequest);
                self.driver.send(&header, &[]);
            }
            Action::LinuxReceive => self.linux_receive(),
            Action::Process => self.driver.process(),
        }
        self.backend();
    }

    /// Runs everything to the end: all data written, read, acknowledged.
    fn drain(&mut self) {
        let total: usize = self.pairs.iter().map(|p| p.up.len() + p.down.len()).sum();
        for round in 0.. {
            // Every round moves at least a byte each way that has any left.
            assert!(round <= total + 10, "the conversation does not finish");
            let done = self
                .pairs
                .iter()
                .all(|p| p.up_got.len() == p.up.len() && p.linux.received.len() == p.down.len());
            if done {
                break;
            }
            for c in 0..self.pairs.len() {
                self.apply(&Action::LinuxWrite {
                    c,
                    n: usize::MAX,
                    packet: 4096,
                });
                self.apply(&Action::SecureWrite { c, n: usize::MAX });
                self.apply(&Action::SecureRead { c, n: 1 << 20 });
                self.apply(&Action::LinuxReceive);
                self.apply(&Action::LinuxRead { c, update: true });
            }
        }
    }

    /// Both sides close: Linux shuts down, the device answers RST, the backend closes.
    fn close(&mut self) {
        for c in 0..self.pairs.len() {
            let mut header = self.pairs[c].linux.header(Op::Shutdown);
            header.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
            self.driver.send(&header, &[]);
        }
        // Credit updates may still be on their way; then one RST per connection, over a
        // few rounds if the receive queue is small.
        let mut resets = 0;
        for _ in 0..=self.pairs.len() {
            for (header, _) in self.driver.receive() {
                match Op::from_code(header.op) {
                    Some(Op::Rst) => resets += 1,
                    Some(Op::CreditUpdate) => {}
                    other => panic!("{other:?} after SHUTDOWN"),
                }
            }
        }
        assert_eq!(resets, self.pairs.len());
        while let Some(event) = self.driver.dev.poll_event() {
            let Event::Shutdown {
                conn,
                send: true,
                receive: true,
            } = event
            else {
                panic!("unexpected {event:?}");
            };
            self.driver.dev.close(conn).unwrap();
        }
        assert_eq!(self.driver.dev.connection_count(), 0);
    }
}

fn world_config() -> impl Strategy<Value = (VsockConfig, bool, Vec<(usize, usize, u32)>)> {
    (
        prop_oneof![
            Just(1u32),
            1u32..64,
            Just(4096),
            Just(16 * 1024),
            Just(64 * 1024)
        ],
        prop_oneof![Just(4u16), Just(16), Just(64)],
        any::<bool>(),
    )
        .prop_flat_map(|(buffer_size, queue_size, rx_split)| {
            // Tiny buffers move a few bytes per round trip: keep their streams short enough
            // for the test to stay quick.
            let stream = |buffer: u32| 0..(buffer as usize * 200 + 200).min(40_000);
            let pair = prop_oneof![Just(1u32), 1u32..100, Just(4096), Just(256 * 1024)]
                .prop_flat_map(move |linux_buf| {
                    (
                        stream(buffer_size),
                        stream(linux_buf.min(buffer_size)),
                        Just(linux_buf),
                    )
                });
            let config = VsockConfig {
                buffer_size,
                queue_size,
                ..config()
            };
            (
                Just(config),
                Just(rx_split),
                proptest::collection::vec(pair, 1..4),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_byte_arrives_once_in_order(
        ((config, rx_split, sizes), actions) in world_config().prop_flat_map(|w| {
            let n = w.2.len();
            (Just(w), proptest::collection::vec(action(n), 0..80))
        }),
    ) {
        let mut world = World::new(config, rx_split, &sizes);
        for action in &actions {
            world.apply(action);
        }
        world.drain();
        for pair in &world.pairs {
            prop_assert!(pair.up_got == pair.up, "Linux → secure stream differs");
            prop_assert!(pair.linux.received == pair.down, "secure → Linux stream differs");
        }
        world.close();
        let stats = world.driver.dev.stats();
        let up: usize = world.pairs.iter().map(|p| p.up.len()).sum();
        let down: usize = world.pairs.iter().map(|p| p.down.len()).sum();
        prop_assert_eq!(stats.bytes_from_driver, up as u64);
        prop_assert_eq!(stats.bytes_to_driver, down as u64);
        prop_assert_eq!(stats.bad_packets, 0);
        prop_assert_eq!(stats.queue_errors, 0);
    }
}
