"""XLA compiler options for the training step on CPU.

XLA's CPU backend (jaxlib 0.10) lowers small reductions, such as LayerNorm's statistics and
its weight gradients or the softmax backward sums, to YNNPACK fusions that are far slower
than XLA's own loops at nanoGPT's CPU scale: in a profile of the small recipe's step
(4L/4H/128, block 64, batch 12, 2 cores) 62 such reductions took 12.9 of 47 ms. Keeping
YNNPACK for matrix products only (`xla_cpu_experimental_ynn_fusion_type` = DOT) cut the
step to about 38 ms (`benchmarks/bench_step.py`). The option is passed per jit, so it
touches only lrpilot's own training and evaluation steps, never the user's programs.

`cpu_options()` returns the options this jaxlib accepts ({} where it does not know them,
on other backends, or where the user set the same option in XLA_FLAGS, which wins), found
once by compiling a one-line probe.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

_YNN = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {_YNN: "LIBRARY_FUSION_TYPE_DOT"}
ENV_OFF = "LRPILOT_XLA_DEFAULTS"  # "0" turns the options off


@functools.cache
def cpu_options() -> dict[str, str]:
    """The compiler options to pass to lrpilot's training jits (possibly empty)."""
    if os.environ.get(ENV_OFF, "1") == "0" or _YNN in os.environ.get("XLA_FLAGS", ""):
        return {}
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x.sum(0), compiler_options=CPU_OPTIONS).lower(jnp.ones((2, 2))).compile()
    except Exception:  # an older or newer jaxlib without this option: plain jit
        return {}
    return dict(CPU_OPTIONS)


def jit(fun, **kwargs):
    """`jax.jit` with `cpu_options()` as compiler options."""
    return jax.jit(fun, compiler_options=cpu_options() or None, **kwargs)
