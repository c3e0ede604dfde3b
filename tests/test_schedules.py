"""Pins the fixed schedules of lrpilot/controllers against its stated definition.

The references here are independent of the code under test: nanoGPT's get_lr written out,
optax schedules, torch.optim.lr_scheduler (when torch is importable),
optax.contrib.reduce_on_plateau, and Hugging Face transformers' GreedyLR rules re-implemented
below. Torch comparisons live in their own tests (skipped without torch). The file costs about
10 s of CPU, most of it importing and compiling JAX and torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from controller_refs import RTOL, RUN, RUN2, RUNS, check_warmup, lrs, optax_after, optax_at, torch_lrs, warm

from lrpilot.controllers import BUILTIN, Observation, make
from lrpilot.controllers.schedules import SCHEDULES

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


