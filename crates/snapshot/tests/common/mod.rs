//! What the engine's integration tests share.

use crypto::KdfParams;
use repository::{InitOptions, OpenOptions, Repository};
use std::sync::Arc;
use storage::{DynStorage, MemoryStorage};

/// A repository in memory, with a key derivation cheap enough for tests.
pub fn new_repo() -> Arc<Repository> {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let opts = InitOptions {
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        ..Default::default()
    };
    Arc::new(Repository::init(s, b"pw", &opts, &OpenOptions::default()).expect("init"))
}
