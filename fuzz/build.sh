#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on stable Rust, without cargo-fuzz: the same
# instrumentation flags cargo-fuzz passes. --target keeps them off build scripts.
set -euo pipefail
cd "$(dirname "$0")"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions --cfg fuzzing" \
    cargo build --release --target x86_64-unknown-linux-gnu --bins
