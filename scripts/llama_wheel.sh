#!/usr/bin/env bash
# Build (once) and print the path of a portable llama-cpp-python wheel.
#
# The wheel is built with GGML_NATIVE=OFF: ggml then compiles for a fixed x86-64 baseline
# (SSE4.2, AVX, AVX2, FMA, F16C, BMI2) instead of the build machine's own CPU, so the same
# wheel runs on every CPU of this machine kind (a native build on an AMX CPU dies with a
# general protection fault on the first completion). Where the CPU lacks that baseline the
# build turns those instruction sets off too, and the cache key says so.
#
# The cache folder is keyed on everything the binary depends on: the llama-cpp-python version,
# the CMake flags, the Python tag, the compiler version and the instruction-set baseline. A wheel
# that fails its zip check is deleted and rebuilt, never reused.
#
# Usage: scripts/llama_wheel.sh PYTHON VERSION CACHE_DIR   (prints the wheel's path on stdout)
# With LLAMA_WHEEL_DRY_RUN=1 it says what it would do ("build DIR" or the cached wheel) and builds nothing.
set -euo pipefail
PY=${1:?python}; VERSION=${2:?version}; CACHE=${3:?cache dir}

for tool in cc c++; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: building llama-cpp-python needs a C/C++ compiler ('$tool' not found): apt-get install build-essential" >&2
    exit 2
  }
done
# scikit-build-core fetches cmake from PyPI when the system has none; say so if neither works.
command -v cmake >/dev/null 2>&1 || "$PY" -c 'import cmake' 2>/dev/null \
  || echo "note: no system cmake; pip will fetch the 'cmake' package for the build (or: apt-get install cmake)" >&2

FLAGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
BASELINE="x86-64-avx2"
if [ "$(uname -m)" = "x86_64" ] && ! grep -qw avx2 /proc/cpuinfo; then
  FLAGS="$FLAGS -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
  BASELINE="x86-64-sse"
fi
[ "$(uname -m)" = "x86_64" ] || BASELINE="$(uname -m)"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CCVER=$(cc -dumpfullversion 2>/dev/null || cc -dumpversion)
KEY=$(printf '%s|%s|%s|%s|%s' "$VERSION" "$FLAGS" "$PYTAG" "$CCVER" "$BASELINE" | sha256sum | cut -c1-16)
DIR="$CACHE/llama-cpp-python-$VERSION-$PYTAG-$BASELINE-$KEY"
mkdir -p "$DIR"

find_wheel() { ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1; }
WHEEL=$(find_wheel || true)
if [ -n "$WHEEL" ] && ! "$PY" -m zipfile -t "$WHEEL" >/dev/null 2>&1; then
  echo "the cached wheel $WHEEL is corrupt: rebuilding it" >&2
  rm -f "$WHEEL"; WHEEL=""
fi
if [ -n "${LLAMA_WHEEL_DRY_RUN:-}" ]; then
  if [ -n "$WHEEL" ]; then echo "$WHEEL"; else echo "build $DIR"; fi
  exit 0
fi
if [ -z "$WHEEL" ]; then
  echo "building llama-cpp-python $VERSION portably ($BASELINE; 10-18 min on 2 cores) into $DIR" >&2
  TMP=$(mktemp -d "$DIR/.build-XXXXXX")
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel -q --no-cache-dir --no-deps -w "$TMP" "llama-cpp-python==$VERSION" >&2
  mv "$TMP"/llama_cpp_python-*.whl "$DIR"/   # a rename inside one folder tree: no half-written wheel is ever found
  rm -rf "$TMP"
  printf 'version=%s\nflags=%s\npython=%s\ncc=%s\nbaseline=%s\n' "$VERSION" "$FLAGS" "$PYTAG" "$CCVER" "$BASELINE" > "$DIR/BUILD-INFO"
  WHEEL=$(find_wheel)
fi
echo "$WHEEL"
