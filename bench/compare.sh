#!/usr/bin/env bash
# compare.sh — kiln against kiln: two builds (before and after a change) alternated in one
# invocation on the same machine, so the machine's drift hits both alike. Figures: f32 matmul
# GFLOP/s, SmolLM2 prompt and decode tok/s, and the training step's median ms; one table with
# the ratio after/before per round (for the step, before/after: higher is better everywhere).
# Usage: bench/compare.sh BUILD_BEFORE BUILD_AFTER   (directories holding a built `kiln`)
# Knobs: ROUNDS (2), SIZES (512,1024,2048), THREADS (2), TUNE (0: both run the heuristic's
# kernels, so the search's verdicts, picked under different load, do not decide it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

[ $# -eq 2 ] || { echo "usage: bench/compare.sh BUILD_BEFORE BUILD_AFTER" >&2; exit 2; }
for b in "$1" "$2"; do
  [ -x "$b/kiln" ] || { echo "compare.sh: no kiln in $b (build it first)" >&2; exit 2; }
done
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-512,1024,2048}
THREADS=${THREADS:-2}
TUNE=${TUNE:-0}

bench_header "ROUNDS=$ROUNDS SIZES=$SIZES THREADS=$THREADS TUNE=$TUNE bench/compare.sh $1 $2"
runk() { KILN_TUNE=$TUNE KILN_THREADS=$THREADS "$@"; }

# One build's figures, one per line: "name value".
figures() {
  local kiln=$1/kiln
  runk "$kiln" bench matmul --sizes "$SIZES" --runs 5 2>/dev/null |
    awk '/^matmul/ { split($2, d, "x"); for (i = 1; i <= NF; i++) if ($i == "GFLOP/s") print "matmul_" d[1] "_GFLOP/s", $(i-1) }'
  runk "$kiln" bench llm -p 128 -n 64 --runs 3 2>/dev/null |
    awk -F'[: ]+' '/^pp[0-9]+:|^tg[0-9]+:/ { print $1 "_tok/s", $2 }'
  runk "$kiln" bench train --steps 10 --warmup 3 2>/dev/null |
    awk '/step_ms median/ { for (i = 1; i <= NF; i++) if ($i == "median") print "train_step_ms", $(i+1) }'
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# a pass of each first, not counted: kernels compiled and cached, the model file in memory
echo "warm-up (not counted)" >&2
figures "$1" >/dev/null
figures "$2" >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: before" >&2
  figures "$1" >"$out/b$r"
  echo "round $r: after" >&2
  figures "$2" >"$out/a$r"
done

printf '| figure |'
for r in $(seq 1 "$ROUNDS"); do printf ' before %d | after %d |' "$r" "$r"; done
printf ' after/before (rounds) |\n|---|'
for r in $(seq 1 "$ROUNDS"); do printf -- '---|---|'; done
printf -- '---|\n'
while read -r name _; do
  printf '| %s |' "$name"
  ratios=""
  for r in $(seq 1 "$ROUNDS"); do
    b=$(awk -v n="$name" '$1 == n { print $2 }' "$out/b$r")
    a=$(awk -v n="$name" '$1 == n { print $2 }' "$out/a$r")
    printf ' %s | %s |' "${b:-?}" "${a:-?}"
    ratio=$(awk -v a="${a:-0}" -v b="${b:-0}" -v n="$name" \
      'BEGIN { if (a <= 0 || b <= 0) print "?"; else if (n ~ /_ms$/) printf "%.2f", b / a; else printf "%.2f", a / b }')
    ratios="${ratios:+$ratios, }$ratio"
  done
  printf ' %s |\n' "$ratios"
done <"$out/b1"
