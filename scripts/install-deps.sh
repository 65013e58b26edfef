#!/usr/bin/env bash
# Installs what Cleave needs on Debian or Raspberry Pi OS, skipping what is already there.
# System: OpenBLAS, zstd, libmosquitto (+ broker), ONNX operator test data, Fashion-MNIST.
# Python (reference checks only): onnx, onnxruntime, numpy.
set -euo pipefail
packages=(libopenblas-dev libzstd-dev libmosquitto-dev mosquitto zlib1g-dev openssl libonnx-testdata dataset-fashion-mnist pkg-config python3-pip binutils)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
if ! python3 -c "import onnx, onnxruntime, numpy, gguf, openai" 2>/dev/null; then
    echo "installing Python reference packages (checking only): onnx onnxruntime numpy gguf openai"
    python3 -m pip install -q onnx onnxruntime numpy gguf openai flwr 2>/dev/null || python3 -m pip install -q --break-system-packages onnx onnxruntime numpy gguf openai flwr
fi
command -v swift >/dev/null || { echo "error: Swift 6 is not on PATH; install the Swift 6.x toolchain for Linux first" >&2; exit 1; }
