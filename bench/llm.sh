#!/usr/bin/env bash
# llm.sh — LLM inference speed of kiln (`kiln bench llm`) and llama.cpp (bench/llm_llamacpp.py)
# on the same GGUF model, thread count, prompt ids and token counts, in the same run on the same
# machine: a table of prompt (pp) and generation (tg) tokens/s with the ratios kiln / llama.cpp,
# and each process's peak RSS beside the model file size. Builds nothing: expects $BUILD/kiln.
# Usage: bench/llm.sh [-m MODEL] [-p N] [-n N] [--runs R] [--threads T] [--kv f16|f32]
# Knobs: BUILD (build), KILN_CACHE, LLAMACPP_PYTHON (default: python3 with llama_cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

BUILD=${BUILD:-build}
VENV=${KILN_CACHE:-$HOME/.cache/kiln}/bench-venv
usage="usage: bench/llm.sh [-m MODEL] [-p N] [-n N] [--runs R] [--threads T] [--kv f16|f32]"

note() { echo "# llm.sh: $*"; }
die() {
  echo "llm.sh: $*" >&2
  exit 2
}

MODEL="" P=64 N=64 RUNS=5 THREADS=$(nproc) KV=f16
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) echo "$usage" && exit 0 ;;
    -m | -p | -n | --runs | --threads | --kv) [ $# -ge 2 ] || die "$1 needs a value" ;;&
    -m) MODEL=$2 ;;
    -p) P=$2 ;;
    -n) N=$2 ;;
    --runs) RUNS=$2 ;;
    --threads) THREADS=$2 ;;
    --kv) KV=$2 ;;
    *) die "unknown argument '$1'; $usage" ;;
  esac
  shift 2
done
for v in "-p $P" "-n $N" "--runs $RUNS" "--threads $THREADS"; do
  [[ ${v#* } =~ ^[0-9]+$ ]] || die "${v% *} wants a whole number, got '${v#* }'"
done
if [ "$P" -lt 1 ] || [ "$RUNS" -lt 1 ] || [ "$THREADS" -lt 1 ]; then
  die "-p, --runs and --threads want at least 1 (got $P, $RUNS, $THREADS)"
fi
[ "$KV" = f16 ] || [ "$KV" = f32 ] || die "--kv wants f16 or f32, got '$KV'"

# The model kiln picks by default (kiln_model_find "SmolLM2"), so both engines read one file.
found=$(bench_model "$MODEL") || die "no model: ${MODEL:-none in the cache} (run scripts/fetch-model or pass -m FILE)"
MODEL=$found

# Prints text $2 with each line prefixed by engine name $1.
tagged() { awk -v tag="$1: " '{print tag $0}' <<<"$2"; }

# Runs a command, its output on stdout; its peak RSS in KiB goes to file $1.
peak_rss() {
  local out=$1 rc=0
  shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$out.time" "$@" || rc=$?
    awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time" >"$out"
  else # ru_maxrss of the only child, in KiB on Linux
    python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)' "$out" "$@" || rc=$?
  fi
  return $rc
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bench_header "bench/llm.sh -m $MODEL -p $P -n $N --runs $RUNS --threads $THREADS --kv $KV"

results=""
if [ ! -x "$BUILD/kiln" ]; then
  note "kiln: no $BUILD/kiln; build it with make (the table has no kiln row)"
else
  kiln_rc=0
  kiln_out=$(KILN_THREADS=$THREADS peak_rss "$tmp/kiln.rss" "$BUILD/kiln" bench llm -m "$MODEL" \
    -p "$P" -n "$N" --runs "$RUNS" 2>&1) || kiln_rc=$?
  tagged kiln "$kiln_out"
  if [ $kiln_rc -eq 0 ] && grep -q '^tg' <<<"$kiln_out"; then
    kiln_rss=$(cat "$tmp/kiln.rss" 2>/dev/null || true)
    results+=$(awk -v rss="${kiln_rss:--}" '/^pp[0-9]+:/ {pp = $2} /^tg[0-9]+:/ {tg = $2}
      END {print "kiln", pp, tg, rss}' <<<"$kiln_out")$'\n'
  elif [ $kiln_rc -eq 2 ]; then
    note "kiln: this build has no \`kiln bench llm\` (exit 2); the table has no kiln row"
  else
    note "kiln: bench llm failed (exit $kiln_rc); the table has no kiln row"
  fi
fi

if py=$(find_python llama_cpp "${LLAMACPP_PYTHON:-}" python3 "$VENV/bin/python3"); then
  peer_rc=0
  peer_out=$(peak_rss "$tmp/peer.rss" "$py" bench/llm_llamacpp.py -m "$MODEL" -p "$P" -n "$N" \
    --runs "$RUNS" --threads "$THREADS" --kv "$KV" 2>&1) || peer_rc=$?
  tagged llama.cpp "$peer_out"
  if [ $peer_rc -eq 0 ] && grep -q '^tg' <<<"$peer_out"; then
    peer_rss=$(cat "$tmp/peer.rss" 2>/dev/null || true)
    results+=$(awk -v rss="${peer_rss:--}" '/^pp[0-9]+:/ {pp = $2} /^tg[0-9]+:/ {tg = $2}
      END {print "llama.cpp", pp, tg, rss}' <<<"$peer_out")$'\n'
  else
    note "llama.cpp: the peer failed (exit $peer_rc); the table has no llama.cpp row"
  fi
else
  note "llama.cpp: llama-cpp-python is not installed; run scripts/setup-bench"
fi

# Each line of results: ENGINE PP_TOK_S TG_TOK_S PEAK_RSS_KIB ("-" where unknown)
echo
model_bytes=$(stat -c %s "$MODEL")
awk -v p="$P" -v n="$N" -v threads="$THREADS" -v kv="$KV" -v model="$(basename "$MODEL")" \
  -v bytes="$model_bytes" '
  NF == 4 { name[++k] = $1; pp[k] = $2; tg[k] = $3; rss[k] = $4
            if ($1 == "kiln") { kpp = $2; ktg = $3 }
            if ($1 == "llama.cpp") { lpp = $2; ltg = $3 } }
  END {
    printf "%-16s | %-12s | %-12s | %s\n", "engine", "pp" p " tok/s", "tg" n " tok/s", "peak RSS"
    printf "-----------------|--------------|--------------|---------\n"
    for (i = 1; i <= k; i++)
      printf "%-16s | %-12s | %-12s | %s\n", name[i], pp[i], tg[i],
        (rss[i] == "-" ? "-" : sprintf("%.1f MB", rss[i] * 1024 / 1e6))
    if (kpp != "" && lpp != "")
      printf "%-16s | %-12.2f | %-12.2f |\n", "kiln / llama.cpp", kpp / lpp,
        (ltg > 0 ? ktg / ltg : 0)
    printf "(model %s, %.1f MB; %s threads each; medians; ratio above 1: kiln is faster;\n",
      model, bytes / 1e6, threads
    printf " KV cache: kiln f32, llama.cpp %s; llama.cpp\047s RSS includes its Python interpreter)\n",
      kv
  }' <<<"$results"
