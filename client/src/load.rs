//! The load commands: `bench` (latency of sequential requests) and `flood` (many
//! connections at once, nothing may be lost).

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use crate::commands::{no, Error};
use crate::conn::{self, Conn, Endpoint};

/// Bytes signed by each request of `bench` and `flood`.
const REQUEST_BYTES: usize = 64;

/// `bench N`: N signatures one after the other on one connection.
pub fn bench(endpoint: &Endpoint, requests: u32) -> Result<ExitCode, Error> {
    let mut conn = Conn::connect(endpoint)?;
    let mut data = [0x5a; REQUEST_BYTES];
    let mut latencies = Vec::with_capacity(requests as usize);
    // std's Instant is CLOCK_MONOTONIC on Linux.
    let start = Instant::now();
    for i in 0..requests {
        data[..4].copy_from_slice(&i.to_le_bytes());
        let sent = Instant::now();
        conn.sign(&data)?;
        latencies.push(sent.elapsed());
    }
    let total = start.elapsed();
    println!("{}", bench_summary(total, &mut latencies));
    Ok(ExitCode::SUCCESS)
}

/// The `bench:` line for requests that took `total` together, one by one `latencies`
/// (sorted here).
fn bench_summary(total: Duration, latencies: &mut [Duration]) -> String {
    latencies.sort_unstable();
    let rate = latencies.len() as f64 / total.as_secs_f64().max(1e-9);
    let us = |d: Duration| d.as_micros();
    format!(
        "bench: {} requests in {} ms: {rate:.0} requests/s; \
         latency p50 {} us, p90 {} us, p99 {} us, max {} us",
        latencies.len(),
        total.as_millis(),
        us(percentile(latencies, 50)),
        us(percentile(latencies, 90)),
        us(percentile(latencies, 99)),
        us(latencies.last().copied().unwrap_or_default()),
    )
}

/// The `p`th percentile of `sorted` by the nearest-rank method: the smallest value that
/// at least `p` percent of the values do not exceed. Zero for no values.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// What one connection of a flood did.
#[derive(Debug, Default)]
struct Tally {
    /// Requests written whole.
    sent: u64,
    /// Requests whose answer (result or error frame) came back.
    answered: u64,
    /// Error frames, bad answers, and failures of the connection itself.
    errors: u64,
    /// The first error, for the log.
    first_error: Option<conn::Error>,
}

impl Tally {
    fn error(&mut self, e: conn::Error) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// `flood SECONDS CONNECTIONS`: every connection on its own thread, signing back to back
/// with one request outstanding, until `duration` is over. Exit status 0 only when every
/// request was answered and none was refused.
pub fn flood(endpoint: &Endpoint, duration: Duration, connections: u32) -> Result<ExitCode, Error> {
    let start = Instant::now();
    let deadline = start + duration;
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|_| scope.spawn(move || flood_one(endpoint, deadline)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                // A thread that panicked counts as one error (release builds abort).
                t.join().unwrap_or_else(|_| Tally {
                    errors: 1,
                    ..Tally::default()
                })
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut total = Tally::default();
    for (i, t) in tallies.into_iter().enumerate() {
        if let Some(e) = t.first_error {
            eprintln!("tandem-client: flood connection {i}: {e}");
        }
        total.sent += t.sent;
        total.answered += t.answered;
        total.errors += t.errors;
    }
    let lost = total.sent - total.answered;
    println!(
        "flood: sent {} answered {} lost {lost} errors {} in {:.1} s",
        total.sent,
        total.answered,
        total.errors,
        elapsed.as_secs_f64()
    );
    Ok(if lost == 0 && total.errors == 0 {
        ExitCode::SUCCESS
    } else {
        no()
    })
}

/// One connection of a flood. A refusal is counted and the flood goes on; a broken
/// connection (reset, silence, a bad answer) ends this connection's part.
fn flood_one(endpoint: &Endpoint, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn = match Conn::connect(endpoint) {
        Ok(conn) => conn,
        Err(e) => {
            tally.error(e);
            return tally;
        }
    };
    let mut data = [0xa5; REQUEST_BYTES];
    let op = tandem_proto::service::Op::Sign as u16;
    while Instant::now() < deadline {
        let id = conn.next_id();
        data[..4].copy_from_slice(&id.to_le_bytes());
        if let Err(e) = conn.send(op, id, &data) {
            tally.error(e);
            break;
        }
        tally.sent += 1;
        match conn.receive_reply(op, id) {
            Ok(conn::Reply::Answer(tag)) => {
                tally.answered += 1;
                if tag.len() != tandem_proto::service::TAG_LEN {
                    tally.error(conn::Error::BadResponse(format!(
                        "a tag of {} bytes",
                        tag.len()
                    )));
                    break;
                }
            }
            Ok(conn::Reply::Refused(refusal)) => {
                tally.answered += 1;
                tally.error(conn::Error::Refused(refusal));
            }
            Err(e) => {
                tally.error(e);
                break;
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = us(&(1..=200).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50), Duration::from_micros(100));
        assert_eq!(percentile(&sorted, 90), Duration::from_micros(180));
        assert_eq!(percentile(&sorted, 99), Duration::from_micros(198));
        assert_eq!(percentile(&us(&[7]), 99), Duration::from_micros(7));
        assert_eq!(percentile(&us(&[1, 2, 3]), 50), Duration::from_micros(2));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn the_bench_line() {
        let mut latencies = us(&[400, 100, 300, 200]);
        assert_eq!(
            bench_summary(Duration::from_millis(2), &mut latencies),
            "bench: 4 requests in 2 ms: 2000 requests/s; \
             latency p50 200 us, p90 400 us, p99 400 us, max 400 us"
        );
    }
}
