use std::path::PathBuf;

/// Errors of the agent. Each says what happened and what the user can do;
/// `code()` is the stable name a front end matches on (never the text).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Tidemark is not set up yet: choose where to back up first")]
    NotConfigured,
    #[error("the backup destination {location} is not available ({reason}); plug in the disk or reconnect, Tidemark will retry")]
    DestinationUnavailable { location: String, reason: String },
    #[error("no password for {location} is stored on this computer; enter it again in Settings")]
    NoPassword { location: String },
    #[error(
        "this device is not enrolled with {url}: enrol it with a code from your administrator"
    )]
    NotEnrolled { url: String },
    /// No Secret Service to keep a secret in; the text says why. The app
    /// then offers a 0600 file, which the user must agree to.
    #[error("this computer's keyring could not be used: {0}")]
    Keyring(String),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the settings file {path} is damaged ({message}); fix or delete it")]
    BadConfig { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no folder named {0} exists")]
    NoSuchFolder(PathBuf),
    #[error(transparent)]
    Repo(#[from] repository::RepoError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Server(#[from] client::ClientError),
    #[error("the backup was stopped")]
    Cancelled,
}

impl AgentError {
    /// The repository error inside, wherever it was wrapped.
    pub fn repo_error(&self) -> Option<&repository::RepoError> {
        match self {
            AgentError::Repo(r) | AgentError::Snapshot(snapshot::SnapshotError::Repo(r)) => Some(r),
            _ => None,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.into(),
            source,
        }
    }

    /// A stable, machine-readable name for the UI.
    pub fn code(&self) -> &'static str {
        use repository::RepoError as R;
        match self {
            AgentError::NotConfigured => "not_configured",
            AgentError::DestinationUnavailable { .. } => "destination_unavailable",
            AgentError::NoPassword { .. } => "no_password",
            AgentError::NotEnrolled { .. } => "not_enrolled",
            AgentError::Keyring(_) => "keyring",
            AgentError::Io { .. } => "io",
            AgentError::BadConfig { .. } => "bad_config",
            AgentError::Invalid(_) => "invalid",
            AgentError::NoSuchFolder(_) => "no_such_folder",
            _ if matches!(self.repo_error(), Some(R::WrongPassword { .. })) => "wrong_password",
            _ if matches!(self.repo_error(), Some(R::NotARepository { .. })) => "not_a_repository",
            _ if matches!(self.repo_error(), Some(R::Locked { .. })) => "locked",
            AgentError::Repo(_) => "repository",
            AgentError::Snapshot(snapshot::SnapshotError::Cancelled) => "cancelled",
            AgentError::Snapshot(_) => "snapshot",
            AgentError::Storage(_) => "storage",
            AgentError::Server(_) => "server",
            AgentError::Cancelled => "cancelled",
        }
    }

    /// Whether waiting and trying again may help (a missing disk, a
    /// dropped connection) rather than the user having to act.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AgentError::DestinationUnavailable { .. }
                | AgentError::Storage(_)
                | AgentError::Server(client::ClientError::Connect { .. })
        )
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
