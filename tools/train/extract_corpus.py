#!/usr/bin/env python3
"""Extract, clean and deduplicate plain English text from unpacked Debian packages.

Called by prepare_corpus.sh. Reads ROOT (the packages unpacked with dpkg-deb -x),
writes under OUT:
  train.txt.xz    training documents, separated by a line holding only "\\x1e"
  heldout.txt.xz  held-out documents (never trained on), same format
  heldout_python.txt  held-out Python-documentation pages, plain text (for testdata/)
  stats.json      characters and documents per source, train and held-out

A document is a file (a page of documentation) or, for dictionaries and fortune
files, a run of about 16 KB of consecutive entries. A document is held out when
the first byte of sha256(source + name) is below HELDOUT_PER_256 (about 1%; 4% for
the Python documentation so that defaultmodel/heldout.txt has enough text).
Standard library only, deterministic.
"""
import glob, gzip, hashlib, html, html.parser, json, lzma, os, re, sys, unicodedata

ROOT, OUT = sys.argv[1], sys.argv[2]
SEP = "\n\x1e\n"


def rd(path):
    if path.endswith(".gz") or path.endswith(".dz"):
        with gzip.open(path, "rb") as f:
            b = f.read()
    else:
        with open(path, "rb") as f:
            b = f.read()
    return b.decode("utf-8", errors="replace")


class Stripper(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "nav", "footer"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "section", "blockquote", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag in self.SKIP or "sphinxsidebar" in cls or "related" in cls or "navheader" in cls or "navfooter" in cls:
            self.skip += 1 if tag in self.SKIP or tag == "div" else 0
            if tag == "div" and tag not in self.SKIP:
                self._divskip = getattr(self, "_divskip", []) + [1]
            return
        if tag == "div":
            self._divskip = getattr(self, "_divskip", []) + [0]
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "div":
            st = getattr(self, "_divskip", [])
            if st and st.pop() == 1:
                self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_data(self, d):
        if self.skip:
            return
        if not self.pre:
            d = re.sub(r"[ \t\r\n]+", " ", d)
        self.out.append(d)


def html_text(s):
    p = Stripper()
    try:
        p.feed(s)
        p.close()
    except Exception:
        pass
    return "".join(p.out)


POD_FMT = re.compile(r"[BCIFSLEZX]<+([^<>]*?)>+")


def pod_text(s):
    lines = []
    for ln in s.split("\n"):
        if ln.startswith("=head") or ln.startswith("=item"):
            ln = ln.split(None, 1)[1] if len(ln.split(None, 1)) > 1 else ""
        elif ln.startswith("="):
            continue
        for _ in range(3):
            ln = POD_FMT.sub(lambda m: m.group(1).split("|")[-1], ln)
        lines.append(ln)
    return "\n".join(lines)


def clean(t):
    t = unicodedata.normalize("NFC", t)
    t = t.replace("\r\n", "\n").replace("\r", "\n").replace("\x1f", "\n").replace("\x0c", "\n").replace("\t", "    ")
    t = t.replace("\x1e", " ").replace("\x00", "")
    out = []
    for ln in t.split("\n"):
        ln = ln.rstrip()
        if ln:
            # Drop lines that are mostly not Latin text (translations, binary junk).
            nonlatin = sum(1 for c in ln if ord(c) > 0x24F and not (0x2000 <= ord(c) <= 0x206F))
            if nonlatin > 0.2 * len(ln):
                continue
            if sum(1 for c in ln if unicodedata.category(c)[0] == "C") > 0:
                ln = "".join(c for c in ln if unicodedata.category(c)[0] != "C")
        out.append(ln)
    t = "\n".join(out)
    t = re.sub(r"\n{3,}", "\n\n", t)
    return t.strip()


def chunks(text, size=16000):
    """Split at blank lines into runs of about size characters."""
    cur, n = [], 0
    for para in text.split("\n\n"):
        cur.append(para)
        n += len(para) + 2
        if n >= size:
            yield "\n\n".join(cur)
            cur, n = [], 0
    if cur:
        yield "\n\n".join(cur)


def documents():
    r = ROOT
    # Dictionaries (dictd format: gzip-compatible dictzip).
    for name in ["gcide", "wn", "devil", "foldoc", "jargon", "vera"]:
        text = rd(f"{r}/usr/share/dictd/{name}.dict.dz")
        text = re.sub(r"\A.*?\n(?=[^\n ]+\n   )", "", text, count=1, flags=re.S) if name != "gcide" else text
        for i, c in enumerate(chunks(text)):
            yield f"dict-{name}", f"{name}:{i}", c
    # Fortunes (fortunes, fortunes-min): entries separated by "%" lines.
    for path in sorted(glob.glob(f"{r}/usr/share/games/fortunes/*")):
        if os.path.isdir(path) or "." in os.path.basename(path) or os.path.islink(path):
            continue
        text = rd(path)
        if "ascii-art" in path or path.endswith("/art"):
            continue
        text = "\n\n".join(e.strip("\n") for e in re.split(r"\n%\n", text) if e.strip())
        for i, c in enumerate(chunks(text)):
            yield "fortunes", f"{os.path.basename(path)}:{i}", c
    # Python 3.11 documentation: the reStructuredText sources Sphinx ships.
    for path in sorted(glob.glob(f"{r}/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", recursive=True)):
        yield "python3.11-doc", path.split("_sources/")[1], rd(path)
    # Linux kernel documentation (reStructuredText and text), English only.
    base = f"{r}/usr/share/doc/linux-doc-6.1/Documentation/"
    for path in sorted(glob.glob(base + "**/*", recursive=True)):
        rel = path[len(base):]
        if rel.startswith("translations/") or rel.startswith("output/") or os.path.isdir(path):
            continue
        if not (rel.endswith(".rst.gz") or rel.endswith(".txt.gz") or rel.endswith(".rst") or rel.endswith(".txt")):
            continue
        yield "linux-doc-6.1", rel, rd(path)
    # Perl documentation (POD).
    for path in sorted(glob.glob(f"{r}/usr/share/perl/*/pod/*.pod")):
        yield "perl-doc", os.path.basename(path), pod_text(rd(path))
    # Git documentation (AsciiDoc text).
    for path in sorted(glob.glob(f"{r}/usr/share/doc/git-doc/*.txt")):
        yield "git-doc", os.path.basename(path), rd(path)
    # PostgreSQL 15 manual (HTML).
    for path in sorted(glob.glob(f"{r}/usr/share/doc/postgresql-doc-15/html/*.html")):
        yield "postgresql-doc-15", os.path.basename(path), html_text(rd(path))
    # Debian Reference (HTML).
    for path in sorted(glob.glob(f"{r}/usr/share/debian-reference/*.en.html")):
        yield "debian-reference-en", os.path.basename(path), html_text(rd(path))
    # GNU Info manuals: bash, Debian Policy, Developer's Reference, GNU maintainers and coding standards.
    for name, src in [("bash.info.gz", "bash-doc"), ("debian-policy.info.gz", "debian-policy"),
                      ("developers-reference.info.gz", "developers-reference"),
                      ("maintain.info.gz", "gnu-standards"), ("standards.info.gz", "gnu-standards")]:
        p = f"{r}/usr/share/info/{name}"
        if os.path.exists(p):
            for i, c in enumerate(chunks(rd(p))):
                yield src, f"{name}:{i}", c
    # Debian New Maintainers' Guide (HTML).
    for path in sorted(glob.glob(f"{r}/usr/share/doc/maint-guide/html/*.en.html")):
        yield "maint-guide", os.path.basename(path), html_text(rd(path))


def held_out(src, name):
    h = hashlib.sha256((src + "/" + name).encode()).digest()[0]
    return h < (10 if src == "python3.11-doc" else 3)


def main():
    os.makedirs(OUT, exist_ok=True)
    seen_docs, seen_paras = set(), set()
    stats = {}
    tr = lzma.open(f"{OUT}/train.txt.xz", "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME)
    ho = lzma.open(f"{OUT}/heldout.txt.xz", "wt", encoding="utf-8", preset=6)
    hp = open(f"{OUT}/heldout_python.txt", "w", encoding="utf-8")
    for src, name, text in documents():
        text = clean(text)
        if len(text) < 200:
            continue
        dh = hashlib.sha256(text.encode()).digest()
        if dh in seen_docs:
            continue
        seen_docs.add(dh)
        # Paragraph-level dedup: drop long paragraphs seen before (licence boilerplate, repeated notes).
        paras = []
        for p in text.split("\n\n"):
            if len(p) >= 120:
                ph = hashlib.sha256(p.encode()).digest()[:12]
                if ph in seen_paras:
                    continue
                seen_paras.add(ph)
            paras.append(p)
        text = "\n\n".join(paras).strip()
        if len(text) < 200:
            continue
        s = stats.setdefault(src, {"train_chars": 0, "train_docs": 0, "heldout_chars": 0, "heldout_docs": 0})
        if held_out(src, name):
            ho.write(text + SEP)
            s["heldout_chars"] += len(text)
            s["heldout_docs"] += 1
            if src == "python3.11-doc":
                hp.write(text + "\n\n")
        else:
            tr.write(text + SEP)
            s["train_chars"] += len(text)
            s["train_docs"] += 1
    tr.close(); ho.close(); hp.close()
    json.dump(stats, open(f"{OUT}/stats.json", "w"), indent=1, sort_keys=True)
    tot = sum(v["train_chars"] for v in stats.values())
    for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["train_chars"]):
        print(f"{k:24s} train {v['train_chars']/1e6:8.2f} MB  {v['train_docs']:6d} docs   heldout {v['heldout_chars']/1e3:8.1f} KB")
    print(f"total train {tot/1e6:.1f} M chars")


if __name__ == "__main__":
    main()
