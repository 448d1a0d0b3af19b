#!/bin/sh
# suite-resume.sh continues the suite's large model on the same (warm) GPU
# machine that ran suite.sh: from /tmp/suite/large-full.pt (the state before
# the learning-rate decay) it trains at the constant rate, decays over the last
# DECAY (default 0.3) of the run, evaluates and exports again.
# Usage: sh DIR/suite-resume.sh DIR OUTDIR [SECONDS]   (SECONDS default 240)
set -u
D=$1 O=$2 BUDGET=${3:-240}
T0=$(date +%s)
W=${SUITE_WORK:-/tmp/suite}
[ -f $W/large-full.pt ] && [ -f $W/tokens.npz ] || { echo "no $W/large-full.pt: not the machine that ran suite.sh"; exit 3; }
mkdir -p "$O"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
X=""
[ "${SMOKE:-0}" = 1 ] && X="--device cpu --max-steps 2 --batch-tokens 512 --lengths 256:1 --eval-scale 0.003 --needle-lengths 256 --threads 1"
mv $W/large.log $W/large-1.log 2>/dev/null
mv $W/large $W/large-1 2>/dev/null
python3 $D/train.py --config large --corpus $D/corpus --tokenizer-vocab $D/vocab.json --tokens-cache $W/tokens.npz \
	--final --lengths 1024:0.3,2048:0.4,4096:0.3 --lr 1.5e-3 --resume-full $W/large-full.pt \
	--train-until $((T0 + BUDGET - 60)) --decay-frac ${DECAY:-0.3} --save-full $W/large-full-2.pt --out $W/large $X >"$W/large.log" 2>&1 &&
	$D/export -ckpt $W/large -vocab $D/vocab.json -type q6_k -name turbomem-suite-large -out $W/suite-large.gguf >>"$W/large.log" 2>&1 &&
	split -b 15M -d $W/suite-large.gguf "$O/suite-large.gguf.part"
echo "large done ($?) after $(($(date +%s) - T0)) s"
tail -n 14 "$W/large.log"
(cd "$W" && sha256sum suite-large.gguf >sha256-2.txt; head -c $((8 * 12288 * 4)) large/reflogits.f32 >large/reflogits8.f32 2>/dev/null
	tar czf "$O/logs2.tgz" large.log sha256-2.txt large/results.json large/state.json large/reflogits8.f32)
ls -l "$O"
