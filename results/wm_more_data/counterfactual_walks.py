"""The world model's own response to an action inside held-out random walks, paired as the forks are: from
each real prefix (random-walk runs, decisions k >= 10) the mean simulated next val under halving, the no-op
and doubling, whatever the run really did. Beside it the fixed-effects slopes the fidelity section compares
(simulated and real next val on the action the run took). Run from the repository root:

    python results/wm_more_data/counterfactual_walks.py CKPT [SAMPLES] > OUT.txt
"""
import sys

import numpy as np
from _load import load, walks

from lrpilot.worldmodel import responses as R

ckpt = sys.argv[1]
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ck, env, full, ho, tr = load(ckpt)
print(f"checkpoint {ckpt}; data starter + collect/data/v2.parquet; {samples} samples; next val / val0 minus val at k")
for name, idx in (("held-out", ho), ("training", tr)):
    w = walks(ck, env, full, idx, samples)
    run, x, y, taken, rows = w.run, w.x, w.y, w.taken, w.rows
    paired = R.paired_walk_response(env, w.params, w.traj, rows, samples, w.key)  # what worldmodel eval reports
    b_real, se_real = R.fe_slope(run, x, y)
    b_sim, se_sim = R.fe_slope(run, x, taken)
    print(f"{name}: {len(rows)} rows in {len(np.unique(run))} random walks")
    print(f"  fixed-effects slope per doubling, on the action taken: real {b_real:+.4f} ± {se_real:.4f}, "
          f"simulated {b_sim:+.4f} ± {se_sim:.4f}")
    print(f"  paired simulated response from the same prefix: doubling - no-op {paired['doubling']:+.4f}, "
          f"no-op - halving {-paired['halving']:+.4f}, per doubling {paired['per_doubling']:+.4f} "
          f"± {paired['per_doubling_stderr']:.4f}")
    sys.stdout.flush()
