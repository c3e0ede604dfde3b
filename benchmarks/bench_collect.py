"""Collection throughput: runs per hour for K runs batched in one jitted step vs the same K
runs trained one after the other, at a few model sizes of the collection families.

    python benchmarks/bench_collect.py [--k 4] [--iters 300] [--sizes 1x32,2x64,4x128]

Prints one line per size; times include compilation (as a collection job pays it per group).
"""

from __future__ import annotations

import argparse
import time

from lrpilot import data
from lrpilot.collect.explore import RandomWalk
from lrpilot.trainers.config import TrainConfig
from lrpilot.trainers.loop import RunSpec, device_info, train


def runs(k: int, seed0: int = 0):
    return [RunSpec(seed0 + i, RandomWalk(seed0 + i, 0.5), "walk") for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--sizes", default="1x32,2x64,4x128")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--task", default="python_docs")
    a = ap.parse_args()
    ds = data.load(a.task)
    backend, device = device_info()
    print(f"# collection throughput on {backend} ({device}); K={a.k}, {a.iters} iters, block {a.block}, batch {a.batch}, "
          f"20 decisions, 20 val batches per decision")
    for size in a.sizes.split(","):
        layers, width = map(int, size.split("x"))
        cfg = TrainConfig(n_layer=layers, n_embd=width, n_head=max(2, width // 32), block_size=a.block,
                          batch_size=a.batch, max_iters=a.iters, warmup_iters=0, eval_interval=a.iters, eval_iters=20,
                          eval_train=False, sample_tokens=0)
        t0 = time.perf_counter()
        train(ds, cfg, runs(a.k), progress=False)
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in runs(a.k):
            train(ds, cfg, [r], progress=False)
        seq = time.perf_counter() - t0
        print(f"{size:>7s}: batched {a.k} runs {batched:7.1f} s ({3600 * a.k / batched:7.0f} runs/h) | "
              f"sequential {seq:7.1f} s ({3600 * a.k / seq:7.0f} runs/h) | speed-up x{seq / batched:.2f}")


if __name__ == "__main__":
    main()
