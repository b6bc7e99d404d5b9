#!/usr/bin/env python3
"""Turn run.sh's raw.tsv and meta.tsv into the markdown report (stdout).

raw.tsv rows: round, tool, metric, value, peak RSS KiB ('-' when not a timed command), exit code.
"""

import statistics
import sys

SCENARIOS = [
    # metric, label, target ratio vs restic (peer time / tidemark time) or None
    ("backup-first", "First backup", 2.0),
    ("backup-nochange", "No-change backup", 3.0),
    ("backup-edit", "Backup after the edit", 2.0),
    ("restore-tmpfs", "Full restore, latest (to tmpfs)", 2.0),
    ("restore-disk", "Full restore, latest (to disk)", None),
    ("restore-single", "Single file from the first snapshot", "all"),
]
MACHINE = [
    ("read", "Read the tree (`tar cf - | cat`)"),
    ("cp-tmpfs", "`cp -a` of the tree into tmpfs"),
    ("b3sum", "`b3sum` of every file"),
    ("zstd", "`tar cf - | zstd -3 -T0`"),
]
MIB = 1 << 20


def load(raw_path, meta_path):
    rows = []
    with open(raw_path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) == 6:
                rows.append(dict(round=int(p[0]), tool=p[1], metric=p[2], value=p[3], rss=p[4], rc=p[5]))
    meta = {}
    with open(meta_path, encoding="utf-8") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k] = v
    return rows, meta


def num(x):
    try:
        v = float(x)
        return None if v != v else v
    except ValueError:
        return None


class Data:
    def __init__(self, rows):
        self.rows = rows

    def values(self, tool, metric, field="value"):
        """(list of good numeric values, number of failed runs)."""
        good, bad = [], 0
        for r in self.rows:
            if r["tool"] == tool and r["metric"] == metric:
                v = num(r[field])
                if r["rc"] == "0" and v is not None:
                    good.append(v)
                else:
                    bad += 1
        return good, bad

    def median(self, tool, metric, field="value"):
        good, _ = self.values(tool, metric, field)
        return statistics.median(good) if good else None

    def texts(self, tool, metric):
        return [r["value"] for r in self.rows if r["tool"] == tool and r["metric"] == metric]


def fmt_secs(v):
    if v is None:
        return "—"
    return "%.2f s" % v if v < 10 else "%.1f s" % v


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "%.2f×" % (a / b)


def cell(d, tool, metric, fmt, field="value", scale=1.0):
    good, bad = d.values(tool, metric, field)
    if not good and not bad:
        return "—"
    if not good:
        return "failed"
    s = fmt(statistics.median(good) / scale)
    if bad:
        s += " (%d failed)" % bad
    return s


def main():
    rows, meta = load(sys.argv[1], sys.argv[2])
    d = Data(rows)
    tools = [t for t in meta.get("tools", "").split(",") if t]
    ref = "tidemark" if "tidemark" in tools else tools[0]
    peers = [t for t in tools if t != ref]
    has_targets = ref == "tidemark" and "restic" in tools
    out = []
    w = out.append

    w("# Tidemark benchmark, %s" % meta.get("date", "?"))
    w("")
    w("Medians of %s round(s); tools alternate their order each round. Ratios are *peer ÷ %s*: above 1 means "
      "%s is faster, smaller or lighter. Method: `docs/benchmarks-method.md`." % (meta.get("rounds"), ref, ref))
    w("")
    w("## Machine and setup")
    w("")
    w("| | |")
    w("| --- | --- |")
    ds = num(meta.get("dataset_bytes", "")) or 0
    facts = [
        ("CPU", "%s × %s" % (meta.get("nproc"), meta.get("cpu"))),
        ("Memory", meta.get("memory")),
        ("Kernel / OS", "%s / %s" % (meta.get("kernel"), meta.get("os"))),
        ("Work dir", "%s (%s)" % (meta.get("work"), meta.get("workfs"))),
        ("Restore tmpfs", meta.get("tmpfs")),
        ("Cache", meta.get("cache")),
        ("Dataset", "seed %s, scale %s: %s files, %.1f MiB apparent, %.1f MiB allocated (generated in %s s)" % (
            meta.get("seed"), meta.get("scale"), meta.get("dataset_files"), ds / MIB,
            (num(meta.get("dataset_alloc_kib", "")) or 0) / 1024, meta.get("dataset_gen_seconds"))),
        ("Edit", meta.get("edit", "—")),
    ]
    for k in sorted(m for m in meta if m.startswith("version:")):
        facts.append((k.split(":", 1)[1], meta[k]))
    for k, v in facts:
        w("| %s | %s |" % (k, (v or "—").replace("|", "\\|")))
    w("")

    # ---- times
    w("## Time (median)")
    w("")
    head = "| Scenario | " + " | ".join(tools) + " | " + " | ".join("%s ÷ %s" % (p, ref) for p in peers)
    sep = "| --- | " + " | ".join("---:" for _ in tools) + " | " + " | ".join("---:" for _ in peers)
    if has_targets:
        head += " | Target | Met |"
        sep += " | --- | --- |"
    else:
        head += " |"
        sep += " |"
    w(head)
    w(sep)
    verdicts = []
    for metric, label, target in SCENARIOS:
        if not any(d.values(t, metric)[0] or d.values(t, metric)[1] for t in tools):
            continue
        line = "| %s | " % label + " | ".join(cell(d, t, metric, fmt_secs) for t in tools)
        refm = d.median(ref, metric)
        line += " | " + " | ".join(fmt_ratio(d.median(p, metric), refm) for p in peers)
        if has_targets:
            met = "—"
            if target == "all":
                tgt = "faster than every peer"
                rs = [d.median(p, metric) for p in peers]
                if refm is not None and all(x is not None for x in rs):
                    met = "yes" if all(x > refm for x in rs) else "**no**"
            elif target:
                tgt = "≥ %g× restic" % target
                rm = d.median("restic", metric)
                if refm and rm is not None:
                    met = "yes" if rm / refm >= target else "**no**"
            else:
                tgt = "—"
            if tgt != "—":
                verdicts.append((label + " time", tgt, met))
            line += " | %s | %s |" % (tgt, met)
        else:
            line += " |"
        w(line)
    w("")
    if ds:
        parts = []
        for t in tools:
            m = d.median(t, "backup-first")
            if m:
                parts.append("%s %.0f MiB/s" % (t, ds / MIB / m))
        mr = d.median("machine", "read")
        if mr:
            parts.append("reading the tree %.0f MiB/s" % (ds / MIB / mr))
        if parts:
            w("First-backup throughput (apparent bytes ÷ time): " + ", ".join(parts) + ".")
            w("")

    # ---- memory
    w("## Peak RSS (median, MiB)")
    w("")
    w("| Scenario | " + " | ".join(tools) + " | " + " | ".join("%s ÷ %s" % (p, ref) for p in peers) + " |")
    w("| --- | " + " | ".join("---:" for _ in tools) + " | " + " | ".join("---:" for _ in peers) + " |")
    max_rss = {}
    for metric, label, _ in SCENARIOS:
        if not any(d.values(t, metric, "rss")[0] for t in tools):
            continue
        line = "| %s | " % label + " | ".join(cell(d, t, metric, lambda v: "%.0f" % v, "rss", 1024) for t in tools)
        refm = d.median(ref, metric, "rss")
        line += " | " + " | ".join(fmt_ratio(d.median(p, metric, "rss"), refm) for p in peers) + " |"
        w(line)
        for t in tools:
            m = d.median(t, metric, "rss")
            if m is not None:
                max_rss[t] = max(max_rss.get(t, 0), m)
    w("| **Largest of the above** | " + " | ".join(
        "%.0f" % (max_rss[t] / 1024) if t in max_rss else "—" for t in tools) + " | " + " | ".join(
        fmt_ratio(max_rss.get(p), max_rss.get(ref)) for p in peers) + " |")
    w("")
    if has_targets and "restic" in max_rss and ref in max_rss:
        verdicts.append(("Peak RSS (largest)", "< restic's", "yes" if max_rss[ref] < max_rss["restic"] else "**no**"))

    # ---- storage
    w("## Stored bytes (`du -sb` of the repository, median)")
    w("")
    w("| After | " + " | ".join(tools) + " | " + " | ".join("%s ÷ %s" % (p, ref) for p in peers) + " |")
    w("| --- | " + " | ".join("---:" for _ in tools) + " | " + " | ".join("---:" for _ in peers) + " |")
    added = {}
    for metric, label in (("stored-first", "First backup"), ("stored-edit", "Backup after the edit (total)")):
        line = "| %s | " % label + " | ".join(cell(d, t, metric, lambda v: "%.1f MiB" % v, scale=MIB) for t in tools)
        refm = d.median(ref, metric)
        line += " | " + " | ".join(fmt_ratio(d.median(p, metric), refm) for p in peers) + " |"
        w(line)
    for t in tools:
        a, b = d.median(t, "stored-first"), d.median(t, "stored-edit")
        if a is not None and b is not None:
            added[t] = b - a
    w("| Added by the no-change + edit backups | " + " | ".join(
        "%.1f MiB" % (added[t] / MIB) if t in added else "—" for t in tools) + " | " + " | ".join(
        fmt_ratio(added.get(p), added.get(ref)) for p in peers) + " |")
    if ds:
        w("| Dataset (apparent) | %.1f MiB | | |" % (ds / MIB))
    w("")
    if has_targets:
        rs, tm = d.median("restic", "stored-edit"), d.median(ref, "stored-edit")
        if rs is not None and tm is not None:
            verdicts.append(("Stored bytes", "≤ restic's", "yes" if tm <= rs else "**no**"))

    # ---- correctness
    w("## Restores checked")
    w("")
    w("Every restore is compared with the source (names, kinds, modes, file mtimes, sizes, contents, symlink targets); "
      "the single-file restore must give the first snapshot's version and nothing else.")
    w("")
    w("| Check | " + " | ".join(tools) + " |")
    w("| --- | " + " | ".join("---" for _ in tools) + " |")
    for metric, label in (("verify-tmpfs", "Full restore to tmpfs matches"), ("verify-disk", "Full restore to disk matches"),
                          ("verify-single", "Single file is the old version")):
        cells = []
        for t in tools:
            v = d.texts(t, metric)
            cells.append("—" if not v else ("%d/%d ok" % (v.count("ok"), len(v)) if v.count("ok") == len(v)
                                            else "**%d/%d ok**" % (v.count("ok"), len(v))))
        if any(c != "—" for c in cells):
            w("| %s | " % label + " | ".join(cells) + " |")
    src_alloc = d.median("source", "alloc")
    src_vm = d.median("source", "vm-alloc")
    for metric, label in (("alloc-tmpfs", "Restored tree, allocated, tmpfs (source: %s)"),
                          ("alloc-disk", "Restored tree, allocated, disk (source: %s)"),
                          ("vm-alloc-tmpfs", "Sparse VM image, allocated, tmpfs (source: %s)"),
                          ("vm-alloc-disk", "Sparse VM image, allocated, disk (source: %s)")):
        src = src_vm if metric.startswith("vm") else src_alloc
        label = label % ("%.0f MiB" % (src / 1024) if src is not None else "?")
        cells = []
        for t in tools:
            g = [num(x) for x in d.texts(t, metric) if num(x) is not None]
            cells.append("%.0f MiB" % (statistics.median(g) / 1024) if g else "—")
        if any(c != "—" for c in cells):
            w("| %s | " % label + " | ".join(cells) + " |")
    w("")

    # ---- machine limits
    if any(d.values("machine", m)[0] for m, _ in MACHINE):
        w("## The machine's own limits on the same (base) dataset")
        w("")
        w("| Operation | Time | MiB/s | Note |")
        w("| --- | ---: | ---: | --- |")
        for m, label in MACHINE:
            med = d.median("machine", m)
            if med is None:
                note = "skipped (tool not installed)" if m == "b3sum" else "failed"
                w("| %s | — | — | %s |" % (label, note))
                continue
            note = ""
            if m == "zstd":
                z = [num(x) for x in d.texts("machine", "zstd-bytes") if num(x)]
                if z and ds:
                    note = "%.1f MiB out, ratio %.2f" % (statistics.median(z) / MIB, ds / statistics.median(z))
            w("| %s | %s | %.0f | %s |" % (label, fmt_secs(med), ds / MIB / med if ds and med else 0, note))
        w("")

    if verdicts:
        w("## Targets")
        w("")
        w("| What | Target | Met |")
        w("| --- | --- | --- |")
        for a, b, c in verdicts:
            w("| %s | %s | %s |" % (a, b, c))
        w("")

    # ---- raw
    w("## Every run (seconds / peak RSS MiB; exit code when not 0)")
    w("")
    allm = [m for m, _, _ in SCENARIOS] + ["init"]
    rounds = sorted({r["round"] for r in rows})
    w("| Round | Scenario | " + " | ".join(tools) + " |")
    w("| ---: | --- | " + " | ".join("---:" for _ in tools) + " |")
    for rd in rounds:
        for m in allm:
            cells = []
            for t in tools:
                rr = [r for r in rows if r["round"] == rd and r["tool"] == t and r["metric"] == m]
                if not rr:
                    cells.append("—")
                    continue
                r = rr[0]
                rss = num(r["rss"])
                s = "%s / %s" % (r["value"], "%.0f" % (rss / 1024) if rss is not None else "?")
                if r["rc"] != "0":
                    s += " (exit %s)" % r["rc"]
                cells.append(s)
            if any(c != "—" for c in cells):
                w("| %d | %s | " % (rd, m) + " | ".join(cells) + " |")
        mc = [r for r in rows if r["round"] == rd and r["tool"] == "machine" and r["rss"] != "-"]
        if mc:
            w("| %d | machine | %s |" % (rd, ", ".join("%s %s s" % (r["metric"], r["value"]) for r in mc))
              + " |" * (len(tools) - 1))
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
