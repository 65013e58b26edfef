#!/usr/bin/env python3
"""Cross-check trained Fashion-MNIST split models with onnxruntime (reference only).

For every model folder given: onnxruntime runs full.onnx, and head.onnx followed by
tail.onnx, on the 10,000 test images; `cleave model eval --predictions` gives our
runtime's predictions for full.onnx. Prints agreement of the argmax (goal ≥ 99.9%),
the largest logit difference, and onnxruntime's accuracy; exits non-zero below the goal
or when a manifest hash does not match its file.

Usage: python3 bench/check_fmnist_ort.py CLEAVE_BINARY MODEL_DIR...
"""
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

DATA = "/usr/share/datasets/fashion-mnist"


def load_test():
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    return images.astype(np.float32) / 255.0, labels


def run(path, feed_name, array):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = []
    for start in range(0, len(array), 500):
        outputs.append(session.run(None, {feed_name: array[start:start + 500]})[0])
    return np.concatenate(outputs)


def main():
    binary, folders = sys.argv[1], sys.argv[2:]
    images, labels = load_test()
    ok = True
    for folder in folders:
        manifest = json.load(open(os.path.join(folder, "manifest.json")))
        for key in ("full", "head", "tail"):
            entry = manifest[key]
            digest = hashlib.sha256(open(os.path.join(folder, entry["path"]), "rb").read()).hexdigest()
            if digest != entry["sha256"]:
                print(f"{folder}: {entry['path']} hash {digest} differs from the manifest")
                ok = False
        full = run(os.path.join(folder, "full.onnx"), manifest["input_name"], images)
        features = run(os.path.join(folder, "head.onnx"), manifest["input_name"], images)
        split = run(os.path.join(folder, "tail.onnx"), manifest["cut_tensor"], features)
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "predictions.txt")
            subprocess.run([binary, "model", "eval", os.path.join(folder, "full.onnx"), "--predictions", path],
                           check=True, capture_output=True)
            ours = np.loadtxt(path, dtype=np.int64)
        ort_full = full.argmax(1)
        ort_split = split.argmax(1)
        agree_full = (ours == ort_full).mean()
        agree_split = (ours == ort_split).mean()
        print(f"{folder}: ours vs ort full {agree_full * 100:.2f}% identical argmax, ours vs ort head+tail "
              f"{agree_split * 100:.2f}%, ort head+tail vs ort full max |Δlogit| {np.abs(split - full).max():.2e}, "
              f"accuracy ours {(ours == labels).mean() * 100:.2f}% ort {(ort_full == labels).mean() * 100:.2f}%")
        if agree_full < 0.999 or agree_split < 0.999:
            ok = False
    print("fmnist check: all agree" if ok else "fmnist check: MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
