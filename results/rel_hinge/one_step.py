"""One-step experiment: keep the shipped ensemble's action term and add one term on top of it, a kink in the
LR in effect relative to the model's default, fit alone (stagewise) on what the shipped simulator leaves.

`results/wm_more_data/lagged_walks.py` found the shipped simulator's response to one action, forced from real
prefixes, close to the real paired effect from x1/10 to x30 of the model's default and far too small above
x30 (+0.013 against +0.06-0.08 per doubling). Every refit of the whole term so far (`results/action_convex/`)
raised the walks' response but overshot the forks (1.9-2.2x) and judged policies worse. Here the shipped
term stays as it is, and one coefficient c is fit for

    h = a * max(0, log10(LR in effect / reference LR) - log10(T))           (a: the action in doublings)

on the residual of the real next val over the shipped simulator's one-step mean next val under the action
taken (random walks and forked branches, decisions k >= 1, run fixed effects). The reference LR is a
log-linear fit of the runs' default LR on their parameter count (what the spec's static context carries;
the default itself is a collection convention the deployed model never sees): log10 ref = c0 + c1 log10 N.

Fit on the shipped data's training groups plus the training-side groups of dataset v2 jobs 3-16; reported:
the held-out action-effect ratio (fidelity's slope on the held-out walks), and per band of the LR in effect
the shipped and the corrected paired response (forced halving / doubling from the same prefixes).

    python results/rel_hinge/one_step.py [SAMPLES] [--fit-only] > results/rel_hinge/one_step.txt   # from the repository root

(--fit-only: the reference fit and the kink's coefficients, without the walks' tables, which take an hour on
two cores; the committed one_step.txt is that part, 8 samples.)
"""
import glob
import sys

sys.path.insert(0, "results/wm_more_data")
import jax  # noqa: E402
import numpy as np  # noqa: E402
from _load import load, walks  # noqa: E402

from lrpilot.trajectories import load_dir  # noqa: E402
from lrpilot.worldmodel import correction as C, responses as R  # noqa: E402
from lrpilot.worldmodel.model import WorldModelConfig  # noqa: E402
from lrpilot.worldmodel.train import training_runs  # noqa: E402

fit_only = "--fit-only" in sys.argv
args = [a for a in sys.argv[1:] if a != "--fit-only"]
samples = int(args[0]) if args else 8
ck, env, full, ho, tr = load("pretrained")
sp = ck.spec
vi, li = sp.index("val"), sp.index("log_lr")
key = jax.random.key(0)
THRESHOLDS = (10.0, 30.0)
BANDS = ((0, 1 / 10), (1 / 10, 1), (1, 3), (3, 10), (10, 30), (30, 1e9))


def meta_arrays(traj):
    n = np.array([m.get("n_params", np.nan) for m in traj.meta], float)
    d = np.array([m.get("default_lr", np.nan) for m in traj.meta], float)
    return n, d


new_files = sorted(f for j in range(3, 17) for f in glob.glob(f"collect/data/v2/run_s{j}_*.parquet"))
new = load_dir(new_files, sp)
print(f"new runs: {len(new_files)} files of dataset v2 jobs 3-16")
n_all, d_all = (np.concatenate(v) for v in zip(meta_arrays(full), meta_arrays(new)))
ok = np.isfinite(n_all) & np.isfinite(d_all)
c1, c0 = np.polyfit(np.log10(n_all[ok]), np.log10(d_all[ok]), 1)
res = np.log10(d_all[ok]) - (c0 + c1 * np.log10(n_all[ok]))
print(f"reference LR: log10 ref = {c0:+.3f} {c1:+.3f} log10 N over {ok.sum()} runs with a recorded default; "
      f"residual sd {res.std():.3f} decades, max |residual| {np.abs(res).max():.3f}")


def rel_lr(traj, rows):
    """(rows,) log10 of the LR in effect before the action over the reference LR of the run's size."""
    r, k = (np.array(v) for v in zip(*rows))
    n = np.array([traj.meta[i]["n_params"] for i in r], float)
    return C.log_base(traj)[r] + traj.obs[r, k, li] - (c0 + c1 * np.log10(n))


def true_rel(traj, rows):
    r, k = (np.array(v) for v in zip(*rows))
    return np.log10([traj.meta[i].get("base_lr_mult", np.nan) for i in r]) + traj.obs[r, k, li]


def hinge(a, rel, t):
    return a * np.maximum(rel - np.log10(t), 0.0)


def exogenous_rows(traj):
    exo = [i for i, m in enumerate(traj.meta) if (m.get("controller") or {}).get("name") in C.EXOGENOUS
           and "n_params" in m]
    return [(r, k) for r in exo for k in range(1, traj.length[r] - 1)
            if traj.obs[r, k + 1, vi] < sp.divergence_ratio and traj.obs[r, k, vi] < sp.divergence_ratio]


def fit_data(traj, tag):
    rows = exogenous_rows(traj)
    r, k = (np.array(v) for v in zip(*rows))
    a = np.log2(np.asarray(sp.actions))[traj.actions[r, k]]
    y = traj.obs[r, k + 1, vi] - R.sim_next(env, env.params(ck.params, traj, max_prefix=1), traj, rows, samples, key)
    print(f"fit data '{tag}': {len(rows)} decisions of {len(np.unique(r))} random-walk and forked runs")
    sys.stdout.flush()
    return np.array([f"{tag}/{i}" for i in r]), a, rel_lr(traj, rows), y


parts = [fit_data(full.subset(tr), "shipped"),
         fit_data(new.subset(training_runs(new, WorldModelConfig.from_dict(ck.model_config))), "new")]
run, a, rel, y = (np.concatenate(v) for v in zip(*parts))
coef = {}
for t in THRESHOLDS:
    h = hinge(a, rel, t)
    b, se = R.fe_slope(run, h, y)
    coef[t] = b
    print(f"threshold x{t:g}: c = {b:+.4f} ± {se:.4f} per doubling per decade above it ({(h != 0).sum()} rows with h != 0)")
sys.stdout.flush()
if fit_only:
    sys.exit(0)

for name, idx in (("held-out", ho), ("training", tr)):
    w = walks(ck, env, full, idx, samples)
    traj, rows = w.traj, w.rows
    rl = rel_lr(traj, rows)
    b_real, se_real = R.fe_slope(w.run, w.x, w.y)
    b, se = R.fe_slope(w.run, w.x, w.taken)
    print(f"\n{name}: {len(rows)} rows in {len(np.unique(w.run))} random walks; real slope per doubling "
          f"{b_real:+.4f} ± {se_real:.4f}; shipped {b:+.4f} ± {se:.4f} (ratio {b / b_real:.2f})")
    for t, c in coef.items():
        b, se = R.fe_slope(w.run, w.x, w.taken + c * hinge(w.x, rl, t))
        print(f"  + kink at x{t:g} of the reference: {b:+.4f} ± {se:.4f} (ratio {b / b_real:.2f})")
    f = R.forced_next(env, w.params, traj, rows, samples, w.key)
    cur = np.where(np.isfinite(true_rel(traj, rows)), true_rel(traj, rows), rl)
    print("  | LR in effect / default | rows | real fixed-effects slope | shipped paired | " +
          " | ".join(f"+ kink x{t:g} paired" for t in coef) + " |")
    for lo, hi in BANDS:
        m = (cur >= np.log10(lo if lo else 1e-9)) & (cur < np.log10(hi))
        if m.sum() < 10:
            continue
        br, sr = R.fe_slope(w.run[m], w.x[m], w.y[m])
        d = (f[2.0] - f[0.5])[m] / 2
        cells = [f"{d.mean():+.4f}"]
        for t, c in coef.items():
            up, dn = c * hinge(np.ones(m.sum()), rl[m], t), c * hinge(-np.ones(m.sum()), rl[m], t)
            cells.append(f"{(d + (up - dn) / 2).mean():+.4f}")
        print(f"  | x{lo:.3g}-{hi:.3g} | {m.sum()} | {br:+.4f} ± {sr:.4f} | " + " | ".join(cells) + " |")
    sys.stdout.flush()
