use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Repo(#[from] repository::RepoError),

    #[error("{0}")]
    Format(#[from] format::FormatError),

    #[error("cannot back up '{path}': {message}")]
    Source { path: PathBuf, message: String },

    #[error("path '{0}' is not in the snapshot")]
    PathNotFound(String),

    #[error("no snapshots{}", host.as_ref().map(|h| format!(" of host '{h}'")).unwrap_or_default())]
    NoSnapshots { host: Option<String> },

    #[error("refusing to restore: {0}")]
    Unsafe(String),

    #[error("restore to '{path}' failed: {source}")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid exclude pattern '{pattern}': {message}")]
    BadPattern { pattern: String, message: String },

    #[error("'{path}' nests folders deeper than {} levels; Tidemark reads no further (the snapshot is damaged or was not made by Tidemark)", format::MAX_TREE_DEPTH)]
    TooDeep { path: String },

    #[error("'{0}' is not a file")]
    NotAFile(String),

    #[error("{0}")]
    Io(#[from] std::io::Error),

    #[error("the backup was stopped before it finished; the next one continues where it left off")]
    Cancelled,
}

/// A file or folder the backup could not read as it wanted: reported and
/// counted, never fatal to the backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileError {
    pub path: PathBuf,
    pub kind: FileErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileErrorKind {
    /// Permission denied or an I/O error while reading.
    Unreadable,
    /// Deleted between listing its folder and reading it.
    Vanished,
    /// Kept changing while read; the last read was stored anyway.
    ChangedDuringRead,
}
