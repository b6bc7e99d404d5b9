//! Read-ahead for the files a backup is about to read.
//!
//! The walker reads, chunks and hashes on one thread, so on a cold page
//! cache it waited for the disk with the CPU idle: the first backup of the
//! 1 GiB bench set took 6.2 s cold against 3.7 s warm. Before reading a
//! folder's changed files, the walker names them here; this thread asks the
//! kernel to load them (`posix_fadvise(WILLNEED)`), so the disk works while
//! the walker hashes the previous file. Hints cost no memory of ours (the
//! page cache holds the data) and are dropped when the queue is full: a lost
//! hint only costs speed.
//!
//! Subfolders are named too: listing them and reading their entries' inodes
//! ahead of the walker warms the kernel's caches, which is most of the time
//! of a no-change backup on a cold cache. Two threads keep two requests in
//! flight, which the disk serves faster than one after the other.

use crossbeam_channel::{bounded, Sender};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// How far ahead of the walker the kernel is asked to read, in files.
const QUEUE: usize = 256;
/// The most of one file to ask for at once: a VM image must not flush the
/// page cache; the walker's own sequential reads get readahead beyond it.
const MAX_PER_FILE: u64 = 32 << 20;
const THREADS: usize = 2;

pub(crate) enum Hint {
    /// A file about to be read.
    File(PathBuf),
    /// A folder about to be walked.
    Dir(PathBuf),
}

fn serve(hint: Hint) {
    match hint {
        Hint::File(path) => {
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = rustix::fs::fadvise(
                    &f,
                    0,
                    NonZeroU64::new(MAX_PER_FILE),
                    rustix::fs::Advice::WillNeed,
                );
            }
        }
        Hint::Dir(path) => {
            if let Ok(rd) = std::fs::read_dir(&path) {
                for e in rd.flatten() {
                    let _ = std::fs::symlink_metadata(e.path());
                }
            }
        }
    }
}

pub(crate) struct Prefetcher {
    tx: Option<Sender<Hint>>,
    threads: Vec<JoinHandle<()>>,
}

impl Prefetcher {
    pub(crate) fn start() -> Self {
        let (tx, rx) = bounded::<Hint>(QUEUE);
        let threads: Vec<JoinHandle<()>> = (0..THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("prefetch-{i}"))
                    .spawn(move || rx.into_iter().for_each(serve))
                    .ok()
            })
            .collect();
        Prefetcher {
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Asks for something to be loaded soon. Never blocks.
    pub(crate) fn hint(&self, hint: Hint) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(hint);
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
