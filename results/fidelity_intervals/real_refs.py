"""How much the held-out fidelity targets can tell: the real references of the action-effect and
high-LR cost ratios on the shipped world model's split, with 95% intervals over resampled groups
(`worldmodel.fidelity.group_bootstrap`), beside the training groups'. No world model is run: these
are the denominators every ratio in forecast.json is divided by.

    python results/fidelity_intervals/real_refs.py [--data starter v2] [--ckpt pretrained]
"""

import argparse

import numpy as np

from lrpilot import checkpoints
from lrpilot.app.checks import data_dirs, resolve_ckpt
from lrpilot.trajectories import group_key, load_dir
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.model import WorldModelConfig
from lrpilot.worldmodel.responses import action_rows, fe_slope
from lrpilot.worldmodel.train import heldout_runs, training_runs


def refs(traj) -> dict:
    rows, x, y = action_rows(traj)
    run = np.array([r for r, _ in rows])
    cluster = np.array([group_key(traj.meta[r], traj.files[r]) for r in run])
    slope, se = fe_slope(run, x, y)
    ci = fidelity.action_intervals(run, cluster, x, y, None)["real_ci95"]
    grps = fidelity.groups(traj)
    real = fidelity.final_val(traj)
    h = fidelity.high_lr_cost(traj, real, real, grps)  # sim = real: only the real side is read
    dr = fidelity.high_lr_diffs(traj, real, grps)  # per group: the high-LR runs less the 0.5-2x ones
    return {"action_rows": len(rows), "action_runs": len(np.unique(run)), "action_groups": len(np.unique(cluster)),
            "action_real": -slope, "action_real_ols_stderr": se, "action_real_ci95": ci,
            "high_lr_groups": h["n_groups"], "high_lr_real": h["real"], "high_lr_real_stderr": h["real_stderr"],
            "high_lr_real_ci95": fidelity.group_bootstrap(np.arange(len(dr)), lambda r, _: dr[r].mean())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", nargs="+", default=["starter", "v2"])
    p.add_argument("--ckpt", default="pretrained")
    a = p.parse_args()
    ck = checkpoints.load(resolve_ckpt(a.ckpt), kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    full = load_dir(data_dirs(a.data), ck.spec)
    ho = heldout_runs(full, cfg)
    tr = training_runs(full, cfg)
    print("| groups | random-walk rows (runs, groups) | halving's real effect on the next val: OLS s.e.; 95% interval over groups "
          "| high-LR cost: groups with both | real cost ± s.e. over groups | 95% interval |")
    print("|---|---|---|---|---|---|")
    for name, idx in (("held out", ho), ("training", tr)):
        r = refs(full.subset(idx))
        c, hc = r["action_real_ci95"], r["high_lr_real_ci95"]
        print(f"| {name} | {r['action_rows']} ({r['action_runs']}, {r['action_groups']}) | {r['action_real']:+.4f}: "
              f"± {r['action_real_ols_stderr']:.4f}; [{c[0]:+.4f}, {c[1]:+.4f}] | {r['high_lr_groups']} | "
              f"{r['high_lr_real']:+.3f} ± {r['high_lr_real_stderr'] or float('nan'):.3f} | "
              f"{'-' if hc is None else f'[{hc[0]:+.3f}, {hc[1]:+.3f}]'} |")


if __name__ == "__main__":
    main()
