"""References shared by the controller tests (test_schedules, test_reactive, test_controllers):
the runs they use, LRs of a controller, nanoGPT's warmup written out, optax schedules in
float64 and torch schedulers (when torch is importable)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lrpilot.controllers import RunInfo, make

RUN = RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000, eval_interval=250, seed=0)
# odd numbers, so no schedule agrees with a reference by a lucky divisibility
RUN2 = RunInfo(base_lr=3e-3, min_lr=3e-5, warmup_iters=37, max_iters=1013, eval_interval=100, seed=1)
RUNS = pytest.mark.parametrize("run", [RUN, RUN2], ids=["run2000", "run1013"])

RTOL = 1e-6  # float64 references: written out, torch, optax evaluated with 64-bit JAX
RTOL32 = 1e-5  # optax in float32 (reduce_on_plateau's state)


def lrs(spec: str, run: RunInfo, n: int | None = None) -> np.ndarray:
    c = make(spec)
    c.reset(run)
    return np.array([c.lr(it) for it in range(run.max_iters if n is None else n)])


def warm(peak: float, it: int, w: int) -> float:
    """nanoGPT's warmup, written out."""
    return peak * (it + 1) / (w + 1)


def optax_at(sched, its) -> np.ndarray:
    """An optax schedule at the given counts, computed in float64 (float32 would cost ~1e-4 of
    relative error for e.g. 0.999 ** 1900)."""
    import jax
    import jax.numpy as jnp

    its = np.asarray(its)
    padded = np.zeros(2048 * (1 + len(its) // 2048), dtype=np.int64)  # one shape: op-by-op compiles are reused
    padded[: len(its)] = its
    if hasattr(jax, "enable_x64"):
        x64 = jax.enable_x64(True)
    else:  # older JAX
        from jax.experimental import enable_x64

        x64 = enable_x64()
    with x64:
        return np.asarray(jax.vmap(sched)(jnp.asarray(padded)), dtype=np.float64)[: len(its)]


def optax_after(sched, n: int) -> np.ndarray:
    return optax_at(sched, np.arange(n))


def torch_lrs(make_sched, peak: float, n: int) -> np.ndarray:
    """LR of steps 0..n-1 of a torch scheduler built on a one-parameter SGD (torch tests only)."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_sched(torch, opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return np.array(out)


def check_warmup(got: np.ndarray, peak: float, w: int):
    want = np.array([warm(peak, it, w) for it in range(w)])
    np.testing.assert_allclose(got[:w], want, rtol=RTOL, atol=0)

