"""Deploying a policy checkpoint as a controller (the common `Controller` interface).

    ctrl = policy.load("pretrained")             # or a checkpoint directory
    ctrl.reset(RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=5000, eval_interval=250))
    # at ctrl.observe_iters(): ctrl.observe(Observation(it, train_loss=..., val_loss=...)); every step: ctrl.lr(it)

The network is built and jitted once per process and architecture (not per call, not per run);
each decision is one forward pass over the episode's symbols (a few milliseconds on a CPU,
once per decision interval); an ensemble checkpoint (`policy.ensemble`) runs its members as one
vmapped pass and acts on the median of their actions (or the argmax of their mean probabilities).
Greedy (argmax) by default; `greedy=False` samples with a seeded key. Actions that would move the
LR further outside the checkpoint's LR support (`PolicyConfig.lr_min_rel`/`lr_max_rel`, as in
training) are masked. The LR stays inside the spec's range; NaN, inf or missing metrics follow `SpecController`
(missing: the last value is repeated; non-finite: the episode ends and the LR is held).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints, controllers
from lrpilot.controllers.spec_controller import SpecController
from lrpilot.policy.ensemble import combine_rule, median_action, mixture_logits, n_members
from lrpilot.policy.network import PolicyNet, action_mask, build, lr_support, masked_logits
from lrpilot.spec import EnvSpec
from lrpilot.worldmodel.model import WorldModelConfig


@functools.lru_cache(maxsize=8)
def _forward(net: PolicyNet, members: bool = False):
    """(params, tokens (S,), pos) -> logits (A,), value (); with `members`, params stacked (K, ...) ->
    logits (K, A), values (K,)."""
    def f(params, tokens_S, pos):
        logits, value, _ = net.apply({"params": params}, tokens_S[None])
        return logits[0, pos], value[0, pos]

    return jax.jit(jax.vmap(f, in_axes=(0, None, None)) if members else f)


class PolicyController(SpecController):
    name = "policy"

    def __init__(self, net: PolicyNet, params, spec: EnvSpec, wm_cfg: WorldModelConfig, greedy: bool = True,
                 seed: int = 0, source: str = "", lr_support: tuple[float, float] | None = None,
                 val_estimate: bool = False, fingerprint: str | None = None, members: int = 1, combine: str = "median"):
        super().__init__(spec)
        self.net, self.params, self.greedy, self.seed, self.source = net, params, greedy, seed, source
        self.val_estimate = val_estimate  # Controller.val_estimate: no evaluation of its own after the first ones
        self.lr_support = lr_support
        self.fingerprint = fingerprint  # of the checkpoint it came from: which one, not only where (`source`)
        self.ser = wm_cfg.serializer(spec)
        self.members = members  # K > 1: `params` stacked on a leading member axis (policy.ensemble)
        self.combine = combine  # an ensemble's rule (policy.ensemble.COMBINES)
        self._f = _forward(net, members > 1)
        self._key = jax.random.key(seed)

    def reset(self, run):
        super().reset(run)
        self._key = jax.random.key(self.seed if self.greedy else run.seed * 7919 + self.seed)

    def act(self, obs: list, actions: list, lr_rel: float | None = None, static=None) -> int:
        """Action for the last observation given the episode so far (obs 0..k, actions 0..k-1);
        `lr_rel` (the current LR / base LR) masks actions to the LR support; `static` is the run's
        context (default: this controller's run's, set by `reset`)."""
        k = len(obs) - 1
        ser = self.ser
        o = np.zeros((self.spec.n_decisions + 1, self.spec.n_obs), np.float32)
        o[: k + 1] = np.stack(obs)
        a = np.full(self.spec.n_decisions, -1, np.int32)
        a[:k] = actions[:k]
        static = self.static if static is None else static
        seq = ser.encode_episodes(o[None], a[None], np.array([k + 1]), None if not self.spec.n_static else np.asarray(static)[None])[0]
        logits, _ = self._f(self.params, jnp.asarray(seq), ser.decision_pos(k))
        if self.lr_support is not None and lr_rel is not None:
            logits = masked_logits(logits, action_mask(self.spec, lr_rel, *self.lr_support))
        if self.members > 1 and self.combine == "mean":
            logits = mixture_logits(logits)
        if self.greedy:
            a = jnp.argmax(logits, axis=-1)
        else:
            self._key, sub = jax.random.split(self._key)
            a = jax.random.categorical(sub, logits)
        return median_action(a, self.spec.actions) if a.ndim else int(a)  # (K,): each member's, "median"

    def choose(self, k: int) -> int:
        return self.act(self.obs, self.actions, self.lr_rel)

    def describe(self):
        return {"name": self.name, "checkpoint": self.source, "fingerprint": self.fingerprint, "greedy": self.greedy,
                "lr_support": self.lr_support, "val_estimate": self.val_estimate,
                **({"members": self.members, "combine": self.combine} if self.members > 1 else {})}


def load_controller(path: str | Path = "pretrained", spec: EnvSpec | None = None, greedy: bool = True,
                    seed: int = 0, val_estimate: bool = False) -> PolicyController:
    """A controller from a policy checkpoint ('pretrained': the one shipped with lrpilot). It
    observes the run under the checkpoint's own spec (saved in it); with `spec` given, a
    checkpoint trained under another spec raises SpecMismatch naming the field. `val_estimate`:
    see `Controller.val_estimate` (the loop evaluates only where the protocol does, after the
    first decisions)."""
    p = checkpoints.pretrained("policy") if str(path) == "pretrained" else Path(path)
    ck = checkpoints.load(p, kind="policy", spec=spec)
    wm_cfg = WorldModelConfig.from_dict(ck.model_config["trunk"])
    net = build(wm_cfg, ck.spec)
    params = jax.tree.map(jnp.asarray, ck.params)
    # which checkpoint, not only where: a resumed evaluation must not reuse runs of another one saved at the same path
    fingerprint = checkpoints.fingerprint(p)
    ctrl = PolicyController(net, params, ck.spec, wm_cfg, greedy, seed, str(path), lr_support(ck.model_config),
                            val_estimate, fingerprint, n_members(ck.model_config), combine_rule(ck.model_config))
    ctrl._f(params, jnp.zeros(ctrl.ser.seq_len, jnp.int32), 0)  # compile now, not during the first run
    return ctrl


load = load_controller


def _from_spec(path: str = "") -> PolicyController:
    """`policy:PATH` / `policy:pretrained` / `policy` (the pretrained one) on the command line."""
    return load_controller(path or "pretrained")


def _from_spec_estimate(path: str = "") -> PolicyController:
    """`policy_est:PATH`: the policy with `val_estimate` (no evaluation of its own after the first decisions)."""
    return load_controller(path or "pretrained", val_estimate=True)


controllers.register("policy", _from_spec, path_arg=True)
controllers.register("policy_est", _from_spec_estimate, path_arg=True)
