"""Pins the reactive controllers (plateau vs optax.contrib.reduce_on_plateau, GreedyLR vs Hugging Face's
rules re-implemented below, tabular Q-learning) and their behaviour on NaN, None and NumPy metrics."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from controller_refs import RTOL, RTOL32, RUN, RUN2

from lrpilot.controllers import Observation, RunInfo, make

# ----------------------------------------------------------------------------- plateau vs optax


PLATEAU_CASES = [
    ("plateau:every=50,patience=1", dict(factor=0.5, patience=1, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1, min_scale=0.1)),
    ("plateau:every=50,patience=2,cooldown=2,factor=0.7", dict(factor=0.7, patience=2, rtol=1e-4, atol=0.0, cooldown=2, accumulation_size=1, min_scale=0.1)),
    ("plateau:every=50,patience=1,accumulation_size=3,factor=0.3,rtol=0,atol=0.01,min_scale=0.05",
     dict(factor=0.3, patience=1, rtol=0.0, atol=0.01, cooldown=0, accumulation_size=3, min_scale=0.05)),
    ("plateau:every=25,patience=3,cooldown=1,rtol=0.01,factor=0.8,min_scale=0.2",
     dict(factor=0.8, patience=3, rtol=0.01, atol=0.0, cooldown=1, accumulation_size=1, min_scale=0.2)),
    ("plateau", dict(factor=0.5, patience=1, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1, min_scale=0.1)),
    # exact ties with the threshold (avg == best - atol, all exact in binary): improvement is strict
    ("plateau:every=100,rtol=0,atol=0.5,patience=2,factor=0.5,min_scale=0.01",
     dict(factor=0.5, patience=2, rtol=0.0, atol=0.5, cooldown=0, accumulation_size=1, min_scale=0.01)),
]


def _val_sequence(n: int, seed: int, with_nan: bool) -> list[float]:
    """Improves, stalls, improves a little, then noise around a plateau (and a NaN/inf if asked)."""
    rng = np.random.default_rng(seed)
    q = max(n // 4, 1)
    out = []
    for k in range(n):
        v = 3.0 - 0.05 * min(k, q) - 0.003 * max(0, min(k, 3 * q) - 2 * q) + 0.01 * abs(rng.standard_normal()) * (k > 3 * q)
        out.append(float(v))
    if with_nan:
        out[n // 3], out[n // 2] = math.nan, math.inf
    return out


_PLATEAU_JIT: dict = {}


@pytest.mark.parametrize("spec,kw", PLATEAU_CASES, ids=[s for s, _ in PLATEAU_CASES])
@pytest.mark.parametrize("with_nan", [False, True])
def test_plateau_matches_optax_reduce_on_plateau(spec, kw, with_nan):
    import jax
    import jax.numpy as jnp
    import optax

    key = tuple(sorted(kw.items()))
    if key not in _PLATEAU_JIT:  # one compile per configuration
        tx = optax.contrib.reduce_on_plateau(**kw)
        _PLATEAU_JIT[key] = tx, jax.jit(lambda st, v: tx.update(jnp.zeros(()), st, value=v)[1])
    tx, update = _PLATEAU_JIT[key]
    state = tx.init(jnp.zeros(()))

    c = make(spec)
    c.reset(RUN)
    pts = list(c.observe_iters())
    peak, w = RUN.base_lr, RUN.warmup_iters
    if kw["atol"] == 0.5:  # steps of exactly atol (ties) and of more than atol
        h = len(pts) // 2  # first half: exactly best - atol (a tie: no improvement); then steps of 0.75
        vals = [20.0, 20.0] + [19.5] * (h - 2) + [19.5 - 0.75 * (k + 1) for k in range(len(pts) - h)]
        if with_nan:
            vals[5] = math.nan
    else:
        vals = _val_sequence(len(pts), seed=len(spec), with_nan=with_nan)
    scales = set()
    c.observe(Observation(0, val_loss=vals[0]))  # ignored by the controller: optax never sees it
    for it, v in zip(pts[1:], vals[1:]):
        c.observe(Observation(it, train_loss=None, val_loss=v, lr=c.lr(it - 1)))
        state = update(state, v)
        scale = float(state.scale)
        scales.add(round(scale, 6))
        want = peak * scale * ((it + 1) / (w + 1) if it < w else 1.0)
        assert c.lr(it) == pytest.approx(want, rel=RTOL32), (it, v)
        assert c.lr(RUN.max_iters - 1) == pytest.approx(peak * scale, rel=RTOL32)
    assert len(scales) >= 2  # the sequence does trigger reductions


def test_plateau_metric_train():
    c = make("plateau:metric=train,patience=1")
    c.reset(RUN)
    assert not c.needs_val and make("plateau").needs_val
    for it in c.observe_iters():
        c.observe(Observation(it, train_loss=2.0 if it else None, val_loss=1.0 / (it + 1)))
    # train loss never improves after its first value: several reductions down to min_scale
    assert c.lr(RUN.max_iters - 1) == pytest.approx(RUN.min_lr)


# ----------------------------------------------------------------------------- greedylr vs HF rules


class RefGreedyLR:
    """Hugging Face transformers' GreedyLR (mode 'min'), written from its rules."""

    def __init__(self, lr, factor=0.95, patience=10, threshold=1e-6, threshold_mode="abs", cooldown=0, warmup=0,
                 min_lr=1e-3, max_lr=1.0, eps=1e-8, smooth=False, window_size=50, reset_start=500):
        self.init_lr, self.lr = lr, lr
        self.factor, self.patience, self.threshold, self.threshold_mode = factor, patience, threshold, threshold_mode
        self.cooldown, self.warmup, self.min_lr, self.max_lr, self.eps = cooldown, warmup, min_lr, max_lr, eps
        self.smooth, self.window_size = smooth, window_size
        self.reset_start = self.reset_start_original = reset_start
        self.resets = 0
        self._fresh()

    def _fresh(self):
        self.best = math.inf
        self.num_good = self.num_bad = 0
        self.cooldown_counter = self.warmup_counter = 0
        self.values: list[float] = []

    def is_better(self, x):
        if self.threshold_mode == "rel":
            return x < self.best * (1.0 - self.threshold)
        return x < self.best - self.threshold

    def step(self, metric):
        x = float(metric)
        if self.smooth:
            self.values.append(x)
            if len(self.values) > self.window_size:
                self.values.pop(0)
            x = sum(self.values) / len(self.values)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_good = self.num_bad = 0
        elif self.warmup_counter > 0:
            self.warmup_counter -= 1
            self.num_good = self.num_bad = 0
        else:
            if self.is_better(x):
                self.best, self.num_bad, self.num_good = x, 0, self.num_good + 1
            else:
                self.num_bad, self.num_good = self.num_bad + 1, 0
            if self.num_good > self.patience:  # increase: divide by factor, up to max_lr
                new = min(self.lr / self.factor, self.max_lr)
                if new - self.lr > self.eps:
                    self.lr = new
                self.reset_start = self.reset_start_original
                self.warmup_counter, self.num_good = self.warmup, 0
            elif self.num_bad > self.patience:  # decrease: multiply by factor, down to min_lr
                new = max(self.lr * self.factor, self.min_lr)
                if self.lr - new > self.eps:
                    self.lr = new
                if not self.lr > self.min_lr:
                    self.reset_start -= 1
                    if self.reset_start <= 0:
                        self.lr, self.reset_start = self.init_lr, self.reset_start_original
                        self._fresh()
                        self.resets += 1
                self.cooldown_counter, self.num_bad = self.cooldown, 0


def _improving(n):
    return [4.0 - 0.01 * k for k in range(n)]


def _stalling(n):
    return [3.0 - 0.2 * min(k, 5) for k in range(n)]


def _noisy(n, seed=3):
    rng = np.random.default_rng(seed)
    return [float(2.0 + 2.0 * math.exp(-k / 30) + 0.05 * rng.standard_normal()) for k in range(n)]


def _wavy(n):  # alternating phases of improvement and deterioration
    return [2.0 + 0.3 * math.sin(k / 6) for k in range(n)]


GREEDY_CASES = [
    # (spec, reference kwargs without lr/min_lr/max_lr, loss sequence)
    ("greedylr", {}, _improving),
    ("greedylr", {}, _stalling),
    ("greedylr:patience=3,factor=0.7,reset_start=4", dict(patience=3, factor=0.7, reset_start=4), _stalling),
    ("greedylr:patience=2,factor=0.8,cooldown=2,patience_warmup=3", dict(patience=2, factor=0.8, cooldown=2, warmup=3), _noisy),
    ("greedylr:patience=2,threshold=0.002,threshold_mode=rel,smooth=1,window=5",
     dict(patience=2, threshold=0.002, threshold_mode="rel", smooth=True, window_size=5), _noisy),
    ("greedylr:patience=1,factor=0.9,min_lr=0.0002,max_lr=0.0015", dict(patience=1, factor=0.9), _wavy),
    ("greedylr:patience=1,smooth=true,window=3,cooldown=1,threshold=0.01", dict(patience=1, smooth=True, window_size=3, cooldown=1, threshold=0.01), _wavy),
    # reaches min_lr quickly: reset_start decreases at the floor, then a reset to the initial state
    ("greedylr:patience=1,factor=0.5,reset_start=2", dict(patience=1, factor=0.5, reset_start=2), _stalling),
    ("greedylr:patience=1,factor=0.5,reset_start=3,smooth=1,window=4", dict(patience=1, factor=0.5, reset_start=3, smooth=True, window_size=4), _wavy),
]


@pytest.mark.parametrize("spec,kw,seq", GREEDY_CASES, ids=[f"{s}|{f.__name__}" for s, _, f in GREEDY_CASES])
@pytest.mark.parametrize("run", [RUN, RUN2], ids=["run2000", "run1013"])
def test_greedylr_matches_hf_rules(spec, kw, seq, run):
    c = make(spec)
    c.reset(run)
    assert not c.needs_val  # default metric: mean train loss, no evaluation needed
    pts = list(c.observe_iters())
    every = max(run.max_iters // 100, 1)
    assert pts[:-1] == list(range(0, run.max_iters, every)) and pts[-1] == run.max_iters
    peak, w = run.base_lr, run.warmup_iters
    lo = c.opts["min_lr"] if c.opts["min_lr"] >= 0 else run.min_lr
    hi = c.opts["max_lr"] if c.opts["max_lr"] > 0 else 10 * peak
    ref = RefGreedyLR(peak, min_lr=lo, max_lr=hi, **kw)
    losses = seq(len(pts))
    seen = set()
    pts_set = dict(zip(pts, losses))
    for it in range(run.max_iters):
        if it in pts_set:
            c.observe(Observation(it, train_loss=pts_set[it] if it else None, val_loss=None))
            if it:
                ref.step(pts_set[it])
            seen.add(ref.lr)
        want = ref.lr * ((it + 1) / (w + 1) if it < w else 1.0)
        assert c.lr(it) == pytest.approx(want, rel=RTOL), (it, ref.__dict__)
    assert len(seen) >= 2  # the sequence does move the LR
    if "reset_start" in spec and run is RUN:
        assert ref.resets >= 1  # the case does exercise the reset


def test_greedylr_ignores_val_loss_by_default_and_can_use_it():
    c = make("greedylr:patience=1")
    c.reset(RUN)
    for it in c.observe_iters():
        c.observe(Observation(it, train_loss=None, val_loss=5.0 - it / 1000))
    assert c.lr(RUN.max_iters - 1) == RUN.base_lr  # no train loss: nothing to act on
    c = make("greedylr:patience=1,metric=val")
    c.reset(RUN)
    assert c.needs_val
    for it in c.observe_iters():
        c.observe(Observation(it, train_loss=None, val_loss=5.0 - it / 1000))
    assert c.lr(RUN.max_iters - 1) > RUN.base_lr


# ----------------------------------------------------------------------------- qlearning


def _q_run(spec, run, losses=None, seed_noise=0):
    """Drives a qlearning controller over a run; returns (LR per iteration, decision LRs)."""
    c = make(spec)
    c.reset(run)
    pts = set(c.observe_iters())
    rng = np.random.default_rng(seed_noise)
    out, w = [], run.warmup_iters
    for it in range(run.max_iters):
        if it in pts:
            v = losses(it) if losses else 1.0 + 2.0 * math.exp(-it / 500) + 0.02 * rng.standard_normal()
            c.observe(Observation(it, train_loss=None, val_loss=v))
        out.append(c.lr(it))
    lr = np.array(out)
    factor = np.array([(it + 1) / (w + 1) if it < w else 1.0 for it in range(run.max_iters)])
    return lr, lr / factor, sorted(pts)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_qlearning_really_changes_lr_by_its_step(seed):
    run = RunInfo(1e-3, 1e-4, 100, 2000, 250, seed)
    lr, decided, pts = _q_run("qlearning", run, seed_noise=seed)
    assert np.all(np.isfinite(lr)) and np.all(lr > 0)
    assert pts == list(range(0, 2001, 50))  # default: every max_iters / 40
    change_at = np.flatnonzero(~np.isclose(decided[1:], decided[:-1], rtol=1e-9, atol=0)) + 1
    assert len(change_at) >= 1, "the LR never changed"
    assert len(set(np.round(decided[RUN.warmup_iters:], 15))) >= 2, "constant LR after warmup"
    assert set(change_at) <= set(pts)  # changes only at decisions
    for i in change_at:
        r = decided[i] / decided[i - 1]
        at_clip = math.isclose(decided[i], 0.01 * run.base_lr) or math.isclose(decided[i], 10 * run.base_lr)
        assert math.isclose(r, 1.1, rel_tol=1e-9) or math.isclose(r, 0.9, rel_tol=1e-9) or at_clip, (i, r)
    # the first decision (at iteration 0) acts on the peak
    assert any(math.isclose(decided[0] / run.base_lr, f, rel_tol=1e-9) for f in (0.9, 1.0, 1.1))


def test_qlearning_reproducible_per_seed():
    a = _q_run("qlearning:epsilon=0.3", RUN)[0]
    b = _q_run("qlearning:epsilon=0.3", RUN)[0]
    np.testing.assert_array_equal(a, b)
    others = [_q_run("qlearning:epsilon=0.3", RunInfo(1e-3, 1e-4, 100, 2000, 250, s))[0] for s in (1, 2, 3)]
    assert any(not np.array_equal(a, o) for o in others)  # the seed does drive the exploration


def test_qlearning_table_written_and_reloaded(tmp_path):
    path = tmp_path / "sub" / "q.json"
    spec = f"qlearning:table={path},epsilon=0.3"
    c = make(spec)
    c.reset(RUN)
    assert not path.exists()
    pts = c.observe_iters()
    for it in pts:
        c.observe(Observation(it, val_loss=3.0 - it / 1000))
    assert path.is_file()
    saved = json.loads(path.read_text())
    assert saved and all(re.fullmatch(r"\d+,\d+", k) and len(v) == 3 for k, v in saved.items())
    assert any(any(x != 0 for x in v) for v in saved.values())  # it learned something
    c.reset(RUN)  # the next run starts from the saved table
    assert {f"{k[0]},{k[1]}": v for k, v in c.q.items()} == saved


def test_qlearning_loaded_table_drives_decisions(tmp_path):
    """A table saying 'increase' everywhere, with epsilon 0: every decision multiplies the LR by
    1.1 (up to 10 x peak). Without the table the greedy choice is 'keep': a constant LR."""
    path = tmp_path / "q.json"
    path.write_text(json.dumps({f"{i},{j}": [0.0, 0.0, 1.0] for i in range(10) for j in range(9)}))
    losses = lambda it: 2.0  # noqa: E731  constant loss: zero rewards
    _, decided, pts = _q_run(f"qlearning:table={path},epsilon=0", RUN, losses)
    for k, it in enumerate(pts[:-1]):
        assert decided[it] == pytest.approx(min(RUN.base_lr * 1.1 ** (k + 1), 10 * RUN.base_lr), rel=1e-9)
    _, decided, _ = _q_run(f"qlearning:table={tmp_path / 'fresh.json'},epsilon=0", RUN, losses)
    np.testing.assert_allclose(decided, RUN.base_lr, rtol=1e-12)


# ----------------------------------------------------------------------------- NaN / None / numpy metrics


BAD = [None, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("spec", ["plateau", "plateau:metric=train,every=20,patience=1", "greedylr", "greedylr:patience=1",
                                  "greedylr:smooth=1,window=4,patience=1", "greedylr:metric=val,patience=0",
                                  "qlearning", "qlearning:epsilon=1,metric=train"])
@pytest.mark.parametrize("first_bad", [False, True])
def test_nan_none_metrics_keep_lr_finite(spec, first_bad):
    c = make(spec)
    c.reset(RUN)
    pts = list(c.observe_iters())
    rng = np.random.default_rng(len(spec))
    for k, it in enumerate(pts):
        if first_bad and k < 3:
            tl = vl = BAD[k % 4 + 1 if k else 1]
        elif k % 3 == 0:
            tl, vl = BAD[k % 4], BAD[(k + 1) % 4]
        else:
            tl, vl = float(2 + rng.standard_normal()), float(2 + rng.standard_normal())
        c.observe(Observation(it, train_loss=tl, val_loss=vl, lr=None))
        for j in (it, max(it - 1, 0), RUN.max_iters - 1):
            x = c.lr(j)
            assert math.isfinite(x) and x > 0, (it, j, x)
    for it in range(RUN.max_iters):
        x = c.lr(it)
        assert math.isfinite(x) and x > 0


@pytest.mark.parametrize("spec", ["plateau:every=50,patience=2", "greedylr:patience=2", "qlearning"])
def test_numpy_scalar_metrics_are_numbers(spec):
    """A PyTorch or JAX loop may hand over np.float32 losses: they are finite numbers, not
    divergence (NaN) signals."""
    def drive(cast):
        c = make(spec)
        c.reset(RUN)
        out = []
        for it in c.observe_iters():
            v = cast(2.0 + 2.0 * math.exp(-min(it, 1200) / 300))  # improves, then stalls
            c.observe(Observation(it, train_loss=v if it else None, val_loss=v))
            out.append(c.lr(it))
        return out

    a = drive(float)
    np.testing.assert_allclose(drive(lambda x: np.float32(x)), a, rtol=1e-5)
    np.testing.assert_allclose(drive(lambda x: np.float64(x)), a, rtol=1e-12)
    np.testing.assert_allclose(drive(lambda x: np.array(x, dtype=np.float32)), a, rtol=1e-5)


@pytest.mark.parametrize("spec", ["plateau:every=50,patience=1,accumulation_size=2", "greedylr:patience=1,smooth=1,window=7",
                                  "greedylr:patience=1,cooldown=3,patience_warmup=2", "qlearning:epsilon=0.5"])
def test_reset_starts_a_fresh_run(spec):
    """reset() forgets everything about the previous run (best loss, counters, smoothing window,
    exploration RNG): a reused controller behaves exactly like a new one."""
    def drive(c, run, shift):
        c.reset(run)
        out = []
        for it in c.observe_iters():
            v = 2.0 + 2.0 * math.exp(-it / 400) + 0.2 * math.sin(it / 90 + shift) + shift
            c.observe(Observation(it, train_loss=v if it else None, val_loss=v))
            out.append(c.lr(it))
        return out

    reused = make(spec)
    drive(reused, RUN2, 1.0)  # a different, earlier run
    first = drive(reused, RUN, 0.0)
    assert first == drive(make(spec), RUN, 0.0)
    assert len(set(first)) > 2


@pytest.mark.parametrize("name,div", [("greedylr", 100), ("qlearning", 40)])
def test_default_every_follows_each_run(name, div):
    c = make(name)
    for run in (RUN, RUN2, RUN):
        c.reset(run)
        pts = list(c.observe_iters())
        assert pts[1] == max(run.max_iters // div, 1) and pts[-1] == run.max_iters
    assert c.describe()["every"] == -1


def test_reactive_start_at_peak_and_observe_protocol_points():
    for name in ("plateau", "greedylr", "qlearning"):
        c = make(f"{name}:lr_mult=2")
        c.reset(RUN)
        assert c.lr(RUN.max_iters - 1) == pytest.approx(2 * RUN.base_lr)
    c = make("plateau")
    c.reset(RUN)
    assert list(c.observe_iters()) == RUN.eval_iters() == list(range(0, 2001, 250))


