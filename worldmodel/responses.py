"""The simulator's one-step response to LR actions, against real runs' (the action-effect and fork-effect
fields of `fidelity`): the rows that measure it (random-walk decisions in the second half, forked
branches with their no-op sibling), the mean simulated next val from a real prefix under the real or
a forced action, the paired response to halving and doubling, the forked groups' effect.

All in normalised val (val / val0); an action's size in doublings (log2 of its LR factor).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.collect.edges import Fork
from lrpilot.trajectories import Trajectories, group_key
from lrpilot.worldmodel.correction import within_runs
from lrpilot.worldmodel.env import SimEnv, per_member

CHUNK = 64  # rows or runs simulated together (x samples episodes)


def action_rows(traj: Trajectories):
    """(run, k) rows of random-walk runs at decisions k >= n/2 with an observation k + 1, the LR
    change of their action in doublings (log2 factor) and the real change of val."""
    vi, n = traj.spec.index("val"), traj.spec.n_decisions
    log2f = np.log2(np.asarray(traj.spec.actions))
    rows = [(r, k) for r, m in enumerate(traj.meta) if m["controller"]["name"] == "random_walk"
            for k in range(n // 2, traj.length[r] - 1)]
    x = np.array([log2f[traj.actions[r, k]] for r, k in rows])
    y = np.array([traj.obs[r, k + 1, vi] - traj.obs[r, k, vi] for r, k in rows], float)
    return rows, x, y


def fe_slope(run: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x with a fixed effect per run, and its standard error."""
    xd, yd = within_runs(run, x.astype(float)), within_runs(run, y.astype(float))
    b = float(xd @ yd / (xd @ xd))
    resid = yd - b * xd
    dof = max(len(y) - 1 - len(np.unique(run)), 1)
    return b, float(math.sqrt(resid @ resid / dof / (xd @ xd)))


def sim_next(env: SimEnv, params, traj: Trajectories, rows, n_samples: int, key) -> np.ndarray:
    """(rows,) mean simulated val at k + 1 from the real prefix 0..k under the real action k: the
    mean over samples of the step's expected val (`info["mean_val"]`)."""
    n = env.spec.n_decisions
    acts = jnp.asarray(np.maximum(traj.actions, 0))
    r, k = np.array([r for r, _ in rows]), np.array([k for _, k in rows])

    def member(env, params, n_samples, key):
        def one(r, k, kk):
            _, st = env.reset_to(params, r, k + 1, n)
            *_, info = env.step(kk, st, acts[r, k], params)
            return info["mean_val"]

        f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, 0)))
        keys = jax.random.split(key, len(rows) * n_samples).reshape(len(rows), n_samples)
        return np.concatenate([np.asarray(f(jnp.asarray(r[j : j + CHUNK]), jnp.asarray(k[j : j + CHUNK]), keys[j : j + CHUNK]))
                               for j in range(0, len(rows), CHUNK)])

    return per_member(env, params, n_samples, key, member).mean(1)


def forced_next(env: SimEnv, params, traj: Trajectories, rows, n_samples: int, key, factors=(0.5, 1.0, 2.0)) -> dict | None:
    """{factor: (rows,) mean simulated val at k + 1 from the real prefix 0..k of each (run, k) in `rows` under
    that LR factor instead of action k} (common keys); None without rows or one of the factors."""
    acts = [float(a) for a in traj.spec.actions]
    if not rows or not set(factors) <= set(acts):
        return None
    r, k = (np.array(v) for v in zip(*rows))
    sim = {}
    for a in factors:
        forced = traj.actions.copy()
        forced[r, k] = acts.index(a)
        sim[a] = sim_next(env, params, dataclasses.replace(traj, actions=forced), rows, n_samples, key)
    return sim


def paired_walk_response(env: SimEnv, params, traj: Trajectories, rows, n_samples: int, key) -> dict | None:
    """The simulator's response to halving / doubling at the rows `rows` ((run, k)), each against the no-op
    from the same real prefix (`forced_next`): {"halving", "doubling": mean difference in normalised val,
    "per_doubling": mean of (doubling - halving) / 2, "per_doubling_stderr", "n_rows"}; None as forced_next."""
    sim = forced_next(env, params, traj, rows, n_samples, key)
    if sim is None:  # no rows, or the spec lacks a factor
        return None
    d = (sim[2.0] - sim[0.5]) / 2
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"halving": float(np.mean(sim[0.5] - sim[1.0])), "doubling": float(np.mean(sim[2.0] - sim[1.0])),
            "per_doubling": float(d.mean()), "per_doubling_stderr": se, "n_rows": len(rows)}


def fork_rows(traj: Trajectories):
    """(run, k, noop run) of the branches of forked groups that took a non-no-op action at their fork
    k and have an observation k + 1, with the no-op branch of the same group."""
    by: dict = {}
    for r, (m, f) in enumerate(zip(traj.meta, traj.files)):
        c = m.get("controller", {})
        if c.get("name") == Fork.name and c.get("action") is not None and traj.length[r] > c["at"] + 1:
            by.setdefault(group_key(m, f), {})[c["action"]] = (r, c["at"])
    noop = traj.spec.noop_action
    return [(r, k, g[noop][0]) for g in by.values() if noop in g for a, (r, k) in g.items() if a != noop]


def fork_contrasts(traj: Trajectories):
    """`fork_rows`, each branch's action in doublings (log2 of its LR factor) and the real next val less
    its no-op sibling's: rows, x (rows,), y (rows,)."""
    rows, vi = fork_rows(traj), traj.spec.index("val")
    x = np.log2(np.asarray(traj.spec.actions)[[traj.actions[r, k] for r, k, _ in rows]])
    y = np.array([traj.obs[r, k + 1, vi] - traj.obs[o, k + 1, vi] for r, k, o in rows], float)
    return rows, x, y


def origin_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x through the origin (no action, no effect) and its standard error
    from the residuals."""
    b = float(x @ y / (x @ x))
    return b, float(np.sqrt(((y - b * x) ** 2).sum() / (len(x) - 1) / (x @ x)))


def fork_effect(env: SimEnv, params, traj: Trajectories, n_samples: int, key) -> dict:
    """The fork_effect field (module docstring); n_rows = 0 and None values without forked groups."""
    rows, x, real = fork_contrasts(traj)
    out = {"real": None, "sim": None, "ratio": None, "corr": None, "n_rows": len(rows), "n_groups": len({o for *_, o in rows})}
    if len(rows) < 3:
        return out
    both = [(r, k) for r, k, _ in rows] + [(o, k) for _, k, o in rows]
    nxt = sim_next(env, params, traj, both, n_samples, key)
    sim = nxt[: len(rows)] - nxt[len(rows) :]
    b_real, b_sim = origin_slope(x, real)[0], origin_slope(x, sim)[0]
    out.update(real=b_real, sim=b_sim, ratio=b_sim / b_real if b_real else None,
               corr=float(np.corrcoef(sim, real)[0, 1]) if sim.std() > 0 and real.std() > 0 else None)
    return out
