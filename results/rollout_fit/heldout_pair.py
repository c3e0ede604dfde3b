"""Two world models on the yardstick's held-out groups, paired group by group.

Simulates the 63 held-out groups of the shipped data (the split `worldmodel eval --heldout-only` uses) from observation
1 under the real actions with each checkpoint, 32 samples with the evaluation's keys (its within-group Spearman is the
fidelity section's), caching each simulation in CACHE/<i>_<name>.npz, and prints both Spearmans, the per-group difference
(mean ± standard error, groups better / worse) and the final-val MAE.

    python results/rollout_fit/heldout_pair.py --data starter V2_BEFORE_TIMING $R --cache DIR pretrained OTHER_CKPT
"""
import argparse
from pathlib import Path

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs, resolve_ckpt
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import heldout_runs

p = argparse.ArgumentParser()
p.add_argument("--data", nargs="+", required=True)
p.add_argument("--cache", required=True)
p.add_argument("ckpts", nargs=2)
a = p.parse_args()
runs = grps = real = None
meds = []
Path(a.cache).mkdir(parents=True, exist_ok=True)
for i, name in enumerate(a.ckpts):
    src = resolve_ckpt(name)
    ck = checkpoints.load(src, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    if runs is None:
        full = load_dir(data_dirs(a.data), ck.spec)
        runs = full.subset(heldout_runs(full, cfg))
        grps, real = fidelity.groups(runs), fidelity.final_val(runs)
    cache = Path(a.cache) / f"{i}_{Path(src).name}.npz"
    if cache.exists() and list(np.load(cache)["files"]) == list(runs.files):
        sim = np.load(cache)["sim"]
    else:
        model, ser = build(cfg, ck.spec)
        env = SimEnv(model, ser)
        sim = fidelity.sim_final(env, env.params(ck.params, runs, max_prefix=1), runs, 32, fidelity.eval_keys(0)[0])
        np.savez(cache, sim=sim, real=real, files=np.array(runs.files))
    meds.append(np.nanmedian(sim, 1))
per = [np.array([fidelity.spearman(m[g], real[g]) for g in grps]) for m in meds]
for name, s, m in zip(a.ckpts, per, meds):
    ms = fidelity.mean_se(s)
    print(f"{name}: within-group Spearman {ms['mean']:.3f} ± {ms['stderr']:.3f} ({len(grps)} groups), "
          f"final-val MAE {np.nanmean(np.abs(m - real)):.4f}")
d = per[1] - per[0]
ms = fidelity.mean_se(d)
print(f"second - first, per group: {ms['mean']:+.3f} ± {ms['stderr']:.3f} "
      f"({int((d > 1e-9).sum())} better, {int((d < -1e-9).sum())} worse)")
