"""A linear one-step action response beside the transformer (`WorldModelConfig.action_response`).

The transformer forecasts how a run goes on, but moves the next val by a tenth of the real
effect of an LR action or less, often with the wrong sign, while a ridge least-squares model of
the change of val on the state, the action and their products recovers half of it on held-out
runs (README, Simulator fidelity). This module fits that model's action part against the
transformer, and the simulator adds it to each sampled val:

    val_{k+1} = the transformer's sample + delta,   delta = w . phi(a_k, obs_k)     (normalised val)
    phi = (a, a*progress, a*log_lr, a*log_abs_lr, a*val, a*train, a^2)            (7,)
    with `action_convex`: phi, a*log_abs_lr^2                                      (8,)
    with `action_hinge` h: phi, [a*log_abs_lr^2,] a*max(0, log_abs_lr - h - s*P)    (8,) or (9,)
    with `action_hinge_offsets` (o1, ...) as well: ..., a*max(0, log_abs_lr - h - s*P - o1), ...
    (s: `action_hinge_params`, P: log10 of the run's parameter count; `ActionTerms` is the layout)

a: log2 of action k's LR factor (0 for the no-op, so the no-op is never corrected); obs_k:
observation k; log_abs_lr = log_lr + log10 of the run's base LR (`log_base`). Two responses:

* "residual": the transformer samples under the action taken, delta is fit on what it leaves
  unexplained: the transformer's own (weak) response plus the linear term.
* "noop": the transformer samples the no-op's continuation (the LR held), delta is fit against
  that: the action acts through the linear term alone.

Either way the model then reads the corrected val (and the action taken) as the step's symbols.
The fit: ridge least squares of val_{k+1} - E_model[val_{k+1}] (the transformer's expected next
val from the real history under the real action, or the no-op: `expected_next_val`) on
[1, state, run context, phi], over the decisions k >= 1 of the training runs that did not diverge
into k + 1, standardised columns; the simulator keeps phi's weights only (the rest is the
transformer's business). Which decisions (`WorldModelConfig.action_fit`):

* "all": every run's, pooled. Explorers that react to the loss (ramps until it stalls, policies)
  make the action depend on the state, and runs differ in ways the state does not show: the
  pooled slope understates the causal effect (a one-step model fit so recovers about 0.4 of the
  real effect of halving on the training groups' random walks).
* "exogenous": only runs whose actions do not depend on their state (random walks and forked
  branches, `EXOGENOUS`), within each run (run fixed effects: every column and the target less
  its run mean), so that a run's own level of difficulty cannot pose as an action's effect.
* "paired": only runs of groups that share one seed (initialisation, batches, evaluation batches:
  the fork and anneal-timing families, `paired_groups`), within each group at each decision
  (group x decision fixed effects), without the state and the run context as controls (between
  paired runs both differ by what their LRs did): the runs of a cell differ only by their LR
  schedules, so what the LR level costs (psi, above 30x the default) and what an action does are
  read off paired runs rather than off runs that differ in everything else.

`action_convex` adds a x log_abs_lr^2: one doubling's effect grows with the LR in effect, from nil at a
tenth of the model's default LR to several times the effect at the default beyond x30 (README, "What the
walks' slope measures"), a curve a x log_abs_lr alone cannot follow.
`action_hinge` h adds a x max(0, log_abs_lr - h) instead (or beside it): the same rise as a kink at an
absolute LR of 10^h, flat below it. A parabola in log_abs_lr rises at both ends, so fit to the steep
cost above x30 of the default it also credits doubling a tiny LR; the real effect is nil below x1.
With `action_hinge_params` s the kink moves with the model's size: at 10^(h + s P), so that it can sit at
a fixed multiple of a reference LR that falls with the parameter count (results/rel_hinge/: the
collected runs' default LRs follow log10 LR = -1.873 - 0.191 P within 0.03 decades).
`action_hinge_offsets` (o1, ...) add a x max(0, log_abs_lr - the kink - o) for each o: more kinks, o decades from the
first. On the random walks a doubling's effect per step is nil below the collected runs' default LR, rises from x1
to x10 and on to x100 and jumps beyond (loss spikes, and divergence: `hazard.py`; results/upper_hinge/), a curve one
kink fits with slopes between.
A fitted term can be kept and only new terms fit on what it leaves (`fit`'s keep, `worldmodel
fit-action --keep`: action terms, or psi where the kept term has none): stagewise, so that a term
right where it was fit stays so.
With `action_level` the linear term also corrects the transformer's response to the LR level:
psi (log_lr, log_abs_lr, their squares and products with progress; log_abs_lr's alone with
`action_level_terms` "absolute"; of K = max(0, log_abs_lr - the action term's kink) with "kink": the
level's cost above the kink alone, so that an anneal below it stays the transformer's and phi's; with
"kinks" also of D = max(0, the kink - KINK_BELOW - log_abs_lr): what holding a vanishing LR costs, below
x0.1 of the collected runs' default LR, read off the drop groups; D and D x p without a square, so that
the cost grows with the depth below the data's deepest LR too instead of turning at a fitted vertex; with
"kinks_v" also of U = max(0, log_abs_lr - (the kink - KINK_V)) and V = max(0, the kink - KINK_V - log_abs_lr) and
their products with p: a V about the collected runs' default LR, the cost per step of being off it, which
the one-step fits cannot read and `rollout.py` fits on whole simulated runs),
centred on every training decision (`b`; whichever decisions its weights are fit on), is added to
phi, applied at every step (the no-op too).
The weights live in the parameters as `params["action_linear"]` = {"w": (ActionTerms.n,), "b": ()}
(a leading member axis for an ensemble: one fit per member); the model's layers never read them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.model import KINK_BELOW, KINK_V, KINKED, LEVEL_TERMS, member

N_FEATURES = 7
RIDGE = 1e-3  # ridge strength per row, on standardised columns (as fidelity's linear baseline)
EXOGENOUS = ("random_walk", "fork")  # controllers whose actions do not depend on the run's state (action_fit = exogenous)


def ridge(X: np.ndarray, y: np.ndarray):
    """Ridge least squares of centred y (n,) on the standardised non-constant columns of X (n, f):
    (mu (f,), sd (f,), keep (f,) bool, coef (keep.sum(),)); a prediction is
    ((X[:, keep] - mu[keep]) / sd[keep]) @ coef + y.mean()."""
    mu, sd = X.mean(0), X.std(0)
    keep = sd > 1e-9  # constant columns (the intercept, a context the spec lacks) out; the ridge handles collinear ones
    Z = (X[:, keep] - mu[keep]) / sd[keep]
    coef = np.linalg.solve(Z.T @ Z + RIDGE * len(Z) * np.eye(Z.shape[1]), Z.T @ (y - y.mean()))
    return mu, sd, keep, coef
CHUNK = 8  # runs simulated at once (x n decisions x samples one-step episodes)


def exogenous(traj: Trajectories) -> np.ndarray:
    """(R,) bool: the runs whose actions do not depend on their state (controller in `EXOGENOUS`)."""
    return np.array([(m.get("controller") or {}).get("name") in EXOGENOUS for m in traj.meta], bool)


def log_base(traj: Trajectories) -> np.ndarray:
    """(R,) log10 of each run's configured base LR where the spec observes it (version 3's
    log_abs_lr at observation 0, or the static log_base_lr of version 2), else 0."""
    sp = traj.spec
    if "log_abs_lr" in sp.names:
        return traj.obs[:, 0, sp.index("log_abs_lr")].astype(np.float32)
    names = [f.name for f in sp.static]
    if "log_base_lr" in names and traj.static is not None:
        return traj.static[:, names.index("log_base_lr")].astype(np.float32)
    return np.zeros(len(traj), np.float32)


def log_params(traj: Trajectories) -> np.ndarray:
    """(R,) log10 of each run's parameter count where the spec's static context has it (versions 2
    and 3), else NaN."""
    names = [f.name for f in traj.spec.static]
    if "log_params" in names and traj.static is not None:
        return traj.static[:, names.index("log_params")].astype(np.float32)
    return np.full(len(traj), np.nan, np.float32)


@dataclasses.dataclass(frozen=True)
class ActionTerms:
    """The layout of the linear term (module docstring): phi's 7 terms, then a*A^2 with `convex`, then
    a*max(0, A - hinge - hinge_params*P) with a `hinge` (a kink at the absolute LR 10^hinge for a model of
    one parameter, moving by hinge_params decades per decade of the parameter count: P = log10 of it),
    then a*max(0, A - that kink - o) for each o of `offsets` (more kinks), then psi's with `level`: 6
    (L, A, their squares and products with progress), A's 3 alone with level_terms "absolute", those of K = max(0, A - the kink) with "kink" (the level's cost above the
    kink only), or K's, D and D x p with "kinks" (D = max(0, the kink - KINK_BELOW - A): the cost of an LR
    far below), and U, U x p, V, V x p with "kinks_v" (U, V = max(0, +-(A - the kink + KINK_V)): a V about the default). `WorldModelConfig`'s action_convex, action_hinge, action_hinge_params, action_level,
    action_level_terms, action_hinge_offsets (`of`); the term's columns are named (`names`) so that weights
    of one layout can be carried into a larger one (`fit` with `keep`)."""

    convex: bool = False
    hinge: float | None = None
    hinge_params: float = 0.0
    level: bool = False
    level_terms: str = "both"
    offsets: tuple[float, ...] = ()

    def __post_init__(self):
        if self.level_terms not in LEVEL_TERMS or (self.level_terms in KINKED and self.hinge is None):
            raise ValueError(f"ActionTerms: level_terms must be one of {', '.join(LEVEL_TERMS)} ({', '.join(KINKED)} with a hinge), got "
                             f"{self.level_terms!r} (hinge={self.hinge!r})")
        if self.offsets and self.hinge is None:
            raise ValueError(f"ActionTerms: more kinks (offsets={self.offsets!r}) sit at offsets from the first: they need a hinge")

    @classmethod
    def of(cls, cfg) -> "ActionTerms":
        return cls(cfg.action_convex, cfg.action_hinge, cfg.action_hinge_params, cfg.action_level, cfg.action_level_terms,
                   tuple(cfg.action_hinge_offsets))

    @property
    def n_phi(self) -> int:
        """The number of phi's terms (the action's), before psi's."""
        return N_FEATURES + bool(self.convex) + (self.hinge is not None) + len(self.offsets)

    @property
    def psi_names(self) -> tuple[str, ...]:
        """psi's columns with `level` (whatever `level` is)."""
        kink = ("K", "K*p", "K^2")
        kinks = (*kink, "D", "D*p")
        return {"both": PSI_NAMES, "absolute": PSI_NAMES[3:], "kink": kink, "kinks": kinks,
                "kinks_v": (*kinks, "U", "U*p", "V", "V*p")}[self.level_terms]

    @property
    def n(self) -> int:
        return self.n_phi + len(self.psi_names) * self.level

    def names(self) -> tuple[str, ...]:
        kink = () if self.hinge is None else (f"a*kink({self.hinge:g},{self.hinge_params:g})",)
        more = tuple(f"a*kink{o:+g}" for o in self.offsets)
        return (*PHI_NAMES, *("a*A^2",) * self.convex, *kink, *more, *self.psi_names * self.level)

    def kink_at(self, log_params_x):
        """The kink (log10 absolute LR) for runs of log10 parameter count log_params (numpy or jax; read only when
        the kink moves with it)."""
        return self.hinge + (self.hinge_params * log_params_x if self.hinge_params else 0.0)

    def check_log_params(self, log_params, spec, who: str) -> None:
        """Raises ValueError (prefixed by `who`) when the kink moves with the parameter count and some run's
        log10 count (log_params, (R,) or (rows,)) is unknown: the spec's static context lacks it."""
        if self.hinge is not None and self.hinge_params and not np.isfinite(log_params).all():
            raise ValueError(f"{who}: action_hinge_params={self.hinge_params} moves the action term's kink with the parameter "
                             f"count, which the spec (version {spec.version}) does not carry in its static context")

    def features(self, spec, a_log2, obs_xF, log_base_x, log_params_x=None):
        """(..., n) the columns of an action's log2 LR factor a (...) taken at observation obs (..., F) of a run
        with log10 base LR log_base (...) and log10 parameter count log_params (...; read only by a kink
        that moves with it). numpy or jax."""
        xp = jnp if any(isinstance(x, jax.Array) for x in (a_log2, obs_xF, log_base_x, log_params_x)) else np
        o = lambda name: obs_xF[..., spec.index(name)]  # noqa: E731
        log_lr, p = o("log_lr"), o("progress")
        log_abs = log_lr + log_base_x
        cols = [a_log2, a_log2 * p, a_log2 * log_lr, a_log2 * log_abs, a_log2 * o("val"), a_log2 * o("train"), a_log2 * a_log2]
        cols += [a_log2 * log_abs * log_abs] if self.convex else []
        if self.hinge is not None:
            kink = self.kink_at(log_params_x)
            above_kink = xp.maximum(log_abs - kink, 0.0)  # K
            cols += [a_log2 * above_kink]
            cols += [a_log2 * xp.maximum(log_abs - kink - o, 0.0) for o in self.offsets]
        if self.level:
            cols += [log_lr, log_lr * p, log_lr * log_lr] if self.level_terms == "both" else []
            above = above_kink if self.level_terms in KINKED else log_abs  # K, or A
            cols += [above, above * p, above * above]
            if self.level_terms in ("kinks", "kinks_v"):
                below = xp.maximum(kink - KINK_BELOW - log_abs, 0.0)  # D
                cols += [below, below * p]
            if self.level_terms == "kinks_v":
                off = log_abs - (kink - KINK_V)  # decades off the V's vertex
                cols += [xp.maximum(off, 0.0), xp.maximum(off, 0.0) * p, xp.maximum(-off, 0.0), xp.maximum(-off, 0.0) * p]
        return xp.stack(cols, axis=-1)


PHI_NAMES = ("a", "a*p", "a*L", "a*A", "a*val", "a*train", "a^2")  # L = log_lr, A = log_abs_lr, p = progress
PSI_NAMES = ("L", "L*p", "L^2", "A", "A*p", "A^2")


def action_features(spec, a_log2, obs_xF, log_base_x, level: bool = False):
    """phi (..., 7) of an action's log2 LR factor (...) taken at observation obs (..., F) of a run with
    log10 base LR log_base (...), then psi (..., 6) with `level` (`ActionTerms.features` without the
    extra terms). numpy or jax."""
    return ActionTerms(level=level).features(spec, a_log2, obs_xF, log_base_x)


def layout(terms: ActionTerms, w) -> ActionTerms:
    """`terms` with `level` read from the weights' length (checkpoints name psi by its columns);
    raises ValueError naming the layout when the length fits neither with nor without psi."""
    n, n_psi = w.shape[-1], len(terms.psi_names)
    if n not in (terms.n_phi, terms.n_phi + n_psi):
        raise ValueError(f"action_linear: {n} weights, expected {terms.n_phi} (or {terms.n_phi + n_psi} with action_level) for "
                         f"action_convex={terms.convex}, action_hinge={terms.hinge}, action_hinge_offsets={terms.offsets}, "
                         f"action_level_terms={terms.level_terms}")
    return dataclasses.replace(terms, level=n > terms.n_phi)


def correction(spec, lin: dict, action_log2_A, action, obs_F, log_base, log_params, terms: ActionTerms):
    """delta (,), or (K,) for an ensemble's stacked weights, of taking `action` (int index) at observation
    obs_F of a run with log10 base LR and parameter count log_base, log_params: w . features + b (jax)."""
    a = jnp.asarray(action_log2_A, jnp.float32)[action]
    return lin["w"] @ layout(terms, lin["w"]).features(spec, a, obs_F, log_base, log_params) + lin["b"]


def expected_next_val(model, wm_params, ser, traj: Trajectories, samples: int = 4, seed: int = 0,
                      noop: bool = False) -> np.ndarray:
    """(R, n+1) the model's expected val at each observation k + 1 >= 1 from the real prefix 0..k
    under the real action k (with `noop`: under the no-op instead): the simulator's `info["mean_val"]` (exact over val's first digit, its
    later digits sampled), averaged over `samples`; NaN at k = 0 and past the run's end. One model.
    One forward pass per run gives the cache for all its prefixes."""
    from lrpilot.worldmodel.env import SimEnv

    n = ser.spec.n_decisions
    out = np.full((len(traj), n + 1), np.nan)
    length = traj.length
    ok = np.flatnonzero(length >= 2)  # the simulator's episodes (a one-observation run has no step)
    traj = traj.subset(ok)
    alone = dataclasses.replace(model.cfg, action_response="model", action_divergence=False)  # the transformer alone
    env = SimEnv(model.clone(cfg=alone), ser)
    ep = env.params(wm_params, traj, max_prefix=1)
    acts = jnp.asarray(np.full_like(traj.actions, ser.spec.noop_action) if noop else np.maximum(traj.actions, 0))

    def run(r, key):
        cache = env.prefix_cache(ep, r, n)

        def at(k, kk):
            _, st = env.reset_to(ep, r, k + 1, n, cache=cache)
            return env.step(kk, st, acts[r, k], ep)[-1]["mean_val"]

        keys = jax.random.split(key, n * samples).reshape(n, samples)
        return jax.vmap(jax.vmap(at, in_axes=(None, 0)))(jnp.arange(n), keys).mean(1)

    f = jax.jit(jax.vmap(run))
    keys = jax.random.split(jax.random.key(seed), len(traj))
    for j in range(0, len(traj), CHUNK):
        out[ok[j : j + CHUNK], 1:] = np.asarray(f(jnp.arange(j, min(j + CHUNK, len(traj))), keys[j : j + CHUNK]))
    return np.where(np.arange(n + 1)[None] >= length[:, None], np.nan, out)


def paired_groups(traj: Trajectories) -> np.ndarray:
    """(R,) an id per group of >= 2 runs that share one seed within one collection job's group (same
    directory, job seed, group and run seed: the fork and anneal-timing families), -1 for any other run."""
    keys = [(str(Path(f).parent), m.get("job_seed"), m.get("group"), m.get("seed"))
            if None not in (m.get("job_seed"), m.get("group"), m.get("seed")) else None for m, f in zip(traj.meta, traj.files)]
    count: dict = {}
    for k in keys:
        count[k] = count.get(k, 0) + 1
    ids = {k: i for i, k in enumerate(k for k in count if k is not None and count[k] >= 2)}
    return np.array([ids.get(k, -1) for k in keys], np.int64)


def within_runs(run: np.ndarray, M: np.ndarray) -> np.ndarray:
    """M (n, ...) less the mean of its rows of the same run (run: (n,) ids): run fixed effects."""
    _, inv, count = np.unique(run, return_inverse=True, return_counts=True)
    sums = np.zeros((len(count), *M.shape[1:]))
    np.add.at(sums, inv, M)
    return M - (sums / count.reshape(-1, *[1] * (M.ndim - 1)))[inv]


def fit(model, wm_params, ser, traj: Trajectories, rows_from: str = "all", keep: dict | None = None,
        keep_terms: ActionTerms | None = None) -> dict:
    """{"w": (terms.n,) the weights of the columns of the model's action terms (`ActionTerms.of` its config:
    `terms`); "b": () the centring of psi} fit on the training runs
    `traj` (module docstring) against the model's expected next val under the real action (action_response
    = residual) or the no-op (noop); `rows_from`: the decisions it is fit on, "all", "exogenous" or "paired"
    (module docstring). With `keep` (an `action_linear` of the layout `keep_terms`, whose columns `terms` must
    all have), those weights stay as they are and only the columns `terms` adds (action terms, or psi
    where the kept term has none) are fit, on what the model with the kept term leaves (stagewise).
    One model."""
    sp, terms = traj.spec, ActionTerms.of(model.cfg)
    vi = sp.index("val")
    names = terms.names()
    if keep is not None:
        old = layout(keep_terms, np.asarray(keep["w"])).names()
        missing = [c for c in old if c not in names]
        if missing:
            raise ValueError(f"action_linear: the kept term's columns {list(old)} are not a part of {list(names)} (missing: "
                             f"{missing}); a kept term can only gain terms")
    psi_mean = psi_centre(terms, traj)  # over every training decision, whichever the weights are fit on
    if rows_from == "exogenous":
        traj = traj.subset(np.flatnonzero(exogenous(traj)))
    elif rows_from == "paired":
        group = paired_groups(traj)
        traj, group = traj.subset(np.flatnonzero(group >= 0)), group[group >= 0]
    r, k = _decisions(traj)
    new = [j for j, c in enumerate(names) if keep is None or c not in old]  # the columns fit here
    if not new:
        raise ValueError(f"action_linear: the kept term already has every column of {list(names)}: nothing to fit")
    if len(r) < 2 * len(new):
        which = {"all": "", "exogenous": f" of {' or '.join(EXOGENOUS)} runs (action_fit = exogenous)",
                 "paired": " of runs in groups that share a seed (action_fit = paired)"}[rows_from]
        raise ValueError(f"action_linear: {len(r)} training decisions{which}, need at least {2 * len(new)}")
    lp = log_params(traj)[r].astype(np.float64)
    terms.check_log_params(lp, sp, "action_linear")
    noop = model.cfg.action_response == "noop"
    y = traj.obs[r, k + 1, vi].astype(np.float64) - expected_next_val(model, wm_params, ser, traj, noop=noop)[r, k + 1]
    o = traj.obs[r, k].astype(np.float64)
    lb = log_base(traj)[r].astype(np.float64)
    a = np.log2(np.asarray(sp.actions))[traj.actions[r, k]]
    if keep is not None:  # what the kept term leaves
        y = y - (keep_terms.features(sp, a, o, lb, lp) @ np.asarray(keep["w"], np.float64) + float(keep["b"]))
    # controls: the state and the run context, but not between paired runs, whose states differ by what their LRs did
    # and whose context differs by the configured LR alone: there it is all the level's (and the actions') to explain
    paired = rows_from == "paired"
    state = [] if paired else [o[:, sp.index(f)] for f in ("progress", "val", "train")] + [o[:, vi] - traj.obs[r, k - 1, vi]]
    if not terms.level:  # the LR level as plain state terms (psi has them otherwise)
        state += [o[:, sp.index("log_lr")], o[:, sp.index("log_lr")] + lb]
    ctx = traj.static[r].astype(np.float64) if traj.static is not None and not paired else np.zeros((len(r), 0))
    cols = terms.features(sp, a, o, lb, lp)
    X = np.column_stack([*state, ctx, cols[:, new]])
    if rows_from == "exogenous":  # run fixed effects (the context, constant within a run, drops out)
        X, y = within_runs(r, X), within_runs(r, y)
    elif rows_from == "paired":  # group x decision fixed effects: what the paired runs share at step k drops out
        cell = group[r] * (traj.obs.shape[1] + 1) + k
        X, y = within_runs(cell, X), within_runs(cell, y)
    mu, sd, kept, coef = ridge(X, y)
    full = np.zeros(X.shape[1])
    full[kept] = coef / sd[kept]  # raw units
    w = np.zeros(len(names))
    w[new] = full[-len(new):]
    # phi uncentred (the no-op's phi is 0); psi centred on every training decision, so that where the transformer was
    # trained it shifts nothing on average (paired runs sit at higher LRs than most); the intercept and the state terms dropped
    b = -float(w[terms.n_phi:] @ psi_mean) if terms.level else 0.0
    if keep is not None:  # the kept weights in their places; psi's centring only where psi is new
        had_psi = len(old) > keep_terms.n_phi
        w[[names.index(c) for c in old]] = np.asarray(keep["w"], np.float64)
        b = float(keep["b"]) if had_psi else float(keep["b"]) + b
    return {"w": w.astype(np.float32), "b": np.float32(b)}


def _decisions(traj: Trajectories) -> tuple[np.ndarray, np.ndarray]:
    """(run, k) indices of the decisions k >= 1 a term is fit on: taken, and neither val k nor k + 1 diverged."""
    vi, ratio = traj.spec.index("val"), traj.spec.divergence_ratio
    rows = [(r, k) for r in range(len(traj)) for k in range(1, traj.length[r] - 1)
            if traj.actions[r, k] >= 0 and traj.obs[r, k + 1, vi] < ratio and traj.obs[r, k, vi] < ratio]
    return np.array([x for x, _ in rows], np.int64), np.array([x for _, x in rows], np.int64)


def psi_centre(terms: ActionTerms, traj: Trajectories) -> np.ndarray:
    """(n_psi,) psi's mean over the decisions of `traj` (zeros without psi: (0,))."""
    if not terms.level:
        return np.zeros(0)
    r, k = _decisions(traj)
    if not len(r):
        return np.zeros(len(terms.psi_names))
    a = np.log2(np.asarray(traj.spec.actions))[traj.actions[r, k]]
    lp = log_params(traj)[r].astype(np.float64)
    cols = terms.features(traj.spec, a, traj.obs[r, k].astype(np.float64), log_base(traj)[r].astype(np.float64), lp)
    return cols[:, terms.n_phi:].mean(0)


def with_action_linear(model, wm_params, ser, traj: Trajectories, rows_from: str = "all",
                       keep_terms: ActionTerms | None = None) -> dict:
    """The parameters with `action_linear` fit on `traj` for the model's `action_response` (residual or noop)
    and its action terms (`ActionTerms.of` its config), on the decisions `rows_from` (the config's
    `action_fit`); each member's on its own residuals for an ensemble, stacked. With `keep_terms` (the
    layout of the parameters' own `action_linear`) that term is kept and only the columns the config adds
    are fit (`fit`'s keep)."""
    if model.cfg.action_response not in ("residual", "noop"):
        raise ValueError(f"action_linear: the model's action_response must be residual or noop, got {model.cfg.action_response!r}")
    if keep_terms is not None and "action_linear" not in wm_params:
        raise ValueError("action_linear: keeping the fitted term needs parameters that have one")
    K = model.cfg.ensemble
    core = {k: v for k, v in wm_params.items() if k != "action_linear"}
    lin = wm_params.get("action_linear") if keep_terms is not None else None
    if K == 1:
        return {**core, "action_linear": fit(model, core, ser, traj, rows_from, lin, keep_terms)}
    fits = [fit(*member(model, core, m), ser, traj, rows_from,
                None if lin is None else {k: np.asarray(v)[m] for k, v in lin.items()}, keep_terms) for m in range(K)]
    return {**core, "action_linear": {k: np.stack([f[k] for f in fits]) for k in ("w", "b")}}
