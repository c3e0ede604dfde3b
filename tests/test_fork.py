"""Paired collection groups. Forked: one seed, one base LR and one schedule up to the fork, then one
action per branch; the branches are identical before the fork and differ only by the action.
Anneal-timing: one seed, 3 configured LRs x 3 anneal starts; identical until they anneal. Drop: one
seed and one configured LR, 3 cut starts x 3 floors; identical until they cut."""

from __future__ import annotations

import numpy as np
import pytest

from lrpilot.collect.edges import (
    DROP_FLOORS,
    DROP_STARTS,
    TIMING_LEVELS,
    TIMING_STARTS,
    Fork,
    sample_drop,
    sample_fork,
    sample_timing,
)
from lrpilot.collect.explore import Follow
from lrpilot.collect.job import Job, collect
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import load_dir

N = DEFAULT_SPEC.n_decisions


def test_a_forked_group_shares_its_seed_base_lr_and_schedule():
    job = Job(family="tiny_fork", tasks=("python_docs",), parallel=8)
    seeds = {job.run_seed(i) for i in range(8)}
    assert len(seeds) == 1 and job.run_seed(8) != job.run_seed(0)
    branches = [job.explorer(i, DEFAULT_SPEC) for i in range(8)]
    assert len({mult for _, mult in branches}) == 1
    descr = [c.describe() for c, _ in branches]
    assert len({str(d["base"]) for d in descr}) == 1 and len({d["at"] for d in descr}) == 1
    assert [d["action"] for d in descr] == [0, 1, 2, 3, 4, 5, 6, None]  # one action each; the last walks


def test_fork_high_draws_its_groups_base_lr_from_x3_to_x30_of_the_default():
    job = Job(family="fork_high", tasks=("python_docs",), parallel=8)
    mults = [[job.explorer(g * 8 + b, DEFAULT_SPEC)[1] for b in range(8)] for g in range(40)]
    assert all(len(set(m)) == 1 for m in mults)  # one base LR per forked group
    first = np.array([m[0] for m in mults])
    assert first.min() >= 3 and first.max() <= 30 and (first > 10).sum() >= 10


def test_fork_gpu_forks_groups_of_the_gpu_familys_models():
    job = Job(family="fork_gpu", tasks=("python_docs",), parallel=8)
    plans = [job.group(g) for g in range(40)]
    assert {p.cfg.n_embd for p in plans} >= {256, 384} and max(p.cfg.max_iters for p in plans) <= 3000
    assert len({job.run_seed(i) for i in range(8)}) == 1  # one seed per forked group
    descr = [job.explorer(i, DEFAULT_SPEC)[0].describe() for i in range(8)]
    assert [d["action"] for d in descr] == [0, 1, 2, 3, 4, 5, 6, None]


def test_walk_high_draws_each_runs_base_lr_from_x3_to_x30_of_the_default_and_walks_as_asked():
    job = Job(family="walk_high", tasks=("python_docs",), parallel=8, mix=(("walk", 1.0),))
    drawn = [job.explorer(i, DEFAULT_SPEC) for i in range(64)]
    mults = np.array([m for _, m in drawn])
    assert mults.min() >= 3 and mults.max() <= 30 and len(set(mults)) == 64  # one draw per run, not per group
    assert {type(c).__name__ for c, _ in drawn} == {"RandomWalk"}


def test_walk_gpu_high_walks_the_gpu_familys_models_from_x3_to_x30_of_the_default():
    job = Job(family="walk_gpu_high", tasks=("python_docs",), parallel=8, mix=(("walk", 0.75), ("ramp", 0.25)))
    plans = [job.group(g) for g in range(40)]
    assert {p.cfg.n_embd for p in plans} >= {256, 384} and max(p.cfg.max_iters for p in plans) <= 3000
    drawn = [job.explorer(i, DEFAULT_SPEC) for i in range(64)]
    mults = np.array([m for _, m in drawn])
    assert mults.min() >= 3 and mults.max() <= 30 and len(set(mults)) == 64
    assert len({job.run_seed(i) for i in range(8)}) == 8  # not forked: a seed per run
    assert {type(c).__name__ for c, _ in drawn} <= {"RandomWalk", "Ramp"} and len({type(c) for c, _ in drawn}) == 2


def test_fork_follows_its_schedule_except_at_the_fork():
    import random

    base = Follow("cosine", 2.0, 0)
    f = Fork(base, at=7, action=0, seed=1)
    assert f.describe()["base"] == base.describe() and f.target_rel(3) == base.target_rel(3)
    with pytest.raises(ValueError, match="fork"):
        Fork(base, at=0, action=0, seed=1)
    fork = sample_fork(random.Random("x"), 3, 5, 0.5)
    assert fork.action == 3 and 2 <= fork.at < N - 1
    assert sample_fork(random.Random("x"), 7, 5, 0.5).action is None  # past the actions: a random walk


def test_collected_branches_are_identical_until_the_fork_then_differ_by_the_action(tmp_path):
    job = Job(family="tiny_fork", tasks=("python_docs",), parallel=8)
    assert collect(tmp_path, job, 8, progress=False, log=lambda *_: None) == 8
    t = load_dir(tmp_path, DEFAULT_SPEC)
    at = t.meta[0]["controller"]["at"]
    assert {m["seed"] for m in t.meta} == {job.run_seed(0)}
    vi = DEFAULT_SPEC.index("val")
    for r in range(1, 8):
        np.testing.assert_array_equal(t.obs[r, : at + 1], t.obs[0, : at + 1])  # one run until the fork
        np.testing.assert_array_equal(t.actions[r, :at], t.actions[0, :at])
    assert [int(t.actions[r, at]) for r in range(7)] == list(range(7))
    nxt = t.obs[:7, at + 1, vi]
    assert len(np.unique(nxt)) > 1  # the action alone moved the next validation loss


def test_an_anneal_timing_group_is_the_grid_of_configured_lrs_and_anneal_starts():
    import random

    job = Job(family="tiny_timing", tasks=("python_docs",), parallel=9)
    assert len({job.run_seed(i) for i in range(9)}) == 1 and job.run_seed(9) != job.run_seed(0)
    drawn = [job.explorer(i, DEFAULT_SPEC) for i in range(9)]
    assert [m for _, m in drawn] == [1.0, 3.0, 10.0] * 3 == list(TIMING_LEVELS) * 3
    descr = [c.describe() for c, _ in drawn]
    assert [d["start"] for d in descr] == [s for s in TIMING_STARTS for _ in range(3)]
    assert len({(d["depth"], d["shape"]) for d in descr}) == 1 and 0.01 <= descr[0]["depth"] <= 0.1  # shared draws
    assert all(d["start"] + d["length"] == 1.0 and d["peak"] == 1.0 for d in descr)  # hold the configured LR, anneal to the end
    assert Job(family="timing", tasks=("python_docs",), parallel=9).group(0).cfg.max_iters <= 800  # fork's models
    small = Job(family="timing_small", tasks=("python_docs",), parallel=9)
    assert {(p.cfg.n_layer, p.cfg.n_embd, p.cfg.block_size, p.cfg.batch_size, p.cfg.max_iters)
            for p in map(small.group, range(5))} == {(4, 128, 64, 12, 2000)}  # the small protocol, every group
    high = Job(family="timing_high", tasks=("python_docs",), parallel=9)  # the same grid above 30x the default
    assert [high.explorer(i, DEFAULT_SPEC)[1] for i in range(9)] == [1.0, 30.0, 100.0] * 3
    assert {(p.cfg.n_embd, p.cfg.max_iters) for p in map(high.group, range(3))} == {(128, 2000)}
    with pytest.raises(ValueError, match=r"9-run grid .*--parallel must be 9, got 8"):
        Job(family="timing", tasks=("python_docs",), parallel=8)
    with pytest.raises(ValueError, match=r"branch must be in \[0, 9\), got 9"):
        sample_timing(random.Random(0), 9, 0)
    with pytest.raises(ValueError, match=r"levels must be 3 positive LR multipliers, got \(1.0, 30.0\)"):
        sample_timing(random.Random(0), 0, 0, levels=(1.0, 30.0))


def test_collected_timing_runs_hold_their_lr_until_they_anneal(tmp_path):
    job = Job(family="tiny_timing", tasks=("python_docs",), parallel=9)
    assert collect(tmp_path, job, 9, progress=False, log=lambda *_: None) == 9
    t = load_dir(tmp_path, DEFAULT_SPEC)
    order = np.argsort([m["run_index"] for m in t.meta])
    first = round(TIMING_STARTS[0] * N)  # the first decision an anneal acts at
    for b in range(3, 9):  # a later anneal: the same run as the earliest-annealing branch at its LR until then
        r, r0 = order[b], order[b % 3]
        assert t.meta[r]["base_lr_mult"] == t.meta[r0]["base_lr_mult"]
        np.testing.assert_array_equal(t.obs[r, : first + 1], t.obs[r0, : first + 1])
    noop = DEFAULT_SPEC.noop_action
    for r in order:
        start = t.meta[r]["controller"]["start"]
        held = int(np.ceil(start * N - 0.5))  # decisions whose interval's middle is before the anneal
        assert (t.actions[r, :held] == noop).all() and (t.actions[r, held:t.length[r] - 1] != noop).any()


def test_a_drop_group_cuts_one_configured_lr_from_three_starts_to_three_floors(tmp_path):
    import random

    job = Job(family="tiny_drop", tasks=("python_docs",), parallel=9)
    drawn = [job.explorer(i, DEFAULT_SPEC) for i in range(9)]
    mults = {m for _, m in drawn}
    assert len(mults) == 1 and 1.0 <= mults.pop() <= 10.0  # one configured LR per group, x1 to x10 of the default
    assert job.explorer(9, DEFAULT_SPEC)[1] != drawn[0][1] and len({job.run_seed(i) for i in range(9)}) == 1
    assert Job(family="timing_drop", tasks=("python_docs",), parallel=9).group(0).cfg.max_iters == 2000
    with pytest.raises(ValueError, match=r"9-run grid \(3 cut starts x 3 floors\): --parallel must be 9, got 3"):
        Job(family="timing_drop", tasks=("python_docs",), parallel=3)
    with pytest.raises(ValueError, match=r"drop: branch must be in \[0, 9\), got -1"):
        sample_drop(random.Random(0), -1, 0)
    assert collect(tmp_path, job, 9, progress=False, log=lambda *_: None) == 9
    t = load_dir(tmp_path, DEFAULT_SPEC)
    order = np.argsort([m["run_index"] for m in t.meta])
    li, half = DEFAULT_SPEC.index("log_lr"), DEFAULT_SPEC.actions.index(0.5)
    for b, r in enumerate(order):
        start, floor = DROP_STARTS[b // 3], DROP_FLOORS[b % 3]
        cut = round(start * N)  # the first decision that cuts: halving until the floor, then held
        np.testing.assert_array_equal(t.obs[r, : cut + 1], t.obs[order[-1], : cut + 1])  # as the latest cut until then
        assert (t.actions[r, :cut] == DEFAULT_SPEC.noop_action).all() and t.actions[r, cut] == half
        reached = cut + int(np.ceil(-np.log2(floor)))  # decisions to the floor, one halving each
        if reached < N:
            np.testing.assert_allclose(t.obs[r, reached + 1 :, li], np.log10(floor), atol=1e-6)
