"""The real one-step effect of an LR doubling on random-walk runs (second half, run fixed effects), by the
run's configured base LR relative to its model's default, family and val level; held-out vs non-held-out groups of
round 2's split. Run from the repository root: python results/action_fit/by_base_lr.py > results/action_fit/by_base_lr.txt"""
import numpy as np

from lrpilot import checkpoints
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import responses as R
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.train import split_runs

ck = checkpoints.load("results/simple_v2/round_2/worldmodel", kind="worldmodel")
cfg = WorldModelConfig.from_dict(ck.model_config)
data = ["collect/data/starter", "collect/data/v2"] + [f"results/simple_v2/round_{i}/data" for i in range(3)]
full = load_dir(data, ck.spec)
tr, ho = split_runs(full, cfg.heldout_frac, cfg.seed)
sp = ck.spec; vi = sp.index("val")
for name, idx in (("heldout", ho), ("train(all non-held)", tr)):
    t = full.subset(idx)
    rows, x, y = R.action_rows(t)
    run = np.array([r for r, _ in rows])
    mult = np.array([t.meta[r].get("base_lr_mult", 1.0) for r in run])
    fam = np.array([t.meta[r].get("family", "?") for r in run])
    val = np.array([t.obs[r, k, vi] for r, k in rows])
    print("==", name, len(rows))
    for lo, hi in ((0, 1/3), (1/3, 3), (3, 10), (10, 100)):
        s = (mult >= lo) & (mult < hi)
        if s.sum() > 20:
            b, se = R.fe_slope(run[s], x[s], y[s]); print(f"  mult [{lo:.2f},{hi}): n={s.sum()} slope {b:+.5f}±{se:.5f}")
    for f in np.unique(fam):
        s = fam == f
        if s.sum() > 20:
            b, se = R.fe_slope(run[s], x[s], y[s]); print(f"  family {f}: n={s.sum()} slope {b:+.5f}±{se:.5f}")
    for lo, hi in ((0, .3), (.3, .5), (.5, 2)):
        s = (val >= lo) & (val < hi)
        if s.sum() > 20:
            b, se = R.fe_slope(run[s], x[s], y[s]); print(f"  val [{lo},{hi}): n={s.sum()} slope {b:+.5f}±{se:.5f}")
