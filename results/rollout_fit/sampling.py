"""Is the shipped simulator's ranking of its training groups limited by its sampling? Within-group Spearman of the
median (and mean) of S simulated final vals, at sampling temperatures T, on G of the training groups the rollout fit
drew (those of `--state`, drawn again with seed 1), and with the first 4, 8, 16 of the samples at T = 1 against the
command's 32 (`--sims`: the shipped model's own 32-sample simulation of the same runs, sims_round1.npz).

    python results/rollout_fit/sampling.py --data starter V2_NO21_DROP $R --state results/rollout_fit/sims_round0.npz \
        --sims results/rollout_fit/sims_round1.npz --groups 40 --samples 16 --temperatures 1 0.6 0.3
"""
import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
from simulated import by_name

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity, rollout
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build

p = argparse.ArgumentParser()
p.add_argument("--data", nargs="+", required=True)
p.add_argument("--state", required=True)
p.add_argument("--sims", required=True)
p.add_argument("--groups", type=int, default=40)
p.add_argument("--samples", type=int, default=16)
p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.6, 0.3])
a = p.parse_args()
ck = checkpoints.load(checkpoints.pretrained("worldmodel"), kind="worldmodel")
model, ser = build(WorldModelConfig.from_dict(ck.model_config), ck.spec)
env = SimEnv(model, ser)
full = load_dir(data_dirs(a.data), ck.spec)
t = by_name(full, np.load(a.state)["files"], "sampling")
grps = fidelity.groups(t)
pick = np.sort(np.random.default_rng(1).permutation(len(grps))[: a.groups])
t = t.subset(np.concatenate([grps[i] for i in pick]))
grps, real = fidelity.groups(t), fidelity.final_val(t)
z = np.load(a.sims)
at = {Path(f).name: i for i, f in enumerate(z["files"])}
full32 = z["med"][[at[Path(f).name] for f in t.files]]
print(f"{len(grps)} training groups, {len(t)} runs; the command's 32 samples at T = 1: {rollout.spearman(full32, real, grps):.3f}\n")
print("| temperature | median | mean | sample s.d. of the final val | final-val MAE (median) |")
print("|---|---|---|---|---|")
for T in a.temperatures:
    t0 = time.time()
    s = fidelity.sim_final(env, env.params(ck.params, t, max_prefix=1, temperature=T), t, a.samples, jax.random.key(0))
    med = np.nanmedian(s, 1)
    print(f"| {T:g} | {rollout.spearman(med, real, grps):.3f} | {rollout.spearman(np.nanmean(s, 1), real, grps):.3f} | "
          f"{np.nanmean(np.nanstd(s, 1)):.4f} | {np.nanmean(np.abs(med - real)):.4f} |", flush=True)
    print(f"T = {T:g}: {time.time() - t0:.0f} s", file=sys.stderr)
    if T == 1.0:
        for m in [m for m in (4, 8) if m < a.samples]:
            print(f"|   (T = 1, first {m} samples) | {rollout.spearman(np.nanmedian(s[:, :m], 1), real, grps):.3f} | "
                  f"{rollout.spearman(np.nanmean(s[:, :m], 1), real, grps):.3f} | | |")
