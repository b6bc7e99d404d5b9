//! Test tooling, not a product binary: writes and rewrites objects into a
//! local folder repository until it is killed. The storage tests `kill -9`
//! it at random moments and then check that no partial object is visible.

use std::time::{Duration, Instant};
use storage::{conformance, LocalStorage, Storage};

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: storage-crash-writer DIR");
        std::process::exit(2);
    };
    let s = match LocalStorage::new(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    for i in 0..10_000u64 {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        // Rewrites of earlier keys too: a kill during a replace must leave
        // the old or the new object, never a mix.
        let puts = [
            (format!("objects/{:02}/{i}", i % 13), crash_object(i)),
            ("objects/replaced".to_string(), crash_object(i % 2)),
        ];
        for (key, data) in puts {
            if let Err(e) = s.put(&key, &data) {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
}

/// Must match `crash_object` in tests/backends/local.rs.
fn crash_object(i: u64) -> Vec<u8> {
    conformance::pattern(i, 1_500_000 + (i as usize % 7) * 100_003)
}
