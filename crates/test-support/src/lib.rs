//! Dev-only helpers for Tidemark's integration tests: seeded randomness
//! that a failing run can replay, deterministic file trees and their
//! comparison, a wrapper that runs the `tidemark` binary in an isolated
//! environment, and surgery on a local repository's files (listing packs,
//! reading a pack's public tail, flipping bits).
//!
//! This crate treats Tidemark as a black box: it knows the on-disk layout
//! that is visible without a key, never the library crates. It must not be
//! a dependency of anything but tests.

pub mod cli;
pub mod compare;
pub mod repo;
pub mod seed;
pub mod tree;

pub use cli::{exit, restored_path, Outcome, Tidemark, PASSWORD};
pub use compare::{assert_same_tree, compare_trees, CompareOptions};
pub use repo::{flip_bit, PackTail, RepoDir};
pub use seed::{noise, test_rng, TestRng};
pub use tree::{FileGroup, Fill, MutateSpec, TreeSpec};
