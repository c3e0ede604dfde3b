"""What the world model is given to learn the LR's effect: an ordinal action embedding
(action_embed) and an auxiliary regression of each interval's change of val (aux_weight)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.worldmodel.model import WorldModelConfig, build

SPEC = DEFAULT_SPEC


def test_change_targets_skip_padding_and_diverged_rows():
    from lrpilot.worldmodel.train import change_targets

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, base=16)
    ser = cfg.serializer(SPEC)
    n, vi = SPEC.n_decisions, SPEC.index("val")
    obs = np.zeros((2, n + 1, SPEC.n_obs), np.float32)
    obs[0, :, vi] = 1.0 - 0.01 * np.arange(n + 1)  # a steady decline: every change -0.01
    obs[1, :4, vi] = [1.0, 0.9, SPEC.divergence_ratio, 0.0]  # run 1 diverged at row 2; rows 3.. are padding
    obs[1, 4:, vi] = np.nan
    at, sd = change_targets(ser, obs, np.array([n + 1, 3]))
    tgt, ok = (np.asarray(x) for x in at(jnp.asarray(obs), jnp.asarray([n + 1, 3])))
    assert tgt.shape == ok.shape == (2, n)
    assert ok[0].all() and np.allclose(tgt[0], -0.01, atol=1e-6)
    assert ok[1].tolist() == [True] + [False] * (n - 1)  # into the divergence row and beyond the end: no target
    assert np.isclose(tgt[1, 0], -0.1, atol=1e-6) and np.isfinite(tgt).all()
    assert sd == pytest.approx(np.std(np.r_[np.full(n, -0.01), -0.1]), rel=1e-4)
    many = np.repeat(obs[:1], 12, axis=0)
    many[:, 1:, vi] += np.random.default_rng(0).normal(0, 0.001, (12, n)) * np.arange(1, n + 1)  # noise growing along the run
    _, sd_k = change_targets(ser, many, np.full(12, n + 1), per_interval=True)
    assert sd_k.shape == (n,) and sd_k[-1] > 5 * sd_k[0]  # a unit per interval
    with pytest.raises(ValueError, match="aux_scale"):
        WorldModelConfig(aux_scale="run")
    with pytest.raises(ValueError, match="aux_weight"):
        WorldModelConfig(aux_weight=-1.0)


def test_aux_head_trains_on_the_change_and_the_simulator_ignores_it(tmp_path):
    from conftest import synthetic_trajectories

    from lrpilot import checkpoints
    from lrpilot.worldmodel.env import SimEnv
    from lrpilot.worldmodel.train import train

    traj = synthetic_trajectories(n_runs=16, noise=0.0)
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=60, eval_every=30, batch_size=8, base=16,
                           heldout_frac=0.3, select="nll", aux_weight=1.0, learning_rate=3e-3)
    res = train(traj, cfg, tmp_path / "wm", progress=False, log=lambda *_: None)
    mse = [h["change_mse"] for h in res.log if "change_mse" in h]
    assert len(mse) >= 2 and mse[-1] < 0.5 * mse[0]  # the head learns the (noise-free) changes
    ck = checkpoints.load(tmp_path / "wm", kind="worldmodel")
    assert "change_head" in ck.params and ck.model_config["aux_weight"] == 1.0
    # a checkpoint with the head simulates like any other (the head is never read there)
    model, ser = build(WorldModelConfig.from_dict(ck.model_config), SPEC)
    env = SimEnv(model, ser)
    ep = env.params(ck.params, traj, max_prefix=2)
    _, st = env.reset_to(ep, 0, 2, 2)
    obs, *_ = env.step(jax.random.key(0), st, jnp.int32(3), ep)
    assert np.isfinite(np.asarray(obs)).all()
    # without the auxiliary loss there is no head and no change_mse in the log
    plain = train(traj, WorldModelConfig(**{**cfg.to_dict(), "aux_weight": 0.0, "steps": 2, "eval_every": 2}), None,
                  progress=False, log=lambda *_: None)
    assert "change_head" not in plain.params and all("change_mse" not in h for h in plain.log)


def test_action_embedding_gives_the_lr_factor_and_reaches_the_policy():
    from lrpilot.policy import network
    from lrpilot.worldmodel.model import Trunk

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, base=16, action_embed=True)
    model, ser = build(cfg, SPEC)
    params = model.init(jax.random.key(0), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    vec = params["trunk"]["action_value"]
    assert vec.shape == (16,)
    # halving and doubling with the same lookup vector: they differ only by log2 of their factor times the action vector
    halve, double = ser.base + SPEC.actions.index(0.5), ser.base + SPEC.actions.index(2.0)
    wte = params["trunk"]["wte"]["embedding"]
    p = {**params["trunk"], "wte": {"embedding": wte.at[double].set(wte[halve])}}
    trunk = Trunk(cfg, ser.vocab_size, ser.seq_len, ser.value_roles(), tuple(np.log2(SPEC.actions)))
    out = lambda tok, v: np.asarray(trunk.apply({"params": {**p, "action_value": v}}, jnp.full((1, 1), tok, jnp.int32))[0])  # noqa: E731
    assert not np.allclose(out(halve, vec), out(double, vec), atol=1e-4)
    np.testing.assert_allclose(out(halve, jnp.zeros_like(vec)), out(double, jnp.zeros_like(vec)), atol=1e-6)
    # a policy built from the same config starts from this trunk, action vector included
    net = network.build(cfg, SPEC)
    pol = network.init_params(net, jax.random.key(1), params)
    np.testing.assert_array_equal(np.asarray(pol["trunk"]["action_value"]), np.asarray(vec))
    with pytest.raises(ValueError, match="action_log2"):
        Trunk(cfg, ser.vocab_size, ser.seq_len, ser.value_roles()).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def test_linear_one_step_baseline_learns_a_known_action_effect():
    """The fidelity section's linear_ratio: a least-squares one-step model fit on training runs
    recovers a good part of a known action effect on held-out runs (the synthetic curves' effect is
    saturating, not linear), and says None where no random-walk rows exist."""
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.fidelity import linear_action_ratio

    train = synthetic_trajectories(n_runs=40, seed=1, noise=0.002)
    held = synthetic_trajectories(n_runs=20, seed=2, noise=0.002)
    assert linear_action_ratio(held, train) is None  # no random walks among the held-out runs
    for m in held.meta:
        m["controller"] = {"name": "random_walk"}
    assert 0.3 < linear_action_ratio(held, train) < 1.4
