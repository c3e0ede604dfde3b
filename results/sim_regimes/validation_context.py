"""Which part of the x10 gap is the simulator's: each policy simulated from the validation runs' own context.

At observation 1 every run looks the same (val = train = 1, progress 0, LR x1) except for the spec's static
context (log10 base LR, parameter count, tokens per update, run length), so the simulator can start exactly
where a validation run starts: python_docs and gettext_catalogs at the small protocol (their parameter
counts from results/selection's runs, 768 tokens per update, 2,000 iterations) at x10 of the default LR
(1e-3). 256 episodes per cell in the shipped ensemble, seed 0; the greedy policy's median LR / base after
decisions 4, 8, 12, 16, 20, beside the simulated path from the data's x10 starts (run.sh) and the real
path of each task (lr_paths.py, its two seeds). Run from the repository root: python results/sim_regimes/validation_context.py [POLICY ...]"""
import dataclasses
import json
import sys

import numpy as np
from lr_paths import RUNS, SHOW, TASKS, D, candidate, real_path  # beside this script

from lrpilot import checkpoints
from lrpilot.collect import shipped_dataset
from lrpilot.policy.train import evaluate
from lrpilot.trajectories import load_dir

MULT = 10.0
POLICIES = sys.argv[1:] or ["round3", "kink30", "kink30_s1", "kink10", "round1"]
spec = checkpoints.load(checkpoints.pretrained("worldmodel"), kind="worldmodel").spec
data = load_dir([str(shipped_dataset("starter")), "collect/data/v2.parquet"], spec)
one = data.subset(data.at_lr_mult(MULT)[:1])  # its first observation row; the context is replaced below
first = data.obs[:, 0]
assert np.allclose(first, first[0], atol=1e-6), "runs differ at observation 1 beyond their context"
contexts = {}  # each task's validation run at x10, small protocol: `one` with that run's static context
for t in TASKS:
    n_params = json.loads((RUNS / t / "lr_x10" / "cosine" / "seed0" / "final_info.json").read_text())["n_params"]
    ctx = np.asarray(spec.static_values(1e-3 * MULT, n_params, 12 * 64, 2000), np.float32)[None]
    contexts[t] = dataclasses.replace(one, static=ctx)
print("| policy | simulated from the data's x10 starts | python_docs x10: simulated from its context | real (2 seeds) "
      "| gettext_catalogs x10: simulated from its context | real (2 seeds) |")
print("|---|---|---|---|---|---|")
for p in POLICIES:
    ctrl, cells = candidate(p)["controller"], []
    for task, traj in contexts.items():
        rep = evaluate(ctrl.split(":", 1)[1], checkpoints.pretrained("worldmodel"), traj, n_envs=256, seed=0, max_prefix=1)
        real = real_path(ctrl, "10", tasks=(task,))
        cells += [" ".join(f"{rep['policy_lr_rel']['median'][k]:.2f}" for k in SHOW), " ".join(f"{real[k]:.2f}" for k in SHOW)]
    sim = json.loads((D / f"{p}_in_shipped.json").read_text())["by_lr_mult"]["10"]["policy_lr_rel"]["median"]
    print(f"| {p} | " + " ".join(f"{sim[k]:.2f}" for k in SHOW) + " | " + " | ".join(cells) + " |", flush=True)
