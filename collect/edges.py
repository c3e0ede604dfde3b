"""Explorers of dataset v2: the behaviours a controller that must fix a mis-set LR needs to
have seen, up to the edges (stalls and divergence).

* `Anneal`: warmup over `warmup` decisions, a plateau at `peak`, then a decay that starts at
  `start` (a fraction of the run, 0.5-0.95), lasts `length` and ends at `depth` x peak, shaped
  linear, cosine or exponential.
* `Restarts`: `cycles` cosine cycles from peak to peak/10, each restart's peak x `decay`.
* `Ramp`: raises the LR by `factor` at every decision until the validation loss stops
  improving for `patience` decisions (or the run diverges, as the spec defines it), then
  `after`: holds, halves once, or anneals by 0.8 per decision.

* `Fork`: the branches of a forked group (family `fork`): every run of the group has the same
  seed (the same initialisation, batches and evaluation batches), the same base LR and the same
  schedule up to decision `at`; there branch b takes action b (the last branch a random walk
  from there on), then the schedule again. The branches' differences after `at` are the
  effect of the action alone, without the run-to-run noise that hides it in unpaired runs.

* `sample_timing`: the branches of an anneal-timing group (family `timing`): one seed, 9 runs,
  configured at x1, x3 and x10 of the model's default LR, each holding its LR and annealing from
  25%, 50% or 75% of the run to its end. Their final losses rank when to anneal and how high to
  hold before it, the judgement a deployed policy makes at a too-high configured LR.
* `sample_drop`: the branches of a drop group (family `timing_drop`): one seed, 9 runs configured at
  one LR, each cutting it as fast as the actions allow (halving at every decision) from 5%, 30% or
  55% of the run down to 0.1x, 0.01x or 0.001x and holding it there: what a too-deep, too-early
  anneal costs against a shallower or later one, the failure a policy finds in a simulator that
  prices a vanishing LR too cheaply.

`sample_explorer_v2` draws one of these or of the starter's explorers (walks, cosine, WSD,
constant with random warmups). Peaks are drawn half relative to the configured base LR and
half relative to the model's default LR (`peak_abs / base_mult`), so a run with a mis-set
base LR is explored both where its own LR is and where a good LR is.
"""

from __future__ import annotations

import math
import random

from lrpilot.collect.explore import EpsilonPolicy, Follow, RandomWalk
from lrpilot.controllers.schedules import cosine_decay
from lrpilot.controllers.spec_controller import ScheduleFollower, SpecController
from lrpilot.spec import DEFAULT_SPEC, EnvSpec

V2_MIX = {"walk": 0.22, "cosine": 0.12, "wsd": 0.07, "constant": 0.06, "anneal": 0.2, "ramp": 0.23, "restarts": 0.1}


class _Noisy:
    """Epsilon noise for a follower: with probability epsilon a uniformly random action."""

    def reset(self, run):
        super().reset(run)
        self.rng = random.Random(self.seed)

    def choose(self, k):
        if self.rng.random() < self.epsilon:
            return self.rng.randrange(self.spec.n_actions)
        return super().choose(k)


class Anneal(_Noisy, ScheduleFollower):
    name = "anneal"

    def __init__(self, peak: float, start: float, length: float, depth: float, shape: str, warmup: int, seed: int,
                 epsilon: float = 0.0, spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        if shape not in ("linear", "cosine", "exp") or not 0 < start < 1 or not 0 < length or not 0 < depth <= 1:
            raise ValueError(f"anneal: bad shape/start/length/depth {shape!r}, {start}, {length}, {depth}")
        self.peak, self.start, self.length, self.depth, self.shape = peak, start, length, depth, shape
        self.warmup, self.seed, self.epsilon = warmup, seed, epsilon

    def target_rel(self, k):
        x = (k + 0.5) / self.spec.n_decisions
        if k < self.warmup:
            return self.peak * (k + 1) / (self.warmup + 1)
        frac = min(max((x - self.start) / self.length, 0.0), 1.0)
        floor = self.peak * self.depth
        if self.shape == "exp":
            return self.peak * self.depth**frac
        if self.shape == "cosine":
            return cosine_decay(self.peak, floor, frac)
        return self.peak + (floor - self.peak) * frac

    def describe(self):
        return {"name": self.name, "peak": self.peak, "start": self.start, "length": self.length, "depth": self.depth,
                "shape": self.shape, "warmup": self.warmup, "seed": self.seed, "epsilon": self.epsilon}


class Restarts(_Noisy, ScheduleFollower):
    name = "restarts"

    def __init__(self, peak: float, cycles: int, decay: float, seed: int, epsilon: float = 0.0,
                 spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        if cycles < 1 or not 0 < decay <= 1:
            raise ValueError(f"restarts: need cycles >= 1 and decay in (0, 1], got {cycles}, {decay}")
        self.peak, self.cycles, self.decay, self.seed, self.epsilon = peak, cycles, decay, seed, epsilon

    def target_rel(self, k):
        x = (k + 0.5) / self.spec.n_decisions * self.cycles
        c = min(int(x), self.cycles - 1)
        p = self.peak * self.decay**c
        return cosine_decay(p, p / 10, x - c)

    def describe(self):
        return {"name": self.name, "peak": self.peak, "cycles": self.cycles, "decay": self.decay, "seed": self.seed,
                "epsilon": self.epsilon}


class Ramp(SpecController):
    """Pushes the LR up until the loss stalls (no better normalised val by more than `tol` for
    `patience` decisions) or diverges; then `after` in {hold, backoff, anneal}."""

    name = "ramp"

    def __init__(self, start: float, factor: float, patience: int, after: str, seed: int, tol: float = 0.002,
                 spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        if after not in ("hold", "backoff", "anneal") or patience < 1:
            raise ValueError(f"ramp: after must be hold, backoff or anneal and patience >= 1, got {after!r}, {patience}")
        self.start, self.factor, self.patience, self.after, self.seed, self.tol = start, factor, patience, after, seed, tol
        self._up = min(range(spec.n_actions), key=lambda a: abs(math.log(spec.actions[a] / factor)))
        self._down = min(range(spec.n_actions), key=lambda a: abs(math.log(spec.actions[a] / 0.8)))
        self._half = min(range(spec.n_actions), key=lambda a: abs(math.log(spec.actions[a] / 0.5)))

    def reset(self, run):
        super().reset(run)
        self.best, self.since_best, self.stalled_at = math.inf, 0, None

    def choose(self, k):
        spec = self.spec
        if k == 0:  # the first interval warms up to `start` x base (the closest action)
            return min(range(spec.n_actions), key=lambda a: abs(math.log(spec.actions[a] / self.start)))
        val = float(self.obs[k][spec.index("val")])
        if val < self.best - self.tol:
            self.best, self.since_best = val, 0
        else:
            self.since_best += 1
        if self.stalled_at is None:
            if self.since_best < self.patience:
                return self._up
            self.stalled_at = k
        if self.after == "backoff":
            return self._half if k == self.stalled_at else spec.noop_action
        if self.after == "anneal":
            return self._down
        return spec.noop_action

    def describe(self):
        return {"name": self.name, "start": self.start, "factor": self.factor, "patience": self.patience,
                "after": self.after, "tol": self.tol, "seed": self.seed}


def _peak(rng: random.Random, base_mult: float, spec: EnvSpec) -> float:
    """Half the time logU[0.1, 10] x the configured base LR, half logU[0.1, 10] x the default LR."""
    lo, hi = spec.lr_range
    rel = 10 ** rng.uniform(-1, 1)
    if rng.random() < 0.5:
        rel /= base_mult
    return round(min(max(rel, lo), hi), 4)


def sample_explorer_v2(rng: random.Random, seed: int, base_mult: float, spec: EnvSpec = DEFAULT_SPEC,
                       policy_path: str | None = None, mix: dict[str, float] | None = None) -> SpecController:
    """Draws an explorer of dataset v2 for a run whose base LR is `base_mult` x the default LR."""
    mix = dict(mix or V2_MIX)
    if policy_path is None:
        mix.pop("policy", None)
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    eps = rng.choice([0.0, 0.0, 0.1, 0.2])
    if kind == "walk":
        alpha = [rng.gammavariate(0.7, 1.0) + 1e-3 for _ in range(spec.n_actions)]
        return RandomWalk(seed, stickiness=round(rng.uniform(0.0, 0.8), 3), weights=tuple(round(a, 4) for a in alpha), spec=spec)
    if kind == "policy":
        return EpsilonPolicy(policy_path, epsilon=rng.choice([0.05, 0.1, 0.2, 0.3]), seed=seed, spec=spec)
    if kind == "ramp":
        return Ramp(start=round(10 ** rng.uniform(-1, 0.5), 4), factor=rng.choice([1.25, 2.0]),
                    patience=rng.choice([1, 2]), after=rng.choice(["hold", "backoff", "anneal"]), seed=seed, spec=spec)
    peak = _peak(rng, base_mult, spec)
    if kind == "anneal":
        start = round(rng.uniform(0.5, 0.95), 3)
        return Anneal(peak, start=start, length=round(rng.uniform(0.05, 1.0 - start + 0.05), 3),
                      depth=round(10 ** rng.uniform(-2, math.log10(0.5)), 4), shape=rng.choice(["linear", "cosine", "exp"]),
                      warmup=rng.choice([0, 0, 1, 2, 4]), seed=seed, epsilon=eps, spec=spec)
    if kind == "restarts":
        return Restarts(peak, cycles=rng.choice([2, 3, 4]), decay=round(rng.uniform(0.5, 1.0), 3), seed=seed,
                        epsilon=eps, spec=spec)
    return Follow(kind, peak, seed, epsilon=eps, spec=spec, warmup=rng.choice([0, 0, 1, 2, 4]))


class Fork(ScheduleFollower):
    """Follows `base` (a schedule follower), except at decision `at`: action `action` there, or,
    with `action` None, a random walk (`seed`) from `at` on."""

    name = "fork"

    def __init__(self, base: ScheduleFollower, at: int, action: int | None, seed: int, spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        if not 0 < at < spec.n_decisions or (action is not None and not 0 <= action < spec.n_actions):
            raise ValueError(f"fork: need 0 < at < {spec.n_decisions} and an action in [0, {spec.n_actions}) or None, "
                             f"got at={at}, action={action}")
        self.base, self.at, self.action, self.seed = base, at, action, seed

    def reset(self, run):
        super().reset(run)
        self.base.reset(run)
        self.rng = random.Random(self.seed)

    def target_rel(self, k):
        return self.base.target_rel(k)

    def choose(self, k):
        if k == self.at and self.action is not None:
            return self.action
        if k >= self.at and self.action is None:
            return self.rng.randrange(self.spec.n_actions)
        return super().choose(k)

    def describe(self):
        return {"name": self.name, "at": self.at, "action": self.action, "seed": self.seed, "base": self.base.describe()}


def sample_fork(rng: random.Random, branch: int, seed: int, base_mult: float, spec: EnvSpec = DEFAULT_SPEC) -> Fork:
    """Branch `branch` of a forked group whose shared draws come from `rng` (seeded by the group):
    the base schedule (cosine, WSD, constant or an anneal, noise-free) and the fork decision, drawn
    from the second half of the run 2 times in 3 (where the anneal's effect lives) and else from the
    first. Branches 0..A-1 take action `branch`; the others walk at random with their own `seed`."""
    kind = rng.choice(["cosine", "wsd", "constant", "anneal"])
    peak = _peak(rng, base_mult, spec)
    n = spec.n_decisions
    if kind == "anneal":
        start = round(rng.uniform(0.5, 0.95), 3)
        base = Anneal(peak, start=start, length=round(rng.uniform(0.05, 1.0 - start + 0.05), 3),
                      depth=round(10 ** rng.uniform(-2, math.log10(0.5)), 4), shape=rng.choice(["linear", "cosine", "exp"]),
                      warmup=rng.choice([0, 1, 2]), seed=0, spec=spec)
    else:
        base = Follow(kind, peak, 0, spec=spec, warmup=rng.choice([0, 1, 2]))
    at = rng.randrange(n // 2, n - 1) if rng.random() < 2 / 3 else rng.randrange(2, n // 2)
    return Fork(base, at, branch if branch < spec.n_actions else None, seed, spec=spec)


TIMING_LEVELS = (1.0, 3.0, 10.0)  # an anneal-timing branch's configured base LR, x the model's default LR
TIMING_STARTS = (0.25, 0.5, 0.75)  # where its anneal starts, a fraction of the run
TIMING_GRID = len(TIMING_LEVELS) * len(TIMING_STARTS)  # runs in an anneal-timing group


def sample_timing(rng: random.Random, branch: int, seed: int, spec: EnvSpec = DEFAULT_SPEC,
                  levels: tuple[float, ...] = TIMING_LEVELS) -> tuple[Anneal, float]:
    """(explorer, base-LR multiplier) of branch `branch` (0..8) of an anneal-timing group whose shared
    draws (anneal depth logU[0.01, 0.1] and shape) come from `rng`, seeded by the group. The run is
    configured at levels[branch % 3] x the default LR (the family's; TIMING_LEVELS by default), holds
    it and anneals from TIMING_STARTS[branch // 3] of the run to its end, noise-free."""
    if not 0 <= branch < TIMING_GRID:
        raise ValueError(f"timing: branch must be in [0, {TIMING_GRID}), got {branch}")
    if len(levels) != len(TIMING_LEVELS) or not all(x > 0 for x in levels):
        raise ValueError(f"timing: levels must be {len(TIMING_LEVELS)} positive LR multipliers, got {levels}")
    depth, shape = round(10 ** rng.uniform(-2, -1), 4), rng.choice(["cosine", "linear"])
    start = TIMING_STARTS[branch // len(TIMING_LEVELS)]
    return (Anneal(1.0, start=start, length=1.0 - start, depth=depth, shape=shape, warmup=0, seed=seed, spec=spec),
            levels[branch % len(levels)])


DROP_STARTS = (0.05, 0.3, 0.55)  # where a drop branch starts cutting its LR, a fraction of the run
DROP_FLOORS = (0.1, 0.01, 0.001)  # the LR it cuts to, x the configured one (0.001: the spec's lowest, lr_range)
DROP_LEVELS = (1.0, 10.0)  # a drop group's configured LR: x logU over this range of the model's default


def sample_drop(rng: random.Random, branch: int, seed: int, spec: EnvSpec = DEFAULT_SPEC) -> tuple[Anneal, float]:
    """(explorer, base-LR multiplier) of branch `branch` (0..8) of a drop group whose shared draw (the
    configured LR, logU over DROP_LEVELS x the default LR) comes from `rng`, seeded by the group. The run
    holds the configured LR until DROP_STARTS[branch // 3] of the run, then halves it at every decision
    (an exponential cut over one decision, which the actions reach as fast as they can) down to
    DROP_FLOORS[branch % 3] of it and holds that to the end, noise-free."""
    if not 0 <= branch < len(DROP_STARTS) * len(DROP_FLOORS):
        raise ValueError(f"drop: branch must be in [0, {len(DROP_STARTS) * len(DROP_FLOORS)}), got {branch}")
    lo, hi = map(math.log10, DROP_LEVELS)
    mult = round(10 ** rng.uniform(lo, hi), 3)
    start, floor = DROP_STARTS[branch // len(DROP_FLOORS)], DROP_FLOORS[branch % len(DROP_FLOORS)]
    return Anneal(1.0, start=start, length=1.0 / spec.n_decisions, depth=floor, shape="exp", warmup=0, seed=seed,
                  spec=spec), mult
