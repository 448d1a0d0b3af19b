#!/usr/bin/env bash
# Lists the tests of the given packages that, in the pure-Go pass
# (-tags purego -short), execute none of the pure-Go dispatch files — the
# files built only because of the tag (//go:build !amd64 || purego) — so
# both CI passes run exactly the same statements for them: the candidates
# for puregopass.Skip. Each test runs once on its own with coverage,
# without -short so that tests already skipped there are measured too.
#   tools/puregodups/puregodups.sh ./gguf ./quant
#   TESTS=^TestDequantize tools/puregodups/puregodups.sh ./tensor
set -euo pipefail
cd "$(dirname "$0")/../.."
files=$(grep -rl --include='*.go' '^//go:build.*|| purego' . | sed 's|^\./||')
[ -n "$files" ] || { echo "no pure-Go dispatch files found" >&2; exit 1; }
dispatch=$(echo "$files" | paste -sd'|')
cover=$(echo "$files" | xargs -n1 dirname | sort -u | sed 's|^|github.com/turbomem/turbomem/|' | paste -sd,)
prof=$(mktemp)
trap 'rm -f "$prof"' EXIT
for pkg in "$@"; do
	for t in $(go test -tags purego -list "${TESTS:-^Test}" "$pkg" | grep "^Test"); do
		start=$(date +%s.%N)
		go test -count=1 -tags purego -run "^$t\$" -coverpkg="$cover" -coverprofile="$prof" "$pkg" >/dev/null 2>&1 || { echo "$pkg $t: fails"; continue; }
		hits=$(awk -v re="$dispatch" '$1 ~ re && $3 > 0' "$prof" | wc -l)
		printf '%s %s: %d dispatch blocks run, %s s\n' "$pkg" "$t" "$hits" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
	done
done
