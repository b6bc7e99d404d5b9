//! Zero-touch enrolment: the per-user installer from the company server's
//! download page leaves the organisation's public key and a signed
//! enrolment file in the settings folder; on its first start the agent
//! checks the file against that key (never against a key the file brings),
//! enrols without asking anything, applies the organisation's settings and
//! asks for the first backup. A tampered, foreign or expired file enrols
//! nothing and says why.

use crate::error::{AgentError, Result};
use crate::service::lock;
use crate::{device, Agent, Config};
use format::enrolment::{EnrolmentFile, ENROLMENT_FILE};
use std::path::Path;

/// The organisation's public signing key (hex), beside the enrolment file.
pub const ORG_KEY_FILE: &str = "org-signing.pub";

/// The organisation's public key the installer left in `dir`: the only key
/// enrolment files and update offers are checked against. `what` names
/// what could not be checked without it.
pub fn org_key(dir: &Path, what: &str) -> Result<Vec<u8>> {
    let key_file = dir.join(ORG_KEY_FILE);
    std::fs::read_to_string(&key_file)
        .ok()
        .and_then(|k| hex::decode(k.trim()).ok())
        .ok_or_else(|| {
            AgentError::Invalid(format!(
                "{what} cannot be checked: your organisation's key ({}) is missing or damaged; \
                 install Tidemark from your company's download page",
                key_file.display()
            ))
        })
}

/// Reads and checks the enrolment file in `dir`; `Ok(None)` when there is none.
pub fn read(dir: &Path, now: i64) -> Result<Option<EnrolmentFile>> {
    let file = dir.join(ENROLMENT_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io(&file, e)),
    };
    let key = org_key(dir, &file.display().to_string())?;
    EnrolmentFile::open(&bytes, &key, now)
        .map(Some)
        .map_err(|e| AgentError::Invalid(e.to_string()))
}

/// Applies what the organisation's policy sets for devices: folders
/// (`~/` is the home folder), exclusions, schedule, continuous protection.
pub fn apply_policy(config: &mut Config, policy: &serde_json::Value, home: Option<&Path>) {
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
    };
    if let Some(folders) = policy.get("folders").and_then(strings) {
        config.folders = folders
            .into_iter()
            .filter_map(|f| match (f.strip_prefix("~/"), home) {
                (Some(rest), Some(h)) => Some(h.join(rest).to_string_lossy().into_owned()),
                (Some(_), None) => None,
                (None, _) => Some(f),
            })
            .filter(|f| Path::new(f).is_absolute())
            .collect();
    }
    if let Some(ex) = policy.get("excludes").and_then(strings) {
        config.excludes = ex;
    }
    if let Some(m) = policy.get("every_minutes").and_then(|v| v.as_u64()) {
        config.every_minutes = u32::try_from(m).unwrap_or(u32::MAX);
    }
    if let Some(c) = policy.get("continuous").and_then(|v| v.as_bool()) {
        config.continuous = c;
    }
}

impl Agent {
    /// Enrols from the installer's enrolment file when this device is not
    /// set up yet. Returns the server's address when it enrolled. The file
    /// is renamed once used, so it is never used twice.
    pub fn enrol_from_file(&self) -> Result<Option<String>> {
        let r = self.try_enrol_from_file();
        *lock(self.shared_enrolment_problem()) = r.as_ref().err().map(|e| e.to_string());
        r
    }

    /// Why the installer's enrolment file was not used, when it was not:
    /// the setup page shows it (nothing was enrolled).
    pub fn enrolment_problem(&self) -> Option<String> {
        lock(self.shared_enrolment_problem()).clone()
    }

    fn try_enrol_from_file(&self) -> Result<Option<String>> {
        if self.config().destination.is_some() {
            return Ok(None);
        }
        let dir = self.paths().config.clone();
        let Some(f) = read(&dir, chrono::Utc::now().timestamp())? else {
            return Ok(None);
        };
        let expect = (!f.fingerprint.is_empty()).then(|| f.fingerprint.clone());
        let e = self.enroll_pinned(&f.server, &f.code, expect, None)?;
        let used = dir.join(format!("{ENROLMENT_FILE}.used"));
        if let Err(err) = std::fs::rename(dir.join(ENROLMENT_FILE), &used) {
            tracing::warn!(error = %err, "cannot put the used enrolment file aside");
        }
        let mut config = self.config();
        match device::client(self.paths(), &e.server).and_then(|(c, _)| Ok(c.get("/v1/policy")?)) {
            Ok(policy) => {
                let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
                apply_policy(&mut config, &policy, home.as_deref());
            }
            Err(err) => {
                tracing::warn!(error = %err, "enrolled, but the organisation's settings could not be read; using the defaults")
            }
        }
        self.set_config(config)?;
        tracing::info!(server = %e.server, user = %e.user, "enrolled from the installer's enrolment file");
        self.backup_now();
        Ok(Some(e.server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::signing::SigningKey;

    #[test]
    fn only_a_fresh_file_signed_with_the_installed_key_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        assert!(
            read(d, 0).expect("none").is_none(),
            "no file: nothing to do"
        );
        let (k, _) = SigningKey::generate().expect("key");
        let f = EnrolmentFile::sign(&k, "https://b.example", "AA:BB", "C-1", "ann", 1_000);
        std::fs::write(
            d.join(ENROLMENT_FILE),
            serde_json::to_vec(&f).expect("json"),
        )
        .expect("write");
        let err = read(d, 0).expect_err("no key installed");
        assert!(err.to_string().contains("download page"), "{err}");
        std::fs::write(d.join(ORG_KEY_FILE), hex::encode(k.public_key())).expect("write");
        assert_eq!(read(d, 0).expect("read"), Some(f.clone()));
        let err = read(d, 1_000).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
        let mut t = f;
        t.server = "https://evil.example".into();
        std::fs::write(
            d.join(ENROLMENT_FILE),
            serde_json::to_vec(&t).expect("json"),
        )
        .expect("write");
        let err = read(d, 0).expect_err("tampered");
        assert!(
            err.to_string().contains("not signed by your organisation"),
            "{err}"
        );
    }

    #[test]
    fn the_policy_sets_folders_schedule_and_exclusions() {
        let mut c = Config::default();
        let p = serde_json::json!({
            "folders": ["~/Documents", "/srv/shared", "relative/ignored"],
            "excludes": ["*.iso"],
            "every_minutes": 30,
            "continuous": false,
            "throttle": []
        });
        apply_policy(&mut c, &p, Some(Path::new("/home/ann")));
        assert_eq!(c.folders, vec!["/home/ann/Documents", "/srv/shared"]);
        assert_eq!(c.excludes, vec!["*.iso"]);
        assert_eq!((c.every_minutes, c.continuous), (30, false));
    }
}
