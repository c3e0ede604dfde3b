"""One-step experiment: the shipped simulator's linear action term refit on exogenous decisions, with a
convex term in the LR, a term in the previous action, and more data.

`lagged_walks.py` found the shipped simulator's response to one action, forced from the walks' real
prefixes, close to the forked groups' paired effect at each LR in effect from x1/10 to x30 of the default,
too negative below x1/10 (more LR helps by 0.007 per doubling there in the simulator, by 0.001-0.003 in the
real runs), and far too small above x30 (+0.013 against +0.06). The shipped ensemble's term
(`action_response = noop`, fit on every decision pooled: correction.py) adds w . phi(a_k, obs_k) to the
transformer's no-op continuation. This script refits it on random walks and forked runs (decisions k >= 1,
run fixed effects, ridge on standardised columns as correction.fit with action_fit = exogenous): the
residual of the real next val over the shipped simulator's one-step mean next val under the no-op, on

    phi:     correction.action_features (a, a*p, a*L, a*A, a*val, a*train, a^2)      (A = log10 absolute LR, L = log_lr)
    +conv:   a*A^2
    +lags:   a_{k-1}, a_{k-1}*A, L

fit on the shipped data's training groups alone, or also on the training-side groups of the runs collected
since (dataset v2 jobs 3-12; the group hash decides sides, so the held-out groups stay unseen), and reports
the held-out action-effect ratio (the fidelity section's slope on the same 798 rows) and the training
groups'. The refit term's one-step output is exact: in noop mode the simulator's mean next val is the
transformer's no-op expectation plus the term (env.py), so `sim_noop + term` is what a simulator with that
term gives for one step from a real prefix. The multi-step metrics (ranking, high-LR cost) need the term
inside the env; not done here.

    python results/wm_more_data/refit_action_term.py [CKPT] [SAMPLES] > results/wm_more_data/refit_action_term.txt
"""
import glob
import sys

import jax
import numpy as np
from _load import load, walks
from lagged_walks import design

from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import correction as C, responses as R
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.train import training_runs

ckpt = sys.argv[1] if len(sys.argv) > 1 else "pretrained"
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ck, env, full, ho, tr = load(ckpt)
sp = ck.spec
vi = sp.index("val")
key = jax.random.key(0)
VARIANTS = {"phi": 7, "phi + conv": 8, "phi + conv + lags": 11}


def features(traj, rows):
    """(rows, 11) the terms above for decisions (run, k); a variant takes the first VARIANTS[v] columns."""
    r, k = (np.array(v) for v in zip(*rows))
    o = traj.obs[r, k].astype(np.float64)
    lb = C.log_base(traj)[r].astype(np.float64)
    lag, L = design(traj, rows)  # the action, the previous one (0 before the first), ...; log_lr at k
    a, prev = lag[:, 0], lag[:, 1]
    A = L + lb
    return np.concatenate([C.action_features(sp, a, o, lb), np.stack([a * A * A, prev, prev * A, L], 1)], 1)


def noop_next(traj, rows):
    """(rows,) the shipped simulator's mean next val from each real prefix under the no-op (its level term
    included, its action term 0)."""
    return R.forced_next(env, env.params(ck.params, traj, max_prefix=1), traj, rows, samples, key, factors=(1.0,))[1.0]


def exogenous_rows(traj):
    """Decisions k >= 1 of random-walk and forked runs, not diverged into, and their run ids."""
    exo = [i for i, m in enumerate(traj.meta) if (m.get("controller") or {}).get("name") in C.EXOGENOUS]
    rows = [(r, k) for r in exo for k in range(1, traj.length[r] - 1)
            if traj.obs[r, k + 1, vi] < sp.divergence_ratio and traj.obs[r, k, vi] < sp.divergence_ratio]
    return rows, len(exo)


def fit_data(traj, tag):
    rows, n_runs = exogenous_rows(traj)
    y = np.array([traj.obs[r, k + 1, vi] for r, k in rows], float) - noop_next(traj, rows)
    print(f"fit data '{tag}': {len(rows)} decisions of {n_runs} random-walk and forked runs")
    sys.stdout.flush()
    return np.array([f"{tag}/{r}" for r, _ in rows]), features(traj, rows), y


shipped_fit = fit_data(full.subset(tr), "shipped")
new_files = sorted(f for j in range(3, 13) for f in glob.glob(f"collect/data/v2/run_s{j}_*.parquet"))
new = load_dir(new_files, sp)
per_job = {j: sum(f"run_s{j}_" in f for f in new_files) for j in range(3, 13)}
print(f"new runs: {len(new_files)} files of jobs 3-12 ({', '.join(f'job {j}: {n}' for j, n in per_job.items())})")
new_tr = training_runs(new, WorldModelConfig.from_dict(ck.model_config))  # the same group hash as the shipped split
more_fit = fit_data(new.subset(new_tr), "new")
datasets = {"shipped training groups": shipped_fit,
            "+ jobs 3-12's training-side groups": tuple(np.concatenate([a, b]) for a, b in zip(shipped_fit, more_fit))}

weights = {}
for dname, (run, X, y) in datasets.items():
    for vname, n in VARIANTS.items():
        mu, sd, keep, coef = C.ridge(C.within_runs(run, X[:, :n]), C.within_runs(run, y))
        w = np.zeros(n)
        w[keep] = coef / sd[keep]
        weights[dname, vname] = w
        names = ["a", "a*p", "a*L", "a*A", "a*val", "a*train", "a^2", "a*A^2", "a_prev", "a_prev*A", "L"][:n]
        print(f"  {dname}, {vname}: " + ", ".join(f"{nm} {v:+.5f}" for nm, v in zip(names, w)))

for name, idx in (("held-out", ho), ("training", tr)):
    w = walks(ck, env, full, idx, samples)
    traj, rows, x, y, run, v0 = w.traj, w.rows, w.x, w.y, w.run, w.v0
    base, X, shipped = noop_next(traj, rows), features(traj, rows), w.taken + v0
    b_real, se_real = R.fe_slope(run, x, y)
    print(f"{name}: {len(rows)} rows in {len(np.unique(run))} random walks; real slope per doubling {b_real:+.4f} ± {se_real:.4f}")
    b, se = R.fe_slope(run, x, shipped - v0)
    print(f"  shipped term: simulated slope {b:+.4f} ± {se:.4f}, action-effect ratio {b / b_real:.2f}")
    for (dname, vname), w in weights.items():
        b, se = R.fe_slope(run, x, base + X[:, : len(w)] @ w - v0)
        print(f"  refit on {dname}, {vname}: simulated slope {b:+.4f} ± {se:.4f}, action-effect ratio {b / b_real:.2f}")
    sys.stdout.flush()
