"""The action term's further kinks (`WorldModelConfig.action_hinge_offsets`, `worldmodel fit-action --hinge-offsets`):
a x max(0, log10 absolute LR - the kink - o) for each offset o, for an effect of a doubling that bends again away from
the first kink."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_correction_paired import _patched_pretrained
from test_worldmodel_correction import LOG2, SPEC, _linear_runs, _tiny

from lrpilot.worldmodel import correction
from lrpilot.worldmodel.model import WorldModelConfig


def test_second_kink_follows_an_effect_that_jumps_above_it():
    """The effect rises gently above the first kink (L = 0) and steeply above L = 0.5: one kink fits it with a
    slope between the two; a second kink at 0.5 follows it. Added to a kept one-kink term (stagewise) it finds only
    part of the jump, the kept slope having taken the rest."""
    runs = _linear_runs(128, effect=0.002, kink=(0.01, 0.0), upper=(0.06, 0.5), seed=4)
    r, k = np.nonzero(np.arange(SPEC.n_decisions)[None] >= 1)
    o, a = runs.obs[r, k], LOG2[runs.actions[r, k]]
    L = o[:, SPEC.index("log_lr")]
    true = (0.002 + 0.01 * np.maximum(L, 0) + 0.06 * np.maximum(L - 0.5, 0)) * a
    err, w = {}, {}
    for upper in (None, 0.5):
        model, ser, params = _tiny(action_response="noop", action_hinge=0.0, action_hinge_offsets=() if upper is None else (upper,))
        params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
        terms = correction.ActionTerms.of(model.cfg)
        w[upper] = correction.fit(model, params, ser, runs)["w"]
        err[upper] = np.sqrt(np.mean((terms.features(SPEC, a, o, np.zeros(len(a))) @ w[upper] - true) ** 2))
    assert terms.names()[-2:] == ("a*kink(0,0)", "a*kink+0.5") and w[0.5].shape == (9,)
    two = correction.ActionTerms(hinge=0.0, offsets=(-0.5, 0.5))
    assert two.names()[-3:] == ("a*kink(0,0)", "a*kink-0.5", "a*kink+0.5") and two.n_phi == 10
    assert err[0.5] < 0.6 * err[None], err
    assert w[0.5][-1] > 0.5 * 0.06  # the jump's slope, not a slope between
    one, ser, params = _tiny(action_response="noop", action_hinge=0.0)
    params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
    kept = correction.with_action_linear(one, params, ser, runs)
    out = correction.with_action_linear(model, kept, ser, runs, keep_terms=correction.ActionTerms.of(one.cfg))["action_linear"]
    np.testing.assert_array_equal(out["w"][:-1], kept["action_linear"]["w"])  # the kept term in its place
    assert 0.1 * 0.06 < out["w"][-1] < w[0.5][-1]  # the kept kink's slope took some of the jump: fit both at once


def test_second_kink_in_the_correction_and_its_refusals():
    """The simulator's delta adds w x max(0, L - h - u) (nil below the second kink); a second kink needs a first, sits
    above it (u > 0) and is finite; weights of another layout are refused, the field named."""
    terms = correction.ActionTerms(hinge=0.0, offsets=(0.5,))
    w = np.zeros(terms.n, np.float32)
    w[-1] = 0.04
    o = np.stack([SPEC.observation(5, lr, 3.0, 3.0, 4.0)[0] for lr in (10 ** 0.4, 10 ** 1.2)])
    double = SPEC.actions.index(2.0)
    delta = [float(correction.correction(SPEC, {"w": jnp.asarray(w), "b": jnp.float32(0)}, LOG2, double, jnp.asarray(x), 0.0,
                                         jnp.nan, terms)) for x in o]
    assert delta == pytest.approx([0.0, 0.04 * (1.2 - 0.5)], abs=1e-5)
    for bad in ({"action_hinge_offsets": (1.0,)}, {"action_hinge": 0.0, "action_hinge_offsets": (0.0,)},
                {"action_hinge": 0.0, "action_hinge_offsets": (float("inf"),)}, {"action_hinge": 0.0, "action_hinge_offsets": (1, 1)},
                {"action_hinge": 0.0, "action_hinge_offsets": 1.0}):
        with pytest.raises(ValueError, match="action_hinge_offsets"):
            WorldModelConfig(**bad)
    cfg = WorldModelConfig(action_hinge=0.0, action_hinge_offsets=[-1.0, 1.0])  # as read back from JSON
    assert cfg.action_hinge_offsets == (-1.0, 1.0) and WorldModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="need a hinge"):
        correction.ActionTerms(offsets=(1.0,))
    with pytest.raises(ValueError, match=r"action_hinge_offsets=\(0.5,\)"):  # a one-kink term's 8 weights read as two kinks
        correction.correction(SPEC, {"w": jnp.zeros(8), "b": jnp.float32(0)}, LOG2, double, jnp.asarray(o[0]), 0.0, jnp.nan, terms)


def test_fit_action_hinge_offsets_flags(tmp_path, capsys):
    """--hinge-offsets need a kink (given or kept), before any data is read; --keep of a term with a kink at an offset
    refuses the same offset again; --keep of a kinked term with --hinge-offsets goes on to the data (a missing
    directory named)."""
    from lrpilot.app.cli import main

    out, no_data = tmp_path / "wm_fit", str(tmp_path / "no_data")
    with pytest.raises(SystemExit, match="--hinge-offsets .* need --hinge"):
        main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--hinge-offsets", "1", "--data", no_data, "--out", str(out)])
    two = _patched_pretrained(tmp_path, "two", action_hinge=-1.0, action_hinge_offsets=[1.0], action_level=False,
                              action_level_terms="both")
    with pytest.raises(SystemExit, match=r"already has kinks at offsets \[1.0\]"):
        main(["worldmodel", "fit-action", "--ckpt", str(two), "--keep", "--response", "noop", "--hinge-offsets", "-1", "1",
              "--data", no_data, "--out", str(out)])
    kinked = _patched_pretrained(tmp_path, "kinked", action_hinge=-1.0, action_hinge_offsets=[], action_divergence=False)
    assert main(["worldmodel", "fit-action", "--ckpt", str(kinked), "--keep", "--response", "noop", "--hinge-offsets", "1",
                 "--fit", "exogenous", "--data", no_data, "--out", str(out)]) == 2
    assert "no_data" in capsys.readouterr().err and not out.exists()
