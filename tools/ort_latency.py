#!/usr/bin/env python3
"""Measures ONNX models' latency in onnxruntime (CPU execution provider), independently of
onnx-prune: the models run interleaved (one run of each in turn, so all see the same machine
load) for ROUNDS rounds of RUNS timed runs each after 3 warm-up runs; per model the median of each
round and the median of those medians, in milliseconds. Prints JSON:
{"threads": T, "batch": B, "models": [{"path": ..., "round_ms": [...], "ms": ...}, ...]}
Inputs: seeded standard normal noise at each input's declared shape (symbolic dims -> batch).
Usage: ort_latency.py A.onnx [B.onnx ...] [--threads 1] [--batch 1] [--rounds 3] [--runs 20]
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    args = sys.argv[1:]
    opts = {"--threads": 1, "--batch": 1, "--rounds": 3, "--runs": 20}
    paths = []
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = int(args[i + 1])
            i += 2
        else:
            paths.append(args[i])
            i += 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts["--threads"]
    so.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    sessions = []
    for p in paths:
        s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        feed = {}
        for inp in s.get_inputs():
            shape = [d if isinstance(d, int) else opts["--batch"] for d in inp.shape]
            if shape:
                shape[0] = opts["--batch"]
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        sessions.append((s, feed))
    for _ in range(3):
        for s, feed in sessions:
            s.run(None, feed)
    rounds = [[] for _ in sessions]
    for _ in range(opts["--rounds"]):
        times = [[] for _ in sessions]
        for _ in range(opts["--runs"]):
            for k, (s, feed) in enumerate(sessions):
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t) * 1e3)
        for k in range(len(sessions)):
            rounds[k].append(float(np.median(times[k])))
    out = {
        "threads": opts["--threads"],
        "batch": opts["--batch"],
        "onnxruntime": ort.__version__,
        "models": [
            {"path": p, "round_ms": r, "ms": float(np.median(r))} for p, r in zip(paths, rounds)
        ],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
