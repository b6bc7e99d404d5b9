//! Crash safety: `tidemark backup` killed with SIGKILL at random moments
//! must never leave the repository damaged, a later backup must finish and
//! reuse what the killed one stored, and the last snapshot must restore
//! the source exactly.
//!
//! Each round changes the ~100 MiB tree a little (about 1 MiB of new data
//! at a random place), starts a backup as a child process and kills it.
//! Odd rounds run `backup --force`, which reads the whole tree, and kill
//! after a random delay within the time such a backup took when left
//! alone, so the kills land anywhere in the walk. Even rounds run a plain
//! backup, watch the repository and kill within 3 ms of the run's first
//! pack being stored: when a pack exists that no index file lists, or an
//! index file exists that no snapshot uses yet. After every kill, `verify
//! --read-data` must pass, the dead backup's lock must not block even an
//! exclusive lock, and a plain backup must complete.

use super::support::{str_of, tidemark, workdir};
use rand::Rng;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};
use test_support::repo::pack_name;
use test_support::tree::{self, MutateSpec, TreeSpec};
use test_support::{assert_same_tree, restored_path, CompareOptions, PackTail, RepoDir, Tidemark};

/// Kills that must hit a running backup.
const KILLS: usize = 20;
/// Attempts allowed to get them (a backup may finish before its kill).
const MAX_ATTEMPTS: usize = 32;
const SIGKILL: i32 = 9;

/// How a round picks its moment.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// `backup --force`, killed after this delay.
    After(Duration),
    /// A plain backup, killed this long after its first pack appears.
    AfterFirstPack(Duration),
}

/// What one round saw.
#[derive(Debug)]
struct Round {
    kill: Kill,
    /// When the kill was sent, from the start of the backup.
    at: Duration,
    /// The backup was still running when SIGKILL reached it.
    interrupted: bool,
    packs_left: usize,
    blobs_left: u64,
    lock_left: bool,
    /// Packs verify saw that no index file lists.
    unindexed: u64,
    /// Blobs the next snapshot has that no earlier snapshot had.
    needed: usize,
    /// Blobs the backup after the kill uploaded.
    uploaded: usize,
}

/// Every blob a snapshot references: its root tree, every folder's tree,
/// every file's chunks.
fn snapshot_blobs(tm: &Tidemark, id: &str) -> HashSet<String> {
    let snaps = tm.snapshots();
    let snap = snaps
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} is not listed"));
    let mut blobs = HashSet::from([str_of(&snap["tree"]).to_string()]);
    for entry in tm.ok(&["ls", id, "--json"]).json_lines() {
        if let Some(sub) = entry["subtree"].as_str() {
            blobs.insert(sub.to_string());
        }
        for c in entry["content"].as_array().into_iter().flatten() {
            blobs.insert(str_of(c).to_string());
        }
    }
    blobs
}

/// Runs a backup and kills it as `kill` says; returns when the kill was
/// sent and whether it hit a running process.
fn backup_and_kill(
    tm: &Tidemark,
    repo: &RepoDir,
    src: &Path,
    log: &Path,
    kill: Kill,
    patience: Duration,
) -> (Duration, bool) {
    let mut args = vec![OsStr::new("backup"), src.as_os_str(), OsStr::new("--json")];
    if let Kill::After(_) = kill {
        args.push(OsStr::new("--force"));
    }
    let packs_before: BTreeSet<String> = repo.packs().into_keys().collect();
    let mut child = tm.spawn(&args, log);
    let spawned = Instant::now();
    match kill {
        Kill::After(delay) => std::thread::sleep(delay),
        Kill::AfterFirstPack(delay) => {
            while child.try_wait().expect("poll the backup").is_none()
                && repo.packs().keys().all(|k| packs_before.contains(k))
                && spawned.elapsed() < patience
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(delay);
        }
    }
    let at = spawned.elapsed();
    let running = child.try_wait().expect("poll the backup").is_none();
    child.kill().expect("send SIGKILL");
    let status = child.wait().expect("reap the backup");
    (at, running && status.signal() == Some(SIGKILL))
}

#[test]
fn killed_backups_never_damage_the_repository() {
    let (mut rng, _) = test_support::test_rng("killed_backups_never_damage_the_repository");
    let started = Instant::now();
    let work = workdir();
    let src = work.path().join("src");
    let generated = tree::generate(&src, &TreeSpec::large(), &mut rng).expect("generate the tree");
    println!(
        "tree: {} files, {:.1} MiB",
        generated.files.len(),
        generated.bytes as f64 / 1048576.0
    );
    let tm = tidemark(work.path());
    tm.init(Some(1));
    let repo = RepoDir::new(&tm.repo);
    let log = work.path().join("killed-backups.log");

    let first = tm.backup(&[&src], &[]);
    println!(
        "first backup: {} packs, {:.1} MiB stored",
        repo.packs().len(),
        repo.pack_bytes() as f64 / 1048576.0
    );
    let mut seen = snapshot_blobs(&tm, str_of(&first["snapshot"]));

    // One uninterrupted backup of the kind the random rounds kill, to place the kills.
    tree::mutate(&src, &MutateSpec::round(), &mut rng).expect("mutate");
    let t = Instant::now();
    let calibration = tm.backup(&[&src], &["--force"]);
    let full = t.elapsed();
    seen.extend(snapshot_blobs(&tm, str_of(&calibration["snapshot"])));
    let (lo, mut hi) = (full.mul_f64(0.1), full.mul_f64(0.9));
    println!(
        "uninterrupted backup --force: {full:.1?}; random kills between {lo:.1?} and {hi:.1?}"
    );

    // Killed runs may store trees of the folders above `src` that the next
    // run does not reuse: their metadata (e.g. /tmp's mtime) moves.
    let slack = src.components().count();
    let mut rounds: Vec<Round> = Vec::new();
    let mut verify_time = Duration::ZERO;
    while rounds.iter().filter(|r| r.interrupted).count() < KILLS {
        assert!(
            rounds.len() < MAX_ATTEMPTS,
            "only {} of {} kills hit a running backup: {rounds:#?}",
            rounds.iter().filter(|r| r.interrupted).count(),
            rounds.len()
        );
        let n = rounds.len() + 1;
        tree::mutate(&src, &MutateSpec::round(), &mut rng).expect("mutate");
        // Both draws every round, so a seed replays the same trees whatever the timing.
        let random = lo + (hi.max(lo) - lo).mul_f64(rng.gen::<f64>());
        let after_pack = Duration::from_micros(rng.gen_range(0..3_000));
        let kill = if n % 2 == 1 {
            Kill::After(random)
        } else {
            Kill::AfterFirstPack(after_pack)
        };

        let packs_before: BTreeSet<String> = repo.packs().into_keys().collect();
        let (at, interrupted) = backup_and_kill(&tm, &repo, &src, &log, kill, full * 5);
        if !interrupted && matches!(kill, Kill::After(_)) {
            // The machine got faster than when measured: aim earlier.
            hi = hi.mul_f64(0.8).max(lo.mul_f64(1.5));
        }

        // What the killed run left. Stores are atomic: no pack is partial.
        let left: Vec<PackTail> = repo
            .packs()
            .into_iter()
            .filter(|(k, _)| !packs_before.contains(k))
            .map(|(k, p)| {
                let tail = PackTail::read(&p).unwrap_or_else(|e| panic!("round {n}: the killed backup left a broken pack: {e}"));
                let name = pack_name(&p).expect("read pack");
                assert!(k.ends_with(&name), "round {n}: pack {k} has a trailer that hashes to {name}: a partial write under the final name");
                tail
            })
            .collect();
        let lock_left = !repo.locks().is_empty();

        let t = Instant::now();
        let verify = tm.run(&["verify", "--read-data", "--json"]);
        verify_time += t.elapsed();
        assert_eq!(
            verify.code,
            Some(0),
            "round {n}: verify after a kill at {at:?} ({kill:?}) found damage\n{}",
            verify.printed()
        );
        let report = verify.json();
        assert_eq!(report["ok"], true, "round {n}: {report}");

        if lock_left {
            // The dead backup's lock must not block even an exclusive lock.
            tm.ok(&["forget", "--keep-last", "1000000", "--dry-run"]);
        }

        let done = tm.backup(&[&src], &[]);
        let uploaded = done["summary"]["chunks_new"]
            .as_u64()
            .expect("summary.chunks_new") as usize;
        let blobs = snapshot_blobs(&tm, str_of(&done["snapshot"]));
        let needed = blobs.difference(&seen).count();
        seen.extend(blobs);
        let blobs_left: u64 = left.iter().map(|t| t.blobs).sum();
        let round = Round {
            kill,
            at,
            interrupted,
            packs_left: left.len(),
            blobs_left,
            lock_left,
            unindexed: report["report"]["unindexed_packs"].as_u64().unwrap_or(0),
            needed,
            uploaded,
        };
        assert!(uploaded <= needed, "round {n}: the backup after the kill uploaded {uploaded} blobs, but its snapshot has only {needed} that no earlier one had: {round:?}");
        if blobs_left as usize > slack {
            assert!(
                uploaded + blobs_left as usize <= needed + slack,
                "round {n}: the killed backup stored {blobs_left} blobs, but the next one uploaded {uploaded} of the {needed} its snapshot needed: it did not reuse them. {round:?}"
            );
        }
        rounds.push(round);
    }

    print_rounds(&rounds);
    let interrupted: Vec<&Round> = rounds.iter().filter(|r| r.interrupted).collect();
    let with_packs = interrupted.iter().filter(|r| r.packs_left > 0).count();
    let resumed = interrupted
        .iter()
        .filter(|r| r.blobs_left > 0 && r.uploaded < r.needed)
        .count();
    let locks = interrupted.iter().filter(|r| r.lock_left).count();
    println!(
        "{} kills hit a running backup in {} rounds; {with_packs} left packs that no snapshot used yet, and after {resumed} the next backup \
         uploaded fewer blobs than its snapshot needed; {locks} left a stale lock. verify took {verify_time:.1?} in all, {:.1} MiB stored at the end",
        interrupted.len(),
        rounds.len(),
        repo.pack_bytes() as f64 / 1048576.0
    );
    assert!(
        with_packs >= KILLS / 4 && resumed >= KILLS / 4,
        "too few kills interrupted a backup that had stored data ({with_packs} left packs, after {resumed} a backup resumed)"
    );
    assert!(
        locks >= KILLS / 2,
        "only {locks} killed backups left a lock: the kills come before the backups start working"
    );

    let target = work.path().join("restore");
    let restored = tm.restore("latest", &target, &[]);
    assert_eq!(
        restored.code,
        Some(0),
        "restoring the last snapshot failed\n{}",
        restored.printed()
    );
    assert_same_tree(
        &src,
        &restored_path(&target, &src),
        &CompareOptions::default(),
    );
    println!("whole test: {:.1?}", started.elapsed());
}

fn print_rounds(rounds: &[Round]) {
    println!("round  kill              at  hit   packs-left  blobs-left  lock-left  unindexed  needed  uploaded");
    for (i, r) in rounds.iter().enumerate() {
        let kill = match r.kill {
            Kill::After(d) => format!("after {:>4}ms", d.as_millis()),
            Kill::AfterFirstPack(d) => format!("pack + {:>4}us", d.as_micros()),
        };
        println!(
            "{:>5}  {kill:<14} {:>5}ms  {:<5} {:>10}  {:>10}  {:>9}  {:>9}  {:>6}  {:>8}",
            i + 1,
            r.at.as_millis(),
            r.interrupted,
            r.packs_left,
            r.blobs_left,
            r.lock_left,
            r.unindexed,
            r.needed,
            r.uploaded
        );
    }
}
