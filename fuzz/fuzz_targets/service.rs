//! Fuzzes the secure guest's service (the request parser and everything behind it) with
//! what a hostile Linux can put in the records the hypervisor passes on: connections
//! opened, data cut anywhere (whole frames, broken frames, garbage), shutdowns and resets
//! in any order. Checks: no panic; every record the service pushes is for a connection it
//! accepted and has not let go, with a payload within the ring's limit; the bytes it sends
//! on each connection are whole, well-formed response frames; a production build never
//! crashes on request.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tandem_proto::ring::{Kind, Record, MAX_PAYLOAD};
use tandem_proto::service::{Header, Op, HEADER_LEN, MAX_BODY, PORT};
use tandem_service::{Outbox, Service, Step, TestRequests, Undelivered};

/// Records decoded from one input at most.
const MAX_STEPS: usize = 200;

#[derive(Default)]
struct Collect {
    records: Vec<(Record, Vec<u8>)>,
    full: bool,
}

impl Outbox for Collect {
    fn push(&mut self, record: Record, payload: &[u8]) -> std::result::Result<(), Undelivered> {
        if self.full {
            return Err(Undelivered);
        }
        self.records.push((record, payload.to_vec()));
        Ok(())
    }
}

/// A frame header as a client would send it, or a damaged one.
fn frame(u: &mut Unstructured) -> Result<Vec<u8>> {
    let op = *u.choose(&[
        Op::Sign as u16,
        Op::Verify as u16,
        Op::Stats as u16,
        Op::Crash as u16,
        0x1234,
    ])?;
    let len = if u.ratio(1, 8)? {
        u.arbitrary::<u32>()?
    } else {
        u.int_in_range(0..=80u32)?
    };
    let header = Header {
        op,
        flags: if u.ratio(1, 16)? { u.arbitrary()? } else { 0 },
        id: u.int_in_range(0..=20u32)?,
        len,
    };
    let mut bytes = header.encode().to_vec();
    if u.ratio(1, 16)? {
        bytes[0] ^= 0xff;
    }
    let body = (len as usize).min(80);
    bytes.extend(u.bytes(body)?);
    Ok(bytes)
}

fn run(u: &mut Unstructured) -> Result<()> {
    let test_requests = if u.arbitrary()? {
        TestRequests::Served
    } else {
        TestRequests::Refused
    };
    let mut service = Service::new(&[7; 32], test_requests);
    let mut out = Collect::default();
    // Connections the service accepted and still has, and what it sent on each.
    let mut live: HashSet<u32> = HashSet::new();
    let mut sent: HashMap<u32, Vec<u8>> = HashMap::new();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let conn = u.int_in_range(1..=20u32)?;
        let (record, payload) = match u.int_in_range(0..=5u8)? {
            0 => {
                let port = if u.ratio(3, 4)? { PORT } else { u.arbitrary()? };
                (
                    Record {
                        kind: Kind::Open,
                        conn,
                        arg: port,
                    },
                    Vec::new(),
                )
            }
            1 | 2 => {
                let mut data = frame(u)?;
                let cut = u.int_in_range(0..=data.len())?;
                data.truncate(cut.max(1).min(MAX_PAYLOAD));
                (Record::new(Kind::Data, conn), data)
            }
            3 => {
                let n = u.int_in_range(0..=64usize)?;
                (Record::new(Kind::Data, conn), u.bytes(n)?.to_vec())
            }
            4 => (Record::new(Kind::Shutdown, conn), Vec::new()),
            _ => (Record::new(Kind::Reset, conn), Vec::new()),
        };
        out.full = u.ratio(1, 32)?;
        out.records.clear();
        let step = service.on_record(record, &payload, 0, &mut out);
        if step == Step::Crash {
            assert_eq!(test_requests, TestRequests::Served, "a production build crashed");
            return Ok(());
        }
        if record.kind == Kind::Reset {
            live.remove(&conn);
        }
        for (r, p) in &out.records {
            assert!(p.len() <= MAX_PAYLOAD, "a {}-byte payload", p.len());
            match r.kind {
                Kind::Accept => {
                    assert_eq!(record.kind, Kind::Open);
                    live.insert(r.conn);
                }
                Kind::Data => {
                    assert!(live.contains(&r.conn), "data on a connection not accepted");
                    sent.entry(r.conn).or_default().extend_from_slice(p);
                }
                Kind::Shutdown | Kind::Reset => {
                    live.remove(&r.conn);
                }
                other => panic!("the service pushed {other:?}"),
            }
        }
    }
    // What went out on each connection is a sequence of whole response frames.
    for (conn, bytes) in sent {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let head: &[u8; HEADER_LEN] = rest
                .get(..HEADER_LEN)
                .and_then(|h| h.try_into().ok())
                .unwrap_or_else(|| panic!("conn {conn}: a cut response header"));
            let h = Header::decode(head).unwrap_or_else(|e| panic!("conn {conn}: {e:?}"));
            assert!(h.op & 0x8000 != 0, "conn {conn}: op {:#x} is no response", h.op);
            let end = HEADER_LEN + h.len as usize;
            assert!(h.len as usize <= MAX_BODY && end <= rest.len(), "conn {conn}: a cut body");
            rest = &rest[end..];
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
