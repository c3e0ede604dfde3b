"""The one resumable training harness (lrpilot.trainers.harness): best-state selection, early
stopping, resume through orbax's CheckpointManager exactly where it stopped, refusal to resume
another model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrpilot.trainers import harness

TARGET = jnp.array([1.0, -2.0, 3.0])
TX = optax.adam(0.1)


def _start():
    params = {"w": jnp.zeros(3)}
    return {"params": params, "opt": TX.init(params)}


@jax.jit
def _step(state, i):
    loss_fn = lambda p: jnp.sum((p["w"] - TARGET) ** 2)  # noqa: E731
    loss, g = jax.value_and_grad(loss_fn)(state["params"])
    upd, opt = TX.update(g, state["opt"])
    return {"params": optax.apply_updates(state["params"], upd), "opt": opt}, {"loss": loss}


def _score(state):
    err = float(jnp.sum((state["params"]["w"] - TARGET) ** 2))
    return {"err": err, "score": err}


def test_fit_keeps_the_best_state_and_logs(tmp_path):
    res = harness.fit(_start(), _step, harness.Schedule(40, eval_every=10), _score, progress=False, log=lambda s: None)
    assert [h["step"] for h in res.history] == [0, 10, 20, 30, 40]
    assert res.history[0]["err"] == pytest.approx(14.0) and "loss" in res.history[1] and res.history[1]["seconds"] >= 0
    assert res.best_score == min(h["err"] for h in res.history) and res.best_step in (10, 20, 30, 40)
    assert not res.stopped_early


def test_patience_stops_early_on_a_worsening_score():
    worse = iter(range(100))
    res = harness.fit(_start(), _step, harness.Schedule(100, eval_every=5, patience=2),
                      lambda s: {"score": float(next(worse))}, progress=False, log=lambda s: None)
    assert res.stopped_early and res.best_step == 0 and res.history[-1]["step"] == 10


def test_select_after_never_selects_earlier_states_and_counts_patience_from_there():
    worse = iter(range(100))  # the untrained state scores best, and every later one worse
    res = harness.fit(_start(), _step, harness.Schedule(100, eval_every=5, patience=2, select_after=20),
                      lambda s: {"score": float(next(worse))}, progress=False, log=lambda s: None)
    assert res.best_step == 20 and res.stopped_early and res.history[-1]["step"] == 30
    short = iter(range(100))  # fewer steps than select_after: the last step is still selected
    res = harness.fit(_start(), _step, harness.Schedule(10, eval_every=5, select_after=20),
                      lambda s: {"score": float(next(short))}, progress=False, log=lambda s: None)
    assert res.best_step == 10


def test_resume_continues_exactly_and_refuses_another_model(tmp_path):
    d = tmp_path / "run.state"
    straight = harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, progress=False, log=lambda s: None)
    harness.fit(_start(), _step, harness.Schedule(20, eval_every=10), _score, state_dir=d, identity={"arch": 1},
                progress=False, log=lambda s: None)
    logs = []
    resumed = harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, state_dir=d,
                          identity={"arch": 1}, progress=False, log=logs.append)
    assert any("resuming" in line and "step 20" in line for line in logs)
    np.testing.assert_array_equal(resumed.state["params"]["w"], straight.state["params"]["w"])
    assert [h["step"] for h in resumed.history] == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="cannot resume.*arch"):
        harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, state_dir=d, identity={"arch": 2},
                    progress=False, log=lambda s: None)


def test_resume_from_a_state_saved_before_select_after(tmp_path):
    """No state is selectable yet at the save (its best score is inf, stored as null): the resume selects as a straight run."""
    d, sched = tmp_path / "run.state", harness.Schedule(30, eval_every=10, select_after=20)
    straight = harness.fit(_start(), _step, sched, _score, progress=False, log=lambda s: None)

    def crashing(state, i):  # the process dies after the checkpoint at step 10
        if i == 12:
            raise KeyboardInterrupt
        return _step(state, i)

    with pytest.raises(KeyboardInterrupt):
        harness.fit(_start(), crashing, sched, _score, state_dir=d, progress=False, log=lambda s: None)
    resumed = harness.fit(_start(), _step, sched, _score, state_dir=d, progress=False, log=lambda s: None)
    assert resumed.best_step == straight.best_step == 30 and resumed.best_score == pytest.approx(straight.best_score)


def _saved_meta(d):
    ocp, mngr = harness._manager(d)
    return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def test_the_best_state_is_stored_apart_only_when_it_is_not_the_state(tmp_path):
    """Improving at the save: one tree and a flag; worsening since step 10: the best is stored and comes back."""
    improving, d = harness.Schedule(20, eval_every=10), tmp_path / "a.state"
    harness.fit(_start(), _step, improving, _score, state_dir=d, progress=False, log=lambda s: None)
    assert _saved_meta(d)["best_is_state"]
    resumed = harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, state_dir=d, progress=False,
                          log=lambda s: None)
    straight = harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, progress=False, log=lambda s: None)
    np.testing.assert_array_equal(resumed.best_state["params"]["w"], straight.best_state["params"]["w"])

    worsening = lambda state: {"score": -_score(state)["err"]}  # noqa: E731 (the first evaluation after step 0 wins)
    d = tmp_path / "b.state"
    harness.fit(_start(), _step, harness.Schedule(20, eval_every=10, select_after=10), worsening, state_dir=d,
                progress=False, log=lambda s: None)
    assert not _saved_meta(d)["best_is_state"] and _saved_meta(d)["best_step"] == 10
    sched = harness.Schedule(30, eval_every=10, select_after=10)
    resumed = harness.fit(_start(), _step, sched, worsening, state_dir=d, progress=False, log=lambda s: None)
    straight = harness.fit(_start(), _step, sched, worsening, progress=False, log=lambda s: None)
    assert resumed.best_step == straight.best_step == 10
    np.testing.assert_array_equal(resumed.best_state["params"]["w"], straight.best_state["params"]["w"])


def test_identity_names_the_differing_fields_and_skips_keys_recorded_since(tmp_path):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float = 0.1
        noise: float = 0.0
        steps: int = 10

    assert harness.options(Cfg(noise=0.5, steps=20), skip=("steps",)) == {"noise": 0.5}  # defaults are left out
    d = tmp_path / "run.state"
    harness.fit(_start(), _step, harness.Schedule(10, eval_every=10), _score, state_dir=d, identity={"arch": 1}, progress=False, log=lambda s: None)
    logs = []  # a state saved before "training" was recorded resumes, saying it was not checked
    harness.fit(_start(), _step, harness.Schedule(20, eval_every=10), _score, state_dir=d, identity={"arch": 1, "training": harness.options(Cfg())},
                progress=False, log=logs.append)
    assert any("before its training was recorded" in line for line in logs) and any("step 10" in line for line in logs)
    with pytest.raises(ValueError, match=r"different training \(training\.noise: 'default' in the state, 0\.5 now\)"):
        harness.fit(_start(), _step, harness.Schedule(30, eval_every=10), _score, state_dir=d,
                    identity={"arch": 1, "training": harness.options(Cfg(noise=0.5))}, progress=False, log=lambda s: None)


def test_schedule_is_validated():
    with pytest.raises(ValueError, match="eval_every"):
        harness.fit(_start(), _step, harness.Schedule(10, eval_every=5), None, progress=False)
    with pytest.raises(ValueError, match="log_every"):
        harness.Schedule(10)
    with pytest.raises(ValueError, match=">= 0"):
        harness.Schedule(10, eval_every=-1)
