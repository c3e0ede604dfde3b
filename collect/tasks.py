"""The task distribution runs are drawn from: corpora, model sizes, batch and block sizes, run
lengths and configured base LRs. The zero-shot test tasks (shakespeare_char, enwik8, text8)
are never collected from.

A "family" fixes the ranges:

* `cpu`: the starter dataset (v1 draws: base LR 1e-3 x logU[1/3, 3], at most 4 x 128 and 1500
  iterations); kept exactly so that its job still grows and resumes.
* `cpu2`: dataset v2 on two CPU cores. The configured base LR is the model's default LR
  (`default_lr`: 1e-3 x sqrt(128 / width)) times logU[1/30, 30], so that the LR relative to
  the configured one says little; a share of groups (`protocol_share`) is exactly nanoGPT's
  CPU recipe (4 x 128, block 64, batch 12, 2000 iterations), the small zero-shot protocol.
* `gpu`: larger models for an accelerator, drawn like `cpu2`.
* `fork`: forked groups (`collect.edges.Fork`): the runs of a group share the seed, the base LR
  and the schedule up to a fork decision, where each takes another action; smaller and shorter
  runs than `cpu2` (many groups per hour), base LR drawn as in `cpu2`.
* `fork_high`: `fork` with the configured base LR at x3 to x30 of the model's default, where one
  doubling of the LR costs the most and the pooled data hold the fewest decisions (the fidelity
  issue's measurement: the held-out action effect comes mostly from runs above x10).
* `walk_high`: `cpu2` with the configured base LR at x3 to x30 of the default, for random walks
  and ramps there (`--explore walk ramp`): the random-walk estimate of one action's effect above
  x10 rested on 58 held-out rows, against the paired (`fork_high`) estimate.
* `fork_gpu`: forked groups of `gpu`'s models (at most 3,000 iterations), for an accelerator: the
  paired effect of one action on models larger than the CPU families reach.
* `walk_gpu_high`: `gpu`'s models (at most 3,000 iterations) with each run's configured base LR at
  x3 to x30 of the default, for random walks and ramps there (`--explore walk ramp`): `walk_high`
  on the larger models, where one doubling costs about twice as much (the `fork_gpu` groups).
* `timing`: anneal-timing groups (`collect.edges.sample_timing`) of `fork`'s models: 9 runs that
  share a seed, configured at x1, x3 and x10 of the default LR, each annealing from 25%, 50% or
  75% of the run; how a run's history of LRs decides where it ends (the fidelity issue's ranking).
  `timing_small`: the same groups, every one at the small protocol's size and length (nanoGPT's CPU
  recipe, 2,000 iterations), where the validation runs and the deployed policy act. `timing_high`:
  `timing_small`'s groups configured at x1, x30 and x100 of the default LR: what holding an LR above
  30x the default costs, and what annealing from there recovers (the simulators' weakest regime).
  `timing_drop`: drop groups (`collect.edges.sample_drop`) at the small protocol: 9 runs that share a
  seed and a configured LR (x1 to x10 of the default), each cutting it by halving at every decision
  from 5%, 30% or 55% of the run to 0.1x, 0.01x or 0.001x: what holding a vanishing LR costs.
* `tiny`, `tiny_fork`, `tiny_timing`, `tiny_drop`: tests.
"""

from __future__ import annotations

import dataclasses
import math
import random

from lrpilot import corpora
from lrpilot.collect.edges import TIMING_LEVELS
from lrpilot.data import PYTHON_TASKS, misplaced_tasks
from lrpilot.trainers.config import SMALL, TrainConfig


@dataclasses.dataclass(frozen=True)
class Family:
    sizes: tuple[tuple[int, int, int], ...]  # (n_layer, n_embd, n_head)
    blocks: tuple[int, ...]
    batches: tuple[int, ...]
    iters: tuple[int, ...]
    dropouts: tuple[float, ...]
    base_lr: float  # v1: every model's default LR; v2: the default of a 128-wide model (scaled by width)
    eval_iters: int
    max_cost: float  # cap on estimated GFLOP per run (rejection sampling)
    base_mult: tuple[float, float] = (1 / 3, 3)  # configured base LR = default LR x logU(base_mult)
    protocol_share: float = 0.0  # share of groups that are exactly the small protocol (nanoGPT's CPU recipe)
    draws: str = "v1"  # v1: the starter's draws; v2: base LR scaled by width, drawn before the explorer
    fork: bool = False  # a group's runs share seed, base LR and schedule up to a fork decision (collect.edges.Fork)
    timing: bool = False  # a group is 9 runs sharing a seed: 3 configured LRs x 3 anneal starts (collect.edges.sample_timing)
    timing_levels: tuple[float, ...] = TIMING_LEVELS  # a timing group's 3 configured LRs, x the model's default LR
    drop: bool = False  # with timing: a group's 9 runs cut the LR early and deep instead (collect.edges.sample_drop)

    def default_lr(self, cfg: TrainConfig) -> float:
        """A sensible LR for the model's size: v1 one LR for all; v2 1e-3 x sqrt(128 / n_embd)."""
        if self.draws == "v1":
            return self.base_lr
        return float(f"{self.base_lr * math.sqrt(128 / cfg.n_embd):.4g}")


_FORK = Family(sizes=((1, 32, 2), (2, 48, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4)), blocks=(32, 64),
               batches=(8, 12, 16), iters=(300, 500, 800), dropouts=(0.0, 0.0, 0.1), base_lr=1e-3, eval_iters=40,
               max_cost=400.0, base_mult=(1 / 30, 30), draws="v2", fork=True)

_CPU2 = Family(sizes=((1, 32, 2), (2, 48, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4)), blocks=(32, 64, 128),
               batches=(8, 12, 16), iters=(300, 500, 800, 1200, 2000), dropouts=(0.0, 0.0, 0.0, 0.1),
               base_lr=1e-3, eval_iters=20, max_cost=2500.0, base_mult=(1 / 30, 30), protocol_share=0.2, draws="v2")

_GPU = Family(sizes=((4, 128, 4), (4, 256, 4), (6, 256, 8), (6, 384, 6)), blocks=(64, 128, 256),
              batches=(16, 32, 64), iters=(1000, 2000, 3000, 5000), dropouts=(0.0, 0.1, 0.2),
              base_lr=1e-3, eval_iters=50, max_cost=4e5, base_mult=(1 / 30, 30), protocol_share=0.1, draws="v2")

FAMILIES = {
    "cpu": Family(sizes=((1, 32, 2), (2, 48, 2), (2, 64, 4), (3, 96, 4), (4, 128, 4)), blocks=(32, 64),
                  batches=(8, 12, 16), iters=(300, 400, 600, 800, 1000, 1500), dropouts=(0.0, 0.0, 0.0, 0.1),
                  base_lr=1e-3, eval_iters=20, max_cost=600.0),
    "cpu2": _CPU2,
    "gpu": _GPU,
    "fork": _FORK,
    "fork_high": dataclasses.replace(_FORK, base_mult=(3, 30)),
    "walk_high": dataclasses.replace(_CPU2, base_mult=(3, 30)),
    "fork_gpu": dataclasses.replace(_GPU, iters=(1000, 2000, 3000), fork=True),
    "walk_gpu_high": dataclasses.replace(_GPU, iters=(1000, 2000, 3000), base_mult=(3, 30)),
    "timing": dataclasses.replace(_FORK, fork=False, timing=True),
    "timing_small": dataclasses.replace(_CPU2, protocol_share=1.0, timing=True),
    "timing_high": dataclasses.replace(_CPU2, protocol_share=1.0, timing=True, timing_levels=(1.0, 30.0, 100.0)),
    "timing_drop": dataclasses.replace(_CPU2, protocol_share=1.0, timing=True, drop=True),
    "tiny": Family(sizes=((1, 16, 2),), blocks=(16,), batches=(4,), iters=(40,), dropouts=(0.0,),
                   base_lr=3e-3, eval_iters=2, max_cost=1e9),
    "tiny_fork": Family(sizes=((1, 16, 2),), blocks=(16,), batches=(4,), iters=(40,), dropouts=(0.0,),
                        base_lr=3e-3, eval_iters=2, max_cost=1e9, base_mult=(1 / 30, 30), draws="v2", fork=True),
    "tiny_timing": Family(sizes=((1, 16, 2),), blocks=(16,), batches=(4,), iters=(40,), dropouts=(0.0,),
                          base_lr=3e-3, eval_iters=2, max_cost=1e9, draws="v2", timing=True),
}
FAMILIES["tiny_drop"] = dataclasses.replace(FAMILIES["tiny_timing"], drop=True)


def gflop(cfg: TrainConfig, vocab: int = 100) -> float:
    """Training compute of a run in GFLOP (6 N D, plus attention)."""
    d, l, t = cfg.n_embd, cfg.n_layer, cfg.block_size
    n_params = 12 * l * d * d + vocab * d
    per_token = 6 * n_params + 12 * l * d * t
    return per_token * cfg.batch_size * t * cfg.max_iters / 1e9


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    """One batched group: a task and a config shared by its runs, and the model's default LR
    (the configured LR of run i is default_lr x its base-LR multiplier)."""

    task: str
    cfg: TrainConfig
    default_lr: float


def _collect_cfg(fam: Family, n_layer, n_embd, n_head, block, batch, iters, dropout, lr) -> TrainConfig:
    return TrainConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block, batch_size=batch,
                       max_iters=iters, dropout=dropout, learning_rate=lr, min_lr=lr / 10, warmup_iters=0,
                       eval_interval=iters, eval_iters=fam.eval_iters, eval_train=False, sample_tokens=0)


def sample_group(rng: random.Random, family: str, tasks: tuple[str, ...]) -> GroupPlan:
    fam = FAMILIES[family]
    bad = misplaced_tasks(tasks)[0]
    if bad:
        raise ValueError(f"collect: {bad} are held out for zero-shot evaluation and are never collected from")
    if fam.draws == "v2" and rng.random() < fam.protocol_share:
        cfg = _collect_cfg(fam, SMALL.n_layer, SMALL.n_embd, SMALL.n_head, SMALL.block_size, SMALL.batch_size,
                           SMALL.max_iters, SMALL.dropout, 1.0)
        lr = fam.default_lr(cfg)
        return GroupPlan(rng.choice(tasks), dataclasses.replace(cfg, learning_rate=lr, min_lr=lr / 10), lr)
    for attempt in range(1000):
        if attempt % 100 == 0:  # each size gets its share: resample the rest until it fits the cap
            n_layer, n_embd, n_head = rng.choice(fam.sizes)
        iters = rng.choice(fam.iters)
        cfg = _collect_cfg(fam, n_layer, n_embd, n_head, rng.choice(fam.blocks), rng.choice(fam.batches), iters,
                           rng.choice(fam.dropouts), fam.base_lr)
        if gflop(cfg) <= fam.max_cost:
            lr = fam.default_lr(cfg)
            if lr != cfg.learning_rate:
                cfg = dataclasses.replace(cfg, learning_rate=lr, min_lr=lr / 10)
            return GroupPlan(rng.choice(tasks), cfg, lr)
    raise RuntimeError(f"collect: no configuration of family '{family}' fits its cost cap")


def sample_base_mult(rng: random.Random, family: str = "cpu") -> float:
    """A run's configured base LR relative to its model's default LR: log-uniform in the family's range."""
    lo, hi = FAMILIES[family].base_mult
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 4)


def default_tasks() -> tuple[str, ...]:
    """The offline corpora this machine has: the Python-built ones and the system corpora present."""
    return PYTHON_TASKS + tuple(n for n in corpora.NAMES if corpora.present(n))


DEFAULT_TASKS = PYTHON_TASKS  # what the starter dataset and SimPLe's default rounds draw from
