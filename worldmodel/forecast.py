"""Forecasting validation loss on held-out runs: the world model against simple forecasters.

For a run, a context of c observations (obs_0..obs_{c-1}) and the real actions taken after
them, the world model samples M futures (digit by digit, under the real actions) and its
forecast for horizon h is the median sampled val at observation c-1+h, in nats (the
normalised val times the run's initial val loss). Baselines fit the context's val curve
only: last value, a linear fit of the last (up to) 5 points, and a power law
L(k) = a + b k**-alpha. `mae` is the mean absolute error against the real val loss.
`nll` is the teacher-forced negative log-likelihood (nats, summed over the observation's
stochastic digits) of the real observation c-1+h given the real sequence before it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.env import SimEnv, per_member
from lrpilot.worldmodel.model import WorldModel
from lrpilot.worldmodel.serialization import Serializer


def last_value(ctx: np.ndarray, h: int) -> float:
    return float(ctx[-1])


def linear(ctx: np.ndarray, h: int) -> float:
    y = ctx[-5:]
    if len(y) < 2:
        return float(y[-1])
    x = np.arange(len(y))
    slope, icpt = np.polyfit(x, y, 1)
    return float(icpt + slope * (len(y) - 1 + h))


def power_law(ctx: np.ndarray, h: int) -> float:
    """L(k) = a + b k**-alpha on points k >= 1 of the context; grid over a, least squares in log-log."""
    k = np.arange(1, len(ctx))
    y = ctx[1:]
    if len(y) < 2 or not np.all(np.isfinite(y)):
        return linear(ctx, h)
    best, best_err = None, np.inf
    for a in np.linspace(0.0, 0.999 * y.min(), 50):
        ly, lk = np.log(y - a), np.log(k)
        slope, icpt = np.polyfit(lk, ly, 1)
        err = np.sum((icpt + slope * lk - ly) ** 2)
        if err < best_err:
            best, best_err = (a, icpt, slope), err
    a, icpt, slope = best
    return float(a + math.exp(icpt + slope * math.log(len(ctx) - 1 + h)))


BASELINES = {"last_value": last_value, "linear": linear, "power_law": power_law}
RUNS_AT_ONCE = 64  # runs simulated (x samples episodes) or scored at once


def _chunked(f, *xs) -> np.ndarray:
    """f(*xs) on axis 0 in chunks of RUNS_AT_ONCE rows (the last padded by repeating its last row, so one
    compilation serves all), concatenated: episodes simulated (or sequences scored) at once stay
    bounded, and memory with them (each simulated episode holds the model's cache, n_layer x 2 x S x
    d_model floats: 1.8 MB at 6 x 192), whatever the number of runs; the same draws as one call."""
    n, size = len(xs[0]), RUNS_AT_ONCE
    if n <= size:
        return np.asarray(f(*xs))
    out = []
    for j in range(0, n, size):
        idx = np.minimum(np.arange(j, j + size), n - 1)
        out.append(np.asarray(f(*(x[idx] for x in xs)))[: min(size, n - j)])
    return np.concatenate(out)


def sample_futures(env: SimEnv, params, traj: Trajectories, runs: np.ndarray, context: int, horizon: int,
                   n_samples: int, key, common: bool = False) -> np.ndarray:
    """(len(runs), n_samples, horizon) sampled normalised val for observations context..context+horizon-1,
    under the real actions; NaN past the run's end. `common`: sample s of every run draws the same keys
    (common random numbers: with the simulator's inverse-CDF sampler, runs that differ only in their
    actions differ by their actions' effect, not by independent draws)."""
    vi = env.spec.index("val")
    acts = jnp.asarray(np.maximum(traj.actions, 0))

    def member(env, params, n_samples, key):
        def one(r, key):
            _, st = env.reset_to(params, r, context, context)

            def body(st, xs):
                k_step, j = xs
                a = acts[r, context - 1 + j]
                obs, st, *_ = env.step(k_step, st, a, params)
                return st, obs[vi]

            _, vals = jax.lax.scan(body, st, (jax.random.split(key, horizon), jnp.arange(horizon)))
            return vals

        f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, 0)))
        if common:
            keys = jnp.broadcast_to(jax.random.split(key, n_samples)[None], (len(runs), n_samples))
        else:
            keys = jax.random.split(key, len(runs) * n_samples).reshape(len(runs), n_samples)
        return _chunked(f, jnp.asarray(runs), keys)

    out = per_member(env, params, n_samples, key, member)  # an ensemble: each member its share of the samples
    valid = (context + np.arange(horizon))[None, :] < traj.length[runs][:, None]
    return np.where(valid[:, None, :], out, np.nan)


def teacher_forced_nll(model: WorldModel, wm_params, ser: Serializer, seq: np.ndarray) -> np.ndarray:
    """(R, n+1) NLL (nats) of each observation's stochastic digits given the real sequence before it;
    an ensemble's is its mixture's (the members' probabilities averaged)."""
    apply = lambda p, s: jax.nn.log_softmax(model.apply({"params": p}, s)[0][:, :-1].astype(jnp.float32), axis=-1)  # noqa: E731
    if model.cfg.ensemble == 1:
        f = jax.jit(apply)
    else:
        K = model.cfg.ensemble
        f = jax.jit(lambda p, s: jax.nn.logsumexp(jax.vmap(apply, in_axes=(0, None))(p, s), axis=0) - np.log(K))
    logp = _chunked(lambda s: f(wm_params, s), seq)
    tgt = np.clip(seq[:, 1:], 0, ser.base - 1)
    nll = -np.take_along_axis(np.asarray(logp), tgt[..., None], -1)[..., 0]  # (R, S-1)
    field, sig, step = ser.symbol_roles()
    stoch = np.array([f >= 0 and not ser.spec.fields[f].deterministic for f in field])
    out = np.zeros((seq.shape[0], ser.spec.n_decisions + 1))
    for pos in np.flatnonzero(stoch):
        if pos == 0:
            continue
        out[:, step[pos]] += nll[:, pos - 1]
    out[:, 0] = np.nan
    return out


def evaluate(model: WorldModel, wm_params, ser: Serializer, traj: Trajectories, contexts=(3, 5, 10),
             horizons=tuple(range(1, 11)), n_samples: int = 32, seed: int = 0, log=print) -> tuple[dict, dict]:
    """Forecast metrics on `traj` (held-out runs). Returns (forecast.json dict, samples for fan charts)."""
    env = SimEnv(model, ser)
    params = env.params(wm_params, traj, max_prefix=max(contexts), temperature=1.0)
    if len(params.seq) != len(traj):
        keep = traj.length >= 2
        traj = traj.subset(np.flatnonzero(keep))
    seq = ser.encode_episodes(traj.obs, traj.actions, traj.length, traj.static)
    nll = teacher_forced_nll(model, wm_params, ser, seq)
    val0 = traj.val_loss[:, 0]
    H = max(horizons)
    by_context, samples = {}, {}
    key = jax.random.key(seed)
    names = ["worldmodel", *BASELINES]
    for c in contexts:
        runs = np.flatnonzero(traj.length > c)
        key, sub = jax.random.split(key)
        vals = sample_futures(env, params, traj, runs, c, H, n_samples, sub)  # (r, M, H)
        samples[c] = (runs, vals)
        err = {n: [[] for _ in horizons] for n in names}
        nl = [[] for _ in horizons]
        for j, r in enumerate(runs):
            truth = traj.val_loss[r]
            ctx = truth[:c]
            for hi, h in enumerate(horizons):
                t = c - 1 + h
                if t >= traj.length[r] or not np.isfinite(truth[t]) or traj.obs[r, t, ser.spec.index("val")] >= ser.spec.divergence_ratio:
                    continue
                err["worldmodel"][hi].append(abs(np.nanmedian(vals[j, :, h - 1]) * val0[r] - truth[t]))
                for n, f in BASELINES.items():
                    err[n][hi].append(abs(f(ctx, h) - truth[t]))
                nl[hi].append(nll[r, t])
        by_context[str(c)] = {n: {"mae": [float(np.mean(e)) if e else None for e in err[n]],
                                  "n": [len(e) for e in err[n]]} for n in names}
        by_context[str(c)]["worldmodel"]["nll"] = [float(np.mean(x)) if x else None for x in nl]
        log(f"[forecast] context {c}: {len(runs)} runs; MAE h=1 wm {by_context[str(c)]['worldmodel']['mae'][0]:.4f} "
            f"last {by_context[str(c)]['last_value']['mae'][0]:.4f}")
    forecasters = {}
    for n in names:
        per_h = []
        for hi in range(len(horizons)):
            # average over contexts, weighting each context by its number of runs at that horizon
            tot = sum((by_context[str(c)][n]["mae"][hi] or 0) * by_context[str(c)][n]["n"][hi] for c in contexts)
            cnt = sum(by_context[str(c)][n]["n"][hi] for c in contexts)
            per_h.append(tot / cnt if cnt else None)
        forecasters[n] = {"mae": per_h}
    nll_h = []
    for hi in range(len(horizons)):
        xs = [by_context[str(c)]["worldmodel"]["nll"][hi] for c in contexts]
        ws = [by_context[str(c)]["worldmodel"]["n"][hi] for c in contexts]
        nll_h.append(sum(x * w for x, w in zip(xs, ws) if x is not None) / max(sum(ws), 1))
    forecasters["worldmodel"]["nll"] = nll_h
    result = {"metric": "val_loss", "n_runs": len(traj), "context_lengths": list(contexts), "horizons": list(horizons),
              "n_samples": n_samples, "forecasters": forecasters, "by_context": by_context}
    return result, {"samples": samples, "traj": traj}
