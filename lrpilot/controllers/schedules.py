"""Fixed LR schedules. Each maps an iteration to an LR from the run's base and min LR.

Common options: `lr_mult` scales base and min LR (a "tuned peak"), `warmup` is the
number of nanoGPT linear-warmup iterations (-1: the run's `warmup_iters`). After the
warmup, `s = it - warmup` runs over `S = max_iters - warmup` decay iterations, from the
peak `p = base_lr * lr_mult` towards the floor `m = min_lr * lr_mult`.
"""

from __future__ import annotations

import math

from lrpilot.controllers.base import Controller, warmup_lr


def cosine_decay(peak, floor, frac, cos=math.cos):
    """nanoGPT's cosine: `peak` at frac 0 down to `floor` at frac 1 (half a cosine period).

    The one definition of the cosine shape, used by the schedules, the explorers and the
    simulator's baselines; `cos=jnp.cos` makes it traceable by JAX."""
    return floor + 0.5 * (1.0 + cos(math.pi * frac)) * (peak - floor)


class Schedule(Controller):
    """A controller whose LR depends on the iteration only."""

    defaults: dict = {"lr_mult": 1.0, "warmup": -1}

    def __init__(self, **options):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"controller '{self.name}': unknown option(s) {sorted(unknown)}; valid options: "
                + ", ".join(f"{k} (default {v})" for k, v in self.defaults.items())
            )
        self.opts = dict(self.defaults)
        for k, v in options.items():
            self.opts[k] = _coerce(self.name, k, v, self.defaults[k])
        if not self.opts["lr_mult"] > 0:
            raise ValueError(f"controller '{self.name}': lr_mult must be > 0, got {self.opts['lr_mult']}")
        self.run = None

    def describe(self) -> dict:
        return {"name": self.name, **self.opts}

    # helpers
    @property
    def peak(self) -> float:
        return self._run().base_lr * self.opts["lr_mult"]

    @property
    def floor(self) -> float:
        return self._run().min_lr * self.opts["lr_mult"]

    @property
    def warmup(self) -> int:
        w = self.opts["warmup"]
        return self._run().warmup_iters if w < 0 else min(int(w), self._run().max_iters)

    def lr(self, it: int) -> float:
        w = self.warmup
        if it < w:
            return warmup_lr(self._run(), it, self.peak, w)
        return self.after_warmup(it - w, max(self._run().max_iters - w, 1))

    def after_warmup(self, s: int, S: int) -> float:
        raise NotImplementedError


def _coerce(ctrl: str, key: str, value, default):
    """Converts an option value (often a string from the command line) to the default's type."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes"):
                    return True
                if value.lower() in ("0", "false", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, (tuple, list)):
            items = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
            return tuple(float(v) for v in items)
        if default is None or isinstance(default, str):
            return value if value is None else str(value)
        if isinstance(default, int):
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"controller '{ctrl}': option {key}={value!r} is not a valid {type(default).__name__} (default {default!r})"
        ) from None


class Constant(Schedule):
    """lr = peak (no warmup unless `warmup` is given: nanoGPT with decay_lr=False)."""

    name = "constant"
    defaults = {"lr_mult": 1.0, "warmup": 0}

    def after_warmup(self, s, S):
        return self.peak


class Cosine(Schedule):
    """nanoGPT's get_lr: linear warmup, then cosine from peak to floor at max_iters."""

    name = "cosine"

    def after_warmup(self, s, S):
        ratio = min(s / S, 1.0)
        return cosine_decay(self.peak, self.floor, ratio)


class WSD(Schedule):
    """Warmup-stable-decay: peak until the last `decay_frac` of the run, then decays to the floor.

    shape: linear, cosine or sqrt (1 - sqrt of the decay fraction done).
    """

    name = "wsd"
    defaults = {"lr_mult": 1.0, "warmup": -1, "decay_frac": 0.2, "shape": "linear"}

    def lr(self, it):
        if self.opts["shape"] not in ("linear", "cosine", "sqrt"):
            raise ValueError(f"controller 'wsd': shape must be linear, cosine or sqrt, got {self.opts['shape']!r}")
        if not 0 < self.opts["decay_frac"] <= 1:
            raise ValueError(f"controller 'wsd': decay_frac must be in (0, 1], got {self.opts['decay_frac']}")
        return super().lr(it)

    def decay_start(self) -> int:
        T = self._run().max_iters
        return max(self.warmup, T - round(self.opts["decay_frac"] * T))

    def after_warmup(self, s, S):
        it, T, d0 = s + self.warmup, self._run().max_iters, self.decay_start()
        if it < d0:
            return self.peak
        frac = min((it - d0) / max(T - d0, 1), 1.0)
        shape = self.opts["shape"]
        f = {"linear": frac, "cosine": 0.5 * (1 - math.cos(math.pi * frac)), "sqrt": math.sqrt(frac)}[shape]
        return self.peak + (self.floor - self.peak) * f


def _default_gamma(ctrl: Schedule, n_drops: int) -> float:
    """Factor per drop that reaches the floor after `n_drops` drops (0.1 when the floor is 0)."""
    if ctrl.opts["gamma"] > 0:
        return ctrl.opts["gamma"]
    return (ctrl.floor / ctrl.peak) ** (1.0 / n_drops) if ctrl.floor > 0 else 0.1


class Step(Schedule):
    """StepLR after warmup: peak * gamma**floor(s / step_size).

    Defaults: step_size = ceil(S / 3) (three stages), gamma such that the last stage is the floor.
    """

    name = "step"
    defaults = {"lr_mult": 1.0, "warmup": -1, "step_size": 0, "gamma": 0.0}

    def after_warmup(self, s, S):
        if self.opts["step_size"] < 0:
            raise ValueError(f"controller 'step': step_size must be >= 0 (0: default), got {self.opts['step_size']}")
        size = self.opts["step_size"] or math.ceil(S / 3)
        n_drops = max(math.ceil(S / size) - 1, 1)
        return self.peak * _default_gamma(self, n_drops) ** (s // size)


class MultiStep(Schedule):
    """MultiStepLR after warmup: multiplied by gamma at each milestone (fractions of S)."""

    name = "multistep"
    defaults = {"lr_mult": 1.0, "warmup": -1, "milestones": (0.5, 0.75), "gamma": 0.0}

    def after_warmup(self, s, S):
        ms = sorted(self.opts["milestones"])
        if not all(0 < m < 1 for m in ms):
            raise ValueError(f"controller 'multistep': milestones must be fractions in (0, 1), got {ms}")
        passed = sum(s >= round(m * S) for m in ms)
        return self.peak * _default_gamma(self, len(ms)) ** passed


class Linear(Schedule):
    """Linear decay from peak to floor after warmup."""

    name = "linear"

    def after_warmup(self, s, S):
        return self.peak + (self.floor - self.peak) * min(s / S, 1.0)


class Exponential(Schedule):
    """Exponential decay after warmup: peak * gamma**s, gamma reaching the floor at S by default."""

    name = "exponential"
    defaults = {"lr_mult": 1.0, "warmup": -1, "gamma": 0.0}

    def after_warmup(self, s, S):
        if self.opts["gamma"] > 0:
            return self.peak * self.opts["gamma"] ** s
        if self.floor <= 0:
            raise ValueError("controller 'exponential': min_lr is 0; give gamma=<per-iteration factor>")
        return self.peak * (self.floor / self.peak) ** min(s / S, 1.0)


class Polynomial(Schedule):
    """(peak - floor) * (1 - s/S)**power + floor after warmup."""

    name = "polynomial"
    defaults = {"lr_mult": 1.0, "warmup": -1, "power": 2.0}

    def after_warmup(self, s, S):
        return (self.peak - self.floor) * (1 - min(s / S, 1.0)) ** self.opts["power"] + self.floor


class OneCycle(Schedule):
    """OneCycleLR (cosine annealing; optax.cosine_onecycle_schedule): peak/div_factor up to peak at
    pct_start of the run, then down to peak/div_factor/final_div_factor. Has its own ramp: no warmup."""

    name = "onecycle"
    defaults = {"lr_mult": 1.0, "warmup": 0, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4}

    def after_warmup(self, s, S):
        init = self.peak / self.opts["div_factor"]
        final = init / self.opts["final_div_factor"]
        up = int(self.opts["pct_start"] * S)
        if s < up:
            return cosine_decay(init, self.peak, s / up)
        return cosine_decay(self.peak, final, min((s - up) / max(S - up, 1), 1.0))


class CosineRestarts(Schedule):
    """CosineAnnealingWarmRestarts (SGDR) after warmup: cycles of length cycle, cycle*t_mult, ...

    Defaults: t_mult 2 and cycle = ceil(S / 7), so three cycles (1 + 2 + 4) cover the run and the
    third ends at (or within 6 iterations after) max_iters: no restart back to the peak at the end.
    Each restart's peak is multiplied by `restart_decay`.
    """

    name = "cosine_restarts"
    defaults = {"lr_mult": 1.0, "warmup": -1, "cycle": 0, "t_mult": 2.0, "restart_decay": 1.0}

    def after_warmup(self, s, S):
        t_i = self.opts["cycle"] or max(math.ceil(S / 7), 1)
        peak, t = self.peak, s
        while t >= t_i:
            t -= t_i
            t_i = max(int(round(t_i * self.opts["t_mult"])), 1)
            peak *= self.opts["restart_decay"]
        return cosine_decay(peak, self.floor, t / t_i)


class Cyclic(Schedule):
    """CyclicLR: between the floor and the peak with half-cycle `step_size` (default S // 8).

    mode: triangular, triangular2 (amplitude halves each cycle) or exp_range (amplitude * gamma**s).
    """

    name = "cyclic"
    defaults = {"lr_mult": 1.0, "warmup": 0, "step_size": 0, "mode": "triangular", "gamma": 0.9995}

    def after_warmup(self, s, S):
        mode = self.opts["mode"]
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"controller 'cyclic': mode must be triangular, triangular2 or exp_range, got {mode!r}")
        if self.opts["step_size"] < 0:
            raise ValueError(f"controller 'cyclic': step_size must be >= 0 (0: default), got {self.opts['step_size']}")
        step = self.opts["step_size"] or max(S // 8, 1)
        cycle = math.floor(1 + s / (2 * step))
        x = abs(s / step - 2 * cycle + 1)
        scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": self.opts["gamma"] ** s}[mode]
        return self.floor + (self.peak - self.floor) * max(0.0, 1 - x) * scale


class ScheduleFree(Schedule):
    """Schedule-free AdamW (optax.contrib.schedule_free): warmup, then constant peak; evaluated at
    the schedule-free averaged parameters."""

    name = "schedule_free"
    optimizer = "schedule_free"

    def after_warmup(self, s, S):
        return self.peak


class Prodigy(Schedule):
    """Prodigy (optax.contrib.prodigy): the LR is Prodigy's multiplier of its estimated step size,
    `lr` (default 1) with warmup, then cosine (or constant) down to lr * min_lr / base_lr."""

    name = "prodigy"
    optimizer = "prodigy"
    defaults = {"lr": 1.0, "lr_mult": 1.0, "warmup": -1, "schedule": "cosine"}

    @property
    def peak(self):
        return self.opts["lr"] * self.opts["lr_mult"]

    @property
    def floor(self):
        run = self._run()
        return self.peak * run.min_lr / run.base_lr

    def after_warmup(self, s, S):
        if self.opts["schedule"] == "constant":
            return self.peak
        if self.opts["schedule"] != "cosine":
            raise ValueError(f"controller 'prodigy': schedule must be cosine or constant, got {self.opts['schedule']!r}")
        return cosine_decay(self.peak, self.floor, min(s / S, 1.0))


SCHEDULES = {c.name: c for c in (Constant, Cosine, WSD, Step, MultiStep, Linear, Exponential, Polynomial,
                                 OneCycle, CosineRestarts, Cyclic, ScheduleFree, Prodigy)}
