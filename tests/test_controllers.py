"""The controller registry: options, parse_spec, make, unknown names and the learned policy registering from above."""

from __future__ import annotations

import re

import pytest
from controller_refs import RTOL, RUN

from lrpilot.controllers import BUILTIN, Observation, RunInfo, make, names, parse_spec

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


def test_learned_controllers_register_from_above():
    from lrpilot import controllers

    assert "policy" in names()  # found through the package's entry point; the kernel never imports lrpilot.policy
    c = make("policy:pretrained")
    assert c.name == "policy" and parse_spec("policy:/a/b,c=d") == ("policy", {"path": "/a/b,c=d"})
    controllers.register("mine", lambda **opts: make("cosine:lr_mult=2"))  # a user's own controller
    try:
        assert make("mine").describe()["lr_mult"] == 2.0 and "mine" in names()
    finally:
        del controllers.REGISTRY["mine"]
    with pytest.raises(ValueError, match="without ':'"):
        controllers.register("a:b", make)
