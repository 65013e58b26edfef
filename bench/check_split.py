#!/usr/bin/env python3
"""Split-correctness check against onnxruntime (reference only, never a dependency).

For each model built by make_models.py and several cut tensors: split with
`cleave model split`, run whole, head and tail with `cleave model run`, and check
(1) head→tail equals whole, (2) onnxruntime agrees on whole, head and tail.

Usage: python3 bench/check_split.py CLEAVE_BINARY [MODEL_DIR]
Prints one line per (model, cut) and exits non-zero on any mismatch.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

CUTS = {
    "mobilenetv2_224": 4, "mobilenetv2_96": 4, "resnet18_224": 4,
}


def cleave(binary, *args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout


def candidates(binary, model):
    text = cleave(binary, "model", "inspect", model)
    lines = text.split("cuts")[1].splitlines()[1:]
    return [line.split()[0] for line in lines if line.startswith("  ")]


def run_cleave(binary, model, name, array, work):
    src = os.path.join(work, "in.npy")
    np.save(src, array)
    out = os.path.join(work, "out")
    cleave(binary, "model", "run", model, "--input", f"{name}={src}", "--output-dir", out, "--threads", "2")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    ours = np.load(os.path.join(out, output + ".npy"))
    theirs = session.run(None, {name: array})[0]
    return ours, theirs


def close(a, b):
    """Agreement relative to the reference's largest magnitude (float32 sums in another order differ ~1e-6)."""
    error = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))
    return error <= 1e-4, error


def main():
    binary = sys.argv[1]
    folder = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "out")
    failures = 0
    rng = np.random.default_rng(0)
    for name, count in CUTS.items():
        model = os.path.join(folder, name + ".onnx")
        size = int(name.split("_")[-1])
        x = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
        with tempfile.TemporaryDirectory() as work:
            whole, whole_ort = run_cleave(binary, model, "input", x, work)
            ok, err = close(whole, whole_ort)
            print(f"{name} whole: cleave vs onnxruntime relative max|diff| {err:.2e} {'ok' if ok else 'MISMATCH'}")
            failures += not ok
            cuts = candidates(binary, model)
            picks = [cuts[int(i * (len(cuts) - 1) / (count - 1))] for i in range(count)]
            for cut in picks:
                head, tail = os.path.join(work, "head.onnx"), os.path.join(work, "tail.onnx")
                cleave(binary, "model", "split", model, "--at", cut, "--head", head, "--tail", tail)
                mid, mid_ort = run_cleave(binary, head, "input", x, work)
                out, out_ort = run_cleave(binary, tail, cut, mid, work)
                checks = [close(out, whole), close(mid, mid_ort), close(out, out_ort)]
                good = all(c[0] for c in checks)
                failures += not good
                print(f"{name} cut {cut}: head+tail vs whole {checks[0][1]:.2e}, head vs ort {checks[1][1]:.2e}, "
                      f"tail vs ort {checks[2][1]:.2e} {'ok' if good else 'MISMATCH'}")
    print(f"split check: {'all agree' if failures == 0 else f'{failures} mismatches'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
