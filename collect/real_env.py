"""The real environment in the simulator's shape: a real training run as env steps.

    env = RealEnv(data, cfg)                       # one task and training configuration
    obs, state = env.reset(key, params)            # params: EnvParams(seed, base_lr_mult)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Same signature and meaning as `worldmodel.env.SimEnv`: an action multiplies the LR by the spec's
factor, the run trains for one decision interval (the first one warming up), the validation
loss is evaluated and turned into the spec's observation, and the reward, termination
(divergence) and truncation (budget) follow `EnvSpec`. The training state travels in the
returned state (parameters, optimizer state), so `step` is a function of its arguments; it runs
the jitted training chunk of `trainers.charlm.RunGroup` and does the bookkeeping on the host
(it is not itself jittable: a real step is seconds of training). Collection runs the same
definition through `SpecController`; the tests check that both give the same observations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.controllers.base import warmup_lr
from lrpilot.data import CharData
from lrpilot.spec import DEFAULT_SPEC, EnvSpec
from trainers.charlm import RunGroup
from trainers.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class EnvParams:
    seed: int = 0
    base_lr_mult: float = 1.0  # configured base LR = cfg.learning_rate * base_lr_mult


@dataclasses.dataclass(frozen=True)
class EnvState:
    run: Any  # the RunGroup state of this run (parameters, optimizer state, alive flag, key)
    k: int  # index of the last observation
    lr_rel: float  # LR of the current interval / base LR
    obs: np.ndarray  # (F,) last observation
    val0: float
    done: bool


class RealEnv:
    def __init__(self, data: CharData, cfg: TrainConfig, spec: EnvSpec = DEFAULT_SPEC, kind: str = "adamw"):
        self.data, self.cfg, self.spec = data, cfg, spec
        self.points = spec.decision_iters(cfg.max_iters)
        self._groups: dict[int, RunGroup] = {}
        self._train = self._val = None

    def _group(self, seed: int) -> RunGroup:
        if seed not in self._groups:
            self._groups[seed] = RunGroup(self.cfg, self.data.vocab_size, "adamw", [seed])
            if self._train is None:
                self._train = self._groups[seed].put_data(self.data.train)
                self._val = self._groups[seed].put_data(self.data.val)
        return self._groups[seed]

    def reset(self, key, params: EnvParams):
        del key  # the run's randomness comes from params.seed, as in collection
        g = self._group(params.seed)
        state = jax.tree.map(jnp.copy, g.state)  # the group's initial state stays intact
        _, val = g._eval(state, jnp.int32(0), self._train, self._val)
        v0 = float(val[0])
        obs, _ = self.spec.observation(0, 1.0, v0, None, v0)
        return obs, EnvState(run=state, k=0, lr_rel=1.0, obs=obs, val0=v0, done=False)

    def step(self, key, state: EnvState, action, params: EnvParams):
        del key
        if state.done:
            return state.obs, state, 0.0, False, False, {}
        spec, g = self.spec, self._group(params.seed)
        base = self.cfg.learning_rate * params.base_lr_mult
        lr_rel = spec.next_lr_rel(state.lr_rel, int(action))
        a, b = self.points[state.k], self.points[state.k + 1]
        lr = lr_rel * base
        lrs = np.array([warmup_lr(None, i, lr, self.points[1]) if i < self.points[1] else lr for i in range(a, b)], np.float32)
        run_in = jax.tree.map(jnp.copy, state.run)  # the chunk donates its input; keep the caller's state valid
        run, loss_C, _ = g._chunk(run_in, jnp.asarray(lrs[:, None]), jnp.int32(a), self._train)
        losses = np.asarray(loss_C)[:, 0]
        alive = bool(np.asarray(run["alive"])[0])
        _, val = g._eval(run, jnp.int32(b), self._train, self._val)
        v = float(val[0]) if alive else math.nan
        t = float(np.mean(losses)) if alive else math.nan
        obs, diverged = spec.observation(state.k + 1, lr_rel, v, t, state.val0)
        reward = float(spec.reward(state.obs, obs))
        truncated = state.k + 1 == spec.n_decisions and not diverged
        new = EnvState(run=run, k=state.k + 1, lr_rel=lr_rel, obs=obs, val0=state.val0, done=diverged or truncated)
        return obs, new, reward, diverged, truncated, {"val_loss": v, "train_loss": t, "lr": lr}
