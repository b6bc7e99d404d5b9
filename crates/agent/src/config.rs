//! The agent's settings: TOML in the OS config folder, written atomically.
//! Secrets never go here (see `secrets`).

use crate::error::{AgentError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where backups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// A local folder or a removable disk.
    Folder { path: String },
    /// S3-compatible storage, SFTP or WebDAV, as an OpenDAL URL
    /// (`s3://bucket/prefix?endpoint=…`, `sftp://user@host/path`, `webdav://…`).
    /// Credentials come from the environment or the keyring, never from here.
    Remote { url: String },
    /// The company's Tidemark server this device is enrolled with.
    Server { url: String },
}

impl Destination {
    /// The location string the storage layer understands.
    pub fn location(&self) -> &str {
        match self {
            Destination::Folder { path } => path,
            Destination::Remote { url } | Destination::Server { url } => url,
        }
    }
}

/// How many snapshots to keep; the defaults thin like a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Retention {
    /// Keep every snapshot younger than this many hours.
    pub within_hours: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            within_hours: 24,
            hourly: 24 * 7,
            daily: 30,
            weekly: 52,
            monthly: 120,
        }
    }
}

impl Retention {
    pub fn policy(&self) -> snapshot::retention::Policy {
        let n = |v: u32| (v > 0).then_some(v);
        snapshot::retention::Policy {
            keep_last: Some(1),
            keep_hourly: n(self.hourly),
            keep_daily: n(self.daily),
            keep_weekly: n(self.weekly),
            keep_monthly: n(self.monthly),
            keep_yearly: None,
            keep_within: (self.within_hours > 0)
                .then(|| chrono::Duration::hours(i64::from(self.within_hours))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Config {
    pub destination: Option<Destination>,
    /// Folders to back up (absolute paths).
    pub folders: Vec<String>,
    /// Exclusion patterns: a bare name matches at any depth, a pattern with
    /// a `/` matches whole paths.
    pub excludes: Vec<String>,
    /// Skip folders holding a `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// Minutes between scheduled backups; 0 means on demand only.
    pub every_minutes: u32,
    /// Watch the folders and back up changes within about a minute.
    pub continuous: bool,
    /// While watching, walk everything this often anyway (hours), for what
    /// a watcher cannot see.
    pub full_scan_hours: u32,
    pub retention: Retention,
    /// A password file the user chose because no keyring is reachable.
    pub password_file: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            destination: None,
            folders: default_folders(),
            excludes: default_excludes(),
            exclude_caches: true,
            every_minutes: 60,
            continuous: true,
            full_scan_hours: 6,
            retention: Retention::default(),
            password_file: None,
        }
    }
}

/// The user's documents, desktop and pictures, where they exist. Without an
/// XDG user-dirs file (a fresh account, a minimal desktop) the usual English
/// names under the home folder are used.
pub fn default_folders() -> Vec<String> {
    let Some(u) = directories::UserDirs::new() else {
        return Vec::new();
    };
    let home = u.home_dir().to_path_buf();
    let pick = |xdg: Option<&Path>, name: &str| -> PathBuf {
        xdg.map_or_else(|| home.join(name), Path::to_path_buf)
    };
    let mut out: Vec<String> = Vec::new();
    for p in [
        pick(u.document_dir(), "Documents"),
        pick(u.desktop_dir(), "Desktop"),
        pick(u.picture_dir(), "Pictures"),
    ] {
        // The XDG dirs fall back to the home folder itself when unset;
        // backing up all of home is a choice the user makes, not a default.
        let s = p.to_string_lossy().into_owned();
        if p.is_dir() && p != home && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Caches, build output, trash and editors' scratch files: nothing a user
/// would want back, and the bulk of churn on a developer's laptop.
pub fn default_excludes() -> Vec<String> {
    [
        ".cache",
        "node_modules",
        "__pycache__",
        ".Trash",
        ".Trash-*",
        ".local/share/Trash",
        "*.tmp",
        "*.swp",
        "~$*",
        ".~lock.*#",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Config {
    /// Reads the settings; a missing file means the defaults (not set up),
    /// and a setting missing from the file (an older version wrote it, or
    /// a person trimmed it) takes its default.
    pub fn load(path: &Path) -> Result<Config> {
        let bad = |message: String| AgentError::BadConfig {
            path: path.into(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut table: toml::Table =
                    toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
                let defaults =
                    toml::Table::try_from(Config::default()).map_err(|e| bad(e.to_string()))?;
                fill_missing(&mut table, &defaults);
                table
                    .try_into()
                    .map_err(|e: toml::de::Error| bad(e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(AgentError::io(path, e)),
        }
    }

    /// Writes the settings through a temporary file and a rename, so a
    /// crash leaves the old or the new file, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        let text = toml::to_string_pretty(self).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let dir = path
            .parent()
            .ok_or_else(|| AgentError::Invalid("the settings path has no folder".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| AgentError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| AgentError::io(path, e))
    }

    /// Rejects settings that would fail later in a confusing way.
    pub fn validate(&self) -> Result<()> {
        for f in &self.folders {
            if !Path::new(f).is_absolute() {
                return Err(AgentError::Invalid(format!(
                    "folders to back up must be absolute paths, not {f}"
                )));
            }
        }
        snapshot::Excludes::new(&self.excludes, self.exclude_caches)?;
        if let Some(Destination::Folder { path }) = &self.destination {
            if !Path::new(path).is_absolute() {
                return Err(AgentError::Invalid(format!(
                    "the backup folder must be an absolute path, not {path}"
                )));
            }
        }
        Ok(())
    }

    pub fn excludes(&self) -> Result<snapshot::Excludes> {
        Ok(snapshot::Excludes::new(
            &self.excludes,
            self.exclude_caches,
        )?)
    }
}

/// Adds the keys of `defaults` that `table` lacks, at every level. The
/// front ends' generated types then see every field as required, while
/// files stay forgiving.
fn fill_missing(table: &mut toml::Table, defaults: &toml::Table) {
    for (k, v) in defaults {
        match (table.get_mut(k), v) {
            (None, v) => {
                table.insert(k.clone(), v.clone());
            }
            (Some(toml::Value::Table(t)), toml::Value::Table(d)) => fill_missing(t, d),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default thinning, snapshot by snapshot: one every 20 minutes
    /// for 400 days, and the exact set a timeline keeps, derived by hand
    /// from the calendar (UTC).
    #[test]
    fn the_default_settings_are_the_timeline_a_server_applies_too() {
        assert_eq!(
            Retention::default().policy(),
            snapshot::retention::Policy::timeline()
        );
    }

    #[test]
    fn default_thinning_keeps_exactly_the_timeline() {
        use chrono::{Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
        use std::collections::BTreeSet;
        // A Wednesday, at noon.
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let oldest = now - Duration::days(400);
        let mut snaps = Vec::new();
        let mut t = now;
        let mut n = 0u32;
        while t >= oldest {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            snaps.push((
                crypto::Id(id),
                format::Snapshot {
                    version: 1,
                    time: t,
                    hostname: "lap".into(),
                    username: "u".into(),
                    paths: vec!["/home/u".into()],
                    tree: crypto::Id([0; 32]),
                    parent: None,
                    tags: Vec::new(),
                    summary: Default::default(),
                },
            ));
            t -= Duration::minutes(20);
            n += 1;
        }
        let kept: BTreeSet<_> =
            snapshot::retention::apply(&snaps, &Retention::default().policy(), now)
                .into_iter()
                .filter(|d| d.keep)
                .map(|d| d.time)
                .collect();

        let at =
            |d: NaiveDate, h: u32, m: u32| Utc.from_utc_datetime(&d.and_hms_opt(h, m, 0).unwrap());
        let today = now.date_naive();
        let mut want = BTreeSet::from([now]);
        // Everything of the last 24 hours.
        let mut t = now;
        while now - t <= Duration::hours(24) {
            want.insert(t);
            t -= Duration::minutes(20);
        }
        // The newest of each of the 167 hours before this one: hh:40.
        for k in 1..168 {
            let h = now - Duration::hours(k);
            want.insert(at(h.date_naive(), h.hour(), 40));
        }
        // The newest of each of the 29 days before today: 23:40.
        for d in 1..30 {
            want.insert(at(today - Duration::days(d), 23, 40));
        }
        // The newest of each of the 51 weeks before this one: Sunday 23:40.
        let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
        for w in 1..52 {
            want.insert(at(monday - Duration::days(7 * (w - 1) + 1), 23, 40));
        }
        // The newest of each earlier month that has snapshots: its last day, 23:40.
        let mut first_of_month = today.with_day(1).unwrap();
        loop {
            let last_day = first_of_month.pred_opt().unwrap();
            let newest = at(last_day, 23, 40);
            if newest < oldest {
                break;
            }
            want.insert(newest);
            first_of_month = last_day.with_day(1).unwrap();
        }
        assert_eq!(
            kept.len(),
            want.len(),
            "kept but not wanted: {:?}; wanted but not kept: {:?}",
            kept.difference(&want).collect::<Vec<_>>(),
            want.difference(&kept).collect::<Vec<_>>()
        );
        assert_eq!(kept, want);
        // 73 in the last day, 167 - 24 more hourly, and the dailies, weeklies
        // and monthlies beyond them: a few hundred of 28,801.
        assert!(kept.len() < 400, "{}", kept.len());
    }

    #[test]
    fn settings_round_trip_and_missing_means_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cfg/agent.toml");
        assert_eq!(Config::load(&p).unwrap(), Config::default());
        let c = Config {
            destination: Some(Destination::Folder {
                path: "/media/usb/backup".into(),
            }),
            folders: vec!["/home/a/Documents".into()],
            every_minutes: 15,
            ..Config::default()
        };
        c.save(&p).unwrap();
        assert_eq!(Config::load(&p).unwrap(), c);
        assert!(!p.with_extension("toml.tmp").exists());
        // A trimmed file keeps what it says and takes defaults for the rest.
        std::fs::write(&p, "every_minutes = 5\n[retention]\ndaily = 3\n").unwrap();
        let trimmed = Config::load(&p).unwrap();
        assert_eq!(trimmed.every_minutes, 5);
        assert_eq!(trimmed.retention.daily, 3);
        assert_eq!(trimmed.retention.weekly, Retention::default().weekly);
        assert_eq!(trimmed.excludes, default_excludes());
    }

    #[test]
    fn damaged_or_invalid_settings_are_refused_clearly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.toml");
        std::fs::write(&p, "every_minutes = \"soon\"").unwrap();
        let e = Config::load(&p).unwrap_err();
        assert_eq!(e.code(), "bad_config");
        assert!(e.to_string().contains("agent.toml"), "{e}");
        let bad = Config {
            folders: vec!["relative/path".into()],
            ..Config::default()
        };
        assert!(bad.save(&p).is_err());
        // The damaged file was not replaced by the refused settings.
        assert!(std::fs::read_to_string(&p).unwrap().contains("soon"));
    }
}
