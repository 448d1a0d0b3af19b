#!/bin/sh
# prepare_corpus.sh builds the training corpus of the default model from
# free-licensed Debian packages (see CORPUS.md). It downloads the packages
# with apt-get (no installation: each .deb is unpacked with dpkg-deb -x under
# .train/root), extracts plain text, cleans and deduplicates it, and writes
#   .train/corpus/train.txt.xz     training documents (\x1e lines between them)
#   .train/corpus/heldout.txt.xz   held-out documents, never trained on
#   .train/corpus/heldout_python.txt  held-out Python documentation pages
#   .train/corpus/stats.json       characters and documents per source
# and defaultmodel/heldout.txt (the first ~200 KB of the held-out Python pages).
# .train/ is ignored (.git/info/exclude) so that `run` can carry it.
# Usage, from the repository root: sh tools/train/prepare_corpus.sh
set -eu
T=.train
PKGS="dict-gcide dict-wn dict-devil dict-foldoc dict-jargon dict-vera fortunes fortunes-min
python3.11-doc linux-doc-6.1 debian-reference-en perl-doc postgresql-doc-15 git-doc bash-doc
debian-policy developers-reference maint-guide gnu-standards"
X=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$X")"
grep -qx '/.train/' "$X" 2>/dev/null || echo '/.train/' >> "$X"
mkdir -p $T/debs $T/root $T/corpus
apt-get update -q
(cd $T/debs && apt-get download $PKGS)
for f in $T/debs/*.deb; do dpkg-deb -x "$f" $T/root; done
python3 tools/train/extract_corpus.py $T/root $T/corpus
# ~50k tokens of held-out text for testdata/: whole paragraphs, cut near 200 KB.
python3 - <<'PY'
t = open(".train/corpus/heldout_python.txt", encoding="utf-8").read()
cut = t.rfind("\n\n", 0, 200000)
open("defaultmodel/heldout.txt", "w", encoding="utf-8").write(t[:cut].strip() + "\n")
PY
ls -l $T/corpus defaultmodel/heldout.txt
