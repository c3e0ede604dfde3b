"""Batched, controller-driven char-LM training: N independent runs in one jitted step.

`RunGroup` holds N runs of one task, one `TrainConfig` and one optimizer kind, stacked on
a leading run axis (sharded over the host's devices when there are several). Its jitted
`train_chunk` does C updates of every run with a per-run, per-iteration LR array
(`lax.scan` over iterations of a `vmap` over runs; on a CPU, a `lax.map` over groups of
runs vmapped a few at a time, see `_vmap_width`), so the controllers can change the LR
at any iteration without recompiling. A run whose loss or gradient becomes NaN/inf is
frozen at its last finite parameters and marked dead; the others go on.

Randomness: run r with seed s draws its initial parameters, its training batches
(fold_in(data_key, it)), dropout masks and evaluation batches (fold_in(eval_key, it))
from PRNGKey(s) only, so two runs with the same seed see the same data whatever their
controller.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lrpilot.trainers import optim, xla
from lrpilot.trainers.config import TrainConfig
from lrpilot.trainers.gpt import GPT, cross_entropy


def get_batch(data_N: jax.Array, key: jax.Array, batch: int, block: int) -> tuple[jax.Array, jax.Array]:
    """nanoGPT's get_batch: `batch` random windows; x (B, T) and y = x shifted by one, int32."""
    ix = jax.random.randint(key, (batch,), 0, data_N.shape[0] - block)
    win_BxT1 = jax.vmap(lambda i: jax.lax.dynamic_slice(data_N, (i,), (block + 1,)))(ix).astype(jnp.int32)
    return win_BxT1[:, :-1], win_BxT1[:, 1:]


def _keys(seed_key):
    """Per-run streams: init, data, dropout, eval."""
    return [jax.random.fold_in(seed_key, i) for i in range(4)]


# Activation floats (batch x block x n_embd, summed over runs) one vmapped sub-batch may hold on
# a CPU: two runs of nanoGPT's CPU recipe (12 x 64 x 128). Measured on a 2-core EPYC with
# benchmarks/bench_step.py (2026-11-26, all runs in one vmap): the small recipe's per-run step
# is fastest vmapped 2 at a time (36.3 ms per run-step against 36.9 at 4, 40.4 at 8 and 38.9
# alone), while much smaller models gain from wider vmaps (1 layer x 32, block 32,
# batch 8: 8 runs at 0.82 ms per run-step against 1.10 alone; benchmarks/README.md).
CPU_VMAP_FLOATS = 2 * 12 * 64 * 128


def _vmap_width(cfg: TrainConfig, n: int, n_devices: int, requested: int | None) -> int:
    """Runs per vmapped sub-batch of the training step: a divisor of n.

    On one CPU device the runs are vmapped in groups whose activations fit CPU_VMAP_FLOATS
    (`lax.map` over the groups, inside the same jitted step); on accelerators and across
    several devices all runs are vmapped together. `requested` overrides this (rounded down
    to a divisor of n).
    """
    if requested is not None and requested < 1:
        raise ValueError(f"vmap_width must be >= 1, got {requested}")
    if requested is None:
        if n_devices == 1 and jax.default_backend() == "cpu":
            fit = max(1, CPU_VMAP_FLOATS // (cfg.batch_size * cfg.block_size * cfg.n_embd))
            requested = 1 << (fit.bit_length() - 1)  # the largest power of two <= fit
        else:
            requested = n
    w = min(requested, n)
    while n % w:
        w -= 1
    return w


class Chunk(NamedTuple):
    """What a training chunk of N runs x C updates returns (host arrays)."""

    losses: np.ndarray  # (N, C) minibatch train loss of each update (nats)
    effective_lr: np.ndarray  # (N,) the step size actually applied after the chunk (Prodigy's estimate x LR)
    grad_norm: np.ndarray  # (N, C) global gradient norm before clipping
    clipped: np.ndarray  # (N, C) bool: the update was clipped (grad_norm > grad_clip)
    update_ratio: np.ndarray  # (N, C) RMS of the parameter update / RMS of the parameters


class RunGroup:
    """N runs trained in lockstep. State leaves have a leading axis of size N (padded to the
    device count when sharded; padding runs are copies of run 0 and never reported)."""

    def __init__(self, cfg: TrainConfig, vocab_size: int, kind: str, seeds: list[int], devices=None,
                 vmap_width: int | None = None):
        self.cfg, self.kind, self.n = cfg, kind, len(seeds)
        self.model = GPT(cfg.model(vocab_size))
        self.tx = optim.make(kind, cfg)
        devices = list(devices if devices is not None else jax.local_devices())
        n_dev = len(devices) if len(devices) > 1 else 1
        self.n_padded = -(-self.n // n_dev) * n_dev
        seeds = list(seeds) + [seeds[0]] * (self.n_padded - self.n)
        if n_dev > 1:
            mesh = Mesh(np.array(devices), ("runs",))
            self.run_sharding = NamedSharding(mesh, P("runs"))
            self.replicated = NamedSharding(mesh, P())
        else:
            self.run_sharding = self.replicated = None
        self.width = _vmap_width(cfg, self.n_padded, n_dev, vmap_width)
        seeds_u32 = np.asarray([s % 2**32 for s in seeds], np.uint32)  # any int seed; those below 2**32 unchanged
        self.state = self._put(jax.jit(jax.vmap(self._init_run))(jnp.asarray(seeds_u32)))
        self._chunk = xla.jit(self._train_chunk, donate_argnums=0)
        self._eval_split = xla.jit(self._split_loss)  # one compile per split's shape: val-only evaluations reuse it

    # ---- placement -------------------------------------------------------------------
    def _put(self, tree):
        return tree if self.run_sharding is None else jax.device_put(tree, self.run_sharding)

    def put_data(self, arr: np.ndarray) -> jax.Array:
        a = jnp.asarray(arr)
        return a if self.replicated is None else jax.device_put(a, self.replicated)

    # ---- one run ---------------------------------------------------------------------
    def _init_run(self, seed):
        k_init, _, _, _ = _keys(jax.random.key(seed))
        dummy = jnp.zeros((1, self.cfg.block_size), jnp.int32)
        params = self.model.init(k_init, dummy)["params"]
        return {"params": params, "opt": self.tx.init(params), "alive": jnp.array(True),
                "key": jax.random.key_data(jax.random.key(seed))}

    def _loss(self, params, x, y, key):
        if self.cfg.dropout > 0:
            logits = self.model.apply({"params": params}, x, deterministic=False, rngs={"dropout": key})
        else:
            logits = self.model.apply({"params": params}, x)
        return cross_entropy(logits, y)

    def _step(self, run, lr, it, train_data):
        _, k_data, k_drop, _ = _keys(jax.random.wrap_key_data(run["key"]))
        x, y = get_batch(train_data, jax.random.fold_in(k_data, it), self.cfg.batch_size, self.cfg.block_size)
        loss, grads = jax.value_and_grad(self._loss)(run["params"], x, y, jax.random.fold_in(k_drop, it))
        opt = optim.set_lr(run["opt"], lr)
        updates, new_opt = self.tx.update(grads, opt, run["params"])
        new_params = optax.apply_updates(run["params"], updates)
        g_norm = optax.tree.norm(grads)  # the global norm before clipping
        ok = run["alive"] & jnp.isfinite(loss) & jnp.isfinite(g_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        # RMS of the update / RMS of the parameters (both over all entries: the counts cancel)
        upd_ratio = optax.tree.norm(updates) / optax.tree.norm(run["params"])
        new_run = {**run, "params": keep(new_params, run["params"]), "opt": keep(new_opt, run["opt"]), "alive": ok}
        return new_run, (loss, g_norm, upd_ratio)

    # ---- batched, jitted -----------------------------------------------------------------
    def _train_chunk(self, state, lrs_CxN, it0, train_data):
        step_M = jax.vmap(self._step, in_axes=(0, 0, None, None))
        c, n = lrs_CxN.shape
        c_range = jnp.arange(c, dtype=jnp.int32)

        def chunk_M(st_M, lrs_CxM):  # C iterations of M vmapped runs
            def body(st, xs):
                lr_M, k = xs
                return step_M(st, lr_M, it0 + k, train_data)

            return jax.lax.scan(body, st_M, (lrs_CxM, c_range))

        g = n // self.width
        if g == 1:
            state, metrics_CxN = chunk_M(state, lrs_CxN)
        else:  # G groups of M = width runs, one group after the other (runs are independent)
            state_G = jax.tree.map(lambda a: a.reshape(g, self.width, *a.shape[1:]), state)
            lrs_GxCxM = lrs_CxN.reshape(c, g, self.width).transpose(1, 0, 2)
            state_G, metrics_GxCxM = jax.lax.map(lambda a: chunk_M(*a), (state_G, lrs_GxCxM))
            state = jax.tree.map(lambda a: a.reshape(n, *a.shape[2:]), state_G)
            metrics_CxN = jax.tree.map(lambda m: m.transpose(1, 0, 2).reshape(c, n), metrics_GxCxM)
        eff_N = jax.vmap(partial(optim.effective_lr, self.kind))(state["opt"], lrs_CxN[-1])
        return state, metrics_CxN, eff_N

    def _split_loss(self, state, it, data, split_id):
        """Mean loss over eval_iters batches of one split (split_id 0: train, 1: val), dropout off: (N,)."""

        def one(run):
            _, _, _, k_eval = _keys(jax.random.wrap_key_data(run["key"]))
            params = optim.eval_params(self.kind, run["opt"], run["params"])
            k_it = jax.random.fold_in(k_eval, it)

            def body(acc, k):
                x, y = get_batch(data, k, self.cfg.batch_size, self.cfg.block_size)
                return acc + cross_entropy(self.model.apply({"params": params}, x), y), None

            keys = jax.random.split(jax.random.fold_in(k_it, split_id), self.cfg.eval_iters)
            total, _ = jax.lax.scan(body, jnp.float32(0.0), keys)
            return total / self.cfg.eval_iters

        return jax.vmap(one)(state)

    def _evaluate(self, state, it, train_data, val_data, with_train: bool = True):
        """Train and val losses (N,), (N,) (train NaN without `with_train` or `cfg.eval_train`): the
        same compiled per-split function for both, so a val-only evaluation compiles nothing new."""
        it = jnp.int32(it)
        val = self._eval_split(state, it, val_data, jnp.int32(1))
        if not (self.cfg.eval_train and with_train):
            return jnp.full(val.shape, jnp.nan, jnp.float32), val
        return self._eval_split(state, it, train_data, jnp.int32(0)), val

    # ---- functional API (state in, state out), for environments that carry the state ------------
    def train_state(self, state, lrs_CxN, it0: int, train_data):
        """C updates of `state` (a copy is donated, `state` stays valid): (new state, losses (C, N),
        effective LR (N,))."""
        st, (loss_CxN, _, _), eff_N = self._chunk(jax.tree.map(jnp.copy, state), jnp.asarray(lrs_CxN, jnp.float32),
                                                   jnp.int32(it0), train_data)
        return st, loss_CxN, eff_N

    def evaluate_state(self, state, it: int, train_data, val_data):
        """Train and val loss estimates (N,), (N,) of `state` at iteration `it`."""
        return self._evaluate(state, it, train_data, val_data, True)

    # ---- the group's own state -------------------------------------------------------------------
    def train_chunk(self, lrs_NxC: np.ndarray, it0: int, train_data) -> "Chunk":
        """C updates of every run. lrs_NxC: per-run LR of iterations it0..it0+C-1. Returns the
        minibatch losses (N, C), the effective LR after the chunk (N,) and the training-health
        metrics of every update (N, C), measured inside the jitted step."""
        lrs = np.zeros((lrs_NxC.shape[1], self.n_padded), np.float32)
        lrs[:, : self.n] = lrs_NxC.T
        lrs = jnp.asarray(lrs) if self.run_sharding is None else jax.device_put(
            lrs, NamedSharding(self.run_sharding.mesh, P(None, "runs")))
        self.state, metrics_CxN, eff_N = self._chunk(self.state, lrs, jnp.int32(it0), train_data)
        loss, g_norm, upd = (np.asarray(m).T[: self.n] for m in metrics_CxN)
        return Chunk(loss, np.asarray(eff_N)[: self.n], g_norm, g_norm > self.cfg.grad_clip, upd)

    def evaluate(self, it: int, train_data, val_data, with_train: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Train and val loss estimates (N,), (N,) of the group's runs; `with_train=False` skips the
        train split (NaN): an evaluation only controllers asked for, which observe val alone."""
        tr, va = self._evaluate(self.state, it, train_data, val_data, with_train)
        return np.asarray(tr)[: self.n], np.asarray(va)[: self.n]

    @property
    def n_params(self) -> int:
        """Parameters of one run's model."""
        return int(sum(np.prod(a.shape[1:]) for a in jax.tree.leaves(self.state["params"])))

    def stop(self, i: int) -> None:
        """Freezes run i from now on (its parameters stop changing)."""
        self.state = {**self.state, "alive": self.state["alive"].at[i].set(False)}

    def alive(self) -> np.ndarray:
        return np.asarray(self.state["alive"])[: self.n]

    def params(self, i: int):
        """Parameters to evaluate/sample from for run i (unstacked)."""
        run = jax.tree.map(lambda a: a[i], self.state)
        return optim.eval_params(self.kind, run["opt"], run["params"])


# ---- inference speed ---------------------------------------------------------------------
@partial(jax.jit, static_argnums=(0,))
def _generate(model: GPT, params, key, n_tokens, temperature=0.8, top_k=200):
    """Samples n_tokens after token 0 with a sliding window of block_size (nanoGPT's generate)."""
    cfg = model.cfg
    t_max = cfg.block_size

    def body(i, carry):
        buf, n, key = carry
        key, sub = jax.random.split(key)
        logits = model.apply({"params": params}, buf[None])[0, jnp.minimum(n, t_max) - 1] / temperature
        if top_k < cfg.vocab_size:
            kth = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        tok = jax.random.categorical(sub, logits).astype(jnp.int32)
        inserted = buf.at[jnp.minimum(n, t_max - 1)].set(tok)
        rolled = jnp.roll(buf, -1).at[t_max - 1].set(tok)
        return jnp.where(n < t_max, inserted, rolled), n + 1, key

    buf = jnp.zeros((t_max,), jnp.int32)
    buf, _, _ = jax.lax.fori_loop(0, n_tokens, body, (buf, jnp.int32(1), key))
    return buf


def inference_tokens_per_second(model: GPT, params, n_tokens: int, seed: int = 0) -> float:
    """Tokens per second of single-sequence sampling, compile excluded."""
    if n_tokens <= 0:
        return float("nan")
    key = jax.random.key(seed)
    _generate(model, params, key, 1).block_until_ready()  # compile
    t0 = time.perf_counter()
    _generate(model, params, key, n_tokens).block_until_ready()
    return n_tokens / (time.perf_counter() - t0)


@dataclasses.dataclass
class ChunkTimer:
    """Median seconds per iteration over chunk calls, excluding each chunk length's first call."""

    seen: set = dataclasses.field(default_factory=set)
    per_iter: list = dataclasses.field(default_factory=list)
    first: list = dataclasses.field(default_factory=list)  # each chunk length's first call (compilation included)

    def add(self, length: int, seconds: float) -> None:
        if length in self.seen:
            self.per_iter.append(seconds / length)
        else:
            self.first.append(seconds / length)
        self.seen.add(length)

    def includes_compile(self) -> bool:
        """True when no chunk ran after its compilation (a run stopped in its first chunk)."""
        return not self.per_iter

    def median_ms(self) -> float:
        """Median ms per iteration of the chunks after compilation; when there is none, of the
        first calls (compilation included: see includes_compile); NaN with no chunk at all."""
        xs = self.per_iter or self.first
        return float(np.median(xs) * 1e3) if xs else float("nan")
