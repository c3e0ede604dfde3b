"""A one-step baseline simulator: what a simple model of the dynamics ranks, beside the world model.

A ridge least-squares model of the change of val and of train over one interval,

    (val, train)_{k+1} - (val, train)_k = W^T z(obs_k, val_{k-1}, run context, a_k)

z: 1, the state (progress, log LR relative and absolute, val, train, the last change of val),
the run's context (spec v2+), the action's log2 factor a, and a times each of progress, log LR,
log absolute LR, val, train, and a^2 (`correction.action_features`), standardised. Fit on every
decision k >= 0 of the training runs that did not diverge into k + 1; rolled out from prefix 1
(observation 0 only) under each run's real actions, deterministically, val and train kept in
(0.05, the divergence ratio). fidelity's `onestep_spearman` and `onestep_final_val_mae` are its
within-group ranking and error on the same runs as the world model's: a world model that ranks
worse than it has not learned what a linear model of one step learns from the same runs.
"""

from __future__ import annotations

import numpy as np

from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.correction import RIDGE, action_features, log_base

FLOOR = 0.05


def _design(spec, obs_RxF, prev_val_R, log_base_R, static_RxS, a_R) -> np.ndarray:
    vi, li = spec.index("val"), spec.index("log_lr")
    state = [np.ones(len(obs_RxF)), obs_RxF[:, spec.index("progress")], obs_RxF[:, li], obs_RxF[:, li] + log_base_R,
             obs_RxF[:, vi], obs_RxF[:, spec.index("train")], obs_RxF[:, vi] - prev_val_R]
    return np.concatenate([np.stack(state, 1), static_RxS, action_features(spec, a_R, obs_RxF, log_base_R)], 1)


def _context(traj: Trajectories) -> np.ndarray:
    return traj.static.astype(np.float64) if traj.static is not None else np.zeros((len(traj), 0))


def fit(train: Trajectories) -> dict:
    """The baseline's standardisation and weights {"mu", "sd", "W" (Z, 2)} from the training runs."""
    sp = train.spec
    vi, ti, ratio = sp.index("val"), sp.index("train"), sp.divergence_ratio
    r, k = np.nonzero((np.arange(sp.n_decisions)[None] < train.length[:, None] - 1) & (train.actions >= 0))
    ok = train.obs[r, k + 1, vi] < ratio
    r, k = r[ok], k[ok]
    if len(r) < 10:
        raise ValueError(f"one-step baseline: {len(r)} training decisions, need at least 10")
    o = train.obs[r, k].astype(np.float64)
    a = np.log2(np.asarray(sp.actions))[train.actions[r, k]]
    X = _design(sp, o, train.obs[r, np.maximum(k - 1, 0), vi], log_base(train)[r], _context(train)[r], a)
    mu, sd = X.mean(0), X.std(0)
    mu[0], sd[0] = 0.0, 1.0  # the intercept stays
    sd[sd < 1e-9] = 1.0
    Z = (X - mu) / sd
    Y = np.stack([train.obs[r, k + 1, f] - train.obs[r, k, f] for f in (vi, ti)], 1).astype(np.float64)
    W = np.linalg.solve(Z.T @ Z + RIDGE * len(Z) * np.eye(Z.shape[1]), Z.T @ Y)
    return {"mu": mu, "sd": sd, "W": W}


def final_val(model: dict, traj: Trajectories) -> np.ndarray:
    """(R,) the baseline's final normalised val from prefix 1 under each run's real actions."""
    sp = traj.spec
    vi, ti, n = sp.index("val"), sp.index("train"), sp.n_decisions
    log2f = np.log2(np.asarray(sp.actions))
    o = traj.obs[:, 0].astype(np.float64).copy()
    prev, lb, ctx = o[:, vi].copy(), log_base(traj), _context(traj)
    final = o[:, vi].copy()
    det = [j for j, f in enumerate(sp.fields) if f.deterministic]  # progress and the LR: the real actions'
    for k in range(n):
        live = k < traj.length - 1
        z = (_design(sp, o, prev, lb, ctx, log2f[np.maximum(traj.actions[:, k], 0)]) - model["mu"]) / model["sd"]
        d = z @ model["W"]
        nxt = o.copy()
        nxt[:, vi] = np.clip(o[:, vi] + d[:, 0], FLOOR, sp.divergence_ratio)
        nxt[:, ti] = np.clip(o[:, ti] + d[:, 1], FLOOR, sp.divergence_ratio)
        nxt[:, det] = traj.obs[:, min(k + 1, n)][:, det]
        prev = np.where(live, o[:, vi], prev)
        o = np.where(live[:, None], nxt, o)
        final = np.where(live, o[:, vi], final)
    return final
