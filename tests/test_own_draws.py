"""Scheduled sampling in world-model training (`WorldModelConfig.own_draws`, `worldmodel.train.own_draws`): the
model reads some past observations as its own draws, as the simulator does from observation 1 on."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.worldmodel.model import WorldModelConfig, build
from lrpilot.worldmodel.train import encode, own_draws, train

TINY = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=40, eval_every=20, batch_size=8,
                        learning_rate=3e-3, warmup=5, heldout_frac=0.3, base=16, digits=2, select="nll")


def test_own_draws_replace_exactly_the_picked_observations_stochastic_digits():
    from conftest import synthetic_trajectories

    traj = synthetic_trajectories(n_runs=6)
    traj.length[0] = 9  # a short run: its observations 8.. are never drawn (nothing after them reads them)
    model, ser = build(TINY, traj.spec)
    seq, _ = encode(traj, TINY)
    params = model.init(jax.random.key(0), jnp.asarray(seq[:1]))["params"]
    params["digit_head"]["kernel"] = jnp.zeros_like(params["digit_head"]["kernel"])
    params["digit_head"]["bias"] = jnp.zeros(TINY.base).at[5].set(30.0)  # the model draws digit 5, always
    s, drawn = (np.asarray(x) for x in own_draws(model, params, ser, jax.random.key(1), jnp.asarray(seq),
                                                 jnp.asarray(traj.length), 0.5))
    field, sig, step = ser.symbol_roles()
    stoch = np.isin(field, [i for i, f in enumerate(traj.spec.fields) if not f.deterministic])
    assert drawn.any() and not drawn[:, ~stoch].any() and not drawn[:, step == 0].any()
    assert not drawn[step[None] >= traj.length[:, None] - 1].any()
    np.testing.assert_array_equal(s[drawn], 5)
    np.testing.assert_array_equal(s[~drawn], seq[~drawn])
    for d in range(TINY.digits):  # a value's digits are drawn together: the observation is picked, not a digit
        np.testing.assert_array_equal(drawn[:, stoch & (sig == d)], drawn[:, stoch & (sig == 0)])
    eligible = (stoch & (sig == 0))[None] & (step >= 1)[None] & (step < traj.length[:, None] - 1)
    assert 0.3 < drawn[eligible].mean() < 0.7  # q = 0.5 of the eligible observations
    s2, drawn2 = own_draws(model, params, ser, jax.random.key(1), jnp.asarray(seq), jnp.asarray(traj.length), 0.5)
    np.testing.assert_array_equal(np.asarray(drawn2), drawn)  # the key decides
    np.testing.assert_array_equal(np.asarray(s2), s)
    with pytest.raises(ValueError, match="own_draws"):
        WorldModelConfig(own_draws=1.0)


def test_training_on_own_draws_still_learns_and_changes_what_is_learned():
    from conftest import synthetic_trajectories

    traj = synthetic_trajectories(n_runs=24, noise=0.0)
    plain = train(traj, TINY, None, progress=False, log=lambda *_: None)
    drawn = train(traj, dataclasses.replace(TINY, own_draws=0.5), None, progress=False, log=lambda *_: None)
    assert drawn.best_heldout < drawn.log[0]["heldout_loss"] - 0.3
    assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(drawn.params)[0])
