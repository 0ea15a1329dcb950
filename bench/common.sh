# common.sh — sourced by the bench scripts: the header every result carries (date, commit,
# machine, command), as bench/RESULTS.md records it, and the choice of Python interpreter for
# a peer.
# shellcheck shell=bash
bench_header() { # $1: the command line that was run
  local commit cpu
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit+dirty"
  fi
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
  echo "# date $(date -u +%Y-%m-%dT%H:%MZ)  commit $commit"
  echo "# machine $(uname -m), ${cpu:-unknown cpu}, $(nproc) cores"
  echo "# command $1"
}

# The first interpreter among the candidates that can import module $1.
find_python() {
  local module=$1 py
  shift
  for py in "$@"; do
    [ -n "$py" ] || continue
    if "$py" -c "import $module" >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

# The model file: $1 when given (it must exist), else the one kiln picks by default
# (kiln_model_find "SmolLM2": $KILN_CACHE/models, then ~/.cache/kiln/models).
bench_model() {
  local dir f
  if [ -n "${1:-}" ]; then
    [ -f "$1" ] && echo "$1"
    return
  fi
  for dir in ${KILN_CACHE:+"$KILN_CACHE/models"} "$HOME/.cache/kiln/models"; do
    for f in "$dir"/*SmolLM2*.gguf; do
      [ -f "$f" ] && echo "$f" && return 0
    done
  done
  return 1
}
