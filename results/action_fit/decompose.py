"""Decompose the random-walk action effect into immediate (a_k) and LR-level (log_lr_k) parts, real vs sim.
Run from the repository root: python results/action_fit/decompose.py results/simple_v2/round_2/worldmodel"""
import sys

import jax
import numpy as np

from lrpilot import checkpoints
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import responses as R
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import heldout_runs, training_runs

ck = checkpoints.load(sys.argv[1], kind="worldmodel")
cfg = WorldModelConfig.from_dict(ck.model_config)
model, ser = build(cfg, ck.spec)
data = ["collect/data/starter", "collect/data/v2"] + [f"results/simple_v2/round_{i}/data" for i in range(3)]
full = load_dir(data, ck.spec)
ho = heldout_runs(full, cfg)
tr = training_runs(full, cfg)
env = SimEnv(model, ser)
sp = ck.spec
li, vi = sp.index("log_lr"), sp.index("val")
def fe(run, X, y):
    Xd, yd = X.astype(float).copy(), y.astype(float).copy()
    for r in np.unique(run):
        s = run == r; Xd[s] -= Xd[s].mean(0); yd[s] -= yd[s].mean()
    b, *_ = np.linalg.lstsq(Xd, yd, rcond=None)
    res = yd - Xd @ b; dof = max(len(y) - X.shape[1] - len(np.unique(run)), 1)
    cov = np.linalg.inv(Xd.T @ Xd) * (res @ res / dof)
    return b, np.sqrt(np.diag(cov))
def ols(X, y):
    X1 = np.c_[np.ones(len(X)), X]; b, *_ = np.linalg.lstsq(X1, y, rcond=None)
    res = y - X1 @ b; cov = np.linalg.inv(X1.T @ X1) * (res @ res / max(len(y) - X1.shape[1], 1))
    return b[1:], np.sqrt(np.diag(cov))[1:]
for name, idx in (("heldout", ho), ("train", tr)):
    traj = full.subset(idx)
    rows, x, y = R.action_rows(traj)
    run = np.array([r for r, _ in rows]); k = np.array([kk for _, kk in rows])
    lvl = traj.obs[run, k, li] * np.log2(10)  # log2 LR level before the action, relative to base
    params = env.params(ck.params, traj, max_prefix=1)
    ys = R.sim_next(env, params, traj, rows, 8, jax.random.key(0)) - traj.obs[run, k, vi]
    print(f"== {name}: {len(rows)} rows, {len(np.unique(run))} runs")
    for lab, yy in (("real", y), ("sim", ys)):
        b1, s1 = fe(run, x[:, None], yy)
        b2, s2 = fe(run, np.c_[x, lvl], yy)
        b3, s3 = ols(np.c_[x], yy)
        b4, s4 = ols(np.c_[x, lvl], yy)
        print(f"{lab:5s} FE a: {b1[0]:+.5f}±{s1[0]:.5f} | FE a,lvl: a {b2[0]:+.5f}±{s2[0]:.5f} lvl {b2[1]:+.5f}±{s2[1]:.5f}"
              f" | OLS a: {b3[0]:+.5f}±{s3[0]:.5f} | OLS a,lvl: a {b4[0]:+.5f}±{s4[0]:.5f} lvl {b4[1]:+.5f}±{s4[1]:.5f}")
