#!/bin/sh
# compare.sh: turbomem's measured weight plans against llama-quantize's
# recipes on one source model, with one importance matrix (llama-imatrix's)
# for both, measured by both engines on held-out text (BENCHMARKS.md,
# "Mixed-precision weights").
#
#   sh tools/wquanteval/compare.sh SRC.gguf CALIB.txt EVAL.txt OUTDIR LLAMA_BIN_DIR
#
# SRC is the source model: its weights are dequantized to F32 (exact for
# any GGML type) and that F32 file is what both quantizers start from and
# the reference of the KL. With TM_FROM=src turbomem reads SRC itself
# instead (it dequantizes it to the same F32 values, so a plan gives the
# same tensors) and measures the sensitivities on SRC's faster kernels.
# CALIB (the importance matrix and the sensitivities) and EVAL (the KL)
# must not overlap. Settings from the environment, with their defaults:
#   TURBOMEM=turbomem  WQUANTEVAL=(built from tools/wquanteval)  THREADS=2  RECIPES="Q2_K Q3_K_S Q3_K_M ..."  BPWS="2.5 3 3.5"
#   TM_FROM=f32  CALIB_CHUNKS=4 (sensitivity windows of 512 tokens)  IM_CHUNKS=8  EVAL_CHUNKS=8
# Every step is skipped when its output exists, so a stopped run resumes.
set -eu
[ $# -eq 5 ] || { sed -n '2,19p' "$0"; exit 2; }
abs() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
src=$(abs "$1") calib=$(abs "$2") text=$(abs "$3") out=$4 ll=$(cd "$5" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
tm=${TURBOMEM:-turbomem}
th=${THREADS:-2}
recipes=${RECIPES:-Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0}
bpws=${BPWS:-2.5 3 3.5}
export LD_LIBRARY_PATH="$ll${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out"
wq=${WQUANTEVAL:-$(cd "$out" && pwd)/wquanteval}
[ -n "${WQUANTEVAL:-}" ] || (cd "$repo" && go build -o "$wq" ./tools/wquanteval)
cd "$out"
log() { echo "$(date +%T) $*" >&2; }

tmsrc=src-f32.gguf
[ "${TM_FROM:-f32}" = f32 ] || tmsrc=$src
[ -e src-f32.gguf ] || { log "F32 source"; nice "$tm" quantize "$src" src-f32.gguf --recipe F32 >/dev/null; }
[ -e imatrix.gguf ] || { log "llama-imatrix"; nice "$ll/llama-imatrix" -m src-f32.gguf -f "$calib" -c 512 \
	--chunks "${IM_CHUNKS:-8}" -t "$th" -o imatrix.gguf >log-imatrix.txt 2>&1; }
args=""
for r in $recipes; do
	[ -e "llama-$r.gguf" ] || { log "llama-quantize $r"; nice "$ll/llama-quantize" --imatrix imatrix.gguf \
		src-f32.gguf "llama-$r.gguf" "$r" "$th" >"log-llama-$r.txt" 2>&1; }
	# The sensitivities are measured once (plan.json) and allocated again
	# for each budget.
	[ -e "tm-$r.gguf" ] || { log "turbomem at $r's size"; nice "$tm" quantize "$tmsrc" "tm-$r.gguf" \
		--size-of "llama-$r.gguf" --imatrix imatrix.gguf --plan plan.json --calib "$calib" \
		--calib-chunks "${CALIB_CHUNKS:-4}" --threads "$th" >"log-tm-$r.txt" 2>&1; }
	args="$args|llama.cpp $r=llama-$r.gguf|turbomem at-$r=tm-$r.gguf"
done
for b in $bpws; do
	[ -e "tm-$b.gguf" ] || { log "turbomem at $b bpw"; nice "$tm" quantize "$tmsrc" "tm-$b.gguf" \
		--bpw "$b" --imatrix imatrix.gguf --plan plan.json --threads "$th" >"log-tm-$b.txt" 2>&1; }
	args="$args|turbomem $b-bpw=tm-$b.gguf"
done
log "KL by both engines"
IFS='|'
# shellcheck disable=SC2086
set -- ${args#|}
unset IFS
nice "$wq" -src src-f32.gguf -text "$text" -ctx 512 \
	-chunks "${EVAL_CHUNKS:-8}" -llama "$ll" -threads "$th" -svg kl.svg -json kl.json "$@" 2>&1 | tee kl-table.md
