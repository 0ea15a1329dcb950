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
