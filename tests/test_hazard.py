"""An LR action's own risk of divergence (worldmodel/hazard.py, `WorldModelConfig.action_divergence`,
`worldmodel fit-action --divergence`): its fit, the simulator's excess hazard over holding, the refusals."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_correction_paired import _patched_pretrained
from test_worldmodel_correction import SPEC, _linear_runs, _tiny

from lrpilot.worldmodel import correction, hazard
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig

TERMS = correction.ActionTerms(hinge=0.3)


def _diverging(c, seed=0, n_runs=256):
    """_linear_runs' random walks, each diverging into observation k + 1 with probability sigmoid(c0 + c1 z), z the
    log10 LR after action k less 0.3 (base LR 1): the run ends there at the divergence ratio."""
    runs = _linear_runs(n_runs, effect=0.0, seed=seed)
    rng = np.random.default_rng(seed + 1)
    vi, li = SPEC.index("val"), SPEC.index("log_lr")
    for r in range(n_runs):
        for k in range(1, SPEC.n_decisions):
            z = runs.obs[r, k + 1, li] - 0.3
            if rng.random() < 1 / (1 + np.exp(-(c[0] + c[1] * z))):
                runs.obs[r, k + 1, vi] = SPEC.divergence_ratio
                runs.length[r] = k + 2
                break
    return runs


def test_fit_recovers_the_hazard_of_the_lr_after_the_action():
    runs = _diverging((-4.0, 3.0))
    z, y = hazard.rows(runs, TERMS)
    assert 20 < y.sum() < len(y) - 20  # some runs diverged, most went on
    c = hazard.fit(runs, TERMS)
    assert c[0] == pytest.approx(-4.0, abs=0.8) and c[1] == pytest.approx(3.0, abs=0.8), c
    with pytest.raises(ValueError, match="needs action_hinge"):
        hazard.fit(runs, correction.ActionTerms())
    with pytest.raises(ValueError, match="0 diverged into the next"):
        hazard.fit(_linear_runs(8, effect=0.0), TERMS)


@pytest.mark.parametrize("members", [1, 2])
def test_simulator_diverges_a_doubling_by_its_excess_hazard_alone(traj, members):
    """A hazard that is nil at the LR held and certain a doubling above: the doubling diverges the step (val at the
    divergence value, terminated, mean_val there), a halving leaves the step as a hazard-free model draws it."""
    model, ser, params = _tiny(action_response="noop", action_hinge=0.0, action_divergence=True)
    env = SimEnv(model, ser)
    probe = env.params({**params, "action_linear": {"w": np.zeros(8, np.float32), "b": np.float32(0)},
                        "action_hazard": {"c": np.zeros(2, np.float32)}}, traj)
    _, st = env.reset_to(probe, 1, 5, 5)
    A = float(st.obs[SPEC.index("log_lr")] + probe.log_base[1])
    model = model.clone(cfg=dataclasses.replace(model.cfg, action_hinge=A + 0.1, ensemble=members))  # z held: -0.1
    env = SimEnv(model, ser)
    stack = (lambda x: x) if members == 1 else (lambda x: np.stack([x] * members))  # noqa: E731  (numpy, as a checkpoint loads)

    def ep(c):
        p = {**params, "action_linear": {"w": np.zeros(8, np.float32), "b": np.float32(0)},
             "action_hazard": {"c": np.asarray(c, np.float32)}}
        return env.params(jax.tree.map(stack, p), traj)

    sure, nil = ep((-10.0, 200.0)), ep((-30.0, 0.0))
    # jitted with the parameters closed over (numpy leaves, as a checkpoint loads) and the member traced, as rollouts do
    step = {id(p): jax.jit(lambda k, s, a, p=p: env.step(k, s, a, p)) for p in (sure, nil)}
    _, st = env.reset_to(sure, 1, 5, 5, member=members - 1)
    f, checked = SPEC.field("val"), {2.0: 0, 0.5: 0}
    for key in range(4):
        for factor in (2.0, 0.5):
            a, kk = jnp.int32(SPEC.actions.index(factor)), jax.random.key(key)
            o, _, _, term, _, info = step[id(sure)](kk, st, a)
            o0, _, _, term0, _, info0 = step[id(nil)](kk, st, a)
            if bool(info0["diverged"]):
                continue  # the transformer's own divergence: the same either way
            checked[factor] += 1
            if factor == 2.0:
                assert bool(info["diverged"]) and bool(term) and float(o[SPEC.index("val")]) == f.high
                assert float(info["mean_val"]) == pytest.approx(f.high, abs=1e-4)
            else:
                np.testing.assert_array_equal(np.asarray(o), np.asarray(o0))
                assert not bool(info["diverged"]) and float(info["mean_val"]) == pytest.approx(float(info0["mean_val"]), abs=1e-6)
    assert min(checked.values()) > 0, checked


def test_the_hazards_refusals(traj, tmp_path, capsys):
    from lrpilot.app.cli import main

    for bad in ({"action_divergence": True, "action_response": "noop"}, {"action_divergence": True, "action_hinge": 0.0}):
        with pytest.raises(ValueError, match="action_divergence .* needs action_response noop and action_hinge"):
            WorldModelConfig(**bad)
    model, ser, params = _tiny(action_response="noop", action_hinge=0.0, action_divergence=True)
    with pytest.raises(ValueError, match=r"needs params\['action_hazard'\].*fit-action --divergence"):
        SimEnv(model, ser).params({**params, "action_linear": {"w": np.zeros(8, np.float32), "b": np.float32(0)}}, traj)
    out, no_data = tmp_path / "wm_fit", str(tmp_path / "no_data")
    with pytest.raises(SystemExit, match="--divergence .* needs --response noop and --hinge"):
        main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--divergence", "--data", no_data, "--out", str(out)])
    kinked = _patched_pretrained(tmp_path, "kinked", action_hinge=-1.0, action_divergence=False)
    assert main(["worldmodel", "fit-action", "--ckpt", str(kinked), "--keep", "--response", "noop", "--divergence",
                 "--data", no_data, "--out", str(out)]) == 2
    assert "no_data" in capsys.readouterr().err and not out.exists()
