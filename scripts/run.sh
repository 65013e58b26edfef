#!/usr/bin/env bash
# The main job: installs what is missing, builds cleave (release), and runs `cleave demo`:
# a Mosquitto broker on a free loopback port, a coordinator and three agents with different
# device profiles, Fashion-MNIST test images through split, local and offload inference,
# and a summary table. Extra arguments go to `cleave demo` (see `cleave demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product cleave
exec .build/release/cleave demo "$@"
