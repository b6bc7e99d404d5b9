//! The "what changed" set a batch hands to the backup, kept minimal.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// What changed since the last batch, as folders.
///
/// The two sets are kept minimal against each other: nothing in either set
/// lies inside a `rescan` subtree (the walk covers it), and `rescan` holds no
/// subtree of another of its subtrees. `dirs` entries are independent of one
/// another: re-listing `/a` says nothing about `/a/b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Folders whose entries (a child's content, metadata, creation, deletion, rename) changed:
    /// a backup re-lists exactly these folders (and the folders on the way to them).
    pub dirs: BTreeSet<PathBuf>,
    /// Subtrees that must be walked entirely because events may be missing for them:
    /// a folder created or moved in (inotify adds its watch only after files may already be inside),
    /// an event-queue overflow (then the whole root of that watch), a folder whose watch could not be added.
    pub rescan: BTreeSet<PathBuf>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.rescan.is_empty()
    }

    /// Adds `other` and keeps the sets minimal (a folder of `other.dirs` inside
    /// a subtree to rescan here, or the reverse, is dropped).
    pub fn merge(&mut self, other: Changes) {
        // Subtrees first, so the folders they cover are never inserted at all.
        for p in other.rescan {
            self.add_rescan(p);
        }
        for p in other.dirs {
            self.add_dir(p);
        }
    }

    /// Marks one folder for re-listing, unless a subtree to rescan holds it.
    pub fn add_dir(&mut self, dir: PathBuf) {
        if !self.covered(&dir) {
            self.dirs.insert(dir);
        }
    }

    /// Marks a subtree for a full walk; drops what it now covers.
    pub fn add_rescan(&mut self, dir: PathBuf) {
        if self.covered(&dir) {
            return;
        }
        remove_subtree(&mut self.dirs, &dir);
        remove_subtree(&mut self.rescan, &dir);
        self.rescan.insert(dir);
    }

    /// Whether a subtree to rescan already holds `path` (or is `path`).
    pub fn covered(&self, path: &Path) -> bool {
        // A path has few ancestors (its depth), each one set lookup: cheaper
        // than scanning the rescan set, which may be large after a burst of
        // new folders.
        path.ancestors().any(|a| self.rescan.contains(a))
    }
}

/// Removes `top` and everything below it from `set`.
fn remove_subtree(set: &mut BTreeSet<PathBuf>, top: &Path) {
    // `PathBuf` orders component by component, so a folder's descendants
    // sort right after it, before any sibling (`/a/b/z` < `/a/b.c`): they are
    // one contiguous range starting at `top`.
    let inside: Vec<PathBuf> = set
        .range::<Path, _>((Bound::Included(top), Bound::Unbounded))
        .take_while(|p| p.starts_with(top))
        .cloned()
        .collect();
    for p in inside {
        set.remove(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_rescan_drops_the_folders_and_subtrees_it_covers() {
        let mut c = Changes::default();
        c.add_dir("/r/a".into());
        c.add_dir("/r/a/b/c".into());
        c.add_dir("/r/a.c".into());
        c.add_dir("/r/ab".into());
        c.add_rescan("/r/a/b".into());
        c.add_rescan("/r/a".into());
        assert_eq!(c.rescan, set(&["/r/a"]));
        // `/r/a.c` and `/r/ab` share a prefix of bytes, not of components.
        assert_eq!(c.dirs, set(&["/r/a.c", "/r/ab"]));
    }

    #[test]
    fn nothing_is_added_inside_a_subtree_to_rescan() {
        let mut c = Changes::default();
        c.add_rescan("/r/new".into());
        c.add_dir("/r/new".into());
        c.add_dir("/r/new/x/y".into());
        c.add_rescan("/r/new/x".into());
        c.add_dir("/r".into());
        assert_eq!(c.rescan, set(&["/r/new"]));
        assert_eq!(c.dirs, set(&["/r"]));
    }

    #[test]
    fn merge_keeps_the_sets_minimal_both_ways() {
        let mut a = Changes::default();
        a.add_dir("/r/x/y".into());
        a.add_rescan("/r/z".into());
        let mut b = Changes::default();
        b.add_rescan("/r/x".into());
        b.add_dir("/r/z/q".into());
        b.add_dir("/r".into());
        a.merge(b);
        assert_eq!(a.rescan, set(&["/r/x", "/r/z"]));
        assert_eq!(a.dirs, set(&["/r"]));
        assert!(!a.is_empty());
        assert!(Changes::default().is_empty());
    }
}
