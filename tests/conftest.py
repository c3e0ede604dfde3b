"""Shared fixtures: tiny synthetic trajectories and a tiny world model (no real training needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import Trajectories


def synthetic_trajectories(n_runs: int = 12, seed: int = 0, spec=DEFAULT_SPEC, noise: float = 0.003) -> Trajectories:
    """Episodes that look like training curves: val decays faster at higher LR (up to a point)."""
    rng = np.random.default_rng(seed)
    n, f = spec.n_decisions, spec.n_obs
    obs = np.zeros((n_runs, n + 1, f), np.float32)
    actions = np.full((n_runs, n), -1, np.int32)
    length = np.full(n_runs, n + 1, np.int32)
    val_loss = np.full((n_runs, n + 1), np.nan)
    metas = []
    for r in range(n_runs):
        lr_rel, val, v0 = 1.0, 1.0, 4.0 + rng.uniform(-0.3, 0.3)
        obs[r, 0] = spec.observation(0, 1.0, v0, None, v0)[0]
        val_loss[r, 0] = v0
        for k in range(n):
            a = int(rng.integers(spec.n_actions))
            actions[r, k] = a
            lr_rel = spec.next_lr_rel(lr_rel, a)
            step = 0.05 * min(lr_rel, 3.0) / 3.0 * val
            val = max(val - step + rng.normal(0, noise), 0.2)
            train = val * 0.98
            o, _ = spec.observation(k + 1, lr_rel, val * v0, train * v0, v0)
            obs[r, k + 1] = o
            val_loss[r, k + 1] = val * v0
        metas.append({"task": "synthetic", "group": r // 2, "job_seed": 0, "family": "test",
                      "config": {"n_layer": 1, "n_embd": 16, "max_iters": 100}, "controller": {"name": "random"}})
    return Trajectories(spec, obs, actions, length, np.zeros(n_runs, bool), metas,
                        [f"run{r}.parquet" for r in range(n_runs)], val_loss)


@pytest.fixture(scope="session")
def traj():
    return synthetic_trajectories()


@pytest.fixture(scope="session")
def tiny_wm():
    from lrpilot.worldmodel.model import WorldModelConfig, build

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=30, eval_every=10, batch_size=4)
    model, ser = build(cfg, DEFAULT_SPEC)
    params = model.init(jax.random.key(0), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    return cfg, model, ser, params


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory):
    """One persistent XLA compilation cache for the whole session, also given (by environment) to CLI
    subprocesses and Ray workers: a computation compiled by one test (the same shapes, however its
    function was built) is loaded by the next. Everything restored afterwards."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    cache = str(tmp_path_factory.getbasetemp() / "jax-compile-cache")
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_COMPILATION_CACHE_DIR", cache)
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        yield
    for n, v in old.items():
        jax.config.update(n, v)
    cc.reset_cache()


def tiny_cfg(**kw):
    """The tiny scale on the offline corpus, 40 iterations, evaluations every 20."""
    from lrpilot.trainers.config import scale_config

    return scale_config("python_docs", "tiny", **{"max_iters": 40, "eval_interval": 20, "sample_tokens": 0, **kw})
