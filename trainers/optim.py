"""The optimizers a controller can drive, each with its LR injected as run-time state.

All are `clip_by_global_norm(grad_clip)` followed by the optimizer, with weight decay on
2-D parameters only. The LR lives in the optimizer state (`optax.inject_hyperparams`) and
is changed with `set_lr` (`optax.tree.set`): a new LR never recompiles anything.

* adamw: the protocol (b1, b2, eps 1e-8, decoupled decay scaled by the LR).
* schedule_free: schedule-free AdamW (optax.contrib.schedule_free around an RMS-scaled
  base without momentum, as optax's schedule_free_adamw, but with masked decay); evaluate
  at `eval_params`.
* prodigy: optax.contrib.prodigy with the decay restricted to the mask; the LR is
  Prodigy's multiplier of its estimated step size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from optax.contrib import _prodigy, _schedule_free

from lrpilot.trainers.config import TrainConfig
from lrpilot.trainers.gpt import decay_mask

KINDS = ("adamw", "schedule_free", "prodigy")


def _schedule_free_adamw(learning_rate, b1, b2, weight_decay, mask):
    base = optax.chain(
        optax.scale_by_rms(decay=b2, eps=1e-8, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
    return _schedule_free.schedule_free(base, learning_rate=learning_rate, b1=b1)


def _prodigy_masked(learning_rate, b1, b2, weight_decay, mask):
    """Prodigy whose decoupled decay (-wd * d * lr * p, as in optax) applies to masked leaves only."""
    inner = _prodigy.prodigy(learning_rate=learning_rate, betas=(b1, b2), weight_decay=0.0)

    def update(updates, state, params=None, **extra):
        new_updates, new_state = inner.update(updates, state, params)
        count_inc = state.count + 1
        bc = jnp.sqrt(1 - b2**count_inc) / (1 - b1**count_inc)
        dlr = state.estim_lr * learning_rate * bc
        m = mask(params) if callable(mask) else mask
        new_updates = jax.tree.map(lambda u, p, dm: u - weight_decay * dlr * p if dm else u, new_updates, params, m)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def make(kind: str, cfg: TrainConfig) -> optax.GradientTransformation:
    """The optimizer `kind` for `cfg`, with `learning_rate` injected (initially 0)."""
    common = dict(b1=cfg.beta1, b2=cfg.beta2, weight_decay=cfg.weight_decay, mask=decay_mask)
    if kind == "adamw":
        opt = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(learning_rate=0.0, eps=1e-8, **common)
    elif kind == "schedule_free":
        opt = optax.inject_hyperparams(_schedule_free_adamw, static_args=("mask",))(learning_rate=0.0, **common)
    elif kind == "prodigy":
        opt = optax.inject_hyperparams(_prodigy_masked, static_args=("mask",))(learning_rate=0.0, **common)
    else:
        raise ValueError(f"unknown optimizer '{kind}'; expected one of {', '.join(KINDS)}")
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)


def set_lr(opt_state, lr):
    return optax.tree.set(opt_state, learning_rate=jnp.asarray(lr, jnp.float32))


def _find(state, cls):
    found = []
    jax.tree.map(lambda x: found.append(x) if isinstance(x, cls) else None, state,
                 is_leaf=lambda x: isinstance(x, cls))
    return found[0]


def eval_params(kind: str, opt_state, params):
    """The parameters to evaluate: the schedule-free average for schedule_free, else `params`."""
    if kind != "schedule_free":
        return params
    return _schedule_free.schedule_free_eval_params(_find(opt_state, _schedule_free.ScheduleFreeState), params)


def effective_lr(kind: str, opt_state, lr):
    """The step size actually applied: Prodigy's estimate times its multiplier, else the LR."""
    if kind != "prodigy":
        return jnp.asarray(lr, jnp.float32)
    return _find(opt_state, _prodigy.ProdigyState).estim_lr * lr
