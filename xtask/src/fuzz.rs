//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` on stable Rust and runs each
//! for a bounded time, reporting executions and coverage; a crash fails the command and
//! leaves its input under `target/fuzz/artifacts/<target>/`.

use std::path::Path;
use std::process::Command;

use clap::Args;

use crate::cmd::{self, bail, Result};

#[derive(Args, Debug, Clone)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Targets to run (file names in fuzz/fuzz_targets without .rs); all when none given.
    pub targets: Vec<String>,
}

/// What one run found.
pub struct FuzzResult {
    pub target: String,
    pub runs: String,
    pub coverage: String,
}

/// Every target in `fuzz/fuzz_targets/`, sorted.
fn all_targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| cmd::Error::new(format!("{}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn fuzz(args: &FuzzArgs) -> Result<Vec<FuzzResult>> {
    let fuzz = cmd::root().join("fuzz");
    let available = all_targets(&fuzz)?;
    let targets = if args.targets.is_empty() {
        available.clone()
    } else {
        args.targets.clone()
    };
    for t in &targets {
        if !available.contains(t) {
            bail!(
                "no fuzz target {t:?}; the targets are: {}",
                available.join(", ")
            );
        }
    }
    eprintln!("xtask: building the fuzz targets (fuzz/build.sh)");
    cmd::run(Command::new("bash").arg(fuzz.join("build.sh")))?;
    let bin_dir = fuzz.join("target/x86_64-unknown-linux-gnu/release");
    let mut results = Vec::new();
    for target in &targets {
        let work = cmd::target_dir().join("fuzz");
        let corpus = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir)
                .map_err(|e| cmd::Error::new(format!("{}: {e}", dir.display())))?;
        }
        let seeds = fuzz.join("corpus").join(target);
        let mut run = Command::new(bin_dir.join(target));
        run.arg(format!("-max_total_time={}", args.seconds))
            .arg("-max_len=65536")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus);
        if seeds.is_dir() {
            run.arg(&seeds);
        }
        eprintln!("xtask: {}", cmd::display(&run));
        let output = run
            .output()
            .map_err(|e| cmd::Error::new(format!("{}: {e}", target)))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let result = summarize(target, &log);
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}); the input is in {}\n{}",
                output.status,
                cmd::pretty(&artifacts),
                tail.join("\n")
            );
        }
        results.push(result);
    }
    eprintln!("xtask: fuzzing, {} s per target:", args.seconds);
    for r in &results {
        eprintln!(
            "xtask:   {:<12} {:>10} runs   {}",
            r.target, r.runs, r.coverage
        );
    }
    Ok(results)
}

/// Reads libFuzzer's last status line (`#N DONE cov: C ft: F ...`).
fn summarize(target: &str, log: &str) -> FuzzResult {
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"));
    let runs = last
        .and_then(|l| l.split_whitespace().next())
        .map(|n| n.trim_start_matches('#').to_string())
        .unwrap_or_else(|| "?".into());
    let coverage = last
        .and_then(|l| l.find("cov:").map(|i| &l[i..]))
        .map(|s| s.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "no coverage reported".into());
    FuzzResult {
        target: target.to_string(),
        runs,
        coverage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_status_line() {
        let log = "INFO: seed\n#2\tINITED cov: 10 ft: 11 corp: 1/1b\n#376354\tDONE   cov: 906 ft: 2301 corp: 379/4406Kb lim: 29360 exec/s: 17921 rss: 33Mb\nDone 376354 runs in 21 second(s)\n";
        let r = summarize("dt_parse", log);
        assert_eq!(r.runs, "376354");
        assert_eq!(r.coverage, "cov: 906 ft: 2301");
        let r = summarize("x", "garbage");
        assert_eq!(r.runs, "?");
    }
}
