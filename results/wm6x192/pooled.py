"""Members' simulations pooled: what sampling one member per episode (the ensemble's simulator) does to the ranking.

Reads simulations cached by `results/rollout_fit/heldout_pair.py` (each: the yardstick's 664 held-out runs x 32
samples from observation 1 under the real actions, the evaluation's keys) and prints the within-group Spearman of each
alone and of all of them pooled (the median over every sample of every simulation; an ensemble's episode draws its
member at reset, so its median is over a mixture of the members' samples).

    python results/wm6x192/pooled.py --data starter V2_BEFORE_TIMING $R --sims SIM.npz SIM.npz [...]
"""
import argparse

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs, resolve_ckpt
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.train import heldout_runs

p = argparse.ArgumentParser()
p.add_argument("--data", nargs="+", required=True)
p.add_argument("--sims", nargs="+", required=True)
a = p.parse_args()
loaded = [np.load(s) for s in a.sims]
for s, z in zip(a.sims, loaded):
    if list(z["files"]) != list(loaded[0]["files"]):
        raise SystemExit(f"{s}: simulates other runs than {a.sims[0]}")
ck = checkpoints.load(resolve_ckpt("pretrained"), kind="worldmodel")  # the split and spec every simulation above was drawn on
cfg = WorldModelConfig.from_dict(ck.model_config)
full = load_dir(data_dirs(a.data), ck.spec)
runs = full.subset(heldout_runs(full, cfg))
if list(runs.files) != list(loaded[0]["files"]):
    raise SystemExit(f"--data {' '.join(a.data)}: its held-out runs are not the ones simulated in {a.sims[0]}")
grps, real = fidelity.groups(runs), fidelity.final_val(runs)


def line(name: str, sim: np.ndarray) -> str:
    med = np.nanmedian(sim, 1)
    ms = fidelity.within_group(med, real, grps)
    return f"{name}: within-group Spearman {ms['mean']:.3f} ± {ms['stderr']:.3f} ({len(grps)} groups), final-val MAE {np.nanmean(np.abs(med - real)):.4f}"


for s, z in zip(a.sims, loaded):
    print(line(s, z["sim"]))
print(line("pooled", np.concatenate([z["sim"] for z in loaded], 1)))
