#!/usr/bin/env python3
"""compare_ort.py — ONNX Runtime's side of a comparison through its Python package, for machines
that have `onnxruntime` for Python (Debian has none; bench/compare.sh uses the npm package,
bench/compare_ort.mjs).  The same settings as compare_ort.mjs: CPU execution provider, the
given graph optimization level, intra-op threads T, one inter-op thread, sequential
execution; random float inputs uniform in [-1, 1), symbolic dimensions set to --batch.
Prints one JSON line: runtime, median_ms, min_ms, threads, batch, create_ms, ort.

usage: bench/compare_ort.py MODEL.onnx [--opt all|basic|extended|disabled] [--threads T]
                            [--iters N] [--warmup W] [--batch B]
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--opt", default="all", choices=["all", "basic", "extended", "disabled"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as err:
        print(f"compare_ort.py: {err}", file=sys.stderr)
        return 3
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[a.opt]
    t0 = time.perf_counter()
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    create_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(0)
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else a.batch for d in i.shape]
        if i.type != "tensor(float)":
            print(f"compare_ort.py: input {i.name}: unsupported type {i.type}", file=sys.stderr)
            return 1
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    times = []
    for k in range(a.warmup + a.iters):
        t = time.perf_counter()
        s.run(None, feeds)
        if k >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    n = len(times)
    median = times[(n - 1) // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    print(json.dumps({"runtime": f"ort-{a.opt}", "median_ms": median, "min_ms": times[0],
                      "threads": a.threads, "batch": a.batch, "create_ms": create_ms,
                      "ort": ort.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
