"""Replays the world-model yardstick's held-out groups with new seeds (`lrpilot.collect.replay`).

The groups are those `lrpilot worldmodel eval --heldout-only` ranks (the shipped world model's split of
starter + dataset v2 jobs 1-16 + the SimPLe rounds' runs; forked groups left out), the ones collected on
a CPU, cheapest first (by their recorded group wall time); every run trained again with seed + OFFSET and
its recorded actions, files in OUT. Resumable: finished replays are kept.

    python results/noise_ceiling/replay_heldout.py --data starter V2_BEFORE_TIMING $R --out results/noise_ceiling/replays \
        [--offset 1] [--shard 0 --shards 1] [--max-wall 900]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.collect.replay import replay_group
from lrpilot.trajectories import group_key, load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.train import heldout_runs


def heldout(ckpt: str, data: list[str]):
    """(checkpoint, its config, its held-out runs of `data`): the runs `worldmodel eval` judges it on."""
    ck = checkpoints.load(ckpt, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    full = load_dir(data_dirs(data), ck.spec)
    return ck, cfg, full.subset(heldout_runs(full, cfg))


def heldout_groups(ckpt: str, data: list[str]):
    """(key, files, recorded wall seconds, device) of each ranked held-out group."""
    _, _, t = heldout(ckpt, data)
    out = []
    for g in fidelity.groups(t):
        m = t.meta[g[0]]
        out.append((group_key(m, t.files[g[0]]), [t.files[i] for i in g], float(m.get("group_wall_time", np.inf)),
                    str(m.get("device", ""))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="checkpoints/pretrained/worldmodel")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--offset", type=int, default=1)
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--max-wall", type=float, default=np.inf, help="skip groups whose recorded wall time exceeds this (s)")
    args = ap.parse_args()
    groups = [g for g in heldout_groups(args.ckpt, args.data) if g[3].startswith("cpu") and g[2] <= args.max_wall]
    groups.sort(key=lambda g: g[2])
    mine = groups[args.shard :: args.shards]
    print(f"{len(groups)} CPU held-out groups, {len(mine)} in shard {args.shard}/{args.shards}, "
          f"recorded {sum(g[2] for g in mine) / 60:.0f} min", flush=True)
    for key, files, wall, _ in mine:
        t0 = time.time()
        replay_group(files, args.out, args.offset)
        print(f"{key}: {len(files)} runs, {time.time() - t0:.0f} s (recorded {wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
