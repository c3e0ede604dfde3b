"""The task distribution runs are drawn from: corpora, model sizes, batch and block sizes, run
lengths and configured base LRs. The zero-shot test tasks (shakespeare_char, enwik8, text8)
are never collected from.

A "family" fixes the ranges: `cpu` (the starter dataset: runs of seconds to a minute on two
cores), `gpu` (larger models for an accelerator) and `tiny` (tests).
"""

from __future__ import annotations

import dataclasses
import math
import random

from lrpilot.data import HELD_OUT_TASKS, OFFLINE_TASKS
from lrpilot.trainers.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Family:
    sizes: tuple[tuple[int, int, int], ...]  # (n_layer, n_embd, n_head)
    blocks: tuple[int, ...]
    batches: tuple[int, ...]
    iters: tuple[int, ...]
    dropouts: tuple[float, ...]
    base_lr: float  # configured base LR = base_lr * logU(1/3, 3)
    eval_iters: int
    max_cost: float  # cap on estimated GFLOP per run (rejection sampling)


FAMILIES = {
    "cpu": Family(sizes=((1, 32, 2), (2, 48, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4)), blocks=(32, 64),
                  batches=(8, 12, 16), iters=(300, 400, 600, 800, 1000, 1500), dropouts=(0.0, 0.0, 0.0, 0.1),
                  base_lr=1e-3, eval_iters=20, max_cost=600.0),
    "gpu": Family(sizes=((4, 128, 4), (4, 256, 4), (6, 256, 8), (6, 384, 6)), blocks=(64, 128, 256),
                  batches=(16, 32, 64), iters=(1000, 2000, 3000, 5000), dropouts=(0.0, 0.1, 0.2),
                  base_lr=1e-3, eval_iters=50, max_cost=4e5),
    "tiny": Family(sizes=((1, 16, 2),), blocks=(16,), batches=(4,), iters=(40,), dropouts=(0.0,),
                   base_lr=3e-3, eval_iters=2, max_cost=1e9),
}


def gflop(cfg: TrainConfig, vocab: int = 100) -> float:
    """Training compute of a run in GFLOP (6 N D, plus attention)."""
    d, l, t = cfg.n_embd, cfg.n_layer, cfg.block_size
    n_params = 12 * l * d * d + vocab * d
    per_token = 6 * n_params + 12 * l * d * t
    return per_token * cfg.batch_size * t * cfg.max_iters / 1e9


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    """One batched group: a task and a config shared by its runs."""

    task: str
    cfg: TrainConfig


def sample_group(rng: random.Random, family: str, tasks: tuple[str, ...]) -> GroupPlan:
    fam = FAMILIES[family]
    bad = [t for t in tasks if t in HELD_OUT_TASKS]
    if bad:
        raise ValueError(f"collect: {bad} are held out for zero-shot evaluation and are never collected from")
    for attempt in range(1000):
        if attempt % 100 == 0:  # each size gets its share: resample the rest until it fits the cap
            n_layer, n_embd, n_head = rng.choice(fam.sizes)
        iters = rng.choice(fam.iters)
        cfg = TrainConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=rng.choice(fam.blocks),
                          batch_size=rng.choice(fam.batches), max_iters=iters, dropout=rng.choice(fam.dropouts),
                          learning_rate=fam.base_lr, min_lr=fam.base_lr / 10, warmup_iters=0, eval_interval=iters,
                          eval_iters=fam.eval_iters, eval_train=False, sample_tokens=0)
        if gflop(cfg) <= fam.max_cost:
            return GroupPlan(rng.choice(tasks), cfg)
    raise RuntimeError(f"collect: no configuration of family '{family}' fits its cost cap")


def sample_base_mult(rng: random.Random) -> float:
    """A run's configured base LR relative to the family's: log-uniform in [1/3, 3]."""
    return round(math.exp(rng.uniform(math.log(1 / 3), math.log(3))), 4)


DEFAULT_TASKS = OFFLINE_TASKS
