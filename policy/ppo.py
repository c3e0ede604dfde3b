"""PPO inside the simulated environment, purejaxrl style.

One iteration (`make_iteration`) is a jitted pure function: roll out `n_envs` whole simulated
episodes (`lax.scan` over decisions of a `vmap` over environments, the policy reading the
episode's symbols through its own key/value cache), compute GAE, and update with the clipped
objective, value and entropy terms over `update_epochs` x `n_minibatches` (nested
`lax.scan`s). `make_train` scans iterations too, so a whole training run is one function of a
key, vmappable over seeds.

Episodes start after a random real prefix and end by divergence (termination) or when the
budget is spent (truncation); with an ensemble world model, also where its members disagree on
a step's val by more than `PolicyConfig.halt_spread` (termination, MOReL's halt), and every
reward is lessened by `pessimism` x that spread (MOPO). GAE treats them separately: termination
bootstraps with 0, truncation with the value of the final state, which for the budget's end is
0 by definition (no decision is left), so `truncation_value` is zero here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from lrpilot.policy.network import PolicyConfig, PolicyNet, action_mask, masked_logits
from lrpilot.worldmodel.env import EnvParams, SimEnv
from lrpilot.worldmodel.model import init_cache


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    iteration: jax.Array


class Rollout(NamedTuple):
    action: jax.Array  # (N, T) int32
    logp: jax.Array  # (N, T)
    value: jax.Array  # (N, T)
    reward: jax.Array  # (N, T)
    terminated: jax.Array  # (N, T) bool
    truncated: jax.Array  # (N, T) bool
    active: jax.Array  # (N, T) bool: a decision was taken at this step
    k: jax.Array  # (N, T) int32 observation index of the decision
    mask: jax.Array  # (N, T, A) bool: the actions allowed at the decision (PolicyConfig's LR support)
    halted: jax.Array  # (N, T) bool: the episode was halted at this step (PolicyConfig.halt_spread)
    spread: jax.Array  # (N, T) the ensemble members' spread of the step's val (normalised; 0 for one model)
    tokens: jax.Array  # (N, S) final symbol sequences


def gae(reward, value, terminated, truncated, active, gamma, lam, truncation_value=None):
    """Generalized advantage estimation over (..., T) arrays; steps with active=False are padding.

    After a terminated step the next value is 0; after a truncated one it is `truncation_value`
    (default 0: the budget's end). Returns (advantages, returns)."""
    if truncation_value is None:
        truncation_value = jnp.zeros_like(value)
    next_value = jnp.concatenate([value[..., 1:], jnp.zeros_like(value[..., :1])], axis=-1)
    next_active = jnp.concatenate([active[..., 1:], jnp.zeros_like(active[..., :1])], axis=-1)
    boot = jnp.where(terminated, 0.0, jnp.where(truncated, truncation_value, jnp.where(next_active, next_value, 0.0)))
    delta = reward + gamma * boot - value
    cont = (~terminated) & (~truncated) & next_active

    def back(carry, xs):
        d, c, a = xs
        adv = jnp.where(a, d + gamma * lam * c * carry, 0.0)
        return adv, adv

    xs = (jnp.moveaxis(delta, -1, 0), jnp.moveaxis(cont, -1, 0), jnp.moveaxis(active, -1, 0))
    _, adv = jax.lax.scan(back, jnp.zeros(delta.shape[:-1]), xs, reverse=True)
    adv = jnp.moveaxis(adv, 0, -1)
    return adv, adv + value


def masked_normalize(x, mask):
    n = jnp.maximum(mask.sum(), 1)
    mean = jnp.sum(jnp.where(mask, x, 0)) / n
    var = jnp.sum(jnp.where(mask, (x - mean) ** 2, 0)) / n
    return jnp.where(mask, (x - mean) / jnp.sqrt(var + 1e-8), 0.0)


def make_optimizer(cfg: PolicyConfig):
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate, eps=1e-5))


def make_rollout(net: PolicyNet, env: SimEnv, cfg: PolicyConfig, greedy: bool = False):
    """(params, env_params, key) -> Rollout of cfg.n_envs episodes (or `n` with rollout_n)."""
    ser, spec = env.ser, env.spec
    T = spec.n_decisions
    n_fill = min(ser.offset + cfg.max_prefix * ser.step_len, ser.seq_len)

    def one(params, env_params: EnvParams, key):
        k_reset, k_steps = jax.random.split(key)
        _, st = env.reset(k_reset, env_params)
        cache = init_cache(net.cfg, 1, ser.seq_len)
        logits, value, cache = net.apply({"params": params}, st.tokens[None, :n_fill], 0, cache)
        carry = (st, cache, logits[0, st.pos - 1], value[0, st.pos - 1])

        def body(carry, kk):
            st, cache, lg, v = carry
            ka, ks = jax.random.split(kk)
            mask = (action_mask(spec, st.lr_rel, cfg.lr_min_rel, cfg.lr_max_rel) if cfg.support_mask
                    else jnp.ones(spec.n_actions, bool))
            lg = masked_logits(lg, mask)
            a = jnp.argmax(lg) if greedy else jax.random.categorical(ka, lg)
            a = a.astype(jnp.int32)
            logp = jax.nn.log_softmax(lg)[a]
            _, st2, r, term, trunc, info = env.step(ks, st, a, env_params)
            spread = info.get("spread", jnp.float32(0.0))
            r = r - cfg.pessimism * spread  # MOPO: penalised where the ensemble's members disagree
            halt = jnp.asarray(False)
            if cfg.halt_spread > 0:  # MOReL: the episode ends (terminated) where they disagree too much
                halt = (spread > cfg.halt_spread) & ~st2.done
                term, st2 = term | halt, st2.replace(done=st2.done | halt)
            start = st2.pos - ser.step_len
            chunk = jax.lax.dynamic_slice_in_dim(st2.tokens, start, ser.step_len)
            lg2, v2, cache2 = net.apply({"params": params}, chunk[None], start, cache)
            out = (a, logp, v, r, term, trunc, ~st.done, st.k, mask, halt, spread)
            return (st2, cache2, lg2[0, -1], v2[0, -1]), out

        (st, *_), outs = jax.lax.scan(body, carry, jax.random.split(k_steps, T))
        return (*outs, st.tokens)

    def rollout(params, env_params, key, n):
        outs = jax.vmap(one, in_axes=(None, None, 0))(params, env_params, jax.random.split(key, n))
        return Rollout(*outs)

    return rollout


def decision_positions(env: SimEnv, k):
    ser = env.ser
    return ser.decision_pos(k)


def make_iteration(net: PolicyNet, env: SimEnv, cfg: PolicyConfig):
    """(TrainState, env_params, key) -> (TrainState, metrics): one rollout and one PPO update."""
    tx = make_optimizer(cfg)
    rollout = make_rollout(net, env, cfg)
    mb = cfg.n_envs // cfg.n_minibatches

    def loss_fn(params, batch: Rollout, adv, ret):
        logits, value, _ = net.apply({"params": params}, batch.tokens)
        pos = decision_positions(env, batch.k)  # (B, T)
        lg = masked_logits(jnp.take_along_axis(logits, pos[..., None], axis=1), batch.mask)  # (B, T, A)
        v = jnp.take_along_axis(value, pos, axis=1)
        logp_all = jax.nn.log_softmax(lg)
        logp = jnp.take_along_axis(logp_all, batch.action[..., None], -1)[..., 0]
        m = batch.active
        n = jnp.maximum(m.sum(), 1)
        mean = lambda x: jnp.sum(jnp.where(m, x, 0.0)) / n
        ratio = jnp.exp(logp - batch.logp)
        a = masked_normalize(adv, m)
        pg = -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * a)
        v_clip = batch.value + jnp.clip(v - batch.value, -cfg.clip, cfg.clip)
        vl = 0.5 * jnp.maximum((v - ret) ** 2, (v_clip - ret) ** 2)
        ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
        loss = mean(pg) + cfg.vf_coef * mean(vl) - cfg.ent_coef * mean(ent)
        kl = mean((ratio - 1) - (logp - batch.logp))
        return loss, {"policy_loss": mean(pg), "value_loss": mean(vl), "entropy": mean(ent), "approx_kl": kl}

    def iteration(ts: TrainState, env_params, key):
        k_roll, k_upd = jax.random.split(key)
        ro = rollout(ts.params, env_params, k_roll, cfg.n_envs)
        reward = ro.reward * cfg.reward_scale
        adv, ret = gae(reward, ro.value, ro.terminated, ro.truncated, ro.active, cfg.gamma, cfg.gae_lambda)

        def epoch(carry, kk):
            params, opt_state = carry
            perm = jax.random.permutation(kk, cfg.n_envs)
            shuf = jax.tree.map(lambda x: x[perm].reshape(cfg.n_minibatches, mb, *x.shape[1:]), (ro, adv, ret))

            def minibatch(carry, b):
                params, opt_state = carry
                (l, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, *b)
                upd, opt_state = tx.update(g, opt_state, params)
                return (optax.apply_updates(params, upd), opt_state), aux

            return jax.lax.scan(minibatch, (params, opt_state), shuf)

        (params, opt_state), aux = jax.lax.scan(epoch, (ts.params, ts.opt_state), jax.random.split(k_upd, cfg.update_epochs))
        ep_return = jnp.sum(jnp.where(ro.active, ro.reward, 0.0), axis=1)
        metrics = {k: v.mean() for k, v in aux.items()}
        metrics.update(return_mean=ep_return.mean(), episode_len=ro.active.sum(1).mean(),
                       diverged=jnp.any(ro.terminated & ~ro.halted & ro.active, axis=1).mean(),
                       halted=jnp.any(ro.halted & ro.active, axis=1).mean(),
                       spread=jnp.where(ro.active, ro.spread, 0.0).sum() / jnp.maximum(ro.active.sum(), 1))
        return TrainState(params, opt_state, ts.iteration + 1), metrics

    return iteration, tx


def make_train(net: PolicyNet, env: SimEnv, cfg: PolicyConfig, env_params, init_params_fn):
    """key -> (TrainState, metrics over iterations): a whole PPO run as one jittable, vmappable function."""
    iteration, tx = make_iteration(net, env, cfg)

    def train(key):
        k_init, k_run = jax.random.split(key)
        params = init_params_fn(k_init)
        ts = TrainState(params, tx.init(params), jnp.int32(0))

        def body(ts, kk):
            return iteration(ts, env_params, kk)

        return jax.lax.scan(body, ts, jax.random.split(k_run, cfg.iterations))

    return train


def episode_returns(env: SimEnv, env_params, key, act_fn, n_envs: int, with_lr: bool = False):
    """Returns (n_envs,) and divergence flags (n_envs,) of `act_fn(key, state) -> action`; the same
    key gives every controller the same starting prefixes (so returns pair up episode by episode).
    `with_lr`: also the LR / base LR after each decision (n_envs, n_decisions)."""
    from lrpilot.worldmodel.env import simulate

    r, term, trunc, was_done, _, *lr = simulate(env, env_params, key, act_fn, n_envs, with_lr=with_lr)
    ret = jnp.sum(jnp.where(was_done, 0.0, r), axis=1)
    return (ret, jnp.any(term & ~was_done, axis=1), *lr)


def policy_act_fn(net: PolicyNet, params, env: SimEnv, greedy: bool = True, lr_support=None):
    """An `act_fn` for `simulate` that runs the policy on the state's sequence (full forward);
    `lr_support` (lr_min_rel, lr_max_rel) masks actions as in training."""

    def act(key, st):
        logits, _, _ = net.apply({"params": params}, st.tokens[None])
        lg = logits[0, st.pos - 1]
        if lr_support is not None:
            lg = masked_logits(lg, action_mask(env.spec, st.lr_rel, *lr_support))
        return (jnp.argmax(lg) if greedy else jax.random.categorical(key, lg)).astype(jnp.int32)

    return act
