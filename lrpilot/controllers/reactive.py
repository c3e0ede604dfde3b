"""Controllers that react to the metrics: reduce-on-plateau, GreedyLR, tabular Q-learning.

All three apply the run's linear warmup on top of the LR they choose, observe every
`every` iterations (0: at the protocol's evaluations), and survive NaN or missing
metrics (a non-finite loss counts as "no improvement"; a missing one is ignored).
"""

from __future__ import annotations

import collections
import json
import math
import random
from pathlib import Path

from lrpilot.controllers.base import Observation, finite, warmup_lr
from lrpilot.controllers.schedules import Schedule
from lrpilot.io import write_json


class Reactive(Schedule):
    """Shared plumbing: option parsing, warmup, observation points, current LR."""

    metric = "val"
    default_every_div = 0  # every < 0: observe every max_iters // default_every_div iterations

    def reset(self, run):
        super().reset(run)
        if self.opts.get("metric", "val") not in ("val", "train"):
            raise ValueError(f"controller '{self.name}': metric must be val or train, got {self.opts['metric']!r}")
        self.current = self.peak

    def observe_iters(self):
        every = self.opts.get("every", 0)
        run = self._run()
        if every < 0 and self.default_every_div:
            every = max(run.max_iters // self.default_every_div, 1)
        if every <= 0:
            return run.eval_iters()
        pts = list(range(0, run.max_iters + 1, int(every)))
        return pts if pts[-1] == run.max_iters else pts + [run.max_iters]

    @property
    def needs_val(self) -> bool:
        return self.opts.get("metric", "val") == "val"

    def value(self, obs: Observation) -> float | None:
        """The observed metric; NaN/inf become +inf (worse than anything), missing stays None."""
        v = obs.val_loss if self.opts.get("metric", "val") == "val" else obs.train_loss
        if v is None:
            return None
        return float(v) if finite(v) else math.inf

    def lr(self, it):
        if it < self.warmup:
            return warmup_lr(self._run(), it, self.current, self.warmup)
        return self.current


class Plateau(Reactive):
    """Reduce-on-plateau with optax.contrib.reduce_on_plateau's rules on the observed loss.

    The LR is peak * scale. Every `accumulation_size` observations the average loss is
    compared with the best: improved if avg < (1 - rtol) * best - atol. After `patience`
    observations without improvement (outside cooldown) scale *= factor (not below min_scale,
    default min_lr / base_lr) and a cooldown of `cooldown` observations starts.
    """

    name = "plateau"
    defaults = {"lr_mult": 1.0, "warmup": -1, "every": 0, "metric": "val", "factor": 0.5, "patience": 1,
                "rtol": 1e-4, "atol": 0.0, "cooldown": 0, "accumulation_size": 1, "min_scale": -1.0}

    def reset(self, run):
        super().reset(run)
        if not 0 < self.opts["factor"] < 1:
            raise ValueError(f"controller 'plateau': factor must be in (0, 1), got {self.opts['factor']}")
        self.best, self.plateau_count, self.cooldown_count = math.inf, 0, 0
        self.scale, self.count, self.avg = 1.0, 0, 0.0

    def observe(self, obs):
        v = self.value(obs)
        if v is None or obs.iter == 0:
            return
        self.count += 1
        self.avg = ((self.count - 1) * self.avg + v) / self.count
        if self.count < self.opts["accumulation_size"]:
            return
        avg, self.count, self.avg = self.avg, 0, 0.0
        improved = avg < (1 - self.opts["rtol"]) * self.best - self.opts["atol"]
        if improved:
            self.best = avg
        count = 0 if improved else self.plateau_count + 1
        if self.cooldown_count > 0:
            self.plateau_count, self.cooldown_count = 0, self.cooldown_count - 1
        elif count == self.opts["patience"]:
            min_scale = self.opts["min_scale"] if self.opts["min_scale"] >= 0 else self.floor / self.peak
            self.scale = max(self.scale * self.opts["factor"], min_scale)
            self.plateau_count, self.cooldown_count = 0, self.opts["cooldown"]
        else:
            self.plateau_count = count
        self.current = self.peak * self.scale


class GreedyLR(Reactive):
    """GreedyLR with Hugging Face transformers' rules on the observed loss (default: the mean
    training loss every max_iters/100 iterations, which costs no evaluation).

    Better if loss < best - threshold (threshold_mode abs) or < best * (1 - threshold) (rel).
    More than `patience` better observations in a row: LR / factor (up to max_lr); more than
    `patience` worse ones: LR * factor (down to min_lr). A cooldown (after a decrease) or
    warmup (after an increase) of that many observations freezes the counters. With
    `smooth`, the loss is a streaming mean over `window` observations. After `reset_start`
    decreases stuck at min_lr the controller resets to its initial LR.
    Defaults min_lr = the run's min LR, max_lr = 10 x peak.
    """

    name = "greedylr"
    defaults = {"lr_mult": 1.0, "warmup": -1, "every": -1, "metric": "train", "factor": 0.95, "patience": 10,
                "threshold": 1e-6, "threshold_mode": "abs", "cooldown": 0, "patience_warmup": 0,
                "min_lr": -1.0, "max_lr": -1.0, "smooth": False, "window": 50, "reset_start": 500}

    default_every_div = 100

    def reset(self, run):
        super().reset(run)
        if not 0 < self.opts["factor"] < 1:
            raise ValueError(f"controller 'greedylr': factor must be in (0, 1), got {self.opts['factor']}")
        if self.opts["threshold_mode"] not in ("abs", "rel"):
            raise ValueError(f"controller 'greedylr': threshold_mode must be abs or rel, got {self.opts['threshold_mode']!r}")
        self.lo = self.opts["min_lr"] if self.opts["min_lr"] >= 0 else self.floor
        self.hi = self.opts["max_lr"] if self.opts["max_lr"] > 0 else 10 * self.peak
        self.best, self.good, self.bad = math.inf, 0, 0
        self.cooldown_counter = self.warmup_counter = 0
        self.reset_left = self.opts["reset_start"]
        self.window = collections.deque(maxlen=max(int(self.opts["window"]), 1))

    def _better(self, v):
        t = self.opts["threshold"]
        return v < self.best * (1 - t) if self.opts["threshold_mode"] == "rel" else v < self.best - t

    def observe(self, obs):
        v = self.value(obs)
        if v is None or obs.iter == 0:
            return
        if self.opts["smooth"] and math.isfinite(v):
            self.window.append(v)
            v = sum(self.window) / len(self.window)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.good = self.bad = 0
        elif self.warmup_counter > 0:
            self.warmup_counter -= 1
            self.good = self.bad = 0
        else:
            if self._better(v):
                self.best, self.bad, self.good = v, 0, self.good + 1
            else:
                self.bad, self.good = self.bad + 1, 0
            if self.good > self.opts["patience"]:
                self.current = min(self.current / self.opts["factor"], self.hi)
                self.warmup_counter, self.good = self.opts["patience_warmup"], 0
                self.reset_left = self.opts["reset_start"]
            elif self.bad > self.opts["patience"]:
                self.current = max(self.current * self.opts["factor"], self.lo)
                self.cooldown_counter, self.bad = self.opts["cooldown"], 0
                if self.current <= self.lo:
                    self.reset_left -= 1
                    if self.reset_left <= 0:
                        self.reset(self._run())


class QLearning(Reactive):
    """Tabular Q-learning on (val loss, LR) that really sets the LR.

    State: (bin of val_loss / first val_loss over [0, 1.5] in `loss_bins` bins, bin of
    log10(lr / peak) over [-2, 1] in `lr_bins` bins). Actions a in {-1, 0, 1}: lr *= 1 + step * a,
    clipped to [0.01, 10] x peak. Reward: decrease of the val loss since the last decision
    (relative to the first val loss). Epsilon-greedy with its own seeded RNG; one-step
    Q-learning with rate alpha and discount gamma. `table=PATH` loads the Q-table from a JSON
    file at reset (if it exists) and saves it after every update, so it learns across runs.
    Decides every `every` iterations (default max_iters / 40).
    """

    name = "qlearning"
    defaults = {"lr_mult": 1.0, "warmup": -1, "every": -1, "metric": "val", "step": 0.1, "alpha": 0.1,
                "gamma": 0.9, "epsilon": 0.1, "loss_bins": 10, "lr_bins": 9, "table": None}
    ACTIONS = (-1, 0, 1)

    default_every_div = 40

    def reset(self, run):
        super().reset(run)
        self.rng = random.Random(run.seed)
        self.q: dict[tuple[int, int], list[float]] = {}
        path = self.opts["table"]
        if path and Path(path).is_file():
            data = json.loads(Path(path).read_text())
            self.q = {tuple(map(int, k.split(","))): list(v) for k, v in data.items()}
        self.v0 = None
        self.prev: tuple[tuple[int, int], int, float] | None = None  # (state, action, val)

    def _state(self, val: float) -> tuple[int, int]:
        nb, lb = self.opts["loss_bins"], self.opts["lr_bins"]
        rel = val / self.v0 if math.isfinite(val) else 1.5
        li = min(max(int(rel / 1.5 * nb), 0), nb - 1)
        x = math.log10(self.current / self.peak)
        ri = min(max(int((x + 2) / 3 * lb), 0), lb - 1)
        return li, ri

    def _qs(self, s):
        return self.q.setdefault(s, [0.0] * len(self.ACTIONS))

    def observe(self, obs):
        v = self.value(obs)
        if v is None:
            return
        if self.v0 is None:
            if not math.isfinite(v) or v <= 0:
                return
            self.v0 = v
        s = self._state(v)
        if self.prev is not None:
            ps, pa, pv = self.prev
            reward = (pv - v) / self.v0 if math.isfinite(v) else -1.0
            target = reward + self.opts["gamma"] * max(self._qs(s))
            qs = self._qs(ps)
            qs[pa] += self.opts["alpha"] * (target - qs[pa])
            if self.opts["table"]:
                write_json(self.opts["table"], {f"{k[0]},{k[1]}": q for k, q in self.q.items()})
        if self.rng.random() < self.opts["epsilon"]:
            a = self.rng.randrange(len(self.ACTIONS))
        else:
            qs = self._qs(s)
            a = max(range(len(qs)), key=lambda i: (qs[i], -abs(self.ACTIONS[i])))
        factor = 1 + self.opts["step"] * self.ACTIONS[a]
        self.current = min(max(self.current * factor, 0.01 * self.peak), 10 * self.peak)
        self.prev = (s, a, v if math.isfinite(v) else 1.5 * self.v0)


REACTIVE = {c.name: c for c in (Plateau, GreedyLR, QLearning)}
