"""The simulator's sampler: inverse-CDF draws (`worldmodel.env.quantile_sample`) and common random numbers
(`forecast.sample_futures(common=True)`, the fidelity section's within-group ranking)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.worldmodel import forecast
from lrpilot.worldmodel.env import SimEnv

SPEC = DEFAULT_SPEC


def test_quantile_sample_draws_the_digits_distribution_and_the_value_is_monotone_in_u():
    from lrpilot.worldmodel.env import quantile_sample

    p1 = np.array([0.1, 0.0, 0.5, 0.4])  # a first digit with an impossible symbol
    p2 = np.array([[0.2, 0.3, 0.5], [1 / 3] * 3, [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])  # the second digit given the first
    lg1, lg2 = jnp.log(jnp.asarray(p1)), jnp.log(jnp.asarray(p2))

    def value(u):  # the two digits of one value from one uniform
        a, rest = quantile_sample(None, lg1, u)
        b, _ = quantile_sample(None, lg2[a], rest)
        return a * 3 + b

    u = 1.0 - jax.random.uniform(jax.random.key(0), (60_000,))
    v = np.asarray(jax.vmap(value)(u))
    freq, want = np.bincount(v, minlength=12) / len(v), (p1[:, None] * p2).ravel()
    assert np.all(freq[want == 0] == 0)
    assert np.all(np.abs(freq - want) <= 4 * np.sqrt(want * (1 - want) / len(v)) + 1e-9)  # 4 standard errors
    order = np.argsort(np.asarray(u))
    assert np.all(np.diff(v[order]) >= 0)  # the value is the u-quantile of its distribution: monotone in u


def test_common_keys_give_runs_with_the_same_past_the_same_draws(tiny_wm, traj):
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    # run 1 is run 0 with another action from decision 10 on
    two = traj.subset([0, 0])
    two.actions[1, 10:] = (two.actions[0, 10:] + 3) % SPEC.n_actions
    ep = env.params(params, two, max_prefix=1)
    runs = np.arange(2)
    common = forecast.sample_futures(env, ep, two, runs, 1, SPEC.n_decisions, 6, jax.random.key(0), common=True)
    np.testing.assert_array_equal(common[0, :, :10], common[1, :, :10])  # same past, same keys: the same draws
    assert not np.array_equal(common[0, :, 10:], common[1, :, 10:])  # then they differ by their actions
    indep = forecast.sample_futures(env, ep, two, runs, 1, SPEC.n_decisions, 6, jax.random.key(0))
    assert not np.array_equal(indep[0, :, :10], indep[1, :, :10])  # independent keys: independent draws
