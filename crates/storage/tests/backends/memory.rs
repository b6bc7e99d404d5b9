use storage::{conformance, MemoryStorage, Storage};

#[test]
fn memory_storage_keeps_the_contract() {
    conformance::run_all(&MemoryStorage::new());
}

#[test]
fn clones_share_objects() {
    let a = MemoryStorage::new();
    let b = a.clone();
    a.put("k", b"v").expect("put");
    assert_eq!(b.get("k").expect("get"), b"v");
    assert_eq!(b.len(), 1);
}
