//! The TypeScript the UI compiles against is generated from the Rust
//! command signatures and event types; this fails when the checked-in copy
//! is stale. Regenerate with `make bindings`.

#[test]
fn checked_in_typescript_bindings_are_current() {
    let generated = tidemark_app::typescript_bindings().expect("generate the bindings");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts");
    if std::env::var_os("TIDEMARK_UPDATE_BINDINGS").is_some() {
        std::fs::write(&path, &generated).expect("write ui/src/bindings.ts");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "ui/src/bindings.ts is stale: the Rust commands or types changed. Run `make bindings` and commit the result."
    );
}
