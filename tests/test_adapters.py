"""lrpilot.driver: LoopDriver's bookkeeping, OptaxLR / TorchLR on real optimizers, the examples.

The driver is checked against a recording controller (what it observes, when, with which means),
then with the real controllers (schedules, reactive rules, a spec controller and a tiny
randomly initialised policy checkpoint) fed NaN, inf and None. The two examples run end to end
as subprocesses with 40 updates. The whole file takes well under a minute on a CPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lrpilot.controllers import Controller, make
from lrpilot.driver import LoopDriver, OptaxLR, TorchLR

ROOT = Path(__file__).resolve().parents[1]


class Recorder(Controller):
    """Observes at `points`, records every Observation; lr(it) = base_lr * (it + 1) / 100."""

    name = "recorder"

    def __init__(self, points=(0, 3, 7, 10), needs_val=True):
        super().__init__()
        self.points, self.needs_val = list(points), needs_val
        self.seen = []

    def reset(self, run):
        super().reset(run)
        self.seen = []

    def observe_iters(self):
        return self.points

    def observe(self, obs):
        self.seen.append(obs)

    def lr(self, it):
        return self._run().base_lr * (it + 1) / 100


class BadLR(Recorder):
    """Returns `bad[it]` instead of the LR at the iterations in `bad`."""

    name = "bad_lr"

    def __init__(self, bad):
        super().__init__(points=(0, 3, 7))
        self.bad = bad

    def lr(self, it):
        return self.bad[it] if it in self.bad else super().lr(it)


def drive(driver, n, loss=lambda j: float(j), val=lambda it: 10.0 + it):
    """Steps 0..n; at `it` passes the loss of update it-1 (None at 0) and a val loss everywhere."""
    return [driver.step(it, train_loss=None if it == 0 else loss(it - 1), val_loss=val(it)) for it in range(n + 1)]


def test_defaults_and_reset():
    c = Recorder()
    d = LoopDriver(c, base_lr=2e-3, max_iters=1000)
    assert c.run is d.run
    assert (d.run.min_lr, d.run.eval_interval, d.run.warmup_iters, d.run.seed) == (2e-4, 100, 0, 0)
    assert d.observe_points == (0, 3, 7, 10) and d.last_lr is None and not d.finished
    d = LoopDriver(make("cosine"), base_lr=1.0, max_iters=5, min_lr=0.0, warmup_iters=1, eval_interval=2, seed=3)
    assert d.run.eval_interval == 2 and d.run.seed == 3 and d.observe_points == (0, 2, 4, 5)
    assert LoopDriver(Recorder(points=(0, 7)), base_lr=1.0, max_iters=7).run.eval_interval == 1


def test_val_estimate_asks_for_evaluations_only_early_and_estimates_the_rest():
    """Controller.val_estimate: evaluations are wanted before the protocol's first one after 0 and
    where the protocol evaluates; elsewhere val = the interval's mean train loss + the last
    measured gap (val - mean train loss over an interval's span), from observe points and from
    the protocol's other evaluations alike; a NaN train loss gives a NaN estimate."""
    c = Recorder(points=range(0, 101, 10))
    c.val_estimate = True
    d = LoopDriver(c, base_lr=1.0, max_iters=100, eval_interval=25)
    assert [p for p in d.observe_points if d.wants_eval(p)] == [0, 10, 20, 50, 100]
    loss = lambda j: 3.0 - 0.01 * j
    val = {0: 4.0, 10: 3.5, 20: 3.4, 25: 3.3, 50: 2.9, 75: 2.5, 100: 2.2}  # where the loop evaluates
    for it in range(101):
        d.step(it, train_loss=None if it == 0 else loss(it - 1), val_loss=val.get(it))
    seen = {o.iter: o.val_loss for o in c.seen}
    mean = lambda a, b: float(np.mean([loss(j) for j in range(a, b)]))  # updates a..b-1
    assert [seen[i] for i in (0, 10, 20, 50, 100)] == [val[i] for i in (0, 10, 20, 50, 100)]
    assert seen[30] == pytest.approx(mean(20, 30) + val[25] - mean(15, 25))  # the gap at 25: its last 10 updates
    assert seen[40] == pytest.approx(mean(30, 40) + val[25] - mean(15, 25))
    assert seen[60] == pytest.approx(mean(50, 60) + val[50] - mean(40, 50))  # an observe point's own gap
    assert seen[80] == pytest.approx(mean(70, 80) + val[75] - mean(65, 75))
    assert d.n_estimated == 6  # 30, 40, 60, 70, 80, 90
    # without val_estimate every observe point is evaluated; with NaN train losses the estimate is NaN
    assert all(LoopDriver(Recorder(points=range(0, 101, 10)), base_lr=1.0, max_iters=100,
                          eval_interval=25).wants_eval(p) for p in range(0, 101, 10))
    c2 = Recorder(points=range(0, 101, 10))
    c2.val_estimate = True
    d2 = LoopDriver(c2, base_lr=1.0, max_iters=100, eval_interval=25)
    for it in range(41):
        d2.step(it, train_loss=None if it == 0 else (math.nan if it > 30 else 3.0), val_loss=val.get(it))
    assert math.isnan(c2.seen[-1].val_loss) and c2.seen[-1].iter == 40


def test_means_of_train_losses_at_observe_points():
    c = Recorder()
    d = LoopDriver(c, base_lr=1.0, max_iters=10)
    lrs = drive(d, 10, loss=lambda j: float(j * j))
    assert lrs == [(it + 1) / 100 for it in range(11)]
    assert [o.iter for o in c.seen] == [0, 3, 7, 10]
    # at `it` the mean covers updates last_obs .. it-1 (their losses arrive at steps last_obs+1 .. it)
    want = [None, np.mean([0, 1, 4]), np.mean([9, 16, 25, 36]), np.mean([49, 64, 81])]
    for o, w in zip(c.seen, want):
        assert (o.train_loss is None) if w is None else o.train_loss == pytest.approx(w)
    assert [o.val_loss for o in c.seen] == [10.0, 13.0, 17.0, 20.0]
    assert [o.lr for o in c.seen] == [None, 0.03, 0.07, 0.10]  # the LR of the last update
    assert d.n_observed == 4 and d.n_bad_lr == 0


def test_none_train_losses_are_skipped_and_all_none_is_none():
    c = Recorder(points=(0, 4, 8))
    d = LoopDriver(c, base_lr=1.0, max_iters=8)
    drive(d, 8, loss=lambda j: None if j < 4 or j % 2 else float(j))  # only updates 4 and 6 report
    assert c.seen[1].train_loss is None and c.seen[2].train_loss == 5.0


def test_wants_eval_only_at_observe_points_that_need_val():
    d = LoopDriver(Recorder(), base_lr=1.0, max_iters=10)
    assert [it for it in range(11) if d.wants_eval(it)] == [0, 3, 7, 10]
    d = LoopDriver(Recorder(needs_val=False), base_lr=1.0, max_iters=10)
    assert not any(d.wants_eval(it) for it in range(11))
    d = LoopDriver(make("cosine"), base_lr=1.0, max_iters=100)  # schedules observe the protocol's evaluations
    assert [it for it in range(101) if d.wants_eval(it)] == list(range(0, 101, 10))
    d = LoopDriver(make("plateau:metric=train"), base_lr=1.0, max_iters=100)
    assert not any(d.wants_eval(it) for it in range(101))
    d = LoopDriver(make("plateau"), base_lr=1.0, max_iters=100, eval_interval=25)
    assert [it for it in range(101) if d.wants_eval(it)] == [0, 25, 50, 75, 100]


def test_scalar_types_nan_inf_pass_through():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    c = Recorder(points=(0, 2, 4, 6))
    d = LoopDriver(c, base_lr=1.0, max_iters=6)
    losses = [np.float32(1.0), jnp.asarray(3.0), torch.tensor(math.nan), 1.0, math.inf, torch.tensor([2.0])]
    vals = {0: None, 2: torch.tensor(2.5), 4: math.nan, 6: -math.inf}
    for it in range(7):
        d.step(it, train_loss=None if it == 0 else losses[it - 1], val_loss=vals.get(it))
    tl = [o.train_loss for o in c.seen]
    assert tl[0] is None and tl[1] == 2.0 and math.isnan(tl[2]) and tl[3] == math.inf
    vl = [o.val_loss for o in c.seen]
    assert vl[0] is None and vl[1] == 2.5 and math.isnan(vl[2]) and vl[3] == -math.inf
    assert all(isinstance(o.train_loss, float) for o in c.seen[1:])


def test_misuse_raises_clearly():
    d = LoopDriver(Recorder(), base_lr=1.0, max_iters=10)
    d.step(0)
    with pytest.raises(ValueError, match="once per iteration"):
        d.step(0)
    with pytest.raises(TypeError, match="train_loss must be a scalar"):
        d.step(1, train_loss=np.ones(3))
    with pytest.raises(ValueError, match=r"outside \[0, 10\]"):
        LoopDriver(Recorder(points=(0, 11)), base_lr=1.0, max_iters=10)
    # val_loss is read only at observe points: a non-scalar elsewhere is ignored, at one it raises
    d = LoopDriver(Recorder(points=(0, 4)), base_lr=1.0, max_iters=10)
    d.step(0, val_loss=1.0)
    d.step(1, train_loss=1.0, val_loss=np.ones(3))
    with pytest.raises(TypeError, match="val_loss must be a scalar"):
        d.step(4, train_loss=1.0, val_loss=np.ones(3))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1e-3, None, "0.1x"])
def test_bad_lr_keeps_previous_and_counts(bad):
    d = LoopDriver(BadLR({0: bad, 4: bad, 5: bad}), base_lr=1.0, max_iters=8)
    with pytest.warns(RuntimeWarning, match="returned lr="):
        lrs = drive(d, 8)
    assert lrs == [0.0, 0.02, 0.03, 0.04, 0.04, 0.04, 0.07, 0.08, 0.09]
    assert d.n_bad_lr == 3 and d.last_lr == 0.09


NAN_SPECS = ["cosine", "wsd", "constant", "plateau", "greedylr", "qlearning", "plateau:metric=train"]


@pytest.mark.parametrize("spec", NAN_SPECS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_real_controllers_never_raise_on_bad_metrics(spec, bad):
    d = LoopDriver(make(spec), base_lr=1e-3, max_iters=60, warmup_iters=5, eval_interval=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the driver must not even need to clamp
        lrs = drive(d, 60, loss=lambda j: bad if j >= 20 else 3.0 - j / 100,
                    val=lambda it: bad if it >= 30 else 3.0 - it / 100)
    assert all(math.isfinite(x) and x >= 0 for x in lrs) and d.n_bad_lr == 0


def test_spec_controller_observes_every_decision_and_stops_on_divergence():
    from lrpilot.collect.explore import RandomWalk

    c = RandomWalk(seed=1)
    d = LoopDriver(c, base_lr=1e-3, max_iters=40)
    assert d.observe_points == tuple(range(0, 41, 2)) and all(d.wants_eval(p) for p in d.observe_points)
    drive(d, 40, loss=lambda j: 3.0, val=lambda it: 3.0 - it / 100)
    assert [r["iter"] for r in c.trajectory()] == list(range(0, 41, 2)) and d.finished and not c.terminated
    assert c.trajectory()[3]["train_loss"] == 3.0

    c = RandomWalk(seed=1)
    d = LoopDriver(c, base_lr=1e-3, max_iters=40)
    for it in range(41):
        lr = d.step(it, train_loss=None if it == 0 else (math.nan if it > 9 else 3.0), val_loss=3.0)
        assert math.isfinite(lr) and lr > 0
        if d.finished:
            break
    assert it == 10 and c.terminated


def _random_policy(path, spec_name: str = "v1"):
    """A tiny randomly initialised policy checkpoint of observation spec `spec_name`."""
    jax = pytest.importorskip("jax")
    from lrpilot import checkpoints
    from lrpilot.policy.network import build, init_params
    from lrpilot.spec import SPECS
    from lrpilot.worldmodel.model import WorldModelConfig

    cfg, spec = WorldModelConfig(n_layer=1, d_model=16, n_head=2), SPECS[spec_name]
    shapes = jax.eval_shape(lambda k: init_params(build(cfg, spec), k), jax.random.key(0))  # no compile
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)
    return checkpoints.save(path, kind="policy", params=params, spec=spec, model_config={"trunk": cfg.to_dict(), "policy": {}})


@pytest.mark.parametrize("spec_name", ["v1", "v2"])
def test_learned_policy_through_the_driver(tmp_path, spec_name):
    """A tiny random policy checkpoint, loaded as `policy:PATH`, driven to the end of a run. A spec-v2
    policy observes the run's context: without the parameter count and tokens per update the driver
    refuses at construction, naming the argument."""
    path = _random_policy(tmp_path / "pol", spec_name)
    if spec_name == "v2":
        with pytest.raises(ValueError, match="n_params and tokens_per_update"):
            LoopDriver(make(f"policy:{path}"), base_lr=1e-3, max_iters=20)
    c = make(f"policy:{path}")
    d = LoopDriver(c, base_lr=1e-3, max_iters=20, n_params=100_000, tokens_per_update=768)
    lrs = drive(d, 20, loss=lambda j: 3.0, val=lambda it: 3.0)
    assert len(c.actions) == 20 and d.finished and all(math.isfinite(x) and x > 0 for x in lrs)


# ---- OptaxLR -----------------------------------------------------------------------------------
def test_optax_lr_sets_injected_learning_rate():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.ones((3,)), "b": jnp.zeros(())}
    grads = {"w": jnp.asarray([1.0, -2.0, 3.0]), "b": jnp.asarray(4.0)}
    opt = optax.chain(optax.clip_by_global_norm(100.0), optax.inject_hyperparams(optax.sgd)(learning_rate=0.0))
    state = opt.init(params)
    traces = []

    @jax.jit
    def update(g, s):
        traces.append(1)
        return opt.update(g, s)

    d = LoopDriver(Recorder(), base_lr=1.0, max_iters=10)
    lr_ctl = OptaxLR(d)
    for it in range(4):
        state = lr_ctl.set(state, it, train_loss=None if it == 0 else 2.0)
        lr = optax.tree.get(state, "learning_rate")
        assert lr.dtype == jnp.float32 and float(lr) == pytest.approx((it + 1) / 100)
        u, state = update(grads, state)
        np.testing.assert_allclose(u["w"], -(it + 1) / 100 * grads["w"], rtol=1e-6)  # sgd: -lr * g
    assert len(traces) == 1  # a new LR never retraces the jitted update
    assert [o.iter for o in d.controller.seen] == [0, 3]

    adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0)
    s = OptaxLR(LoopDriver(make("constant"), base_lr=3e-4, max_iters=10)).set(adamw.init(params), 0)
    assert float(s.hyperparams["learning_rate"]) == pytest.approx(3e-4)
    assert float(s.hyperparams["b1"]) == pytest.approx(0.9)  # the other hyperparameters untouched


def test_optax_lr_without_inject_hyperparams_raises():
    pytest.importorskip("jax")
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.ones((3,))}
    d = LoopDriver(Recorder(), base_lr=1.0, max_iters=10)
    with pytest.raises(ValueError, match="optax.inject_hyperparams"):
        OptaxLR(d).set(optax.adamw(1e-3).init(params), 0)
    sched = optax.inject_hyperparams(optax.adamw)(learning_rate=optax.cosine_decay_schedule(1e-3, 10))
    with pytest.raises(ValueError, match="schedule"):
        OptaxLR(d).set(sched.init(params), 0)
    assert d.last_lr is None and not d.controller.seen  # a failed set does not advance the driver


# ---- TorchLR -----------------------------------------------------------------------------------
def test_torch_lr_sets_every_param_group():
    torch = pytest.importorskip("torch")
    w, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=123.0)
    d = LoopDriver(Recorder(), base_lr=1.0, max_iters=10)
    lr_ctl = TorchLR(d, opt)
    for it in range(5):
        lr = lr_ctl.step(it, train_loss=None if it == 0 else torch.tensor(2.0))
        assert lr == pytest.approx((it + 1) / 100)
        assert [g["lr"] for g in opt.param_groups] == [lr, lr]
        before = w.detach().clone()
        opt.zero_grad()
        (w * torch.tensor([1.0, -2.0, 3.0])).sum().add(b.sum()).backward()
        opt.step()
        torch.testing.assert_close(w.detach(), before - lr * torch.tensor([1.0, -2.0, 3.0]))
    assert [o.train_loss for o in d.controller.seen] == [None, 2.0]
    with pytest.raises(TypeError, match="param_groups"):
        TorchLR(d, object())


def test_module_imports_without_torch_or_jax():
    code = ("import sys, lrpilot.driver as a; a.TorchLR; "
            "assert not {'torch', 'jax', 'optax'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# ---- examples ----------------------------------------------------------------------------------
def _run_example(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--iters", "40", "--eval-every", "10", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p.stdout


def test_optax_example_runs():
    pytest.importorskip("jax")
    out = _run_example("optax_loop.py")
    assert "iter    40  lr 3.000e-04" in out and "done in" in out  # cosine ends at min_lr = lr / 10


def test_optax_example_passes_the_run_context_a_spec_v2_policy_needs(tmp_path):
    path = _random_policy(tmp_path / "pol", "v2")
    out = _run_example("optax_loop.py", "--controller", f"policy:{path}")
    # a random policy may drive the LR up until the run diverges: then it stops the run, as defined
    assert "done in" in out and ("iter    40" in out or "the controller stopped the run" in out), out


def test_torch_example_runs():
    pytest.importorskip("torch")
    out = _run_example("torch_nanogpt.py", "--controller", "plateau")
    lines = [ln for ln in out.splitlines() if ln.startswith("iter")]
    assert [int(ln.split()[1]) for ln in lines] == [0, 10, 20, 30, 40] and "done in" in out
