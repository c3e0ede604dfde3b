"""Held-out action-effect ratio of one-step ridge models with different action features and fits (numpy only).
Run from the repository root: python results/action_fit/linear_fits.py > results/action_fit/linear_fits.txt"""
import numpy as np

from lrpilot import checkpoints
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity as F, responses as R
from lrpilot.worldmodel.correction import ridge
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.train import split_runs

ck = checkpoints.load("results/simple_v2/round_2/worldmodel", kind="worldmodel")
cfg = WorldModelConfig.from_dict(ck.model_config)
data = ["collect/data/starter", "collect/data/v2"] + [f"results/simple_v2/round_{i}/data" for i in range(3)]
full = load_dir(data, ck.spec)
tr, ho = split_runs(full, cfg.heldout_frac, cfg.seed)
sp = ck.spec; vi = sp.index("val"); ratio = sp.divergence_ratio
def feats(t, rows, extra):
    base = F._one_step_features(t, rows)
    r = np.array([r for r, _ in rows]); k = np.array([k for _, k in rows])
    st = t.static.astype(float)
    a = np.log2(np.asarray(sp.actions))[t.actions[r, k]]
    L = t.obs[r, k, sp.index("log_lr")].astype(float); A = L + st[r, 0]
    # the model's default LR: 1e-3*sqrt(128/width); width unknown to the spec: use log_params as its proxy
    P = st[r, 1]
    cols = {"A2": a * A * A, "AP": a * A * P, "expA": a * 10 ** (A + 2.5), "reluA": a * np.maximum(A + 2.5, 0),
            "L2": a * L * L, "reluL": a * np.maximum(L, 0), "P": a * P}
    return np.concatenate([base] + [cols[e][:, None] for e in extra], 1)
t_tr, t_ho = full.subset(tr), full.subset(ho)
fit = [(r, k) for r in range(len(t_tr)) for k in range(1, t_tr.length[r] - 1)
       if t_tr.actions[r, k] >= 0 and t_tr.obs[r, k + 1, vi] < ratio]
y_fit = np.array([t_tr.obs[r, k + 1, vi] - t_tr.obs[r, k, vi] for r, k in fit])
for name, t in (("heldout", t_ho), ("train", t_tr)):
    rows, x, y = R.action_rows(t)
    run = np.array([r for r, _ in rows])
    real, _ = R.fe_slope(run, x, y)
    out = []
    for extra in ([], ["A2"], ["AP"], ["reluA"], ["A2", "AP"], ["reluL", "L2"], ["A2", "AP", "reluA", "reluL", "L2", "P"]):
        X = feats(t_tr, fit, extra); mu, sd, keep, w = ridge(X, y_fit)
        pred = ((feats(t, rows, extra)[:, keep] - mu[keep]) / sd[keep]) @ w
        lin, _ = R.fe_slope(run, x, pred)
        out.append(f"{'+'.join(extra) or 'base'} {lin / real:.2f}")
    print(name, f"real {real:+.5f}:", "; ".join(out))
print("--- fits on exogenous rows only (random walk + fork), optionally with run fixed effects")
def exo(t, r):
    return t.meta[r]["controller"]["name"] in ("random_walk", "fork")
fit2 = [(r, k) for r, k in fit if exo(t_tr, r)]
y2 = np.array([t_tr.obs[r, k + 1, vi] - t_tr.obs[r, k, vi] for r, k in fit2])
run2 = np.array([r for r, _ in fit2])
def demean(run, M):
    M = M.astype(float).copy()
    for r in np.unique(run):
        s = run == r; M[s] -= M[s].mean(0)
    return M
for fe in (False, True):
    for name, t in (("heldout", t_ho), ("train", t_tr)):
        rows, x, y = R.action_rows(t)
        run = np.array([r for r, _ in rows])
        real, _ = R.fe_slope(run, x, y)
        out = []
        for extra in ([], ["A2"], ["A2", "AP"], ["reluA"], ["A2", "AP", "reluA", "reluL", "L2", "P"]):
            X = feats(t_tr, fit2, extra); yy = y2
            if fe:
                X, yy = demean(run2, X), demean(run2, y2[:, None])[:, 0]
            mu, sd, keep, w = ridge(X, yy)
            pred = ((feats(t, rows, extra)[:, keep] - mu[keep]) / sd[keep]) @ w
            lin, _ = R.fe_slope(run, x, pred)
            out.append(f"{'+'.join(extra) or 'base'} {lin / real:.2f}")
        print("FE" if fe else "  ", name, f"({len(fit2)} fit rows) real {real:+.5f}:", "; ".join(out))
