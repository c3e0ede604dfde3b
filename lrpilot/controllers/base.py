"""The controller interface: observe a run's metrics, return the LR per iteration.

Pure Python (no JAX), so the same controller drives a JAX loop or a PyTorch loop:

    ctrl.reset(RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000, eval_interval=250))
    for it in range(max_iters):
        if it in observe_points:               # set(ctrl.observe_iters())
            ctrl.observe(Observation(it, train_loss=mean_minibatch_loss_since_last, val_loss=val))
        lr = ctrl.lr(it)                       # set param_group['lr'] / optax state
        ... one optimizer step ...

Iteration `it` counts optimizer updates done so far: `lr(it)` is the LR of update `it`,
and an observation at `it` sees the model after `it` updates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a controller knows about the run it controls. LRs are absolute; iterations count updates."""

    base_lr: float
    min_lr: float
    warmup_iters: int
    max_iters: int
    eval_interval: int
    seed: int = 0
    tokens_per_update: int | None = None  # batch x block, when the loop knows it
    n_params: int | None = None  # the model's parameter count, when the loop knows it

    def __post_init__(self):
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError(f"RunInfo.base_lr must be a positive finite number, got {self.base_lr}")
        if not (0 <= self.min_lr <= self.base_lr):
            raise ValueError(f"RunInfo.min_lr must be in [0, base_lr={self.base_lr}], got {self.min_lr}")
        if self.max_iters <= 0 or self.eval_interval <= 0:
            raise ValueError(f"RunInfo needs max_iters > 0 and eval_interval > 0, got {self.max_iters}, {self.eval_interval}")
        if not 0 <= self.warmup_iters <= self.max_iters:
            raise ValueError(f"RunInfo.warmup_iters must be in [0, max_iters], got {self.warmup_iters}")

    def eval_iters(self) -> list[int]:
        """The protocol's evaluation points: every eval_interval updates, and the end."""
        pts = list(range(0, self.max_iters + 1, self.eval_interval))
        return pts if pts[-1] == self.max_iters else pts + [self.max_iters]


@dataclasses.dataclass(frozen=True)
class Observation:
    """Metrics of a run after `iter` updates.

    train_loss: mean minibatch training loss over the updates since the controller's last
        observation (None at iter 0). val_loss: validation loss estimate (None when the
        point has no evaluation). Either may be NaN or inf when the run misbehaves.
    lr: the LR of the last update (None at iter 0).

    Training-health metrics of the updates since the last observation, when the loop measures
    them (None otherwise): train_loss_std (std of their minibatch losses), grad_norm_mean and
    grad_norm_max (global gradient norm before clipping), clip_frac (share of clipped updates),
    update_rms_ratio (RMS of the last parameter update / RMS of the parameters).
    """

    iter: int
    train_loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    train_loss_std: float | None = None
    grad_norm_mean: float | None = None
    grad_norm_max: float | None = None
    clip_frac: float | None = None
    update_rms_ratio: float | None = None


def finite(x: float | None) -> bool:
    """Whether x is a finite real number: Python, NumPy (e.g. float32) or a 0-d array scalar."""
    if x is None or isinstance(x, (str, bytes)):
        return False
    try:
        return math.isfinite(x)
    except (TypeError, ValueError):
        return False


class Controller:
    """Base class. Subclasses set `name`, override `lr` and optionally `observe`.

    optimizer: which optimizer the LR drives: "adamw" (the protocol), "schedule_free"
        (schedule-free AdamW) or "prodigy" (the LR is Prodigy's multiplier).
    needs_val: whether observation points outside the protocol's evaluations need a
        validation-loss estimate (the trainer then evaluates there too).
    val_estimate: with needs_val, only observation points before the protocol's first evaluation
        after iteration 0 (and those that are protocol evaluations) ask for an evaluation; at the
        others `LoopDriver` estimates val as the interval's mean train loss plus the last measured
        gap (val - mean train loss over an interval's span), so the controller costs no evaluation
        of its own after the first ones.
    stop: set to True by a controller that ends the run early (e.g. a policy whose episode
        terminated); the loop then stops updating. stop_reason says why, for the records.
    """

    name: str = "controller"
    optimizer: str = "adamw"
    needs_val: bool = True
    val_estimate: bool = False
    stop: bool = False
    stop_reason: str | None = None

    def __init__(self, **options):
        if options:
            raise ValueError(f"controller '{self.name}' got unknown options {sorted(options)}")
        self.run: RunInfo | None = None

    def reset(self, run: RunInfo) -> None:
        """Starts a new run; must be called before `lr` or `observe`."""
        self.run = run

    def observe_iters(self) -> Sequence[int]:
        """Iterations at which this controller wants `observe` called (default: protocol evals)."""
        return self._run().eval_iters()

    def observe(self, obs: Observation) -> None:
        """Takes the metrics after `obs.iter` updates. Schedules ignore them."""

    def lr(self, it: int) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        """Options as given, for records."""
        return {"name": self.name}

    def _run(self) -> RunInfo:
        if self.run is None:
            raise RuntimeError(f"controller '{self.name}': call reset(RunInfo(...)) before using it")
        return self.run


def warmup_lr(run: RunInfo, it: int, peak: float, warmup: int) -> float:
    """nanoGPT's linear warmup: peak * (it + 1) / (warmup + 1) for it < warmup."""
    return peak * (it + 1) / (warmup + 1)
