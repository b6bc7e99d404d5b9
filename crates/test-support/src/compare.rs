//! Comparing a restored tree with its source: the set of names in every
//! folder, kinds, file bytes, symlink targets, permission bits, owners and
//! modification times (to the nanosecond). Every difference is collected,
//! so one failing restore reports all that is wrong with it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Compare folders' mtimes (a restore sets them last).
    pub dir_mtimes: bool,
    /// Compare symlinks' own mtimes.
    pub symlink_mtimes: bool,
    /// Paths (relative to the roots) expected to be absent from the
    /// restored tree, e.g. files a restore reported as failed.
    pub expect_missing: BTreeSet<PathBuf>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            dir_mtimes: true,
            symlink_mtimes: true,
            expect_missing: BTreeSet::new(),
        }
    }
}

/// Every difference between the tree at `expected` and the one at
/// `actual`, as readable lines; empty when they match.
pub fn compare_trees(expected: &Path, actual: &Path, opts: &CompareOptions) -> Vec<String> {
    let mut diffs = Vec::new();
    compare_entry(expected, actual, Path::new(""), opts, &mut diffs);
    for missing in &opts.expect_missing {
        if fs::symlink_metadata(actual.join(missing)).is_ok() {
            diffs.push(format!(
                "{}: expected to be absent from the restored tree, but it is there",
                missing.display()
            ));
        }
    }
    diffs
}

/// Panics with every difference when the trees differ.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, opts: &CompareOptions) {
    let diffs = compare_trees(expected, actual, opts);
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(40).map(String::as_str).collect();
        panic!(
            "restored tree {} differs from {} in {} place(s):\n  {}{}",
            actual.display(),
            expected.display(),
            diffs.len(),
            shown.join("\n  "),
            if diffs.len() > shown.len() {
                "\n  …"
            } else {
                ""
            }
        );
    }
}

fn mtime(md: &fs::Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}

fn compare_entry(
    exp: &Path,
    act: &Path,
    rel: &Path,
    opts: &CompareOptions,
    diffs: &mut Vec<String>,
) {
    let shown = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    };
    let shown = shown.display();
    let me = match fs::symlink_metadata(exp) {
        Ok(m) => m,
        Err(e) => return diffs.push(format!("{shown}: cannot read the source: {e}")),
    };
    let ma = match fs::symlink_metadata(act) {
        Ok(m) => m,
        Err(e) => return diffs.push(format!("{shown}: missing from the restored tree ({e})")),
    };
    let (te, ta) = (me.file_type(), ma.file_type());
    if te != ta {
        return diffs.push(format!("{shown}: kind differs: {te:?} vs restored {ta:?}"));
    }
    if (me.uid(), me.gid()) != (ma.uid(), ma.gid()) {
        diffs.push(format!(
            "{shown}: owner {}:{} vs restored {}:{}",
            me.uid(),
            me.gid(),
            ma.uid(),
            ma.gid()
        ));
    }
    if te.is_symlink() {
        match (fs::read_link(exp), fs::read_link(act)) {
            (Ok(a), Ok(b)) if a == b => {}
            (a, b) => diffs.push(format!("{shown}: symlink target {a:?} vs restored {b:?}")),
        }
        if opts.symlink_mtimes && mtime(&me) != mtime(&ma) {
            diffs.push(format!(
                "{shown}: symlink mtime {:?} vs restored {:?}",
                mtime(&me),
                mtime(&ma)
            ));
        }
        return;
    }
    if me.mode() & 0o7777 != ma.mode() & 0o7777 {
        diffs.push(format!(
            "{shown}: mode {:o} vs restored {:o}",
            me.mode() & 0o7777,
            ma.mode() & 0o7777
        ));
    }
    if te.is_file() {
        if mtime(&me) != mtime(&ma) {
            diffs.push(format!(
                "{shown}: mtime {:?} vs restored {:?}",
                mtime(&me),
                mtime(&ma)
            ));
        }
        if me.len() != ma.len() {
            diffs.push(format!(
                "{shown}: size {} vs restored {}",
                me.len(),
                ma.len()
            ));
        } else {
            match (fs::read(exp), fs::read(act)) {
                (Ok(a), Ok(b)) => {
                    if a != b {
                        let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
                        diffs.push(format!("{shown}: content differs (first at byte {at})"));
                    }
                }
                (a, b) => diffs.push(format!(
                    "{shown}: cannot read: {:?} / {:?}",
                    a.err(),
                    b.err()
                )),
            }
        }
        return;
    }
    if !te.is_dir() {
        return;
    }
    if opts.dir_mtimes && mtime(&me) != mtime(&ma) {
        diffs.push(format!(
            "{shown}/: folder mtime {:?} vs restored {:?}",
            mtime(&me),
            mtime(&ma)
        ));
    }
    let names = |p: &Path| -> BTreeSet<std::ffi::OsString> {
        fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let (ne, na) = (names(exp), names(act));
    for extra in na.difference(&ne) {
        diffs.push(format!(
            "{}: in the restored tree but not in the source",
            rel.join(extra).display()
        ));
    }
    for name in &ne {
        let child = rel.join(name);
        if opts.expect_missing.contains(&child) {
            continue;
        }
        compare_entry(&exp.join(name), &act.join(name), &child, opts, diffs);
    }
}
