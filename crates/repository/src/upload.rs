//! The upload pipeline: new chunks are compressed and sealed on worker
//! threads, appended to packs, and packs are stored by uploader threads,
//! each stage joined by a bounded queue so memory stays flat however much
//! data flows through.
//!
//! ```text
//! add() ─► [jobs] ─► N sealing workers ─► [sealed] ─► packer ─► [packs] ─► uploaders ─► storage
//!                                                                                  └─► index files
//! ```
//!
//! Crash safety: a pack is listed in an index file only after it is stored,
//! and a snapshot is written only after [`Uploader::finish`] returned, so
//! whatever a snapshot references is durable. Index files are written every
//! [`INDEX_EVERY`] packs, and packs stored but not yet indexed when a backup
//! dies are recovered from their trailers by the next backup.

use crate::blob;
use crate::error::{RepoError, Result};
use crate::packfile::PackBuilder;
use crate::Repository;
use crossbeam_channel::{bounded, Receiver, Sender};
use crypto::Id;
use format::{layout, BlobEntry, BlobKind, IndexFile, IndexPack, FORMAT_VERSION};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Packs per index file: about 256 MiB of data at 16 MiB packs, so a killed
/// backup redoes at most a few seconds of work beyond the unindexed packs it
/// recovers anyway.
const INDEX_EVERY: usize = 16;

/// With a company server, blobs are asked about in batches of up to this
/// many ids or bytes of data: thousands of small files' chunks fit in one
/// request, while the data held for proofs stays bounded.
const BATCH_IDS: usize = 4096;
const BATCH_BYTES: usize = 16 << 20;
/// Pack buffers kept for reuse: enough for the packer and the uploaders.
const SPARE_PACKS: usize = 3;

#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Threads that compress and seal. Defaults to the number of cores.
    pub workers: usize,
    /// Threads that store packs concurrently in a folder or an object
    /// store (helps on high-latency links). A company server's client says
    /// how many packs it keeps in flight ([`crate::Remote::packs_in_flight`]).
    pub uploaders: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            uploaders: 2,
        }
    }
}

/// Counters of one upload session, readable while it runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub blobs_new: AtomicU64,
    pub bytes_new_raw: AtomicU64,
    pub bytes_new_stored: AtomicU64,
    pub packs: AtomicU64,
    pub blobs_known: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UploadStats {
    pub blobs_new: u64,
    pub bytes_new_raw: u64,
    pub bytes_new_stored: u64,
    pub packs: u64,
    pub blobs_known: u64,
}

/// Blobs waiting for one dedup request, and their total size.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
}

struct Job {
    kind: BlobKind,
    id: Id,
    /// The chunk behind [`blob::HEADROOM`] bytes of room, so sealing it
    /// needs no second buffer.
    buf: Vec<u8>,
}

impl Job {
    fn raw(&self) -> &[u8] {
        &self.buf[blob::HEADROOM..]
    }
}

struct Sealed {
    kind: BlobKind,
    id: Id,
    raw_length: u32,
    bytes: Vec<u8>,
}

struct PackOut {
    id: Id,
    bytes: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

struct Shared {
    repo: Arc<Repository>,
    error: Mutex<Option<RepoError>>,
    pending_index: Mutex<Vec<IndexPack>>,
    /// Blobs queued but whose pack is not stored yet. Ids leave once their
    /// pack is stored, so this stays as small as the pipeline, not the backup.
    queued: Mutex<HashSet<Id>>,
    counters: Counters,
    /// Pack buffers back from storage, for the packer to fill again. A
    /// fresh 20 MiB buffer per pack cost page faults and zeroing on every
    /// pack, and glibc kept the freed ones as fragmented heap: peak RSS of
    /// a first backup is a benchmark target.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        let mut g = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, HashSet<Id>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn flush_index(&self, force: bool) -> Result<()> {
        let packs = {
            let mut g = self.pending_index.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_empty() || (!force && !index_file_due(&g)) {
                return Ok(());
            }
            std::mem::take(&mut *g)
        };
        self.repo.write_index_file(&IndexFile {
            version: FORMAT_VERSION,
            packs,
            supersedes: vec![],
        })?;
        Ok(())
    }
}

pub struct Uploader {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    /// With a company server: blobs waiting to be asked about in one request,
    /// and the queue to the thread that asks, so reading goes on meanwhile.
    batch: Mutex<Batch>,
    batches: Option<Sender<Vec<Job>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Uploader {
    pub(crate) fn start(repo: Arc<Repository>, opts: UploadOptions) -> Result<Self> {
        let workers = opts.workers.max(1);
        let shared = Arc::new(Shared {
            repo: Arc::clone(&repo),
            error: Mutex::new(None),
            pending_index: Mutex::new(Vec::new()),
            queued: Mutex::new(HashSet::new()),
            counters: Counters::default(),
            spare: Mutex::new(Vec::new()),
        });
        // Short queues: each slot can hold a 4 MiB chunk, and on two cores a
        // deeper queue only adds memory (peak RSS is a benchmark target).
        let (job_tx, job_rx) = bounded::<Job>(workers);
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(workers);
        // A hand-over, not a queue: every pack in flight is ~20 MiB, and
        // the uploaders already give the overlap between packing and I/O.
        let (pack_tx, pack_rx) = bounded::<PackOut>(0);
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| RepoError::Pipeline(format!("cannot start thread: {e}")))
        };
        for i in 0..workers {
            let (rx, tx, sh) = (job_rx.clone(), sealed_tx.clone(), Arc::clone(&shared));
            threads.push(spawn(
                format!("seal-{i}"),
                Box::new(move || seal_worker(&sh, &rx, &tx)),
            )?);
        }
        drop((job_rx, sealed_tx));
        {
            let sh = Arc::clone(&shared);
            threads.push(spawn(
                "packer".into(),
                Box::new(move || packer(&sh, &sealed_rx, &pack_tx)),
            )?);
        }
        let batches = match repo.remote() {
            Some(_) => {
                // One batch in flight and one waiting: up to 2 x 16 MiB held.
                let (tx, rx) = bounded::<Vec<Job>>(1);
                let (jobs, sh) = (job_tx.clone(), Arc::clone(&shared));
                threads.push(spawn(
                    "dedup".into(),
                    Box::new(move || dedup_worker(&sh, &rx, &jobs)),
                )?);
                Some(tx)
            }
            None => None,
        };
        let uploaders = match repo.remote() {
            Some(remote) => remote.packs_in_flight(),
            None => opts.uploaders,
        };
        for i in 0..uploaders.max(1) {
            let (rx, sh) = (pack_rx.clone(), Arc::clone(&shared));
            threads.push(spawn(
                format!("upload-{i}"),
                Box::new(move || uploader(&sh, &rx)),
            )?);
        }
        Ok(Uploader {
            shared,
            jobs: Some(job_tx),
            batch: Mutex::new(Batch::default()),
            batches,
            threads,
        })
    }

    /// True when this chunk is already stored or queued: the caller may then
    /// skip reading it again.
    pub fn is_known(&self, id: &Id) -> bool {
        let queued = self.shared.queued();
        queued.contains(id) || self.shared.repo.has_blob(id)
    }

    /// Which of `ids` are stored or queued, asked of the index in one
    /// query. A failed query answers none: the caller then asks per id.
    pub fn known_among(&self, ids: &[Id]) -> HashSet<Id> {
        let stored = match self.shared.repo.has_blobs(ids) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "batch index lookup failed");
                return HashSet::new();
            }
        };
        let queued = self.shared.queued();
        ids.iter()
            .zip(stored)
            .filter(|(id, s)| *s || queued.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Queues a blob unless the repository or this session already has it.
    /// Returns true when the blob is new. Blocks when the pipeline is full.
    pub fn add(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<bool> {
        if !self.claim(&id) {
            return Ok(false);
        }
        self.queue(kind, id, blob::with_headroom(raw))?;
        Ok(true)
    }

    /// [`Uploader::add`] for a blob read behind [`crate::BLOB_HEADROOM`] bytes of
    /// room (`buf[BLOB_HEADROOM..]` is the blob): it is sealed in that
    /// buffer, without a copy.
    pub fn add_with_headroom(&self, kind: BlobKind, id: Id, buf: Vec<u8>) -> Result<bool> {
        if buf.len() < blob::HEADROOM {
            return Err(RepoError::Pipeline(
                "a blob was queued without room for its nonce".into(),
            ));
        }
        if !self.claim(&id) {
            return Ok(false);
        }
        self.queue(kind, id, buf)?;
        Ok(true)
    }

    /// True when the blob is new and now marked as queued; false (and
    /// counted) when the repository or this session already has it.
    fn claim(&self, id: &Id) -> bool {
        let known = {
            // Queue first, index second, under the queue's lock: an uploader
            // indexes a pack before it drops the pack's ids from the queue,
            // so a blob is always found in one of the two.
            let mut queued = self.shared.queued();
            queued.contains(id) || self.shared.repo.has_blob(id) || !queued.insert(*id)
        };
        if known {
            self.shared
                .counters
                .blobs_known
                .fetch_add(1, Ordering::Relaxed);
        }
        !known
    }

    fn queue(&self, kind: BlobKind, id: Id, buf: Vec<u8>) -> Result<()> {
        // Readers refuse a blob past its kind's cap, so it is never written.
        let len = buf.len().saturating_sub(blob::HEADROOM);
        if len > format::limits::max_blob(kind) {
            self.shared.queued().remove(&id);
            return Err(RepoError::TooLarge {
                what: format!("a {kind:?} blob of {len} bytes"),
                limit: format::limits::human(format::limits::max_blob(kind)),
            });
        }
        if self.shared.repo.remote().is_some() {
            let full = {
                let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
                batch.bytes += buf.len();
                batch.jobs.push(Job { kind, id, buf });
                batch.jobs.len() >= BATCH_IDS || batch.bytes >= BATCH_BYTES
            };
            if full {
                self.flush_batch()?;
            }
            return Ok(());
        }
        self.send(Job { kind, id, buf })
    }

    fn send(&self, job: Job) -> Result<()> {
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent || self.shared.failed() {
            return Err(self
                .take_error()
                .unwrap_or_else(|| RepoError::Pipeline("upload stopped".into())));
        }
        Ok(())
    }

    /// Hands the batched blobs to the dedup thread (see [`dedup_worker`]).
    fn flush_batch(&self) -> Result<()> {
        let Some(tx) = &self.batches else {
            return Ok(());
        };
        let jobs = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|p| p.into_inner())).jobs;
        if jobs.is_empty() {
            return Ok(());
        }
        if tx.send(jobs).is_err() || self.shared.failed() {
            return Err(self
                .take_error()
                .unwrap_or_else(|| RepoError::Pipeline("upload stopped".into())));
        }
        Ok(())
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn take_error(&self) -> Option<RepoError> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Seals the last pack, waits until every pack is stored and indexed,
    /// and returns what was uploaded. Only after this returns `Ok` may a
    /// snapshot that references the blobs be written.
    pub fn finish(mut self) -> Result<UploadStats> {
        self.flush_batch()?;
        self.batches.take();
        self.jobs.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared
                    .fail(RepoError::Pipeline("a pipeline thread panicked".into()));
            }
        }
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        self.shared.flush_index(true)?;
        let c = &self.shared.counters;
        Ok(UploadStats {
            blobs_new: c.blobs_new.load(Ordering::Relaxed),
            bytes_new_raw: c.bytes_new_raw.load(Ordering::Relaxed),
            bytes_new_stored: c.bytes_new_stored.load(Ordering::Relaxed),
            packs: c.packs.load(Ordering::Relaxed),
            blobs_known: c.blobs_known.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Abandoned without finish (an error upstream): stop the threads.
        self.batches.take();
        self.jobs.take();
        self.shared
            .fail(RepoError::Pipeline("upload abandoned".into()));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn seal_worker(sh: &Shared, rx: &Receiver<Job>, tx: &Sender<Sealed>) {
    let keys = sh.repo.keys().clone();
    let level = sh.repo.config().zstd_level;
    let mut zc = None;
    for job in rx {
        if sh.failed() {
            continue; // drain so add() never blocks forever
        }
        let raw_length = job.raw().len() as u32;
        let bytes = blob::encode_owned(&keys, &job.id, job.buf, level, &mut zc);
        if job.kind == BlobKind::Tree {
            sh.repo.cache_tree(&job.id, &bytes);
        }
        if tx
            .send(Sealed {
                kind: job.kind,
                id: job.id,
                raw_length,
                bytes,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Asks the company server about each batch in one request: the blobs the
/// organisation has are proved and granted, only the rest go on to be
/// sealed and packed. Runs beside the reader, so a round trip to the server
/// never stalls reading.
fn dedup_worker(sh: &Shared, rx: &Receiver<Vec<Job>>, tx: &Sender<Job>) {
    let Some(remote) = sh.repo.remote() else {
        return;
    };
    for jobs in rx {
        if sh.failed() {
            continue; // drain so flush_batch never blocks forever
        }
        let asked: Vec<(Id, &[u8])> = jobs.iter().map(|j| (j.id, j.raw())).collect();
        let needed = match remote.dedup(&asked) {
            Ok(n) if n.len() == jobs.len() => n,
            Ok(_) => {
                sh.fail(RepoError::Remote(
                    "the server answered for a different number of chunks than asked".into(),
                ));
                continue;
            }
            Err(e) => {
                sh.fail(e.into());
                continue;
            }
        };
        for (job, need) in jobs.into_iter().zip(needed) {
            if need {
                if tx.send(job).is_err() {
                    return;
                }
            } else {
                sh.repo.grant([job.id]);
                sh.queued().remove(&job.id);
                sh.counters.blobs_known.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn packer(sh: &Shared, rx: &Receiver<Sealed>, tx: &Sender<PackOut>) {
    let target = sh.repo.config().pack_size as usize;
    let mut pb = PackBuilder::default();
    for s in rx {
        if sh.failed() {
            continue;
        }
        sh.counters.blobs_new.fetch_add(1, Ordering::Relaxed);
        sh.counters
            .bytes_new_raw
            .fetch_add(u64::from(s.raw_length), Ordering::Relaxed);
        sh.counters
            .bytes_new_stored
            .fetch_add(s.bytes.len() as u64, Ordering::Relaxed);
        if pb.is_empty() {
            if let Some(buf) = sh.spare.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                pb.use_buffer(buf);
            }
        }
        pb.push(s.kind, s.id, s.raw_length, &s.bytes, target + target / 4);
        if pb.full(target) {
            let (id, bytes, blobs) = pb.finish(sh.repo.keys());
            if tx.send(PackOut { id, bytes, blobs }).is_err() {
                return;
            }
        }
    }
    if !pb.is_empty() && !sh.failed() {
        let (id, bytes, blobs) = pb.finish(sh.repo.keys());
        let _ = tx.send(PackOut { id, bytes, blobs });
    }
}

fn uploader(sh: &Shared, rx: &Receiver<PackOut>) {
    for p in rx {
        if sh.failed() {
            continue;
        }
        let id = p.id;
        let size = p.bytes.len() as u64;
        let bytes = storage::Bytes::from(p.bytes);
        let stored = match sh.repo.remote() {
            Some(remote) => remote.put_pack(&id, bytes.clone()).map_err(RepoError::from),
            None => {
                sh.repo.note_unindexed_pack(&id);
                sh.repo
                    .storage()
                    .put_shared(&layout::pack(&id), bytes.clone())
                    .map_err(RepoError::from)
            }
        };
        // Storage is done with the bytes unless it kept a reference (then
        // the buffer is simply dropped). One spare per pack in flight.
        if let Ok(buf) = bytes.try_into_mut() {
            let mut spare = sh.spare.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < SPARE_PACKS {
                spare.push(Vec::from(buf));
            }
        }
        if let Err(e) = stored {
            sh.fail(e);
            continue;
        }
        let ip = IndexPack {
            id,
            size,
            blobs: p.blobs,
        };
        sh.repo.index_add(&ip);
        {
            let mut queued = sh.queued();
            for b in &ip.blobs {
                queued.remove(&b.id);
            }
        }
        sh.counters.packs.fetch_add(1, Ordering::Relaxed);
        sh.pending_index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ip);
        if let Err(e) = sh.flush_index(false) {
            sh.fail(e);
        }
    }
}

/// Whether the packs waiting for an index file make one: [`INDEX_EVERY`]
/// packs, or [`format::limits::INDEX_FILE_BLOBS`] blobs (packs of tiny
/// chunks), so no index file grows past what readers accept.
pub(crate) fn index_file_due(pending: &[IndexPack]) -> bool {
    pending.len() >= INDEX_EVERY
        || pending.iter().map(|p| p.blobs.len()).sum::<usize>() >= format::limits::INDEX_FILE_BLOBS
}
