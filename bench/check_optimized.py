#!/usr/bin/env python3
"""The fused graph (`cleave model run`, the default) against the graph as written
(`--no-optimize`) on the four benchmark models: every output within rtol 1e-4 (atol 1e-5).

Usage: python3 bench/check_optimized.py CLEAVE_BINARY [MODEL_DIR]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx


def run(binary, model, feeds, optimize, folder):
    arguments = [binary, "model", "run", model, "--output-dir", folder, "--threads", "2"]
    arguments += [] if optimize else ["--no-optimize"]
    for name, path in feeds.items():
        arguments += ["--input", f"{name}={path}"]
    subprocess.run(arguments, check=True, capture_output=True)
    return {f[:-4]: np.load(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".npy")}


def main():
    binary = sys.argv[1]
    models_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "out")
    models = [os.path.join(models_dir, f) for f in ("mobilenetv2_224.onnx", "mobilenetv2_96.onnx", "resnet18_224.onnx")]
    models.append(os.path.join(os.path.dirname(__file__), "..", "models", "fmnist", "c4", "full.onnx"))
    rng = np.random.default_rng(7)
    failed = False
    for model in models:
        graph = onnx.load(model).graph
        initializers = {i.name for i in graph.initializer}
        with tempfile.TemporaryDirectory() as work:
            feeds = {}
            for value in graph.input:
                if value.name in initializers:
                    continue
                shape = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
                path = os.path.join(work, f"{value.name}.npy")
                np.save(path, rng.random(shape, dtype=np.float32))
                feeds[value.name] = path
            fused = run(binary, model, feeds, True, os.path.join(work, "fused"))
            plain = run(binary, model, feeds, False, os.path.join(work, "plain"))
            for name, reference in plain.items():
                ok = np.allclose(fused[name], reference, rtol=1e-4, atol=1e-5)
                worst = float(np.max(np.abs(fused[name] - reference) / (1e-5 + np.abs(reference))))
                print(f"{os.path.basename(model)} {name}: worst |Δ| / (1e-5 + |ref|) = {worst:.2e} {'ok' if ok else 'DIFFERS'}")
                failed |= not ok
    # The fusions really happen: MobileNetV2-224 runs as 52 convolutions (every
    # BatchNormalization folded, every ReLU6 and every residual Add an epilogue).
    inspect = subprocess.run([binary, "model", "inspect", models[0]], check=True, capture_output=True, text=True).stdout
    executed = next(line for line in inspect.splitlines() if line.startswith("executed"))
    expected = ("executed   Conv×52 Flatten×1 Gemm×1 GlobalAveragePool×1  "
                "(52 BatchNormalization folded, 35 activations fused, 10 Adds fused, 0 Winograd)")
    print(executed)
    if executed != expected:
        print(f"fusion count differs from: {expected}")
        failed = True
    print("optimized check: " + ("FAILED" if failed else "all agree"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
