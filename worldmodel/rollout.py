"""The level term refit on the simulator's own rollouts (`lrpilot worldmodel fit-rollout`).

Every term of the linear correction (`correction.py`) is fit one step ahead: on the transformer's expected next
val from a real history. A policy, and the fidelity yardstick, see something else: a whole run simulated from its
first observation, 20 steps compounding. There the shipped simulator ranks a group's runs at 0.71 Spearman
against a real-vs-real ceiling of 0.88 (results/noise_ceiling/), and its within-group errors line up with where
the LR was: above the action term's kink and far below it (results/rollout_fit/).

This module moves psi's weights (the level terms, applied at every step) by d, fit on rollouts: for training
groups, each run is simulated from observation 1 under its real actions (`fidelity.sim_final`, median of the
samples, common keys), and a pairwise logistic regression (Bradley-Terry) asks which of two groupmates ends
higher from the difference of their simulated final vals (slope s, free) and of psi summed over the decisions
the simulator takes (Psi, (R, n_psi)):

    P(real_i > real_j) = sigmoid(s (sim_i - sim_j) + c . (Psi_i - Psi_j)),   d = c / s   (normalised val per step)

so that sim + d . Psi ranks the groups' runs as the real ones (a scale-free, outlier-robust criterion; least
squares on the final vals is led by diverged runs). psi depends only on the LR path and the progress, which the
real actions fix, so Psi is exact; what the transformer does with the corrected vals it reads on is not in the
first-order fit, so `rounds` > 1 re-simulates with the moved weights and fits what is left (d accumulates).
More level columns can join first (`extended`: "kinks" -> "kinks_v", a V about the collected runs' default LR, at
weight 0, then fit here with the rest).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np

from lrpilot.io import atomic_path
from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel import fidelity
from lrpilot.worldmodel.correction import ActionTerms, layout, log_base, log_params, psi_centre

L2 = 1.0  # ridge on c (logistic units; the slope s is not penalised)


def psi_sums(traj: Trajectories, terms: ActionTerms) -> np.ndarray:
    """(R, n_psi) psi summed over the decisions k = 0 .. length - 2 a simulation from observation 1 takes (each
    run's real LR path and progress; psi reads nothing else)."""
    if not terms.level:
        raise ValueError("fit-rollout: the action term has no level terms (psi) to move (action_level)")
    sp, n = traj.spec, traj.actions.shape[1]
    a = np.log2(np.asarray(sp.actions))[np.clip(traj.actions, 0, None)]
    lp = log_params(traj)[:, None].astype(np.float64)
    cols = terms.features(sp, a, traj.obs[:, :n].astype(np.float64), log_base(traj)[:, None].astype(np.float64), lp)
    taken = np.arange(n)[None, :] < (traj.length[:, None] - 1)
    return (cols[..., terms.n_phi:] * taken[..., None]).sum(1)


def pairs(sim_R: np.ndarray, psi_RxC: np.ndarray, real_R: np.ndarray, grps) -> tuple[np.ndarray, np.ndarray]:
    """Rows (pairs, 1 + C) [sim_i - sim_j, Psi_i - Psi_j] and labels (pairs,) real_i > real_j over the pairs of each
    group's runs that end apart (ties and non-finite simulations left out)."""
    X, y = [], []
    for g in grps:
        i, j = np.triu_indices(len(g), 1)
        i, j = g[i], g[j]
        ok = (real_R[i] != real_R[j]) & np.isfinite(sim_R[i] - sim_R[j])
        X.append(np.concatenate([(sim_R[i] - sim_R[j])[:, None], psi_RxC[i] - psi_RxC[j]], 1)[ok])
        y.append((real_R[i] > real_R[j])[ok].astype(np.float64))
    return np.concatenate(X), np.concatenate(y)


def fit_pairs(X: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 100) -> np.ndarray:
    """(1 + C,) [s, c] maximising the pairwise logistic likelihood minus l2/2 |c|^2 (Newton, from s = 1, c = 0)."""
    if len(y) < 2 or y.min() == y.max():
        raise ValueError(f"fit-rollout: {len(y)} pairs of groupmates that end apart: too few to fit on")
    pen = np.r_[0.0, np.full(X.shape[1] - 1, l2)]
    w = np.r_[1.0, np.zeros(X.shape[1] - 1)]
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
        H = (X * (p * (1 - p))[:, None]).T @ X + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, X.T @ (p - y) + pen * w)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return w


def delta(sim_R: np.ndarray, psi_RxC: np.ndarray, real_R: np.ndarray, grps, l2: float = L2) -> np.ndarray:
    """(C,) d = c / s: psi's weights moved so that sim + d . Psi ranks the groups' runs as the real ones; refuses
    a fit whose slope on the simulation is not positive (the simulation then tells the wrong order)."""
    w = fit_pairs(*pairs(sim_R, psi_RxC, real_R, grps), l2)
    if w[0] <= 0:
        raise ValueError(f"fit-rollout: the simulated final vals order the training groups' pairs the wrong way "
                         f"(slope {w[0]:.3g}); a level term cannot be read off them")
    return w[1:] / w[0]


def moved(wm_params: dict, terms: ActionTerms, d: np.ndarray, psi_mean: np.ndarray) -> dict:
    """The parameters with psi's weights (every member's) moved by d and b by -d . psi_mean, so that the term stays
    centred on the training decisions."""
    lin = jax.tree.map(np.asarray, wm_params["action_linear"])
    terms = layout(terms, lin["w"])
    w = lin["w"].copy()
    w[..., terms.n_phi:] += d
    return {**wm_params, "action_linear": {"w": w, "b": lin["b"] - float(d @ psi_mean)}}


def out_of_fold(sim_R: np.ndarray, psi_RxC: np.ndarray, real_R: np.ndarray, grps, l2: float = L2,
                folds: int = 5) -> np.ndarray:
    """(R,) sim + Psi . d for the runs of `grps`, each group's d fit on the other folds' groups (group g in fold
    g mod folds); NaN elsewhere."""
    score = np.full(len(real_R), np.nan)
    for f in range(min(folds, len(grps))):
        d = delta(sim_R, psi_RxC, real_R, [g for i, g in enumerate(grps) if i % folds != f], l2)
        for g in grps[f::folds]:
            score[g] = sim_R[g] + psi_RxC[g] @ d
    return score


def cross_validated(sim_R: np.ndarray, psi_RxC: np.ndarray, real_R: np.ndarray, grps, l2: float = L2,
                    folds: int = 5) -> float:
    """Mean within-group Spearman of the out-of-fold scores (`out_of_fold`): what the fit buys on groups it did not see."""
    return spearman(out_of_fold(sim_R, psi_RxC, real_R, grps, l2, folds), real_R, grps)


def extended(wm_params: dict, terms: ActionTerms, wider: ActionTerms) -> dict:
    """The parameters with the level columns `wider` adds to `terms` (its columns must start with all of terms')
    appended at weight 0 (every member): the same simulator, ready for `fit` to move the new columns too."""
    old, new = terms.names(), wider.names()
    if new[: len(old)] != old:
        raise ValueError(f"fit-rollout: level terms {wider.level_terms} do not extend the checkpoint's "
                         f"{terms.level_terms} (columns {list(old)} then more, got {list(new)})")
    lin = jax.tree.map(np.asarray, wm_params["action_linear"])
    pad = np.zeros((*lin["w"].shape[:-1], len(new) - len(old)), lin["w"].dtype)
    return {**wm_params, "action_linear": {"w": np.concatenate([lin["w"], pad], -1), "b": lin["b"]}}


def spearman(score_R: np.ndarray, real_R: np.ndarray, grps) -> float:
    """Mean within-group Spearman of score against real (NaN where no group has one)."""
    m = fidelity.within_group(score_R, real_R, grps)["mean"]
    return float("nan") if m is None else m


def simulate(env, wm_params: dict, traj: Trajectories, grps, samples: int, key, state=None, chunk: int = 10,
             log=print) -> np.ndarray:
    """(R,) the median of `samples` simulated final vals of each run in `grps` from observation 1 under its real
    actions (NaN for the others). With `state` (a file path) it is resumable: every `chunk` groups the medians so far
    are written there atomically, and a rerun with the same runs, parameters, samples and key goes on from them (a
    group's runs simulate as they would among all: common keys, `fidelity.sim_final`)."""
    tag = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in (*jax.tree.leaves(wm_params),
                                                                      np.asarray(jax.random.key_data(key)), np.int64(samples)))).hexdigest()
    med, done = np.full(len(traj), np.nan), 0
    if state is not None and Path(state).exists():
        z = np.load(state)
        if str(z["tag"]) == tag and list(z["files"]) == list(traj.files):
            med, done = z["med"], int(z["done"])
            log(f"[worldmodel] rollout fit: {done} of {len(grps)} groups simulated before, going on ({state})")
    for c in range(done, len(grps), chunk):
        idx = np.concatenate(grps[c : c + chunk])
        t = traj.subset(idx)
        med[idx] = np.nanmedian(fidelity.sim_final(env, env.params(wm_params, t, max_prefix=1), t, samples, key), 1)
        if state is not None:
            with atomic_path(state) as tmp, open(tmp, "wb") as f:
                np.savez(f, med=med, done=min(c + chunk, len(grps)), tag=tag, files=np.array(traj.files))
    return med


def fit(env, wm_params: dict, terms: ActionTerms, train: Trajectories, samples: int, key, rounds: int = 1,
        l2: float = L2, state=None, log=print) -> tuple[dict, list[dict]]:
    """Parameters with psi moved by the rollout fit on the groups of `train` (`rounds` fits, each on a fresh
    simulation with the weights so far), and one record per round: d, the Spearman of the simulation it was fit on,
    that of its first-order prediction (sim + d . Psi) and the same with d fit on other groups (5 folds; >= 10 groups).
    With `state` (a directory) each round's simulation is resumable (`simulate`)."""
    grps = fidelity.groups(train)
    if not grps:
        raise ValueError("fit-rollout: no group of >= 3 runs that share a task and configuration in the training data")
    psi, real, mu = psi_sums(train, terms), fidelity.final_val(train), psi_centre(terms, train)
    params, history = wm_params, []
    for r in range(rounds):
        sim = simulate(env, params, train, grps, samples, key, None if state is None else Path(state) / f"round_{r}.npz",
                       log=log)
        d = delta(sim, psi, real, grps, l2)
        history.append({"round": r, "delta": d.tolist(), "spearman_sim": spearman(sim, real, grps),
                        "spearman_first_order": spearman(sim + psi @ d, real, grps),
                        "spearman_first_order_cv": cross_validated(sim, psi, real, grps, l2) if len(grps) >= 10 else None})
        h = history[-1]
        log(f"[worldmodel] rollout fit, round {r}: {len(grps)} groups, Spearman {h['spearman_sim']:.3f} -> "
            f"{h['spearman_first_order']:.3f} (first order; {h['spearman_first_order_cv'] or float('nan'):.3f} fit on other "
            f"groups, 5 folds), psi moved by {np.round(d, 5).tolist()}")
        params = moved(params, terms, d, mu)
    return params, history
