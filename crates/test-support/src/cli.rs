//! Running the `tidemark` binary the way a user would, but sealed off from
//! the machine: every run gets its own HOME, XDG folders and cache folder,
//! no inherited `TIDEMARK_*` variable, no terminal on stdin (so nothing
//! prompts), and the password through `TIDEMARK_PASSWORD`.

use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Exit codes of `tidemark` (crates/cli/src/main.rs).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL_BACKUP: i32 = 3;
    pub const DAMAGE: i32 = 4;
    pub const NO_REPOSITORY: i32 = 10;
    pub const WRONG_PASSWORD: i32 = 11;
    pub const LOCKED: i32 = 12;
}

/// One repository and the environment to reach it.
#[derive(Debug, Clone)]
pub struct Tidemark {
    bin: PathBuf,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub home: PathBuf,
    password: Option<String>,
    env: Vec<(OsString, OsString)>,
    /// Runs the binary through this command line (e.g. `setpriv …`).
    wrapper: Vec<OsString>,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub command: String,
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics, showing everything the run printed, unless it exited `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited {:?}, expected {code}\n{}",
            self.command,
            self.code,
            self.printed()
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(exit::OK)
    }

    /// Stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no JSON document ({e})\n{}",
                self.command,
                self.printed()
            )
        })
    }

    /// Stdout parsed as JSON lines (as `ls --json` and `find --json` print).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("`{}`: line {l:?} is not JSON ({e})", self.command))
            })
            .collect()
    }

    pub fn printed(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// The repository's password in tests that do not care which it is.
pub const PASSWORD: &str = "correct horse battery staple";

impl Tidemark {
    /// A repository at `work/repo`, caches in `work/cache`, HOME at
    /// `work/home`. Nothing is created until a command runs.
    pub fn new(bin: impl Into<PathBuf>, work: &Path) -> Self {
        Tidemark {
            bin: bin.into(),
            repo: work.join("repo"),
            cache: work.join("cache"),
            home: work.join("home"),
            password: Some(PASSWORD.to_string()),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// The same repository opened with another password (`None`: no
    /// password at all).
    pub fn with_password(&self, pw: Option<&str>) -> Self {
        Tidemark {
            password: pw.map(str::to_string),
            ..self.clone()
        }
    }

    /// The same settings with another repository location.
    pub fn with_repo(&self, repo: impl Into<PathBuf>) -> Self {
        Tidemark {
            repo: repo.into(),
            ..self.clone()
        }
    }

    /// The same settings with another cache folder (a "second machine" or
    /// a cold cache).
    pub fn with_cache(&self, cache: impl Into<PathBuf>) -> Self {
        Tidemark {
            cache: cache.into(),
            ..self.clone()
        }
    }

    pub fn with_env(&self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let mut t = self.clone();
        t.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        t
    }

    /// Runs every command as `wrapper… tidemark args…`.
    pub fn wrapped<S: AsRef<OsStr>>(&self, wrapper: &[S]) -> Self {
        Tidemark {
            wrapper: wrapper.iter().map(|s| s.as_ref().to_owned()).collect(),
            ..self.clone()
        }
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The command, ready to run or spawn, with the sealed environment.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TIDEMARK_") {
                c.env_remove(&k);
            }
        }
        c.env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            // No session bus: the keyring must never be reached.
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("TIDEMARK_REPO", &self.repo)
            .env("TIDEMARK_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(pw) = &self.password {
            c.env("TIDEMARK_PASSWORD", pw);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to the end and captures what it printed.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        let mut c = self.command(args);
        let shown = format!(
            "tidemark {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        Outcome {
            command: shown,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and insists on exit code 0.
    #[track_caller]
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        self.run(args).ok()
    }

    /// Runs with `--json`, insists on exit code 0 and parses stdout.
    #[track_caller]
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut a: Vec<OsString> = args.iter().map(|s| s.as_ref().to_owned()).collect();
        a.push("--json".into());
        self.run(&a).ok().json()
    }

    /// Starts a run in the background; its output goes to `log` (stdout
    /// and stderr appended), so a full pipe can never stall it.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S], log: &Path) -> Child {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let mut c = self.command(args);
        c.stdout(f.try_clone().expect("dup log")).stderr(f);
        c.spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()))
    }

    /// `init` with cheap Argon2 (1 MiB) and, when given, small packs.
    #[track_caller]
    pub fn init(&self, pack_size_mib: Option<u32>) -> Outcome {
        let mut args = vec!["init".to_string(), "--kdf-memory".into(), "1024".into()];
        if let Some(p) = pack_size_mib {
            args.extend(["--pack-size-mib".to_string(), p.to_string()]);
        }
        self.ok(&args)
    }

    /// `backup PATHS… EXTRA… --json`, exit 0: the printed report.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut args: Vec<OsString> = vec!["backup".into()];
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        args.extend(extra.iter().map(OsString::from));
        self.json(&args)
    }

    /// `snapshots --json`: oldest first.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        match self.json(&["snapshots"]) {
            Value::Array(v) => v,
            other => panic!("snapshots --json printed {other}, not an array"),
        }
    }

    /// `restore WHAT --target DIR --owners EXTRA… --json` (any exit code).
    /// Round trips compare modes exactly, set-id bits included, and tests
    /// run as root: without `--owners` a root restore drops those bits.
    pub fn restore(&self, what: &str, target: &Path, extra: &[&str]) -> Outcome {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            what.into(),
            "--target".into(),
            target.as_os_str().to_owned(),
            "--owners".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        args.push("--json".into());
        self.run(&args)
    }
}

/// Where an absolute path `src` lands under a restore target.
pub fn restored_path(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("backed-up paths are absolute"))
}
