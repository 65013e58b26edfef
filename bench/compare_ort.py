#!/usr/bin/env python3
"""Side-by-side CNN latency: `cleave model bench` vs onnxruntime (reference only), same machine,
same thread count, batch 1, interleaved rounds. Prints a Markdown table of medians and ratios.

Usage: python3 bench/compare_ort.py CLEAVE_BINARY [MODEL_DIR] [--threads 1,2] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

WARMUP_SECONDS = 0.5


def cleave_ms(binary, model, threads, runs):
    out = subprocess.run([binary, "model", "bench", model, "--threads", str(threads), "--runs", str(runs), "--warmup", "3",
                          "--warmup-seconds", str(WARMUP_SECONDS)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_ms"]


def ort_ms(model, threads, runs):
    """In a child process, so that onnxruntime's spinning pool threads are gone before cleave runs."""
    out = subprocess.run([sys.executable, __file__, "--ort-one", model, str(threads), str(runs)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def ort_ms_here(model, threads, runs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.random.rand(*[d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) for i in session.get_inputs()}
    # Both sides warm up for WARMUP_SECONDS: a fresh process's first runs of a sub-millisecond
    # model are slower (cold caches, the VM's second vCPU not yet running) and would decide
    # its median.
    start = time.perf_counter()
    warmed = 0
    while warmed < 3 or time.perf_counter() - start < WARMUP_SECONDS:
        session.run(None, feed)
        warmed += 1
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--ort-one":
        print(ort_ms_here(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("models", nargs="?", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    models = [os.path.join(args.models, f) for f in ("mobilenetv2_224.onnx", "mobilenetv2_96.onnx", "resnet18_224.onnx")]
    models.append(os.path.join(os.path.dirname(__file__), "..", "models", "fmnist", "c4", "full.onnx"))
    print("| model | threads | cleave median ms | onnxruntime median ms | ratio (cleave / ort) |")
    print("|---|---|---|---|---|")
    for model in models:
        for threads in [int(t) for t in args.threads.split(",")]:
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(cleave_ms(args.binary, model, threads, args.runs))
                theirs.append(ort_ms(model, threads, args.runs))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"| {'fmnist/c4/' if 'fmnist' in model else ''}{os.path.basename(model)} | {threads} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
