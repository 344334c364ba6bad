//! `tandem-client`: Linux's client of the secure guest's signing service over AF_VSOCK.
//!
//! A static aarch64 binary in the rich OS's initramfs (`/bin/tandem-client`, put there by
//! `xtask/src/initramfs.rs`). Besides the requests themselves (sign, verify, stats) it
//! carries what the tests need: a benchmark, a flood from many connections, malformed
//! input, and the test build's crash request; and `attest`, a relying party's check of
//! the secure guest's attestation report. `--help` lists the commands.
//!
//! Exit status: 0 done, 1 the answer was no (a tag INVALID, a check failed, a report
//! refused), 2 an error (bad usage, no service, a broken answer), said on standard error
//! as `tandem-client: <what went wrong>`.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod args;
mod attack;
mod attest;
mod commands;
mod conn;
mod hex;
mod load;

use std::process::ExitCode;

use args::Command;

/// Exit status of an error.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let (endpoint, command) = match args::parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("tandem-client: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", args::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign { file } => commands::sign(&endpoint, &file),
        Command::Verify { file, tag } => commands::verify(&endpoint, &file, &tag),
        Command::Stats => commands::stats(&endpoint),
        Command::Crash => commands::crash(&endpoint),
        Command::Bench { requests } => load::bench(&endpoint, requests),
        Command::Flood {
            duration,
            connections,
        } => load::flood(&endpoint, duration, connections),
        Command::Attack(kind) => Ok(attack::attack(&endpoint, kind)),
        Command::Attest { pins, save } => attest::attest(&endpoint, &pins, save.as_deref()),
        Command::AttestReplay { file } => attest::replay(&file),
    };
    result.unwrap_or_else(|e| {
        eprintln!("tandem-client: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}
