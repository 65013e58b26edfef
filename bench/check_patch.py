#!/usr/bin/env python3
"""Patch-based execution against layer by layer and onnxruntime (reference only, never a dependency).

For each benchmark model (make_models.py) and the Fashion-MNIST model, and every grid from 2x2
to 8x8: `cleave model run --patch NxM` (the planner picks the stage end for that grid) against
`cleave model run` layer by layer (relative max|diff| <= 1e-5) and against onnxruntime on the
whole model (<= 1e-4, as the split check).

Usage: python3 bench/check_patch.py CLEAVE_BINARY [MODEL_DIR] [FMNIST_MODEL]
Prints one line per (model, grid) and exits non-zero on any mismatch.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def relative(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def run(binary, model, name, array, work, *extra):
    src = os.path.join(work, "in.npy")
    np.save(src, array)
    out = os.path.join(work, "out")
    result = subprocess.run([binary, "model", "run", model, "--input", f"{name}={src}", "--output-dir", out, "--threads", "2", *extra],
                            check=True, capture_output=True, text=True)
    output = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_outputs()[0].name
    return np.load(os.path.join(out, output + ".npy")), result.stderr.strip()


def main():
    binary = sys.argv[1]
    folder = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "out")
    fmnist = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "models", "fmnist", "c4", "full.onnx")
    rng = np.random.default_rng(0)
    models = [(os.path.join(folder, f"{name}.onnx"), (1, 3, size, size)) for name, size in
              [("mobilenetv2_224", 224), ("mobilenetv2_96", 96), ("resnet18_224", 224)]]
    models.append((fmnist, (1, 1, 28, 28)))
    failures = 0
    for model, shape in models:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        x = rng.uniform(0 if shape[1] == 1 else -1, 1, shape).astype(np.float32)
        reference = session.run(None, {name: x})[0]
        with tempfile.TemporaryDirectory() as work:
            layered, _ = run(binary, model, name, x, work)
            for n in range(2, 9):
                patched, said = run(binary, model, name, x, work, "--patch", f"{n}x{n}")
                vs_layers, vs_ort = relative(patched, layered), relative(patched, reference)
                good = vs_layers <= 1e-5 and vs_ort <= 1e-4
                failures += not good
                plan = said.removeprefix("patch plan: ")
                print(f"{os.path.basename(model)} {n}x{n}: vs layer by layer {vs_layers:.1e}, vs onnxruntime {vs_ort:.1e} "
                      f"{'ok' if good else 'MISMATCH'} ({plan})")
    print(f"patch check: {'all agree' if failures == 0 else f'{failures} mismatches'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
