"""The world model's own response to an action inside held-out random walks, paired as the forks are: from
each real prefix (random-walk runs, decisions k >= 10) the mean simulated next val under halving, the no-op
and doubling, whatever the run really did. Beside it the fixed-effects slopes the fidelity section compares
(simulated and real next val on the action the run took). Run from the repository root:

    python results/wm_more_data/counterfactual_walks.py CKPT [SAMPLES] > OUT.txt
"""
import dataclasses
import sys

import jax
import numpy as np
from _load import load

from lrpilot.worldmodel import fidelity as F

ckpt = sys.argv[1]
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ck, env, full, ho, tr = load(ckpt)
sp = ck.spec
vi, acts = sp.index("val"), list(sp.actions)
print(f"checkpoint {ckpt}; data starter + collect/data/v2.parquet; {samples} samples; next val / val0 minus val at k")
for name, idx in (("held-out", ho), ("training", tr)):
    traj = full.subset(idx)
    rows, x, y = F._action_rows(traj)
    run = np.array([r for r, _ in rows])
    v0 = np.array([traj.obs[r, k, vi] for r, k in rows])
    params = env.params(ck.params, traj, max_prefix=1)
    key = jax.random.key(0)
    taken = F._sim_next(env, params, traj, rows, samples, key) - v0
    sim = {}
    for a in (0.5, 1.0, 2.0):
        forced = traj.actions.copy()
        for r, k in rows:
            forced[r, k] = acts.index(a)
        sim[a] = F._sim_next(env, params, dataclasses.replace(traj, actions=forced), rows, samples, key) - v0
    b_real, se_real = F._fe_slope(run, x, y)
    b_sim, se_sim = F._fe_slope(run, x, taken)
    per_doubling = (sim[2.0] - sim[0.5]) / 2
    print(f"{name}: {len(rows)} rows in {len(np.unique(run))} random walks")
    print(f"  fixed-effects slope per doubling, on the action taken: real {b_real:+.4f} ± {se_real:.4f}, "
          f"simulated {b_sim:+.4f} ± {se_sim:.4f}")
    print(f"  paired simulated response from the same prefix: doubling - no-op {np.mean(sim[2.0] - sim[1.0]):+.4f}, "
          f"no-op - halving {np.mean(sim[1.0] - sim[0.5]):+.4f}, per doubling {per_doubling.mean():+.4f} "
          f"± {per_doubling.std(ddof=1) / np.sqrt(len(rows)):.4f}")
    sys.stdout.flush()
