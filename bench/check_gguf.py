#!/usr/bin/env python3
"""Checks Cleave's GGUF reader and dequantizers against gguf-py (llama.cpp's Python package).

usage: bench/check_gguf.py CLEAVE [MODEL.gguf]

1. Writes a GGUF with gguf-py holding random blocks of every type Cleave computes with
   (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; random bytes with finite float16
   scales), dequantizes each tensor with `cleave llm inspect --dequantize` and compares
   with gguf-py's dequantize: they must agree exactly (both compute in float32).
2. With MODEL.gguf (e.g. SmolLM2), does the same for a few of its tensors.
Needs: pip install gguf numpy. A reference for checking only, never a dependency.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K]
# Byte offsets of float16 scales inside each block (kept finite and modest).
HALF_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208]}


def random_tensor(rng, qtype, rows, columns):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == Q.F32:
        return rng.standard_normal((rows, columns)).astype(np.float32), None
    if qtype == Q.F16:
        return rng.standard_normal((rows, columns)).astype(np.float16), None
    if qtype == Q.BF16:
        bits = (rng.standard_normal((rows, columns)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.view(np.uint8).reshape(rows, columns * 2), qtype
    raw = rng.integers(0, 256, size=(rows, columns // block, size), dtype=np.uint8)
    for offset in HALF_FIELDS[qtype]:
        scale = rng.uniform(-0.05, 0.05, size=(rows, columns // block)).astype(np.float16)
        raw[:, :, offset:offset + 2] = scale.view(np.uint8).reshape(rows, columns // block, 2)
    return raw.reshape(rows, -1), qtype


def compare(cleave, path, name, expected, label):
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "t.npy")
        subprocess.run([cleave, "llm", "inspect", path, "--dequantize", name, "--out", out], check=True, capture_output=True)
        ours = np.load(out)
    expected = expected.reshape(ours.shape).astype(np.float32)
    worst = float(np.max(np.abs(ours - expected))) if ours.size else 0.0
    same = np.array_equal(ours, expected)
    print(f"{label} {name}: {ours.size} values, max |cleave - gguf-py| {worst:.3g}{'' if same else '  MISMATCH'}")
    return same


def main():
    cleave = sys.argv[1]
    rng = np.random.default_rng(1)
    ok = True
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "random.gguf")
        writer = gguf.GGUFWriter(path, "llama")
        expected = {}
        for qtype in TYPES:
            data, raw_dtype = random_tensor(rng, qtype, 3, 512)
            name = f"random.{qtype.name}"
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
            expected[name] = gguf.quants.dequantize(data, qtype) if raw_dtype is not None else data
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        for name, values in expected.items():
            ok &= compare(cleave, path, name, values, "random")
    if len(sys.argv) > 2:
        reader = gguf.GGUFReader(sys.argv[2])
        wanted = ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.ffn_down.weight", "blk.29.attn_q.weight"]
        for tensor in reader.tensors:
            if tensor.name in wanted:
                ok &= compare(cleave, sys.argv[2], tensor.name, gguf.quants.dequantize(tensor.data, tensor.tensor_type), "model")
    print("gguf check: all agree" if ok else "gguf check: MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
