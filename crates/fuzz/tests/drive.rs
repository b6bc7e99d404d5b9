//! The stable fuzz driver, part of `cargo test` (so of `make test`): every
//! target runs its seeds, then seeded mutations of them for a time budget
//! (`TIDEMARK_FUZZ_SECONDS` per target, default 6, so about a minute for
//! all), and must neither panic nor let the process's peak memory pass
//! [`PEAK_LIMIT`]. A failing input is written to a file named in the
//! failure; `TIDEMARK_FUZZ_SEED` replays a run, `TIDEMARK_FUZZ_TARGET`
//! runs one target.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};
use tidemark_fuzz::mutate::{mutate, Rng};
use tidemark_fuzz::{run, seeds, Target};

/// The largest object cap (an index file, 256 MiB) plus the process's own
/// few dozen MiB, with room: a decoder that allocates what an input states
/// instead of what its cap allows passes this at once.
const PEAK_LIMIT: u64 = 768 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resets the process's peak resident memory (VmHWM), so each target is
/// judged on its own peak.
fn reset_peak() {
    // Best effort: without it, each target is judged on the run's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn every_decoder_survives_mutations_of_real_objects() {
    let seconds: f64 = env_or("TIDEMARK_FUZZ_SECONDS", 6.0);
    let seed: u64 = env_or(
        "TIDEMARK_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let only = std::env::var("TIDEMARK_FUZZ_TARGET").ok();
    eprintln!("fuzz: seed {seed} (TIDEMARK_FUZZ_SEED={seed} replays), {seconds} s per target");
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut failures = Vec::new();
    for target in Target::ALL {
        if only.as_deref().is_some_and(|o| o != target.name()) {
            continue;
        }
        let corpus = seeds(target);
        assert!(!corpus.is_empty(), "{}: no seeds", target.name());
        reset_peak();
        let mut rng = Rng::new(seed ^ target as u64);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let mut execs = 0u64;
        let mut input = Vec::new();
        let mut crashed = None;
        // The seeds first: real objects must decode without a finding.
        let mut queue: Vec<Vec<u8>> = corpus.clone();
        loop {
            let next = match queue.pop() {
                Some(s) => s,
                None if Instant::now() >= deadline => break,
                None => {
                    // Stack mutations half the time, else start from a seed.
                    if input.is_empty() || rng.below(2) == 0 {
                        input = corpus[rng.below(corpus.len())].clone();
                    }
                    mutate(&mut rng, &mut input, &corpus);
                    input.clone()
                }
            };
            execs += 1;
            if catch_unwind(AssertUnwindSafe(|| run(target, &next))).is_err() {
                crashed = Some(next);
                break;
            }
        }
        let p = peak();
        eprintln!(
            "fuzz: {:<12} {execs:>7} inputs, peak memory {} MiB",
            target.name(),
            p >> 20
        );
        if let Some(input) = crashed {
            let path = out_dir.join(format!("crash-{}-{seed}.bin", target.name()));
            let _ = std::fs::write(&path, &input);
            failures.push(format!(
                "{}: a panic on an input of {} bytes, saved to {}",
                target.name(),
                input.len(),
                path.display()
            ));
        }
        if p > PEAK_LIMIT {
            failures.push(format!(
                "{}: peak memory {} MiB, past {} MiB",
                target.name(),
                p >> 20,
                PEAK_LIMIT >> 20
            ));
        }
    }
    assert!(failures.is_empty(), "findings:\n{}", failures.join("\n"));
}
