"""The simulators on the anneal-timing groups (collect/data/v2 job 17, family `timing`; data no world model here
was trained on): 9 runs per group share a seed and differ only in their configured LR (x1 / x3 / x10 of the
default) and where they anneal (25 / 50 / 75% of the run). From observation 1 under each run's real actions
(`fidelity.sim_final`: median of 8 samples, common keys, seed 0), per group:

* within-group Spearman of simulated vs real final normalised val (`fidelity.groups`, `fidelity.spearman`), beside
  the LR-regression baseline fit on the training data of `--train` (`fidelity.lr_features`);
* regret: the real final val of the run the simulator ranks best, minus the group's best real one;
* the cost of the configured LR: mean final val at x10 (and x3) minus x1, real and simulated, over the groups;
* the value of annealing late: mean final val with the anneal at 75% minus at 25%, by configured LR.

Run from the repository root:
    python results/timing_fidelity/score.py NAME=WORLD_MODEL ... > results/timing_fidelity/score.md
(default: shipped=pretrained, the shipped ensemble)
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.policy.train import load_world_model
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.env import SimEnv

DATA = "collect/data/v2"
TRAIN = ["starter", "collect/data/v2.parquet"]  # the regression baseline's fit: the shipped data
LEVELS, STARTS = (1.0, 3.0, 10.0), (0.25, 0.5, 0.75)

models = dict(a.split("=", 1) for a in sys.argv[1:]) or {"shipped": "pretrained"}
rows = []
for name, path in models.items():
    path = checkpoints.pretrained("worldmodel") if path == "pretrained" else path
    ck, cfg, model, ser = load_world_model(path)
    runs = load_dir([DATA], ck.spec)
    runs = runs.subset([i for i, m in enumerate(runs.meta) if m.get("family") == "timing" and m.get("job_seed") == 17])
    grps = [g for g in fidelity.groups(runs) if len(g) == 9]
    keep = np.concatenate(grps)
    runs, grps = runs.subset(keep), [np.arange(9 * i, 9 * i + 9) for i in range(len(grps))]
    env = SimEnv(model, ser)
    params = env.params(jax.tree.map(jnp.asarray, ck.params), runs, 1)
    sim = np.nanmedian(fidelity.sim_final(env, params, runs, 8, jax.random.key(0)), axis=1)
    real = fidelity.final_val(runs)
    level = np.array([m["base_lr_mult"] for m in runs.meta])
    start = np.array([m["controller"]["start"] for m in runs.meta])
    rows.append((name, runs, grps, sim, real, level, start))

_, runs, grps, _, real, level, start = rows[0]
train = load_dir(data_dirs(TRAIN), runs.spec)
coef, *_ = np.linalg.lstsq(fidelity.lr_features(train), fidelity.final_val(train), rcond=None)
reg = fidelity.lr_features(runs) @ coef


def per_group(pred, real):
    rho = [fidelity.spearman(pred[g], real[g]) for g in grps]
    regret = [real[g][np.argmin(pred[g])] - real[g].min() for g in grps]
    return rho, regret


def cell_diff(x, sel_a, sel_b):
    """Mean over groups of x[a] - x[b] (one run each per group), with its standard error."""
    d = np.array([x[g][sel_a[g]].mean() - x[g][sel_b[g]].mean() for g in grps])
    return d.mean(), d.std(ddof=1) / np.sqrt(len(d))


print(f"{len(grps)} anneal-timing groups of 9 runs (job 17), {len(runs)} runs; tasks: "
      + ", ".join(f"{t} {n}" for t, n in zip(*np.unique([runs.meta[g[0]]['task'] for g in grps], return_counts=True))))
print()
print("| simulator | within-group Spearman | regret of its pick (final normalised val) | final-val MAE |")
print("|---|---|---|---|")
for name, label, pred in [(r[0], r[0], r[3]) for r in rows] + [("regression", "LR regression (shipped data)", reg)]:
    rho, regret = per_group(pred, real)
    print(f"| {label} | {np.nanmean(rho):.3f} ± {np.nanstd(rho, ddof=1) / np.sqrt(np.isfinite(rho).sum()):.3f} | "
          f"{np.mean(regret):.4f} ± {np.std(regret, ddof=1) / np.sqrt(len(regret)):.4f} | {np.mean(np.abs(pred - real)):.4f} |")
print(f"| (a random pick) | - | {np.mean([real[g].mean() - real[g].min() for g in grps]):.4f} | - |")
print()
print("Mean differences over the groups (final normalised val; positive: the first ends higher, worse):")
print()
print("| contrast | real | " + " | ".join(r[0] for r in rows) + " |")
print("|---|---|" + "---|" * len(rows))
contrasts = [("configured x10 - x1 (all anneal starts)", level == 10, level == 1),
             ("configured x3 - x1 (all anneal starts)", level == 3, level == 1)]
contrasts += [(f"anneal at 75% - at 25%, configured x{L:g}", (level == L) & (start == 0.75), (level == L) & (start == 0.25))
              for L in LEVELS]
for label, a, b in contrasts:
    cells = [cell_diff(x, a, b) for x in [real] + [r[3] for r in rows]]
    print(f"| {label} | " + " | ".join(f"{m:+.4f} ± {s:.4f}" for m, s in cells) + " |")
