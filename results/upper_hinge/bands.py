"""The action-effect field of `lrpilot worldmodel eval`'s fidelity section, split by the LR in effect.

On the random-walk rows of `fidelity.action_rows` (decisions k >= n/2), the slope per doubling of the change of
val on the action's log2 factor with run fixed effects, real against simulated (the world model's mean next val
from the same real prefixes under the same actions, 8 samples), in bands of decades above the collected runs'
default LR (log10 LR = -1.873 - 0.191 log10 N, results/rel_hinge/). "w/o jumps": the real slope without the rows
whose val moved by 0.1 or more in one step (loss spikes and divergence).

    python results/upper_hinge/bands.py --ckpt CKPT --side heldout|train --data starter V2_BEFORE_TIMING $R
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.correction import log_base, log_params
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.responses import action_rows, fe_slope, sim_next
from lrpilot.worldmodel.train import heldout_runs, training_runs

BANDS = ((-9, -1), (-1, 0), (0, 0.5), (0.5, 1), (1, 1.5), (1.5, 2), (2, 9), (-9, 9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--side", choices=["heldout", "train"], default="heldout")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    ck = checkpoints.load(args.ckpt, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build(cfg, ck.spec)
    full = load_dir(data_dirs(args.data), ck.spec)
    traj = full.subset(heldout_runs(full, cfg) if args.side == "heldout" else training_runs(full, cfg))
    sp = traj.spec
    rows, x, y = action_rows(traj)
    run, k = np.array([r for r, _ in rows]), np.array([k for _, k in rows])
    env = SimEnv(model, ser)
    params = env.params(ck.params, traj, max_prefix=1)
    y_sim = sim_next(env, params, traj, rows, args.samples, jax.random.key(7)) - traj.obs[run, k, sp.index("val")]
    rel = traj.obs[run, k, sp.index("log_lr")] + log_base(traj)[run] - (-1.873 - 0.191 * log_params(traj)[run])
    calm = np.abs(y) < 0.1
    print(f"{args.ckpt}, {args.side}: {len(rows)} random-walk rows of {len(np.unique(run))} runs")
    print("| decades above the default | rows | runs | real per doubling | w/o jumps | simulated | ratio |")
    print("|---|---|---|---|---|---|---|")
    for lo, hi in BANDS:
        m = (rel >= lo) & (rel < hi)
        if m.sum() < 20:
            continue
        (br, sr), (bs, ss) = fe_slope(run[m], x[m], y[m]), fe_slope(run[m], x[m], y_sim[m])
        bc, _ = fe_slope(run[m & calm], x[m & calm], y[m & calm])
        band = "all" if (lo, hi) == (-9, 9) else f"[{lo:g}, {hi:g})".replace("-9", "-inf").replace("9)", "inf)")
        print(f"| {band} | {m.sum()} | {len(np.unique(run[m]))} | {br:+.4f} ± {sr:.4f} | {bc:+.4f} | {bs:+.4f} ± {ss:.4f} | {bs / br:.2f} |")


if __name__ == "__main__":
    main()
