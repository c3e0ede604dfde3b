"""The simulators on the anneal-timing groups (collect/data/v2, families `timing`, `timing_small`, `timing_high`): 9
runs per group share a seed and differ only in their configured LR (x1 / x3 / x10 of the default; x1 / x30 / x100 in
`timing_high`) and where they anneal (25 / 50 / 75% of the run); in a drop group (`timing_drop`) they share the
configured LR too and differ in where they start cutting it (5 / 30 / 55%) and how deep (0.1x / 0.01x / 0.001x). From observation 1 under each run's real actions (`fidelity.sim_final`: median of 8
samples, common keys, seed 0), per group:

* within-group Spearman of simulated vs real final normalised val (`fidelity.groups`, `fidelity.spearman`), beside
  the LR-regression baseline fit on the training data of `--train` (`fidelity.lr_features`);
* regret: the real final val of the run the simulator ranks best, minus the group's best real one;
* the cost of the configured LR: mean final val at each level minus x1, real and simulated, over the groups that
  have the level;
* the value of annealing late: mean final val with the anneal at 75% minus at 25%, by configured LR;
* drop groups (when every group scored is one): the cost of a deeper cut (floor 0.001x and 0.01x minus 0.1x) by
  where it starts, and of an earlier one (from 5% minus from 55%) by floor.

Run from the repository root:
    python results/timing_fidelity/score.py [--jobs J,J...] [--heldout-of NAME] NAME=WORLD_MODEL ... > OUT.md
(default: shipped=pretrained, the shipped ensemble). `--jobs`: only these collection jobs (default: every timing
job present); `--heldout-of NAME`: only the groups on the held-out side of NAME's split (its heldout_frac and
seed), which NAME never trained on; every model is then scored on the same groups.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.collect.edges import DROP_FLOORS, DROP_STARTS, TIMING_GRID
from lrpilot.policy.train import load_world_model
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.train import split_runs

DATA = "collect/data/v2"
TRAIN = ["starter", "collect/data/v2.parquet"]  # the regression baseline's fit: the shipped data
FAMILIES = ("timing", "timing_small", "timing_high", "timing_drop")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("models", nargs="*", metavar="NAME=WORLD_MODEL")
parser.add_argument("--jobs", type=lambda s: [int(j) for j in s.split(",")], metavar="J[,J...]",
                    help="collection jobs (job seeds) to score, comma-separated; default: all")
parser.add_argument("--heldout-of", metavar="NAME", help="only the groups held out of NAME's training")
args = parser.parse_args()
models = dict(a.split("=", 1) for a in args.models) or {"shipped": "pretrained"}
if args.heldout_of is not None and args.heldout_of not in models:
    parser.error(f"--heldout-of {args.heldout_of!r}: not one of the models {sorted(models)}")
loaded = {name: load_world_model(checkpoints.pretrained("worldmodel") if path == "pretrained" else path)
          for name, path in models.items()}
if args.heldout_of is not None:
    cfg = loaded[args.heldout_of][1]
    held_frac, held_seed = cfg.heldout_frac, cfg.seed

cache: dict = {}  # the groups' runs, read once per observation spec


def timing_groups(spec):
    """The 9-run timing groups (asked jobs; held-out side if asked) re-derived under `spec`: (runs, [9 indices])."""
    if spec.to_json() not in cache:
        runs = load_dir([DATA], spec)
        held = set(split_runs(runs, held_frac, held_seed)[1]) if args.heldout_of is not None else None  # as trained
        runs = runs.subset([i for i, m in enumerate(runs.meta) if m.get("family") in FAMILIES
                            and (held is None or i in held)
                            and (args.jobs is None or m.get("job_seed") in args.jobs)])
        grps = [g for g in fidelity.groups(runs) if len(g) == TIMING_GRID]
        if not grps:
            raise SystemExit(f"{DATA}: no complete timing group (jobs {args.jobs or 'all'}"
                             f"{', held out of ' + args.heldout_of if args.heldout_of else ''})")
        runs = runs.subset(np.concatenate(grps))
        cache[spec.to_json()] = runs, [np.arange(TIMING_GRID * i, TIMING_GRID * (i + 1)) for i in range(len(grps))]
    return cache[spec.to_json()]


rows = []
for name, (ck, cfg, model, ser) in loaded.items():
    runs, grps = timing_groups(ck.spec)
    env = SimEnv(model, ser)
    params = env.params(jax.tree.map(jnp.asarray, ck.params), runs, 1)
    sim = np.nanmedian(fidelity.sim_final(env, params, runs, 8, jax.random.key(0)), axis=1)
    real = fidelity.final_val(runs)
    level = np.array([m["base_lr_mult"] for m in runs.meta])
    start = np.array([m["controller"]["start"] for m in runs.meta])
    rows.append((name, runs, grps, sim, real, level, start))

_, runs, grps, _, real, level, start = rows[0]
floor = np.array([m["controller"]["depth"] for m in runs.meta])
drops = all(m.get("family") == "timing_drop" for m in runs.meta)
train = load_dir(data_dirs(TRAIN), runs.spec)
coef, *_ = np.linalg.lstsq(fidelity.lr_features(train), fidelity.final_val(train), rcond=None)
reg = fidelity.lr_features(runs) @ coef


def per_group(pred, real):
    rho = [fidelity.spearman(pred[g], real[g]) for g in grps]
    regret = [real[g][np.argmin(pred[g])] - real[g].min() for g in grps]
    return rho, regret


def cell_diff(x, sel_a, sel_b):
    """Mean over the groups that have both cells of x[a] - x[b], with its standard error and the group count."""
    d = np.array([x[g][sel_a[g]].mean() - x[g][sel_b[g]].mean() for g in grps if sel_a[g].any() and sel_b[g].any()])
    return d.mean(), d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan, len(d)


jobs = sorted({runs.meta[g[0]]["job_seed"] for g in grps})
print(f"{len(grps)} {'drop' if drops else 'anneal-timing'} groups of {TIMING_GRID} runs (jobs {', '.join(map(str, jobs))}"
      f"{'; held out of ' + args.heldout_of if args.heldout_of else ''}), {len(runs)} runs; tasks: "
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
if drops:  # one configured LR per group: the cut's depth and start are the contrasts
    (shallow, *deeper), (early, *_, late) = DROP_FLOORS, DROP_STARTS
    contrasts = [(f"cut from {s:.0%} to {f:g}x - to {shallow:g}x", (start == s) & (floor == f), (start == s) & (floor == shallow))
                 for f in deeper for s in DROP_STARTS]
    contrasts += [(f"cut to {f:g}x from {early:.0%} - from {late:.0%}", (start == early) & (floor == f),
                   (start == late) & (floor == f)) for f in DROP_FLOORS]
else:
    levels = sorted(set(level), reverse=True)  # every family's levels present: 100, 30, 10, 3, 1
    contrasts = [(f"configured x{L:g} - x1 (all anneal starts)", level == L, level == 1) for L in levels if L != 1]
    contrasts += [(f"anneal at 75% - at 25%, configured x{L:g}", (level == L) & (start == 0.75), (level == L) & (start == 0.25))
                  for L in sorted(levels)]
for label, a, b in contrasts:
    cells = [cell_diff(x, a, b) for x in [real] + [r[3] for r in rows]]
    print(f"| {label} ({cells[0][2]} groups) | " + " | ".join(f"{m:+.4f} ± {s:.4f}" for m, s, _ in cells) + " |")
