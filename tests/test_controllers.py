"""Pins every LR controller in lrpilot/controllers against its stated definition.

The references here are independent of the code under test: nanoGPT's get_lr written out,
optax schedules, torch.optim.lr_scheduler (when torch is importable),
optax.contrib.reduce_on_plateau, and Hugging Face transformers' GreedyLR rules re-implemented
below. Torch comparisons live in their own tests (skipped without torch). The file costs about
10 s of CPU, most of it importing and compiling JAX and torch.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest

from lrpilot.controllers import BUILTIN, Observation, RunInfo, make, names, parse_spec
from lrpilot.controllers.schedules import SCHEDULES

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


# ----------------------------------------------------------------------------- cosine (nanoGPT)


def nanogpt_get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """nanoGPT train.py get_lr, verbatim in substance."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


@RUNS
@pytest.mark.parametrize("opts,mult,warmup", [("", 1.0, None), (":lr_mult=3", 3.0, None),
                                              (":warmup=0", 1.0, 0), (":warmup=250,lr_mult=0.5", 0.5, 250)])
def test_cosine_is_nanogpt_get_lr(run, opts, mult, warmup):
    w = run.warmup_iters if warmup is None else warmup
    c = make("cosine" + opts)
    c.reset(run)
    n = run.max_iters + 20  # past max_iters nanoGPT returns min_lr
    got = np.array([c.lr(it) for it in range(n)])
    want = np.array([nanogpt_get_lr(it, run.base_lr * mult, run.min_lr * mult, w, run.max_iters) for it in range(n)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


# ----------------------------------------------------------------------------- warmup, lr_mult


DEFAULT_NO_WARMUP = {"constant", "onecycle", "cyclic"}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_default_warmup_is_nanogpt_linear(name):
    got = lrs(name, RUN, RUN.warmup_iters + 1)
    peak = 1.0 if name == "prodigy" else RUN.base_lr
    if name in DEFAULT_NO_WARMUP:  # these have no warmup unless asked for
        assert got[0] > warm(peak, 0, RUN.warmup_iters) * 1.5
        got = lrs(f"{name}:warmup=50", RUN, 51)
        check_warmup(got, peak, 50)
    else:
        check_warmup(got, peak, RUN.warmup_iters)
        np.testing.assert_allclose(got[RUN.warmup_iters], peak, rtol=RTOL)  # decay starts at the peak
    got = lrs(f"{name}:warmup=7", RUN, 8)  # the option overrides the run's warmup
    check_warmup(got, peak, 7)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_lr_mult_scales_peak_and_floor(name):
    """Every controller is homogeneous in (peak, floor): lr_mult=3 multiplies every LR by 3
    (for the reactive ones: before any observation). The floor is checked explicitly too."""
    base = lrs(name, RUN)
    tripled = lrs(f"{name}:lr_mult=3", RUN)
    np.testing.assert_allclose(tripled, 3 * base, rtol=1e-12, atol=0)
    assert not np.allclose(base, 3 * base)


@pytest.mark.parametrize("name", ["cosine", "linear", "polynomial", "exponential", "wsd", "step", "multistep"])
def test_lr_mult_floor_reached_at_end(name):
    for mult in (1.0, 3.0, 0.25):
        c = make(f"{name}:lr_mult={mult}")
        c.reset(RUN)
        assert c.lr(RUN.max_iters) == pytest.approx(RUN.min_lr * mult, rel=RTOL)
        assert c.lr(RUN.warmup_iters) == pytest.approx(RUN.base_lr * mult, rel=RTOL)


# ----------------------------------------------------------------------------- optax / torch schedules


def _after(spec, run, n=None):
    """(LRs from the end of the run's warmup through max_iters inclusive, peak, floor, S)."""
    c = make(spec)
    c.reset(run)
    w = run.warmup_iters
    got = np.array([c.lr(it) for it in range(w, run.max_iters + 1)])
    peak = run.base_lr * c.opts["lr_mult"]
    return got, peak, run.min_lr * c.opts["lr_mult"], run.max_iters - w


@RUNS
@pytest.mark.parametrize("warmup", [0, 50])
def test_constant(run, warmup):
    import optax

    got = lrs(f"constant:warmup={warmup},lr_mult=2", run, run.max_iters + 1)
    peak = 2 * run.base_lr
    check_warmup(got, peak, warmup)
    want = optax_after(optax.constant_schedule(peak), run.max_iters + 1 - warmup)
    np.testing.assert_allclose(got[warmup:], want, rtol=RTOL)


@RUNS
def test_linear_is_optax_linear_schedule(run):
    import optax

    got, p, m, S = _after("linear", run)
    want = optax_after(optax.linear_schedule(init_value=p, end_value=m, transition_steps=S), S + 1)
    np.testing.assert_allclose(got, want, rtol=RTOL)


@RUNS
@pytest.mark.parametrize("power", [None, 0.5, 3.0])
def test_polynomial_is_optax_polynomial_schedule(run, power):
    import optax

    got, p, m, S = _after("polynomial" + ("" if power is None else f":power={power}"), run)
    pw = 2.0 if power is None else power
    want = [(p - m) * (1 - s / S) ** pw + m for s in range(S + 1)]  # written out, float64
    np.testing.assert_allclose(got, want, rtol=RTOL)
    sched = optax.polynomial_schedule(init_value=p, end_value=m, power=pw, transition_steps=S)
    np.testing.assert_allclose(got, optax_after(sched, S + 1), rtol=RTOL)


@RUNS
def test_exponential_default_reaches_floor_like_optax(run):
    import optax

    got, p, m, S = _after("exponential", run)
    sched = optax.exponential_decay(init_value=p, transition_steps=S, decay_rate=m / p)
    np.testing.assert_allclose(got, optax_after(sched, S + 1), rtol=RTOL)


@RUNS
def test_exponential_with_gamma_is_per_iteration(run):
    import optax

    got, p, m, S = _after("exponential:gamma=0.999", run)
    sched = optax.exponential_decay(init_value=p, transition_steps=1, decay_rate=0.999)
    np.testing.assert_allclose(got, optax_after(sched, S + 1), rtol=RTOL)


@RUNS
def test_exponential_with_gamma_is_torch_exponentiallr(run):
    pytest.importorskip("torch")
    got, p, m, S = _after("exponential:gamma=0.999", run)
    t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.999), p, S + 1)
    np.testing.assert_allclose(got, t, rtol=RTOL)


def _step_cases(run):
    S = run.max_iters - run.warmup_iters
    # default: three stages of ceil(S/3), gamma such that the last stage is the floor
    yield "step", math.ceil(S / 3), (run.min_lr / run.base_lr) ** 0.5
    yield "step:step_size=300,gamma=0.5", 300, 0.5


@RUNS
def test_step_is_torch_steplr(run):
    pytest.importorskip("torch")
    for spec, size, gamma in _step_cases(run):
        got, p, m, S = _after(spec, run)
        t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.StepLR(o, step_size=size, gamma=gamma), p, S + 1)
        np.testing.assert_allclose(got, t, rtol=RTOL, err_msg=spec)


@RUNS
def test_step_is_optax_staircase(run):
    import optax

    for spec, size, gamma in _step_cases(run):
        got, p, m, S = _after(spec, run)
        sched = optax.exponential_decay(init_value=p, transition_steps=size, decay_rate=gamma, staircase=True)
        np.testing.assert_allclose(got, optax_after(sched, S + 1), rtol=RTOL, err_msg=spec)
        if spec == "step":  # three stages: peak, ..., floor
            assert len(set(np.round(got[:S] / p, 9))) == 3
            assert got[0] == pytest.approx(p) and got[S - 1] == pytest.approx(m)


MULTISTEP = pytest.mark.parametrize("spec,fracs,gamma", [
    ("multistep", (0.5, 0.75), None), ("multistep:milestones=0.9,0.3,0.6,gamma=0.5", (0.3, 0.6, 0.9), 0.5)])


def _multistep_ref(run, spec, fracs, gamma):
    got, p, m, S = _after(spec, run)
    g = (m / p) ** (1 / len(fracs)) if gamma is None else gamma  # default: floor after the last milestone
    return got, p, m, S, g, [round(f * S) for f in fracs]


@RUNS
@MULTISTEP
def test_multistep_is_optax_piecewise_constant(run, spec, fracs, gamma):
    import optax

    got, p, m, S, g, bounds = _multistep_ref(run, spec, fracs, gamma)
    sched = optax.piecewise_constant_schedule(init_value=p, boundaries_and_scales={b: g for b in bounds})
    np.testing.assert_allclose(got, optax_after(sched, S + 1), rtol=RTOL)
    if gamma is None:
        assert got[-1] == pytest.approx(m, rel=RTOL)


@RUNS
@MULTISTEP
def test_multistep_is_torch_multisteplr(run, spec, fracs, gamma):
    pytest.importorskip("torch")
    got, p, m, S, g, bounds = _multistep_ref(run, spec, fracs, gamma)
    t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=bounds, gamma=g), p, S + 1)
    np.testing.assert_allclose(got, t, rtol=RTOL)


@RUNS
@pytest.mark.parametrize("spec", ["wsd", "wsd:shape=cosine,decay_frac=0.3", "wsd:decay_frac=1", "wsd:shape=sqrt,decay_frac=0.25"])
def test_wsd(run, spec):
    import optax

    c = make(spec)
    c.reset(run)
    T, w = run.max_iters, run.warmup_iters
    frac = c.opts["decay_frac"]
    p, m = run.base_lr, run.min_lr
    d0 = max(w, T - round(frac * T))  # the decay covers the last decay_frac of the run, after warmup
    got = np.array([c.lr(it) for it in range(T + 1)])
    check_warmup(got, p, w)
    shape = c.opts["shape"]
    if shape == "sqrt":  # 1 - sqrt(fraction of the decay done), written out
        want = [p if it < d0 else p + (m - p) * math.sqrt((it - d0) / (T - d0)) for it in range(w, T + 1)]
        np.testing.assert_allclose(got[w:], want, rtol=RTOL)
    else:
        decay = (optax.linear_schedule(p, m, T - d0) if shape == "linear"
                 else optax.cosine_decay_schedule(p, T - d0, alpha=m / p))
        sched = optax.join_schedules([optax.constant_schedule(p), decay], boundaries=[d0])
        np.testing.assert_allclose(got[w:], optax_at(sched, np.arange(w, T + 1)), rtol=RTOL)
    assert got[T] == pytest.approx(m, rel=RTOL) and got[d0] == pytest.approx(p, rel=RTOL)
    assert d0 == w or got[d0 - 1] == pytest.approx(p, rel=RTOL)


ONECYCLE = [("onecycle", 0.3, 25.0, 1e4), ("onecycle:pct_start=0.25,div_factor=10,final_div_factor=100", 0.25, 10.0, 100.0)]


@RUNS
@pytest.mark.parametrize("spec,pct,div,final_div", ONECYCLE)
def test_onecycle_is_optax_cosine_onecycle(run, spec, pct, div, final_div):
    import optax

    got = lrs(spec, run, run.max_iters + 1)  # no warmup: its own ramp
    T, p = run.max_iters, run.base_lr
    sched = optax.cosine_onecycle_schedule(transition_steps=T, peak_value=p, pct_start=pct, div_factor=div,
                                           final_div_factor=final_div)
    np.testing.assert_allclose(got, optax_after(sched, T + 1), rtol=RTOL, atol=1e-15)
    assert got[0] == pytest.approx(p / div) and got[T] == pytest.approx(p / div / final_div)
    assert got.max() == pytest.approx(p, rel=RTOL)


@RUNS
@pytest.mark.parametrize("spec,pct,div,final_div", ONECYCLE)
def test_onecycle_is_torch_onecyclelr(run, spec, pct, div, final_div):
    """torch's OneCycleLR peaks at step pct'*N - 1 and ends at N - 1; with N = T + 1 and
    pct' = (int(pct*T) + 1) / (T + 1) that is optax's (and the controller's) int(pct*T) and T."""
    pytest.importorskip("torch")
    got = lrs(spec, run, run.max_iters + 1)
    T, p = run.max_iters, run.base_lr
    t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=p, total_steps=T + 1, pct_start=(int(pct * T) + 1) / (T + 1), anneal_strategy="cos",
        cycle_momentum=False, div_factor=div, final_div_factor=final_div, three_phase=False), p, T + 1)
    np.testing.assert_allclose(got, t, rtol=RTOL, atol=1e-13)


@RUNS
@pytest.mark.parametrize("cycle,t_mult", [(200, 2), (300, 1), (97, 3)])
def test_cosine_restarts_is_torch_warm_restarts(run, cycle, t_mult):
    pytest.importorskip("torch")
    got, p, m, S = _after(f"cosine_restarts:cycle={cycle},t_mult={t_mult}", run)
    t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=cycle, T_mult=t_mult, eta_min=m), p, S + 1)
    np.testing.assert_allclose(got, t, rtol=RTOL, atol=1e-15)


@RUNS
def test_cosine_restarts_restart_decay_written_out(run):
    got, p, m, S = _after("cosine_restarts:cycle=150,t_mult=2,restart_decay=0.5", run)
    want, start, length, k = [], 0, 150, 0
    for s in range(S + 1):
        if s - start >= length:
            start, length, k = start + length, length * 2, k + 1
        want.append(m + (p * 0.5**k - m) * 0.5 * (1 + math.cos(math.pi * (s - start) / length)))
    np.testing.assert_allclose(got, want, rtol=RTOL)


@RUNS
def test_cosine_restarts_default_three_cycles_end_at_max_iters(run):
    """Docstring: t_mult 2 and three cycles (1 + 2 + 4) end at max_iters: exactly two restarts,
    and the run ends annealed near the floor (not restarted at the peak)."""
    got, p, m, S = _after("cosine_restarts", run)
    jumps = np.flatnonzero(np.diff(got[:S]) > 0)  # iterations [warmup, max_iters)
    assert len(jumps) == 2
    c1 = jumps[0] + 1  # first cycle length; the second is twice as long
    assert jumps[1] + 1 == 3 * c1 and 7 * c1 >= S
    assert got[S - 1] < m + 0.01 * (p - m)


@pytest.mark.parametrize("run", [RUN, RUN2], ids=["run2000", "run1013"])
@pytest.mark.parametrize("mode,step,gamma", [("triangular", None, None), ("triangular2", None, None),
                                             ("exp_range", None, None), ("triangular2", 150, None),
                                             ("exp_range", 120, 0.999)])
def test_cyclic_is_torch_cycliclr(run, mode, step, gamma):
    pytest.importorskip("torch")
    spec = f"cyclic:mode={mode}" + (f",step_size={step}" if step else "") + (f",gamma={gamma}" if gamma else "")
    got = lrs(spec, run, run.max_iters + 1)  # no warmup by default
    T = run.max_iters
    up = step or T // 8  # default half-cycle S // 8
    g = 0.9995 if gamma is None else gamma
    t = torch_lrs(lambda torch, o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=run.min_lr, max_lr=run.base_lr, step_size_up=up, mode=mode, gamma=g, cycle_momentum=False),
        run.base_lr, T + 1)
    np.testing.assert_allclose(got, t, rtol=RTOL, atol=1e-15)
    amp = g**up if mode == "exp_range" else 1.0
    assert got[0] == pytest.approx(run.min_lr) and got[up] == pytest.approx(run.min_lr + (run.base_lr - run.min_lr) * amp)


# ----------------------------------------------------------------------------- schedule_free, prodigy


def test_schedule_free():
    c = make("schedule_free")
    assert c.optimizer == "schedule_free"
    got = lrs("schedule_free", RUN)
    check_warmup(got, RUN.base_lr, RUN.warmup_iters)
    np.testing.assert_allclose(got[RUN.warmup_iters:], RUN.base_lr, rtol=RTOL)
    got = lrs("schedule_free:lr_mult=2,warmup=10", RUN)
    check_warmup(got, 2 * RUN.base_lr, 10)
    np.testing.assert_allclose(got[10:], 2 * RUN.base_lr, rtol=RTOL)


@pytest.mark.parametrize("opts,peak", [("", 1.0), (":lr=0.5", 0.5), (":lr=0.5,lr_mult=2", 1.0)])
def test_prodigy(opts, peak):
    c = make("prodigy" + opts)
    assert c.optimizer == "prodigy"
    w, T = RUN.warmup_iters, RUN.max_iters
    got = lrs("prodigy" + opts, RUN, T + 1)
    check_warmup(got, peak, w)
    floor = peak * RUN.min_lr / RUN.base_lr  # documented: down to lr * min_lr / base_lr
    want = [nanogpt_get_lr(it, peak, floor, w, T) for it in range(w, T + 1)]
    np.testing.assert_allclose(got[w:], want, rtol=RTOL)
    got = lrs("prodigy:schedule=constant" + opts.replace(":", ","), RUN)
    check_warmup(got, peak, w)
    np.testing.assert_allclose(got[w:], peak, rtol=RTOL)


def test_schedules_use_adamw_and_ignore_observations():
    for name in SCHEDULES:
        c = make(name)
        c.reset(RUN)
        if name not in ("schedule_free", "prodigy"):
            assert c.optimizer == "adamw"
        before = [c.lr(it) for it in range(0, RUN.max_iters, 97)]
        for it in c.observe_iters():
            c.observe(Observation(it, train_loss=float("nan"), val_loss=1e9, lr=1.0))
        assert [c.lr(it) for it in range(0, RUN.max_iters, 97)] == before


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


# ----------------------------------------------------------------------------- options, parse_spec, make


def _exercise(spec, run=RUN):
    c = make(spec)
    c.reset(run)
    c.observe_iters()
    for it in (0, run.warmup_iters, run.max_iters - 1):
        c.lr(it)
    c.observe(Observation(run.eval_interval, train_loss=2.0, val_loss=2.0))


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_unknown_option_raises_naming_it(name):
    with pytest.raises(ValueError, match="bogus_opt"):
        make(f"{name}:bogus_opt=1")


BAD_VALUES = [
    ("cosine:lr_mult=abc", "lr_mult"), ("cosine:lr_mult=0", "lr_mult"), ("linear:lr_mult=-2", "lr_mult"),
    ("cosine:warmup=1.5", "warmup"), ("cosine:lr_mult=3,lr_mult=4", "lr_mult"),
    ("wsd:shape=exp", "shape"), ("wsd:decay_frac=0", "decay_frac"), ("wsd:decay_frac=1.5", "decay_frac"),
    ("multistep:milestones=0.5,1.5", "milestones"), ("multistep:milestones=a,b", "milestones"),
    ("step:step_size=-10", "step_size"), ("step:step_size=2.5", "step_size"),
    ("cyclic:mode=sine", "mode"), ("cyclic:step_size=-10", "step_size"),
    ("polynomial:power=x", "power"), ("exponential:gamma=fast", "gamma"),
    ("prodigy:schedule=linear", "schedule"),
    ("plateau:factor=1.5", "factor"), ("plateau:factor=0", "factor"), ("plateau:metric=loss", "metric"),
    ("plateau:patience=x", "patience"),
    ("greedylr:factor=1.5", "factor"), ("greedylr:factor=0", "factor"),
    ("greedylr:threshold_mode=pct", "threshold_mode"), ("greedylr:smooth=maybe", "smooth"),
    ("greedylr:metric=loss", "metric"),
    ("qlearning:every=2.5", "every"), ("qlearning:metric=loss", "metric"),
]


@pytest.mark.parametrize("spec,option", BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_bad_option_value_raises_naming_it(spec, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        _exercise(spec)


def test_exponential_needs_gamma_without_floor():
    with pytest.raises(ValueError, match="gamma"):
        _exercise("exponential", RunInfo(1e-3, 0.0, 100, 2000, 250))
    _exercise("exponential:gamma=0.999", RunInfo(1e-3, 0.0, 100, 2000, 250))


def test_parse_spec_and_make_multistep():
    c = make("multistep:milestones=0.5,0.75,gamma=0.3")
    assert c.opts["milestones"] == (0.5, 0.75) and c.opts["gamma"] == 0.3
    assert c.describe() == {"name": "multistep", "lr_mult": 1.0, "warmup": -1, "milestones": (0.5, 0.75), "gamma": 0.3}
    c.reset(RUN)
    assert [c.lr(it) for it in (100, 1049, 1050, 1524, 1525)] == pytest.approx(
        [1e-3, 1e-3, 3e-4, 3e-4, 9e-5], rel=RTOL)
    assert parse_spec("x:k=v,k2=v2,v3") == ("x", {"k": "v", "k2": ["v2", "v3"]})
    assert parse_spec(" cosine ") == ("cosine", {})
    assert parse_spec("policy:/a/b,c") == ("policy", {"path": "/a/b,c"})
    with pytest.raises(ValueError, match="expected key=value"):
        parse_spec("cosine:3")


def test_unknown_controller_lists_known_names():
    with pytest.raises(ValueError) as e:
        make("cosinus:lr_mult=2")
    msg = str(e.value)
    assert "cosinus" in msg
    for name in names():
        assert name in msg
    assert set(BUILTIN) == {"constant", "cosine", "wsd", "step", "multistep", "linear", "exponential",
                             "polynomial", "onecycle", "cosine_restarts", "cyclic", "schedule_free", "prodigy",
                             "plateau", "greedylr", "qlearning"}


def test_lr_before_reset_raises():
    for name in BUILTIN:
        with pytest.raises(RuntimeError, match="reset"):
            make(name).lr(0)
