"""The same per-interval comparison as replay.md's, on the shipped data's own runs of the two validation corpora
near the validation model size (within 0.25 decades of its parameter count): each run replayed from its
observation 1 under its real actions (16 samples, seed 0), the change of normalised val over each interval
(decisions 2-20) by the LR it ran at / the run's default LR, real against the simulated median; separately for
the runs the world model trained on and those its split held out. It says whether the model fits the
corpus-dependent slowdown it was shown. Run from the repository root:
python results/sim_regimes/replay_data.py [WORLD_MODEL] [--without-linear] > results/sim_regimes/replay_data.md
(default: the shipped ensemble; --without-linear: the linear action term's weights set to zero, the
transformer's continuation alone)."""
import sys

import jax
import numpy as np
from lr_paths import LR_BINS, TASKS, interval_cells  # beside this script

from lrpilot import checkpoints
from lrpilot.collect import shipped_dataset
from lrpilot.policy.train import load_world_model
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.correction import log_params
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.forecast import sample_futures
from lrpilot.worldmodel.train import training_runs

N_PARAMS = 844_672  # gettext_catalogs' validation model (results/selection/runs); python_docs' is within 0.25 decades
args = [a for a in sys.argv[1:] if not a.startswith("--")]
wm_path = args[0] if args else checkpoints.pretrained("worldmodel")
ck, cfg, model, ser = load_world_model(wm_path)
spec, env = ck.spec, SimEnv(model, ser)
data = load_dir([str(shipped_dataset("starter")), str(shipped_dataset("v2"))], spec)
mult = np.array([float(x.get("base_lr_mult", np.nan)) for x in data.meta])
near = np.abs(log_params(data) - np.log10(N_PARAMS)) < 0.25
n, vi, li = spec.n_decisions, spec.index("val"), spec.index("log_lr")
trained = np.zeros(len(data), bool)
trained[training_runs(data, cfg)] = True
wm_params = jax.tree.map(np.asarray, ck.params)
print(f"World model: {'the shipped ensemble' if not args else wm_path}")
if "--without-linear" in sys.argv:
    wm_params["action_linear"] = jax.tree.map(np.zeros_like, wm_params["action_linear"])
    print("The linear action term's weights set to zero: the transformer's continuation alone (--without-linear)")
base = near & np.isfinite(mult) & np.isin([m["task"] for m in data.meta], TASKS) & (data.length == n + 1)
for side, sel in (("trained on", base & trained), ("held out (or validation)", base & ~trained)):
    keep = np.flatnonzero(sel)
    traj = data.subset(keep)
    params = env.params(wm_params, traj, 1)
    sim = np.median(sample_futures(env, params, traj, np.arange(len(traj)), 1, n, 16, jax.random.key(0)), axis=1)  # obs 1..n
    real = traj.obs[:, 1:, vi]
    d_real, d_sim = np.diff(real, axis=1), np.diff(sim, axis=1)  # interval k = 1..n-1
    lr_int = 10 ** traj.obs[:, 2:, li] * mult[keep][:, None]  # observation k + 1's log_lr: interval k's LR, / the default
    task = np.array([m["task"] for m in traj.meta])[:, None]
    print(f"\n## {len(traj)} full-length runs of {', '.join(TASKS)} near {N_PARAMS:,} parameters, {side}\n")
    print("| LR / default LR over the interval | " + " | ".join(f"{t}: real, simulated (intervals)" for t in TASKS) + " |")
    print("|---|" + "---|" * len(TASKS))
    for lo, hi in LR_BINS:
        s = (lr_int >= lo) & (lr_int < hi)
        print(f"| {lo:g}-{hi:g} | " + " | ".join(interval_cells(d_real, d_sim, s, task)) + " |")
    fin = {t: (real[task[:, 0] == t, -1].mean(), sim[task[:, 0] == t, -1].mean()) for t in TASKS}
    print("\nfinal normalised val, real against simulated: " + "; ".join(f"{t} {a:.4f}, {b:.4f}" for t, (a, b) in fin.items()))
