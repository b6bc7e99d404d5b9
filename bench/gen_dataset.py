#!/usr/bin/env python3
"""Deterministic benchmark datasets for Tidemark (DESIGN.md section 7).

    gen_dataset.py --seed N --out DIR [--scale 1.0]     make a "home folder" (~1 GiB at scale 1.0)
    gen_dataset.py --edit --seed N DIR [--scale 1.0]    apply a "day of work" edit in place
    gen_dataset.py --manifest DIR [--restore-check]     print a digest of a tree (for checks)

Same seed, scale, Python (3.11) and zlib -> byte-identical tree: contents, names, modes,
symlinks and mtimes (files, symlinks and directories all get fixed times). Bulk bytes come
from SHAKE-128 keyed by a seeded PRNG, so they do not depend on the Python version; text and
layout come from random.Random(str-seed), which is stable across CPython 3.x releases.
Standard library only.
"""

import argparse
import base64
import hashlib
import io
import math
import os
import random
import shutil
import stat
import sys
import time
import zipfile

T0 = 1735689600          # 2025-01-01T00:00:00Z: newest mtime of the base dataset
DAY = 86400
TE = T0 + DAY + 9 * 3600  # the edit happens the next day from 09:00
ZIP_TIME = (2024, 6, 1, 12, 0, 0)

# Paths the benchmark scripts rely on (run.sh restores this file from the first snapshot).
JOURNAL = "Documents/Notes/journal.md"
MBOX = "Mail/inbox.mbox"
VM_IMAGE = "VMs/debian-dev.img"

COMMON = """the of and to a in is it you that he was for on are with as I his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most people
my over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end
put home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build
self earth father meeting project budget client report review draft deadline team update server
backup customer invoice release version issue please thanks regards attached schedule""".split()

SYL_C = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
         "st", "tr", "ch", "sh", "br", "pl", "gr", "th", ""]
SYL_V = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io", "y"]


def bulk(rng, n):
    """n pseudo-random bytes: SHAKE-128 keyed from rng (fast, version independent)."""
    if n <= 0:
        return b""
    return hashlib.shake_128(rng.getrandbits(128).to_bytes(16, "little")).digest(n)


class Text:
    """Zipf-distributed word salad: compresses like English text (zstd -3: ~3x)."""

    def __init__(self, rng, nwords=16000):
        words = list(COMMON)
        seen = set(words)
        while len(words) < nwords:
            w = "".join(rng.choice(SYL_C) + rng.choice(SYL_V) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
            if rng.random() < 0.3:
                w += rng.choice(SYL_C)
            if w and w not in seen:
                seen.add(w)
                words.append(w)
        tokens, weights = [], []
        for i, w in enumerate(words):
            f = 1.0 / (i + 2.7) ** 1.05
            tokens += [w, w + ",", w + ".", w + ".\n", w + ".\n\n"]
            weights += [f * 0.84, f * 0.07, f * 0.06, f * 0.02, f * 0.01]
        self.words = words
        self.top = words[:4000]
        self.top_ident = words[:3000]
        self.tokens = tokens
        acc, cum = 0.0, []
        for x in weights:
            acc += x
            cum.append(acc)
        self.cum = cum

    def text(self, rng, nbytes):
        if nbytes <= 0:
            return ""
        k = nbytes // 6 + 8
        s = " ".join(rng.choices(self.tokens, cum_weights=self.cum, k=k))
        while len(s) < nbytes:
            s += " " + " ".join(rng.choices(self.tokens, cum_weights=self.cum, k=k))
        return s[:nbytes]

    def line(self, rng, lo=3, hi=12):
        return " ".join(rng.choices(self.top, k=rng.randint(lo, hi)))

    def ident(self, rng, camel=False):
        parts = rng.choices(self.top_ident, k=rng.choice((1, 2, 2, 3)))
        parts = [p.lower() for p in parts]
        if camel:
            return "".join(p.capitalize() for p in parts)
        return "_".join(parts)


LANGS = {
    "rs": ["use crate::{a}::{A};", "let {a} = {b}({c}, {n});", "let mut {a}: {A} = {A}::new();",
           "pub fn {a}(&self, {b}: &{A}) -> Result<{B}> {{", "fn {a}({b}: u64) -> Option<{A}> {{", "}}",
           "if {a}.{b}() {{", "}} else {{", "match {a} {{", "{A}::{B} => {c}({n}),", "return Ok({a});",
           "// {t}", "/// {t}", "#[derive(Debug, Clone, PartialEq)]", "pub struct {A} {{", "pub {a}: {A},",
           "impl {A} for {B} {{", "for {a} in {b}.iter() {{", "{a}.push({b}.clone());",
           "assert_eq!({a}, {n});", "self.{a} += {n};", "let {a} = self.{b}.get(&{c})?;", "#[test]", ""],
    "py": ["import {a}", "from {a}.{b} import {A}", "def {a}({b}, {c}={n}):", "class {A}({B}):",
           "return {a}.{b}({c})", "{a} = {b}[{n}]", "self.{a} = {b}", "if {a} is None:", "else:",
           "for {a} in {b}:", "# {t}", '"""{t}"""', "raise {A}Error(\"{t}\")", "{a}.append({b})",
           "with open({a}) as {b}:", "assert {a} == {n}", "try:", "except {A} as exc:", "pass", ""],
    "ts": ["import {{ {A} }} from './{a}';", "const {a} = require('{b}');", "export function {a}({b}: {A}) {{",
           "}}", "return {a}.{b}({c});", "// {t}", "/** {t} */", "if (!{a}) {{", "await {a}.{b}({n});",
           "export const {A} = {{ {a}: {n}, {b}: '{c}' }};", "let {a} = {b}.map(({c}) => {c}.{a});",
           "throw new Error('{t}');", "}} else {{", "for (const {a} of {b}) {{", "console.log({a});", ""],
    "c": ["#include <{a}.h>", "#include \"{a}_{b}.h\"", "static int {a}(struct {b} *{c}, size_t {a}_len)",
          "{{", "}}", "return {a}->{b};", "/* {t} */", "if ({a} == NULL) {{", "for (i = 0; i < {n}; i++) {{",
          "{a}[i] = {b}({c}, {n});", "#define {A}_{B} {n}", "memcpy({a}, {b}, sizeof(*{a}));", "goto out;",
          "unsigned long {a} = {n}UL;", "}} else {{", ""],
    "go": ["package {a}", "import \"{a}/{b}\"", "func ({a} *{A}) {B}({b} int) error {{", "}}",
           "if err != nil {{", "return nil, err", "{a} := {b}.{A}({c})", "// {t}", "type {A} struct {{",
           "{A} {B} `json:\"{a}\"`", "for _, {a} := range {b} {{", "defer {a}.Close()", ""],
}
EXT_OF = {"rs": ["rs"] * 8 + ["toml", "md"], "py": ["py"] * 8 + ["cfg", "md"],
          "ts": ["ts", "ts", "tsx", "js", "js", "json", "css", "md"], "c": ["c", "c", "h", "md"],
          "go": ["go"] * 8 + ["mod", "md"]}


class CodeGen:
    def __init__(self, rng, text):
        self.pools = {}
        for lang, tpls in LANGS.items():
            pool = []
            for _ in range(12000):
                t = rng.choice(tpls)
                pool.append(t.format(a=text.ident(rng), b=text.ident(rng), c=text.ident(rng),
                                     A=text.ident(rng, True), B=text.ident(rng, True),
                                     n=rng.choice((0, 1, 2, 8, 16, 64, 255, 1024, rng.randint(0, 99999))),
                                     t=text.line(rng)))
            self.pools[lang] = pool
        self.indents = ["", "    ", "    ", "        ", "        ", "            ", "\t", "\t\t"]

    def code(self, rng, lang, nbytes):
        k = max(1, nbytes // 34)
        lines = rng.choices(self.pools[lang], k=k)
        ind = rng.choices(self.indents, k=k)
        s = "\n".join(a + b for a, b in zip(ind, lines)) + "\n"
        return s[:max(nbytes, 1)] if len(s) > nbytes * 1.5 else s


def lognormal_size(rng, median, sigma, lo, hi):
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def jpeg_bytes(rng, size, text):
    hdr = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00H\x00H\x00\x00"
           b"\xff\xe1\x01\x00Exif\x00\x00MM\x00*\x00\x00\x00\x08"
           + ("Camera %s f/%d.%d ISO %d %s" % (rng.choice(["Canon EOS R6", "Pixel 7", "iPhone 14", "NIKON Z6"]),
                                                 rng.randint(1, 8), rng.randint(0, 9), rng.choice((100, 200, 400, 800)),
                                                 text.line(rng, 2, 5))).encode()[:200].ljust(200, b"\x00")
           + b"\xff\xdb\x00\x43\x00" + bulk(rng, 64)
           + b"\xff\xc0\x00\x11\x08\x0b\xb8\x0f\xa0\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
           + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00")
    body = bulk(rng, max(0, size - len(hdr) - 2))
    return hdr + body + b"\xff\xd9"


def mp3_bytes(rng, size, title, artist):
    def frame(fid, s):
        b = b"\x03" + s.encode("utf-8")
        return fid + len(b).to_bytes(4, "big") + b"\x00\x00" + b
    tags = frame(b"TIT2", title) + frame(b"TPE1", artist) + frame(b"TALB", artist + " - album")
    id3 = b"ID3\x03\x00\x00" + len(tags).to_bytes(4, "big") + tags
    body = bytearray(bulk(rng, max(0, size - len(id3))))
    step = 417
    cnt = len(body[0::step])
    body[0::step] = b"\xff" * cnt
    body[1::step] = b"\xfb" * len(body[1::step])
    body[2::step] = b"\x90" * len(body[2::step])
    body[3::step] = b"\x64" * len(body[3::step])
    return id3 + bytes(body)


def binary_bytes(rng, size, text):
    """Executable-like bytes: random runs, zero runs, strings (compresses maybe 1.5-2x)."""
    out = []
    n = 0
    rnd = bulk(rng, size)
    pos = 0
    words = text.words[:2000]
    while n < size:
        r = rng.random()
        if r < 0.55:
            ln = rng.randint(16, 400)
            out.append(rnd[pos:pos + ln])
            pos += ln
        elif r < 0.8:
            ln = rng.randint(8, 300)
            out.append(b"\x00" * ln)
        else:
            s = ("_".join(rng.choices(words, k=rng.randint(1, 4))) + "\x00").encode()
            out.append(s)
            ln = len(s)
        n += ln
    return b"".join(out)[:size]


def zip_member(name, data, deflate=True):
    zi = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    zi.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    zi.external_attr = 0o644 << 16
    zi.create_system = 3
    return zi, data


def write_zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for zi, data in members:
            z.writestr(zi, data, compresslevel=6 if zi.compress_type == zipfile.ZIP_DEFLATED else None)
    return buf.getvalue()


CT = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Types xmlns="http://schemas.openxmlformats.org/'
      'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
      'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Default Extension="jpeg" '
      'ContentType="image/jpeg"/><Override PartName="/%s" ContentType="application/vnd.openxmlformats-'
      'officedocument.%s.main+xml"/></Types>')
RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="http://schemas.openxmlformats'
        '.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/officeDocument" Target="%s"/></Relationships>')
STYLES = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:styles xmlns:w="http://schemas.openxmlformats'
          '.org/wordprocessingml/2006/main">' + "".join(
              '<w:style w:type="paragraph" w:styleId="Heading%d"><w:name w:val="heading %d"/><w:rPr><w:b/><w:sz '
              'w:val="%d"/></w:rPr></w:style>' % (i, i, 40 - 2 * i) for i in range(1, 10)) + "</w:styles>")


def office_members(rng, kind, text, approx, media):
    """Members of an OOXML-like zip; approx = rough uncompressed XML size."""
    core = ('<?xml version="1.0"?><cp:coreProperties><dc:title>%s</dc:title><dc:creator>%s</dc:creator>'
            '<dcterms:modified>2024-%02d-%02dT10:00:00Z</dcterms:modified></cp:coreProperties>'
            % (text.line(rng, 2, 6), text.line(rng, 2, 2), rng.randint(1, 12), rng.randint(1, 28)))
    if kind == "docx":
        main = "word/document.xml"
        paras = []
        n = 0
        while n < approx:
            t = text.text(rng, rng.randint(80, 900))
            p = '<w:p><w:pPr><w:pStyle w:val="Normal"/></w:pPr><w:r><w:t xml:space="preserve">%s</w:t></w:r></w:p>' % t
            paras.append(p)
            n += len(p)
        body = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="http://schemas.'
                'openxmlformats.org/wordprocessingml/2006/main"><w:body>' + "".join(paras) + "</w:body></w:document>")
        members = [("[Content_Types].xml", CT % (main, "wordprocessingml.document")), ("_rels/.rels", RELS % main),
                   (main, body), ("word/styles.xml", STYLES), ("docProps/core.xml", core)]
        mdir = "word/media/"
    elif kind == "xlsx":
        main = "xl/worksheets/sheet1.xml"
        cols = rng.randint(4, 14)
        rows = []
        n = 0
        r = 1
        while n < approx:
            cells = "".join('<c r="%s%d"><v>%s</v></c>' % (chr(65 + c), r, (
                "%.2f" % (rng.random() * 10 ** rng.randint(1, 6))) if c else str(r * 7 + 3)) for c in range(cols))
            row = '<row r="%d">%s</row>' % (r, cells)
            rows.append(row)
            n += len(row)
            r += 1
        body = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.'
                'openxmlformats.org/spreadsheetml/2006/main"><sheetData>' + "".join(rows) + "</sheetData></worksheet>")
        shared = "<sst>" + "".join("<si><t>%s</t></si>" % text.line(rng, 1, 4) for _ in range(200)) + "</sst>"
        members = [("[Content_Types].xml", CT % (main, "spreadsheetml.sheet")), ("_rels/.rels", RELS % "xl/workbook.xml"),
                   ("xl/workbook.xml", '<workbook><sheets><sheet name="Sheet1" sheetId="1"/></sheets></workbook>'),
                   (main, body), ("xl/sharedStrings.xml", shared), ("docProps/core.xml", core)]
        mdir = "xl/media/"
    else:
        members = [("[Content_Types].xml", CT % ("ppt/presentation.xml", "presentationml.presentation")),
                   ("_rels/.rels", RELS % "ppt/presentation.xml"), ("docProps/core.xml", core)]
        n = 0
        i = 1
        while n < approx:
            s = ('<p:sld><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>%s</a:t></a:r></a:p><a:p><a:r><a:t>%s'
                 '</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>'
                 % (text.line(rng, 2, 8), text.text(rng, rng.randint(200, 3000))))
            members.append(("ppt/slides/slide%d.xml" % i, s))
            n += len(s)
            i += 1
        members.append(("ppt/presentation.xml", "<p:presentation>%s</p:presentation>" % "".join(
            '<p:sldId id="%d"/>' % (255 + k) for k in range(1, i))))
        mdir = "ppt/media/"
    out = [zip_member(name, data.encode("utf-8")) for name, data in members]
    for k, m in enumerate(media):
        out.append(zip_member("%simage%d.jpeg" % (mdir, k + 1), m, deflate=True))
    return out


def pdf_bytes(rng, size, text):
    parts = [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"]
    n = len(parts[0])
    obj = 1
    while n < size - 64:
        if rng.random() < 0.25:
            s = ("%d 0 obj\n<< /Type /Page /Contents %d 0 R >>\nBT /F1 11 Tf (%s) Tj ET\nendobj\n"
                 % (obj, obj + 1, text.text(rng, rng.randint(200, 3000)))).encode()
        else:
            ln = min(rng.randint(4096, 262144), max(16, size - n))
            s = b"%d 0 obj\n<< /Filter /FlateDecode /Length %d >>\nstream\n" % (obj, ln) + bulk(rng, ln) + \
                b"\nendstream\nendobj\n"
        parts.append(s)
        n += len(s)
        obj += 1
    parts.append(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")
    return b"".join(parts)


def mail(rng, text, when, attachments, quote=None):
    """One mbox message; attachments: list of (filename, bytes)."""
    frm = "%s.%s@%s" % (rng.choice(text.words[:300]), rng.choice(text.words[300:3000]),
                        rng.choice(["example.com", "example.org", "mail.example.net"]))
    subj = text.line(rng, 2, 9)
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    mid = "<%x.%x@example.com>" % (rng.getrandbits(64), when)
    body = text.text(rng, lognormal_size(rng, 1500, 1.0, 80, 40000)).replace("\nFrom ", "\n>From ")
    if quote:
        body += "\n\nOn a previous day someone wrote:\n" + "\n".join("> " + ln for ln in quote.splitlines()[:200])
    head = ("From %s %s\nReturn-Path: <%s>\nFrom: %s\nTo: me@example.com\nSubject: %s\nDate: %s\n"
            "Message-ID: %s\nMIME-Version: 1.0\nStatus: RO\n" % (
                frm, time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(when)), frm, frm, subj, date, mid))
    if not attachments:
        return (head + "Content-Type: text/plain; charset=utf-8\n\n" + body + "\n\n").encode(), body
    bnd = "==b%x" % rng.getrandbits(48)
    parts = [head + 'Content-Type: multipart/mixed; boundary="%s"\n\n--%s\nContent-Type: text/plain; charset=utf-8'
             "\n\n%s\n" % (bnd, bnd, body)]
    for name, data in attachments:
        parts.append('--%s\nContent-Type: application/octet-stream; name="%s"\nContent-Transfer-Encoding: base64\n'
                     'Content-Disposition: attachment; filename="%s"\n\n' % (bnd, name, name))
        parts.append(base64.encodebytes(data).decode("ascii"))
    parts.append("--%s--\n\n" % bnd)
    return "".join(parts).encode(), body


class Tree:
    def __init__(self, root):
        self.root = root
        self.made = set()

    def path(self, rel):
        return os.path.join(self.root, rel)

    def mkdir(self, reldir):
        if reldir in self.made or not reldir:
            return
        os.makedirs(self.path(reldir), exist_ok=True)
        d = reldir
        while d:
            self.made.add(d)
            d = os.path.dirname(d)

    def write(self, rel, data, mtime, mode=0o644):
        self.mkdir(os.path.dirname(rel))
        p = self.path(rel)
        if isinstance(data, str):
            data = data.encode("utf-8")
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        os.utime(p, (mtime, mtime))

    def symlink(self, rel, target, mtime):
        self.mkdir(os.path.dirname(rel))
        p = self.path(rel)
        os.symlink(target, p)
        os.utime(p, (mtime, mtime), follow_symlinks=False)


def dir_mtime(rel, salt=""):
    h = int.from_bytes(hashlib.sha256((salt + rel).encode("utf-8")).digest()[:8], "little")
    return T0 - h % (300 * DAY)


def fix_dir_mtimes(root, dirs=None, when=None):
    """Fixed mtimes/modes for directories (all of them, or the given relative ones), deepest first."""
    if dirs is None:
        dirs = []
        for dp, dns, _ in os.walk(root):
            for d in dns:
                full = os.path.join(dp, d)
                if not os.path.islink(full):
                    dirs.append(os.path.relpath(full, root))
        dirs.append("")
    for rel in sorted(set(dirs), key=lambda r: (-r.count(os.sep), r)):
        p = os.path.join(root, rel) if rel else root
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
            t = when if when is not None else dir_mtime(rel)
            os.utime(p, (t, t))


# --------------------------------------------------------------------------------------------
# The base dataset
# --------------------------------------------------------------------------------------------

class Gen:
    def __init__(self, root, seed, scale):
        self.seed = seed
        self.scale = scale
        self.t = Tree(root)
        self.text = Text(self.rng("vocab"))
        self.code = CodeGen(self.rng("codepool"), self.text)
        self.sizes = {}

    def rng(self, name):
        return random.Random("tidemark:%d:%s" % (self.seed, name))

    def n(self, count, minimum=1):
        return max(minimum, int(round(count * self.scale)))

    def mt(self, rng, days=700):
        return T0 - rng.randint(3600, days * DAY)

    def account(self, part, nbytes):
        self.sizes[part] = self.sizes.get(part, 0) + nbytes

    def write(self, part, rel, data, mtime, mode=0o644):
        self.t.write(rel, data, mtime, mode)
        self.account(part, len(data))

    # ---- source code --------------------------------------------------------------------
    def projects(self):
        rng = self.rng("projects")
        names = [("tidewatch", "rs", 900), ("photo-sorter", "py", 700), ("webshop", "ts", 900),
                 ("firmware-x2", "c", 500), ("infra-tools", "go", 500), ("thesis-scripts", "py", 300),
                 ("dotfiles-manager", "rs", 200)]
        for pname, lang, nfiles in names:
            base = "Projects/" + pname
            nf = self.n(nfiles, 8)
            dirs = [base + "/src"]
            for _ in range(max(1, nf // 9)):
                parent = rng.choice(dirs)
                if parent.count("/") < 7:
                    dirs.append(parent + "/" + self.text.ident(rng))
            for i in range(nf):
                d = rng.choice(dirs)
                ext = rng.choice(EXT_OF[lang])
                name = "%s.%s" % (self.text.ident(rng), ext)
                size = lognormal_size(rng, 5500, 1.0, 60, 300_000)
                if ext == "md":
                    data = "# " + self.text.line(rng) + "\n\n" + self.text.text(rng, size)
                else:
                    data = self.code.code(rng, lang, size)
                self.write("code", d + "/" + name, data, self.mt(rng, 400))
            if lang == "py":
                for d in dirs:
                    self.write("code", d + "/__init__.py", b"", self.mt(rng, 400))
            self.write("code", base + "/README.md", "# %s\n\n%s\n" % (pname, self.text.text(rng, 4000)), self.mt(rng))
            self.write("code", base + "/.gitignore", "target/\nnode_modules/\n*.o\n__pycache__/\n", self.mt(rng))
            self.write("code", base + "/build.sh", "#!/bin/sh\nset -e\n" + self.code.code(rng, "c", 600), self.mt(rng),
                       0o755)
            # a .git directory: many small zlib-compressed (incompressible) objects and one pack
            for _ in range(self.n(nf // 3, 4)):
                h = "%040x" % rng.getrandbits(160)
                self.write("git", "%s/.git/objects/%s/%s" % (base, h[:2], h[2:]),
                           bulk(rng, lognormal_size(rng, 1500, 1.0, 40, 60_000)), self.mt(rng, 400), 0o444)
            self.write("git", "%s/.git/objects/pack/pack-%040x.pack" % (base, rng.getrandbits(160)),
                       bulk(rng, int(rng.randint(2, 9) * (1 << 20) * self.scale) + 1024), self.mt(rng, 400), 0o444)
            self.write("git", base + "/.git/HEAD", "ref: refs/heads/main\n", self.mt(rng))
            self.write("git", base + "/.git/config", "[core]\n\trepositoryformatversion = 0\n\tbare = false\n",
                       self.mt(rng))
            if lang in ("rs", "c", "go"):
                self.write("binaries", "%s/target/release/%s" % (base, pname),
                           binary_bytes(rng, int(rng.randint(3, 8) * (1 << 20) * self.scale) + 4096, self.text),
                           self.mt(rng, 30), 0o755)
        # node_modules: thousands of tiny files
        nm = "Projects/webshop/node_modules"
        for _ in range(self.n(90, 3)):
            pkg = self.text.ident(rng).replace("_", "-")
            self.write("code", "%s/%s/package.json" % (nm, pkg),
                       '{\n  "name": "%s",\n  "version": "%d.%d.%d",\n  "main": "index.js"\n}\n' % (
                           pkg, rng.randint(0, 9), rng.randint(0, 30), rng.randint(0, 20)), self.mt(rng))
            for _ in range(rng.randint(3, 30)):
                sub = rng.choice(["", "lib/", "dist/", "lib/util/"])
                self.write("code", "%s/%s/%s%s.js" % (nm, pkg, sub, self.text.ident(rng)),
                           self.code.code(rng, "ts", lognormal_size(rng, 1800, 1.1, 30, 80_000)), self.mt(rng))
        self.t.symlink("Projects/current", "tidewatch", self.mt(rng))

    # ---- documents --------------------------------------------------------------------------
    def documents(self):
        rng = self.rng("documents")
        areas = ["Documents/Work/2023", "Documents/Work/2024", "Documents/Work/2024/Clients",
                 "Documents/Personal", "Documents/Taxes/2022", "Documents/Taxes/2023", "Documents/Notes",
                 "Documents/Recipes", "Documents/Отчёты", "Documents/Université/Cours", "Documents/Notes/Archive"]
        for _ in range(self.n(1200, 20)):
            d = rng.choice(areas)
            ext = rng.choice(["txt", "md", "md", "txt", "html", "csv"])
            size = lognormal_size(rng, 3500, 1.1, 20, 400_000)
            if ext == "csv":
                rows = ["date,amount,category,note"] + ["2024-%02d-%02d,%.2f,%s,%s" % (
                    rng.randint(1, 12), rng.randint(1, 28), rng.random() * 500, rng.choice(self.text.words[:50]),
                    self.text.line(rng, 1, 4)) for _ in range(max(1, size // 40))]
                data = "\n".join(rows) + "\n"
            elif ext == "html":
                data = "<html><head><title>%s</title></head><body><p>%s</p></body></html>\n" % (
                    self.text.line(rng), self.text.text(rng, size).replace("\n\n", "</p>\n<p>"))
            else:
                data = self.text.text(rng, size)
            self.write("text", "%s/%s.%s" % (d, self.text.ident(rng).replace("_", "-"), ext), data, self.mt(rng))
        # well-known files
        self.write("text", JOURNAL, "# Journal\n\n" + self.text.text(rng, 200_000), T0 - DAY)
        self.write("text", "Documents/Notes/café naïve résumé.txt", self.text.text(rng, 5000), self.mt(rng))
        self.write("text", "Documents/Notes/it's a \"quoted\" name & more.txt", self.text.text(rng, 3000), self.mt(rng))
        self.write("text", "Documents/empty.txt", b"", self.mt(rng))
        self.write("text", "Documents/Notes/.empty-draft.md", b"", self.mt(rng))
        # large text: a csv and logs
        for name, sz in (("Documents/Data/measurements-2023.csv", 14 << 20), ("Documents/Data/server.log", 9 << 20),
                         ("Documents/Data/sensors-2024.csv", 6 << 20)):
            sz = int(sz * self.scale)
            if name.endswith(".log"):
                lines = []
                n = 0
                t = T0 - 30 * DAY
                while n < sz:
                    t += rng.randint(0, 40)
                    ln = "%s host%d %s[%d]: %s" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), rng.randint(1, 4),
                                                   rng.choice(["sshd", "nginx", "cron", "kernel", "app"]),
                                                   rng.randint(100, 40000), self.text.line(rng, 3, 14))
                    lines.append(ln)
                    n += len(ln) + 1
                data = "\n".join(lines) + "\n"
            else:
                lines = ["timestamp,sensor,value,unit,flags"]
                n = 0
                t = T0 - 300 * DAY
                while n < sz:
                    t += rng.randint(1, 600)
                    ln = "%d,S%03d,%.4f,%s,%d" % (t, rng.randint(1, 120), rng.gauss(20, 5),
                                                 rng.choice(("C", "C", "kPa", "%")), rng.randint(0, 3))
                    lines.append(ln)
                    n += len(ln) + 1
                data = "\n".join(lines) + "\n"
            self.write("text", name, data, self.mt(rng, 30))

    def office(self):
        rng = self.rng("office")
        areas = ["Documents/Work/2023", "Documents/Work/2024", "Documents/Work/2024/Clients", "Documents/Personal",
                 "Documents/Taxes/2023", "Documents/Отчёты", "Documents/Université/Cours"]
        self.office_files = []
        for i in range(self.n(230, 6)):
            kind = rng.choice(["docx", "docx", "xlsx", "pptx"])
            approx = lognormal_size(rng, 60_000, 1.0, 3000, 1_200_000)
            media = []
            if kind != "xlsx" and rng.random() < 0.5:
                media = [jpeg_bytes(rng, lognormal_size(rng, 150_000, 1.0, 8000, 2_500_000), self.text)
                         for _ in range(rng.randint(1, 4))]
            data = write_zip(office_members(rng, kind, self.text, approx, media))
            rel = "%s/%s.%s" % (rng.choice(areas), self.text.ident(rng).replace("_", " "), kind)
            self.write("office", rel, data, self.mt(rng))
            self.office_files.append(rel)
        self.write("office", "Documents/Résumé – Jürgen Müller.docx",
                   write_zip(office_members(rng, "docx", self.text, 20000, [])), self.mt(rng))
        self.write("office", "Documents/Work/2024/report-q4.docx",
                   write_zip(office_members(rng, "docx", self.text, 80000, [jpeg_bytes(rng, 300_000, self.text)])),
                   T0 - 5 * DAY)
        self.t.symlink("Documents/latest-report.docx", "Work/2024/report-q4.docx", T0 - 5 * DAY)
        for i in range(self.n(60, 2)):
            rel = "Documents/%s/%s.pdf" % (rng.choice(["Manuals", "Work/2024", "Taxes/2023", "Papers"]),
                                           self.text.ident(rng).replace("_", "-"))
            self.write("pdf", rel, pdf_bytes(rng, lognormal_size(rng, 500_000, 1.0, 20_000, 6_000_000), self.text),
                       self.mt(rng))

    # ---- media ----------------------------------------------------------------------------
    def media(self):
        rng = self.rng("media")
        self.photos = []
        num = 1000
        for i in range(self.n(110, 4)):
            y = rng.choice((2022, 2023, 2024))
            m = rng.randint(1, 12)
            folder = "Pictures/%d/%d-%02d" % (y, y, m) if rng.random() > 0.1 else "Pictures/東京 2023"
            num += rng.randint(1, 30)
            rel = "%s/IMG_%04d.jpg" % (folder, num)
            if i == 3:
                rel = "Pictures/🎉 party/IMG_%04d.jpg" % num
            self.write("photos", rel, jpeg_bytes(rng, lognormal_size(rng, 1_800_000, 0.5, 300_000, 6_000_000), self.text),
                       T0 - rng.randint(10 * DAY, 700 * DAY))
            self.photos.append(rel)
        artists = ["Björk", "Sigur Rós", "Мумий Тролль", "The Quiet Loops", "Ensemble Nord", "DJ Kōhī"]
        albums = [(a, self.text.line(rng, 1, 3).title()) for a in artists for _ in range(2)]
        self.songs = []
        for i in range(self.n(26, 1)):
            a, album = albums[i % len(albums)]
            title = self.text.line(rng, 1, 4).title()
            rel = "Music/%s/%s/%02d - %s.mp3" % (a, album, i // len(albums) + 1, title)
            self.write("music", rel, mp3_bytes(rng, lognormal_size(rng, 4_200_000, 0.4, 1_500_000, 12_000_000),
                                               title, a), self.mt(rng))
            self.songs.append(rel)
        vid = int(60 * (1 << 20) * self.scale)
        self.write("video", "Videos/2024-summer-holiday.mp4",
                   b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x00mdat" + bulk(rng, vid),
                   T0 - 150 * DAY)
        for i in range(self.n(6, 1)):
            self.write("video", "Videos/clips/clip-%02d.mov" % i,
                       b"\x00\x00\x00\x14ftypqt  " + bulk(rng, lognormal_size(rng, 2_000_000, 0.7, 200_000, 8_000_000)),
                       self.mt(rng))

    # ---- mailbox ----------------------------------------------------------------------------
    def mailbox(self):
        rng = self.rng("mail")
        target = int(120 * (1 << 20) * self.scale)
        pool = []
        when = T0 - 600 * DAY
        n = 0
        last_body = None
        p = self.t.path(MBOX)
        self.t.mkdir(os.path.dirname(MBOX))
        with open(p, "wb") as f:
            while n < target:
                when += rng.randint(60, 20000)
                att = []
                r = rng.random()
                if r < 0.15:
                    for _ in range(rng.randint(1, 2)):
                        if pool and rng.random() < 0.3:
                            att.append(rng.choice(pool))     # forwarded: same attachment again
                        else:
                            kind = rng.choice(["jpg", "pdf", "xlsx", "zip"])
                            data = bulk(rng, lognormal_size(rng, 200_000, 1.3, 5000, 6_000_000))
                            a = ("%s.%s" % (self.text.ident(rng), kind), data)
                            pool.append(a)
                            att.append(a)
                msg, body = mail(rng, self.text, when, att, quote=last_body if rng.random() < 0.3 else None)
                last_body = body
                f.write(msg)
                n += len(msg)
        os.chmod(p, 0o600)
        os.utime(p, (T0 - 2 * 3600, T0 - 2 * 3600))
        self.account("mbox", n)
        self.write("text", "Mail/sent.mbox", b"".join(mail(rng, self.text, T0 - rng.randint(1, 300) * DAY, [])[0]
                                                      for _ in range(self.n(400, 10))), T0 - 3 * 3600, 0o600)
        self.t.symlink("Desktop/Mail", "../Mail", T0 - 100 * DAY)

    # ---- VM image ----------------------------------------------------------------------------
    def vm(self):
        rng = self.rng("vm")
        size = int(200 * (1 << 20) * self.scale) // (1 << 20) * (1 << 20) or (1 << 20)
        p = self.t.path(VM_IMAGE)
        self.t.mkdir(os.path.dirname(VM_IMAGE))
        data_bytes = 0
        with open(p, "wb") as f:
            f.truncate(size)
            f.seek(0)
            f.write(b"\x00" * 446 + bulk(rng, 64) + b"\x55\xaa")
            budget = size // 6
            while data_bytes < budget:
                ln = min(4096 * rng.choice((1, 1, 2, 4, 16, 64, 256)), budget - data_bytes + 4096)
                blocks = size // 4096
                if rng.random() < 0.85:   # most data near the start (the OS install), the rest scattered
                    off = rng.randrange(1, max(2, blocks // 4)) * 4096
                else:
                    off = rng.randrange(1, blocks) * 4096
                ln = min(ln, size - off)
                r = rng.random()
                if r < 0.35:
                    d = self.text.text(rng, ln).encode()
                elif r < 0.75:
                    d = binary_bytes(rng, ln, self.text)
                else:
                    d = bulk(rng, ln)
                f.seek(off)
                f.write(d)
                data_bytes += ln
            # some explicitly written (allocated) zero blocks, like a freshly zeroed region
            zoff = (size // 2) // 4096 * 4096
            f.seek(zoff)
            f.write(b"\x00" * min(size // 25, size - zoff))
        os.chmod(p, 0o644)
        os.utime(p, (T0 - DAY // 2, T0 - DAY // 2))
        self.account("vm (apparent)", size)

    # ---- the rest -------------------------------------------------------------------------------
    def misc(self):
        rng = self.rng("misc")
        for f in (".bashrc", ".profile", ".gitconfig", ".config/Code/User/settings.json", ".config/tidemark/config.toml",
                  ".local/share/recently-used.xbel", ".ssh/config", ".ssh/known_hosts", ".config/htop/htoprc"):
            self.write("misc", f, self.text.text(rng, rng.randint(100, 6000)), self.mt(rng))
        self.write("misc", ".ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n%s-----END OPENSSH PRIVATE KEY-----\n"
                   % base64.encodebytes(bulk(rng, 300)).decode(), self.mt(rng), 0o600)
        for i in range(self.n(250, 5)):
            self.write("misc", ".cache/thumbnails/normal/%032x.png" % rng.getrandbits(128),
                       b"\x89PNG\r\n\x1a\n" + bulk(rng, lognormal_size(rng, 9000, 0.6, 500, 60_000)), self.mt(rng, 60))
        self.write("misc", ".cache/lock", b"", self.mt(rng))
        self.write("misc", "Downloads/tool-setup-2.3.1.deb", binary_bytes(rng, int(9 * (1 << 20) * self.scale), self.text),
                   self.mt(rng, 90))
        # a zip of csv files, deflated
        members = [zip_member("data/%s.csv" % self.text.ident(rng), "\n".join(
            "%d,%.3f,%s" % (k, rng.random(), rng.choice(self.text.words[:100])) for k in range(self.n(20000, 200))).encode())
                   for _ in range(4)]
        self.write("misc", "Downloads/open-data.zip", write_zip(members), self.mt(rng, 90))
        self.write("misc", "Downloads/partial.crdownload", b"", self.mt(rng))
        self.t.symlink("Downloads/old-link", "/nonexistent/old-file.pdf", self.mt(rng))
        self.t.mkdir("Downloads/New Folder")
        self.write("misc", "Desktop/🎉 party plan.md", self.text.text(rng, 2500), self.mt(rng))
        self.write("misc", "Desktop/todo.txt", self.text.text(rng, 800), T0 - 3600)

    def duplicates(self):
        rng = self.rng("dups")
        def copy(src, dst, mtime):
            with open(self.t.path(src), "rb") as f:
                data = f.read()
            self.write("duplicates", dst, data, mtime, stat.S_IMODE(os.lstat(self.t.path(src)).st_mode))
        for rel in rng.sample(self.photos, min(len(self.photos), self.n(8, 1))):
            copy(rel, "Downloads/" + os.path.basename(rel)[:-4] + " (1).jpg", self.mt(rng, 200))
        for rel in rng.sample(self.photos, min(len(self.photos), self.n(4, 1))):
            copy(rel, "Desktop/" + os.path.basename(rel), self.mt(rng, 200))
        copy("Documents/Work/2024/report-q4.docx", "Desktop/report-q4 (final).docx", T0 - 4 * DAY)
        if self.songs:
            s = self.songs[0]
            copy(s, "Music/Compilations/Best of/" + os.path.basename(s), self.mt(rng))
        # an old-laptop backup folder: a copy of a slice of Documents (also with other mtimes)
        for rel in rng.sample(self.office_files, min(len(self.office_files), self.n(25, 2))):
            copy(rel, "Backup/old-laptop/" + rel, T0 - 800 * DAY)

    def run(self):
        t = time.time()
        os.makedirs(self.t.root, exist_ok=True)
        if os.listdir(self.t.root):
            sys.exit("gen_dataset: %s is not empty" % self.t.root)
        for step in (self.projects, self.documents, self.office, self.media, self.mailbox, self.vm, self.misc,
                     self.duplicates):
            step()
        fix_dir_mtimes(self.t.root)
        return time.time() - t


# --------------------------------------------------------------------------------------------
# The "day of work" edit
# --------------------------------------------------------------------------------------------

TEXT_EXT = {".txt", ".md", ".rs", ".py", ".ts", ".tsx", ".js", ".go", ".c", ".h", ".json", ".toml", ".cfg",
            ".html", ".css", ".mod"}


def walk_tree(root):
    files, dirs = [], []
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for d in dns:
            full = os.path.join(dp, d)
            if not os.path.islink(full):
                dirs.append(os.path.relpath(full, root))
        for fn in sorted(fns):
            full = os.path.join(dp, fn)
            if stat.S_ISREG(os.lstat(full).st_mode):
                files.append(os.path.relpath(full, root))
    return sorted(files), sorted(dirs)


def edit(root, seed, scale):
    t_start = time.time()
    rng = random.Random("tidemark-edit:%d" % seed)
    text = Text(random.Random("tidemark:%d:vocab" % seed))
    code = CodeGen(random.Random("tidemark-edit:%d:codepool" % seed), text)
    tree = Tree(root)
    files, dirs = walk_tree(root)
    if JOURNAL not in files:
        sys.exit("gen_dataset --edit: %s does not look like a generated dataset" % root)

    def n(count, minimum):
        return max(minimum, int(round(count * scale)))

    clock = [TE]

    def now():
        clock[0] += rng.randint(5, 900)
        return clock[0]

    touched_dirs = set()
    used = {JOURNAL, MBOX, VM_IMAGE}
    stats = {}

    def count(k, v=1):
        stats[k] = stats.get(k, 0) + v

    def pick(cands, k):
        cands = [c for c in cands if c not in used]
        k = min(k, len(cands))
        out = rng.sample(cands, k)
        used.update(out)
        return out

    def insert(rel, pos_frac, data):
        p = tree.path(rel)
        with open(p, "rb") as f:
            old = f.read()
        pos = int(len(old) * pos_frac)
        with open(p, "r+b") as f:
            f.seek(pos)
            f.write(data + old[pos:])
        os.utime(p, (now(), clock[0]))

    editable = [f for f in files if "/.git/" not in f and "/node_modules/" not in f and not f.startswith("Backup/")]
    textish = [f for f in editable if os.path.splitext(f)[1] in TEXT_EXT and os.path.getsize(tree.path(f)) > 0]

    # 1. byte insertions in the middle of files
    insert(JOURNAL, 0.5, ("\n\n## %s\n\n%s\n" % (time.strftime("%Y-%m-%d", time.gmtime(TE)),
                                                  text.text(rng, 1500))).encode())
    count("inserted")
    for rel in pick(textish, n(38, 8)):
        insert(rel, rng.uniform(0.2, 0.8), text.text(rng, rng.randint(20, 3000)).encode())
        count("inserted")
    for rel in pick([f for f in editable if f.endswith((".csv", ".log"))], n(3, 1)):
        p = tree.path(rel)
        with open(p, "ab") as f:
            f.write(("\n".join(text.line(rng) for _ in range(rng.randint(100, 3000))) + "\n").encode())
        os.utime(p, (now(), clock[0]))
        count("appended")
    for rel in pick([f for f in editable if f.endswith((".docx", ".xlsx", ".pptx"))], n(5, 1)):
        p = tree.path(rel)
        with zipfile.ZipFile(p) as z:
            members = [(zi, z.read(zi.filename)) for zi in z.infolist()]
        out = []
        for zi, data in members:
            if zi.filename in ("word/document.xml", "xl/worksheets/sheet1.xml", "ppt/slides/slide1.xml"):
                cut = data.rfind(b"</", 0, len(data) // 2 + 1) if len(data) > 100 else len(data) - 1
                cut = max(cut, 0)
                data = data[:cut] + ("<!-- %s -->" % text.text(rng, rng.randint(50, 5000))).encode() + data[cut:]
            out.append(zip_member(zi.filename, data, zi.compress_type == zipfile.ZIP_DEFLATED))
        blob = write_zip(out)
        with open(p, "wb") as f:
            f.write(blob)
        os.utime(p, (now(), clock[0]))
        count("office re-saved")
    for rel in pick([f for f in editable if f.endswith(".jpg")], n(2, 1)):
        p = tree.path(rel)
        with open(p, "rb") as f:
            old = f.read()
        new = old[:40] + ("edited by PhotoApp %s;" % text.line(rng, 1, 3)).encode() + old[40:]
        with open(p, "wb") as f:
            f.write(new)
        os.utime(p, (now(), clock[0]))
        count("photo metadata edited")

    # 2. the mailbox: a few bytes inserted mid-file (a status flag) and new mail appended
    p = tree.path(MBOX)
    with open(p, "rb") as f:
        mb = f.read()
    mid = mb.find(b"\nStatus: RO\n", len(mb) // 2)
    if mid < 0:
        mid = mb.find(b"\nStatus: RO\n")
    if mid >= 0:
        mb = mb[:mid + 1] + b"X-Status: AF\n" + mb[mid + 1:]
    old_atts = []
    pos = 0
    while len(old_atts) < 3:
        i = mb.find(b"Content-Transfer-Encoding: base64\n", pos)
        if i < 0:
            break
        start = mb.find(b"\n\n", i) + 2
        end = mb.find(b"\n--", start)
        old_atts.append(base64.decodebytes(mb[start:end]))
        pos = end
    parts = [mb]
    for k in range(n(25, 4)):
        att = []
        if k % 6 == 1 and old_atts:
            att = [("Fwd-%d.bin" % k, old_atts[k % len(old_atts)])]
        elif k % 6 == 3:
            att = [("scan-%d.pdf" % k, bulk(rng, rng.randint(50_000, int(3_000_000 * max(scale, 0.05)))))]
        parts.append(mail(rng, text, now(), att)[0])
    with open(p, "wb") as f:
        f.write(b"".join(parts))
    os.utime(p, (now(), clock[0]))
    count("mbox: mails appended", n(25, 4))

    # 3. the VM image: changed blocks and a new written extent (stays sparse elsewhere)
    p = tree.path(VM_IMAGE)
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        for _ in range(n(40, 6)):
            f.seek(rng.randrange(size // 4096) * 4096)
            f.write(bulk(rng, 4096))
        ext = min(4 << 20, size // 8) // 4096 * 4096
        f.seek(rng.randrange((size - ext) // 4096) * 4096)
        f.write(binary_bytes(rng, ext, text))
    os.utime(p, (now(), clock[0]))

    # 4. new files
    proj_dirs = [d for d in dirs if d.startswith("Projects/") and "/.git" not in d and "node_modules" not in d
                 and "/target" not in d and d.count("/") >= 2]
    for _ in range(n(30, 3)):
        d = rng.choice(proj_dirs)
        lang = {"tidewatch": "rs", "dotfiles-manager": "rs", "webshop": "ts", "firmware-x2": "c",
                "infra-tools": "go"}.get(d.split("/")[1], "py")
        rel = "%s/%s_new.%s" % (d, text.ident(rng), EXT_OF[lang][0])
        tree.write(rel, code.code(rng, lang, lognormal_size(rng, 5000, 1.0, 100, 100_000)), now())
        touched_dirs.add(d)
    for _ in range(n(30, 3)):
        rel = "Documents/Notes/%s-%d.md" % (text.ident(rng).replace("_", "-"), rng.randint(1, 999))
        tree.write(rel, text.text(rng, lognormal_size(rng, 3000, 1.0, 50, 60_000)), now())
        touched_dirs.add("Documents/Notes")
    for i in range(n(20, 2)):
        rel = "Pictures/2025/2025-01/IMG_%04d.jpg" % (9000 + i)
        tree.write(rel, jpeg_bytes(rng, lognormal_size(rng, 1_800_000, 0.5, 300_000, 6_000_000), text), now())
        touched_dirs.update(("Pictures/2025/2025-01", "Pictures/2025", "Pictures"))
    for i in range(n(10, 1)):
        rel = "Documents/Work/2025/%s.docx" % text.ident(rng).replace("_", " ")
        tree.write(rel, write_zip(office_members(rng, "docx", text, lognormal_size(rng, 30_000, 1.0, 3000, 300_000), [])),
                   now())
        touched_dirs.update(("Documents/Work/2025", "Documents/Work"))
    for i in range(n(10, 1)):
        rel = "Downloads/%s.pdf" % text.ident(rng).replace("_", "-")
        tree.write(rel, pdf_bytes(rng, lognormal_size(rng, 600_000, 1.0, 20_000, int(5_000_000 * max(scale, 0.1))), text),
                   now())
        touched_dirs.add("Downloads")
    count("new files", n(30, 3) + n(30, 3) + n(20, 2) + n(10, 1) + n(10, 1))

    # 5. renames: files moved to other folders, and one whole folder moved
    targets = [d for d in dirs if "/.git" not in d and "node_modules" not in d and not d.startswith((".cache", "Backup"))]
    for rel in pick(editable, n(30, 3)):
        d = rng.choice(targets)
        dst = os.path.join(d, os.path.basename(rel))
        if os.path.lexists(tree.path(dst)) or d == os.path.dirname(rel):
            dst = os.path.join(d, "moved-" + os.path.basename(rel))
        if os.path.lexists(tree.path(dst)):
            continue
        os.rename(tree.path(rel), tree.path(dst))
        touched_dirs.update((d, os.path.dirname(rel)))
        count("renamed files")
    months = sorted(d for d in dirs if d.count("/") == 2 and d.startswith("Pictures/20")
                    and not any(u.startswith(d + "/") for u in used))
    moved = ()
    if months:
        src = rng.choice(months)
        dst = "Pictures/Archive/" + os.path.basename(src)
        tree.mkdir("Pictures/Archive")
        os.rename(tree.path(src), tree.path(dst))
        used.update(f for f in files if f.startswith(src + "/"))
        moved = (src + "/",)
        touched_dirs.update((os.path.dirname(src), dst, "Pictures/Archive", "Pictures"))
        count("renamed folders")

    # 6. deletions
    for rel in pick([f for f in files if not (moved and f.startswith(moved))], n(30, 3)):
        if os.path.lexists(tree.path(rel)):
            os.unlink(tree.path(rel))
            touched_dirs.add(os.path.dirname(rel))
            count("deleted")

    # 7. touched without a content change
    for rel in pick(editable, n(20, 2)):
        if os.path.lexists(tree.path(rel)):
            os.utime(tree.path(rel), (now(), clock[0]))
            count("touched")

    fix_dir_mtimes(root, [d for d in touched_dirs if d], when=now())
    return time.time() - t_start, stats


# --------------------------------------------------------------------------------------------
# Manifest: one digest for a whole tree
# --------------------------------------------------------------------------------------------

def manifest(root, restore_check=False, out=None):
    """sha256 over (path, kind, mode, mtime, size, content hash or link target) of every entry.

    restore_check leaves out directory mtimes and the root entry, which restores may not keep."""
    h = hashlib.sha256()
    count = 0
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for name in sorted(dns + fns):
            full = os.path.join(dp, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                rec = "L %s -> %s" % (rel, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                rec = "D %s %o" % (rel, mode) + ("" if restore_check else " %d" % int(st.st_mtime))
            elif stat.S_ISREG(st.st_mode):
                fh = hashlib.sha256()
                with open(full, "rb") as f:
                    while True:
                        b = f.read(1 << 22)
                        if not b:
                            break
                        fh.update(b)
                rec = "F %s %o %d %d %s" % (rel, mode, int(st.st_mtime), st.st_size, fh.hexdigest())
            else:
                rec = "O %s" % rel
            h.update(rec.encode("utf-8", "surrogateescape") + b"\n")
            if out:
                out.write(rec.encode("utf-8", "surrogateescape") + b"\n")
            count += 1
    return h.hexdigest(), count


def du(root):
    apparent = 0
    files = 0
    for dp, dns, fns in os.walk(root):
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            if stat.S_ISREG(st.st_mode):
                apparent += st.st_size
                files += 1
    return apparent, files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="dataset (or edit) seed (default 1)")
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = ~1 GiB, 0.05 = ~60 MiB; --edit scales its counts too")
    ap.add_argument("--out", help="directory to create the dataset in (must be empty or absent)")
    ap.add_argument("--edit", action="store_true", help="apply the day-of-work edit to DIR in place")
    ap.add_argument("--manifest", action="store_true", help="print a digest of DIR")
    ap.add_argument("--restore-check", action="store_true", help="with --manifest: ignore directory mtimes")
    ap.add_argument("--list", action="store_true", help="with --manifest: also print every entry's record")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    ap.add_argument("dir", nargs="?", help="the tree to edit or hash")
    a = ap.parse_args()
    if a.manifest:
        if not a.dir:
            ap.error("--manifest needs DIR")
        digest, cnt = manifest(a.dir, a.restore_check, sys.stdout.buffer if a.list else None)
        sys.stdout.flush()
        print(digest, cnt)
        return
    if a.edit:
        if not a.dir or not os.path.isdir(a.dir):
            ap.error("--edit needs an existing DIR")
        secs, stats = edit(a.dir, a.seed, a.scale)
        if not a.quiet:
            print("edited %s in %.1fs: %s" % (a.dir, secs, ", ".join("%s %d" % kv for kv in sorted(stats.items()))))
        return
    if not a.out:
        ap.error("--out DIR is required")
    g = Gen(a.out, a.seed, a.scale)
    secs = g.run()
    if not a.quiet:
        apparent, files = du(a.out)
        print("generated %s (seed %d, scale %g) in %.1fs: %d files, %.1f MiB apparent" % (
            a.out, a.seed, a.scale, secs, files, apparent / (1 << 20)))
        for k, v in sorted(g.sizes.items(), key=lambda kv: -kv[1]):
            print("  %-16s %8.1f MiB" % (k, v / (1 << 20)))


if __name__ == "__main__":
    main()
