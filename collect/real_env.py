"""The real environment in the simulator's shape: a real training run as env steps.

    env = RealEnv(data, cfg)                       # one task and training configuration
    obs, state = env.reset(key, params)            # params: RealParams(seed, base_lr_mult)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

It follows `lrpilot.env.Environment` like `lrpilot.worldmodel.env.SimEnv`: an action multiplies
the LR by the spec's factor, the run trains for one decision interval (the first one warming
up), the validation loss is evaluated and turned into the spec's observation, and the reward,
termination (divergence) and truncation (budget) follow `EnvSpec`. The training state travels
in the returned state (parameters, optimizer state), so `step` is a function of its
arguments; it runs the jitted training chunk of `lrpilot.trainers.charlm.RunGroup` through its
functional API and does the bookkeeping on the host (it is not itself jittable: a real step is
seconds of training). Collection runs the same definition through `SpecController`; the tests
check that both give the same observations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from flax import struct

from lrpilot.controllers.base import warmup_lr
from lrpilot.data import CharData
from lrpilot.env import Environment, EnvState
from lrpilot.spec import DEFAULT_SPEC, EnvSpec
from lrpilot.trainers.charlm import RunGroup
from lrpilot.trainers.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class RealParams:
    seed: int = 0
    base_lr_mult: float = 1.0  # configured base LR = cfg.learning_rate * base_lr_mult


@struct.dataclass
class RealState(EnvState):
    """`EnvState` (k, lr_rel, obs, done) plus the run's training state and initial val loss."""

    run: Any  # the RunGroup state of this run (parameters, optimizer state, alive flag, key)
    val0: float


class RealEnv(Environment):
    def __init__(self, data: CharData, cfg: TrainConfig, spec: EnvSpec = DEFAULT_SPEC, kind: str = "adamw"):
        self.data, self.cfg, self.spec, self.kind = data, cfg, spec, kind
        self.points = spec.decision_iters(cfg.max_iters)
        self._groups: dict[int, RunGroup] = {}
        self._train = self._val = None

    def _group(self, seed: int) -> RunGroup:
        if seed not in self._groups:
            self._groups[seed] = RunGroup(self.cfg, self.data.vocab_size, self.kind, [seed])
            if self._train is None:
                self._train = self._groups[seed].put_data(self.data.train)
                self._val = self._groups[seed].put_data(self.data.val)
        return self._groups[seed]

    def reset(self, key, params: RealParams):
        del key  # the run's randomness comes from params.seed, as in collection
        g = self._group(params.seed)
        _, val = g.evaluate_state(g.state, 0, self._train, self._val)
        v0 = float(val[0])
        base = self.cfg.learning_rate * params.base_lr_mult
        obs, _ = self.spec.observation(0, 1.0, v0, None, v0, base)
        return obs, RealState(k=0, lr_rel=1.0, obs=obs, done=False, log_base_lr=math.log10(base), run=g.state, val0=v0)

    def step(self, key, state: RealState, action, params: RealParams):
        del key
        if state.done:
            return state.obs, state, 0.0, False, False, {}
        g = self._group(params.seed)
        k1, lr_rel, _ = self.advance(state, int(action))
        a, b = self.points[state.k], self.points[k1]
        lr = lr_rel * self.cfg.learning_rate * params.base_lr_mult
        lrs = np.array([warmup_lr(None, i, lr, self.points[1]) if i < self.points[1] else lr for i in range(a, b)], np.float32)
        run, loss_C, _ = g.train_state(state.run, lrs[:, None], a, self._train)
        alive = bool(np.asarray(run["alive"])[0])
        _, val = g.evaluate_state(run, b, self._train, self._val)
        v = float(val[0]) if alive else math.nan
        t = float(np.mean(np.asarray(loss_C)[:, 0])) if alive else math.nan
        obs, diverged = self.spec.observation(k1, lr_rel, v, t, state.val0, 10.0 ** state.log_base_lr)  # divergence from the raw losses
        obs, reward, terminated, truncated = self.outcome(state, k1, obs, diverged)
        new = RealState(k=k1, lr_rel=lr_rel, obs=obs, done=terminated or truncated, log_base_lr=state.log_base_lr, run=run,
                        val0=state.val0)
        return obs, new, float(reward), terminated, truncated, {"val_loss": v, "train_loss": t, "lr": lr}
