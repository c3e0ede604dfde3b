"""The CPU compiler options of the training jits: applied where this jaxlib knows them, never
where the user set them, a clean fallback where they are unknown, and the same training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.trainers import xla

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")


@pytest.fixture
def fresh(monkeypatch):
    """cpu_options() re-probed for this test and for the ones after it."""
    xla.cpu_options.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    xla.cpu_options.cache_clear()


def _reduce_hlo(f):
    return f.lower(jnp.ones((768, 128))).compile().as_text()


@cpu_only
def test_options_keep_ynnpack_off_reductions(fresh):
    fresh.delenv("XLA_FLAGS", raising=False)
    fresh.delenv(xla.ENV_OFF, raising=False)
    opts = xla.cpu_options()
    if not opts:
        pytest.skip(f"this jaxlib ({jax.__version__}) has no {list(xla.CPU_OPTIONS)}")
    assert opts == xla.CPU_OPTIONS
    f = lambda x: (x * x).sum(0)
    assert "__ynn_fusion" not in _reduce_hlo(xla.jit(f))
    np.testing.assert_allclose(xla.jit(f)(jnp.ones((768, 128))), jax.jit(f)(jnp.ones((768, 128))), rtol=1e-6)


@pytest.mark.parametrize("env", [("XLA_FLAGS", f"--{xla._YNN}=+LIBRARY_FUSION_TYPE_REDUCE"), (xla.ENV_OFF, "0")])
def test_user_setting_wins(fresh, env):
    fresh.setenv(*env)
    assert xla.cpu_options() == {}


@cpu_only
def test_unknown_option_falls_back_to_plain_jit(fresh):
    fresh.delenv("XLA_FLAGS", raising=False)
    fresh.delenv(xla.ENV_OFF, raising=False)
    fresh.setattr(xla, "CPU_OPTIONS", {"xla_cpu_no_such_option_lrpilot": "1"})
    assert xla.cpu_options() == {}
    assert float(xla.jit(lambda x: x.sum())(jnp.ones(3))) == 3.0
