#!/usr/bin/env bash
# A model folder for measuring patch streaming: the committed Fashion-MNIST teacher cut at
# 'relu2' (float32[1, 64, 14, 14], 12,544 values: kilobytes per request, where the BottleFit
# models send a few dozen bytes), uint8 frames. Usage: bench/make_streaming_model.sh [CLEAVE] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
cleave=${1:-.build/release/cleave}
out=${2:-bench/out/teacher-relu2}
mkdir -p "$out"
cp models/fmnist/teacher/teacher.onnx "$out/full.onnx"
"$cleave" model split "$out/full.onnx" --at relu2 --head "$out/head.onnx" --tail "$out/tail.onnx" >/dev/null
python3 - "$out" <<'PY'
import hashlib, json, sys
out = sys.argv[1]
def file(name):
    return {"path": name, "sha256": hashlib.sha256(open(f"{out}/{name}", "rb").read()).hexdigest()}
manifest = {
    "name": "fmnist-teacher-relu2", "input_name": "image", "input_shape": [1, 28, 28],
    "cut_tensor": "relu2", "cut_shape": [64, 14, 14],
    "full": file("full.onnx"), "head": file("head.onnx"), "tail": file("tail.onnx"),
    "codec": "uint8", "zstd_level": 3, "normalization": "pixel / 255", "accuracy": {},
    "command": "bench/make_streaming_model.sh", "seed": 0,
}
json.dump(manifest, open(f"{out}/manifest.json", "w"), indent=2, sort_keys=True)
print(f"{out}: teacher cut at relu2 [64, 14, 14], uint8")
PY
