//! Reading spans back: snapshot bounds to ids and times, paths from node
//! ids, search patterns to SQL, and one search hit from a path's spans.

use super::write::{id_from, kind_from, time_of};
use super::{Filter, Hit, NameQuery, Result, VersionsError, ROOT};
use chrono::{DateTime, Utc};
use crypto::Id;
use format::NodeKind;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A catalogued snapshot, as queries need it.
#[derive(Debug, Clone, Copy)]
pub(super) struct SnapRow {
    pub seq: i64,
    pub id: Id,
    pub line: i64,
    pub time: DateTime<Utc>,
}

/// Every catalogued snapshot, loaded once per query (there are hundreds,
/// not millions): turns span bounds into ids and times.
pub(super) struct Snaps {
    pub by_seq: BTreeMap<i64, SnapRow>,
    /// Each line's snapshot seqs, ascending.
    pub lines: HashMap<i64, Vec<i64>>,
    pub hosts: HashMap<i64, String>,
}

impl Snaps {
    pub fn row(&self, seq: i64) -> Option<&SnapRow> {
        self.by_seq.get(&seq)
    }

    pub fn by_id(&self, id: &Id) -> Option<&SnapRow> {
        self.by_seq.values().find(|s| s.id == *id)
    }

    /// The line's last snapshot inside `[from, to)`.
    pub fn last_in(&self, line: i64, from: i64, to: Option<i64>) -> Option<&SnapRow> {
        let seqs = self.lines.get(&line)?;
        let end = match to {
            Some(t) => seqs.partition_point(|s| *s < t),
            None => seqs.len(),
        };
        let s = *seqs.get(end.checked_sub(1)?)?;
        (s >= from).then(|| self.row(s)).flatten()
    }

    pub fn count_in(&self, line: i64, from: i64, to: Option<i64>) -> u32 {
        let Some(seqs) = self.lines.get(&line) else {
            return 0;
        };
        let start = seqs.partition_point(|s| *s < from);
        let end = match to {
            Some(t) => seqs.partition_point(|s| *s < t),
            None => seqs.len(),
        };
        end.saturating_sub(start) as u32
    }
}

/// A version row as read back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub line: i64,
    pub from: i64,
    pub to: Option<i64>,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Span {
    pub fn contains(&self, seq: i64) -> bool {
        self.from <= seq && self.to.is_none_or(|t| seq < t)
    }
}

/// Reads `line, from_seq, to_seq, kind, size, mtime` starting at column `at`.
pub(super) fn span_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Span> {
    Ok(Span {
        line: r.get(at)?,
        from: r.get(at + 1)?,
        to: r.get(at + 2)?,
        kind: kind_from(r.get(at + 3)?),
        size: r.get::<_, i64>(at + 4)? as u64,
        mtime_ns: r.get(at + 5)?,
    })
}

pub(super) fn load_snaps(db: &Connection) -> rusqlite::Result<Snaps> {
    let mut st = db.prepare_cached("SELECT seq, id, line, time FROM snaps ORDER BY seq")?;
    let rows = st.query_map([], |r| {
        Ok(SnapRow {
            seq: r.get(0)?,
            id: id_from(r.get(1)?)?,
            line: r.get(2)?,
            time: time_of(r.get(3)?),
        })
    })?;
    let mut s = Snaps {
        by_seq: BTreeMap::new(),
        lines: HashMap::new(),
        hosts: HashMap::new(),
    };
    for row in rows {
        let row = row?;
        s.lines.entry(row.line).or_default().push(row.seq);
        s.by_seq.insert(row.seq, row);
    }
    let mut st = db.prepare_cached("SELECT id, host FROM lines")?;
    for row in st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (id, host) = row?;
        s.hosts.insert(id, host);
    }
    Ok(s)
}

/// Follows an absolute path from `/` through the node table.
pub(super) fn node_of(db: &Connection, path: &str) -> rusqlite::Result<Option<i64>> {
    let mut st = db.prepare_cached("SELECT id FROM nodes WHERE parent = ?1 AND name = ?2")?;
    let mut node = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match st.query_row(params![node, part], |r| r.get(0)).optional()? {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// Full paths of nodes, built from their parents with the folders cached:
/// hits cluster in few folders.
#[derive(Default)]
pub(super) struct PathCache {
    dirs: HashMap<i64, String>,
}

impl PathCache {
    pub fn path(&mut self, db: &Connection, node: i64) -> rusqlite::Result<String> {
        let (parent, name) = Self::entry(db, node)?;
        let dir = self.dir(db, parent)?;
        Ok(if dir.ends_with('/') {
            format!("{dir}{name}")
        } else {
            format!("{dir}/{name}")
        })
    }

    fn entry(db: &Connection, node: i64) -> rusqlite::Result<(i64, String)> {
        let mut st = db.prepare_cached("SELECT parent, name FROM nodes WHERE id = ?1")?;
        st.query_row([node], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// The path of folder `node`, climbing its parents in a loop (a
    /// hostile repository can nest folders deeper than a stack could
    /// recurse). Only the folder asked for is cached: caching every
    /// ancestor would hold a path per level.
    fn dir(&mut self, db: &Connection, node: i64) -> rusqlite::Result<String> {
        if node == ROOT {
            return Ok("/".into());
        }
        if let Some(p) = self.dirs.get(&node) {
            return Ok(p.clone());
        }
        let mut names = Vec::new();
        let mut at = node;
        let mut base = String::new();
        while at != ROOT {
            if let Some(p) = self.dirs.get(&at) {
                base = p.clone();
                break;
            }
            let (parent, name) = Self::entry(db, at)?;
            names.push(name);
            at = parent;
        }
        let mut p = base;
        for name in names.iter().rev() {
            p.push('/');
            p.push_str(name);
        }
        self.dirs.insert(node, p.clone());
        Ok(p)
    }
}

/// The SQL LIKE pattern that preselects candidates through the trigram
/// index (a superset: LIKE has no character classes) and the glob that
/// decides.
pub(super) fn compile(query: &NameQuery) -> Result<(String, globset::GlobMatcher)> {
    let (pattern, raw) = match query {
        NameQuery::Glob(g) => (g.trim().to_string(), g.clone()),
        NameQuery::Contains(c) => {
            let c = c.trim();
            if c.contains('*') || c.contains('?') {
                (format!("*{c}*"), c.to_string())
            } else {
                // What the user typed is literal text here.
                let lit: String = c
                    .chars()
                    .map(|ch| match ch {
                        '[' | ']' | '{' | '}' | '\\' => format!("[{ch}]"),
                        ch => ch.to_string(),
                    })
                    .collect();
                (format!("*{lit}*"), c.to_string())
            }
        }
    };
    let bad = |message: String| VersionsError::BadPattern {
        pattern: raw.clone(),
        message,
    };
    if pattern.is_empty() || pattern == "**" {
        return Err(bad("empty pattern".into()));
    }
    let glob = globset::GlobBuilder::new(&pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map_err(|e| bad(e.to_string()))?
        .compile_matcher();
    let mut like = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '[' => {
                // A class or an escaped literal: one character either way.
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                like.push('_');
            }
            '{' => {
                // Alternatives: any text.
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
                like.push('%');
            }
            // LIKE's own wildcards become "any one character": a superset
            // the glob then narrows. (An ESCAPE clause would keep SQLite
            // from handing the LIKE to the trigram index.)
            '%' | '_' => like.push('_'),
            c => like.push(c),
        }
    }
    Ok((like, glob))
}

/// Summarises one path's spans in one backup set, or None when the filter
/// rules it out.
pub(super) fn hit_of(
    snaps: &Snaps,
    wanted: &HashSet<i64>,
    filter: &Filter,
    spans: &[Span],
    name: &str,
) -> Option<Hit> {
    let line = spans.first()?.line;
    let hostname = snaps.hosts.get(&line).cloned().unwrap_or_default();
    if filter.host.as_ref().is_some_and(|h| *h != hostname) {
        return None;
    }
    if !wanted.is_empty() && !spans.iter().any(|s| wanted.iter().any(|w| s.contains(*w))) {
        return None;
    }
    let newest = spans.iter().max_by_key(|s| s.from)?;
    let deleted = spans.iter().all(|s| s.to.is_some());
    let deleted_at = if deleted {
        spans
            .iter()
            .filter_map(|s| s.to)
            .max()
            .and_then(|t| snaps.row(t))
            .map(|r| r.time)
    } else {
        None
    };
    if (filter.deleted || filter.deleted_since.is_some()) && !deleted {
        return None;
    }
    if let (Some(since), Some(at)) = (filter.deleted_since, deleted_at) {
        if at < since {
            return None;
        }
    }
    if filter.kind.is_some_and(|k| k != newest.kind)
        || filter.min_size.is_some_and(|m| newest.size < m)
        || filter.max_size.is_some_and(|m| newest.size > m)
        || filter
            .modified_after
            .is_some_and(|t| newest.mtime_ns < t.timestamp_nanos_opt().unwrap_or(i64::MIN))
        || filter
            .modified_before
            .is_some_and(|t| newest.mtime_ns > t.timestamp_nanos_opt().unwrap_or(i64::MAX))
    {
        return None;
    }
    let first = snaps.row(spans.iter().map(|s| s.from).min()?)?;
    let last = snaps.last_in(line, newest.from, newest.to)?;
    Some(Hit {
        path: String::new(),
        name: name.to_string(),
        hostname,
        kind: newest.kind,
        size: newest.size,
        mtime_ns: newest.mtime_ns,
        versions: spans.len() as u32,
        snapshots: spans
            .iter()
            .map(|s| snaps.count_in(line, s.from, s.to))
            .sum(),
        first_seen: first.time,
        first_snapshot: first.id,
        last_seen: last.time,
        last_snapshot: last.id,
        deleted,
        deleted_at,
    })
}

/// The size from which files are in the `versions_big` partial index.
const BIG_FILE: u64 = 1 << 20;

/// Whether the trigram index can answer `like`: it needs three literal
/// characters in a row.
fn has_trigram(like: &str) -> bool {
    let mut run = 0;
    for c in like.chars() {
        if c == '%' || c == '_' {
            run = 0;
        } else {
            run += 1;
            if run >= 3 {
                return true;
            }
        }
    }
    false
}

/// The SQL that lists candidate names with the filters that one version
/// row can decide (a superset of what [`hit_of`] keeps), so SQLite, not a
/// query per name, discards most of them. Names are found through the
/// trigram index when the pattern allows; otherwise, with a filter, from
/// the versions table. `None`: nothing can match (no such host).
pub(super) fn candidates_sql(
    snaps: &Snaps,
    filter: &Filter,
    like: &str,
) -> rusqlite::Result<Option<(String, Vec<rusqlite::types::Value>)>> {
    use rusqlite::types::Value;
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Value> = vec![Value::Text(like.to_string())];
    let arg = |v: Value, args: &mut Vec<Value>| {
        args.push(v);
        format!("?{}", args.len())
    };
    if let Some(host) = &filter.host {
        let lines: Vec<i64> = snaps
            .hosts
            .iter()
            .filter(|(_, h)| *h == host)
            .map(|(l, _)| *l)
            .collect();
        if lines.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        conds.push(format!("v.line IN ({})", list.join(",")));
    }
    if let Some(k) = filter.kind {
        conds.push(format!(
            "v.kind = {}",
            arg(Value::Integer(super::write::kind_code(k)), &mut args)
        ));
    }
    if let Some(m) = filter.min_size {
        conds.push(format!(
            "v.size >= {}",
            arg(Value::Integer(m as i64), &mut args)
        ));
    }
    if let Some(m) = filter.max_size {
        conds.push(format!(
            "v.size <= {}",
            arg(Value::Integer(m.min(i64::MAX as u64) as i64), &mut args)
        ));
    }
    if let Some(t) = filter.modified_after {
        let ns = t.timestamp_nanos_opt().unwrap_or(i64::MIN);
        conds.push(format!("v.mtime >= {}", arg(Value::Integer(ns), &mut args)));
    }
    if let Some(t) = filter.modified_before {
        let ns = t.timestamp_nanos_opt().unwrap_or(i64::MAX);
        conds.push(format!("v.mtime <= {}", arg(Value::Integer(ns), &mut args)));
    }
    if filter.deleted || filter.deleted_since.is_some() {
        conds.push("v.to_seq IS NOT NULL".into());
    }
    if let Some(since) = filter.deleted_since {
        // The first snapshot at or after `since`: a deletion that late
        // closes its version there or later.
        match snaps.by_seq.values().find(|s| s.time >= since) {
            Some(first) => conds.push(format!(
                "v.to_seq >= {}",
                arg(Value::Integer(first.seq), &mut args)
            )),
            None => return Ok(None),
        }
    }
    // Large files have their own (partial) index: the one filter narrow
    // enough to lead when the name pattern cannot.
    let big = filter.min_size.is_some_and(|m| m >= BIG_FILE);
    if big {
        conds.push(format!("v.size >= {BIG_FILE}"));
    }
    let exists = |conds: &[String]| {
        format!(
            "EXISTS (SELECT 1 FROM versions v INDEXED BY versions_node
                     WHERE v.node = n.id AND {})",
            conds.join(" AND ")
        )
    };
    let sql = match (has_trigram(like), conds.is_empty()) {
        (true, true) => "SELECT n.id, n.name FROM names JOIN nodes n ON n.id = names.rowid
             WHERE names.name LIKE ?1"
            .to_string(),
        (true, false) => format!(
            "SELECT n.id, n.name FROM names JOIN nodes n ON n.id = names.rowid
             WHERE names.name LIKE ?1 AND {}",
            exists(&conds)
        ),
        (false, _) if big => format!(
            "SELECT DISTINCT n.id, n.name FROM versions v INDEXED BY versions_big
             JOIN nodes n ON n.id = v.node WHERE {} AND n.name LIKE ?1",
            conds.join(" AND ")
        ),
        // Fewer than three letters in a row: the trigram index cannot
        // help, and scanning it reads each name back through the nodes
        // table; scanning the nodes table itself is several times faster.
        (false, true) => {
            "SELECT n.id, n.name FROM nodes n WHERE n.name LIKE ?1 AND n.id <> 1".to_string()
        }
        (false, false) => format!(
            "SELECT n.id, n.name FROM nodes n WHERE n.name LIKE ?1 AND n.id <> 1 AND {}",
            exists(&conds)
        ),
    };
    Ok(Some((sql, args)))
}
