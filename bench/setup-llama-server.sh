#!/usr/bin/env bash
# setup-llama-server.sh — builds llama.cpp's own HTTP server (`llama-server`, the peer of
# `kiln serve` in bench/serve.sh) from the llama.cpp sources vendored in the PyPI sdist of
# llama-cpp-python: CPU only, Release, offline (no CURL, no OpenSSL, no web UI download).
# Usage: bench/setup-llama-server.sh [--force]   (prints the binary's path on stdout, last line)
# Knobs: KILN_CACHE (default ~/.cache/kiln; everything goes in $KILN_CACHE/bench/),
#        LLAMA_CPP_PYTHON_VERSION (pin the sdist, e.g. 0.3.16; default: the newest on PyPI),
#        JOBS (default 2), PYTHON (default python3, for pip).
# A second run reuses the build: it only checks that the binary runs.
set -euo pipefail

DIR=${KILN_CACHE:-$HOME/.cache/kiln}/bench
SRC=$DIR/llama-server-src     # the extracted sdist (vendor/llama.cpp inside)
BUILD=$DIR/llama-server-build # the CMake build tree
BIN=$BUILD/bin/llama-server
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python3}

note() { echo "setup-llama-server: $*" >&2; }
die() {
  echo "setup-llama-server: $*" >&2
  exit 1
}

force=0
case ${1:-} in
  "") ;;
  --force) force=1 ;;
  -h | --help) echo "usage: bench/setup-llama-server.sh [--force]" && exit 0 ;;
  *) die "unknown argument '$1'; usage: bench/setup-llama-server.sh [--force]" ;;
esac

# Reuse a build that runs (and, with a pinned version, was built from that version's sdist).
pinned=${LLAMA_CPP_PYTHON_VERSION:+llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz}
if [ $force -eq 0 ] && [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1 &&
  { [ -z "$pinned" ] || [ "$(cat "$SRC/.from" 2>/dev/null)" = "$pinned" ]; }; then
  note "reusing $BIN ($("$BIN" --version 2>&1 | grep -m1 -i version || true))"
  echo "$BIN"
  exit 0
fi

command -v cmake >/dev/null || die "cmake not found; install it (apt-get install cmake)"
command -v c++ >/dev/null || die "no C++ compiler; install one (apt-get install g++)"
mkdir -p "$DIR"

# 1. The sdist (pip only downloads it; nothing is built or installed by pip).
spec=llama-cpp-python${LLAMA_CPP_PYTHON_VERSION:+==$LLAMA_CPP_PYTHON_VERSION}
newest_sdist() { # the newest matching sdist in the cache, or nothing
  local f best=""
  if [ -n "${LLAMA_CPP_PYTHON_VERSION:-}" ]; then
    set -- "$DIR/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
  else
    set -- "$DIR"/llama_cpp_python-*.tar.gz
  fi
  for f in "$@"; do
    [ -f "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; } && best=$f
  done
  echo "$best"
}
sdist=$(newest_sdist)
if [ -z "$sdist" ]; then
  note "downloading the sdist of $spec from PyPI"
  "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "$spec" -d "$DIR" >&2 ||
    die "pip could not download the sdist of $spec"
  sdist=$(newest_sdist)
  [ -n "$sdist" ] || die "pip reported success but no sdist of $spec is in $DIR"
fi
note "sdist $sdist"

# 2. Its sources, extracted once per sdist (a stamp names the sdist they came from).
if [ ! -f "$SRC/.from" ] || [ "$(cat "$SRC/.from")" != "$(basename "$sdist")" ]; then
  rm -rf "$SRC" "$BUILD"
  mkdir -p "$SRC"
  tar -C "$SRC" --strip-components=1 -xzf "$sdist"
  basename "$sdist" >"$SRC/.from"
fi
LLAMA=$SRC/vendor/llama.cpp
[ -f "$LLAMA/CMakeLists.txt" ] || die "no vendor/llama.cpp in $sdist"

# 3. Configure and build only the server. LLAMA_CURL is deprecated (ignored) in recent
# llama.cpp and was the switch in older ones; the web UI would be downloaded from Hugging Face
# unless LLAMA_USE_PREBUILT_UI is off; OpenSSL only serves HTTPS model downloads.
# The build is native (-march=native); on x86 it leaves out AMX, which such a build would use
# on a CPU that reports it even where the kernel or hypervisor does not enable the tile state
# (llama-server then dies with SIGSEGV on `ldtilecfg` in its warm-up; seen on a VM here).
flags=()
if [ "$(uname -m)" = x86_64 ]; then
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  flags=(-DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx")
fi
start=$(date +%s)
note "configuring in $BUILD"
cmake -S "$LLAMA" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF "${flags[@]}" \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_WEBUI=OFF -DLLAMA_BUILD_WEBUI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENCL=OFF -DGGML_BLAS=OFF \
  >"$DIR/llama-server-cmake.log" 2>&1 || {
  tail -30 "$DIR/llama-server-cmake.log" >&2
  die "cmake configure failed (log: $DIR/llama-server-cmake.log)"
}
note "building llama-server with $JOBS jobs (many minutes on 2 cores; log: $DIR/llama-server-build.log)"
cmake --build "$BUILD" --config Release --target llama-server -j "$JOBS" \
  >"$DIR/llama-server-build.log" 2>&1 || {
  tail -30 "$DIR/llama-server-build.log" >&2
  die "build failed (log: $DIR/llama-server-build.log)"
}
[ -x "$BIN" ] || die "the build finished but $BIN is missing"
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run ($BIN --version failed)"
note "built in $(($(date +%s) - start)) s: $("$BIN" --version 2>&1 | grep -m1 -i version || true)"
echo "$BIN"
