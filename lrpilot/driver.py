"""Driving any lrpilot controller from your own training loop (optax, PyTorch, or plain Python).

    driver = LoopDriver(make("cosine"), base_lr=1e-3, max_iters=2000)    # or policy.load(path)
    lr_ctl = OptaxLR(driver)                   # or TorchLR(driver, torch_optimizer)
    prev = None                                # loss of the previous update (None before the first)
    for it in range(max_iters + 1):            # the extra step delivers the final observation
        val = evaluate(params) if driver.wants_eval(it) else None
        opt_state = lr_ctl.set(opt_state, it, train_loss=prev, val_loss=val)   # TorchLR: lr_ctl.step(...)
        if it == max_iters or driver.finished:
            break
        params, opt_state, prev = train_step(params, opt_state, batch)

Iterations count optimizer updates (as in `lrpilot.controllers.base`): `step(it, ...)` is called
once for every `it` in 0..max_iters, in order, before update `it`, with the loss of update it-1.
LRs are absolute (the same units as `base_lr`), losses are in nats.

`LoopDriver` imports neither JAX nor torch (NumPy only): `OptaxLR` imports optax when built, `TorchLR`
only duck-types the optimizer (anything with `param_groups`), so each adapter works with
only its own framework installed.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np

from lrpilot.controllers.base import Controller, Observation, RunInfo


def _to_float(x: Any, what: str) -> float | None:
    """None stays None; a number, NumPy/JAX 0-d array or one-element torch tensor becomes a float
    (NaN and inf kept as they are). Anything else is a bug in the caller: TypeError."""
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"LoopDriver: {what} must be a scalar number or None, got {type(x).__name__}: {e}") from None


class LoopDriver:
    """Feeds a training loop's metrics to a `Controller` and returns the LR of each update: the one
    run driver, used by user loops (`step`) and by lrpilot's own batched trainer (`add_losses`,
    `observe`, `lrs`), so both deliver the same observations.

    Args:
        controller: any `Controller` (a schedule, reactive rule or `lrpilot.policy.load(...)`); it
            is `reset` here, so pass a fresh one or one you are happy to restart.
        base_lr: peak LR (absolute, > 0). min_lr: floor LR, default base_lr / 10.
        max_iters: number of optimizer updates in the run (> 0).
        warmup_iters: linear-warmup length in updates (default 0; controllers may override it).
        eval_interval: the protocol's evaluation spacing in updates; default
            max(max_iters // 10, 1), i.e. 10 evaluations plus iteration 0. Schedules and reactive
            controllers observe at these points by default; the learned policy observes at its
            own decision points (`observe_points`).
        seed: run seed handed to the controller (`RunInfo.seed`).
        n_params, tokens_per_update: the model's parameter count and batch x block, for controllers
            whose spec observes the run's context (a version-2 policy refuses to start without them).
    `LoopDriver.from_run(controller, run)` takes a `RunInfo` instead.

    Attributes:
        run: the `RunInfo` given to the controller. observe_points: sorted iterations at which
        `controller.observe` is called. last_lr: LR returned for the last update (None before).
        n_bad_lr: how many times the controller returned a non-finite or negative LR (replaced by
        the previous LR, or 0.0 before the first good one). n_observed: observations delivered.
        host_seconds: time spent inside the controller (its `observe` and `lr` calls).
        n_estimated: observations whose val loss the driver estimated (`Controller.val_estimate`).
    """

    def __init__(self, controller: Controller, base_lr: float, max_iters: int, min_lr: float | None = None,
                 warmup_iters: int = 0, eval_interval: int | None = None, seed: int = 0, n_params: int | None = None,
                 tokens_per_update: int | None = None):
        if eval_interval is None:
            eval_interval = max(int(max_iters) // 10, 1)
        run = RunInfo(base_lr=float(base_lr), min_lr=float(base_lr) / 10 if min_lr is None else float(min_lr),
                      warmup_iters=int(warmup_iters), max_iters=int(max_iters), eval_interval=int(eval_interval),
                      seed=int(seed), n_params=n_params, tokens_per_update=tokens_per_update)
        self._start(controller, run)

    @classmethod
    def from_run(cls, controller: Controller, run: RunInfo) -> "LoopDriver":
        self = cls.__new__(cls)
        self._start(controller, run)
        return self

    def _start(self, controller: Controller, run: RunInfo) -> None:
        self.controller, self.run = controller, run
        controller.reset(run)
        pts = sorted({int(p) for p in controller.observe_iters()})
        bad = [p for p in pts if not 0 <= p <= run.max_iters]
        if bad:
            raise ValueError(f"controller '{controller.name}' asked to observe at iterations {bad[:3]} "
                             f"outside [0, {run.max_iters}]")
        self.observe_points: tuple[int, ...] = tuple(pts)
        self._observe_set = frozenset(pts)
        self._estimate = bool(controller.needs_val and getattr(controller, "val_estimate", False))
        self._protocol = frozenset(run.eval_iters())
        self._span = int(np.diff(pts).max()) if len(pts) > 1 else run.max_iters  # an interval's length
        self._tail = np.zeros(0)  # the last `_span` train losses (val_estimate: the gap's train mean)
        self._gap: float | None = None  # last measured val - mean train loss over an interval's span
        self.n_estimated = 0
        self._losses: list = []  # train losses (floats or arrays) passed since the last observation
        self._health: list = []  # (grad_norm, clipped, update_ratio) arrays passed since then
        self._last_it: int | None = None
        self.last_lr: float | None = None
        self.n_bad_lr = 0
        self.n_observed = 0
        self.host_seconds = 0.0

    @property
    def finished(self) -> bool:
        """Whether the controller ended the run (`Controller.stop`, e.g. a policy episode that
        terminated on divergence); the loop should stop updating."""
        return bool(self.controller.stop)

    def wants_eval(self, it: int) -> bool:
        """True when iteration `it` is an observe point and the controller needs a validation loss
        there (with `val_estimate`: only before the protocol's first evaluation after iteration 0,
        or where the protocol evaluates anyway)."""
        if it not in self._observe_set or not self.controller.needs_val:
            return False
        return not self._estimate or it < self.run.eval_interval or it in self._protocol

    # ---- one iteration at a time (a user's loop) --------------------------------------------------
    def step(self, it: int, train_loss: Any = None, val_loss: Any = None) -> float:
        """Call once per iteration, before update `it`. Returns the LR of update `it` (float >= 0).

        train_loss: loss of update it-1 (None at it = 0 or when not computed); the mean of those
            passed since the last observation goes to the controller. val_loss: validation loss
            after `it` updates; used only at observe points. Either may be a Python/NumPy/JAX/torch
            scalar, NaN, inf or None: values are passed through, the controller decides (a
            non-scalar raises TypeError).
        """
        it = int(it)
        if self._last_it is not None and it <= self._last_it:
            raise ValueError(f"LoopDriver.step: iteration {it} after {self._last_it}; call it once per "
                             f"iteration, in increasing order")
        self._last_it = it
        tl = _to_float(train_loss, "train_loss")
        if tl is not None:
            self._losses.append(tl)
            self._keep_tail(tl)
        self.observe(it, val_loss)
        return self.lrs(it, 1)[0]

    # ---- chunks of iterations (lrpilot's batched trainer) -------------------------------------
    def add_losses(self, losses, grad_norm=None, clipped=None, update_ratio=None) -> None:
        """Train losses of consecutive updates (a 1-D array or a sequence of floats), and
        optionally their health metrics (arrays of the same length): the global gradient norm
        before clipping, whether each update was clipped, the update / parameter RMS ratio."""
        self._losses.append(np.asarray(losses))
        self._keep_tail(losses)
        if grad_norm is not None:
            self._health.append((np.asarray(grad_norm), np.asarray(clipped), np.asarray(update_ratio)))

    def _summary(self) -> dict:
        """The mean train loss and health metrics of the updates since the last observation."""
        out: dict = {}
        with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf losses give NaN statistics, silently
            if self._losses or self._health:
                out = self._statistics()
        self._losses, self._health = [], []
        return out

    def _statistics(self) -> dict:
        out: dict = {}
        if self._losses:
            losses = np.concatenate([np.ravel(x) for x in self._losses])
            out = {"train_loss": float(np.mean(losses)), "train_loss_std": float(np.std(losses))}
        if self._health:
            g, c, u = (np.concatenate([np.ravel(h[j]) for h in self._health]) for j in range(3))
            out.update(grad_norm_mean=float(np.mean(g)), grad_norm_max=float(np.max(g)), clip_frac=float(np.mean(c)),
                       update_rms_ratio=float(u[-1]))
        return out

    def observe(self, it: int, val_loss: Any = None) -> bool:
        """At an observe point, hands the controller the mean train loss (and health metrics) since
        the last one and `val_loss`; elsewhere does nothing. Returns whether it observed."""
        if it not in self._observe_set:  # val is ignored here, except as a gap measurement for an estimate
            val = _to_float(val_loss, "val_loss") if self._estimate else None
            if val is not None and len(self._tail):
                self._set_gap(val, float(np.mean(self._tail)))
            return False
        val = _to_float(val_loss, "val_loss")
        summary = self._summary()
        if self._estimate and it > 0 and "train_loss" in summary:
            if val is not None:
                self._set_gap(val, summary["train_loss"])
            elif self._gap is not None:  # NaN train losses give a NaN estimate: the controller's divergence
                val = summary["train_loss"] + self._gap
                self.n_estimated += 1
        t0 = time.perf_counter()
        self.controller.observe(Observation(it, val_loss=val, lr=self.last_lr, **summary))
        self.host_seconds += time.perf_counter() - t0
        self.n_observed += 1
        return True

    def _keep_tail(self, losses) -> None:
        if self._estimate:
            self._tail = np.concatenate([self._tail, np.ravel(np.asarray(losses, np.float64))])[-self._span:]

    def _set_gap(self, val: float, train_mean: float) -> None:
        if math.isfinite(val) and math.isfinite(train_mean):
            self._gap = val - train_mean

    def diverged(self, it: int) -> None:
        """The run diverged before iteration `it` and stops: the controller learns of it as NaN
        metrics at its next observe point (if any is left)."""
        nxt = [p for p in self.observe_points if p >= it]
        if nxt and not self.finished:
            self._losses, self._health = [], []
            t0 = time.perf_counter()
            self.controller.observe(Observation(nxt[0], train_loss=math.nan, val_loss=math.nan, lr=self.last_lr))
            self.host_seconds += time.perf_counter() - t0
            self.n_observed += 1

    def lrs(self, it0: int, n: int) -> list[float]:
        """The checked LRs of updates it0 .. it0+n-1."""
        t0 = time.perf_counter()
        out = [self._checked_lr(i, self.controller.lr(i)) for i in range(it0, it0 + n)]
        self.host_seconds += time.perf_counter() - t0
        return out

    def _checked_lr(self, it: int, lr: Any) -> float:
        try:
            x = None if isinstance(lr, (str, bytes)) else _to_float(lr, "lr")
        except TypeError:
            x = None
        if x is None or not math.isfinite(x) or x < 0:
            self.n_bad_lr += 1
            keep = self.last_lr if self.last_lr is not None else 0.0
            if self.n_bad_lr == 1:
                warnings.warn(f"controller '{self.controller.name}' returned lr={lr!r} at iteration {it}; "
                              f"keeping lr={keep} (counted in LoopDriver.n_bad_lr)", RuntimeWarning, stacklevel=4)
            x = keep
        self.last_lr = x
        return x


def _is_injected(path, name: str) -> bool:
    """Whether `path` ends in <name>/learning_rate, as `optax.inject_hyperparams` lays it out."""
    if len(path) < 2 or getattr(path[-1], "key", None) != "learning_rate":
        return False
    parent = path[-2]
    return getattr(parent, "name", getattr(parent, "key", None)) == name


class OptaxLR:
    """Sets the LR of an optax optimizer built with `optax.inject_hyperparams` (for example
    `optax.inject_hyperparams(optax.adamw)(learning_rate=0.0)`, possibly inside `optax.chain`).

    The new LR is a 0-d array of the state's own dtype, so a jitted update is not recompiled.
    """

    def __init__(self, driver: LoopDriver):
        import optax  # lazy: the driver itself is JAX-free

        self.driver = driver
        self._optax = optax

    @property
    def finished(self) -> bool:
        return self.driver.finished

    def wants_eval(self, it: int) -> bool:
        return self.driver.wants_eval(it)

    def set(self, opt_state, it: int, train_loss: Any = None, val_loss: Any = None):
        """`driver.step(it, train_loss, val_loss)`, then `opt_state` with its injected
        `learning_rate` (every one, in a chain) replaced by that LR. Raises ValueError when the
        state has no injected `learning_rate` or it is a schedule (which would overwrite it)."""
        import jax.numpy as jnp

        found = self._optax.tree.get_all_with_path(opt_state, "learning_rate")
        if any(_is_injected(p, "hyperparams_states") for p, _ in found):
            raise ValueError("OptaxLR: the optimizer's learning_rate is a schedule, which optax recomputes at every "
                             "update; build it with a number instead, e.g. "
                             "optax.inject_hyperparams(optax.adamw)(learning_rate=0.0)")
        injected = [v for p, v in found if _is_injected(p, "hyperparams")]
        if not injected:
            raise ValueError("OptaxLR: no injected 'learning_rate' hyperparameter in the optimizer state; wrap the "
                             "optimizer with optax.inject_hyperparams, e.g. "
                             "optax.inject_hyperparams(optax.adamw)(learning_rate=0.0)")
        lr = self.driver.step(it, train_loss, val_loss)
        dtype = getattr(injected[0], "dtype", jnp.float32)
        return self._optax.tree.set(opt_state, lambda path, _: _is_injected(path, "hyperparams"),
                                    learning_rate=jnp.asarray(lr, dtype))


class TorchLR:
    """Sets `param_group['lr']` of a PyTorch optimizer each iteration, as nanoGPT's loop does.

    Any object with a `param_groups` list of dicts works (torch is never imported here). Do not
    combine it with a `torch.optim.lr_scheduler`, which would also write the LR.
    """

    def __init__(self, driver: LoopDriver, optimizer):
        groups = getattr(optimizer, "param_groups", None)
        if not groups or not all(isinstance(g, dict) for g in groups):
            raise TypeError(f"TorchLR needs a torch optimizer (an object with param_groups), "
                            f"got {type(optimizer).__name__}")
        self.driver, self.optimizer = driver, optimizer

    @property
    def finished(self) -> bool:
        return self.driver.finished

    def wants_eval(self, it: int) -> bool:
        return self.driver.wants_eval(it)

    def step(self, it: int, train_loss: Any = None, val_loss: Any = None) -> float:
        """`driver.step(it, train_loss, val_loss)`, written to every param group; returns the LR."""
        lr = self.driver.step(it, train_loss, val_loss)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr


__all__ = ["LoopDriver", "OptaxLR", "TorchLR"]
