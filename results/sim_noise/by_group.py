"""Which held-out groups does the simulator rank badly? Per group of the shipped data's held-out split (the
checkpoint's own): its controller(s), size, the spread of its real final vals, and the within-group Spearman of
the simulated (median of S samples, common keys, as `worldmodel.fidelity`) with the real final val; then the
Spearman by task and by tercile of the real spread.

    python results/sim_noise/by_group.py CKPT [S] > OUT.md
"""

import collections

import jax
import numpy as np
from heldout import load_args

from lrpilot.worldmodel import fidelity as fid

ckpt, S, env, params, traj = load_args()
sim = np.nanmedian(fid.sim_final(env, params, traj, S, jax.random.key(0)), 1)
real, grps = fid.final_val(traj), fid.groups(traj)
rows = []
for g in grps:
    ctl = collections.Counter(traj.meta[i]["controller"]["name"] for i in g)
    rows.append({"controllers": "+".join(sorted(ctl)), "n": len(g), "spread": float(np.std(real[g])),
                 "sim_spread": float(np.std(sim[g])), "rho": fid.spearman(sim[g], real[g]),
                 "task": traj.meta[g[0]].get("task")})


def line(name, rs):
    r = np.array([x["rho"] for x in rs])
    se = r.std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else float("nan")
    return (f"| {name} | {len(rs)} | {r.mean():+.3f} ± {se:.3f} | {np.mean([x['spread'] for x in rs]):.4f} | "
            f"{np.mean([x['sim_spread'] for x in rs]):.4f} |")


print(f"{ckpt}, {len(grps)} held-out groups, {S} samples per run, common keys (key 0)\n")
print("| groups | n | within-group Spearman | real spread of final val (sd) | simulated spread |\n|---|---|---|---|---|")
print(line("all", rows))
for t in sorted({x["task"] for x in rows}):
    print(line(f"task {t}", [x for x in rows if x["task"] == t]))
cuts = np.quantile([x["spread"] for x in rows], [1 / 3, 2 / 3])
for i, (lo, hi) in enumerate(zip([-np.inf, *cuts], [*cuts, np.inf])):
    print(line(f"real spread tercile {i + 1}", [x for x in rows if lo < x["spread"] <= hi]))
print("\n| task | controllers | runs | real spread | simulated spread | Spearman |\n|---|---|---|---|---|---|")
for x in sorted(rows, key=lambda x: x["rho"]):
    print(f"| {x['task']} | {x['controllers']} | {x['n']} | {x['spread']:.4f} | {x['sim_spread']:.4f} | {x['rho']:+.2f} |")
