"""The environment protocol every lrpilot environment follows (gymnax's shape).

    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

An env step is one decision of the `EnvSpec`: the action multiplies the LR, training runs for
one decision interval (really, or in the world model), and the next observation, reward,
termination (divergence) and truncation (budget) follow the spec. The simulated environment
(`lrpilot.worldmodel.env.SimEnv`, jittable and vmappable) and the real one
(`lrpilot.collect.real_env.RealEnv`, seconds of real training per step) both subclass
`Environment` and share its `EnvState` fields, and the transition's deterministic part
(`advance`) and its bookkeeping (`outcome`) are written here once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import struct

from lrpilot.spec import EnvSpec, array_module


@dataclasses.dataclass(frozen=True)
class Discrete:
    """Actions 0..n-1 (the spec's LR factors)."""

    n: int


@dataclasses.dataclass(frozen=True)
class Box:
    """Observations: float32 vectors of `shape` within [low, high] (the spec's boxes)."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]


@struct.dataclass
class EnvState:
    """What every environment's state holds (a JAX pytree; subclasses add their own fields)."""

    k: Any  # index of the last observation
    lr_rel: Any  # LR of the current interval / base LR
    obs: Any  # (F,) the last observation
    done: Any  # the episode ended (terminated or truncated)
    log_base_lr: Any  # log10 of the run's configured base LR (for specs that observe the absolute LR)


class Environment:
    """Base class: `reset` and `step` as in gymnax; spaces and the shared transition pieces."""

    spec: EnvSpec

    def reset(self, key, params):
        raise NotImplementedError

    def step(self, key, state, action, params):
        raise NotImplementedError

    def action_space(self, params=None) -> Discrete:
        return Discrete(self.spec.n_actions)

    def observation_space(self, params=None) -> Box:
        low = np.array([f.low for f in self.spec.fields], np.float32)
        high = np.array([f.high for f in self.spec.fields], np.float32)
        return Box(low, high, (self.spec.n_obs,))

    def advance(self, state: EnvState, action):
        """The deterministic part of a step: (k + 1, the new lr_rel, the deterministic fields of
        observation k + 1 as an (F,) vector, zeros in the stochastic fields)."""
        spec = self.spec
        lr_rel = spec.next_lr_rel(state.lr_rel, action)
        k1 = state.k + 1
        det = spec.deterministic_values(k1, lr_rel, state.log_base_lr)
        xp = array_module(k1, lr_rel) or np
        vec = xp.stack([xp.asarray(det.get(f.name, 0.0), dtype=xp.float32) for f in spec.fields])
        return k1, lr_rel, vec

    def outcome(self, state: EnvState, k1, obs, diverged):
        """The bookkeeping of a step that produced observation `obs` (k1): divergence marked in
        the observation, the reward, termination and truncation. Returns (obs, reward,
        terminated, truncated)."""
        spec = self.spec
        obs = spec.mark_diverged(obs, diverged)
        terminated, truncated = spec.end_of_step(k1, diverged)
        return obs, spec.reward(state.obs, obs), terminated, truncated
