#!/usr/bin/env bash
# Builds bench/llama_reference against a llama.cpp build tree (for checking only).
# Usage: bench/llama_reference/build.sh LLAMA_CPP_DIR OUT_BINARY
# LLAMA_CPP_DIR is llama.cpp built with cmake into LLAMA_CPP_DIR/build, static
# libraries (-DBUILD_SHARED_LIBS=OFF); docs/benchmarks.md says how to get it
# from the llama-cpp-python source package.
set -euo pipefail
src=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" "$here/llama_reference.cpp" \
    "$src/build/src/libllama.a" "$src/build/ggml/src/libggml.a" "$src/build/ggml/src/libggml-cpu.a" \
    "$src/build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -o "$out"
echo "built $out"
