//! Where the agent keeps its files. One struct so tests (and a portable
//! install) can put everything under one folder.

use crate::error::{AgentError, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    /// Settings (`agent.toml`).
    pub config: PathBuf,
    /// Enrolments, the agent's run state, the default repository.
    pub data: PathBuf,
    /// Rebuildable caches (the local catalog of each repository).
    pub cache: PathBuf,
}

impl Paths {
    /// The OS's folders for this user (XDG on Linux).
    pub fn for_user() -> Result<Paths> {
        let d = directories::ProjectDirs::from("org", "Tidemark", "tidemark").ok_or_else(|| {
            AgentError::Invalid("cannot find your home folder (is HOME set?)".into())
        })?;
        Ok(Paths {
            config: d.config_dir().to_path_buf(),
            data: d.data_dir().to_path_buf(),
            cache: d.cache_dir().to_path_buf(),
        })
    }

    /// Everything under one folder.
    pub fn under(root: &Path) -> Paths {
        Paths {
            config: root.join("config"),
            data: root.join("data"),
            cache: root.join("cache"),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config.join("agent.toml")
    }

    pub fn state_file(&self) -> PathBuf {
        self.data.join("agent-state.json")
    }

    /// The repository `make run` and the CLI use when none is named.
    pub fn default_repository(&self) -> PathBuf {
        self.data.join("repository")
    }
}
