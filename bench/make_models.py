#!/usr/bin/env python3
"""Builds the reference CNNs (random weights, fixed seed) with the onnx package.

mobilenetv2_224.onnx  MobileNetV2, width 1.0, 224x224 (Conv+BN+ReLU6 blocks, residual adds)
mobilenetv2_96.onnx   MobileNetV2, width 0.35, 96x96
resnet18_224.onnx     ResNet-18, 224x224 (Conv+BN+ReLU, MaxPool, residual adds)

Usage: python3 bench/make_models.py [OUT_DIR]   (default bench/out)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def weight(self, shape, scale):
        n = self.name("w")
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), n))
        return n

    def conv_bn(self, x, cin, cout, k, stride=1, group=1, act="relu6"):
        w = self.weight([cout, cin // group, k, k], np.sqrt(2.0 / (cin // group * k * k)))
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, w], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[k // 2] * 4, group=group))
        params = [self.weight([cout], 0.1) for _ in range(2)]
        mean = self.weight([cout], 0.1)
        var = self.name("var")
        self.inits.append(numpy_helper.from_array(self.rng.uniform(0.5, 1.5, cout).astype(np.float32), var))
        z = self.name("bn")
        self.nodes.append(helper.make_node("BatchNormalization", [y, params[0] + "", params[1], mean, var], [z]))
        if act is None:
            return z
        out = self.name(act)
        if act == "relu6":
            lo, hi = self.name("lo"), self.name("hi")
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), lo), numpy_helper.from_array(np.array(6, np.float32), hi)]
            self.nodes.append(helper.make_node("Clip", [z, lo, hi], [out]))
        else:
            self.nodes.append(helper.make_node("Relu", [z], [out]))
        return out

    def add(self, a, b, act=None):
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        if act:
            z = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [z]))
            return z
        return y

    def head(self, x, cin, classes):
        p = self.name("pool")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [p]))
        f = self.name("flat")
        self.nodes.append(helper.make_node("Flatten", [p], [f]))
        w = self.weight([classes, cin], np.sqrt(1.0 / cin))
        b = self.weight([classes], 0.01)
        self.nodes.append(helper.make_node("Gemm", [f, w, b], ["logits"], transB=1))

    def model(self, name, size):
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="cleave-bench")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def divisible(v, d=8):
    return max(d, int(v + d / 2) // d * d)


def mobilenetv2(width, size):
    b = Builder(1)
    c = divisible(32 * width)
    x = b.conv_bn("input", 3, c, 3, stride=2)
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, ch, n, s in settings:
        out = divisible(ch * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            y = x
            if t != 1:
                y = b.conv_bn(y, c, hidden, 1)
            y = b.conv_bn(y, hidden, hidden, 3, stride=stride, group=hidden)
            y = b.conv_bn(y, hidden, out, 1, act=None)
            x = b.add(x, y) if stride == 1 and c == out else y
            c = out
    last = divisible(1280 * max(1.0, width))
    x = b.conv_bn(x, c, last, 1)
    b.head(x, last, 1000)
    return b.model(f"mobilenetv2_{width}_{size}", size)


def resnet18(size):
    b = Builder(2)
    x = b.conv_bn("input", 3, 64, 7, stride=2, act="relu")
    p = b.name("maxpool")
    b.nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c = p, 64
    for out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            s = stride if i == 0 else 1
            y = b.conv_bn(x, c, out, 3, stride=s, act="relu")
            y = b.conv_bn(y, out, out, 3, act=None)
            shortcut = b.conv_bn(x, c, out, 1, stride=s, act=None) if (s != 1 or c != out) else x
            x = b.add(y, shortcut, act=True)
            c = out
    b.head(x, 512, 1000)
    return b.model("resnet18_224", size)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "out")
    os.makedirs(out, exist_ok=True)
    for name, model in [("mobilenetv2_224", mobilenetv2(1.0, 224)), ("mobilenetv2_96", mobilenetv2(0.35, 96)),
                        ("resnet18_224", resnet18(224))]:
        path = os.path.join(out, name + ".onnx")
        onnx.save(model, path)
        print(path)
