//! The one tokio runtime that drives OpenDAL for the blocking `Storage` API.
//!
//! It is process-wide and never dropped: dropping a runtime from inside
//! another runtime panics, and a storage handle may be dropped anywhere.
//! Futures are spawned onto it and awaited through a std channel instead of
//! `Runtime::block_on`, so a caller that happens to sit inside some other
//! runtime gets a blocked thread rather than a panic.

use std::future::Future;
use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// Two workers match the machines this runs on; the engine's I/O threads do
/// the waiting, the workers only drive sockets and file tasks.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("tidemark-storage")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the storage I/O runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs `fut` to completion on the storage runtime and returns its output.
/// The error is a message for `StorageError::Io` (runtime could not start,
/// or the task panicked).
pub(crate) fn run<F>(fut: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        // The receiver only goes away if the caller's thread died; nothing
        // is left to report to then.
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| "storage task ended without a result (it panicked)".to_string())
}
