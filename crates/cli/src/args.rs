//! Command-line grammar. Kept apart from `main.rs` so the help text reads
//! as one document.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "tidemark", version, about = "Encrypted, deduplicated backups of your files", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThrottleMode {
    Auto,
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a folder, or s3://bucket/prefix?endpoint=…&region=…, sftp://user@host:port/path, webdav(s)://host/path.
    /// Default: a repository in your data folder.
    #[arg(short = 'r', long, env = "TIDEMARK_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the repository password from this file (first line).
    #[arg(long, env = "TIDEMARK_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Folder for local caches (index files, snapshots).
    #[arg(long, env = "TIDEMARK_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// On a company server, as an administrator: read this user's backups
    /// (snapshots, ls, find, restore; read-only, recorded in the audit log).
    #[arg(long, global = true)]
    pub as_user: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Uploads yield to other traffic and follow the throttle rules
    /// (`auto`), or go as fast as the link allows (`off`).
    #[arg(long, env = "TIDEMARK_THROTTLE", global = true, value_enum, default_value_t = ThrottleMode::Auto)]
    pub throttle: ThrottleMode,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log details to stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Do nothing (and succeed) when the repository already exists.
        #[arg(long)]
        if_missing: bool,
        /// Argon2id memory in KiB (default 65536). Lower only for tests.
        #[arg(long, hide = true)]
        kdf_memory: Option<u32>,
        /// Pack size in MiB (default 16).
        #[arg(long, hide = true)]
        pack_size_mib: Option<u32>,
    },
    /// Back up files and folders.
    Backup(BackupArgs),
    /// Continuous protection: back up PATH... now, then each batch of
    /// changes as it happens (only the changed folders are listed), with a
    /// full scan every few hours. Prints one line per snapshot; stop with Ctrl-C.
    Watch(WatchArgs),
    /// Run the backup agent without a window, as the desktop app does in its
    /// tray: on the first start it enrols from the installer's enrolment
    /// file, then backs up on its schedule and as files change.
    /// Check the company server for a signed update and install it into
    /// this per-user install (the programs are replaced; the next start runs them).
    Update {
        /// Only say whether an update is offered.
        #[arg(long)]
        check: bool,
    },
    Agent {
        /// Exit after the first backup ends, with its outcome (scripts, tests).
        #[arg(long)]
        once: bool,
        /// Accepted from autostart entries; the agent always runs in the background.
        #[arg(long, hide = true)]
        background: bool,
    },
    /// Enrol this device with a company server (then use --repo URL).
    Enroll {
        /// The server, e.g. https://backup.example.com:8443
        url: String,
        /// The enrolment code from your administrator.
        code: String,
        /// A name for this device (default: the host name).
        #[arg(long)]
        device_name: Option<String>,
        /// Refuse the server unless its certificate has this SHA-256 fingerprint.
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Manage the organisation on a company server (needs an admin device; --repo URL).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run the company server (HTTPS; prints the first admin enrolment code).
    Server {
        /// The server's data folder: packs, metadata, certificate, secret.
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: std::net::SocketAddr,
        /// Your own certificate chain (PEM) instead of a self-signed one.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Plain HTTP, only on a loopback address, only for tests.
        #[arg(long, conflicts_with_all = ["cert", "key"])]
        insecure_http: bool,
        /// Argon2id memory in KiB for the server's repository key (tests only).
        #[arg(long, hide = true)]
        kdf_memory: Option<u32>,
        /// Files the download pages offer (the app and `tidemark` binaries,
        /// an icon): employees install from /download/CODE links.
        #[arg(long)]
        downloads: Option<PathBuf>,
    },
    /// List snapshots.
    Snapshots {
        /// Only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// List the files of a snapshot.
    Ls {
        /// Snapshot id (prefix) or `latest`.
        snapshot: String,
        /// Folder or file inside the snapshot (absolute path as backed up).
        path: Option<String>,
        /// List only one level instead of everything below.
        #[arg(long)]
        flat: bool,
        /// With `latest`: newest snapshot of this host (default: this machine).
        #[arg(long)]
        host: Option<String>,
    },
    /// Find files by name across every snapshot, from the local version
    /// catalog: a glob over the whole name, case-insensitive ('*.pdf', 'report*').
    Find(FindArgs),
    /// Every version of one file (or folder) across snapshots.
    Versions {
        /// Absolute path as backed up.
        path: String,
        /// Only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// The local version catalog behind find, versions and the timeline:
    /// its size, or rebuild it from the repository.
    Catalog {
        /// Forget the catalog and build it again from every snapshot.
        #[arg(long)]
        rebuild: bool,
    },
    /// Show what changed between two snapshots.
    Diff { first: String, second: String },
    /// Restore a snapshot, or one path of it (SNAP:/path).
    Restore {
        /// SNAPSHOT or SNAPSHOT:/absolute/path
        what: String,
        /// Recreate the backed-up absolute paths under this folder. Without it, files go back to their original place.
        #[arg(short, long)]
        target: Option<PathBuf>,
        /// What to do when a file already exists.
        #[arg(long, value_enum, default_value = "keep-both")]
        conflict: ConflictArg,
        #[arg(long)]
        host: Option<String>,
        /// Give files the owners recorded in the snapshot, with their
        /// set-user-id and set-group-id bits (root only). Without it, files
        /// belong to whoever runs the restore and set-id bits are dropped.
        #[arg(long)]
        owners: bool,
    },
    /// Write one file of a snapshot to stdout (SNAP:/path).
    Cat {
        what: String,
        #[arg(long)]
        host: Option<String>,
    },
    /// Check the repository: structure always, data with --read-data.
    Verify {
        /// Download and check the content of packs.
        #[arg(long)]
        read_data: bool,
        /// Only this share of the packs, e.g. 10%.
        #[arg(long, requires = "read_data")]
        subset: Option<String>,
    },
    /// Remove snapshots by policy or id.
    Forget(ForgetArgs),
    /// Delete data no snapshot uses.
    Prune {
        #[arg(long)]
        dry_run: bool,
        /// Rewrite packs with more than this share unused (default 20%).
        #[arg(long)]
        max_unused: Option<String>,
    },
    /// Manage the repository's passwords.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Sizes: logical, stored, dedup and compression ratios.
    Stats,
    /// What the network is and how uploads are throttled right now.
    Status,
    /// Remove stale locks left by crashed processes.
    Unlock {
        /// Remove every lock, even live ones.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ConflictArg {
    KeepBoth,
    Overwrite,
    Skip,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and folders to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Skip names or paths matching this glob (repeatable).
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Skip folders marked with CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do not cross into other file systems.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Compare with this snapshot instead of the newest of the same host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub backup: BackupArgs,
    /// A batch of changes is backed up after this long without a change ...
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub quiet_ms: u64,
    /// ... or this long after its first change, however busy the folders.
    #[arg(long, default_value_t = 20000, value_name = "MS")]
    pub max_delay_ms: u64,
    /// Walk everything this often anyway, for what watching cannot see.
    #[arg(long, default_value_t = 6)]
    pub full_scan_hours: u64,
    /// Stop after this many snapshots (for scripts and tests).
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget, by id.
    pub snapshots: Vec<String>,
    #[arg(long)]
    pub keep_last: Option<u32>,
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    #[arg(long)]
    pub keep_daily: Option<u32>,
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Keep everything newer than this, e.g. 7d, 36h, 2w, 1y.
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (asked for, or from TIDEMARK_NEW_PASSWORD_FILE).
    Add,
    List,
    /// Remove a key by id (prefix).
    Remove {
        id: String,
    },
    /// Change the password of the key in use.
    Passwd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// List users.
    Users,
    /// Create a user.
    AddUser {
        name: String,
        /// The user may administer the organisation.
        #[arg(long)]
        admin: bool,
    },
    /// Create an enrolment code for a user.
    Code {
        user: String,
        /// How many devices may enrol with it (default: any number until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// Hours it stays valid.
        #[arg(long, default_value_t = 72)]
        hours: u32,
    },
    /// List devices with their last backup, and any flag the server set
    /// on one for a burst of commits.
    Devices,
    /// Revoke a device's token at once.
    Revoke { device_id: i64 },
    /// Clear a device's flag after looking at its burst of commits: its
    /// quarantined snapshots count for retention again.
    Unflag { device_id: i64 },
    /// Stored bytes, unique chunks and dedup figures for the organisation.
    Usage,
    /// Show the organisation policy, or set it from a JSON file.
    Policy { file: Option<PathBuf> },
    /// List snapshots of every user, or of one.
    Snapshots {
        #[arg(long)]
        user: Option<String>,
    },
    /// Show the audit log.
    Audit,
    /// Apply the organisation's retention policy now (the server also runs it hourly).
    Retention {
        /// Show what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Free the data no snapshot uses, while devices go on backing up (the
    /// server also does it daily).
    Prune {
        /// Show what would be freed without freeing it.
        #[arg(long)]
        dry_run: bool,
        /// Keep uploads no snapshot uses yet for this long (default 24);
        /// 0 keeps none, and a device committing one must send it again.
        #[arg(long)]
        grace_hours: Option<u32>,
    },
}

#[derive(Debug, clap::Args)]
pub struct FindArgs {
    pub pattern: String,
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only paths present in these snapshots (id prefixes).
    #[arg(long = "snapshot", short = 's')]
    pub snapshots: Vec<String>,
    /// Only paths that the newest snapshot of their backup set lacks.
    #[arg(long)]
    pub deleted: bool,
    /// Only paths deleted at or after WHEN: an age (7d, 36h, 2w) or a date
    /// (2026-11-01, RFC 3339).
    #[arg(long, value_name = "WHEN")]
    pub deleted_since: Option<String>,
    /// Only files of at least this many bytes.
    #[arg(long)]
    pub min_size: Option<u64>,
    /// Only files of at most this many bytes.
    #[arg(long)]
    pub max_size: Option<u64>,
    /// Only paths modified at or after WHEN (as for --deleted-since).
    #[arg(long, value_name = "WHEN")]
    pub newer: Option<String>,
    /// Only paths modified at or before WHEN.
    #[arg(long, value_name = "WHEN")]
    pub older: Option<String>,
    /// Only this kind of entry.
    #[arg(long = "type", value_enum)]
    pub kind: Option<KindArg>,
    /// Stop after this many paths.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// Files.
    F,
    /// Folders.
    D,
    /// Symbolic links.
    L,
}
