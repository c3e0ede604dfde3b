"""Does the simulator know what the rest of a schedule does? From the real prefix of k + 1 observations (0..k)
under the real actions, the within-group Spearman of the simulated final val (median of S samples, common keys)
with the real one, beside ranking by the val at k alone (what the state so far tells, with nothing of the
schedule to come). Held-out groups of the shipped data; runs that ended by k count with their real final val on
both sides. Then, from observation 0 alone, how well the simulated val at each later observation h ranks the real
one, beside the real val at observation 1 alone: where along the run the ranking is lost.

    python results/sim_noise/from_prefix.py CKPT [S] > OUT.md
"""

import jax
import numpy as np
from heldout import load_args

from lrpilot.worldmodel import fidelity as fid
from lrpilot.worldmodel.forecast import sample_futures
from lrpilot.worldmodel.responses import CHUNK

KS = (0, 5, 10, 15)
ckpt, S, env, params, traj = load_args(max_prefix=max(KS) + 1)
n, vi = env.spec.n_decisions, env.spec.index("val")
real, grps = fid.final_val(traj), fid.groups(traj)
fmt = lambda d: "-" if d["mean"] is None else f"{d['mean']:+.3f} ± {d['stderr']:.3f}"  # noqa: E731
within = lambda x: fid.within_group(x, real, grps)  # noqa: E731


def futures(c: int) -> np.ndarray:
    """(R, n + 1 - c) median simulated val at observations c..n from the real prefix 0..c-1 under the real
    actions (common keys); NaN past a run's end and for runs with no observation c."""
    out = np.full((len(traj), n + 1 - c), np.nan)
    live = np.flatnonzero(traj.length > c)
    for start in range(0, len(live), CHUNK):
        runs = live[start : start + CHUNK]
        out[runs] = np.nanmedian(sample_futures(env, params, traj, runs, c, n + 1 - c, S, jax.random.key(0), common=True), 1)
    return out


from_0 = futures(1)  # from observation 0: the k = 0 row and the table by observation h
print(f"{ckpt}, {len(grps)} held-out groups, {S} samples per run, common keys (key 0)\n")
print("| known observations 0..k | simulated final val | val at k alone |\n|---|---|---|")
for k in KS:
    c, sim = k + 1, real.copy()
    fut, live = (from_0 if k == 0 else futures(c)), np.flatnonzero(traj.length > c)  # runs with an observation after k
    sim[live] = fut[live, traj.length[live] - 1 - c]
    at_k = np.where(traj.length > k, traj.obs[np.arange(len(traj)), np.minimum(k, traj.length - 1), vi], real)
    print(f"| {k} | {fmt(within(sim))} | {fmt(within(at_k))} |", flush=True)

# From observation 0 alone: the within-group ranking of the val at each later observation h (simulated median
# against real), runs that ended before h left out of that h's groups.
# Beside it, the real val at observation 1 (the first response, known exactly): how much of the ranking at h the
# first interval alone sets; the real ranking reshuffles as the schedules part.
HS = (1, 2, 3, 5, 10, 15, 20)
print("\n| observation h | simulated val at h from observation 0 | real val at 1 alone |\n|---|---|---|")
for h in HS:
    ok = traj.length > h
    g_h = [g[ok[g]] for g in grps if ok[g].sum() >= 3]
    d = fid.mean_se([fid.spearman(from_0[g, h - 1], traj.obs[g, h, vi]) for g in g_h])
    d1 = fid.mean_se([fid.spearman(traj.obs[g, 1, vi], traj.obs[g, h, vi]) for g in g_h])
    print(f"| {h} | {fmt(d)} ({len(g_h)} groups) | {fmt(d1)} |", flush=True)
