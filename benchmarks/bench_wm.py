"""World-model training speed: one training step (forward, backward, AdamW) of the world model on
a batch of episodes, by architecture, with and without dropout.

    python benchmarks/bench_wm.py [--heads 4,2,1] [--d-model 64] [--layers 3] [--batch 32] [--spec v1] [--reps 5]

On XLA's CPU backend the attention's batched matrix products are the slow part when the head
dimension is small (d_model 64 over 4 heads: 16), and dropout pays for its random bits; this
prints the median ms per step of each variant (compile excluded) so that a choice of n_head or
dropout can be weighed against its cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from _common import med, print_header


def step_ms(cfg, spec, batch: int, reps: int) -> float:
    import jax
    import jax.numpy as jnp
    import optax

    from lrpilot.worldmodel.model import build, weighted_loss

    model, ser = build(cfg, spec)
    seq = jnp.asarray(np.random.default_rng(0).integers(0, cfg.base, (batch, ser.seq_len)), jnp.int32)
    w = jnp.ones(seq.shape, jnp.float32)
    params = model.init(jax.random.key(0), seq[:1])["params"]
    tx = optax.adamw(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, k):
        def loss(p):
            logits, _ = model.apply({"params": p}, seq, deterministic=cfg.dropout == 0, rngs={"dropout": k})
            return weighted_loss(logits, seq, w)[0]

        g = jax.grad(loss)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    key = jax.random.key(1)
    params, opt = step(params, opt, key)
    jax.block_until_ready(params)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        params, opt = step(params, opt, jax.random.fold_in(key, i))
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    return 1e3 * med(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", default="4,2,1")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--spec", default="v1", choices=["v1", "v2"])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    from lrpilot.spec import SPECS
    from lrpilot.worldmodel.model import WorldModelConfig

    print_header("bench_wm: world-model training step")
    spec = SPECS[a.spec]
    base = WorldModelConfig(n_layer=a.layers, d_model=a.d_model)
    print(f"# {a.layers} layers x {a.d_model}, batch {a.batch} episodes, spec {a.spec} "
          f"({base.serializer(spec).seq_len} symbols each), AdamW; median of {a.reps} steps")
    for h in [int(x) for x in a.heads.split(",")]:
        for dropout in (base.dropout, 0.0):
            cfg = dataclasses.replace(base, n_head=h, dropout=dropout)
            print(f"n_head {h} (head dim {a.d_model // h:3d}), dropout {dropout:.1f}: "
                  f"{step_ms(cfg, spec, a.batch, a.reps):8.1f} ms per step", flush=True)


if __name__ == "__main__":
    main()
