"""The real effect of one LR action on the next val in forked groups (branches that share seed and
history up to the fork; no run-to-run noise), per doubling of the LR, by the group's configured base
LR relative to the model's default. usage: python real_fork_effect.py DATA... (directories or files)"""
import sys

import numpy as np

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.responses import fork_contrasts, origin_slope

traj = load_dir(sys.argv[1:] or ["collect/data/v2"], DEFAULT_SPEC)
rows, x, y = fork_contrasts(traj)
mult = np.array([traj.meta[r]["base_lr_mult"] for r, _, _ in rows])
late = np.array([k >= DEFAULT_SPEC.n_decisions // 2 for _, k, _ in rows])
fam = np.array([traj.meta[r]["family"] for r, _, _ in rows])
print(f"{len(rows)} branches with a no-op sibling in {len({o for *_, o in rows})} forked groups "
      f"({', '.join(f'{f}: {(fam == f).sum()}' for f in sorted(set(fam)))})")
print("next val / val0 minus the no-op branch's, per doubling (least squares through the origin; s.e. from the residuals)")
print("| base LR / default | branches | all forks | forks in the second half | doubling: +1 | halving: -1 |")
print("|---|---|---|---|---|---|")


def slope(m):
    if m.sum() < 3:
        return "-"
    b, se = origin_slope(x[m], y[m])
    return f"{b:+.4f} ± {se:.4f} ({m.sum()})"


for lo, hi in ((0, 1 / 3), (1 / 3, 3), (3, 10), (10, 31)):
    b = (mult >= lo) & (mult < hi)
    print(f"| x{lo:.3g}-{hi:.3g} | {b.sum()} | {slope(b)} | {slope(b & late)} | {slope(b & (x == 1))} | {slope(b & (x == -1))} |")
