#!/usr/bin/env bash
# Re-makes models/fmnist/: the teacher, then one student per bottleneck width, then
# prints the docs/results.md table. About 12 minutes for the teacher and 8–10 per
# student on a 2-core x86-64 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product cleave
cleave=.build/release/cleave
$cleave train teacher --epochs 8 --seed 1 --out models/fmnist/teacher
for c in 1 2 4 8; do
    $cleave train fmnist --teacher models/fmnist/teacher/teacher.onnx --bottleneck-channels "$c" --seed 1 --out "models/fmnist/c$c"
done
python3 bench/results_table.py models/fmnist/teacher/teacher.json models/fmnist/c1 models/fmnist/c2 models/fmnist/c4 models/fmnist/c8
