#!/usr/bin/env bash
# The CUDA checks and figures, for a machine with an NVIDIA GPU (run from the repo root):
#   bench/gpu.sh OUTDIR [MODEL]
# 1. the op suite, training steps and tiny LLMs on CUDA (each test checks its own results
#    against the reference the CPU and INTERP runs are held to);
# 2. `kiln generate` greedy on MODEL (default: the fetched SmolLM2) on CPU and on CUDA: the same
#    text, compared byte for byte;
# 3. `kiln bench llm --preset llama-7b --random --dtype f16`, `kiln bench llm -m MODEL` and
#    `kiln bench matmul`, on CUDA.
# Binaries from $KILN_BIN (default build/); every step has its own time limit, and each step's
# log is kept in OUTDIR. Exit status: the number of failed checks.
set -uo pipefail
out=${1:?usage: bench/gpu.sh OUTDIR [MODEL]}
model=${2:-$HOME/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf}
bin=${KILN_BIN:-build}
mkdir -p "$out"
export KILN_CACHE=${KILN_CACHE:-$(mktemp -d)}
fails=0

step() { # step NAME SECONDS CMD...: CMD with a time limit; its stdout in OUTDIR/NAME.log, stderr in .err
  local name=$1 limit=$2 t0 rc
  shift 2
  echo "=== $name ($(date -u +%T), limit ${limit} s)"
  t0=$EPOCHREALTIME
  timeout "$limit" "$@" >"$out/$name.log" 2>"$out/$name.err"
  rc=$?
  tail -n 25 "$out/$name.log"
  tail -n 8 "$out/$name.err"
  awk -v n="$name" -v rc="$rc" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "=== %s: exit %d in %.1f s\n", n, rc, b - a }'
  [ "$rc" -eq 0 ] || fails=$((fails + 1))
  return "$rc"
}

nvidia-smi -L 2>&1 | head -n 2
step devices 30 "$bin/kiln" devices

# the op suite first (quick to fail if launches do not work), then training steps and LLMs
ops="dtype promote creation unary exp2 binary where cast bitcast reduce softmax movement
  elementwise cat matmul take fusion graph schedule codegen memory errors autograd layers eigh
  optim quant"
# shellcheck disable=SC2086
step tests-ops 200 env KILN_TEST_DEVICES=CUDA "$bin/kiln_tests" -v $ops
step tests-llm 150 env KILN_TEST_DEVICES=CUDA "$bin/kiln_tests" -v train_ llm_

if [ -f "$model" ]; then
  prompt="The capital of France is Paris. The capital of Germany is"
  step generate-cpu 90 "$bin/kiln" generate -m "$model" -p "$prompt" -n 32 --temp 0 --device CPU
  step generate-cuda 90 "$bin/kiln" generate -m "$model" -p "$prompt" -n 32 --temp 0 --device CUDA
  if [ -s "$out/generate-cpu.log" ] && cmp -s "$out/generate-cpu.log" "$out/generate-cuda.log"; then
    echo "=== generate: CPU and CUDA wrote the same text"
  else
    echo "=== generate: CPU and CUDA DIFFER"
    fails=$((fails + 1))
  fi
  step bench-llm-model 90 "$bin/kiln" bench llm -m "$model" -p 128 -n 64 --runs 3 --device CUDA
else
  echo "=== no model at $model: generate and bench llm -m skipped"
fi
step bench-llm-7b 150 "$bin/kiln" bench llm --preset llama-7b --random --dtype f16 -n 32 --runs 3 \
  --device CUDA
step bench-matmul 60 "$bin/kiln" bench matmul --sizes 1024,2048,4096 --runs 5 --device CUDA
echo "=== gpu.sh: $fails failed"
exit "$fails"
