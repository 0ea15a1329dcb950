#!/usr/bin/env bash
# serve.sh — `kiln serve` against llama.cpp's own `llama-server` (continuous batching) on the
# same GGUF model, threads, slots and context per slot, one after the other in the same run:
# aggregate generated tokens/s for 1, 2, 4 and 8 concurrent streaming chat clients (greedy, the
# same prompts and max_tokens for both; bench/serve_load.py), then the time to first token of a
# 500-token prompt; a markdown table with the ratios. Builds nothing: expects $BUILD/kiln and
# the llama-server that bench/setup-llama-server.sh builds (the peer is skipped without it).
# kiln's kernels are tuned for the run's shapes first (`kiln tune`, cached in KILN_CACHE).
# Each server's block ends with the CPU time it used beside that of everything else meanwhile
# (the machine must be otherwise idle for the figures to mean anything).
# Usage: bench/serve.sh [-m MODEL] [--threads 2] [--parallel 4] [--ctx 2048] [-n 64]
#                       [--requests 2] [--runs 3] [--ttft-runs 5] [--clients "1 2 4 8"]
# Knobs: BUILD (build), KILN_CACHE, LLAMA_SERVER (the peer's binary), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
LLAMA_SERVER=${LLAMA_SERVER:-${KILN_CACHE:-$HOME/.cache/kiln}/bench/llama-server-build/bin/llama-server}
usage='usage: bench/serve.sh [-m MODEL] [--threads 2] [--parallel 4] [--ctx 2048] [-n 64]
                      [--requests 2] [--runs 3] [--ttft-runs 5] [--clients "1 2 4 8"]'

note() { echo "# serve.sh: $*"; }
die() {
  echo "serve.sh: $*" >&2
  exit 2
}

MODEL="" THREADS=2 PARALLEL=4 CTX=2048 N=64 REQUESTS=2 RUNS=3 TTFT_RUNS=5 CLIENTS="1 2 4 8"
PROMPT_TOKENS=500
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) echo "$usage" && exit 0 ;;
    -m | --threads | --parallel | --ctx | -n | --requests | --runs | --ttft-runs | --clients)
      [ $# -ge 2 ] || die "$1 needs a value" ;;&
    -m) MODEL=$2 ;;
    --threads) THREADS=$2 ;;
    --parallel) PARALLEL=$2 ;;
    --ctx) CTX=$2 ;;
    -n) N=$2 ;;
    --requests) REQUESTS=$2 ;;
    --runs) RUNS=$2 ;;
    --ttft-runs) TTFT_RUNS=$2 ;;
    --clients) CLIENTS=$2 ;;
    *) die "unknown argument '$1'; $usage" ;;
  esac
  shift 2
done
for v in "--threads $THREADS" "--parallel $PARALLEL" "--ctx $CTX" "-n $N" "--requests $REQUESTS" \
  "--runs $RUNS" "--ttft-runs $TTFT_RUNS"; do
  [[ ${v#* } =~ ^[1-9][0-9]*$ ]] || die "${v% *} wants a whole number of at least 1, got '${v#* }'"
done
for c in $CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "--clients wants whole numbers, got '$c'"; done
[ "$CTX" -gt $((PROMPT_TOKENS + 64)) ] || die "--ctx $CTX is too small for the ${PROMPT_TOKENS}-token prompt"

# The model kiln picks by default (kiln_model_find "SmolLM2"), so both engines read one file.
found=$(bench_model "$MODEL") || die "no model: ${MODEL:-none in the cache} (run scripts/fetch-model or pass -m FILE)"
MODEL=$found

tmp=$(mktemp -d)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a server (command in "$@", its log in $tmp/$1.log) and waits for GET /health to
# answer 200; dies with the log's tail when it exits or does not come up in time.
start_server() {
  local name=$1 url=$2
  shift 2
  "$@" >"$tmp/$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do # 120 s
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -20 "$tmp/$name.log" >&2
      server_pid=""
      die "$name exited before it was ready (command: $*)"
    fi
    if curl -sf -o /dev/null "$url/health"; then return 0; fi
    sleep 0.2
  done
  tail -20 "$tmp/$name.log" >&2
  die "$name did not answer $url/health within 120 s (command: $*)"
}

# Prints text $2 with each line prefixed by engine name $1.
tagged() { awk -v tag="$1: " '{print tag $0}' <<<"$2"; }
load() { "$PYTHON" bench/serve_load.py "$@"; }
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); exit}}'; }

WORDS="" # the TTFT prompt's length in words: calibrated on the first server, then fixed

# CPU time in seconds: all busy time of the machine, and that of process $1.
cpu_all() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"; }

# Measures one running server at $1 as engine $2; appends "ENGINE CLIENTS TOK_S TTFT_MS" lines
# and "ENGINE ttft PROMPT_TOKENS TTFT_MS" to $tmp/results.
measure() {
  local url=$1 name=$2 out c w t0 all0 own0
  t0=$(date +%s.%N) all0=$(cpu_all) own0=$(cpu_of "$server_pid")
  # Warm-up (not measured): every decode batch size and prompt chunk shape the runs use, so
  # kiln compiles (and searches) its kernels now; prompts tagged "warm" are never reused.
  out=$(load --url "$url" -c "$PARALLEL" -r 1 -m "$N" --tag warm 2>&1) ||
    die "$name: warm-up failed: $out"
  out=$(load --url "$url" -c "$((PARALLEL * 2))" -r 1 -m "$N" --tag warm8 2>&1) ||
    die "$name: warm-up failed: $out"
  out=$(load --url "$url" --ttft --runs 2 --prompt-tokens "$PROMPT_TOKENS" ${WORDS:+--prompt-words "$WORDS"} \
    --tag warm 2>&1) || die "$name: TTFT warm-up failed: $out"
  w=$(grep '^ttft ' <<<"$out" | field words)
  WORDS=${WORDS:-$w}
  for c in $CLIENTS; do
    out=$(load --url "$url" -c "$c" -r "$REQUESTS" -m "$N" --runs "$RUNS" --tag "c$c" 2>&1) ||
      die "$name: $c clients failed: $out"
    tagged "$name" "$out"
    grep '^clients ' <<<"$out" | awk -v e="$name" '{
      for (i = 1; i < NF; i++) { if ($i == "aggregate_tok_s") t = $(i + 1); if ($i == "ttft_ms_median") f = $(i + 1) }
      print e, $2, t, f }' >>"$tmp/results"
  done
  out=$(load --url "$url" --ttft --runs "$TTFT_RUNS" --prompt-words "$WORDS" --tag ttft 2>&1) ||
    die "$name: TTFT failed: $out"
  tagged "$name" "$out"
  grep '^ttft ' <<<"$out" | awk -v e="$name" '{
    for (i = 1; i < NF; i++) { if ($i == "prompt_tokens") p = $(i + 1); if ($i == "ttft_ms_median") f = $(i + 1) }
    print e, "ttft", p, f }' >>"$tmp/results"
  # What else ran meanwhile: the clients (a few percent) and any other process on the machine.
  awk -v e="$name" -v t="$(date +%s.%N)" -v t0="$t0" -v a="$(cpu_all)" -v a0="$all0" \
    -v o="$(cpu_of "$server_pid")" -v o0="$own0" -v n="$(nproc)" 'BEGIN {
    printf "# serve.sh: %s: %.0f s; CPU time: the server %.0f s, the load clients and all other processes %.0f s (of %.0f on %d cores)\n",
      e, t - t0, o - o0, (a - a0) - (o - o0), (t - t0) * n, n }'
}

bench_header "bench/serve.sh -m $MODEL --threads $THREADS --parallel $PARALLEL --ctx $CTX -n $N --requests $REQUESTS --runs $RUNS --ttft-runs $TTFT_RUNS --clients \"$CLIENTS\""
note "each client sends $REQUESTS streamed chat requests (greedy, max_tokens $N) one after another; tok/s: all completion tokens (usage) / wall time; medians of $RUNS runs"
touch "$tmp/results"
# Other work on the machine distorts both servers (their threads wait for each other at every
# step), so the header says how busy it was before the first server started.
read -r load1 _ </proc/loadavg
note "load average (1 min) before the run: $load1$(awk -v l="$load1" 'BEGIN {if (l > 0.5) print "; other processes are busy, the figures are disturbed"}')"

if [ ! -x "$BUILD/kiln" ]; then
  note "kiln: no $BUILD/kiln; build it with make (the table has no kiln column)"
elif ! grep -q '^ *serve ' <<<"$("$BUILD/kiln" help 2>&1 || true)"; then
  note "kiln: this build has no \`kiln serve\` (the table has no kiln column)"
else
  # kiln tunes its kernels for these shapes first, as a user would once per machine (verdicts
  # are cached; a later run finds them): prompt chunks of 64 tokens at cache lengths up to the
  # TTFT prompt's (485 = 7 x 64 + 37, the last chunk padded to 64 as the TTFT prompt's; -n 28
  # makes the cache 514 rows, so its last bucket is 512 as in a 2048-token slot) and decode
  # steps of --parallel rows, searched with BEAM=2.
  t_tune=$(date +%s.%N)
  KILN_THREADS="$THREADS" "$BUILD/kiln" tune --beam 2 bench llm -m "$MODEL" -p 485 -n 28 --batch "$PARALLEL" \
    --runs 1 >"$tmp/tune.log" 2>&1 || { tail -5 "$tmp/tune.log" >&2; die "kiln tune failed"; }
  note "kiln: KILN_THREADS=$THREADS $BUILD/kiln tune --beam 2 bench llm -m $MODEL -p 485 -n 28 --batch $PARALLEL --runs 1: $(awk -v a="$t_tune" -v b="$(date +%s.%N)" 'BEGIN {printf "%.0f", b - a}') s"
  port=$(free_port)
  start_server kiln "http://127.0.0.1:$port" env KILN_THREADS="$THREADS" "$BUILD/kiln" serve -m "$MODEL" \
    --host 127.0.0.1 --port "$port" --parallel "$PARALLEL" --ctx "$CTX"
  note "kiln: KILN_THREADS=$THREADS $BUILD/kiln serve -m $MODEL --port $port --parallel $PARALLEL --ctx $CTX"
  measure "http://127.0.0.1:$port" kiln
  stop_server
fi

if [ ! -x "$LLAMA_SERVER" ]; then
  note "llama-server: not built ($LLAMA_SERVER); run bench/setup-llama-server.sh (the table has no llama-server column)"
else
  version=$("$LLAMA_SERVER" --version 2>&1 | grep -m1 -i '^version' || echo "version unknown")
  port=$(free_port)
  start_server llama-server "http://127.0.0.1:$port" "$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 \
    --port "$port" -t "$THREADS" -tb "$THREADS" -np "$PARALLEL" -c "$((CTX * PARALLEL))"
  note "llama-server ($version): $LLAMA_SERVER -m $MODEL --port $port -t $THREADS -tb $THREADS -np $PARALLEL -c $((CTX * PARALLEL))"
  measure "http://127.0.0.1:$port" llama-server
  stop_server
fi

# results: "ENGINE CLIENTS TOK_S TTFT_MS" and "ENGINE ttft PROMPT_TOKENS TTFT_MS"
echo
awk -v clients="$CLIENTS" -v model="$(basename "$MODEL")" -v threads="$THREADS" -v np="$PARALLEL" \
  -v ctx="$CTX" -v n="$N" -v target="$PROMPT_TOKENS" '
  function r(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
  function v(x) { return x == "" ? "-" : x }
  $2 == "ttft" { pt[$1] = $3; tt[$1] = $4; next }
  { tok[$1, $2] = $3; ft[$1, $2] = $4 }
  END {
    print "| clients | kiln tok/s | llama-server tok/s | kiln / llama-server | kiln TTFT ms | llama-server TTFT ms |"
    print "|---:|---:|---:|---:|---:|---:|"
    k = split(clients, cs, " ")
    for (i = 1; i <= k; i++) {
      c = cs[i]
      printf "| %s | %s | %s | %s | %s | %s |\n", c, v(tok["kiln", c]), v(tok["llama-server", c]),
        r(tok["kiln", c], tok["llama-server", c]), v(ft["kiln", c]), v(ft["llama-server", c])
    }
    p = pt["kiln"] != "" ? pt["kiln"] : pt["llama-server"] != "" ? pt["llama-server"] : target
    printf "| TTFT, %s-token prompt (ms) | %s | %s | %s | | |\n", p, v(tt["kiln"]), v(tt["llama-server"]),
      r(tt["llama-server"], tt["kiln"])
    print ""
    printf "kiln 4-client aggregate / 1-client: %s (llama-server: %s)\n",
      r(tok["kiln", 4], tok["kiln", 1]), r(tok["llama-server", 4], tok["llama-server", 1])
    printf "(model %s; %s threads each; %s slots of %s tokens each; max_tokens %s; medians; ratio\n",
      model, threads, np, ctx, n
    print " above 1: kiln is faster (TTFT row: llama-server ms / kiln ms); TTFT columns: median time"
    print " to first token of the requests under that load; TTFT row: /v1/completions, max_tokens 1)"
  }' "$tmp/results"
[ -s "$tmp/results" ] || { note "nothing was measured" && exit 1; }
