#!/usr/bin/env python3
"""Prints the docs/results.md table from the manifests of trained split models.

Usage: python3 bench/results_table.py TEACHER_JSON MODEL_DIR...
Every number comes from the manifests (measured by `cleave train fmnist` through
our runtime and the real frame codec on the 10,000 test images).
"""
import json
import os
import sys

RAW_IMAGE_BYTES = 784


def main():
    teacher = json.load(open(sys.argv[1]))
    teacher_accuracy = float(teacher["accuracy"])
    print(f"Teacher: {teacher_accuracy * 100:.2f}% test accuracy (`{teacher['command']}`, "
          f"{teacher['training_minutes']} min).\n")
    print("| C | bottleneck | codec | accuracy | Δ vs teacher (pt) | bytes/frame | compression vs 784-byte image | head share of MACs |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in sys.argv[2:]:
        manifest = json.load(open(os.path.join(folder, "manifest.json")))
        c, h, w = manifest["cut_shape"]
        for codec in ("float32", "uint8", "int4"):
            accuracy = manifest["accuracy"][codec]
            size = manifest["frame_bytes"][codec]
            print(f"| {c} | {c}×{h}×{w} | {codec} | {accuracy * 100:.2f}% | {(accuracy - teacher_accuracy) * 100:+.2f} | "
                  f"{size:.1f} | {(1 - size / RAW_IMAGE_BYTES) * 100:.1f}% | "
                  f"{manifest['head_multiply_add_share'] * 100:.1f}% |")


if __name__ == "__main__":
    main()
