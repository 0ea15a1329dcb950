#!/usr/bin/env bash
# matmul.sh — kiln's f32 matmul against OpenBLAS sgemm: same sizes, runs and thread count, in
# the same invocation on the same machine, printed as a table with the ratio kiln/OpenBLAS.
# Knobs: SIZES (512,1024,2048), RUNS (5), THREADS (2), BUILD (build), KILN_DEVICE.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

SIZES=${SIZES:-512,1024,2048}
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
BUILD=${BUILD:-build}
CC=${CC:-cc}

[ -x "$BUILD/kiln" ] || make BUILD="$BUILD"

if blas_flags=$(pkg-config --cflags --libs openblas 2>/dev/null); then :; else
  blas_flags="-lopenblas"
fi
# shellcheck disable=SC2086 # blas_flags is a list of flags
"$CC" -O2 -Wall -Wextra -o "$BUILD/openblas_sgemm" bench/openblas_sgemm.c $blas_flags

bench_header "SIZES=$SIZES RUNS=$RUNS THREADS=$THREADS bench/matmul.sh"

kiln_out=$(KILN_THREADS=$THREADS "$BUILD/kiln" bench matmul --sizes "$SIZES" --runs "$RUNS")
echo "$kiln_out"
# The machine may pin OpenBLAS to an older core type; the peer runs with its own detection.
blas_out=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$THREADS" \
  "$BUILD/openblas_sgemm" --sizes "$SIZES" --runs "$RUNS")
echo "$blas_out"

# Both programs print "... NxNxN f32  DEVICE  median T ms  G GFLOP/s"; join on NxNxN.
echo
awk -v threads="$THREADS" '
  FNR == 1 { file++ }
  $1 != "matmul" && $1 != "openblas" { next }
  { gf = $(NF - 1); split($2, d, "x"); n = d[1] }
  file == 1 { kiln[n] = gf; order[++count] = n }
  file == 2 { blas[n] = gf }
  END {
    printf "%-8s | %-15s | %-19s | %s\n", "size", "kiln GFLOP/s", "OpenBLAS GFLOP/s", "ratio"
    printf "---------|-----------------|---------------------|------\n"
    for (i = 1; i <= count; i++) {
      n = order[i]
      ratio = (n in blas && blas[n] > 0) ? sprintf("%.2f", kiln[n] / blas[n]) : "-"
      printf "%-8s | %-15s | %-19s | %s\n", n, kiln[n], (n in blas ? blas[n] : "-"), ratio
    }
    printf "(%s threads each; ratio = kiln / OpenBLAS)\n", threads
  }' <(echo "$kiln_out") <(echo "$blas_out")
