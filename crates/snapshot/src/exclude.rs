//! Exclusion rules: glob patterns (gitignore-like: a pattern without `/`
//! matches a name at any depth; with `/` it matches the absolute path) and
//! cache folders marked with a `CACHEDIR.TAG` (bford.net/cachedir).

use crate::error::SnapshotError;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Debug, Clone, Default)]
pub struct Excludes {
    names: Option<GlobSet>,
    paths: Option<GlobSet>,
    pub exclude_caches: bool,
}

impl Excludes {
    pub fn new(patterns: &[String], exclude_caches: bool) -> Result<Self, SnapshotError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let (mut n, mut p) = (0, 0);
        for pat in patterns {
            let bad = |e: globset::Error| SnapshotError::BadPattern {
                pattern: pat.clone(),
                message: e.to_string(),
            };
            let trimmed = pat.trim_end_matches('/');
            if trimmed.contains('/') {
                let g = GlobBuilder::new(trimmed)
                    .literal_separator(true)
                    .build()
                    .map_err(bad)?;
                paths.add(g);
                p += 1;
            } else {
                names.add(GlobBuilder::new(trimmed).build().map_err(bad)?);
                n += 1;
            }
        }
        let build = |b: GlobSetBuilder, count: usize| -> Result<Option<GlobSet>, SnapshotError> {
            if count == 0 {
                return Ok(None);
            }
            b.build().map(Some).map_err(|e| SnapshotError::BadPattern {
                pattern: patterns.join(" "),
                message: e.to_string(),
            })
        };
        Ok(Excludes {
            names: build(names, n)?,
            paths: build(paths, p)?,
            exclude_caches,
        })
    }

    pub fn is_excluded(&self, path: &Path, is_dir: bool) -> bool {
        if let (Some(set), Some(name)) = (&self.names, path.file_name()) {
            if set.is_match(name) {
                return true;
            }
        }
        if let Some(set) = &self.paths {
            if set.is_match(path) {
                return true;
            }
        }
        if self.exclude_caches && is_dir {
            if let Ok(head) = std::fs::read(path.join("CACHEDIR.TAG")) {
                return head.starts_with(CACHEDIR_SIGNATURE);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_cache_tags() {
        let e = Excludes::new(
            &[
                "*.tmp".into(),
                "node_modules".into(),
                "/home/*/secret".into(),
            ],
            true,
        )
        .unwrap();
        assert!(e.is_excluded(Path::new("/a/b/x.tmp"), false));
        assert!(e.is_excluded(Path::new("/a/node_modules"), true));
        assert!(e.is_excluded(Path::new("/home/u/secret"), true));
        assert!(!e.is_excluded(Path::new("/home/u/v/secret2"), true));
        assert!(!e.is_excluded(Path::new("/a/b/x.txt"), false));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("CACHEDIR.TAG"),
            b"Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
        assert!(e.is_excluded(d.path(), true));
        assert!(!Excludes::new(&[], false)
            .unwrap()
            .is_excluded(d.path(), true));
        assert!(Excludes::new(&["[".into()], false).is_err());
    }
}
