#!/usr/bin/env python3
"""Runs two ONNX models on the same seeded random inputs in onnxruntime (CPU) and prints JSON:
{"max_rel_diff": max over outputs of max|a-b| / max(max|a|, 1),
 "max_scaled_diff": max over outputs of max|a-b| / max(max(a) - min(a), 1e-6 * max|a|),
 "checker": "ok"|error}
max_rel_diff is relative to the output range floored at 1 (near-zero outputs compare in absolute
terms); max_scaled_diff is relative to the reference output's own spread (floored at 1e-6 of
its magnitude, as onnx_prune::eval::SPREAD_FLOOR; an all-zero reference must match exactly),
which is what the tests assert.
--input text: instead of standard normal noise, a normalised picture of dark strokes on a light
background (what a text detector responds to; on noise its probability map saturates near 0).
The second model is also validated with onnx.checker.check_model(full_check=True).
Usage: ort_compare.py A.onnx B.onnx [NAME=1x3x224x224 ...] [--seed S]
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def text_like(shape, rng):
    """Like tests/common::text_like: strokes of value 0.1 on 0.9 (jittered), ImageNet-normalised."""
    n, c, h, w = shape
    img = np.full(shape, 0.9)
    for r in range(h // 8, h - 6, 16):
        for col in range(6, w - 8, 10):
            img[:, :, r : r + 6, col : col + 3] = 0.1
            img[:, :, r : r + 2, col : col + 7] = 0.1
    img += 0.02 * rng.standard_normal(shape)
    mean = np.array([0.485, 0.456, 0.406][:c] + [0.45] * max(0, c - 3))[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225][:c] + [0.225] * max(0, c - 3))[None, :, None, None]
    return ((img - mean) / std).astype(np.float32)


def main():
    args = sys.argv[1:]
    seed = 0
    text = False
    if "--input" in args:
        i = args.index("--input")
        text = args[i + 1] == "text"
        del args[i : i + 2]
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
        if text and t == np.float32 and len(shape) == 4:
            feeds[i.name] = text_like(shape, rng)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(t) if t != np.int64 else rng.integers(0, 2, shape)
    names = [o.name for o in sa.get_outputs()]
    if sorted(names) != sorted(o.name for o in sb.get_outputs()):
        raise SystemExit(f"output names differ: {names} vs {[o.name for o in sb.get_outputs()]}")
    ra = sa.run(names, feeds)
    rb = sb.run(names, feeds)
    worst, scaled = 0.0, 0.0
    for x, y in zip(ra, rb):
        if x.shape != y.shape:
            raise SystemExit(f"output shapes differ: {x.shape} vs {y.shape}")
        scale = max(float(np.max(np.abs(x))) if x.size else 0.0, 1.0)
        spread = float(np.max(x) - np.min(x)) if x.size else 0.0
        mag = float(np.max(np.abs(x))) if x.size else 0.0
        d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        worst = max(worst, d / scale)
        floor = max(spread, 1e-6 * mag)
        scaled = max(scaled, 0.0 if d == 0 else (d / floor if floor > 0 else float("inf")))
    print(json.dumps({"max_rel_diff": worst, "max_scaled_diff": scaled, "checker": checker}))


if __name__ == "__main__":
    main()
