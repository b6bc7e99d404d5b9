//! The network test bed (DESIGN.md §7): a laptop and a server namespace
//! joined by an emulated WAN link (see `link.rs`), the Tidemark server in
//! one and a real backup of new data in the other, while the user's own
//! traffic is measured: a ping every 200 ms, a 100 KB web fetch about once
//! a second, one 1 MB upload, and a bulk upload.
//!
//! Both link profiles run with one unchanged Tidemark configuration (the
//! default controller plus the user's rules in `throttle.toml`), first with
//! throttling off for comparison. Gates G1-G4 of issue 5 decide the exit
//! code; the figures go to `OUT/netbed.md`, `OUT/netbed.json` and a plot
//! per profile.
//!
//! Needs root, iproute2, ping, dbus-daemon and /dev/net/tun.

mod fake_nm;
mod link;
mod ns;
mod plot;
mod probes;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use link::{Link, Profile, SRV_IP};
use ns::Netns;

pub const BACKUP_PORT: u16 = 8443;

const P1: Profile = Profile {
    name: "P1",
    up_kbit: 10_000,
    down_kbit: 10_000,
    one_way: Duration::from_millis(20),
    up_buffer: 250_000,
    down_buffer: 250_000,
};
const P2: Profile = Profile {
    name: "P2",
    up_kbit: 2_000,
    down_kbit: 10_000,
    one_way: Duration::from_millis(20),
    up_buffer: 64_000,
    down_buffer: 250_000,
};

/// The user's rules, the same for both profiles.
const RULES: &str = r#"# netbed: the user's throttle rules
[[rules]]
name = "metered connection"
when = { metered = true }
action = "pause"

[[rules]]
name = "guest Wi-Fi"
when = { network = "Guest" }
action = { limit_mbps = 1.5 }
"#;
const GUEST_CAP: f64 = 1.5e6 / 8.0;

struct Args {
    tidemark: PathBuf,
    out: PathBuf,
    data_mib: u64,
}

fn args() -> Result<Args> {
    let mut tidemark = None;
    let mut out = PathBuf::from("netbed-out");
    let mut data_mib = 300;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tidemark" => tidemark = it.next().map(PathBuf::from),
            "--out" => out = it.next().map(PathBuf::from).context("--out DIR")?,
            "--data-mib" => data_mib = it.next().context("--data-mib N")?.parse()?,
            _ => bail!("usage: netbed --tidemark PATH [--out DIR] [--data-mib N]"),
        }
    }
    Ok(Args {
        tidemark: tidemark.context("--tidemark PATH is required")?,
        out,
        data_mib,
    })
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("netbed: a gate failed (see the table above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("netbed: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool> {
    let a = args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the test bed creates network namespaces and TUN devices: run it as root");
    }
    std::fs::create_dir_all(&a.out)?;
    let work = a.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    // Two sets of new data, so the Tidemark run never skips what the
    // unthrottled run already sent (that would read as a slow backup).
    let data = work.join("data");
    make_data(&data.join("unthrottled"), a.data_mib / 4, 1)?;
    make_data(&data.join("tidemark"), a.data_mib - a.data_mib / 4, 2)?;
    let nm = fake_nm::FakeNm::start(&work)?;
    let mut results = Vec::new();
    let only = std::env::var("NETBED_PROFILES").unwrap_or_default();
    for p in [P1, P2]
        .into_iter()
        .filter(|p| only.is_empty() || only.contains(p.name))
    {
        eprintln!(
            "netbed: profile {} ({} kbit/s up, {} kbit/s down, {} ms RTT, {} B uplink buffer)",
            p.name,
            p.up_kbit,
            p.down_kbit,
            2 * p.one_way.as_millis(),
            p.up_buffer
        );
        let r = profile(&a, &work, &data, &nm, p).with_context(|| format!("profile {}", p.name))?;
        if let Err(e) = plot::write(
            &a.out.join(format!("netbed-{}.png", p.name.to_lowercase())),
            &r,
        ) {
            eprintln!("netbed: no plot: {e:#}");
        }
        results.push(r);
    }
    let (table, ok) = report(&results);
    println!("{table}");
    std::fs::write(a.out.join("netbed.md"), &table)?;
    std::fs::write(
        a.out.join("netbed.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(ok)
}

/// Incompressible new data, so every byte crosses the link.
fn make_data(dir: &Path, mib: u64, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut buf = vec![0u8; 1 << 20];
    for f in 0..mib.div_ceil(8) {
        let mut file = std::fs::File::create(dir.join(format!("file-{f:03}.bin")))?;
        for _ in 0..8 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            file.write_all(&buf)?;
        }
    }
    Ok(())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tidemark(a: &Args, ns: &Netns, home: &Path, bus: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name])
        .arg(&a.tidemark)
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .env("TIDEMARK_DEVICE_SECRET_FILE", home.join("device.secret"))
        .env_remove("TIDEMARK_THROTTLE")
        .env_remove("TIDEMARK_REPO");
    c
}

#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub ping_p50: f64,
    pub ping_p95: f64,
    pub get_p95: f64,
    pub upload_1mb: f64,
    /// Backup bytes/s on the wire with no foreground traffic.
    pub backup_rate: f64,
}

impl Figures {
    /// Ping and GET percentiles over the window `(from, to)` of bed time.
    fn of(
        pings: &probes::Samples,
        gets: &probes::Samples,
        (from, to): (f64, f64),
        upload_1mb: f64,
        backup_rate: f64,
    ) -> Figures {
        let ping = window(pings, from, to);
        Figures {
            ping_p50: pct(&ping, 0.5),
            ping_p95: pct(&ping, 0.95),
            get_p95: pct(&window(gets, from, to), 0.95),
            upload_1mb,
            backup_rate,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ProfileResult {
    pub profile: String,
    pub up_kbit: u32,
    pub idle: Figures,
    pub unthrottled: Figures,
    pub tidemark: Figures,
    /// Seconds until the backup falls below 20% of its rate after a bulk
    /// foreground upload starts, and until it is back above 80% after it ends.
    pub give_way_s: Option<f64>,
    pub take_back_s: Option<f64>,
    pub metered_stop_s: Option<f64>,
    pub metered_resume_s: Option<f64>,
    /// Backup rate under the guest-network cap, bytes/s.
    pub guest_rate: f64,
    #[serde(skip)]
    pub pings: Vec<(f64, f64)>,
    #[serde(skip)]
    pub wire: Vec<(f64, f64, f64)>,
    #[serde(skip)]
    pub marks: Vec<(f64, String)>,
}

fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(((v.len() - 1) as f64) * q).round() as usize]
}

fn window(s: &probes::Samples, from: f64, to: f64) -> Vec<f64> {
    s.lock()
        .map(|v| {
            v.iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .map(|(_, x)| *x)
                .collect()
        })
        .unwrap_or_default()
}

fn sleep_until(link: &Link, t: f64) {
    let now = link.now();
    if t > now {
        std::thread::sleep(Duration::from_secs_f64(t - now));
    }
}

fn profile(
    a: &Args,
    work: &Path,
    data: &Path,
    nm: &fake_nm::FakeNm,
    p: Profile,
) -> Result<ProfileResult> {
    nm.set(|s| {
        s.metered = false;
        s.network = "Office".into();
    });
    let lap = Netns::create("tmk-lap")?;
    let router = Netns::create("tmk-router")?;
    let srv = Netns::create("tmk-srv")?;
    let link = Link::build(&lap, &router, &srv, p)?;
    probes::serve(&srv)?;
    let dir = work.join(p.name);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".config/tidemark"))?;
    std::fs::write(home.join(".config/tidemark/throttle.toml"), RULES)?;

    // The server, and this laptop enrolled on it.
    let mut server = Proc(
        tidemark(
            a,
            &srv,
            &dir,
            &nm.address,
            &[
                "--json",
                "server",
                "--data",
                &dir.join("server").to_string_lossy(),
                "--listen",
                &format!("{SRV_IP}:{BACKUP_PORT}"),
                "--kdf-memory",
                "256",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the Tidemark server")?,
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().context("server stdout")?).read_line(&mut line)?;
    let ready: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("server said {line:?}"))?;
    let url = ready["listening"]
        .as_str()
        .context("where the server listens")?
        .to_string();
    let code = ready["admin_code"]
        .as_str()
        .context("admin code")?
        .to_string();
    let fp = ready["fingerprint"]
        .as_str()
        .context("fingerprint")?
        .to_string();
    let st = tidemark(
        a,
        &lap,
        &home,
        &nm.address,
        &["--json", "enroll", &url, &code, "--fingerprint", &fp],
    )
    .output()?;
    if !st.status.success() {
        bail!("enrolment failed: {}", String::from_utf8_lossy(&st.stderr));
    }
    let backup = |throttle: &str| -> Result<Proc> {
        let what = data.join(if throttle == "off" {
            "unthrottled"
        } else {
            "tidemark"
        });
        Ok(Proc(
            tidemark(
                a,
                &lap,
                &home,
                &nm.address,
                &[
                    "--quiet",
                    "--throttle",
                    throttle,
                    "backup",
                    "--repo",
                    &url,
                    &what.to_string_lossy(),
                ],
            )
            .env(
                "TIDEMARK_THROTTLE_TRACE",
                a.out.join(format!("trace-{}-{throttle}.csv", p.name)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
        ))
    };

    let pings: probes::Samples = Arc::default();
    let gets: probes::Samples = Arc::default();
    let web_on = Arc::new(AtomicBool::new(false));
    let start_unix = probes::unix_now() - link.now();
    let _pinger = probes::Pinger::start(&lap, start_unix, Arc::clone(&pings))?;
    let _web = probes::web_loop(&lap, link.start, Arc::clone(&web_on), Arc::clone(&gets));
    let mut r = ProfileResult {
        profile: p.name.into(),
        up_kbit: p.up_kbit,
        ..Default::default()
    };
    let mark = |r: &mut ProfileResult, t: f64, s: &str| r.marks.push((t, s.to_string()));
    let upload_1mb = |lap: &Netns| {
        lap.run(|| probes::upload(1_000_000, None))
            .map(|d| d.as_secs_f64())
    };

    // Idle: the link as the user knows it.
    let t0 = link.now() + 1.0;
    mark(&mut r, t0, "idle");
    web_on.store(true, Ordering::Relaxed);
    sleep_until(&link, t0 + 12.0);
    web_on.store(false, Ordering::Relaxed);
    let mut up = [upload_1mb(&lap)?, upload_1mb(&lap)?];
    up.sort_by(f64::total_cmp);
    r.idle = Figures::of(&pings, &gets, (t0, t0 + 12.0), up[0], 0.0);

    // Unthrottled: what a backup without Tidemark's controller does.
    let t1 = link.now() + 0.5;
    mark(&mut r, t1, "unthrottled");
    {
        let _b = backup("off")?;
        sleep_until(&link, t1 + 6.0);
        let cap_from = link.now();
        sleep_until(&link, t1 + 12.0);
        let backup_rate = link.rate(Some(BACKUP_PORT), cap_from, link.now());
        web_on.store(true, Ordering::Relaxed);
        let w = link.now();
        sleep_until(&link, t1 + 24.0);
        web_on.store(false, Ordering::Relaxed);
        let w2 = link.now();
        let u = upload_1mb(&lap)?;
        r.unthrottled = Figures::of(&pings, &gets, (w, w2), u, backup_rate);
    }
    // Let the unthrottled flow's queue drain before measuring anew.
    std::thread::sleep(Duration::from_secs(2));

    // Tidemark, default configuration.
    let t2 = link.now();
    mark(&mut r, t2, "tidemark");
    let _b = backup("auto")?;
    sleep_until(&link, t2 + 10.0);
    let g4_from = link.now();
    sleep_until(&link, t2 + 18.0);
    let backup_rate = link.rate(Some(BACKUP_PORT), g4_from, link.now());
    web_on.store(true, Ordering::Relaxed);
    let w = link.now();
    sleep_until(&link, t2 + 38.0);
    web_on.store(false, Ordering::Relaxed);
    let w2 = link.now();
    mark(&mut r, w2, "1 MB up");
    let u = upload_1mb(&lap)?;
    r.tidemark = Figures::of(&pings, &gets, (w, w2), u, backup_rate);

    // A bulk foreground upload: how fast the backup gives way and comes back.
    sleep_until(&link, link.now() + 4.0);
    let before = link.rate(Some(BACKUP_PORT), link.now() - 3.0, link.now());
    let b0 = link.now();
    mark(&mut r, b0, "bulk");
    lap.run(|| probes::upload(0, Some(Duration::from_secs(8))))?;
    let b1 = link.now();
    sleep_until(&link, b1 + 8.0);
    r.give_way_s = first_time(&link, b0, b1, |rate| rate < 0.2 * before).map(|t| t - b0);
    r.take_back_s = first_time(&link, b1, link.now(), |rate| rate > 0.8 * before).map(|t| t - b1);

    // Metered on: uploads stop; off: they resume.
    let before = link.rate(Some(BACKUP_PORT), link.now() - 3.0, link.now());
    let m0 = link.now();
    mark(&mut r, m0, "metered");
    nm.set(|s| s.metered = true);
    sleep_until(&link, m0 + 6.0);
    let m1 = link.now();
    mark(&mut r, m1, "unmetered");
    nm.set(|s| s.metered = false);
    sleep_until(&link, m1 + 6.0);
    r.metered_stop_s = first_time(&link, m0, m1, |rate| rate < 0.02 * before).map(|t| t - m0);
    r.metered_resume_s =
        first_time(&link, m1, link.now(), |rate| rate > 0.5 * before).map(|t| t - m1);

    // The guest network: a cap of 1.5 Mbit/s.
    let g0 = link.now();
    mark(&mut r, g0, "guest");
    nm.set(|s| s.network = "Guest".into());
    sleep_until(&link, g0 + 12.0);
    r.guest_rate = link.rate(Some(BACKUP_PORT), g0 + 4.0, link.now());
    nm.set(|s| s.network = "Office".into());

    r.pings = pings.lock().map(|v| v.clone()).unwrap_or_default();
    // Every packet towards the server, for anyone tuning the controller.
    if let Ok(up) = link.up.lock() {
        let mut csv = String::from("unix_time,bytes,dst_port\n");
        for s in up.iter() {
            csv += &format!("{:.6},{},{}\n", start_unix + s.at, s.len, s.dst_port);
        }
        std::fs::write(a.out.join(format!("wire-{}.csv", p.name)), csv)?;
    }
    // Each ping and web fetch, to match a slow one against the trace.
    // Pings are kept in milliseconds, fetches in seconds.
    let mut csv = String::from("unix_time,kind,ms\n");
    for (kind, s, to_ms) in [("ping", &pings, 1.0), ("get", &gets, 1e3)] {
        if let Ok(v) = s.lock() {
            for (t, x) in v.iter() {
                csv += &format!("{:.3},{kind},{:.1}\n", start_unix + t, x * to_ms);
            }
        }
    }
    std::fs::write(a.out.join(format!("probes-{}.csv", p.name)), csv)?;
    let end = link.now();
    let mut t = 0.0;
    while t < end {
        r.wire.push((
            t,
            link.rate(Some(BACKUP_PORT), t, t + 0.5),
            link.rate(None, t, t + 0.5),
        ));
        t += 0.5;
    }
    drop(_b);
    drop(server);
    Ok(r)
}

/// The first time in [from, to) where the backup's rate over the next half
/// second satisfies `ok`, in 100 ms steps.
fn first_time(link: &Link, from: f64, to: f64, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let mut t = from;
    while t < to {
        if ok(link.rate(Some(BACKUP_PORT), t, t + 0.5)) {
            return Some(t);
        }
        t += 0.1;
    }
    None
}

fn report(results: &[ProfileResult]) -> (String, bool) {
    let mut ok = true;
    let mut s = String::new();
    let mbit = |b: f64| b * 8.0 / 1e6;
    let opt = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.1} s"));
    for r in results {
        let i = &r.idle;
        let (u, t) = (&r.unthrottled, &r.tidemark);
        let gates = [
            (
                "G1 ping p50 ≤ idle p50 + 10 ms",
                t.ping_p50 <= i.ping_p50 + 10.0,
                format!("{:.1} ms (limit {:.1})", t.ping_p50, i.ping_p50 + 10.0),
            ),
            (
                "G1 ping p95 ≤ idle p50 + 25 ms",
                t.ping_p95 <= i.ping_p50 + 25.0,
                format!("{:.1} ms (limit {:.1})", t.ping_p95, i.ping_p50 + 25.0),
            ),
            (
                "G2 100 KB GET p95 ≤ 1.5 × idle",
                t.get_p95 <= 1.5 * i.get_p95,
                format!(
                    "{:.0} ms (limit {:.0})",
                    t.get_p95 * 1e3,
                    1.5 * i.get_p95 * 1e3
                ),
            ),
            (
                "G3 1 MB upload ≤ 1.5 × idle",
                t.upload_1mb <= 1.5 * i.upload_1mb,
                format!("{:.2} s (limit {:.2})", t.upload_1mb, 1.5 * i.upload_1mb),
            ),
            (
                "G4 backup ≥ 80% of capacity",
                t.backup_rate >= 0.8 * u.backup_rate,
                format!(
                    "{:.2} Mbit/s = {:.0}% of {:.2}",
                    mbit(t.backup_rate),
                    100.0 * t.backup_rate / u.backup_rate,
                    mbit(u.backup_rate)
                ),
            ),
            (
                "metered: stops within 2 s",
                r.metered_stop_s.is_some_and(|x| x <= 2.0),
                opt(r.metered_stop_s),
            ),
            (
                "guest cap 1.5 Mbit/s within 10%",
                (mbit(r.guest_rate) / 1.5 - 1.0).abs() <= 0.10 || (r.up_kbit as f64 / 1000.0) < 1.5,
                format!("{:.2} Mbit/s", mbit(r.guest_rate)),
            ),
        ];
        s += &format!(
            "\n### {} — {} kbit/s up, 40 ms RTT\n\n",
            r.profile, r.up_kbit
        );
        s += "| | idle | unthrottled backup | Tidemark backup |\n|---|---|---|---|\n";
        s += &format!(
            "| ping p50 / p95 (ms) | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |\n",
            i.ping_p50, i.ping_p95, u.ping_p50, u.ping_p95, t.ping_p50, t.ping_p95
        );
        s += &format!(
            "| 100 KB GET p95 (ms) | {:.0} | {:.0} | {:.0} |\n",
            i.get_p95 * 1e3,
            u.get_p95 * 1e3,
            t.get_p95 * 1e3
        );
        s += &format!(
            "| 1 MB upload (s) | {:.2} | {:.2} | {:.2} |\n",
            i.upload_1mb, u.upload_1mb, t.upload_1mb
        );
        s += &format!(
            "| backup rate, no foreground (Mbit/s) | – | {:.2} | {:.2} |\n\n",
            mbit(u.backup_rate),
            mbit(t.backup_rate)
        );
        s += &format!("Bulk foreground upload: the backup gives way in {}, takes the link back in {} after it ends. Metered on: uploads stop in {}; off: resume in {}.\n\n",
            opt(r.give_way_s), opt(r.take_back_s), opt(r.metered_stop_s), opt(r.metered_resume_s));
        s += "| gate | result | |\n|---|---|---|\n";
        for (name, pass, fig) in gates {
            ok &= pass;
            s += &format!(
                "| {name} | {fig} | {} |\n",
                if pass { "pass" } else { "**FAIL**" }
            );
        }
    }
    let _ = GUEST_CAP;
    (s, ok)
}
