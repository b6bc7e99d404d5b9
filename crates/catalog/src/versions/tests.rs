use super::write::time_of;
use super::*;
use format::{EntryName, Node, SnapshotSummary};
use std::cell::RefCell;
use std::collections::HashMap;

/// Trees in memory, counting loads so tests can see what a sync read.
#[derive(Default)]
struct Mem {
    trees: RefCell<HashMap<Id, Arc<Tree>>>,
    loads: RefCell<usize>,
    broken: RefCell<HashSet<Id>>,
}

impl TreeSource for Mem {
    fn tree(&self, id: &Id) -> std::result::Result<Arc<Tree>, String> {
        *self.loads.borrow_mut() += 1;
        if self.broken.borrow().contains(id) {
            return Err("unreadable".into());
        }
        self.trees
            .borrow()
            .get(id)
            .cloned()
            .ok_or_else(|| "missing".into())
    }
}

fn node(name: &str, kind: NodeKind) -> Node {
    Node::new(EntryName::new(name.as_bytes().to_vec()), kind, 0o644)
}

#[derive(Default)]
struct Dir(BTreeMap<String, Dir>, Vec<Node>);

impl Mem {
    /// Builds trees for files given as (absolute path, content byte,
    /// size); returns the root id. Equal folders get equal ids.
    fn root(&self, files: &[(&str, u8, u64)]) -> Id {
        let mut top = Dir::default();
        for (path, content, size) in files {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let (name, dirs) = parts.split_last().expect("a path");
            let mut d = &mut top;
            for p in dirs {
                d = d.0.entry(p.to_string()).or_default();
            }
            let mut n = node(name, NodeKind::File);
            n.size = *size;
            n.mtime_ns = i64::from(*content) * 1_000_000_000;
            n.content = vec![Id([*content; 32])];
            d.1.push(n);
        }
        self.store(&top)
    }

    fn store(&self, d: &Dir) -> Id {
        let mut t = Tree::default();
        t.nodes.extend(d.1.iter().cloned());
        for (name, sub) in &d.0 {
            let mut n = node(name, NodeKind::Dir);
            n.subtree = Some(self.store(sub));
            t.nodes.push(n);
        }
        t.sort();
        let id = Id(*blake3::hash(&format::to_json(&t)).as_bytes());
        self.trees.borrow_mut().insert(id, Arc::new(t));
        id
    }
}

fn snap(host: &str, minute: i64, root: Id) -> (Id, Snapshot) {
    let s = Snapshot {
        version: 1,
        time: time_of(1_700_000_000_000 + minute * 60_000),
        hostname: host.into(),
        username: "u".into(),
        paths: vec!["/home/u".into()],
        tree: root,
        parent: None,
        tags: Vec::new(),
        summary: SnapshotSummary::default(),
    };
    let mut h = blake3::Hasher::new();
    h.update(host.as_bytes());
    h.update(&minute.to_le_bytes());
    (Id(*h.finalize().as_bytes()), s)
}

fn contains(q: &str) -> NameQuery {
    NameQuery::Contains(q.into())
}

fn search(c: &VersionCatalog, q: &NameQuery, f: &Filter) -> Vec<Hit> {
    c.search(q, f, 100).expect("search").hits
}

#[test]
fn versions_deletions_and_search_follow_the_snapshots() {
    let m = Mem::default();
    let c = VersionCatalog::in_memory().unwrap();
    let s1 = snap(
        "lap",
        0,
        m.root(&[("/home/u/Docs/Report.txt", 1, 10), ("/home/u/a.txt", 9, 5)]),
    );
    let s2 = snap(
        "lap",
        10,
        m.root(&[("/home/u/Docs/Report.txt", 2, 20), ("/home/u/a.txt", 9, 5)]),
    );
    let s3 = snap("lap", 20, m.root(&[("/home/u/a.txt", 9, 5)]));
    let all = vec![s1.clone(), s2.clone(), s3.clone()];
    let r = c.sync(&all, &m).unwrap();
    assert_eq!((r.added, r.removed, r.rebuilt), (3, 0, 0));
    assert!(r.failed.is_empty());

    let v = c.versions("/home/u/Docs/Report.txt", None).unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (v[0].size, v[0].first_snapshot, v[0].last_snapshot),
        (10, s1.0, s1.0)
    );
    assert_eq!(
        (v[1].size, v[1].first_snapshot, v[1].last_snapshot),
        (20, s2.0, s2.0)
    );
    assert!(!v[1].current);

    let hits = search(&c, &contains("report"), &Filter::default());
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = &hits[0];
    assert_eq!(h.path, "/home/u/Docs/Report.txt");
    assert!(h.deleted);
    assert_eq!(h.deleted_at, Some(s3.1.time));
    assert_eq!(
        (h.first_seen, h.last_seen, h.last_snapshot),
        (s1.1.time, s2.1.time, s2.0)
    );
    assert_eq!((h.versions, h.snapshots, h.size), (2, 2, 20));
    // The folder is gone too, and both show as deleted at s3.
    let gone = c.deleted_in("/home/u", &s3.0).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].name.as_str(), gone[0].kind),
        ("Docs", NodeKind::Dir)
    );
    let gone = c.deleted_in("/home/u/Docs", &s3.0).unwrap();
    assert_eq!(gone[0].name, "Report.txt");
    assert_eq!(gone[0].last_snapshot, s2.0);
    assert!(c.deleted_in("/home/u/Docs", &s2.0).unwrap().is_empty());

    // Filters.
    let f = Filter {
        deleted: true,
        ..Default::default()
    };
    assert_eq!(search(&c, &contains("txt"), &f).len(), 1);
    let f = Filter {
        deleted_since: Some(s3.1.time + chrono::Duration::seconds(1)),
        ..Default::default()
    };
    assert!(search(&c, &contains("txt"), &f).is_empty());
    let f = Filter {
        min_size: Some(6),
        ..Default::default()
    };
    assert_eq!(search(&c, &contains(".txt"), &f).len(), 1);
    // No three letters to look names up by: the filter leads instead.
    let big = search(&c, &NameQuery::Glob("*".into()), &f);
    assert_eq!(
        big.iter().map(|h| h.path.as_str()).collect::<Vec<_>>(),
        vec!["/home/u/Docs/Report.txt"]
    );
    let f = Filter {
        deleted: true,
        host: Some("lap".into()),
        kind: Some(NodeKind::File),
        ..Default::default()
    };
    assert_eq!(search(&c, &NameQuery::Glob("*".into()), &f).len(), 1);
    let f = Filter {
        in_snapshots: vec![s3.0],
        ..Default::default()
    };
    let hits = search(&c, &contains(".txt"), &f);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/home/u/a.txt");
    let f = Filter {
        host: Some("other".into()),
        ..Default::default()
    };
    assert!(search(&c, &contains("txt"), &f).is_empty());
    let f = Filter {
        kind: Some(NodeKind::Dir),
        ..Default::default()
    };
    assert_eq!(search(&c, &contains("doc"), &f)[0].path, "/home/u/Docs");
}

#[test]
fn globs_are_whole_name_and_case_insensitive_contains_is_substring() {
    let m = Mem::default();
    let c = VersionCatalog::in_memory().unwrap();
    let s = snap(
        "lap",
        0,
        m.root(&[
            ("/d/IMG_0001.JPG", 1, 1),
            ("/d/notes_100%.md", 2, 1),
            ("/d/x.jpg.bak", 3, 1),
            ("/d/ab", 4, 1),
            ("/d/disk.iso", 5, 3 << 20),
        ]),
    );
    c.sync(&[s], &m).unwrap();
    let names = |q: NameQuery| -> Vec<String> {
        let mut v: Vec<String> = search(&c, &q, &Filter::default())
            .into_iter()
            .map(|h| h.name)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(NameQuery::Glob("*.jpg".into())), vec!["IMG_0001.JPG"]);
    assert_eq!(
        names(NameQuery::Glob("img_000?.jpg".into())),
        vec!["IMG_0001.JPG"]
    );
    assert_eq!(
        names(NameQuery::Glob("[i]mg*".into())),
        vec!["IMG_0001.JPG"]
    );
    assert_eq!(names(contains("JPG")), vec!["IMG_0001.JPG", "x.jpg.bak"]);
    // LIKE's own wildcards are literal text here.
    assert_eq!(names(contains("100%")), vec!["notes_100%.md"]);
    assert_eq!(names(contains("_1")), vec!["notes_100%.md"]);
    // Shorter than a trigram: still found, by scanning.
    assert_eq!(names(contains("ab")), vec!["ab"]);
    assert!(c
        .search(&NameQuery::Glob("[".into()), &Filter::default(), 10)
        .is_err());
    // Large files: found from their own index, whatever the name.
    let big = Filter {
        min_size: Some(2 << 20),
        ..Default::default()
    };
    let found = c.search(&NameQuery::Glob("*".into()), &big, 10).unwrap();
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].name, "disk.iso");
    let found = c.search(&contains("is"), &big, 10).unwrap();
    assert_eq!(found.hits.len(), 1);
    // The limit says so when it cuts.
    let r = c.search(&contains("."), &Filter::default(), 2).unwrap();
    assert_eq!((r.hits.len(), r.truncated), (2, true));
}

fn refs(v: &[(String, u8, u64)]) -> Vec<(&str, u8, u64)> {
    v.iter().map(|(p, c, s)| (p.as_str(), *c, *s)).collect()
}

#[test]
fn a_new_snapshot_reads_only_the_changed_folders() {
    let m = Mem::default();
    let mut files: Vec<(String, u8, u64)> = Vec::new();
    for d in 0..50 {
        for f in 0..20 {
            files.push((format!("/h/d{d}/f{f}"), 1, 100));
        }
    }
    let c = VersionCatalog::in_memory().unwrap();
    let s1 = snap("lap", 0, m.root(&refs(&files)));
    c.sync(std::slice::from_ref(&s1), &m).unwrap();
    assert_eq!(c.stats().unwrap().versions, 1000 + 50 + 1);
    files[7 * 20 + 3].1 = 2;
    let s2 = snap("lap", 1, m.root(&refs(&files)));
    *m.loads.borrow_mut() = 0;
    c.sync(&[s1.clone(), s2.clone()], &m).unwrap();
    // Old and new trees of /, /h and /h/d7; none of the 49 other folders.
    assert_eq!(*m.loads.borrow(), 6);
    assert_eq!(c.stats().unwrap().versions, 1052);
    assert_eq!(c.versions("/h/d7/f3", None).unwrap().len(), 2);
    assert_eq!(c.versions("/h/d8/f3", None).unwrap()[0].snapshots, 2);
    // Nothing new: nothing read.
    *m.loads.borrow_mut() = 0;
    assert_eq!(c.sync(&[s1, s2], &m).unwrap(), SyncReport::default());
    assert_eq!(*m.loads.borrow(), 0);
}

#[test]
fn thinning_a_snapshot_keeps_the_spans_right() {
    let m = Mem::default();
    let c = VersionCatalog::in_memory().unwrap();
    // x: v1 in s1, v2 only in s2, v1 again in s3 and s4.
    // y: only in s2. z: everywhere.
    let s1 = snap("lap", 0, m.root(&[("/x", 1, 1), ("/z", 5, 1)]));
    let s2 = snap(
        "lap",
        1,
        m.root(&[("/x", 2, 2), ("/y", 3, 1), ("/z", 5, 1)]),
    );
    let s3 = snap("lap", 2, m.root(&[("/x", 1, 1), ("/z", 5, 1)]));
    let s4 = snap("lap", 3, m.root(&[("/x", 1, 1), ("/z", 5, 1)]));
    c.sync(&[s1.clone(), s2.clone(), s3.clone(), s4.clone()], &m)
        .unwrap();
    assert_eq!(c.versions("/x", None).unwrap().len(), 3);
    let r = c.sync(&[s1.clone(), s3.clone(), s4.clone()], &m).unwrap();
    assert_eq!(r.removed, 1);
    let v = c.versions("/x", None).unwrap();
    assert_eq!(v.len(), 1, "v1 again after v2 went: one version {v:?}");
    assert_eq!(
        (v[0].first_snapshot, v[0].last_snapshot, v[0].snapshots),
        (s1.0, s4.0, 3)
    );
    assert!(c.versions("/y", None).unwrap().is_empty());
    assert!(search(&c, &contains("y"), &Filter::default()).is_empty());
    // Dropping the newest: what it lacked is current again.
    let s5 = snap("lap", 4, m.root(&[("/z", 5, 1)]));
    c.sync(&[s1.clone(), s3.clone(), s4.clone(), s5.clone()], &m)
        .unwrap();
    assert!(!c.versions("/x", None).unwrap()[0].current);
    c.sync(&[s1.clone(), s3.clone(), s4.clone()], &m).unwrap();
    assert!(c.versions("/x", None).unwrap()[0].current);
    // Dropping the oldest moves the first sighting forward.
    c.sync(&[s3.clone(), s4.clone()], &m).unwrap();
    let v = c.versions("/z", None).unwrap();
    assert_eq!((v.len(), v[0].first_snapshot, v[0].snapshots), (1, s3.0, 2));
    // And a new snapshot diffs against the newest remaining one.
    let s6 = snap("lap", 5, m.root(&[("/z", 6, 1)]));
    c.sync(&[s3, s4, s6], &m).unwrap();
    assert!(c.versions("/x", None).unwrap().iter().all(|v| !v.current));
    assert_eq!(c.versions("/z", None).unwrap().len(), 2);
}

#[test]
fn a_late_snapshot_from_the_past_rebuilds_its_backup_set_and_others_stay_apart() {
    let m = Mem::default();
    let c = VersionCatalog::in_memory().unwrap();
    let a1 = snap("lap", 0, m.root(&[("/f", 1, 1)]));
    let a3 = snap("lap", 20, m.root(&[("/f", 3, 1)]));
    let b1 = snap("desk", 5, m.root(&[("/f", 9, 1)]));
    c.sync(&[a1.clone(), a3.clone(), b1.clone()], &m).unwrap();
    let a2 = snap("lap", 10, m.root(&[("/f", 2, 1)]));
    let r = c.sync(&[a1, a2, a3, b1], &m).unwrap();
    assert_eq!((r.rebuilt, r.added), (1, 3));
    assert_eq!(c.versions("/f", Some("lap")).unwrap().len(), 3);
    assert_eq!(c.versions("/f", Some("desk")).unwrap().len(), 1);
    assert_eq!(c.versions("/f", None).unwrap().len(), 4);
    let hits = search(&c, &NameQuery::Glob("f".into()), &Filter::default());
    assert_eq!(hits.len(), 2, "one hit per backup set");
}

#[test]
fn an_unreadable_snapshot_is_reported_and_the_rest_catalogued() {
    let m = Mem::default();
    let c = VersionCatalog::in_memory().unwrap();
    let s1 = snap("lap", 0, m.root(&[("/f", 1, 1)]));
    let s2 = snap("lap", 1, m.root(&[("/f", 2, 1), ("/g", 2, 1)]));
    let s3 = snap("lap", 2, m.root(&[("/f", 3, 1), ("/g", 2, 1)]));
    m.broken.borrow_mut().insert(s2.1.tree);
    let r = c.sync(&[s1.clone(), s2.clone(), s3.clone()], &m).unwrap();
    assert_eq!(r.added, 2);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, s2.0);
    assert_eq!(c.versions("/g", None).unwrap()[0].first_snapshot, s3.0);
    // Not retried on every sync.
    assert_eq!(c.sync(&[s1, s2, s3], &m).unwrap(), SyncReport::default());
}

#[test]
fn the_catalog_persists_and_a_damaged_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mem::default();
    let s1 = snap("lap", 0, m.root(&[("/home/u/f.txt", 1, 1)]));
    {
        let c = VersionCatalog::open(dir.path()).unwrap();
        c.sync(std::slice::from_ref(&s1), &m).unwrap();
    }
    let c = VersionCatalog::open(dir.path()).unwrap();
    assert_eq!(search(&c, &contains("f.t"), &Filter::default()).len(), 1);
    let st = c.stats().unwrap();
    assert_eq!((st.snapshots, st.paths, st.versions), (1, 3, 3));
    assert!(st.bytes > 0);
    c.clear().unwrap();
    assert!(search(&c, &contains("f.t"), &Filter::default()).is_empty());
    assert_eq!(c.sync(std::slice::from_ref(&s1), &m).unwrap().added, 1);
    drop(c);
    std::fs::write(dir.path().join(FILE_NAME), vec![7u8; 4096]).unwrap();
    let c = VersionCatalog::open(dir.path()).unwrap();
    assert_eq!(c.stats().unwrap().snapshots, 0);
    assert_eq!(c.sync(&[s1], &m).unwrap().added, 1);
}
