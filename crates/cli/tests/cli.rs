//! Black-box tests of the `tidemark` binary: each runs the real command in
//! a sealed environment (own HOME, cache and repository in a temporary
//! folder) and judges it only by exit codes, what it prints, and the files
//! it leaves. Shared machinery lives in the `test-support` crate.
//!
//! Every test prints its seed; `TIDEMARK_TEST_SEED=<seed>` replays the
//! trees, changes, offsets and delays it drew.

mod cli {
    mod behaviour;
    mod continuous;
    mod corruption;
    mod crash;
    mod deep_trees;
    mod hostile_input;
    mod hostile_names;
    mod install;
    mod server;
    mod server_stress;
    mod slow_clients;
    mod support;
}
