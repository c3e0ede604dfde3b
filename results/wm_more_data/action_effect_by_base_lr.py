"""The fidelity section's action-effect ratio (random walks, second half, run fixed effects: simulated /
real effect of halving the LR) split by the run's configured base LR relative to its model's default, for
one world-model checkpoint on its own split of the shipped data. Run from the repository root:

    python results/wm_more_data/action_effect_by_base_lr.py CKPT [SAMPLES] > OUT.txt
"""
import sys

import jax
import numpy as np
from _load import load

from lrpilot.worldmodel import responses as R

ckpt = sys.argv[1]
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ck, env, full, ho, tr = load(ckpt)
vi = ck.spec.index("val")
BINS = (("x0-1/3", 0, 1 / 3), ("x1/3-3", 1 / 3, 3), ("x3-10", 3, 10), ("x10-30", 10, 100), ("all", 0, 100),
        ("all below x10", 0, 10))
print(f"checkpoint {ckpt}; data starter + collect/data/v2.parquet; {samples} samples; effect of halving the LR on the"
      " next val / val0 (random walks, decisions k >= 10, run fixed effects)")
print("| groups | base LR / default | rows | real | simulated | ratio |")
print("|---|---|---|---|---|---|")
for name, idx in (("held-out", ho), ("training", tr)):
    traj = full.subset(idx)
    rows, x, y = R.action_rows(traj)
    params = env.params(ck.params, traj, max_prefix=1)
    y_sim = R.sim_next(env, params, traj, rows, samples, jax.random.key(0)) - np.array([traj.obs[r, k, vi] for r, k in rows])
    run = np.array([r for r, _ in rows])
    mult = np.array([traj.meta[r].get("base_lr_mult", 1.0) for r in run])
    for label, lo, hi in BINS:
        s = (mult >= lo) & (mult < hi)
        if s.sum() < 20 or np.ptp(x[s]) == 0:
            print(f"| {name} | {label} | {s.sum()} | - | - | - |")
            continue
        b, se = R.fe_slope(run[s], x[s], y[s])
        bs, ses = R.fe_slope(run[s], x[s], y_sim[s])
        print(f"| {name} | {label} | {s.sum()} | {-b:+.4f} ± {se:.4f} | {-bs:+.4f} ± {ses:.4f} | {bs / b:.2f} |")
    sys.stdout.flush()
