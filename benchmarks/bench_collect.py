"""Collection throughput.

    python benchmarks/bench_collect.py [--k 4] [--iters 300] [--sizes 1x32,2x64,4x128]
    python benchmarks/bench_collect.py --dataset collect/data/v2   # the mix actually collected

The first form: runs per hour for K runs batched in one jitted step vs the same K runs trained
one after the other, at a few model sizes; times include compilation (as a collection job pays
it per group). The second reads a dataset's own timings (each group's wall time, recorded in its
runs' metadata) and prints runs per hour for the mix that was really collected, overall, by
family, by model size and for the groups at the small protocol's size, with the devices that
trained them (a busy machine's figures are lower bounds of a quiet one's).
"""

from __future__ import annotations

import argparse
import time

from _common import print_header

from lrpilot import data
from lrpilot.collect.explore import RandomWalk
from lrpilot.trainers.config import TrainConfig
from lrpilot.trainers.loop import RunSpec, device_info, train


def runs(k: int, seed0: int = 0):
    return [RunSpec(seed0 + i, RandomWalk(seed0 + i, 0.5), "walk") for i in range(k)]


def from_dataset(path: str) -> None:
    from lrpilot.collect.summary import is_small_protocol
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.trajectories import load_dir

    traj = load_dir(path, DEFAULT_SPEC)
    groups: dict = {}
    for m in traj.meta:
        key = (m.get("family"), m.get("job_seed"), m.get("group"))
        g = groups.setdefault(key, {"wall": m.get("group_wall_time", 0.0), "runs": 0, "meta": m})
        g["runs"] += 1
    print(f"# {len(traj)} runs in {len(groups)} groups of {path}; devices: "
          f"{', '.join(sorted({m.get('device', '?') for m in traj.meta}))}; hosts: {len({m.get('host') for m in traj.meta})}")

    def line(name, sel):
        wall, n = sum(g["wall"] for g in sel), sum(g["runs"] for g in sel)
        if n:
            print(f"{name:>34s}: {n:5d} runs, {wall / 3600:6.2f} h of group wall time, {3600 * n / wall:6.0f} runs/h, "
                  f"{wall / n:6.1f} s/run")

    gs = list(groups.values())
    line("all", gs)
    for fam in sorted({g["meta"].get("family") for g in gs}):
        line(f"family {fam}", [g for g in gs if g["meta"].get("family") == fam])
    for size in sorted({(g["meta"]["config"]["n_layer"], g["meta"]["config"]["n_embd"]) for g in gs}):
        line(f"size {size[0]}x{size[1]}", [g for g in gs if (g["meta"]["config"]["n_layer"], g["meta"]["config"]["n_embd"]) == size])
    line("small protocol (4x128, 2000 iters)", [g for g in gs if is_small_protocol(g["meta"]["config"])])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", help="report the throughput recorded in this dataset instead of measuring")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--sizes", default="1x32,2x64,4x128")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--task", default="python_docs")
    a = ap.parse_args()
    print_header("bench_collect")
    if a.dataset:
        from_dataset(a.dataset)
        return
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
