"""Exploration controllers: cover the LR behaviours a policy will need to be judged on.

* `RandomWalk`: multiplicative random walk over the spec's actions; with probability
  `stickiness` it repeats its last action; otherwise it samples from per-run action weights
  (a random drift direction).
* `Follow`: a baseline schedule (cosine, wsd or constant) with a random peak, projected onto
  the action set, with epsilon noise.
* `EpsilonPolicy`: a policy checkpoint acting greedily with probability 1 - epsilon (for
  later SimPLe rounds).

`sample_explorer` draws the starter dataset's mix; `lrpilot.collect.edges` adds the
explorers of dataset v2 (anneals, LR ramps to the edge, restarts) and its sampler.

Every explorer is seeded, so a run's actions are reproducible from its metadata.
"""

from __future__ import annotations

import random

from lrpilot.controllers.schedules import cosine_decay
from lrpilot.controllers.spec_controller import ScheduleFollower, SpecController
from lrpilot.spec import DEFAULT_SPEC, EnvSpec


class RandomWalk(SpecController):
    name = "random_walk"

    def __init__(self, seed: int, stickiness: float = 0.5, weights: tuple[float, ...] | None = None,
                 spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        self.seed, self.stickiness = seed, stickiness
        self.weights = tuple(weights) if weights is not None else (1.0,) * spec.n_actions
        if len(self.weights) != spec.n_actions or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"random_walk: weights must be {spec.n_actions} non-negative numbers, got {weights}")

    def reset(self, run):
        super().reset(run)
        self.rng = random.Random(self.seed)

    def choose(self, k):
        if self.actions and self.rng.random() < self.stickiness:
            return self.actions[-1]
        return self.rng.choices(range(self.spec.n_actions), weights=self.weights)[0]

    def describe(self):
        return {"name": self.name, "seed": self.seed, "stickiness": self.stickiness, "weights": list(self.weights)}


class Follow(ScheduleFollower):
    """Schedule `kind` (cosine | wsd | constant) with peak `peak` x base_lr, floor peak/10,
    projected on the actions; with probability `epsilon` a uniformly random action instead."""

    name = "follow"

    def __init__(self, kind: str, peak: float, seed: int, epsilon: float = 0.0, spec: EnvSpec = DEFAULT_SPEC,
                 warmup: int = 0):
        super().__init__(spec)
        if kind not in ("cosine", "wsd", "constant"):
            raise ValueError(f"follow: kind must be cosine, wsd or constant, got {kind!r}")
        if not 0 <= warmup < spec.n_decisions:
            raise ValueError(f"follow: warmup must be in [0, {spec.n_decisions}) decisions, got {warmup}")
        self.kind, self.peak, self.seed, self.epsilon, self.warmup = kind, peak, seed, epsilon, warmup

    def reset(self, run):
        super().reset(run)
        self.rng = random.Random(self.seed)

    def target_rel(self, k):
        x = (k + 0.5) / self.spec.n_decisions  # middle of interval k, as a fraction of the run
        lo = self.peak / 10
        if k < self.warmup:  # a longer warmup than the spec's first interval: linear over `warmup` decisions
            return self.peak * (k + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return self.peak
        if self.kind == "cosine":
            return cosine_decay(self.peak, lo, x)
        return self.peak if x < 0.8 else self.peak + (lo - self.peak) * (x - 0.8) / 0.2  # wsd, last 20%

    def choose(self, k):
        if self.rng.random() < self.epsilon:
            return self.rng.randrange(self.spec.n_actions)
        return super().choose(k)

    def describe(self):
        d = {"name": f"{self.name}_{self.kind}", "peak": self.peak, "seed": self.seed, "epsilon": self.epsilon}
        return {**d, "warmup": self.warmup} if self.warmup else d


def sample_explorer(rng: random.Random, seed: int, spec: EnvSpec = DEFAULT_SPEC, policy_path: str | None = None,
                    mix: dict[str, float] | None = None) -> SpecController:
    """Draws an explorer. mix: weights of 'walk', 'cosine', 'wsd', 'constant' (and 'policy')."""
    mix = dict(mix or {"walk": 0.4, "cosine": 0.25, "wsd": 0.2, "constant": 0.15})
    if policy_path is None:
        mix.pop("policy", None)
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    if kind == "walk":
        alpha = [rng.gammavariate(0.7, 1.0) + 1e-3 for _ in range(spec.n_actions)]
        return RandomWalk(seed, stickiness=round(rng.uniform(0.0, 0.8), 3), weights=tuple(round(a, 4) for a in alpha), spec=spec)
    if kind == "policy":
        return EpsilonPolicy(policy_path, epsilon=rng.choice([0.05, 0.1, 0.2, 0.3]), seed=seed, spec=spec)
    peak = round(10 ** rng.uniform(-1, 1), 4)
    return Follow(kind, peak, seed, epsilon=rng.choice([0.0, 0.0, 0.1, 0.2]), spec=spec)


class EpsilonPolicy(SpecController):
    """A policy checkpoint, greedy with probability 1 - epsilon, else a random action."""

    name = "policy_eps"

    def __init__(self, path: str, epsilon: float, seed: int, spec: EnvSpec = DEFAULT_SPEC):
        super().__init__(spec)
        self.path, self.epsilon, self.seed = path, epsilon, seed
        from lrpilot import controllers

        # through the registry: the learned policy registers itself from above (lrpilot.policy)
        self.inner = controllers.make(f"policy:{path}")
        spec.check_same(self.inner.spec, where=str(path))

    def reset(self, run):
        super().reset(run)
        self.rng = random.Random(self.seed)

    def choose(self, k):
        greedy = self.inner.act(self.obs, self.actions, self.lr_rel, self.static)
        return self.rng.randrange(self.spec.n_actions) if self.rng.random() < self.epsilon else greedy

    def describe(self):
        return {"name": self.name, "path": str(self.path), "epsilon": self.epsilon, "seed": self.seed}
