//! Fuzzes the device-tree reader: `Platform::parse`, `early_console` and `blob_size` on
//! arbitrary bytes must return, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = platform::Platform::parse(data);
    let early = platform::early_console(data);
    let _ = platform::blob_size(data);
    // Both readers pick the same console whenever the whole board parses.
    if let Ok(p) = parsed {
        assert_eq!(
            p.console.map(|u| (u.kind, u.base)),
            early.map(|u| (u.kind, u.base)),
            "Platform::parse and early_console disagree on the console"
        );
    }
});
