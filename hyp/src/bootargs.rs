//! The hypervisor's own options, read from `/chosen/bootargs` (`tandem.<name>=<value>`).

use log::LevelFilter;

/// Options the hypervisor understands on its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `tandem.loglevel=<error|warn|info|debug|trace>`; info when absent.
    pub log_level: LevelFilter,
    /// `tandem.selftest=<panic|abort|stack-overflow>`: after the banner, make the
    /// hypervisor fail on purpose, so tests can check that failures are reported.
    pub self_test: Option<SelfTest>,
}

/// A failure the hypervisor can cause in itself on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// A Rust panic.
    Panic,
    /// A data abort at EL2 (a read of an unmapped address).
    Abort,
    /// Unbounded recursion into the stack guard.
    StackOverflow,
}

/// A problem with one option: the option is ignored and the problem reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// `tandem.loglevel` has a value that is not a level.
    BadLogLevel(&'a str),
    /// `tandem.selftest` names no known failure.
    BadSelfTest(&'a str),
}

impl core::fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OptionError::BadLogLevel(v) => write!(
                f,
                "tandem.loglevel={v} is not a level; use error, warn, info, debug or trace"
            ),
            OptionError::BadSelfTest(v) => write!(
                f,
                "tandem.selftest={v} is not a self-test; use panic, abort or stack-overflow"
            ),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_level: LevelFilter::Info,
            self_test: None,
        }
    }
}

/// Reads the options from a command line; words that are not Tandem's are ignored (a
/// boot loader may add its own). Problems are handed to `report`, and parsing goes on.
pub fn parse<'a>(cmdline: &'a str, report: &mut impl FnMut(OptionError<'a>)) -> Options {
    let mut options = Options::default();
    for word in cmdline.split_ascii_whitespace() {
        if let Some(level) = word.strip_prefix("tandem.loglevel=") {
            match level {
                "error" => options.log_level = LevelFilter::Error,
                "warn" => options.log_level = LevelFilter::Warn,
                "info" => options.log_level = LevelFilter::Info,
                "debug" => options.log_level = LevelFilter::Debug,
                "trace" => options.log_level = LevelFilter::Trace,
                other => report(OptionError::BadLogLevel(other)),
            }
        } else if let Some(test) = word.strip_prefix("tandem.selftest=") {
            match test {
                "panic" => options.self_test = Some(SelfTest::Panic),
                "abort" => options.self_test = Some(SelfTest::Abort),
                "stack-overflow" => options.self_test = Some(SelfTest::StackOverflow),
                other => report(OptionError::BadSelfTest(other)),
            }
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn reads_the_level_and_ignores_other_words() {
        let mut errors = Vec::new();
        let o = parse("console=ttyAMA0 tandem.loglevel=debug quiet", &mut |e| {
            errors.push(e)
        });
        assert_eq!(o.log_level, LevelFilter::Debug);
        assert!(errors.is_empty());
        assert_eq!(parse("", &mut |e| errors.push(e)), Options::default());
        let o = parse("tandem.selftest=stack-overflow", &mut |e| errors.push(e));
        assert_eq!(o.self_test, Some(SelfTest::StackOverflow));
        assert!(errors.is_empty());
    }

    #[test]
    fn reports_a_bad_level() {
        let mut errors = Vec::new();
        let o = parse("tandem.loglevel=loud", &mut |e| errors.push(e));
        assert_eq!(o.log_level, LevelFilter::Info);
        assert_eq!(errors, [OptionError::BadLogLevel("loud")]);
        assert!(errors[0]
            .to_string()
            .contains("use error, warn, info, debug or trace"));
        errors.clear();
        let o = parse("tandem.selftest=nap", &mut |e| errors.push(e));
        assert_eq!(o.self_test, None);
        assert_eq!(errors, [OptionError::BadSelfTest("nap")]);
    }
}
