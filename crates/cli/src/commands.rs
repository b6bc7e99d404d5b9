//! One function per subcommand: open what it needs, call the engine,
//! render. Each stays short; anything longer belongs in a library crate.

use crate::args::{
    AdminCommand, BackupArgs, Cli, Command, ConflictArg, FindArgs, ForgetArgs, Global, KeyCommand,
    KindArg, WatchArgs,
};
use crate::password;
use crate::progress::{Bar, BACKUP_TEMPLATE, RESTORE_TEMPLATE};
use crate::shown::{shown, shown_path};
use agent::device;
use anyhow::{bail, Context, Result};
use crypto::{Id, KdfParams};
use repository::{InitOptions, OpenOptions, Repository, VerifyOptions};
use snapshot::{Conflict, Excludes, TreeLoader};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    setup_throttle(g);
    match cli.command {
        Command::Init {
            if_missing,
            kdf_memory,
            pack_size_mib,
        } => init(g, if_missing, kdf_memory, pack_size_mib),
        Command::Backup(a) => backup(g, a),
        Command::Watch(a) => watch(g, a),
        Command::Agent { once, .. } => agent_cmd(g, once),
        Command::Update { check } => update_cmd(g, check),
        Command::Enroll {
            url,
            code,
            device_name,
            fingerprint,
        } => {
            let name = device_name.unwrap_or_else(hostname);
            let v = to_json(&device::enroll(&paths()?, &url, &code, &name, fingerprint)?);
            emit(g, &v, || {
                format!(
                    "enrolled as {} (device {}) with {}\n  server certificate fingerprint (SHA-256): {}\n  compare it with the one your administrator's server printed\n  the device token is stored in {}\n  back up with: tidemark --repo {} backup PATH",
                    v["user"].as_str().unwrap_or(""),
                    v["device_id"],
                    url,
                    v["fingerprint"].as_str().unwrap_or("(plain HTTP test server)"),
                    v["secret_stored_in"].as_str().unwrap_or(""),
                    url
                )
            });
            Ok(0)
        }
        Command::Admin { command } => admin(g, command),
        Command::Server {
            data,
            listen,
            cert,
            key,
            insecure_http,
            kdf_memory,
            downloads,
        } => server_cmd(
            g,
            &data,
            listen,
            cert.zip(key),
            insecure_http,
            kdf_memory,
            downloads.as_deref(),
        ),
        Command::Snapshots { host } => snapshots(g, host),
        Command::Ls {
            snapshot,
            path,
            flat,
            host,
        } => ls(g, &snapshot, path.as_deref(), flat, host),
        Command::Find(a) => find(g, a),
        Command::Versions { path, host } => versions(g, &path, host),
        Command::Catalog { rebuild } => catalog(g, rebuild),
        Command::Diff { first, second } => diff(g, &first, &second),
        Command::Restore {
            what,
            target,
            conflict,
            host,
            owners,
        } => restore(g, &what, target, conflict, host, owners),
        Command::Cat { what, host } => cat(g, &what, host),
        Command::Verify { read_data, subset } => verify(g, read_data, subset),
        Command::Forget(a) => forget(g, a),
        Command::Prune {
            dry_run,
            max_unused,
        } => prune(g, dry_run, max_unused),
        Command::Key { command } => key(g, command),
        Command::Stats => stats(g),
        Command::Status => status(g),
        Command::Unlock { all } => {
            let repo = open(g)?;
            let n = repo.unlock_stale(all)?;
            emit(g, &serde_json::json!({ "removed": n }), || {
                format!("removed {n} lock(s)")
            });
            Ok(0)
        }
    }
}

fn paths() -> Result<agent::Paths> {
    Ok(agent::Paths::for_user()?)
}

fn location(g: &Global) -> Result<String> {
    if let Some(r) = &g.repo {
        return Ok(r.clone());
    }
    Ok(paths()?.default_repository().to_string_lossy().into_owned())
}

fn open_options(g: &Global) -> OpenOptions {
    let cache_dir = g.cache_dir.clone().or_else(|| {
        directories::ProjectDirs::from("org", "Tidemark", "tidemark")
            .map(|d| d.cache_dir().to_path_buf())
    });
    OpenOptions { cache_dir }
}

fn open(g: &Global) -> Result<Repository> {
    let loc = location(g)?;
    if device::is_server(&loc) {
        return Ok(agent::open::with_catalog(device::open_repository(
            &paths()?,
            &loc,
            &open_options(g),
            g.as_user.clone(),
        )?));
    }
    if g.as_user.is_some() {
        bail!("--as-user is for company servers (--repo https://…)");
    }
    let storage = agent::open::open_storage(&loc)?;
    let pw = password::existing(g.password_file.as_deref(), &storage.location())?;
    let repo = Repository::open(storage, &pw, &open_options(g))?;
    Ok(agent::open::with_catalog(repo))
}

fn hostname() -> String {
    repository::hostname()
}

fn username() -> String {
    agent::username()
}

/// Prints JSON or the human text, depending on `--json`.
fn emit(g: &Global, json: &serde_json::Value, text: impl FnOnce() -> String) {
    if g.json {
        println!("{json}");
    } else if !g.quiet {
        println!("{}", text());
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn init(
    g: &Global,
    if_missing: bool,
    kdf_memory: Option<u32>,
    pack_size_mib: Option<u32>,
) -> Result<i32> {
    let loc = location(g)?;
    if device::is_server(&loc) {
        bail!("a company server's repository is made by the server; enrol this device with `tidemark enroll {loc} CODE`");
    }
    let storage = agent::open::open_storage(&loc)?;
    let shown = storage.location();
    if if_missing && storage.size(format::layout::CONFIG)?.is_some() {
        emit(
            g,
            &serde_json::json!({ "location": shown, "created": false }),
            || format!("repository at {shown} already exists"),
        );
        return Ok(0);
    }
    let pw = password::new(
        g.password_file.as_deref(),
        "TIDEMARK_PASSWORD_FILE",
        "TIDEMARK_PASSWORD",
        "repository password",
    )?;
    let mut opts = InitOptions {
        hostname: hostname(),
        username: username(),
        ..Default::default()
    };
    if let Some(m) = kdf_memory {
        opts.kdf = KdfParams {
            m_cost: m.max(8),
            ..opts.kdf
        };
    }
    if let Some(p) = pack_size_mib {
        opts.pack_size = p.clamp(1, 512) * 1024 * 1024;
    }
    let repo = Repository::init(storage, &pw, &opts, &open_options(g))?;
    let interactive = g.password_file.is_none()
        && std::env::var_os("TIDEMARK_PASSWORD").is_none()
        && std::env::var_os("TIDEMARK_PASSWORD_FILE").is_none();
    let keyring = if interactive {
        Some(password::remember(&shown, &pw))
    } else {
        None
    };
    emit(
        g,
        &serde_json::json!({ "location": shown, "created": true, "id": repo.config().id, "password_in_keyring": matches!(keyring, Some(Ok(()))) }),
        || {
            let mut s = format!(
                "created repository {} at {shown}",
                &repo.config().id.to_hex()[..8]
            );
            match keyring {
                Some(Ok(())) => s.push_str(&format!("\nthe password is saved in {}", agent::secrets::IN_KEYRING)),
                Some(Err(e)) => s.push_str(&format!("\nthe password was not saved ({e}); you will be asked for it, or keep it in a file only you can read and set TIDEMARK_PASSWORD_FILE")),
                None => {}
            }
            s
        },
    );
    Ok(0)
}

/// The exclude patterns given on the command line and in exclude files.
fn exclude_patterns(a: &BackupArgs) -> Result<Vec<String>> {
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read exclude file {}", f.display()))?;
        patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(patterns)
}

fn update_cmd(g: &Global, check_only: bool) -> Result<i32> {
    use agent::update;
    let paths = agent::Paths::for_user()?;
    let config = agent::Config::load(&paths.config_file())?;
    let Some(offer) = update::check(&paths, &config, update::VERSION)? else {
        emit(
            g,
            &serde_json::json!({ "current": update::VERSION, "offered": null }),
            || format!("Tidemark {} is up to date", update::VERSION),
        );
        return Ok(0);
    };
    if check_only {
        emit(
            g,
            &serde_json::json!({ "current": update::VERSION, "offered": offer.version }),
            || {
                format!(
                    "Tidemark {} is offered (this is {})",
                    offer.version,
                    update::VERSION
                )
            },
        );
        return Ok(0);
    }
    let dir = update::per_user_bin_dir().ok_or_else(|| {
        anyhow::anyhow!(
            "this Tidemark was installed system-wide: update it with your package manager"
        )
    })?;
    let replaced = update::install(&paths, &config, false, &offer, &dir)?;
    emit(
        g,
        &serde_json::json!({ "current": update::VERSION, "installed": offer.version, "replaced": replaced }),
        || {
            format!(
                "installed Tidemark {} ({}); it runs from the next start",
                offer.version,
                replaced.join(", ")
            )
        },
    );
    Ok(0)
}

fn agent_cmd(g: &Global, once: bool) -> Result<i32> {
    use agent::Event;
    let paths = agent::Paths::for_user()?;
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let tx = std::sync::Mutex::new(tx);
    let a = agent::Agent::start(
        paths,
        Arc::new(move |e| {
            let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(e);
        }),
    )?;
    if let Some(server) = a.enrol_from_file()? {
        if !g.quiet {
            eprintln!("enrolled with {server}; the first backup starts now");
        }
    }
    if a.config().destination.is_none() {
        bail!("Tidemark is not set up on this account: install it from your company's download page, or run the desktop app's setup");
    }
    let mut updated: Option<String> = None;
    for e in rx {
        if g.json {
            println!("{}", to_json(&e));
        }
        match &e {
            Event::UpdateInstalled { version, .. } => updated = Some(version.clone()),
            Event::BackupFinished { done } => {
                if !g.json && !g.quiet {
                    println!(
                        "{}  backed up {} file(s), {} added",
                        local_time(done.time),
                        done.files,
                        human_bytes(done.bytes_added)
                    );
                }
                if once {
                    return Ok(0);
                }
            }
            Event::BackupFailed { message, .. } => {
                eprintln!("backup failed: {}", shown(message));
                if once {
                    return Ok(1);
                }
            }
            _ => {}
        }
        // Into the update at the first quiet moment (not with --once, which
        // ends after its backup anyway).
        if let Some(v) = updated.as_ref().filter(|_| !once && !a.busy()) {
            if !g.quiet {
                eprintln!("updated to {v}; restarting into it");
            }
            return Err(agent::update::restart(&[]).into());
        }
    }
    Ok(0)
}

fn watch(g: &Global, a: WatchArgs) -> Result<i32> {
    use agent::continuous::{Plan, Protection};
    use std::time::{Duration, Instant};
    let repo = Arc::new(open(g)?);
    let b = &a.backup;
    let excludes = Excludes::new(&exclude_patterns(b)?, b.exclude_caches)?;
    let paths: Vec<PathBuf> = b
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("{}", p.display())))
        .collect::<Result<_>>()?;
    // Watching starts before the first walk, so that walk is the baseline
    // every later change is relative to.
    let watching = Protection::start(
        &paths,
        &excludes,
        Duration::from_secs(a.full_scan_hours.max(1) * 3600),
        Some((
            Duration::from_millis(a.quiet_ms),
            Duration::from_millis(a.max_delay_ms.max(a.quiet_ms)),
        )),
    )?;
    if !g.quiet && !g.json {
        eprintln!("watching {} folder(s); Ctrl-C stops", paths.len());
    }
    let mut made = 0u64;
    let mut failures = 0u32;
    while a.count.is_none_or(|n| made < n) {
        if !watching.due() {
            watching.wait(Duration::from_secs(1));
            continue;
        }
        let plan = watching.plan(failures > 0);
        let mut opts = snapshot::BackupOptions {
            paths: paths.clone(),
            excludes: excludes.clone(),
            one_file_system: b.one_file_system,
            hostname: b.host.clone().unwrap_or_else(hostname),
            username: username(),
            tags: b.tags.clone(),
            ..Default::default()
        };
        plan.apply(&mut opts);
        let (kind, dirs, rescan) = match &plan {
            Plan::Full => ("full", 0, 0),
            Plan::Changes { changes, .. } => ("changes", changes.dirs.len(), changes.rescan.len()),
        };
        let started = Instant::now();
        let began = chrono::Utc::now();
        match agent::jobs::backup(&repo, &opts, &snapshot::NoProgress) {
            Ok(r) => {
                watching.finished(plan, started, Some(r.id));
                failures = 0;
                made += 1;
                let s = &r.snapshot.summary;
                if g.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "snapshot": r.id.to_hex(),
                            "kind": kind,
                            "started": began,
                            "committed": r.snapshot.time,
                            "dirs": dirs,
                            "rescan": rescan,
                            "files_read": s.files_new + s.files_changed,
                            "total_files": s.total_files,
                            "duration_ms": s.duration_ms,
                            "errors": r.errors.len(),
                        })
                    );
                } else if !g.quiet {
                    println!(
                        "{}  {}  {:<7}  {} folder(s) changed, {} file(s) read, {} in all, {:.1} s",
                        local_time(r.snapshot.time),
                        &r.id.to_hex()[..8],
                        kind,
                        dirs + rescan,
                        s.files_new + s.files_changed,
                        s.total_files,
                        s.duration_ms as f64 / 1000.0
                    );
                }
                for e in &r.errors {
                    eprintln!("warning: {}: {}", shown_path(&e.path), shown(&e.message));
                }
            }
            Err(e) => {
                watching.finished(plan, started, None);
                failures += 1;
                let wait = Duration::from_secs(5u64 << failures.min(6));
                eprintln!(
                    "backup failed: {}; trying again in {} s",
                    shown(&e.to_string()),
                    wait.as_secs()
                );
                std::thread::sleep(wait);
            }
        }
    }
    Ok(0)
}

fn backup(g: &Global, a: BackupArgs) -> Result<i32> {
    let patterns = exclude_patterns(&a)?;
    let excludes = Excludes::new(&patterns, a.exclude_caches)?;
    let paths: Vec<PathBuf> = a
        .paths
        .iter()
        .filter_map(|p| std::path::absolute(p).ok())
        .collect();
    let bar = Bar::new(!g.json && !g.quiet, BACKUP_TEMPLATE);
    let host = a.host.clone().unwrap_or_else(hostname);
    // What changed since the last backup is found without the key (see
    // snapshot's `changes`): the scan runs while Argon2id unwraps it, and
    // the backup then lists only the folders the scan names. The scan also
    // counts the bar's total.
    let states_dir = open_options(g).cache_dir.map(|d| d.join("folder-states"));
    let scope = snapshot::scope_of(
        &location(g)?,
        &paths,
        &patterns,
        a.exclude_caches,
        a.one_file_system,
        &host,
    );
    let known = match &states_dir {
        Some(dir) if !a.force => snapshot::FolderStates::load(dir, &scope),
        _ => snapshot::FolderStates::default(),
    };
    // Nothing known (a first backup, --force): the backup walks every
    // folder and digests each as it lists it, so it need not wait for a
    // scan of the whole tree (0.2 s of a 3.6 s first backup of the bench
    // set); the scan then only counts the bar's total, and does not run
    // without a bar.
    let walk_all = known.snapshot.is_none();
    let opened = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let counted = AtomicU64::new(0);
    let report = std::thread::scope(|s| {
        let scan = (!walk_all || bar.is_shown()).then(|| {
            s.spawn(|| {
                snapshot::scan_changes(
                    &paths,
                    &excludes,
                    a.one_file_system,
                    &known,
                    &stop,
                    &|_, bytes| {
                        counted.store(bytes, Ordering::Relaxed);
                        if opened.load(Ordering::Relaxed) {
                            bar.set_total(bytes);
                        }
                    },
                )
            })
        });
        let run = || -> Result<(snapshot::BackupReport, Option<snapshot::ChangeScan>)> {
            let repo = Arc::new(open(g)?);
            opened.store(true, Ordering::Relaxed);
            bar.set_total(counted.load(Ordering::Relaxed));
            let parent = match a.parent.as_deref() {
                Some(p) => Some(repo.find_snapshot(p)?),
                None => snapshot::default_parent(&repo, &host, &paths)?,
            };
            // Otherwise the backup may read nothing before the scan has
            // seen it all: the digests it saves must be no newer than what
            // it stores.
            let scanned = match scan {
                Some(scan) if !walk_all => scan.join().ok().flatten(),
                _ => None,
            };
            let changed = match (&scanned, parent) {
                (Some(sc), Some(p)) if known.snapshot == Some(p) => {
                    Some(snapshot::ChangedFolders {
                        dirs: sc.changed.clone(),
                        rescan: Default::default(),
                    })
                }
                _ => None,
            };
            let opts = snapshot::BackupOptions {
                paths: a.paths.clone(),
                excludes: excludes.clone(),
                one_file_system: a.one_file_system,
                hostname: host.clone(),
                username: username(),
                tags: a.tags.clone(),
                parent,
                force: a.force,
                upload: Default::default(),
                cancel: None,
                changed,
                folder_states: walk_all,
            };
            Ok((agent::jobs::backup(&repo, &opts, &bar)?, scanned))
        };
        let r = run();
        // A failed open must not wait for the scan of a large tree, nor a
        // finished backup for the count of its total.
        stop.store(true, Ordering::Relaxed);
        r
    });
    let report = report.map(|(mut r, scanned)| {
        let states = match (r.folder_states.take(), scanned) {
            (Some(walked), _) => Some(walked),
            (None, Some(sc)) => {
                let mut states = sc.states;
                states.snapshot = Some(r.id);
                Some(states)
            }
            (None, None) => None,
        };
        if let (Some(dir), Some(mut states)) = (&states_dir, states) {
            let unread: Vec<PathBuf> = r.errors.iter().map(|e| e.path.clone()).collect();
            states.forget_around(&unread);
            if let Err(e) = states.save(dir, &scope) {
                // Costs only speed: the next backup lists every folder.
                tracing::warn!(error = %e, "could not save the folder states");
            }
        }
        r
    });
    bar.finish();
    let r = report?;
    let s = &r.snapshot.summary;
    emit(
        g,
        &serde_json::json!({ "snapshot": r.id, "summary": s, "errors": r.errors, "parent": r.snapshot.parent }),
        || {
            format!(
            "snapshot {} saved\n  files: {} new, {} changed, {} unchanged ({} in total)\n  added to the repository: {} ({} stored)\n  took {:.1}s{}",
            &r.id.to_hex()[..8],
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            human_bytes(s.total_bytes),
            human_bytes(s.bytes_new_raw),
            human_bytes(s.bytes_new_stored),
            s.duration_ms as f64 / 1000.0,
            if r.errors.is_empty() { String::new() } else { format!("\n  {} file(s) could not be read (listed above)", r.errors.len()) }
        )
        },
    );
    Ok(if r.errors.is_empty() {
        0
    } else {
        crate::EXIT_PARTIAL
    })
}

fn snapshots(g: &Global, host: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    let (snaps, problems) = repo.list_snapshots()?;
    for p in &problems {
        eprintln!("warning: {}: {}", shown(&p.object), shown(&p.message));
    }
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|(_, s)| host.as_ref().is_none_or(|h| &s.hostname == h))
        .collect();
    if g.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = to_json(s);
                v["id"] = serde_json::json!(id);
                v["short_id"] = serde_json::json!(&id.to_hex()[..8]);
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if !g.quiet {
        println!(
            "{:<10} {:<20} {:<16} {:>10}  paths",
            "id", "time", "host", "size"
        );
        for (id, s) in &snaps {
            println!(
                "{:<10} {:<20} {:<16} {:>10}  {}",
                &id.to_hex()[..8],
                s.time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S"),
                shown(&s.hostname),
                human_bytes(s.summary.total_bytes),
                shown(&s.paths.join(" "))
            );
        }
        println!("{} snapshot(s)", snaps.len());
    }
    Ok(0)
}

/// Splits `SNAP:/path` into the snapshot and the path (default `/`).
fn split_spec(what: &str) -> (&str, &str) {
    match what.split_once(':') {
        Some((s, p)) if !p.is_empty() => (s, p),
        Some((s, _)) => (s, "/"),
        None => (what, "/"),
    }
}

fn ls(g: &Global, snap: &str, path: Option<&str>, flat: bool, host: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (_, s) = snapshot::select_snapshot(
        &repo,
        snap,
        Some(&host.unwrap_or_else(hostname))
            .filter(|_| snap == "latest")
            .map(|h| h.as_str()),
    )?;
    let loader = TreeLoader::new(&repo);
    let mut out = std::io::stdout().lock();
    snapshot::ls(&loader, &s.tree, path.unwrap_or("/"), !flat, &mut |e| {
        let line = if g.json {
            to_json(&e).to_string()
        } else {
            let kind = match e.node.kind {
                format::NodeKind::Dir => 'd',
                format::NodeKind::Symlink => 'l',
                format::NodeKind::File => '-',
                _ => '?',
            };
            format!("{kind} {:>10}  {}", e.node.size, shown(&e.path))
        };
        let _ = writeln!(out, "{line}");
    })?;
    Ok(0)
}

type Snapshots = Vec<(crypto::Id, format::Snapshot)>;

/// The version catalog of `repo`, up to date with every snapshot.
fn version_catalog(
    repo: &Repository,
) -> Result<(std::sync::Arc<catalog::versions::VersionCatalog>, Snapshots)> {
    let (all, _) = repo.list_snapshots()?;
    let c = agent::versions::catalog(repo, &all)?;
    Ok((c, all))
}

/// An age (`7d`) before now, or a date or time.
fn parse_when(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let local = d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
            .with_context(|| format!("{s} has no local midnight"))?;
        return Ok(local.with_timezone(&chrono::Utc));
    }
    let age = parse_duration(s)
        .with_context(|| format!("'{s}' is neither an age like 7d nor a date like 2026-11-01"))?;
    Ok(chrono::Utc::now() - age)
}

fn local_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn find(g: &Global, a: FindArgs) -> Result<i32> {
    use catalog::versions::{Filter, NameQuery};
    let repo = open(g)?;
    repo.load_index()?;
    let (c, all) = version_catalog(&repo)?;
    let mut in_snapshots = Vec::new();
    for prefix in &a.snapshots {
        let found: Vec<_> = all
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(prefix.as_str()))
            .collect();
        match found.as_slice() {
            [(id, _)] => in_snapshots.push(*id),
            [] => bail!("no snapshot {prefix}: see `tidemark snapshots`"),
            _ => bail!("{prefix} names several snapshots: give more of the id"),
        }
    }
    let filter = Filter {
        host: a.host,
        kind: a.kind.map(|k| match k {
            KindArg::F => format::NodeKind::File,
            KindArg::D => format::NodeKind::Dir,
            KindArg::L => format::NodeKind::Symlink,
        }),
        min_size: a.min_size,
        max_size: a.max_size,
        modified_after: a.newer.as_deref().map(parse_when).transpose()?,
        modified_before: a.older.as_deref().map(parse_when).transpose()?,
        deleted: a.deleted,
        deleted_since: a.deleted_since.as_deref().map(parse_when).transpose()?,
        in_snapshots,
    };
    let found = c.search(&NameQuery::Glob(a.pattern.clone()), &filter, a.limit)?;
    let mut out = std::io::stdout().lock();
    for h in &found.hits {
        let line = if g.json {
            let mut v = to_json(h);
            // The newest snapshot that has it: what `restore SNAP:PATH` takes.
            v["snapshot"] = serde_json::Value::String(h.last_snapshot.to_hex());
            v.to_string()
        } else {
            let state = match h.deleted_at {
                Some(t) => format!("deleted {}", local_time(t)),
                None => "present".into(),
            };
            format!(
                "{}  {} … {}  {:>10}  {:>3}v  {:<24}  {}",
                &h.last_snapshot.to_hex()[..8],
                local_time(h.first_seen),
                local_time(h.last_seen),
                human_bytes(h.size),
                h.versions,
                state,
                shown(&h.path)
            )
        };
        let _ = writeln!(out, "{line}");
    }
    if !g.json && !g.quiet {
        eprintln!(
            "{} path(s){} in {} snapshot(s)",
            found.hits.len(),
            if found.truncated {
                " (more match: narrow the pattern or raise --limit)"
            } else {
                ""
            },
            all.len()
        );
    }
    Ok(0)
}

fn versions(g: &Global, path: &str, host: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (c, _) = version_catalog(&repo)?;
    let v = c.versions(path, host.as_deref())?;
    if v.is_empty() {
        bail!("{path} is in no snapshot (give the absolute path as backed up; `tidemark find` finds it by name)");
    }
    let mut out = std::io::stdout().lock();
    for v in &v {
        let line = if g.json {
            to_json(v).to_string()
        } else {
            format!(
                "{}  {} … {}  {:>10}  {:>4} snapshot(s){}",
                &v.first_snapshot.to_hex()[..8],
                local_time(v.first_seen),
                local_time(v.last_seen),
                human_bytes(v.size),
                v.snapshots,
                if v.current { "  (current)" } else { "" }
            )
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(0)
}

fn catalog(g: &Global, rebuild: bool) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (all, _) = repo.list_snapshots()?;
    let started = std::time::Instant::now();
    if rebuild {
        agent::versions::opened(&repo)?.clear()?;
    }
    let c = agent::versions::catalog(&repo, &all)?;
    let took = started.elapsed();
    let stats = c.stats()?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "path": c.path(),
                "snapshots": stats.snapshots,
                "paths": stats.paths,
                "versions": stats.versions,
                "bytes": stats.bytes,
                "sync_ms": took.as_millis() as u64,
            })
        );
    } else {
        println!(
            "{} snapshot(s), {} path(s), {} version(s), {} on disk{}; brought up to date in {:.1} s",
            stats.snapshots,
            stats.paths,
            stats.versions,
            human_bytes(stats.bytes),
            c.path()
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_else(|| " (in memory: no cache folder)".into()),
            took.as_secs_f64()
        );
    }
    Ok(0)
}

fn diff(g: &Global, a: &str, b: &str) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (_, sa) = snapshot::select_snapshot(&repo, a, None)?;
    let (_, sb) = snapshot::select_snapshot(&repo, b, None)?;
    let loader = TreeLoader::new(&repo);
    let d = snapshot::diff(&loader, &sa.tree, &sb.tree)?;
    if g.json {
        println!("{}", to_json(&d));
    } else {
        for e in &d {
            let c = match e.kind {
                snapshot::DiffKind::Added => '+',
                snapshot::DiffKind::Removed => '-',
                snapshot::DiffKind::Modified => 'M',
            };
            println!("{c} {}{}", shown(&e.path), if e.is_dir { "/" } else { "" });
        }
    }
    Ok(0)
}

fn restore(
    g: &Global,
    what: &str,
    target: Option<PathBuf>,
    conflict: ConflictArg,
    host: Option<String>,
    owners: bool,
) -> Result<i32> {
    if g.as_user.is_some() && target.is_none() {
        // Another user's files have no business in this machine's own
        // folders, least of all as root.
        bail!("restoring another user's backup needs --target FOLDER: their files are never put back in place on this machine");
    }
    let repo = open(g)?;
    repo.load_index()?;
    let (snap, path) = split_spec(what);
    let host = host.unwrap_or_else(hostname);
    let (id, s) = snapshot::select_snapshot(
        &repo,
        snap,
        Some(host.as_str()).filter(|_| snap == "latest"),
    )?;
    let opts = snapshot::RestoreOptions {
        target: target.clone().unwrap_or_else(|| PathBuf::from("/")),
        conflict: match conflict {
            ConflictArg::KeepBoth => Conflict::KeepBoth,
            ConflictArg::Overwrite => Conflict::Overwrite,
            ConflictArg::Skip => Conflict::Skip,
        },
        // Four: restores wait on reads more than on the CPU, and on the bench
        // set 4 workers restored in 2.5 s against 2.8 s with 3; 6 gained
        // little more and cost 35 MiB of peak memory.
        workers: 4,
    };
    let bar = Bar::new(!g.json && !g.quiet, RESTORE_TEMPLATE);
    let loader = TreeLoader::new(&repo);
    let node = loader.resolve(&s.tree, path)?;
    if node.kind == format::NodeKind::File {
        bar.set_total(node.size);
    } else if path == "/" {
        bar.set_total(s.summary.total_bytes);
    }
    let owners = if owners {
        snapshot::Owners::Snapshot
    } else {
        snapshot::Owners::Restorer
    };
    let r = snapshot::restore_owned(&repo, &s.tree, path, &opts, owners, &bar)?;
    bar.finish();
    emit(
        g,
        &serde_json::json!({ "snapshot": id, "report": r }),
        || {
            let mut t = format!(
                "restored {} file(s), {} folder(s), {} from snapshot {} to {}",
                r.files,
                r.dirs,
                human_bytes(r.bytes),
                &id.to_hex()[..8],
                shown_path(&opts.target)
            );
            if r.skipped > 0 {
                t.push_str(&format!(
                    "\n  {} existing file(s) left as they were",
                    r.skipped
                ));
            }
            if !r.specials.is_empty() {
                t.push_str(&format!(
                    "\n  {} device node(s), pipe(s) or socket(s) not restored (they hold no data; recreate them by hand if needed): {}",
                    r.specials.len(),
                    r.specials
                        .iter()
                        .map(|p| shown_path(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (a, b) in &r.renamed {
                t.push_str(&format!(
                    "\n  {} exists; restored as {}",
                    shown_path(a),
                    shown_path(b)
                ));
            }
            for e in &r.errors {
                t.push_str(&format!(
                    "\n  FAILED {}: {}",
                    shown_path(&e.path),
                    shown(&e.message)
                ));
            }
            t
        },
    );
    Ok(if r.errors.is_empty() {
        0
    } else {
        crate::EXIT_DAMAGE
    })
}

fn cat(g: &Global, what: &str, host: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (snap, path) = split_spec(what);
    let host = host.unwrap_or_else(hostname);
    let (_, s) = snapshot::select_snapshot(
        &repo,
        snap,
        Some(host.as_str()).filter(|_| snap == "latest"),
    )?;
    let loader = TreeLoader::new(&repo);
    let mut out = std::io::stdout().lock();
    snapshot::cat(&loader, &s.tree, path, &mut out)?;
    out.flush()?;
    Ok(0)
}

fn parse_percent(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("'{s}' is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        bail!("'{s}' is not between 0% and 100%");
    }
    Ok(v / 100.0)
}

fn verify(g: &Global, read_data: bool, subset: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    let opts = VerifyOptions {
        read_data,
        subset: subset.as_deref().map(parse_percent).transpose()?,
    };
    let bar = Bar::new(!g.json && !g.quiet && read_data, RESTORE_TEMPLATE);
    let mut report = repo.verify(&opts, &|done, total| {
        bar.set_total(total);
        bar.set_position(done);
    })?;
    bar.finish();
    let (snaps, problems) = repo.list_snapshots()?;
    report.problems.extend(problems);
    let loader = TreeLoader::new(&repo);
    report
        .problems
        .extend(snapshot::verify_snapshots(&loader, &snaps));
    let ok = report.problems.is_empty();
    emit(
        g,
        &serde_json::json!({ "ok": ok, "snapshots": snaps.len(), "report": report }),
        || {
            let mut t = format!(
                "checked {} snapshot(s), {} pack(s){}",
                snaps.len(),
                report.packs,
                if read_data {
                    format!(
                        ", read {} in {} pack(s), {} chunk(s)",
                        human_bytes(report.bytes_read),
                        report.packs_read,
                        report.blobs_read
                    )
                } else {
                    String::new()
                }
            );
            if report.unindexed_packs > 0 {
                t.push_str(&format!(
                    "\n  {} pack(s) from interrupted backups are not indexed yet (harmless)",
                    report.unindexed_packs
                ));
            }
            for p in &report.problems {
                t.push_str(&format!(
                    "\n  DAMAGED {}: {}",
                    shown(&p.object),
                    shown(&p.message)
                ));
            }
            t.push_str(if ok {
                "\nno problems found"
            } else {
                "\nthe repository is damaged: see above"
            });
            t
        },
    );
    Ok(if ok { 0 } else { crate::EXIT_DAMAGE })
}

fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("'{s}' is not a duration like 7d"))?;
    Ok(match unit {
        "h" => chrono::Duration::hours(n),
        "d" | "" => chrono::Duration::days(n),
        "w" => chrono::Duration::weeks(n),
        "m" => chrono::Duration::days(30 * n),
        "y" => chrono::Duration::days(365 * n),
        _ => bail!("'{s}': use h, d, w, m or y, e.g. 7d"),
    })
}

fn forget(g: &Global, a: ForgetArgs) -> Result<i32> {
    let repo = open(g)?;
    let policy = snapshot::retention::Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within.as_deref().map(parse_duration).transpose()?,
    };
    let _lock = repo.lock(true)?;
    let mut remove: Vec<Id> = a
        .snapshots
        .iter()
        .map(|s| repo.find_snapshot(s))
        .collect::<Result<_, _>>()?;
    let mut decisions = Vec::new();
    if !policy.is_empty() {
        decisions = agent::jobs::retention_decisions(&repo, a.host.as_deref(), &policy)?;
        remove.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
    } else if remove.is_empty() {
        bail!("give snapshot ids or at least one --keep-* rule; forget never removes everything by default");
    }
    if !a.dry_run {
        for id in &remove {
            repo.delete_snapshot(id)?;
        }
    }
    emit(
        g,
        &serde_json::json!({ "removed": remove, "decisions": decisions, "dry_run": a.dry_run }),
        || {
            let verb = if a.dry_run { "would remove" } else { "removed" };
            format!(
                "{verb} {} snapshot(s), kept {}",
                remove.len(),
                decisions.iter().filter(|d| d.keep).count()
            )
        },
    );
    drop(_lock);
    if a.prune && !a.dry_run {
        return prune_repo(g, &repo, false, None);
    }
    Ok(0)
}

fn prune(g: &Global, dry_run: bool, max_unused: Option<String>) -> Result<i32> {
    let repo = open(g)?;
    prune_repo(g, &repo, dry_run, max_unused)
}

fn prune_repo(
    g: &Global,
    repo: &Repository,
    dry_run: bool,
    max_unused: Option<String>,
) -> Result<i32> {
    let mut opts = repository::PruneOptions {
        dry_run,
        ..Default::default()
    };
    if let Some(m) = max_unused {
        opts.max_unused = parse_percent(&m)?;
    }
    let r = agent::jobs::prune(repo, &opts)?;
    emit(g, &to_json(&r), || {
        format!(
            "{}deleted {} pack(s), rewrote {}, kept {}; {} -> {}",
            if dry_run { "(dry run) would have " } else { "" },
            r.packs_deleted,
            r.packs_rewritten,
            r.packs_kept,
            human_bytes(r.bytes_before),
            human_bytes(r.bytes_after)
        )
    });
    Ok(0)
}

fn key(g: &Global, cmd: KeyCommand) -> Result<i32> {
    let mut repo = open(g)?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            emit(g, &to_json(&keys), || {
                keys.iter()
                    .map(|k| {
                        format!(
                            "{}{} {} {}@{}",
                            if k.current { "*" } else { " " },
                            &k.id.to_hex()[..8],
                            k.created.format("%Y-%m-%d %H:%M"),
                            shown(&k.username),
                            shown(&k.hostname)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeyCommand::Add => {
            let pw = new_key_password()?;
            let id = repo.add_key(&pw, KdfParams::default(), &hostname(), &username())?;
            emit(g, &serde_json::json!({ "added": id }), || {
                format!("added key {}", &id.to_hex()[..8])
            });
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys()?;
            let matches: Vec<_> = keys
                .iter()
                .filter(|k| k.id.to_hex().starts_with(&id))
                .collect();
            let [k] = matches.as_slice() else {
                bail!("'{id}' matches {} keys; give more of the id", matches.len())
            };
            repo.remove_key(&k.id)?;
            emit(g, &serde_json::json!({ "removed": k.id }), || {
                format!("removed key {}", &k.id.to_hex()[..8])
            });
        }
        KeyCommand::Passwd => {
            let pw = new_key_password()?;
            let id = repo.change_password(&pw, KdfParams::default(), &hostname(), &username())?;
            emit(g, &serde_json::json!({ "key": id }), || {
                format!("password changed (key {})", &id.to_hex()[..8])
            });
        }
    }
    Ok(0)
}

/// The new password of `key add` and `key passwd`.
fn new_key_password() -> Result<password::Secret> {
    password::new(
        None,
        "TIDEMARK_NEW_PASSWORD_FILE",
        "TIDEMARK_NEW_PASSWORD",
        "new password",
    )
}

/// Uploads share the agent's throttle unless `--throttle off`; the user's
/// rules (`throttle.toml`) apply from the start.
pub fn setup_throttle(g: &Global) {
    if g.throttle == crate::args::ThrottleMode::Off {
        agent::network::install(throttle::Throttle::unlimited());
        return;
    }
    match paths().and_then(|p| Ok(agent::network::load_user_rules(&p.config)?)) {
        Ok(r) => agent::network::set_user_rules(r),
        Err(e) => eprintln!("warning: your throttle rules are not used: {e:#}"),
    }
}

fn status(g: &Global) -> Result<i32> {
    let t = agent::network::throttle();
    // The first reading of the sensors lands within one control tick.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let s = t.status();
    emit(g, &serde_json::to_value(&s)?, || {
        let c = &s.conditions;
        let known = |v: Option<bool>, yes: &str, no: &str| match v {
            Some(true) => yes.to_string(),
            Some(false) => no.to_string(),
            None => "unknown".to_string(),
        };
        let mut out = vec![
            format!(
                "uploads: {} ({}: {})",
                action_words(&s.decision.action),
                match s.decision.origin {
                    throttle::Origin::Admin => "organisation rule",
                    throttle::Origin::User => "your rule",
                    throttle::Origin::Default => "default",
                },
                s.decision.reason
            ),
            format!(
                "connection: {}, {}, network {}, VPN {}",
                c.link
                    .map_or("unknown link".into(), |l| format!("{l:?}").to_lowercase()),
                known(c.metered, "metered", "not metered"),
                c.network.as_deref().unwrap_or("unknown"),
                known(c.vpn, "on", "off"),
            ),
            format!(
                "power: {}",
                c.battery.map_or("no battery".into(), |b| format!(
                    "battery {:.0}%, {}",
                    b.percent,
                    if b.on_ac { "charging" } else { "on battery" }
                ))
            ),
            format!(
                "user idle: {}",
                c.idle
                    .map_or("unknown".into(), |i| format!("{} s", i.as_secs()))
            ),
        ];
        out.extend(c.sources.iter().map(|s| format!("  source: {s}")));
        out.join("\n")
    });
    Ok(0)
}

fn action_words(a: &throttle::Action) -> String {
    match a {
        throttle::Action::Pause => "paused".into(),
        throttle::Action::Yield => "yielding to other traffic".into(),
        throttle::Action::Full => "full speed".into(),
        throttle::Action::LimitMbps(m) => format!("at most {m} Mbit/s, yielding"),
        throttle::Action::SharePercent(p) => format!("at most {p}% of the link, yielding"),
    }
}

fn stats(g: &Global) -> Result<i32> {
    let repo = open(g)?;
    repo.load_index()?;
    let (snaps, _) = repo.list_snapshots()?;
    let logical: u64 = snaps.iter().map(|(_, s)| s.summary.total_bytes).sum();
    let (blobs, stored, packs) = repo.index_stats()?;
    let loader = TreeLoader::new(&repo);
    let used = snapshot::used_blobs(&loader, &snaps)?;
    let mut unique = 0u64;
    for id in &used {
        if let Some(l) = repo.blob_location(id)? {
            unique += u64::from(l.raw_length);
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let v = serde_json::json!({
        "snapshots": snaps.len(),
        "logical_bytes": logical,
        "unique_bytes": unique,
        "stored_bytes": stored,
        "blobs": blobs,
        "packs": packs,
        "dedup_ratio": ratio(logical, unique),
        "compression_ratio": ratio(unique, stored),
        "total_ratio": ratio(logical, stored),
    });
    emit(g, &v, || {
        format!(
            "snapshots: {}\nlogical size (all snapshots): {}\nunique data: {}\nstored: {} in {} pack(s)\ndedup ratio: {:.2}x, compression: {:.2}x, overall: {:.2}x",
            snaps.len(),
            human_bytes(logical),
            human_bytes(unique),
            human_bytes(stored),
            packs,
            ratio(logical, unique),
            ratio(unique, stored),
            ratio(logical, stored)
        )
    });
    Ok(0)
}

fn server_cmd(
    g: &Global,
    data: &Path,
    listen: std::net::SocketAddr,
    cert: Option<(PathBuf, PathBuf)>,
    insecure_http: bool,
    kdf_memory: Option<u32>,
    downloads: Option<&Path>,
) -> Result<i32> {
    use server::serve::Tls;
    let kdf = kdf_memory.map(|m| crypto::KdfParams {
        m_cost: m,
        ..Default::default()
    });
    let opened = server::Server::open(data, kdf)?;
    let tls = match (cert, insecure_http) {
        (_, true) => Tls::InsecureLoopbackHttp,
        (Some((cert, key)), _) => Tls::Files { cert, key },
        (None, false) => Tls::SelfSigned,
    };
    let code = opened.first_admin_code;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(server::serve::serve(
        opened.server,
        data,
        listen,
        tls,
        downloads,
        |addr, cert| {
            let scheme = if cert.is_some() { "https" } else { "http" };
            emit(
                g,
                &serde_json::json!({
                    "listening": format!("{scheme}://{addr}"),
                    "fingerprint": cert.map(|c| c.fingerprint.clone()),
                    "admin_code": code,
                }),
                || {
                    let mut s = format!("Tidemark server listening on {scheme}://{addr}");
                    if let Some(c) = cert {
                        s.push_str(&format!("\n  certificate fingerprint (SHA-256): {}", c.fingerprint));
                    }
                    if let Some(code) = &code {
                        s.push_str(&format!(
                            "\n  first start: enrol the administrator's device with code {code} (single use, valid 7 days)"
                        ));
                    }
                    s
                },
            );
        },
    ))?;
    Ok(0)
}

fn admin(g: &Global, cmd: AdminCommand) -> Result<i32> {
    let loc = location(g)?;
    if !device::is_server(&loc) {
        bail!("admin commands talk to a company server: give its address with --repo https://…");
    }
    let (c, info) = device::client(&paths()?, &loc)?;
    if !info.admin {
        bail!(
            "this device is enrolled as {}, who is not an administrator",
            info.user
        );
    }
    let v = match cmd {
        AdminCommand::Users => c.get("/v1/admin/users")?,
        AdminCommand::AddUser { name, admin } => c.post(
            "/v1/admin/users",
            &serde_json::json!({ "name": name, "admin": admin }),
        )?,
        AdminCommand::Code { user, uses, hours } => c.post(
            "/v1/admin/codes",
            &serde_json::json!({ "user": user, "uses": uses, "valid_hours": hours }),
        )?,
        AdminCommand::Devices => c.get("/v1/admin/devices")?,
        AdminCommand::Revoke { device_id } => c.post(
            &format!("/v1/admin/devices/{device_id}/revoke"),
            &serde_json::json!({}),
        )?,
        AdminCommand::Unflag { device_id } => c.post(
            &format!("/v1/admin/devices/{device_id}/unflag"),
            &serde_json::json!({}),
        )?,
        AdminCommand::Usage => c.get("/v1/admin/usage")?,
        AdminCommand::Policy { file: None } => c.get("/v1/policy")?,
        AdminCommand::Policy { file: Some(f) } => {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let policy: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", f.display()))?;
            c.put("/v1/admin/policy", &policy)?
        }
        AdminCommand::Snapshots { user } => match user {
            Some(u) => c.get(&format!("/v1/admin/snapshots?user={u}"))?,
            None => c.get("/v1/admin/snapshots")?,
        },
        AdminCommand::Audit => c.get("/v1/admin/audit")?,
        AdminCommand::Retention { dry_run } => c.post(
            "/v1/admin/retention",
            &serde_json::json!({ "dry_run": dry_run }),
        )?,
        AdminCommand::Prune {
            dry_run,
            grace_hours,
        } => c.post(
            "/v1/admin/prune",
            &serde_json::json!({ "dry_run": dry_run, "grace_hours": grace_hours }),
        )?,
    };
    emit(g, &v, || {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    });
    Ok(0)
}
