"""Is the simulator's within-group ranking limited by its own sampling noise?

On the held-out groups of the shipped data (the checkpoint's own split), from prefix 1 under the real actions
(as `worldmodel.fidelity`), the median of S samples per run, twice (keys 0 and 1):
* independent: each run draws its own keys (the fidelity section before 2026-12-05);
* common: sample s of every run draws the same keys (`sample_futures(common=True)`, the fidelity section now).
Reports the within-group Spearman of each replicate with the real final val, of the two replicates with each
other (the sampler's own reliability) and of the 2S-sample median with the real final val.

    python results/sim_noise/noise.py CKPT [S] > OUT.json     # CKPT: a world-model checkpoint or 'pretrained'
"""

import json
import sys

import jax
import numpy as np
from heldout import load_args

from lrpilot.worldmodel import fidelity as fid

ckpt, S, env, params, traj = load_args()
real, grps = fid.final_val(traj), fid.groups(traj)
within = lambda x, y: fid.within_group(x, y, grps)  # noqa: E731
res = {"ckpt": ckpt, "samples": S, "n_groups": len(grps)}
for name, common in (("independent", False), ("common", True)):
    a, b = (fid.sim_final(env, params, traj, S, jax.random.key(i), common) for i in (0, 1))
    ma, mb = np.nanmedian(a, 1), np.nanmedian(b, 1)
    res.update({f"{name}_a": within(ma, real), f"{name}_b": within(mb, real), f"{name}_sim_vs_sim": within(ma, mb),
                f"{name}_2x_samples": within(np.nanmedian(np.concatenate([a, b], 1), 1), real)})
    print(name, {k: round(v["mean"], 3) for k, v in res.items() if k.startswith(name)}, file=sys.stderr, flush=True)
print(json.dumps(res, indent=1))
