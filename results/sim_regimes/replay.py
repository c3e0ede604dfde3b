"""The simulator on the validation tasks under the policies' real actions, field by field: each real validation
run of the 12 candidates (python_docs and gettext_catalogs, seeds 0-1, small protocol, x0.1 / x1 / x10 of the
default LR; results/selection/runs) becomes a trajectory: its context (`context_starts` of the run: base LR,
parameter count, 768 tokens per update, 2,000 iterations), its actions (the LR after each decision / the one
before, the nearest of the spec's factors; runs off by more than 2% anywhere are left out) and its normalised
val (val at decision k / val at iteration 0). The shipped ensemble replays the actions from observation 1
(16 samples per run, seed 0; `worldmodel.forecast.sample_futures`), and its median normalised val at each
decision is set beside the real one.

Run from the repository root: python results/sim_regimes/replay.py [WORLD_MODEL [POLICY ...]] > results/sim_regimes/replay.md
(default: the shipped ensemble; POLICY: more candidates of results/selection, replayed beside the 12 and set
against round 3 in a last table)."""
import json
import sys

import jax
import numpy as np
from lr_paths import LR_BINS, MULTS, RUNS, TASKS, candidate, interval_cells, lrs  # beside this script

from lrpilot import checkpoints
from lrpilot.app.evaluate import safe_name
from lrpilot.app.policy_cmd import like_runs
from lrpilot.collect import shipped_dataset
from lrpilot.policy.train import load_world_model
from lrpilot.trajectories import context_starts, load_dir
from lrpilot.worldmodel.correction import log_params
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.fidelity import final_val, lr_features, spearman
from lrpilot.worldmodel.forecast import sample_futures

ADDED = tuple(sys.argv[2:])  # policies named on the command line, set against round 3 in the last table
POLICIES = ("round3", "kink30", "kink30_s1", "kink10", "round1", "round0", "round2", "convex_nolevel",
            "convex_nolevel_all", "round3_lambda0", "round3_lambda1_halt", "v2_level_noop_level") + ADDED
wm_path = sys.argv[1] if len(sys.argv) > 1 else checkpoints.pretrained("worldmodel")
ck, cfg, model, ser = load_world_model(wm_path)
spec, env = ck.spec, SimEnv(model, ser)
A = np.log(np.asarray(spec.actions))
n = spec.n_decisions

rows = []  # (task, mult, policy, seed, actions (n,), real normalised val (n,), lr_rel (n,), RunInfo)
left_out = 0
for t in TASKS:
    for m in MULTS:
        (_, info), = like_runs([RUNS / t / f"lr_x{m}" / "cosine" / "seed0"], None)[m]  # the cell's run, as it starts
        for p in POLICIES:
            for f in sorted((RUNS / t / f"lr_x{m}" / safe_name(candidate(p)["controller"])).glob("seed*/curves.json")):
                c = json.loads(f.read_text())
                val = {x["iter"]: x["val_loss"] for x in c}
                lr_rel = lrs(c) / info.base_lr
                steps = np.log(np.r_[lr_rel[0], lr_rel[1:] / lr_rel[:-1]])
                a = np.abs(steps[:, None] - A[None]).argmin(1)
                if len(lr_rel) != n or np.abs(steps - A[a]).max() > 0.02 or any(val.get(100 * k) is None for k in range(n + 1)):
                    left_out += 1
                    continue
                real = np.array([val[100 * k] for k in range(1, n + 1)]) / val[0]
                rows.append((t, m, p, f.parent.name, a, real, lr_rel, info))

traj = context_starts(spec, [r[7] for r in rows], [f"{r[0]} x{r[1]} {r[2]} {r[3]}" for r in rows])
traj.actions[:] = np.stack([r[4] for r in rows])
traj.length[:] = n + 1  # the actions are replayed; only observation 1 is read (context 1)
traj.obs[:, 1:, spec.index("log_lr")] = np.log10(np.stack([r[6] for r in rows]))  # obs k: the LR of interval k - 1
# the fidelity section's regression baseline, fit on the shipped data's runs: final val on the relative LR path, and
# the same with the configured LR (log10 base LR, and its product with the path's mean)
data = load_dir([str(shipped_dataset("starter")), "collect/data/v2.parquet"], spec)


def absolute(t, X):
    b = np.log10([m["base_lr"] for m in t.meta])[:, None]
    return np.hstack([X, b, b * X[:, :4].mean(1, keepdims=True)])


Xd = lr_features(data)
reg_rel = lr_features(traj) @ np.linalg.lstsq(Xd, final_val(data), rcond=None)[0]
reg_abs = absolute(traj, lr_features(traj)) @ np.linalg.lstsq(absolute(data, Xd), final_val(data), rcond=None)[0]
wm_params = jax.tree.map(np.asarray, ck.params)
params = env.params(wm_params, traj, 1)
sim = sample_futures(env, params, traj, np.arange(len(rows)), 1, n, 16, jax.random.key(0))  # (R, 16, n)
med = np.median(sim, axis=1)
real = np.stack([r[5] for r in rows])
lr_abs = np.stack([r[6] * float(r[1]) for r in rows])  # LR / the default LR


def cell(t, m):
    """Indices of the rows of task t at configured LR x m."""
    return [j for j, r in enumerate(rows) if r[0] == t and r[1] == m]


print(f"World model {wm_path}; {len(rows)} runs replayed ({left_out} left out: an LR step off the spec's factors, e.g. clamped)\n")
print("## Final val: ranking of the policies' runs within each task and configured LR\n")
print("| task | configured LR | runs | Spearman with real final val: simulated | regression, relative LR | regression, "
      "absolute LR | seed 1 against seed 0 (real, by policy) | real final val (mean), simulated |")
print("|---|---|---|---|---|---|---|---|")
for t in TASKS:
    for m in MULTS:
        i = cell(t, m)
        by = {(rows[j][2], rows[j][3]): real[j, -1] for j in i}
        both = [p for p in POLICIES if (p, "seed0") in by and (p, "seed1") in by]
        seeds = spearman(np.array([by[p, "seed0"] for p in both]), np.array([by[p, "seed1"] for p in both]))
        print(f"| {t} | x{m} | {len(i)} | {spearman(med[i, -1], real[i, -1]):+.2f} | {spearman(reg_rel[i], real[i, -1]):+.2f} | "
              f"{spearman(reg_abs[i], real[i, -1]):+.2f} | {seeds:+.2f} ({len(both)}) | {real[i, -1].mean():.4f}, {med[i, -1].mean():.4f} |")
print("\n## Simulated minus real normalised val after decisions 1, 4, 8, 12, 16, 20 (mean over runs)\n")
show = (0, 3, 7, 11, 15, 19)
print("| task | configured LR | " + " | ".join(f"dec {k + 1}" for k in show) + " |")
print("|---|---|" + "---|" * len(show))
for t in TASKS:
    for m in MULTS:
        i = cell(t, m)
        d = (med[i] - real[i]).mean(0)
        print(f"| {t} | x{m} | " + " | ".join(f"{d[k]:+.4f}" for k in show) + " |")
print("\n## Do the ensemble's members disagree where the simulator is wrong? Final normalised val, by cell\n")
K = env.members  # per_member: member m's samples are a contiguous share of axis 1, in member order
shares = np.cumsum([0] + [len(range(k, sim.shape[1], K)) for k in range(K)])
by_member = np.stack([np.median(sim[:, shares[k]:shares[k + 1], -1], axis=1) for k in range(K)], axis=1)  # (R, K)
spread, err = by_member.std(axis=1), np.abs(med[:, -1] - real[:, -1])
print(f"| task | configured LR | mean abs error of the simulated final val | mean spread of the {K} members' medians |")
print("|---|---|---|---|")
for t in TASKS:
    for m in MULTS:
        i = cell(t, m)
        print(f"| {t} | x{m} | {err[i].mean():.4f} | {spread[i].mean():.4f} |")
print(f"\nSpearman of the spread with the error over the {len(rows)} runs: {spearman(spread, err):+.2f}")
print("\n## One interval's change of normalised val, by the LR it ran at (decisions 2-20): real, simulated (intervals)\n")
print("| LR / default LR over the interval | " + " | ".join(TASKS) + " | both: simulated / real |")
print("|---|" + "---|" * (len(TASKS) + 1))
d_real, d_sim, lr_int = np.diff(real, axis=1), np.diff(med, axis=1), lr_abs[:, 1:]  # interval k (decision k to k + 1) runs at lrs[k]
task = np.array([r[0] for r in rows])[:, None]
for lo, hi in LR_BINS:
    s = (lr_int >= lo) & (lr_int < hi)
    cells = interval_cells(d_real, d_sim, s, task)
    if s.sum():
        print(f"| {lo:g}-{hi:g} | " + " | ".join(cells) + f" | {d_sim[s].mean() / d_real[s].mean():.2f} |")
print("\n## The same intervals in the shipped data, runs within 0.25 decades of the validation model size\n")
print("| LR / default LR over the interval | intervals | runs | mean change of normalised val |")
print("|---|---|---|---|")
mult = np.array([float(x.get("base_lr_mult", np.nan)) for x in data.meta])
near = np.abs(log_params(data) - np.log10(rows[0][7].n_params)) < 0.25
vi, li = spec.index("val"), spec.index("log_lr")
dv = np.diff(data.obs[:, 1:, vi], axis=1)  # interval k = 1..n-1: observation k to k + 1
lr_d = 10 ** data.obs[:, 2:, li] * mult[:, None]  # observation k + 1's log_lr: interval k's LR, / the default
ok = (np.arange(2, n + 1)[None] < data.length[:, None]) & near[:, None] & np.isfinite(mult)[:, None]
for lo, hi in LR_BINS:
    s = ok & (lr_d >= lo) & (lr_d < hi)
    print(f"| {lo:g}-{hi:g} | {s.sum()} | {s.any(1).sum()} | {dv[s].mean():+.5f} |")
if ADDED:
    print("\n## The added policies against round 3: final normalised val, mean over seeds, real / simulated\n")
    print("| task | configured LR | " + " | ".join(("round3",) + ADDED) + " | simulated minus real, added - round3 |")
    print("|---|---|" + "---|" * (len(ADDED) + 2))
    for t in TASKS:
        for m in MULTS:
            i = cell(t, m)
            by = {p: [j for j in i if rows[j][2] == p] for p in ("round3",) + ADDED}
            rs = {p: (real[j, -1].mean(), med[j, -1].mean()) if j else None for p, j in by.items()}
            gaps = [f"{(rs[p][1] - rs['round3'][1]) - (rs[p][0] - rs['round3'][0]):+.4f}" if rs[p] and rs["round3"] else "-"
                    for p in ADDED]
            print(f"| {t} | x{m} | " + " | ".join(f"{v[0]:.4f} / {v[1]:.4f}" if v else "-" for v in rs.values())
                  + " | " + ", ".join(gaps) + " |")
