"""Controllers that act through an EnvSpec: explorers during collection, the learned policy
at deployment. The spec's bookkeeping (decision points, warmup, clipping, observations,
divergence) lives here once, so collection and deployment cannot drift apart.

Subclasses implement `choose(k) -> action index` using `self.obs` (observations 0..k, each
(n_obs,) float32) and `self.actions` (actions 0..k-1). After the run, `trajectory()` gives
the env steps as rows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from lrpilot.controllers.base import Controller, Observation, finite, warmup_lr
from lrpilot.spec import DEFAULT_SPEC, EnvSpec

HEALTH = ("train_loss_std", "grad_norm_mean", "grad_norm_max", "clip_frac", "update_rms_ratio")
"""The training-health metrics an observation may carry (see `Observation`), recorded raw."""


class SpecController(Controller):
    name = "spec"

    def __init__(self, spec: EnvSpec = DEFAULT_SPEC):
        super().__init__()
        self.spec = spec

    def reset(self, run):
        super().reset(run)
        self.points = self.spec.decision_iters(run.max_iters)
        # the run's context, for specs that observe it (raises, naming what is missing)
        self.static = self.spec.static_values(run.base_lr, run.n_params, run.tokens_per_update, run.max_iters)
        self.lr_rel = 1.0  # LR of the current interval relative to base_lr (base before decision 0)
        self.val0: float | None = None
        self.obs: list[np.ndarray] = []
        self.actions: list[int] = []
        self.rows: list[dict] = []
        self.stop = False
        self.stop_reason = None
        self.terminated = False
        self._warned = False

    def observe_iters(self):
        return self.points

    def observe(self, o: Observation) -> None:
        """Records observation k and picks action k. A missing metric (None) repeats the last
        value (a train loss never seen stands in as the val loss, and the other way round); with
        no loss at all yet the LR is held (and a warning says so); a non-finite one (or
        val >= divergence_ratio) is divergence: the episode ends and the LR stays where it was."""
        if self.stop:
            return
        k = len(self.obs)
        if o.iter != self.points[k]:
            raise ValueError(f"{self.name}: observation at iteration {o.iter}, expected decision point {self.points[k]}")
        val = o.val_loss if o.val_loss is not None else self._last("val_loss")
        train = o.train_loss if o.train_loss is not None else self._last("train_loss")
        if train is None and k > 0:
            train = val  # never seen a train loss: stand in with the validation loss
        if val is None:
            val = train  # never seen a validation loss: stand in with the train loss
        missing = val is None and k > 0  # no loss of any kind so far: nothing to act on
        base = self._run().base_lr
        if self.val0 is None and finite(val) and val > 0:
            self.val0 = val  # normally at k = 0; later only if the first ones were missing
        if missing:
            if not self._warned:
                warnings.warn(f"{self.name}: no loss observed by decision {k} (iteration {o.iter}); holding the LR "
                              "until one arrives (pass train_loss or val_loss to observe)", RuntimeWarning, stacklevel=2)
                self._warned = True
            ob, diverged = self.spec.observation(k, self.lr_rel, 1.0, 1.0, 1.0, base)  # the initial state, as at k = 0
        elif self.val0 is None:
            ob, diverged = self.spec.observation(k, self.lr_rel, None if k == 0 else math.nan, math.nan, 1.0, base)
        else:
            ob, diverged = self.spec.observation(k, self.lr_rel, val, train, self.val0, base)
        self.obs.append(ob)
        reward = float(self.spec.reward(self.obs[-2], ob)) if k > 0 else None
        truncated = k == self.spec.n_decisions and not diverged
        run = self._run()
        row = {"step": k, "iter": o.iter, **{f"obs_{n}": float(v) for n, v in zip(self.spec.names, ob)},
               "val_loss": _f(val), "train_loss": _f(train), "reward": reward,
               "terminated": bool(diverged), "truncated": truncated, "action": -1, "lr": None,
               **{m: _f(getattr(o, m)) for m in HEALTH},
               "tokens": o.iter * run.tokens_per_update if run.tokens_per_update else None}
        self.rows.append(row)
        if diverged or truncated:
            self.stop, self.terminated = True, diverged
            if diverged:
                self.stop_reason = f"diverged at decision {k} (iteration {o.iter}): the spec's divergence, a non-finite loss or val >= {self.spec.divergence_ratio} x initial"
            return
        a = self.spec.noop_action if missing else int(self.choose(k))
        if not 0 <= a < self.spec.n_actions:
            raise ValueError(f"{self.name}: action {a} outside [0, {self.spec.n_actions})")
        self.actions.append(a)
        self.lr_rel = self.spec.next_lr_rel(self.lr_rel, a)  # observation k+1 reports it as log_lr
        row["action"] = a
        row["lr"] = self.lr_rel * self._run().base_lr

    def _last(self, key):
        return self.rows[-1][key] if self.rows else None

    def choose(self, k: int) -> int:
        raise NotImplementedError

    def lr(self, it: int) -> float:
        run = self._run()
        lr = self.lr_rel * run.base_lr
        if it < self.points[1]:
            return warmup_lr(run, it, lr, self.points[1])
        return lr

    def trajectory(self) -> list[dict]:
        return list(self.rows)


def _f(x):
    return float(x) if x is not None else None


class ScheduleFollower(SpecController):
    """Projects a target LR schedule onto the action set: at each decision, the action whose
    resulting LR is closest (in log space) to the schedule's mean LR over the coming interval."""

    name = "follow"

    def target_rel(self, k: int) -> float:
        raise NotImplementedError

    def choose(self, k):
        cur = self.lr_rel
        tgt = math.log(max(self.target_rel(k), 1e-12))
        return min(range(self.spec.n_actions), key=lambda a: abs(math.log(self.spec.next_lr_rel(cur, a)) - tgt))
