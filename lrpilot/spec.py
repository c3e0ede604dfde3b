"""The environment contract: what an env step is, what is observed, what an action does.

One `EnvSpec` serves collection, the world model, the policy and deployment; it is saved
in every trajectory file and every checkpoint, and a mismatch is an error naming the field.

A run of `max_iters` updates is cut into `n_decisions` intervals. Decision point k
(k = 0..n) is iteration `decision_iter(k) = round(k * max_iters / n)`. At decision k < n
the controller picks an action a_k; the LR of interval k (iterations [d_k, d_{k+1})) is

    lr_k = clip(lr_{k-1} * actions[a_k], lr_range * base_lr),   lr_{-1} = base_lr,

constant over the interval, except that interval 0 warms up linearly (nanoGPT's formula)
to lr_0. base_lr is the LR the user configured (possibly mis-set).

Observation k, all task-independent (val0 = the validation loss at iteration 0):

    progress = k / n                      (deterministic)
    log_lr   = log10(lr_{k-1} / base_lr)  (deterministic given the actions; 0 at k = 0)
    log_abs_lr = log10(lr_{k-1})          (version 3: the LR itself, in units of 1; deterministic)
    val      = val_loss(d_k) / val0       (1 at k = 0)
    train    = mean minibatch train loss over interval k-1 / val0   (1 at k = 0)

Reward r_k = val_{k-1} - val_k (k >= 1): it telescopes to 1 - val_n. Divergence (a
non-finite loss, or val >= divergence_ratio) terminates the episode; its observation is
written with val = train = divergence_ratio (the top of their box), so its reward,
val_{k-1} - divergence_ratio, is the penalty and is derived from the observations like any
other. Reaching k = n (the budget) truncates the episode.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

SPEC_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class ObsField:
    name: str
    low: float
    high: float
    deterministic: bool  # known without a model: never predicted, written directly


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    n_decisions: int = 20
    actions: tuple[float, ...] = (0.5, 0.8, 0.95, 1.0, 1.05, 1.25, 2.0)
    lr_range: tuple[float, float] = (1e-3, 1e2)  # relative to base_lr
    divergence_ratio: float = 1.5
    fields: tuple[ObsField, ...] = (
        ObsField("progress", 0.0, 1.0, True),
        ObsField("log_lr", -3.0, 2.0, True),
        ObsField("val", 0.0, 1.5, False),
        ObsField("train", 0.0, 1.5, False),
    )
    # known once per run before it starts (the run's context), written once at the head of an
    # episode's sequence; deterministic (never predicted). Version 1 has none.
    static: tuple[ObsField, ...] = ()
    version: int = SPEC_VERSION

    def __post_init__(self):
        if self.n_decisions < 2:
            raise ValueError(f"EnvSpec.n_decisions must be >= 2, got {self.n_decisions}")
        if not all(a > 0 for a in self.actions):
            raise ValueError(f"EnvSpec.actions must be positive factors, got {self.actions}")
        lo, hi = self.lr_range
        if not 0 < lo <= 1 <= hi:
            raise ValueError(f"EnvSpec.lr_range must contain 1 and be positive, got {self.lr_range}")
        names = [f.name for f in self.fields]
        for need in ("progress", "log_lr", "val", "train"):
            if need not in names:
                raise ValueError(f"EnvSpec.fields must include '{need}', got {names}")
        extra = [f for f in self.fields if f.name not in ("progress", "log_lr", "val", "train")]
        if any(f.name not in OPTIONAL_FIELDS or not f.deterministic for f in extra):
            raise ValueError(f"EnvSpec.fields: the fields beyond progress, log_lr, val and train must be deterministic and "
                             f"among {', '.join(OPTIONAL_FIELDS)}, got {[f.name for f in extra]}")
        if extra and self.version < 3:
            raise ValueError(f"EnvSpec: field(s) {[f.name for f in extra]} need version 3 or later, got version {self.version}")
        if self.field("val").high != self.divergence_ratio or self.field("train").high != self.divergence_ratio:
            raise ValueError("EnvSpec: the val and train boxes must end at divergence_ratio")
        unknown = [f.name for f in self.static if f.name not in STATIC_FIELDS]
        if unknown or not all(f.deterministic for f in self.static):
            raise ValueError(f"EnvSpec.static: fields must be deterministic and among {', '.join(STATIC_FIELDS)}, got {unknown}")
        if self.version == 1 and self.static:
            raise ValueError("EnvSpec: version 1 has no static fields")

    # ---- structure ------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def n_obs(self) -> int:
        return len(self.fields)

    @property
    def n_static(self) -> int:
        return len(self.static)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    def field(self, name: str) -> ObsField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def index(self, name: str) -> int:
        return self.names.index(name)

    @property
    def noop_action(self) -> int:
        return min(range(self.n_actions), key=lambda i: abs(math.log(self.actions[i])))

    def decision_iter(self, k: int, max_iters: int) -> int:
        return int(round(k * max_iters / self.n_decisions))

    def decision_iters(self, max_iters: int) -> list[int]:
        if max_iters < self.n_decisions:
            raise ValueError(f"a run of {max_iters} iterations is shorter than the spec's {self.n_decisions} decisions")
        return [self.decision_iter(k, max_iters) for k in range(self.n_decisions + 1)]

    # ---- dynamics: the one definition, on Python floats, NumPy or JAX arrays -------------------
    def next_lr_rel(self, lr_rel, action):
        """LR relative to base_lr after `action`, clipped to lr_range. A float for Python numbers;
        elementwise for NumPy or JAX arrays (lr_rel and action broadcast)."""
        lo, hi = self.lr_range
        xp = array_module(lr_rel, action)
        if xp is None:
            return float(min(max(lr_rel * self.actions[action], lo), hi))
        factors = xp.asarray(self.actions, dtype=xp.float32)
        return xp.clip(xp.asarray(lr_rel, dtype=xp.float32) * factors[action], lo, hi)

    def candidate_lr_rel(self, lr_rel):
        """(..., A): the LR relative to base_lr that each action would lead to from `lr_rel` (...)."""
        lo, hi = self.lr_range
        xp = array_module(lr_rel) or np
        factors = xp.asarray(self.actions, dtype=xp.float32)
        return xp.clip(xp.asarray(lr_rel, dtype=xp.float32)[..., None] * factors, lo, hi)

    def deterministic_values(self, k, lr_rel_prev, log_base_lr=None) -> dict:
        """The fields known without a model at observation k: progress, log_lr and (version 3)
        log_abs_lr = log_lr + log10(base LR), which needs `log_base_lr` (arrays or floats)."""
        xp = array_module(k, lr_rel_prev)
        log10 = math.log10 if xp is None else xp.log10
        out = {"progress": k / self.n_decisions, "log_lr": log10(lr_rel_prev)}
        if "log_abs_lr" in self.names:
            if log_base_lr is None:
                raise ValueError(f"this spec (version {self.version}) observes the absolute LR (log_abs_lr): give the run's base LR")
            out["log_abs_lr"] = out["log_lr"] + log_base_lr
        return out

    def is_diverged(self, val, train):
        """The spec's divergence on normalised losses: not (val < ratio and train < ratio); NaN
        and inf diverge. Elementwise on arrays."""
        r = self.divergence_ratio
        xp = array_module(val, train)
        if xp is None:
            return not (val < r and train < r)
        return ~((xp.asarray(val) < r) & (xp.asarray(train) < r))

    def mark_diverged(self, obs_xF, diverged):
        """Observations (..., F) with val and train set to the divergence ratio where `diverged` (...)."""
        xp = array_module(obs_xF) or np
        stoch = xp.asarray([n in ("val", "train") for n in self.names])
        return xp.where(xp.asarray(diverged)[..., None] & stoch, self.divergence_ratio, obs_xF)

    def end_of_step(self, k, diverged):
        """(terminated, truncated) of the step that produced observation k: divergence
        terminates, reaching the budget (k = n_decisions) truncates."""
        if array_module(k, diverged) is None:
            return diverged, k >= self.n_decisions and not diverged
        return diverged, (k >= self.n_decisions) & ~diverged

    def observation(self, k: int, lr_rel_prev: float, val_loss: float | None, train_loss: float | None,
                    val0: float, base_lr: float | None = None) -> tuple[np.ndarray, bool]:
        """Observation k from raw metrics (nats); `base_lr` (the configured LR) for a spec that
        observes the absolute LR. Returns (obs (n_obs,) float32, diverged)."""
        r = self.divergence_ratio
        val = val_loss / val0 if _finite(val_loss) else math.inf
        train = (train_loss / val0 if _finite(train_loss) else math.inf) if k > 0 else 1.0
        if k == 0:
            val = 1.0
        diverged = self.is_diverged(val, train)
        if diverged:
            val = train = r
        log_base = math.log10(base_lr) if base_lr else None
        values = {**self.deterministic_values(k, lr_rel_prev, log_base), "val": val, "train": train}
        return np.array([values[f.name] for f in self.fields], np.float32), diverged

    def reward(self, prev_obs, obs):
        """r_k = val_{k-1} - val_k; works on numpy or jax arrays (last axis = fields)."""
        i = self.index("val")
        return prev_obs[..., i] - obs[..., i]

    def static_values(self, base_lr: float, n_params: int | None, tokens_per_update: int | None,
                      max_iters: int) -> np.ndarray:
        """(n_static,) float32: the run's context in the order of `static` (log10 of each quantity).
        Raises ValueError naming what is missing when the spec needs it and it is None."""
        raw = {"log_base_lr": base_lr, "log_params": n_params, "log_tokens_per_update": tokens_per_update,
               "log_max_iters": max_iters}
        arg = {"log_base_lr": "base_lr", "log_params": "n_params", "log_tokens_per_update": "tokens_per_update",
               "log_max_iters": "max_iters"}  # the RunInfo / LoopDriver argument that gives each
        missing = [arg[f.name] for f in self.static if raw[f.name] is None]
        if missing:
            raise ValueError(f"this spec (version {self.version}) observes the run's {', '.join(missing)}; give "
                             f"{' and '.join(missing)} (RunInfo / LoopDriver(..., {missing[0]}=...))")
        return np.array([math.log10(raw[f.name]) for f in self.static], np.float32)

    def same_dynamics(self, other: "EnvSpec") -> bool:
        """Whether `other` defines the same env step (decisions, actions, LR range, divergence): its
        trajectories can then be re-derived under this spec from their raw metrics."""
        return (self.n_decisions, tuple(self.actions), tuple(self.lr_range), self.divergence_ratio) == (
            other.n_decisions, tuple(other.actions), tuple(other.lr_range), other.divergence_ratio)

    # ---- (de)serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "EnvSpec":
        d = dict(d)
        if d.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"EnvSpec version {d.get('version')} is not supported (this lrpilot reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        d["fields"] = tuple(ObsField(**f) for f in d["fields"])
        d["static"] = tuple(ObsField(**f) for f in d.get("static", ()))
        d["actions"] = tuple(d["actions"])
        d["lr_range"] = tuple(d["lr_range"])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "EnvSpec":
        return cls.from_dict(json.loads(s))

    def diff(self, other: "EnvSpec | dict") -> list[str]:
        """Names of the fields that differ from `other` (empty when the specs match)."""
        a, b = self.to_dict(), other.to_dict() if isinstance(other, EnvSpec) else dict(other)
        b.setdefault("static", [])  # written before static fields existed (version 1): none
        return sorted(k for k in set(a) | set(b) if _listify(a.get(k)) != _listify(b.get(k)))

    def check_same(self, other: "EnvSpec | dict", where: str) -> None:
        d = self.diff(other)
        if d:
            theirs = other.to_dict() if isinstance(other, EnvSpec) else other
            mine = self.to_dict()
            detail = "; ".join(f"{k}: {where} has {_listify(theirs.get(k))!r}, expected {_listify(mine.get(k))!r}" for k in d)
            raise SpecMismatch(f"{where}: spec differs in field(s) {', '.join(d)} ({detail})")


class SpecMismatch(ValueError):
    """A trajectory file or checkpoint was made under a different EnvSpec."""


def _listify(x):
    """JSON round trips turn tuples into lists; compare like with like."""
    if isinstance(x, tuple):
        return [_listify(v) for v in x]
    if isinstance(x, list):
        return [_listify(v) for v in x]
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    return x


def array_module(*xs):
    """None when every x is a Python number; numpy when they are NumPy values; jax.numpy when any
    is a JAX array or tracer (imported only then, so the spec itself needs no JAX)."""
    mod = None
    for x in xs:
        if isinstance(x, (bool, int, float)):
            continue
        if isinstance(x, (np.ndarray, np.generic)):
            mod = mod or np
            continue
        import jax.numpy as jnp

        return jnp
    return mod


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


STATIC_FIELDS = ("log_base_lr", "log_params", "log_tokens_per_update", "log_max_iters")
OPTIONAL_FIELDS = ("log_abs_lr",)  # per-step fields beyond the four every spec has (version 3)
RUN_CONTEXT = (ObsField("log_base_lr", -6.0, 0.0, True), ObsField("log_params", 3.0, 9.0, True),
               ObsField("log_tokens_per_update", 1.0, 6.0, True), ObsField("log_max_iters", 1.0, 6.0, True))

SPEC_V1 = EnvSpec(version=1)
"""The starter dataset's spec: task-independent observations, no run context."""
SPEC_V2 = EnvSpec(static=RUN_CONTEXT, version=2)
"""Version 1's observations plus the run's context (log10 of the configured base LR, the parameter
count, the tokens per update and the run length), written once at the head of each episode."""
SPEC_V3 = EnvSpec(fields=(*SPEC_V1.fields[:2], ObsField("log_abs_lr", -6.0, 0.0, True), *SPEC_V1.fields[2:]),
                  static=RUN_CONTEXT, version=3)
"""Version 2 plus the absolute LR of each interval (log10, beside the LR relative to the base LR),
written before the losses it produced: what the LR is, not only how far it moved."""
SPECS = {"v1": SPEC_V1, "v2": SPEC_V2, "v3": SPEC_V3}
DEFAULT_SPEC = SPEC_V1
