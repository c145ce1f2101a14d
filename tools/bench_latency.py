#!/usr/bin/env python3
"""Benchmark (not a test): onnxruntime CPU latency, 1 thread, median of N runs, of each model
vs its `--target-flops 0.5 --method l1` pruned version (with --round-to 1 and 8), plus the wall
time of the prune command itself. Usage: bench_latency.py [RUNS]  (needs ../shared, release build)
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "onnx-prune")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def latency(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    for _ in range(5):
        s.run(None, {i.name: x})
    t = []
    for _ in range(RUNS):
        a = time.perf_counter()
        s.run(None, {i.name: x})
        t.append((time.perf_counter() - a) * 1e3)
    return float(np.median(t))


def main():
    tmp = tempfile.mkdtemp()
    print(f"onnxruntime {ort.__version__} CPU, 1 thread, median of {RUNS} runs (ms)")
    print(f"{'model':<22}{'round-to':>9}{'orig ms':>10}{'pruned ms':>11}{'speed-up':>10}{'prune cmd s':>13}")
    for m in ["zoo/resnet18_bn.onnx", "zoo/mobilenet_v2.onnx"]:
        src = os.path.join(ROOT, "..", "shared", "models", m)
        if not os.path.exists(src):
            print(f"SKIP {m}: ../shared absent")
            continue
        base = latency(src)
        for r in (1, 8, 16):
            out = os.path.join(tmp, f"p{r}.onnx")
            a = time.perf_counter()
            subprocess.run([BIN, src, "-o", out, "--target-flops", "0.5", "--method", "l1", "--round-to", str(r)], check=True, capture_output=True)
            wall = time.perf_counter() - a
            p = latency(out)
            print(f"{os.path.basename(m):<22}{r:>9}{base:>10.2f}{p:>11.2f}{base / p:>9.2f}x{wall:>13.2f}")


if __name__ == "__main__":
    main()
