#!/usr/bin/env python3
"""onnxruntime's per-operator profile of a model (reference only), in the same shape as
`cleave model bench MODEL --profile`: time per operator type and the slowest nodes, with
their share of the summed kernel time. onnxruntime runs its own optimized graph (NCHWc
convolutions, fused activations, layout reorders), so its operator names differ from ours.

Usage: python3 bench/profile_ort.py MODEL [--threads 1] [--runs 20] [--nodes 10]
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=10)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.random.rand(*[d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in session.get_inputs()}
    for _ in range(3):
        session.run(None, feed)
    for _ in range(args.runs):
        session.run(None, feed)
    with open(session.end_profiling()) as file:
        events = json.load(file)

    # Kernel events of the timed runs only: the last `runs` runs' worth of "Node" events.
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (args.runs + 3)
    kernels = kernels[-per_run * args.runs:]
    by_type = collections.defaultdict(lambda: [0.0, set()])
    by_node = collections.defaultdict(lambda: [0.0, ""])
    for event in kernels:
        node = event["name"][: -len("_kernel_time")]
        op = event["args"].get("op_name", "?")
        by_type[op][0] += event["dur"] / 1e3
        by_type[op][1].add(node)
        by_node[node][0] += event["dur"] / 1e3
        by_node[node][1] = op
    total = sum(v[0] for v in by_type.values()) or 1e-9
    print(f"onnxruntime {ort.__version__}: {args.model}, {args.threads} thread(s), {args.runs} runs, "
          f"summed kernel time {total / args.runs:.3f} ms/run")
    print("operator            nodes  ms/run    share")
    for op, (ms, nodes) in sorted(by_type.items(), key=lambda item: -item[1][0]):
        print(f"{op:<18}  {len(nodes):5d}  {ms / args.runs:7.3f}  {ms / total * 100:6.1f}%")
    print("slowest nodes")
    for node, (ms, op) in sorted(by_node.items(), key=lambda item: -item[1][0])[: args.nodes]:
        print(f"  {node} ({op})  {ms / args.runs:.3f} ms/run  {ms / total * 100:.1f}%")


if __name__ == "__main__":
    main()
