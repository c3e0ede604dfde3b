"""Which level terms the rollout fit should move, chosen on training groups only (5-fold cross-validation by group).

Reads the round-0 simulation that `lrpilot worldmodel fit-rollout` left in OUT.state/round_0.npz (kept here as
sims_round0.npz: the median of 32 simulated
final vals of each training run it drew, from observation 1 under the real actions) and, for each layout of the
level terms, the within-group Spearman of sim + Psi . d with d fit on the other folds' groups (`rollout.cross_validated`),
on all drawn groups and on the paired (anneal-timing and drop: one seed per group) and unpaired ones apart.

    python results/rollout_fit/terms_cv.py --data starter V2_NO21_DROP $R --state results/rollout_fit/sims_round0.npz
"""
import argparse
import dataclasses
from pathlib import Path

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity, rollout
from lrpilot.worldmodel.correction import ActionTerms, layout, paired_groups
from lrpilot.worldmodel.model import WorldModelConfig

p = argparse.ArgumentParser()
p.add_argument("--data", nargs="+", required=True)
p.add_argument("--state", required=True)
p.add_argument("--ckpt", default="pretrained")
a = p.parse_args()
ck = checkpoints.load(checkpoints.pretrained("worldmodel") if a.ckpt == "pretrained" else a.ckpt, kind="worldmodel")
cfg = WorldModelConfig.from_dict(ck.model_config)
terms = layout(ActionTerms.of(cfg), np.asarray(ck.params["action_linear"]["w"]))
full = load_dir(data_dirs(a.data), ck.spec)
z = np.load(a.state)
key = lambda f: Path(f).name  # noqa: E731  (V2_NO21_DROP may live anywhere; run names are unique across the data)
idx = {key(f): i for i, f in enumerate(full.files)}
if len(idx) != len(full.files):
    raise SystemExit("terms_cv: two runs of --data share a file name")
t = full.subset(np.array([idx[key(f)] for f in z["files"]]))
sim, real = z["med"], fidelity.final_val(t)
grps = [g for g in fidelity.groups(t) if np.isfinite(sim[g]).all()]
paired = paired_groups(t) >= 0
sides = {"all": grps, "paired (one seed per group)": [g for g in grps if paired[g].all()],
         "unpaired": [g for g in grps if not paired[g].any()]}
print(f"{len(grps)} groups, {sum(len(g) for g in grps)} runs simulated ({a.state})\n")
print("| level terms moved | " + " | ".join(f"{k} ({len(v)} groups)" for k, v in sides.items()) + " |")
print("|---|" + "---|" * len(sides))
print("| none (the simulation) | " + " | ".join(f"{rollout.spearman(sim, real, v):.3f}" for v in sides.values()) + " |")
for lt in ("kinks", "kinks_v"):
    lay = dataclasses.replace(terms, level_terms=lt)
    psi = rollout.psi_sums(t, lay)
    score = rollout.out_of_fold(sim, psi, real, grps)  # all groups' folds, then read per side
    print(f"| {lt} ({', '.join(lay.psi_names)}) | " + " | ".join(f"{rollout.spearman(score, real, v):.3f}" for v in sides.values()) + " |")
