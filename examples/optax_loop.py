"""A plain JAX/optax training loop whose LR comes from any lrpilot controller.

A character-level MLP language model (the previous `--context` characters -> next character)
on the offline `python_docs` corpus, trained with `optax.inject_hyperparams(optax.adamw)`;
the LR is written into the optimizer state each iteration by `lrpilot.driver.OptaxLR`.

    python examples/optax_loop.py                                  # cosine schedule, 300 updates
    python examples/optax_loop.py --controller wsd:decay_frac=0.2 --iters 600
    python examples/optax_loop.py --controller plateau             # a reactive rule (needs val)
    python examples/optax_loop.py --controller policy:pretrained   # the shipped learned policy
    python examples/optax_loop.py --controller policy:PATH         # a policy checkpoint directory

Set LRPILOT_DATA_DIR to a directory of prepared datasets if you have one (python_docs is
built from the running Python installation otherwise). Runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
    import lrpilot  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrpilot.controllers import make
from lrpilot.data import load
from lrpilot.driver import LoopDriver, OptaxLR


def init_params(key: jax.Array, vocab: int, context: int, emb: int, hidden: int) -> dict:
    """Embedding (vocab, emb), then a 2-layer MLP on the flattened context (context * emb)."""
    k1, k2, k3 = jax.random.split(key, 3)
    d_in = context * emb
    return {
        "emb": jax.random.normal(k1, (vocab, emb)) * 0.1,
        "w1": jax.random.normal(k2, (d_in, hidden)) / math.sqrt(d_in),
        "b1": jnp.zeros((hidden,)),
        "w2": jax.random.normal(k3, (hidden, vocab)) / math.sqrt(hidden),
        "b2": jnp.zeros((vocab,)),
    }


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean next-character cross-entropy (nats). x: (B, context) int32, y: (B,) int32."""
    h = params["emb"][x].reshape(x.shape[0], -1)  # (B, context * emb)
    h = jax.nn.gelu(h @ params["w1"] + params["b1"])  # (B, hidden)
    logits = h @ params["w2"] + params["b2"]  # (B, vocab)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def get_batch(key: jax.Array, data: jax.Array, batch: int, context: int) -> tuple[jax.Array, jax.Array]:
    """Random windows of `data` (N,) int32: x (batch, context), y (batch,) the next character."""
    starts = jax.random.randint(key, (batch,), 0, data.shape[0] - context - 1)
    x = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (context,)))(starts)
    return x, data[starts + context]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--controller", default="cosine", help="controller spec, e.g. cosine, wsd:decay_frac=0.2, "
                    "plateau, policy:pretrained or policy:PATH (default cosine)")
    ap.add_argument("--iters", type=int, default=300, help="optimizer updates (default 300)")
    ap.add_argument("--eval-every", type=int, default=50, help="evaluation interval in updates (default 50)")
    ap.add_argument("--lr", type=float, default=3e-3, help="base (peak) LR (default 3e-3)")
    ap.add_argument("--min-lr", type=float, default=None, help="floor LR (default lr / 10)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup updates (default iters // 20)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--context", type=int, default=16, help="characters of context")
    ap.add_argument("--eval-batches", type=int, default=4, help="val batches per evaluation")
    ap.add_argument("--dataset", default="python_docs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    data = load(args.dataset)
    train = jnp.asarray(data.train.astype(np.int32))
    val = jnp.asarray(data.val.astype(np.int32))
    warmup = args.iters // 20 if args.warmup is None else args.warmup
    key = jax.random.key(args.seed)
    key, k_init = jax.random.split(key)
    params = init_params(k_init, data.vocab_size, args.context, emb=24, hidden=256)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    # the run's context (parameter count, targets per update): policies of spec v2+ observe it
    driver = LoopDriver(make(args.controller), base_lr=args.lr, max_iters=args.iters, min_lr=args.min_lr,
                        warmup_iters=warmup, eval_interval=args.eval_every, seed=args.seed,
                        n_params=n_params, tokens_per_update=args.batch_size)
    lr_ctl = OptaxLR(driver)
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.1))
    opt_state = opt.init(params)

    @jax.jit
    def train_step(params, opt_state, key, train):
        x, y = get_batch(key, train, args.batch_size, args.context)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, key, val):
        keys = jax.random.split(key, args.eval_batches)
        return jnp.mean(jax.vmap(lambda k: loss_fn(params, *get_batch(k, val, args.batch_size, args.context)))(keys))

    print(f"{data.name}: vocab {data.vocab_size}, {len(data.train):,} train chars; controller "
          f"{args.controller}, {args.iters} updates, observes at {len(driver.observe_points)} points")
    t0 = time.perf_counter()
    prev_loss = None  # loss of the previous update
    since_print: list[float] = []  # minibatch losses since the last printed line
    for it in range(args.iters + 1):  # the extra step delivers the final observation
        val_loss = None
        if driver.wants_eval(it) or it % args.eval_every == 0 or it == args.iters:
            key, k_eval = jax.random.split(key)
            val_loss = float(evaluate(params, k_eval, val))
        opt_state = lr_ctl.set(opt_state, it, train_loss=prev_loss, val_loss=val_loss)
        if val_loss is not None:
            tl = f"{np.mean(since_print):.4f}" if since_print else "-"
            print(f"iter {it:5d}  lr {driver.last_lr:.3e}  train {tl:>6}  val {val_loss:.4f}")
            since_print = []
        if it == args.iters or driver.finished:
            break
        key, k_step = jax.random.split(key)
        params, opt_state, loss = train_step(params, opt_state, k_step, train)
        prev_loss = float(loss)
        since_print.append(prev_loss)
    if driver.finished and it < args.iters:
        print(f"the controller stopped the run at iteration {it}")
    if driver.n_bad_lr:
        print(f"warning: the controller returned {driver.n_bad_lr} invalid LRs (previous LR kept)")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
