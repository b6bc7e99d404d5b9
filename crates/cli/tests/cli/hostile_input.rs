//! The company server against a stolen device: one that holds a real token
//! and the organisation's keys, so whatever it forges decrypts and
//! authenticates. Here it commits decompression bombs; the server must
//! refuse each with a JSON error, stay within a bounded memory, and keep
//! serving.

use super::server::start;
use super::support::{tidemark, workdir};
use std::path::Path;

/// The bombs sent at once.
const BOMBS: usize = 16;
/// What each decompresses to: 1 GiB of zeros.
const BOMB_BYTES: u64 = 1 << 30;
/// The server's peak resident memory must stay under this with every bomb
/// in flight (before the limits, 8 bombs took it to 4.9 GB).
const PEAK_LIMIT: u64 = 512 << 20;

/// A zstd frame of `n` zero bytes built by hand: a frame header and RLE
/// blocks of 128 KiB, four bytes each, so 1 GiB is ~32 KiB on the wire.
/// With `declared` the header states the content size (as every frame
/// Tidemark writes does); without it, a reader learns the size only by
/// decompressing.
fn zstd_bomb(n: u64, declared: bool) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Frame header descriptor: a 4-byte content size (or none), no
    // single segment, no checksum, no dictionary; then a window
    // descriptor for a 128 KiB window (log 17 = 10 + 7).
    f.push(if declared { 0x80 } else { 0x00 });
    f.push(7 << 3);
    if declared {
        f.extend_from_slice(&u32::try_from(n).expect("under 4 GiB").to_le_bytes());
    }
    let mut left = n;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        let last = u32::from(left == 0);
        // Block header: last-block bit, type 1 (RLE), then the size.
        let header = (size as u32) << 3 | 1 << 1 | last;
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

/// Peak and current resident memory of a process, in bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn secret_of(dir: &Path) -> (String, crypto::MasterKeys) {
    let text = std::fs::read_to_string(dir.join("device.secret")).expect("device secret");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json secret");
    let token = v["token"].as_str().expect("token").to_string();
    let keys = crypto::MasterKeys::from_hex(v["keys"].as_str().expect("keys")).expect("keys");
    (token, keys)
}

#[test]
fn sixteen_concurrent_snapshot_bombs_are_refused_in_bounded_memory() {
    let work = workdir();
    let data = work.path().join("server");
    let s = start(work.path(), &data, &[]);
    let url = s.url();
    let pid = s.child.id();

    // A device enrolled the ordinary way; its token and the organisation's
    // keys are what a thief copies off it.
    let dev_dir = work.path().join("stolen");
    std::fs::create_dir_all(&dev_dir).expect("mkdir");
    let dev = tidemark(&dev_dir)
        .with_repo(&url)
        .with_env("TIDEMARK_DEVICE_SECRET_FILE", dev_dir.join("device.secret"));
    dev.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("admin code"),
    ]);
    let (token, keys) = secret_of(&dev_dir);

    let bombs: Vec<Vec<u8>> = [true, false]
        .iter()
        .map(|&declared| {
            // Sealed as the repository seals a snapshot object.
            keys.data
                .seal(&zstd_bomb(BOMB_BYTES, declared), b"tidemark snapshot v1")
        })
        .collect();
    for b in &bombs {
        assert!(b.len() < 40 << 10, "a bomb of {} bytes", b.len());
    }
    let (before, _) = memory_of(pid);

    client::install_crypto_provider();
    let http = reqwest::blocking::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("http client");
    let barrier = std::sync::Barrier::new(BOMBS);
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..BOMBS)
            .map(|i| {
                let (http, url, token, barrier) = (&http, &url, &token, &barrier);
                let body = bombs[i % 2].clone();
                scope.spawn(move || {
                    barrier.wait();
                    let r = http
                        .post(format!("{url}/v1/snapshots"))
                        .bearer_auth(token)
                        .body(body)
                        .send()
                        .expect("the server answers a bomb");
                    (r.status().as_u16(), r.text().unwrap_or_default())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("bomb thread"))
            .collect()
    });
    let (peak, now) = memory_of(pid);
    eprintln!(
        "server memory: {} MiB before, peak {} MiB, {} MiB after {BOMBS} bombs",
        before >> 20,
        peak >> 20,
        now >> 20
    );

    for (status, body) in &answers {
        assert!(
            (400..500).contains(status),
            "a bomb answered {status}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("a bomb's answer is not JSON ({e}): {body}"));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("decompresses past its 16 MiB limit"),
            "a bomb refused for another reason: {msg}"
        );
    }
    assert!(
        peak < PEAK_LIMIT,
        "the server's peak memory reached {} MiB under {BOMBS} bombs (limit {} MiB)",
        peak >> 20,
        PEAK_LIMIT >> 20
    );

    // Still serving: the same device is answered normally.
    let r = http
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .expect("whoami after the bombs");
    assert!(r.status().is_success(), "whoami answered {}", r.status());
    let listed = dev.json(&["snapshots"]);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a bomb was committed: {listed}"
    );
}
