# common.sh — sourced by the bench scripts: the header every result carries (date, commit,
# machine, command), as bench/RESULTS.md records it.
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
