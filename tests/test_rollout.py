"""The level term refit on rollouts (`worldmodel/rollout.py`, `lrpilot worldmodel fit-rollout`): the pairwise fit
recovers a known level effect that the simulation misses, refuses a simulation that orders the runs backwards,
psi's sums are the simulator's own columns, moving the weights moves the correction by d . (psi - its mean), and
the command writes a checkpoint whose level weights moved by what it records."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_worldmodel_correction import LOG2, _linear_runs

from lrpilot.worldmodel import correction, rollout

TERMS = correction.ActionTerms(hinge=-0.5, level=True, level_terms="kinks")


def _groups(n_groups: int, size: int) -> list[np.ndarray]:
    return [np.arange(g * size, (g + 1) * size) for g in range(n_groups)]


def test_pairwise_fit_recovers_a_level_effect_the_simulation_misses():
    """real = sim + Psi . d + noise within groups: d comes back (the fit is scale-free: sim's slope is free), and
    sim + Psi . d ranks the groups better than sim alone; with no level effect d stays near 0."""
    rng = np.random.default_rng(0)
    grps, R = _groups(200, 8), 1600
    sim, psi = rng.normal(0, 0.05, R), rng.exponential(1.0, (R, 2))
    d_true = np.array([0.03, -0.01])
    real = sim + psi @ d_true + rng.normal(0, 0.01, R) + np.repeat(rng.normal(0, 1, 200), 8)  # group levels too
    d = rollout.delta(sim, psi, real, grps, l2=0.0)
    assert np.allclose(d, d_true, atol=0.003), d
    assert rollout.spearman(sim + psi @ d, real, grps) > rollout.spearman(sim, real, grps) + 0.15
    d0 = rollout.delta(sim, psi, sim + rng.normal(0, 0.01, R), grps, l2=0.0)
    assert np.abs(d0).max() < 0.002, d0


def test_pairwise_fit_refusals():
    rng = np.random.default_rng(1)
    grps, sim, psi = _groups(20, 5), rng.normal(size=100), rng.normal(size=(100, 2))
    with pytest.raises(ValueError, match="wrong way"):
        rollout.delta(sim, psi, -sim + rng.normal(0, 0.01, 100), grps)
    with pytest.raises(ValueError, match="too few"):
        rollout.delta(sim, psi, np.zeros(100), grps)  # every pair tied


def test_psi_sums_are_the_simulators_columns_over_the_decisions_it_takes():
    runs = _linear_runs(4, effect=0.002, log_params=np.full(4, 4.0))
    runs.length[1] = 10  # a shorter run: its later decisions are not taken
    got = rollout.psi_sums(runs, TERMS)
    assert got.shape == (4, len(TERMS.psi_names))
    lb, lp = correction.log_base(runs), correction.log_params(runs)
    for r in range(4):
        want = sum(TERMS.features(runs.spec, LOG2[runs.actions[r, k]], runs.obs[r, k].astype(np.float64), float(lb[r]),
                                  float(lp[r]))[TERMS.n_phi:] for k in range(runs.length[r] - 1))
        np.testing.assert_allclose(got[r], want, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="no level terms"):
        rollout.psi_sums(runs, correction.ActionTerms(hinge=-0.5))


def test_moved_weights_move_the_correction_by_d_times_psi_less_its_mean():
    """Each member's correction at any observation and action changes by d . (psi - psi_mean); phi's part stays."""
    rng = np.random.default_rng(2)
    params = {"action_linear": {"w": rng.normal(0, 0.01, (3, TERMS.n)).astype(np.float32), "b": np.zeros(3, np.float32)}}
    d, mu = rng.normal(0, 0.01, len(TERMS.psi_names)), rng.uniform(0, 1, len(TERMS.psi_names))
    new = rollout.moved(params, TERMS, d, mu)
    np.testing.assert_array_equal(new["action_linear"]["w"][:, : TERMS.n_phi], params["action_linear"]["w"][:, : TERMS.n_phi])
    runs = _linear_runs(2, effect=0.002, log_params=np.full(2, 5.0))
    A = jnp.asarray(LOG2, jnp.float32)
    for k in (0, 7, 15):
        obs, act = jnp.asarray(runs.obs[0, k]), int(runs.actions[0, k])
        # log10 base LR 1.5: above the kink, psi is not nil
        before = correction.correction(runs.spec, jax.tree.map(jnp.asarray, params["action_linear"]), A, act, obs, 1.5, 5.0, TERMS)
        after = correction.correction(runs.spec, jax.tree.map(jnp.asarray, new["action_linear"]), A, act, obs, 1.5, 5.0, TERMS)
        psi = TERMS.features(runs.spec, LOG2[act], runs.obs[0, k].astype(np.float64), 1.5, 5.0)[TERMS.n_phi:]
        np.testing.assert_allclose(np.asarray(after - before), np.full(3, d @ (psi - mu)), atol=2e-6)


def test_fit_rollout_cli(tmp_path, capsys):
    """Refusals before any data is read; on the shipped world model and two starter groups it writes a checkpoint
    whose level weights (every member's) moved by the recorded d and nothing else but b."""
    from lrpilot import checkpoints
    from lrpilot.app.cli import main

    out, no_data = tmp_path / "wm_roll", str(tmp_path / "no_data")
    with pytest.raises(SystemExit, match="--groups must be >= 2"):
        main(["worldmodel", "fit-rollout", "--ckpt", "pretrained", "--groups", "1", "--data", no_data, "--out", str(out)])
    with pytest.raises(SystemExit, match="--l2 must be >= 0"):
        main(["worldmodel", "fit-rollout", "--ckpt", "pretrained", "--l2", "nan", "--data", no_data, "--out", str(out)])
    assert main(["worldmodel", "fit-rollout", "--ckpt", "pretrained", "--data", no_data, "--out", str(out)]) == 2
    assert "no_data" in capsys.readouterr().err and not out.exists()
    args = ["worldmodel", "fit-rollout", "--ckpt", "pretrained", "--data", "starter", "--groups", "3", "--samples", "2",
            "--out", str(out)]
    assert main(args) == 0
    old, new = checkpoints.load(checkpoints.pretrained("worldmodel"), kind="worldmodel"), checkpoints.load(out, kind="worldmodel")
    rec = new.meta["rollout_fit"]
    assert rec["groups"] == 3 and rec["runs"] >= 9 and len(rec["rounds"]) == 1 and rec["terms"] == list(TERMS.psi_names)
    w0, w1 = np.asarray(old.params["action_linear"]["w"]), np.asarray(new.params["action_linear"]["w"])
    n_psi = len(rec["terms"])
    np.testing.assert_array_equal(w1[:, :-n_psi], w0[:, :-n_psi])
    np.testing.assert_allclose(w1[:, -n_psi:] - w0[:, -n_psi:], np.tile(rec["rounds"][0]["delta"], (3, 1)), atol=1e-6)
    assert new.model_config == old.model_config
    leaves = lambda p: jax.tree.leaves({k: v for k, v in p.items() if k != "action_linear"})  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(leaves(old.params), leaves(new.params)))
    capsys.readouterr()
    assert main(args) == 0  # the simulation is read back from OUT.state: the same fit
    assert "3 of 3 groups simulated before" in capsys.readouterr().out
    again = checkpoints.load(out, kind="worldmodel").params["action_linear"]["w"]
    np.testing.assert_array_equal(np.asarray(again), w1)
    wide = tmp_path / "wm_v"
    assert main([*args[:-1], str(wide), "--level-terms", "kinks_v"]) == 0
    v = checkpoints.load(wide, kind="worldmodel")
    assert v.model_config["action_level_terms"] == "kinks_v" and v.meta["rollout_fit"]["terms"][-4:] == ["U", "U*p", "V", "V*p"]
    np.testing.assert_array_equal(np.asarray(v.params["action_linear"]["w"])[:, :-(n_psi + 4)], w0[:, :-n_psi])
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "narrow"), "--ckpt", str(wide), "--level-terms", "kink"]) == 2
    assert "do not extend" in capsys.readouterr().err and not (tmp_path / "narrow").exists()


def test_kinks_v_extends_kinks_by_a_v_about_the_default_and_starts_at_zero():
    """kinks_v's columns are kinks' then U, U x p, V, V x p of the decades off KINK_V under the kink; a kinks term
    extended to it corrects exactly as before (the new weights 0); a narrower layout is refused."""
    from lrpilot.worldmodel.model import KINK_V

    wide = correction.ActionTerms(hinge=-0.5, level=True, level_terms="kinks_v")
    assert wide.names()[: TERMS.n] == TERMS.names() and wide.psi_names[-4:] == ("U", "U*p", "V", "V*p")
    runs = _linear_runs(1, effect=0.0, log_params=np.full(1, 5.0))
    o = runs.obs[0, 5].astype(np.float64)
    p, L = o[runs.spec.index("progress")], o[runs.spec.index("log_lr")]
    for lb in (-3.0, -0.5 - KINK_V, 1.0):  # below, at and above the V's vertex (log10 absolute LR = L + lb)
        off = L + lb - (-0.5 - KINK_V)
        got = wide.features(runs.spec, 1.0, o, lb, 5.0)[-4:]
        np.testing.assert_allclose(got, [max(off, 0), max(off, 0) * p, max(-off, 0), max(-off, 0) * p], atol=1e-9)
    rng = np.random.default_rng(3)
    params = {"action_linear": {"w": rng.normal(0, 0.01, (2, TERMS.n)), "b": np.array([0.1, -0.1])}}
    ext = rollout.extended(params, TERMS, wide)
    assert ext["action_linear"]["w"].shape == (2, wide.n) and not ext["action_linear"]["w"][:, TERMS.n:].any()
    A, obs = jnp.asarray(LOG2, jnp.float32), jnp.asarray(o)
    np.testing.assert_allclose(correction.correction(runs.spec, ext["action_linear"], A, 2, obs, -2.0, 5.0, wide),
                               correction.correction(runs.spec, params["action_linear"], A, 2, obs, -2.0, 5.0, TERMS), atol=1e-7)
    with pytest.raises(ValueError, match="do not extend"):
        rollout.extended(ext, wide, TERMS)


def test_cross_validated_fit_scores_groups_it_did_not_see():
    """Out of fold the fit still finds a real level effect (Spearman up); on pure noise it buys nothing there."""
    rng = np.random.default_rng(4)
    grps, R = _groups(60, 8), 480
    sim, psi = rng.normal(0, 0.05, R), rng.exponential(1.0, (R, 2))
    real = sim + psi @ np.array([0.03, -0.01]) + rng.normal(0, 0.01, R)
    assert rollout.cross_validated(sim, psi, real, grps) > rollout.spearman(sim, real, grps) + 0.15
    noise = sim + rng.normal(0, 0.01, R)
    assert rollout.cross_validated(sim, psi, noise, grps) <= rollout.spearman(sim, noise, grps) + 0.01
