//! Fuzzes the `/hypervisor` config validator: on arbitrary bytes, `Platform::parse` and then
//! `config::check` must return, never panic or hang, and never give a config with errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform::{config, MemRange, Platform};

fuzz_target!(|data: &[u8]| {
    let Ok(platform) = Platform::parse(data) else {
        return;
    };
    // Where check-config assumes the hypervisor is: 2 MiB into the first RAM bank, 8 MiB long.
    let base = platform
        .memory
        .first()
        .map_or(0, |b| b.base.saturating_add(2 << 20));
    let hypervisor = [MemRange {
        base,
        size: 8 << 20,
    }];
    let report = config::check(data, &platform, &hypervisor);
    assert!(report.config.is_none() || report.errors.is_empty());
});
