#!/usr/bin/env bash
# train.sh — one training step of the Fashion-MNIST CNN in kiln (`kiln bench train`), PyTorch
# and tinygrad, with the same batch, thread count, warm-up and timed steps, in the same run on
# the same machine; prints a table with each peer's ratio to kiln (peer step time / kiln's).
# Knobs: THREADS (2), WARMUP (3), STEPS (10), ACT (gelu: the activation, gelu or relu), BUILD
#        (build), KILN_DATA;
#        TORCH_PYTHON, TINYGRAD_PYTHON (default: what scripts/setup-bench installed for).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

export THREADS=${THREADS:-2} WARMUP=${WARMUP:-3} STEPS=${STEPS:-10} ACT=${ACT:-gelu}
BUILD=${BUILD:-build}
VENV=${KILN_CACHE:-$HOME/.cache/kiln}/bench-venv

note() { echo "# train.sh: $*"; }

[ -x "$BUILD/kiln" ] || make BUILD="$BUILD" >/dev/null

bench_header "THREADS=$THREADS WARMUP=$WARMUP STEPS=$STEPS ACT=$ACT bench/train.sh"

results=""

# KILN_THREADS sizes kiln's CPU device. Exit 2 is a usage error: a build without the command.
kiln_rc=0
kiln_out=$(KILN_THREADS=$THREADS "$BUILD/kiln" bench train --warmup "$WARMUP" --steps "$STEPS" \
  --act "$ACT" 2>&1) || kiln_rc=$?
if grep -q '^kiln step_ms' <<<"$kiln_out"; then
  echo "$kiln_out"
  results+=$(grep '^kiln step_ms' <<<"$kiln_out")$'\n'
elif [ $kiln_rc -eq 2 ]; then
  note "kiln: this build has no \`kiln bench train\`; the table has no ratios"
else
  echo "$kiln_out"
  note "kiln: bench train failed (exit $kiln_rc); the table has no ratios"
fi

if py=$(find_python torch "${TORCH_PYTHON:-}" /usr/bin/python3 python3); then
  out=$("$py" bench/train_torch.py) || true
  echo "$out"
  results+=$(grep '^torch step_ms' <<<"$out" || true)$'\n'
else
  note "torch: not installed; run scripts/setup-bench"
fi

if py=$(find_python tinygrad "${TINYGRAD_PYTHON:-}" python3 "$VENV/bin/python3"); then
  out=$("$py" bench/train_tinygrad.py) || true
  echo "$out"
  results+=$(grep '^tinygrad step_ms' <<<"$out" || true)$'\n'
else
  note "tinygrad: not installed; run scripts/setup-bench"
fi

# Each line: NAME step_ms median M min M samples/s S threads T
echo
awk -v threads="$THREADS" '
  $2 != "step_ms" { next }
  { name[++n] = $1; med[n] = $4; mn[n] = $6; sps[n] = $8; if ($1 == "kiln") kiln = $4 }
  END {
    printf "%-9s | %-15s | %-12s | %-10s | %s\n", "", "step ms median", "step ms min", "samples/s",
      "ratio"
    printf "----------|-----------------|--------------|------------|------\n"
    for (i = 1; i <= n; i++) {
      ratio = kiln > 0 ? sprintf("%.2f", med[i] / kiln) : "-"
      printf "%-9s | %-15s | %-12s | %-10s | %s\n", name[i], med[i], mn[i], sps[i], ratio
    }
    printf "(batch 512, %s threads each; ratio = step time / kiln step time: above 1, kiln is faster)\n",
      threads
  }' <<<"$results"
