//! A repository whose data lives on the company server. The device keeps a
//! local folder for its own index files and locks; chunks go up through
//! [`Remote`], which asks the server in batches which ones the organisation
//! already has (answering proofs of ownership with the data in hand), and
//! snapshots are committed to and listed from the server.

use crate::error::{RepoError, Result};
use crypto::Id;
use format::Snapshot;

/// A failure talking to the server; the message says what happened and
/// what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Failed(String),
    /// A snapshot was refused because chunks this device believed stored
    /// are gone from the server (pruned after retention): its local
    /// knowledge is stale, see [`crate::Repository::forget_local_index`].
    #[error("{0}")]
    MissingChunks(String),
}

impl From<RemoteError> for RepoError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Failed(m) => RepoError::Remote(m),
            RemoteError::MissingChunks(m) => RepoError::RemoteMissingChunks(m),
        }
    }
}

/// A blob as the server sends it: sealed, with what the reader needs to
/// decode it and to decide whether to cache it.
#[derive(Debug, Clone)]
pub struct RemoteBlob {
    pub sealed: Vec<u8>,
    pub raw_length: u32,
    pub kind: format::BlobKind,
}

/// The company server as the repository sees it.
pub trait Remote: Send + Sync {
    /// For each blob (id and plaintext), whether the server needs it sent
    /// (`true`) or this user now owns it and it may be referenced (`false`).
    fn dedup(&self, blobs: &[(Id, &[u8])]) -> std::result::Result<Vec<bool>, RemoteError>;
    /// Uploads a pack; the server verifies it before indexing. Idempotent.
    fn put_pack(&self, id: &Id, bytes: storage::Bytes) -> std::result::Result<(), RemoteError>;
    /// A blob this user owns, sealed as stored.
    fn get_blob(&self, id: &Id) -> std::result::Result<Option<RemoteBlob>, RemoteError>;
    /// Commits a sealed snapshot object; refused unless every blob it
    /// reaches is owned by the user.
    fn commit_snapshot(&self, sealed: &[u8]) -> std::result::Result<Id, RemoteError>;
    /// This user's snapshots, oldest first by when the server received them.
    fn list_snapshots(&self) -> std::result::Result<Vec<(Id, Snapshot)>, RemoteError>;
    /// One of this user's snapshots; `None` when they have none with this id.
    fn load_snapshot(&self, id: &Id) -> std::result::Result<Option<Snapshot>, RemoteError>;
    /// Packs to upload at once (each costs up to a pack of memory).
    fn packs_in_flight(&self) -> usize {
        2
    }
}

/// What the server does instead of a device, with the reason.
pub(crate) fn refused(what: &str) -> RepoError {
    RepoError::Remote(format!(
        "{what} is not done from a device on a company server: the server verifies and prunes its own storage, and only an administrator or server-side retention removes snapshots"
    ))
}

pub(crate) fn not_found(id: &Id) -> Result<Snapshot> {
    Err(RepoError::SnapshotNotFound(id.to_hex()))
}
