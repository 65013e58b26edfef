#!/usr/bin/env bash
# The main job, for now: installs what is missing, builds cleave, builds the reference
# MobileNetV2 and ResNet-18 models, inspects one, splits it and runs head and tail.
# (`cleave demo`, split inference over MQTT, comes with the agent/coordinator work.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product cleave
python3 bench/make_models.py bench/out
cleave=.build/release/cleave
$cleave model inspect bench/out/mobilenetv2_96.onnx | head -20
$cleave model split bench/out/mobilenetv2_96.onnx --at add_166 --head bench/out/head.onnx --tail bench/out/tail.onnx
python3 -c "import numpy as np; np.save('bench/out/image.npy', np.random.default_rng(0).uniform(-1,1,(1,3,96,96)).astype(np.float32))"
$cleave model run bench/out/head.onnx --input input=bench/out/image.npy --output-dir bench/out/head-out
$cleave model run bench/out/tail.onnx --input add_166=bench/out/head-out/add_166.npy --output-dir bench/out/tail-out
$cleave model bench bench/out/mobilenetv2_96.onnx --threads 2 --runs 20 --warmup 3
