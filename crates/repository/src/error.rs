use crypto::Id;

/// Errors of the repository layer. Each message says what happened and,
/// where there is one, what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),

    #[error("{0}")]
    Format(#[from] format::FormatError),

    #[error("no key of the repository at {location} opens with this password: check the password (or the password file)")]
    WrongPassword { location: String },

    #[error("there is no Tidemark repository at {location}: create one with `tidemark init`")]
    NotARepository { location: String },

    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },

    #[error("chunk {0} is not in the repository's index: the repository is damaged or the snapshot refers to pruned data; run `tidemark verify`")]
    BlobNotFound(Id),

    #[error("{what} is corrupt ({reason}); run `tidemark verify --read-data` to see all damage")]
    Corrupt { what: String, reason: String },

    #[error("{what} decompresses past its {limit} limit: refused (a damaged object, or one made to exhaust memory)")]
    TooLarge { what: String, limit: String },

    #[error("the repository is locked by {holder}; wait for it to finish, or remove a stale lock with `tidemark unlock`")]
    Locked { holder: String },

    #[error("{0}")]
    Key(String),

    #[error("no snapshot matches '{0}'")]
    SnapshotNotFound(String),

    #[error("'{0}' matches more than one snapshot: give more characters of the id")]
    AmbiguousSnapshot(String),

    #[error(transparent)]
    LocalIndex(#[from] crate::index::IndexStoreError),

    #[error("company server: {0}")]
    Remote(String),

    #[error("company server: {0}")]
    RemoteMissingChunks(String),

    #[error("the upload pipeline stopped: {0}")]
    Pipeline(String),
}

impl RepoError {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Self {
        RepoError::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
