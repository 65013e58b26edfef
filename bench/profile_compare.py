#!/usr/bin/env python3
"""Where the time goes, Cleave beside onnxruntime (reference only): per-operator profiles of
one model, same thread count, grouped by kind of convolution (1×1, depthwise, k×k by stride)
and by other operator types.

Cleave's side comes from `cleave model bench MODEL --profile --nodes 0`; onnxruntime's from its
own profiler (`SessionOptions.enable_profiling`), summing the kernel time of each node.
onnxruntime runs its rewritten graph (NCHWc convolutions with fused activations and adds,
layout reorders), so nodes are matched by kind, not one by one; a convolution's kind comes
from its weight shape, which both sides keep. Profiling adds overhead on both sides: compare
shares and kinds, and take end-to-end latency from bench/compare_ort.py.

Usage: python3 bench/profile_compare.py CLEAVE_BINARY MODEL [--threads 1] [--runs 30]
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx


def conv_kind(weight_shape, input_channels, stride):
    """'1×1', 'depthwise 3×3 /2', '3×3 /1', … from a Conv's weight shape [M, C/g, kh, kw]."""
    kernel = "×".join(str(d) for d in weight_shape[2:])
    if weight_shape[1] == 1 and input_channels > 1:
        return f"Conv depthwise {kernel} /{stride}"
    return f"Conv {kernel} /{stride}"


def cleave_profile(binary, model, threads, runs):
    graph = onnx.load(model, load_external_data=False).graph
    inferred = onnx.shape_inference.infer_shapes(onnx.load(model, load_external_data=False)).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
    initializers = {i.name: list(i.dims) for i in graph.initializer}
    kinds = {}
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if node.op_type == "Conv":
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            stride = (attributes.get("strides") or [1])[0]
            channels = (shapes.get(node.input[0]) or [0, 0])[1]
            kinds[name] = conv_kind(initializers[node.input[1]], channels, stride)
        else:
            kinds[name] = node.op_type
    out = subprocess.run([binary, "model", "bench", model, "--threads", str(threads), "--runs", str(runs), "--profile", "--nodes", "0"],
                         check=True, capture_output=True, text=True).stdout
    totals = collections.defaultdict(float)
    for line in out.splitlines()[1:]:
        match = re.match(r"\s+(\S+) \((\w+)\)\s+([\d.]+) ms/run", line)
        if match:
            totals[kinds.get(match.group(1), match.group(2))] += float(match.group(3))
    return json.loads(out.splitlines()[0])["median_ms"], totals


def ort_profile(model, threads, runs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.random.rand(*[d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}
    warmup = 3
    for _ in range(warmup + runs):
        session.run(None, feed)
    with open(session.end_profiling()) as file:
        events = json.load(file)
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[-(len(kernels) // (warmup + runs)) * runs:]
    totals = collections.defaultdict(float)
    for event in kernels:
        args = event["args"]
        op = args.get("op_name", "?")
        if op in ("Conv", "FusedConv"):
            shapes = [list(s.values())[0] for s in args["input_type_shape"]]
            # NCHWc convolutions keep [M, C/g, kh, kw] weights; the stride is not in the event,
            # so it is read from the output size.
            x, w = shapes[0], shapes[1]
            y = list(args["output_type_shape"][0].values())[0]
            stride = max(1, round(x[-1] / y[-1])) if y[-1] else 1
            channels = x[1] if len(x) == 4 else x[1] * (x[4] if len(x) > 4 else 1)
            op = conv_kind(w, channels, stride)
        elif op == "FusedGemm":  # Gemm with its activation fused; ours counts the Relu apart (≈ 0)
            op = "Gemm"
        totals[op] += event["dur"] / 1e3 / runs
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    median, ours = cleave_profile(args.binary, args.model, args.threads, args.runs)
    theirs = ort_profile(args.model, args.threads, args.runs)
    print(f"{os.path.basename(args.model)}, {args.threads} thread(s), {args.runs} profiled runs "
          f"(cleave median without profiling {median:.3f} ms)")
    print("| kind | cleave ms/run | onnxruntime ms/run | ratio |")
    print("|---|---:|---:|---:|")
    for kind in sorted(set(ours) | set(theirs), key=lambda k: -max(ours.get(k, 0), theirs.get(k, 0))):
        a, b = ours.get(kind, 0.0), theirs.get(kind, 0.0)
        print(f"| {kind} | {a:.3f} | {b:.3f} | {a / b:.2f} |" if b > 0 else f"| {kind} | {a:.3f} | — | — |")
    a, b = sum(ours.values()), sum(theirs.values())
    print(f"| **all operators** | **{a:.3f}** | **{b:.3f}** | **{a / b:.2f}** |")


if __name__ == "__main__":
    sys.exit(main())
