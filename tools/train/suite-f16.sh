#!/bin/sh
# suite-f16.sh makes F16 models in the shapes of the embedded model and the
# small suite models: the high-precision sources of the weight-quantization
# comparison (BENCHMARKS.md, "Mixed-precision weights"). The suite's own
# files are Q8_0 or Q6_K, so their weights were rounded once already; these
# are trained briefly with the same recipe and kept at their training
# precision (bf16, stored exactly as F16).
#
# On the GPU machine, from the repository root:
#   sh DIR/suite-f16.sh train DIR OUTDIR [SECONDS] [CONFIGS]
# DIR holds train.py, corpus/ (train.txt.xz, heldout.txt.xz) and vocab.json
# as for suite.sh. All CONFIGS (default "default mha64 qwen2") train at once
# for SECONDS (default 70) after the corpus is tokenized, then each is
# evaluated (a quarter of the held-out windows; the needle only at 512
# tokens) and rounded to bf16. OUTDIR gets ckpt.tar.xz.partNN (15 MiB
# pieces of one xz tar: CONFIG/weights-*.safetensors, results.json,
# state.json, reflogits8.f32 and the logs): the bf16 weights of three
# models are too large to come back uncompressed.
#
# Here, from the repository root, with the returned pieces in PARTS:
#   sh tools/train/suite-f16.sh export PARTS [VOCAB]
# unpacks them into .train/f16/ and writes .models/f16-CONFIG.gguf with
# tools/export -type f16 (VOCAB default .train/vocab.json, from
# go run ./tools/vocab; the tokenizer of every suite model).
# SMOKE=1 runs the train step on the CPU in a few minutes (2 steps).
set -eu
case ${1:-} in
train)
	D=$2 O=$3 SECS=${4:-70} CONFIGS=${5:-default mha64 qwen2}
	W=${SUITE_WORK:-/tmp/suite-f16}
	mkdir -p "$W" "$O"
	export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
	X="--threads 4"
	if [ "${SMOKE:-0}" = 1 ]; then
		X="--device cpu --max-steps 2 --batch-tokens 512 --lengths 256:1 --threads 1 --eval-scale 0.003 --needle-lengths 256"
	else
		nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
	fi
	C="--corpus $D/corpus --tokenizer-vocab $D/vocab.json --tokens-cache $W/tokens.npz"
	# shellcheck disable=SC2086
	python3 "$D/train.py" --prepare-only $C --out "$W/prep" $X >"$W/prep.log" 2>&1 || { cat "$W/prep.log"; exit 1; }
	T1=$(date +%s)
	echo "tokens ready"
	for c in $CONFIGS; do
		lr=3e-3
		[ "$c" = default ] && lr=2e-3 # the embedded model's rate
		# shellcheck disable=SC2086
		python3 "$D/train.py" --config "$c" $C --final --lengths 1024:0.3,2048:0.4,4096:0.3 --lr $lr \
			--batch-tokens 65536 --warmup 100 --train-until $((T1 + SECS)) --decay-frac 0.3 \
			--eval-scale 0.25 --needle-lengths 512 --out "$W/$c" $X >"$W/$c.log" 2>&1 &
	done
	wait
	files=""
	for c in $CONFIGS; do
		tail -n 3 "$W/$c.log"
		grep -h "tok/s\|held-out ppl" "$W/$c.log" | tail -n 2
		[ -f "$W/$c/reflogits.f32" ] && head -c $((8 * 12288 * 4)) "$W/$c/reflogits.f32" >"$W/$c/reflogits8.f32"
		files="$files $c.log $(cd "$W" && ls "$c"/weights-*.safetensors "$c"/*.json "$c"/reflogits8.f32 2>/dev/null | tr '\n' ' ')"
	done
	# shellcheck disable=SC2086
	(cd "$W" && tar cf - prep.log $files) | xz -T16 -6 --block-size=4MiB | split -b 15M -d - "$O/ckpt.tar.xz.part"
	ls -l "$O"
	;;
export)
	P=$2 V=${3:-.train/vocab.json}
	mkdir -p .train/f16 .models
	cat "$P"/ckpt.tar.xz.part* | xz -d | tar xf - -C .train/f16
	for d in .train/f16/*/; do
		c=$(basename "$d")
		go run ./tools/export -ckpt "$d" -vocab "$V" -type f16 -name "turbomem-f16-$c" -out ".models/f16-$c.gguf"
	done
	sha256sum .models/f16-*.gguf
	;;
*)
	sed -n '2,25p' "$0"
	exit 2
	;;
esac
