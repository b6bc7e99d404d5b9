//! What every test module here needs: the binary under test and a
//! workspace for one test.

use std::path::Path;
use test_support::Tidemark;

/// A temporary folder for one test, removed when dropped.
pub fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tidemark-cli-test-")
        .tempdir()
        .expect("create a temporary folder")
}

/// The `tidemark` binary of this build, with its repository, cache and
/// HOME inside `work`.
pub fn tidemark(work: &Path) -> Tidemark {
    Tidemark::new(env!("CARGO_BIN_EXE_tidemark"), work)
}

/// The string of a JSON value that must be a string.
#[track_caller]
pub fn str_of(v: &serde_json::Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a JSON string, found {v}"))
}

/// The fixtures themselves: a seed must rebuild the same tree, down to
/// modes and nanosecond times, or a printed seed replays nothing.
#[test]
fn generated_trees_replay_from_their_seed() {
    use rand::SeedableRng;
    use test_support::tree::{self, MutateSpec, TreeSpec};
    let work = workdir();
    let build = |name: &str| {
        let root = work.path().join(name);
        let mut rng = test_support::TestRng::seed_from_u64(7);
        tree::generate(&root, &TreeSpec::small(), &mut rng).expect("generate");
        tree::mutate(&root, &MutateSpec::round(), &mut rng).expect("mutate");
        root
    };
    let (a, b) = (build("a"), build("b"));
    test_support::assert_same_tree(&a, &b, &test_support::CompareOptions::default());
}
