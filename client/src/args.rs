//! The command line: options, then one command with its operands.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tandem_proto::service::TAG_LEN;

use crate::attest::Pins;
use crate::conn::Endpoint;
use crate::hex;

/// What `--help` prints.
pub const USAGE: &str = "\
usage: tandem-client [--cid N] [--port P] [--timeout SECS] COMMAND

Talks to the secure guest's signing service over AF_VSOCK.

commands:
  sign FILE                 print FILE's tag (64 hex digits) and its name
  verify FILE TAG           print 'FILE: valid' (exit 0) or 'FILE: INVALID' (exit 1)
  stats                     print the service's counters
  bench N                   N signatures of 64 bytes on one connection: rate and latency
  crash                     ask the service to fault on purpose (test builds only)
  flood SECONDS CONNECTIONS sign back to back on CONNECTIONS connections; exit 0 if
                            every request was answered without error
  attack KIND               send one kind of malformed input, check the refusal and that
                            the service still answers; KIND is one of
                            garbage, badlen, short-verify, unknown-op, replay, truncated
  attest [--expect DIGEST] [--root PUBKEY] [--save FILE]
                            ask for an attestation report over a fresh nonce, check its
                            chain and print what it vouches for; exit 1 when it is refused,
                            the image is not DIGEST or the device key is not PUBKEY (64 hex
                            digits each); --save writes the report to FILE
  attest --replay-from FILE check a saved report against a fresh nonce, as a replay would
                            be: exit 1 when refused (the defence works), 0 when accepted

options:
  --cid N          the secure guest's context id (default 3)
  --port P         the service's port (default 5000)
  --timeout SECS   how long a connect, send or receive may take (default 5)

exit status: 0 done, 1 the answer was no (INVALID, a failed check), 2 an error";

/// A malformed input that `attack` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Bytes that are not a frame.
    Garbage,
    /// A header whose length is over the protocol's limit.
    BadLen,
    /// A verify too short to hold a tag.
    ShortVerify,
    /// A request op the service does not know.
    UnknownOp,
    /// The same request id twice.
    Replay,
    /// Half a header, then the connection closed.
    Truncated,
}

impl Attack {
    /// Every kind, in the order the tests run them.
    pub const ALL: [Attack; 6] = [
        Attack::Garbage,
        Attack::BadLen,
        Attack::ShortVerify,
        Attack::UnknownOp,
        Attack::Replay,
        Attack::Truncated,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Garbage => "garbage",
            Attack::BadLen => "badlen",
            Attack::ShortVerify => "short-verify",
            Attack::UnknownOp => "unknown-op",
            Attack::Replay => "replay",
            Attack::Truncated => "truncated",
        }
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Print the tag of a file.
    Sign {
        /// The file to sign.
        file: PathBuf,
    },
    /// Check a tag against a file.
    Verify {
        /// The file the tag should sign.
        file: PathBuf,
        /// The tag.
        tag: [u8; TAG_LEN],
    },
    /// Print the service's counters.
    Stats,
    /// Measure sequential signatures.
    Bench {
        /// How many, at least 1.
        requests: u32,
    },
    /// Ask the service to crash.
    Crash,
    /// Load the service from several connections at once.
    Flood {
        /// For how long.
        duration: Duration,
        /// How many connections, each on its own thread; at least 1.
        connections: u32,
    },
    /// Send malformed input.
    Attack(Attack),
    /// Fetch an attestation report and check it.
    Attest {
        /// What it must match beyond its chain.
        pins: Pins,
        /// Where to save the report as it came.
        save: Option<PathBuf>,
    },
    /// Check a saved report as a replay: against a fresh nonce.
    AttestReplay {
        /// The saved report.
        file: PathBuf,
    },
}

/// A command line that cannot be followed; the text says why.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(UsageError(format!($($arg)*)))
    };
}

/// Parses the arguments after the program's name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<(Endpoint, Command), UsageError> {
    let mut args = args.into_iter();
    let mut endpoint = Endpoint::default();
    let command = loop {
        let Some(arg) = args.next() else {
            usage!("no command given (try --help)");
        };
        let arg = text(arg)?;
        match arg.as_str() {
            "--cid" => endpoint.cid = number(&arg, args.next())?,
            "--port" => endpoint.port = number(&arg, args.next())?,
            "--timeout" => {
                let secs: u64 = number(&arg, args.next())?;
                if secs == 0 {
                    usage!("--timeout must be at least 1 second");
                }
                endpoint.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" | "help" => return Ok((endpoint, Command::Help)),
            option if option.starts_with('-') => usage!("unknown option {option}"),
            _ => break arg,
        }
    };
    let mut operands: Vec<OsString> = args.collect();
    let want = |n: usize, names: &str, operands: &[OsString]| {
        if operands.len() == n {
            Ok(())
        } else if names.is_empty() {
            Err(UsageError(format!("{command} takes no operands")))
        } else {
            Err(UsageError(format!(
                "usage: tandem-client {command} {names}"
            )))
        }
    };
    let command = match command.as_str() {
        "sign" => {
            want(1, "FILE", &operands)?;
            Command::Sign {
                file: operands.remove(0).into(),
            }
        }
        "verify" => {
            want(2, "FILE TAG", &operands)?;
            let tag = text(operands.remove(1))?;
            let tag = hex::decode::<TAG_LEN>(&tag)
                .map_err(|e| UsageError(format!("TAG {tag:?}: {e}")))?;
            Command::Verify {
                file: operands.remove(0).into(),
                tag,
            }
        }
        "stats" => {
            want(0, "", &operands)?;
            Command::Stats
        }
        "bench" => {
            want(1, "N", &operands)?;
            let requests = number("N", operands.pop())?;
            if requests == 0 {
                usage!("bench: N must be at least 1");
            }
            Command::Bench { requests }
        }
        "crash" => {
            want(0, "", &operands)?;
            Command::Crash
        }
        "flood" => {
            want(2, "SECONDS CONNECTIONS", &operands)?;
            let connections = number("CONNECTIONS", operands.pop())?;
            let seconds: u64 = number("SECONDS", operands.pop())?;
            if seconds == 0 || connections == 0 {
                usage!("flood: SECONDS and CONNECTIONS must be at least 1");
            }
            Command::Flood {
                duration: Duration::from_secs(seconds),
                connections,
            }
        }
        "attack" => {
            let kinds: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
            want(1, &format!("KIND ({})", kinds.join(", ")), &operands)?;
            let kind = text(operands.remove(0))?;
            match Attack::ALL.into_iter().find(|a| a.name() == kind) {
                Some(attack) => Command::Attack(attack),
                None => usage!(
                    "attack: unknown KIND {kind:?} (one of {})",
                    kinds.join(", ")
                ),
            }
        }
        "attest" => attest(operands)?,
        other => usage!("unknown command {other:?} (try --help)"),
    };
    Ok((endpoint, command))
}

/// The options of `attest`.
fn attest(operands: Vec<OsString>) -> Result<Command, UsageError> {
    let mut pins = Pins::default();
    let mut save = None;
    let mut replay_from = None;
    let mut operands = operands.into_iter();
    while let Some(option) = operands.next() {
        let option = text(option)?;
        let mut value = || {
            operands
                .next()
                .ok_or_else(|| UsageError(format!("attest: {option} needs a value")))
        };
        let repeated = match option.as_str() {
            "--expect" => pins.image.replace(key(&option, value()?)?).is_some(),
            "--root" => pins.device_key.replace(key(&option, value()?)?).is_some(),
            "--save" => save.replace(PathBuf::from(value()?)).is_some(),
            "--replay-from" => replay_from.replace(PathBuf::from(value()?)).is_some(),
            _ => usage!(
                "attest: unknown option {option:?} (--expect, --root, --save, --replay-from)"
            ),
        };
        if repeated {
            usage!("attest: {option} given twice");
        }
    }
    match replay_from {
        Some(file) if pins == Pins::default() && save.is_none() => {
            Ok(Command::AttestReplay { file })
        }
        Some(_) => usage!("attest: --replay-from takes no other option"),
        None => Ok(Command::Attest { pins, save }),
    }
}

/// The 32 bytes (a digest or a public key) that 64 hex digits give.
fn key(what: &str, arg: OsString) -> Result<[u8; 32], UsageError> {
    let arg = text(arg)?;
    hex::decode::<32>(&arg).map_err(|e| UsageError(format!("attest: {what} {arg:?}: {e}")))
}

/// An argument that must be UTF-8 (everything but file names).
fn text(arg: OsString) -> Result<String, UsageError> {
    arg.into_string()
        .map_err(|arg| UsageError(format!("{arg:?} is not valid UTF-8")))
}

/// The decimal number `what` stands for.
fn number<T: std::str::FromStr>(what: &str, arg: Option<OsString>) -> Result<T, UsageError> {
    let Some(arg) = arg else {
        usage!("{what} needs a value");
    };
    let arg = text(arg)?;
    arg.parse()
        .map_err(|_| UsageError(format!("{what}: {arg:?} is not a number in range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<(Endpoint, Command), UsageError> {
        parse(line.split_whitespace().map(OsString::from))
    }

    fn command(line: &str) -> Command {
        parse_str(line).unwrap().1
    }

    fn refusal(line: &str) -> String {
        parse_str(line).unwrap_err().0
    }

    #[test]
    fn defaults_and_options() {
        let (endpoint, cmd) = parse_str("stats").unwrap();
        assert_eq!(endpoint, Endpoint::default());
        assert_eq!(
            (endpoint.cid, endpoint.port, endpoint.timeout),
            (3, 5000, Duration::from_secs(5))
        );
        assert_eq!(cmd, Command::Stats);
        let (endpoint, _) = parse_str("--cid 7 --port 6000 --timeout 2 stats").unwrap();
        assert_eq!(
            (endpoint.cid, endpoint.port, endpoint.timeout),
            (7, 6000, Duration::from_secs(2))
        );
    }

    #[test]
    fn every_command() {
        assert_eq!(
            command("sign /tmp/msg"),
            Command::Sign {
                file: "/tmp/msg".into()
            }
        );
        let tag = "00".repeat(31) + "Ab";
        let mut want = [0; TAG_LEN];
        want[31] = 0xab;
        assert_eq!(
            command(&format!("verify /tmp/msg {tag}")),
            Command::Verify {
                file: "/tmp/msg".into(),
                tag: want
            }
        );
        assert_eq!(command("bench 200"), Command::Bench { requests: 200 });
        assert_eq!(command("crash"), Command::Crash);
        assert_eq!(
            command("flood 5 4"),
            Command::Flood {
                duration: Duration::from_secs(5),
                connections: 4
            }
        );
        for attack in Attack::ALL {
            assert_eq!(
                command(&format!("attack {}", attack.name())),
                Command::Attack(attack)
            );
        }
        assert_eq!(command("--help"), Command::Help);
        assert_eq!(command("--cid 4 -h"), Command::Help);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(refusal(""), "no command given (try --help)");
        assert_eq!(refusal("--verbose stats"), "unknown option --verbose");
        assert_eq!(refusal("--cid"), "--cid needs a value");
        assert_eq!(
            refusal("--cid three stats"),
            "--cid: \"three\" is not a number in range"
        );
        assert_eq!(
            refusal("--port 70000000000 stats"),
            "--port: \"70000000000\" is not a number in range"
        );
        assert_eq!(
            refusal("--timeout 0 stats"),
            "--timeout must be at least 1 second"
        );
        assert_eq!(refusal("sign"), "usage: tandem-client sign FILE");
        assert_eq!(refusal("sign a b"), "usage: tandem-client sign FILE");
        assert_eq!(refusal("stats now"), "stats takes no operands");
        assert_eq!(
            refusal("verify /tmp/msg abcd"),
            "TAG \"abcd\": 4 characters, not 64 hex digits"
        );
        let bad = "0".repeat(63) + "x";
        assert!(
            refusal(&format!("verify f {bad}")).ends_with("'x' at position 64 is not a hex digit")
        );
        assert_eq!(refusal("bench 0"), "bench: N must be at least 1");
        assert_eq!(refusal("bench -3"), "N: \"-3\" is not a number in range");
        assert_eq!(
            refusal("flood 0 4"),
            "flood: SECONDS and CONNECTIONS must be at least 1"
        );
        assert!(refusal("attack").starts_with("usage: tandem-client attack KIND (garbage, "));
        assert!(refusal("attack nonsense").starts_with("attack: unknown KIND \"nonsense\""));
        assert_eq!(
            refusal("frobnicate"),
            "unknown command \"frobnicate\" (try --help)"
        );
    }

    #[test]
    fn attest_options() {
        let digest = "ab".repeat(32);
        let root = "CD".repeat(32);
        assert_eq!(
            command("attest"),
            Command::Attest {
                pins: Pins::default(),
                save: None
            }
        );
        assert_eq!(
            command(&format!(
                "--cid 4 attest --save /tmp/report --root {root} --expect {digest}"
            )),
            Command::Attest {
                pins: Pins {
                    image: Some([0xab; 32]),
                    device_key: Some([0xcd; 32]),
                },
                save: Some("/tmp/report".into())
            }
        );
        assert_eq!(
            command("attest --replay-from /tmp/report"),
            Command::AttestReplay {
                file: "/tmp/report".into()
            }
        );
    }

    #[test]
    fn attest_mistakes_are_named() {
        let digest = "00".repeat(32);
        assert_eq!(refusal("attest --save"), "attest: --save needs a value");
        assert_eq!(
            refusal("attest --expect abc"),
            "attest: --expect \"abc\": 3 characters, not 64 hex digits"
        );
        assert!(refusal(&format!("attest --root {}x", "0".repeat(63)))
            .ends_with("'x' at position 64 is not a hex digit"));
        assert_eq!(
            refusal(&format!("attest --expect {digest} --expect {digest}")),
            "attest: --expect given twice"
        );
        assert_eq!(
            refusal("attest now"),
            "attest: unknown option \"now\" (--expect, --root, --save, --replay-from)"
        );
        assert_eq!(
            refusal("attest --replay-from a --save b"),
            "attest: --replay-from takes no other option"
        );
        assert_eq!(
            refusal(&format!("attest --expect {digest} --replay-from a")),
            "attest: --replay-from takes no other option"
        );
    }

    #[test]
    fn file_names_need_not_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let name = OsString::from_vec(vec![b'/', 0xff]);
        let (_, cmd) = parse([OsString::from("sign"), name.clone()]).unwrap();
        assert_eq!(cmd, Command::Sign { file: name.into() });
    }
}
