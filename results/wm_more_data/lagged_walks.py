"""How an action plays out inside random walks, real and simulated: the fidelity section's fixed-effects
slope of the change of val on the action taken (random-walk runs, decisions k >= n/2), beside the same
regression with the walk's history as controls, (a) the three previous actions (a distributed lag), (b)
the LR level before the action (log_lr at k). Where an action repeats the last with probability up to 0.8,
the slope on the action alone also carries the effect of the actions before it; the coefficient with
controls is the immediate effect, which forked groups measure without noise.

    python results/wm_more_data/lagged_walks.py CKPT [SAMPLES] > OUT.txt   # the shipped data, real and simulated
    python results/wm_more_data/lagged_walks.py --real DATA...               # real walks only, by base LR band
    python results/wm_more_data/lagged_walks.py --current DATA...            # real walks and forks, by the LR in effect

Run from the repository root. All in normalised val (val / val0), per doubling of the LR.
"""
import sys

import numpy as np

from lrpilot.worldmodel import responses as R
from lrpilot.worldmodel.correction import within_runs

LAGS = 3
BANDS = ((0, 1 / 10), (1 / 10, 1 / 3), (1 / 3, 1), (1, 3), (3, 10), (10, 30), (30, 1e9))  # LR in effect / the default


def design(traj, rows):
    """(rows, 1 + LAGS) the action and the LAGS previous ones (log2 factors; 0 before the first), and
    (rows,) log_lr at k (log10 of the LR over the configured base LR)."""
    log2f = np.log2(np.asarray(traj.spec.actions))
    li = traj.spec.index("log_lr")
    r, k = (np.array(v) for v in zip(*rows))
    lag = np.stack([np.where(k - j >= 0, log2f[np.maximum(traj.actions[r, np.maximum(k - j, 0)], 0)], 0.0)
                    for j in range(LAGS + 1)], 1)
    return lag, traj.obs[r, k, li].astype(float)


def fe_ols(run, X, y):
    """OLS coefficients of y on X with a fixed effect per run, and their standard errors."""
    Xd, yd = within_runs(run, X.astype(float)), within_runs(run, y.astype(float))
    coef, *_ = np.linalg.lstsq(Xd, yd, rcond=None)
    resid = yd - Xd @ coef
    dof = max(len(y) - X.shape[1] - len(np.unique(run)), 1)
    cov = np.linalg.pinv(Xd.T @ Xd) * (resid @ resid / dof)
    return coef, np.sqrt(np.diag(cov))


def fmt(c, s):
    return f"{c:+.4f} ± {s:.4f}"


def report(label, run, lag, level, y):
    b, se = R.fe_slope(run, lag[:, 0], y)
    cl, sl = fe_ols(run, lag, y)
    cv, sv = fe_ols(run, np.stack([lag[:, 0], level], 1), y)
    print(f"  {label}: action alone {fmt(b, se)} | with {LAGS} lags: action {fmt(cl[0], sl[0])}, lags "
          f"{', '.join(fmt(c, s) for c, s in zip(cl[1:], sl[1:]))} | with the LR level: action {fmt(cv[0], sv[0])}, "
          f"log_lr {fmt(cv[1], sv[1])}")


def real_only(paths):
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.trajectories import load_dir

    traj = load_dir(paths, DEFAULT_SPEC)
    rows, x, y = R.action_rows(traj)
    run = np.array([r for r, _ in rows])
    mult = np.array([traj.meta[r].get("base_lr_mult", np.nan) for r in run], float)
    lag, level = design(traj, rows)
    print(f"real random walks in {paths[0] if len(paths) == 1 else f'{len(paths)} paths'}: {len(rows)} rows in {len(np.unique(run))} runs "
          f"(the actions' autocorrelation at lag 1: {np.corrcoef(lag[:, 0], lag[:, 1])[0, 1]:.2f})")
    for lo, hi in ((0, 1 / 3), (1 / 3, 3), (3, 10), (10, 31), (0, 10)):
        m = (mult >= lo) & (mult < hi)
        if len(np.unique(run[m])) >= 3:
            print(f"x{lo:.3g}-{hi:.3g} of the default: {m.sum()} rows in {len(np.unique(run[m]))} runs")
            report("real", run[m], lag[m], level[m], y[m])


def by_current_lr(paths):
    """Real walks (fixed-effects slope) and forked groups (branch minus its no-op sibling, through the
    origin) by the LR in effect before the action, relative to the model's default: base LR multiplier
    x 10^log_lr. Forks act from a smooth schedule, near or below the configured LR; walks wander."""
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.trajectories import load_dir

    traj = load_dir(paths, DEFAULT_SPEC)
    li = DEFAULT_SPEC.index("log_lr")
    cur = lambda r, k: traj.meta[r].get("base_lr_mult", np.nan) * 10 ** traj.obs[r, k, li]  # noqa: E731
    rows, x, y = R.action_rows(traj)
    run = np.array([r for r, _ in rows])
    wcur = np.array([cur(r, k) for r, k in rows])
    fr, fx, fy = R.fork_contrasts(traj)
    fcur = np.array([cur(r, k) for r, k, _ in fr])
    print(f"{len(rows)} random-walk rows ({len(np.unique(run))} runs), {len(fr)} forked branches; per doubling, "
          "by the LR in effect before the action / the model's default")
    print("| LR in effect / default | walks: rows (runs) | walks: fixed-effects slope | forks: branches | forks: paired |")
    print("|---|---|---|---|---|")
    for lo, hi in BANDS:
        m, f = (wcur >= lo) & (wcur < hi), (fcur >= lo) & (fcur < hi)
        walk = fmt(*R.fe_slope(run[m], x[m], y[m])) if len(np.unique(run[m])) >= 3 and m.sum() > len(np.unique(run[m])) + 2 else "-"
        fork = fmt(*R.origin_slope(fx[f], fy[f])) if f.sum() >= 3 else "-"
        print(f"| x{lo:.3g}-{hi:.3g} | {m.sum()} ({len(np.unique(run[m]))}) | {walk} | {f.sum()} | {fork} |")


def with_simulator(ckpt, samples):
    from _load import load, walks

    ck, env, full, ho, tr = load(ckpt)
    print(f"checkpoint {ckpt}; data starter + collect/data/v2.parquet; {samples} samples")
    for name, idx in (("held-out", ho), ("training", tr)):
        w = walks(ck, env, full, idx, samples)
        traj, rows, x, y, run, params, key, sim = w.traj, w.rows, w.x, w.y, w.run, w.params, w.key, w.taken
        lag, level = design(traj, rows)
        print(f"{name}: {len(rows)} rows in {len(np.unique(run))} random walks "
              f"(the actions' autocorrelation at lag 1: {np.corrcoef(lag[:, 0], lag[:, 1])[0, 1]:.2f})")
        report("real", run, lag, level, y)
        report("simulated", run, lag, level, sim)
        forced = R.forced_next(env, params, traj, rows, samples, key)
        paired = (forced[2.0] - forced[0.5]) / 2
        li = ck.spec.index("log_lr")
        cur = np.array([traj.meta[r].get("base_lr_mult", np.nan) * 10 ** traj.obs[r, k, li] for r, k in rows])
        print("  | LR in effect / default | rows (runs) | real slope | simulated slope | simulated paired (halving; doubling) |")
        print("  |---|---|---|---|---|")
        for lo, hi in BANDS:
            m = (cur >= lo) & (cur < hi)
            ok = len(np.unique(run[m])) >= 3 and m.sum() > len(np.unique(run[m])) + 2
            slope = (lambda v: fmt(*R.fe_slope(run[m], x[m], v[m])) if ok else "-")  # noqa: E731
            half, dbl = (forced[a][m] - forced[1.0][m] for a in (0.5, 2.0))
            print(f"  | x{lo:.3g}-{hi:.3g} | {m.sum()} ({len(np.unique(run[m]))}) | {slope(y)} | {slope(sim)} | "
                  + (f"{fmt(paired[m].mean(), paired[m].std(ddof=1) / np.sqrt(m.sum()))} ({half.mean():+.4f}; {dbl.mean():+.4f}) |"
                     if m.sum() > 1 else "- |"))
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "--real":
        real_only(sys.argv[2:])
    elif sys.argv[1] == "--current":
        by_current_lr(sys.argv[2:])
    else:
        with_simulator(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
