#!/bin/sh
# suite.sh trains the three models of the model suite (README.md, "The model
# suite") at once on one GPU, each in its own process, and exports them with
# tools/export, so that GGUF files come back rather than checkpoints.
#
# Usage, from the repository root of the GPU machine:
#   sh DIR/suite.sh DIR OUTDIR [SECONDS]
# DIR holds train.py, the corpus (corpus/train.txt.xz, corpus/heldout.txt.xz),
# vocab.json (go run ./tools/vocab) and export (GOOS=linux GOARCH=amd64 go build
# ./tools/export). SECONDS (default 585) is the whole command's time: the small
# models train for SMALL_SECONDS (default 110), the large one until 80 s before
# the end, then each is evaluated and exported. OUTDIR gets suite-mha64.gguf,
# suite-qwen2.gguf, suite-large.gguf.partNN (15 MiB pieces: cat them together)
# and logs.tgz. The large model's full checkpoint from before its learning-rate
# decay stays in /tmp/suite/large-full.pt for suite-resume.sh.
# LARGE_DECAY=0 trains the large model at the constant rate to the end and
# saves that state as its full checkpoint, for a longer suite-resume.sh run.
# SMOKE=1 runs the same steps on the CPU in a minute (tiny batches, 2 steps).
set -u
D=$1 O=$2 BUDGET=${3:-585} SMALL=${SMALL_SECONDS:-110}
T0=$(date +%s)
W=${SUITE_WORK:-/tmp/suite}
mkdir -p "$W" "$O"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
X=""
if [ "${SMOKE:-0}" = 1 ]; then
	X="--device cpu --max-steps 2 --batch-tokens 512 --lengths 256:1 --eval-scale 0.003 --needle-lengths 256 --threads 1 --warmup 1"
else
	nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
C="--corpus $D/corpus --tokenizer-vocab $D/vocab.json --tokens-cache $W/tokens.npz"
python3 $D/train.py --config large --prepare-only $C --out $W/prep $X >"$W/prep.log" 2>&1 || { cat "$W/prep.log"; exit 1; }
T1=$(date +%s)
echo "tokens ready after $((T1 - T0)) s"
C="$C --final --lengths 1024:0.3,2048:0.4,4096:0.3"
[ -n "$X" ] || C="$C --threads 4"
small() { # config, lr
	python3 $D/train.py --config $1 $C --lr $2 --batch-tokens 65536 --train-until $((T1 + SMALL)) --decay-frac 0.3 \
		--out $W/$1 $X >"$W/$1.log" 2>&1 &&
		$D/export -ckpt $W/$1 -vocab $D/vocab.json -type q8_0 -name turbomem-suite-$1 -out "$O/suite-$1.gguf" >>"$W/$1.log" 2>&1
	echo "$1 done ($?) after $(($(date +%s) - T0)) s"
	tail -n 4 "$W/$1.log"
}
small mha64 3e-3 &
small qwen2 3e-3 &
python3 $D/train.py --config large $C --lr 1.5e-3 --train-until $((T0 + BUDGET - 80)) --decay-frac ${LARGE_DECAY:-0.25} --eval-scale 0.5 \
	--save-full $W/large-full.pt --out $W/large $X >"$W/large.log" 2>&1 &&
	$D/export -ckpt $W/large -vocab $D/vocab.json -type q6_k -name turbomem-suite-large -out $W/suite-large.gguf >>"$W/large.log" 2>&1 &&
	split -b 15M -d $W/suite-large.gguf "$O/suite-large.gguf.part"
echo "large done ($?) after $(($(date +%s) - T0)) s"
wait
tail -n 8 "$W/large.log"
grep -h "tok/s" "$W"/*.log | tail -n 6
(cd "$W" && sha256sum suite-large.gguf; cd "$O" && sha256sum suite-*.gguf) >"$W/sha256.txt" 2>&1
for m in large mha64 qwen2; do # 8 of the 32 rows of reference logits: what the go tests use
	[ -f $W/$m/reflogits.f32 ] && head -c $((8 * 12288 * 4)) $W/$m/reflogits.f32 >$W/$m/reflogits8.f32
done
(cd "$W" && tar czf "$O/logs.tgz" *.log sha256.txt */results.json */state.json */reflogits8.f32 2>/dev/null)
ls -l "$O"
