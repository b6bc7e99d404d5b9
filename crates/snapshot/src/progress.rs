//! Typed progress events. The engine reports, the front end renders: no
//! labels or formatting here.

use crate::error::FileError;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    New,
    Changed,
    Unchanged,
}

/// Receives progress from backup and restore. Every method has a no-op
/// default so a front end implements only what it shows.
pub trait Progress: Send + Sync {
    /// Bytes of file content processed (read for backup, written for restore).
    fn bytes(&self, _n: u64) {}
    fn file_done(&self, _path: &Path, _size: u64, _status: FileStatus) {}
    fn error(&self, _err: &FileError) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}
