#!/usr/bin/env python3
"""Runs two ONNX models on the same seeded random inputs in onnxruntime (CPU) and prints JSON:
{"max_rel_diff": max over outputs of max|a-b| / max(max|a|, 1), "checker": "ok"|error}
(relative to the output range, floored at 1 so near-zero outputs compare in absolute terms).
The second model is also validated with onnx.checker.check_model(full_check=True).
Usage: ort_compare.py A.onnx B.onnx [NAME=1x3x224x224 ...] [--seed S]
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    args = sys.argv[1:]
    seed = 0
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i : i + 2]
    a_path, b_path, *specs = args
    overrides = {}
    for s in specs:
        n, d = s.rsplit("=", 1)
        overrides[n] = [int(x) for x in d.split("x")]
    checker = "ok"
    try:
        onnx.checker.check_model(b_path, full_check=True)
    except Exception as e:  # noqa: BLE001 - report any checker failure
        checker = f"{type(e).__name__}: {e}".splitlines()[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    # Compare the graphs as written: no ORT-side fusions (they would hide a wrong BN fold).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sa = ort.InferenceSession(a_path, so, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b_path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
    feeds = {}
    for i in sa.get_inputs():
        shape = overrides.get(i.name) or [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        t = types.get(i.type)
        if t is None:
            raise SystemExit(f"unsupported input type {i.type}")
        feeds[i.name] = rng.standard_normal(shape).astype(t) if t != np.int64 else rng.integers(0, 2, shape)
    names = [o.name for o in sa.get_outputs()]
    if sorted(names) != sorted(o.name for o in sb.get_outputs()):
        raise SystemExit(f"output names differ: {names} vs {[o.name for o in sb.get_outputs()]}")
    ra = sa.run(names, feeds)
    rb = sb.run(names, feeds)
    worst = 0.0
    for x, y in zip(ra, rb):
        if x.shape != y.shape:
            raise SystemExit(f"output shapes differ: {x.shape} vs {y.shape}")
        scale = max(float(np.max(np.abs(x))) if x.size else 0.0, 1.0)
        d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        worst = max(worst, d / scale)
    print(json.dumps({"max_rel_diff": worst, "checker": checker}))


if __name__ == "__main__":
    main()
