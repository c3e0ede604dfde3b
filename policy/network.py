"""The policy: the world model's trunk over the same symbol sequence, with an action head and a
value head read at each decision position (the last symbol of an observation). It sees the
whole episode, its own past actions included (they are symbols of the sequence).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrpilot.spec import EnvSpec
from lrpilot.worldmodel.model import Trunk, WorldModelConfig, action_log2


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """PPO in the simulator, and how the policy is initialised (saved in its checkpoint)."""

    init: str = "worldmodel"  # "worldmodel": trunk copied from the world model; "scratch": fresh
    n_envs: int = 128  # simulated episodes per iteration
    iterations: int = 100  # PPO iterations (rollout + update)
    update_epochs: int = 4  # passes over each rollout
    n_minibatches: int = 4  # minibatches per pass
    learning_rate: float = 3e-4  # Adam learning rate
    clip: float = 0.1  # PPO clip range (ratio and value)
    gae_lambda: float = 0.95  # GAE lambda
    gamma: float = 1.0  # discount
    ent_coef: float = 0.01  # entropy bonus weight
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping norm
    temperature: float = 1.0  # world-model sampling temperature
    max_prefix: int = 5  # episodes start after 1..max_prefix real observations
    start_lr_mults: tuple[float, ...] = ()  # instead, start as deployed: observation 1 of the runs configured at each M x their default LR, the Ms weighted equally
    reward_scale: float = 10.0  # rewards are fractions of the initial loss: scale them for the value head
    seed: int = 0  # initialisation and rollouts
    eval_envs: int = 256  # episodes of the final simulator report
    checkpoint_every: int = 10  # iterations between resumable checkpoints
    # LR support (an option, off by default): the policy may not move the LR (relative to the run's
    # base LR) further outside [lr_min_rel, lr_max_rel]; actions that would are masked, in the
    # simulator and at deployment. A hand-set fence; the ensemble's pessimism is the default.
    support_mask: bool = False  # mask actions that leave the LR support [lr_min_rel, lr_max_rel] x base LR
    lr_min_rel: float = 0.01  # LR support: lowest LR / base LR the policy may move towards (with support_mask)
    lr_max_rel: float = 10.0  # LR support: highest LR / base LR (with support_mask)
    # pessimism (MOPO): the simulator's reward minus pessimism x the ensemble's spread on the step's val
    pessimism: float = 0.0  # weight of the world-model ensemble's disagreement subtracted from each reward
    # halting (MOReL): an episode ends where the members disagree on a step's val by more than this
    # spread (normalised val); it is terminated there, so the return it would have gone on to earn is lost
    halt_spread: float = 0.0  # end a simulated episode where the ensemble's spread on the step's val exceeds this (0: never)
    def __post_init__(self):
        if self.init not in ("worldmodel", "scratch"):
            raise ValueError(f"PolicyConfig.init must be 'worldmodel' or 'scratch', got {self.init!r}")
        if not 0 < self.lr_min_rel <= 1.0 <= self.lr_max_rel:
            raise ValueError(f"PolicyConfig: need 0 < lr_min_rel <= 1 <= lr_max_rel, got {self.lr_min_rel}, {self.lr_max_rel}")
        if self.pessimism < 0 or self.halt_spread < 0:
            raise ValueError(f"PolicyConfig: pessimism and halt_spread must be >= 0, got {self.pessimism}, {self.halt_spread}")
        if any(not m > 0 for m in self.start_lr_mults):
            raise ValueError(f"PolicyConfig.start_lr_mults must be positive LR multipliers, got {self.start_lr_mults}")
        if self.n_envs % self.n_minibatches:
            raise ValueError(f"PolicyConfig: n_envs={self.n_envs} not divisible by n_minibatches={self.n_minibatches}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class PolicyNet(nn.Module):
    """tokens (B, S) -> action logits (B, S, A), value (B, S), cache (see worldmodel.model.Trunk)."""

    cfg: WorldModelConfig
    vocab_size: int
    max_len: int
    n_actions: int
    roles: tuple[int, ...] = ()  # see worldmodel.model.Trunk
    action_log2: tuple[float, ...] = ()  # see worldmodel.model.Trunk

    @nn.compact
    def __call__(self, tokens_BxS, pos0=0, cache=None):
        h, cache = Trunk(self.cfg, self.vocab_size, self.max_len, self.roles, self.action_log2, name="trunk")(
            tokens_BxS, pos0, cache, True)
        logits = nn.Dense(self.n_actions, name="action_head", kernel_init=nn.initializers.zeros)(h)
        value = nn.Dense(1, name="value_head", kernel_init=nn.initializers.zeros)(h)[..., 0]
        return logits, value, cache


MASKED = -1e9  # logit of a masked action (finite: entropies stay finite)


def action_mask(spec: EnvSpec, lr_rel, lr_min_rel: float, lr_max_rel: float):
    """(..., A) bool: the actions that do not move `lr_rel` (...) further outside [lr_min_rel,
    lr_max_rel] (log distance, after the spec's clip). Keeping the LR is always allowed."""
    cur = jnp.asarray(lr_rel, jnp.float32)[..., None]
    new = spec.candidate_lr_rel(jnp.asarray(lr_rel, jnp.float32))

    def dist(x):
        lx = jnp.log(x)
        return jnp.maximum(jnp.log(lr_min_rel) - lx, 0.0) + jnp.maximum(lx - jnp.log(lr_max_rel), 0.0)

    return dist(new) <= dist(cur) + 1e-6


def lr_support(model_config: dict) -> tuple[float, float] | None:
    """(lr_min_rel, lr_max_rel) of a policy checkpoint's model_config, or None when it trained
    without the support mask (a checkpoint saved before `support_mask` existed always had it)."""
    pc = model_config.get("policy") or {}
    if "lr_min_rel" not in pc or not pc.get("support_mask", True):
        return None
    return float(pc["lr_min_rel"]), float(pc["lr_max_rel"])


def config_support(cfg: PolicyConfig) -> tuple[float, float] | None:
    """The LR support a PolicyConfig trains under (None: no mask)."""
    return (cfg.lr_min_rel, cfg.lr_max_rel) if cfg.support_mask else None


def masked_logits(logits, mask):
    return jnp.where(mask, logits, MASKED)


def build(wm_cfg: WorldModelConfig, spec: EnvSpec) -> PolicyNet:
    ser = wm_cfg.serializer(spec)
    return PolicyNet(wm_cfg, ser.vocab_size, ser.seq_len, spec.n_actions, ser.value_roles(), action_log2(spec))


def init_params(net: PolicyNet, key, wm_params=None) -> dict:
    """Fresh parameters; with `wm_params`, the trunk is the world model's trunk (by subtree name)."""
    params = net.init(key, jnp.zeros((1, net.max_len), jnp.int32))["params"]
    if wm_params is not None:
        if "trunk" not in wm_params:
            raise ValueError("world-model parameters have no 'trunk' subtree")
        want = jax.tree.map(jnp.shape, params["trunk"])
        got = jax.tree.map(jnp.shape, wm_params["trunk"])
        if want != got:
            raise ValueError(f"world-model trunk shapes {got} do not fit the policy trunk {want}")
        params = {**params, "trunk": jax.tree.map(jnp.asarray, wm_params["trunk"])}
    return params
