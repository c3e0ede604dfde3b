"""The simulator's fidelity: how well the world model, used as an environment, judges LR actions.

"Groups" are runs that share a task and a model config and differ in their LR actions (one
collection group). All values are normalised val (val / the run's initial val); a diverged run's
final value is the spec's divergence ratio.

* within_group_spearman: from prefix 1 (the first observation only) under each run's real
  actions, the median of `samples` simulated final vals against the real final val, ranked
  within each group (groups of >= 3 runs, forked groups excepted: see `groups`); mean and
  standard error over groups. Sample m of every run draws the same keys (`common_keys`: common
  random numbers; the simulator samples by inverse CDF, so the same keys give the same quantiles
  and a group's simulated runs differ by their actions, not by independent sampling noise).
* regression_spearman: the same ranking from a least-squares fit of the final val on the run's
  LR trajectory (mean log LR in each quarter of the run and the last one: 5 coefficients), fit on
  the training runs: what the LR schedule alone tells.
* final_val_mae (from prefix 1) beside final_val_mae_train_mean (predicting the training runs'
  mean final val for every run).
* onestep_spearman, onestep_final_val_mae: the same ranking and error for a ridge one-step model
  of the dynamics rolled out the same way (`onestep.py`): what a linear model of one step learns.
* action_effect: the effect on the next val of halving the LR, at decisions k >= n/2, as the
  slope of the change in val on the action's LR change in doublings (log2 of its factor),
  times -1, with run fixed effects, on random-walk runs (their actions do not depend on the
  state). Real: the real next vals. Simulated: the same regression on the world model's mean
  next val from the same real prefixes under the same actions. ratio = sim / real. linear_ratio:
  the same ratio for a least-squares one-step model of the change of val (state, action, their
  products) fit on the training runs: what the data teach a simple model. (Within a run, a random
  walk's LR level, less its run mean, falls as the step's increment rises, so the slope also
  carries the change's dependence on the LR level; it does so alike for real, simulated and
  linear changes.) paired: the simulator's own response inside those walks, paired as in forked
  groups: from each row's real prefix, the mean simulated next val under halving and doubling
  minus under the no-op, whatever the run did (`responses.paired_walk_response`); the slope above mixes it
  with how the walk's recent actions (an action repeats the last with probability up to 0.8)
  play out next.
* spread (ensembles only): does the members' disagreement flag the simulator's errors?
  `spread_vs_error`.
* high_lr_cost: final val of runs that held >= 30x their base LR through the second half minus
  their groupmates held within 0.5-2x, averaged over groups that have both; real and simulated
  (from prefix 1); ratio = sim / real; n_groups, the groups that have both, and the standard error of
  each mean over them.
* ratio_ci95 (action_effect, high_lr_cost) and real_ci95 (action_effect): 95% percentile intervals
  over resamples of whole groups (`group_bootstrap`): a ratio's noise comes from its real reference
  as much as from the simulator, and held-out references rest on a few groups.
* fork_effect (`responses.fork_effect`; forked groups, `collect.edges.Fork`: one seed and one history up to the fork,
  then one action per branch): the next val of each branch minus the no-op branch's, against
  the action's LR change in doublings; the slope per doubling (real: noise-free, the branches
  share everything but the action; simulated: the mean next val from the shared real prefix),
  ratio = sim / real, and the correlation of the simulated with the real differences.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.collect.edges import Fork
from lrpilot.trajectories import Trajectories, group_key
from lrpilot.worldmodel import onestep
from lrpilot.worldmodel.correction import ridge
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.forecast import sample_futures
from lrpilot.worldmodel.responses import CHUNK, action_rows, fe_slope, fork_effect, paired_walk_response, sim_next

HIGH_LR, MID_LR = 30.0, (0.5, 2.0)
N_BOOT = 1000  # resamples of whole groups behind each 95% interval


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties averaged."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def within_group(score_R, real_R, grps) -> dict:
    """mean_se over `grps` (index arrays into the R runs) of each group's Spearman of score against real."""
    return mean_se([spearman(score_R[g], real_R[g]) for g in grps])


def groups(traj: Trajectories, min_size: int = 3) -> list[np.ndarray]:
    """Run indices of each group of >= min_size runs, forked groups left out: their runs share one
    history up to the fork, so ranking them from prefix 1 measures the simulator's sampling noise;
    fork_effect judges them from the shared prefix instead."""
    by: dict = {}
    for i, (m, f) in enumerate(zip(traj.meta, traj.files)):
        if m.get("controller", {}).get("name") != Fork.name:
            by.setdefault(group_key(m, f), []).append(i)
    return [np.array(v) for v in by.values() if len(v) >= min_size]


def final_val(traj: Trajectories) -> np.ndarray:
    return traj.obs[np.arange(len(traj)), traj.length - 1, traj.spec.index("val")].astype(np.float64)


def lr_features(traj: Trajectories) -> np.ndarray:
    """(R, 6): mean log10(LR / base) over each quarter of the run, the last interval's, and 1."""
    li, n = traj.spec.index("log_lr"), traj.spec.n_decisions
    log_lr = traj.obs[:, 1:, li].astype(np.float64)  # obs k's log_lr: the LR of interval k-1 (k = 1..n)
    q = np.array_split(np.arange(n), 4)
    cols = [log_lr[:, idx].mean(1) for idx in q] + [log_lr[:, -1], np.ones(len(traj))]
    return np.stack(cols, axis=1)


def mean_se(xs) -> dict:
    """{"mean", "stderr", "n"} of the finite values of xs (None where there are too few)."""
    xs = [x for x in xs if np.isfinite(x)]
    if not xs:
        return {"mean": None, "stderr": None, "n": 0}
    return {"mean": float(np.mean(xs)), "stderr": float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else None,
            "n": len(xs)}


def sim_final(env: SimEnv, params, traj: Trajectories, n_samples: int, key, common: bool = True) -> np.ndarray:
    """(R, M) simulated final normalised val from prefix 1 under each run's real actions; sample m of
    every run draws the same keys (common random numbers, `forecast.sample_futures`), so that a
    group's runs, which differ in their actions, are compared under the same simulator noise (the
    real runs of a group each have their own seed; only forked groups share one). `common=False`:
    each run its own keys (the draws before 2026-12-05: results/sim_noise)."""
    n, out = env.spec.n_decisions, []
    for j, start in enumerate(range(0, len(traj), CHUNK)):  # a bounded number of simulated episodes at once
        runs = np.arange(start, min(start + CHUNK, len(traj)))
        k = key if common else jax.random.fold_in(key, j)
        vals = sample_futures(env, params, traj, runs, 1, n, n_samples, k, common=common)  # (r, M, n): obs 1..n
        out.append(vals[np.arange(len(runs)), :, traj.length[runs] - 2])
    return np.concatenate(out)


def _one_step_features(traj: Trajectories, rows) -> np.ndarray:
    """(rows, 18) features of decision (run, k) for the one-step linear baseline: the state (progress,
    log LR, val, train, last change of val, the run's context where the spec has it) and the
    action's log2 factor alone and times each state feature but the context."""
    sp = traj.spec
    o = traj.obs.astype(np.float64)
    st = traj.static.astype(np.float64) if traj.static is not None else np.zeros((len(traj), 4))
    r, k = np.array([r for r, _ in rows], int), np.array([k for _, k in rows], int)
    vi, ti, li, pi = (sp.index(f) for f in ("val", "train", "log_lr", "progress"))
    state = np.stack([o[r, k, pi], o[r, k, li], o[r, k, li] + st[r, 0], o[r, k, vi], o[r, k, ti],
                      o[r, k, vi] - o[r, np.maximum(k - 1, 0), vi]], 1)
    a = np.log2(np.asarray(sp.actions))[traj.actions[r, k]][:, None]
    return np.concatenate([np.ones((len(r), 1)), state, st[r], a, a * state, a * a], 1)


def linear_action_ratio(traj: Trajectories, train_traj: Trajectories) -> float | None:
    """The action-effect ratio of a (ridge) least-squares one-step model of the change of val, fit on every
    decision k >= 1 of the training runs (not diverged into): what a simple model with the action
    and its interactions learns from the same data. None without random-walk rows."""
    rows, x, y = action_rows(traj)
    vi, ratio = train_traj.spec.index("val"), train_traj.spec.divergence_ratio
    fit = [(r, k) for r in range(len(train_traj)) for k in range(1, train_traj.length[r] - 1)
           if train_traj.actions[r, k] >= 0 and train_traj.obs[r, k + 1, vi] < ratio]
    if len(rows) < 10 or not fit or np.ptp(x) == 0:
        return None
    y_fit = np.array([train_traj.obs[r, k + 1, vi] - train_traj.obs[r, k, vi] for r, k in fit], float)
    X = _one_step_features(train_traj, fit)
    mu, sd, keep, w = ridge(X, y_fit)
    run = np.array([r for r, _ in rows])
    real, _ = fe_slope(run, x, y)
    lin, _ = fe_slope(run, x, ((_one_step_features(traj, rows)[:, keep] - mu[keep]) / sd[keep]) @ w)
    return lin / real if real else None


def spread_vs_error(env: SimEnv, params, traj: Trajectories, reps: int, key) -> dict:
    """An ensemble's spread against its error: `reps` episodes per run from prefix 1 under the real
    actions (member m % K for episode m), each episode's mean step spread (`info["spread"]`) against
    |simulated - real| final val. Spearman of the two, and the mean error of the episodes below and
    above the median spread."""
    n, vi = env.spec.n_decisions, env.spec.index("val")
    acts = jnp.asarray(np.maximum(traj.actions, 0))

    def one(r, m, key):
        _, st = env.reset_to(params, r, 1, 1, m)

        def body(st, xs):
            obs, st, *_, info = env.step(xs[0], st, acts[r, xs[1]], params)
            return st, (obs[vi], info["spread"])

        return jax.lax.scan(body, st, (jax.random.split(key, n), jnp.arange(n)))[1]

    f = jax.jit(jax.vmap(one))
    rr, mm = np.repeat(np.arange(len(traj)), reps), np.tile(np.arange(reps) % env.members, len(traj))
    parts = [f(jnp.asarray(rr[i : i + CHUNK]), jnp.asarray(mm[i : i + CHUNK]), jax.random.split(jax.random.fold_in(key, i), len(rr[i : i + CHUNK])))
             for i in range(0, len(rr), CHUNK)]
    v, sp = (np.concatenate([np.asarray(p[j]) for p in parts]) for j in (0, 1))
    last = traj.length[rr] - 2
    steps = np.arange(n)[None] <= last[:, None]
    spread = (sp * steps).sum(1) / steps.sum(1)
    err = np.abs(v[np.arange(len(rr)), last] - final_val(traj)[rr])
    low = spread <= np.median(spread)
    return {"episodes": int(len(rr)), "mean_spread": float(spread.mean()), "spearman_spread_error": spearman(spread, err),
            "error_low_spread": float(err[low].mean()), "error_high_spread": float(err[~low].mean()) if (~low).any() else None}


def group_bootstrap(cluster: np.ndarray, stat, n_boot: int = N_BOOT, seed: int = 0) -> list | None:
    """95% percentile interval [lo, hi] of `stat(rows, draw)` over `n_boot` resamples of whole clusters
    with replacement. cluster: (n,) each row's cluster id; stat gets the rows of the drawn clusters and
    each row's draw index (a cluster drawn twice appears as two draws) and returns a float, NaN where
    undefined (such resamples are dropped). None with fewer than 2 clusters or when more than half the
    resamples are undefined."""
    _, inv = np.unique(np.asarray(cluster), return_inverse=True)
    members = [np.flatnonzero(inv == c) for c in range(inv.max() + 1)] if len(inv) else []
    if len(members) < 2:
        return None
    sizes, rng, vals = np.array([len(m) for m in members]), np.random.default_rng(seed), []
    for _ in range(n_boot):
        pick = rng.integers(len(members), size=len(members))
        vals.append(stat(np.concatenate([members[c] for c in pick]), np.repeat(np.arange(len(pick)), sizes[pick])))
    vals = np.asarray(vals, float)
    vals = vals[np.isfinite(vals)]
    return None if len(vals) <= n_boot // 2 else [float(v) for v in np.percentile(vals, [2.5, 97.5])]


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def action_intervals(run: np.ndarray, cluster: np.ndarray, x: np.ndarray, y: np.ndarray, y_sim) -> dict:
    """real_ci95 (halving's effect) and ratio_ci95 over resampled groups; a run drawn twice is two runs."""
    runs = lambda rows, draw: run[rows] + draw * (run.max() + 1)  # noqa: E731

    def real(rows, draw):
        return -fe_slope(runs(rows, draw), x[rows], y[rows])[0]

    def ratio(rows, draw):
        r = runs(rows, draw)
        return _ratio(fe_slope(r, x[rows], y_sim[rows])[0], fe_slope(r, x[rows], y[rows])[0])

    out = {"real_ci95": group_bootstrap(cluster, real)}
    if y_sim is not None:
        out["ratio_ci95"] = group_bootstrap(cluster, ratio, seed=1)
    return out


def high_lr_diffs(traj: Trajectories, final: np.ndarray, grps) -> np.ndarray:
    """Per group that has both: mean final val of its runs held >= HIGH_LR x base through the second
    half minus its runs held within MID_LR."""
    li, n = traj.spec.index("log_lr"), traj.spec.n_decisions
    second = traj.obs[:, n // 2 + 1 :, li]
    high = (second >= math.log10(HIGH_LR) - 1e-6).all(1)
    mid = ((second >= math.log10(MID_LR[0]) - 1e-6) & (second <= math.log10(MID_LR[1]) + 1e-6)).all(1)
    return np.array([final[g][high[g]].mean() - final[g][mid[g]].mean() for g in grps if high[g].any() and mid[g].any()])


def high_lr_cost(traj: Trajectories, real: np.ndarray, sim: np.ndarray, grps) -> dict:
    """The high_lr_cost field: real and simulated cost, ratio, the groups behind them, standard errors and
    the ratio's interval over resampled groups."""
    dr, ds = high_lr_diffs(traj, real, grps), high_lr_diffs(traj, sim, grps)
    se = lambda d: float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None  # noqa: E731
    hr, hs = (float(dr.mean()), float(ds.mean())) if len(dr) else (None, None)
    ci = group_bootstrap(np.arange(len(dr)), lambda rows, _: _ratio(ds[rows].mean(), dr[rows].mean()))
    return {"real": hr, "sim": hs, "ratio": hs / hr if hr else None, "n_groups": len(dr), "real_stderr": se(dr),
            "sim_stderr": se(ds), "ratio_ci95": ci}


def eval_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """The fidelity section's keys for `seed`: (simulation from prefix 1, action effect); a script that simulates as
    the section does draws `eval_keys(seed)[0]`."""
    k_sim, k_eff = jax.random.split(jax.random.key(seed))
    return k_sim, k_eff


def fidelity(env: SimEnv, params, traj: Trajectories, train_traj: Trajectories, n_samples: int = 32, seed: int = 0,
             with_action_effect: bool = True) -> tuple[dict, dict]:
    """The fidelity section of forecast.json on `traj` (held-out or training runs), with the
    regression baseline fit on `train_traj`. Returns (section, per-run details for plots)."""
    spec = env.spec
    k_sim, k_eff = eval_keys(seed)
    real = final_val(traj)
    sim = sim_final(env, params, traj, n_samples, k_sim)
    sim_med = np.nanmedian(sim, axis=1)
    Xtr, ytr = lr_features(train_traj), final_val(train_traj)
    coef, *_ = np.linalg.lstsq(Xtr, ytr, rcond=None)
    reg = lr_features(traj) @ coef
    grps = groups(traj)
    out = {
        "n_groups": len(grps), "n_runs": int(sum(len(g) for g in grps)), "samples": n_samples, "common_keys": True,
        "within_group_spearman": within_group(sim_med, real, grps),
        "regression_spearman": within_group(reg, real, grps),
        "final_val_mae": float(np.mean(np.abs(sim_med - real))),
        "final_val_mae_train_mean": float(np.mean(np.abs(ytr.mean() - real))),
    }
    one = onestep.final_val(onestep.fit(train_traj), traj)  # the one-step linear baseline simulator (onestep.py)
    out.update(onestep_spearman=within_group(one, real, grps),
               onestep_final_val_mae=float(np.mean(np.abs(one - real))))
    rows, x, y = action_rows(traj)
    eff = {"real": None, "real_stderr": None, "sim": None, "sim_stderr": None, "ratio": None, "linear_ratio": None,
           "n_rows": len(rows), "real_ci95": None, "ratio_ci95": None}
    if len(rows) >= 10 and np.ptp(x) > 0:
        run = np.array([r for r, _ in rows])
        slope, se = fe_slope(run, x, y)
        eff.update(real=-slope, real_stderr=se)  # halving is -1 doubling
        y_sim = None
        if with_action_effect:
            vi = spec.index("val")
            y_sim = sim_next(env, params, traj, rows, n_samples, k_eff) - np.array([traj.obs[r, k, vi] for r, k in rows])
            s_slope, s_se = fe_slope(run, x, y_sim)
            eff.update(sim=-s_slope, sim_stderr=s_se, ratio=s_slope / slope if slope else None)
            eff["paired"] = paired_walk_response(env, params, traj, rows, n_samples, jax.random.fold_in(k_eff, 3))
        cluster = np.array([group_key(traj.meta[r], traj.files[r]) for r in run])
        eff.update(action_intervals(run, cluster, x, y, y_sim))
        eff["linear_ratio"] = linear_action_ratio(traj, train_traj)
    out["action_effect"] = eff
    out["high_lr_cost"] = high_lr_cost(traj, real, sim_med, grps)
    if with_action_effect:
        out["fork_effect"] = fork_effect(env, params, traj, n_samples, jax.random.fold_in(k_eff, 1))
    if env.members > 1:
        out["spread"] = spread_vs_error(env, params, traj, 4, jax.random.fold_in(k_eff, 2))
    return out, {"groups": grps, "real": real, "sim": sim_med, "regression": reg, "traj": traj}


def evaluate(model, wm_params, ser, heldout: Trajectories, train: Trajectories, n_samples: int = 32, seed: int = 0,
             log=print, sides: tuple[str, ...] = ("heldout", "train")) -> tuple[dict, dict]:
    """forecast.json's fidelity section: {"heldout": ..., "train": ...} (the sides asked for), and the held-out
    details. The regression and one-step baselines are fit on `train` whichever sides are measured."""
    if "heldout" not in sides or not set(sides) <= {"heldout", "train"}:
        raise ValueError(f"fidelity sides {sides!r}: expected 'heldout', optionally with 'train'")
    env = SimEnv(model, ser)
    out, details = {}, None
    for name, traj in (("heldout", heldout), ("train", train)):
        if name not in sides:
            continue
        params = env.params(wm_params, traj, max_prefix=1)
        out[name], d = fidelity(env, params, traj, train, n_samples, seed)
        details = d if name == "heldout" else details
        f = out[name]
        log(f"[fidelity] {name}: {f['n_groups']} groups, within-group Spearman "
            f"{_fmt(f['within_group_spearman'])} (LR regression {_fmt(f['regression_spearman'])}, one-step linear "
            f"{_fmt(f['onestep_spearman'])}); final-val MAE "
            f"{f['final_val_mae']:.4f} (train mean {f['final_val_mae_train_mean']:.4f}); action effect ratio "
            f"{_num(f['action_effect']['ratio'])}{fmt_interval(f['action_effect'].get('ratio_ci95'), '.3g')} (real {_num(f['action_effect']['real'])}, linear one-step model "
            f"{_num(f['action_effect']['linear_ratio'])}" + ("" if not f["action_effect"].get("paired") else
            f"; paired response inside the walks {_num(f['action_effect']['paired']['per_doubling'])} per doubling")
            + f"); high-LR cost ratio {_num(f['high_lr_cost']['ratio'])}{fmt_interval(f['high_lr_cost'].get('ratio_ci95'), '.3g')} "
            f"({f['high_lr_cost'].get('n_groups', 0)} groups); fork effect ratio {_num(f['fork_effect']['ratio'])} "
            f"(real {_num(f['fork_effect']['real'])} per doubling, {f['fork_effect']['n_rows']} branches, corr "
            f"{_num(f['fork_effect']['corr'])})" + ("" if "spread" not in f else
            f"; ensemble spread vs final error: Spearman {_num(f['spread']['spearman_spread_error'])}, error "
            f"{_num(f['spread']['error_low_spread'])} below / {_num(f['spread']['error_high_spread'])} above the median spread"))
    return out, details


def _fmt(d: dict) -> str:
    return "-" if d["mean"] is None else f"{d['mean']:.3f}" + (f" ± {d['stderr']:.3f}" if d["stderr"] else "")


def fmt_interval(ci, spec: str = ".2f") -> str:
    """' [lo, hi]' for an interval field (ratio_ci95, ...), '' for None."""
    return "" if not ci else f" [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


class Probe:
    """The within-group Spearman from prefix 1 on a fixed set of runs (e.g. the validation groups),
    as a function of the world model's parameters, jitted once: a selection criterion cheap enough
    to compute at every evaluation of a training run. `score(wm_params)` -> (mean Spearman, its
    standard error)."""

    def __init__(self, model, ser, traj: Trajectories, n_samples: int = 8, seed: int = 0):
        env = SimEnv(model, ser)
        self.grps, self.real = groups(traj), final_val(traj)
        if not self.grps:
            raise ValueError(f"fidelity selection: none of the {len(traj)} validation runs' groups has 3 runs or more "
                             "(forked groups do not count); use select=nll or more data")
        vi, n = env.spec.index("val"), env.spec.n_decisions
        base = env.params(None, traj, max_prefix=1)
        acts = jnp.asarray(np.maximum(traj.actions, 0))
        last = jnp.asarray(traj.length - 2)
        keys = jnp.broadcast_to(jax.random.split(jax.random.key(seed), n_samples)[None], (len(traj), n_samples))  # common

        def final(wm_params):
            ep = base.replace(wm_params=wm_params)

            def one(r, key):
                _, st = env.reset_to(ep, r, 1, 1)

                def body(st, xs):
                    kk, j = xs
                    obs, st, *_ = env.step(kk, st, acts[r, j], ep)
                    return st, obs[vi]

                _, vals = jax.lax.scan(body, st, (jax.random.split(key, n), jnp.arange(n)))
                return vals[last[r]]

            return jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, 0))(jnp.arange(len(traj)), keys)

        self._final = jax.jit(final)

    def score(self, wm_params) -> tuple[float, float | None]:
        sim = np.median(np.asarray(self._final(wm_params)), axis=1)
        s = within_group(sim, self.real, self.grps)
        return (s["mean"] if s["mean"] is not None else float("nan")), s["stderr"]
