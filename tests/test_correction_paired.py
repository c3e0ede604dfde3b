"""`worldmodel fit-action --fit paired` (worldmodel/correction.py): the linear term's level and action
effects read off runs that share a seed, within each group at each decision; psi added stagewise to a
kept term and centred on every training decision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_worldmodel_correction import SPEC, _tiny

from lrpilot.spec import SPEC_V2
from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel import correction
from lrpilot.worldmodel.model import KINK_BELOW


def _paired_runs(n_groups: int, level_cost: float, seed: int = 2) -> Trajectories:
    """Spec v2 runs that hold their LR, configured at log10 base LR A in {0, 0.5, 1}; val changes by -d + level_cost * A
    + e_k + noise per step. Paired: 3 runs per group share one seed (a drift d and shocks e_k of their own group's).
    Then as many unpaired runs (one seed each) whose drift grows with A (the high-LR runs on easy tasks): pooled
    with them, the level's cost is misread."""
    rng = np.random.default_rng(seed)
    n = SPEC.n_decisions
    levels = np.tile([0.0, 0.5, 1.0], 2 * n_groups)
    drift = np.concatenate([np.repeat(rng.uniform(0.005, 0.03, n_groups), 3), 0.01 + 0.04 * levels[3 * n_groups:]])
    shocks = np.concatenate([np.repeat(rng.normal(0, 0.01, (n_groups, n)), 3, 0),
                             rng.normal(0, 0.02, (3 * n_groups, n))])  # noisy: the last change hides the drift
    R = len(levels)
    obs = np.zeros((R, n + 1, SPEC.n_obs), np.float32)
    for r in range(R):
        val = 1.0
        obs[r, 0] = SPEC.observation(0, 1.0, 4.0, None, 4.0)[0]
        for k in range(n):
            val = val - drift[r] + level_cost * levels[r] + shocks[r, k] + rng.normal(0, 0.001)
            obs[r, k + 1] = SPEC.observation(k + 1, 1.0, 4.0 * val, 4.0 * val, 4.0)[0]
    metas = [{"task": "t", "job_seed": 5, "group": r // 3, "seed": r // 3 if r < 3 * n_groups else 1000 + r, "family": "test",
              "controller": {"name": "anneal"}} for r in range(R)]
    static = np.stack([levels, np.full(R, 5.0), np.full(R, 3.0), np.full(R, 3.0)], 1).astype(np.float32)
    return Trajectories(SPEC_V2, obs, np.full((R, n), SPEC.noop_action, np.int32), np.full(R, n + 1, np.int32),
                        np.zeros(R, bool), metas, [f"job5/run{r}.parquet" for r in range(R)], np.full((R, n + 1), np.nan),
                        static=static)


def _persistence(model, wm_params, ser, traj, noop=False, **_):
    """(R, n+1) `expected_next_val` of a transformer that knows how runs go on, not the LR: the last val."""
    vi = SPEC.index("val")
    return np.concatenate([np.full((len(traj), 1), np.nan), traj.obs[:, :-1, vi]], 1)


def _level_cost(terms, lin, runs) -> float:
    """The linear term's shift per step at log10 base LR 1 against 0, over the runs' observations 1..n-1."""
    o = runs.obs[:, 1:-1].reshape(-1, SPEC.n_obs)
    at = [terms.features(SPEC_V2, np.zeros(len(o)), o, np.full(len(o), A)) @ lin["w"] for A in (1.0, 0.0)]
    return float(np.mean(at[0] - at[1]))


def _patched_pretrained(tmp_path, name: str, **model_config):
    """A copy of the shipped world model at tmp_path / name with these model_config fields changed."""
    import json
    import shutil

    from lrpilot import checkpoints

    path = tmp_path / name
    shutil.copytree(checkpoints.pretrained("worldmodel"), path)
    header = json.loads((path / "checkpoint.json").read_text())
    header["model_config"].update(model_config)
    (path / "checkpoint.json").write_text(json.dumps(header))
    return path


def test_paired_fit_reads_the_cost_of_the_lr_level_off_runs_that_share_a_seed(monkeypatch):
    """Runs of one group share their seed and differ by the configured LR only: within each group at each
    decision, the level's cost per step is what they differ by. Pooled with unpaired runs whose drift
    grows with the LR, it is misread; the paired fit leaves the unpaired runs out."""
    model, ser, params = _tiny(spec=SPEC_V2, action_response="noop", action_level=True)
    runs = _paired_runs(16, level_cost=0.004)
    monkeypatch.setattr(correction, "expected_next_val", _persistence)
    ids = correction.paired_groups(runs)
    assert (ids[:48] == np.repeat(np.arange(16), 3)).all() and (ids[48:] == -1).all()
    terms = correction.ActionTerms.of(model.cfg)
    o = runs.obs[:, 1:-1].reshape(-1, SPEC.n_obs)

    def cost(lin):
        return _level_cost(terms, lin, runs)

    paired = correction.with_action_linear(model, params, ser, runs, "paired")["action_linear"]
    assert cost(paired) == pytest.approx(0.004, rel=0.2)
    pooled = cost(correction.fit(model, params, ser, runs))
    assert abs(pooled - 0.004) > 0.3 * 0.004, pooled  # pooled: the unpaired runs' drift passes for part of the level's effect
    with pytest.raises(ValueError, match="groups that share a seed"):
        correction.fit(model, params, ser, runs.subset(np.arange(48, 96)), rows_from="paired")
    # stagewise: a term without psi kept, psi added from the paired runs, centred on every training decision
    phi_only = model.clone(cfg=dataclasses.replace(model.cfg, action_level=False))
    kept = correction.with_action_linear(phi_only, params, ser, runs)
    out = correction.with_action_linear(model, kept, ser, runs, "paired", keep_terms=correction.ActionTerms.of(phi_only.cfg))
    w = out["action_linear"]["w"]
    np.testing.assert_array_equal(w[: terms.n_phi], kept["action_linear"]["w"])
    assert cost(out["action_linear"]) == pytest.approx(cost(paired), rel=1e-4)
    shift = terms.features(SPEC_V2, np.zeros(len(o)), o, np.repeat(runs.static[:, 0], SPEC.n_decisions - 1)) @ w
    assert abs(shift.mean() + float(out["action_linear"]["b"])) < 1e-6  # no shift on average over all the runs


def test_fit_action_keeps_a_kept_kink_where_it_is(tmp_path, capsys):
    """--keep on a term with a kink: a second kink is refused, named; without --hinge the kink is kept and
    --level --fit paired goes on to the data (looked up next: a missing directory is named)."""
    from lrpilot.app.cli import main

    out = tmp_path / "wm_fit"
    kinked = _patched_pretrained(tmp_path, "kinked", action_hinge=-1.0)
    with pytest.raises(SystemExit, match="already has a kink"):
        main(["worldmodel", "fit-action", "--ckpt", str(kinked), "--keep", "--response", "noop", "--hinge", "-2",
              "--data", str(tmp_path / "no_data"), "--out", str(out)])
    assert main(["worldmodel", "fit-action", "--ckpt", str(kinked), "--keep", "--level", "--response", "noop", "--fit", "paired",
                 "--data", str(tmp_path / "no_data"), "--out", str(out)]) == 2
    assert "no_data" in capsys.readouterr().err and not out.exists()


def test_absolute_level_terms_read_the_lr_in_effect_alone(monkeypatch):
    """action_level_terms "absolute": psi is A, A x p, A^2 (3 columns), so two states at one absolute LR get one
    correction whatever their LR relative to the configured one (an anneal from x10 to x1 lands where x1 holds);
    fit on paired runs it reads the level's cost as the 6-column psi does; a checkpoint's 3 psi weights are read as
    this layout and a length that fits neither is refused, named."""
    model, ser, params = _tiny(spec=SPEC_V2, action_response="noop", action_level=True, action_level_terms="absolute")
    terms = correction.ActionTerms.of(model.cfg)
    assert terms.names()[terms.n_phi:] == ("A", "A*p", "A^2") and terms.n == terms.n_phi + 3
    o = np.stack([SPEC.observation(5, 1.0, 3.0, 3.0, 4.0)[0]] * 2)
    o[:, SPEC.index("log_lr")] = [-1.0, 0.0]  # annealed a decade from log10 base 1, holding at log10 base 0: both at A = 0
    cols = terms.features(SPEC_V2, np.zeros(2), o, np.array([1.0, 0.0]))
    np.testing.assert_array_equal(cols[0], cols[1])
    both = correction.ActionTerms(level=True).features(SPEC_V2, np.zeros(2), o, np.array([1.0, 0.0]))
    assert not np.array_equal(both[0], both[1])  # L tells them apart
    monkeypatch.setattr(correction, "expected_next_val", _persistence)
    runs = _paired_runs(16, level_cost=0.004)
    lin = correction.with_action_linear(model, params, ser, runs, "paired")["action_linear"]
    assert _level_cost(terms, lin, runs) == pytest.approx(0.004, rel=0.2)
    assert correction.layout(correction.ActionTerms(level_terms="absolute"), lin["w"]).level
    with pytest.raises(ValueError, match="expected 7 \\(or 10 with action_level\\).*action_level_terms=absolute"):
        correction.layout(correction.ActionTerms(level_terms="absolute"), np.zeros(13))
    with pytest.raises(ValueError, match="action_level_terms must be one of both, absolute, kink, kinks, kinks_v, and both without action_level"):
        dataclasses.replace(model.cfg, action_level=False)


def test_kink_level_terms_are_nil_below_the_kink():
    """action_level_terms "kink": psi is K, K x p, K^2 with K = max(0, A - the action term's kink), so that a state
    anywhere below the kink (an anneal at the default LR) gets no level correction, one above it gets K's; without a
    kink it is refused, named."""
    terms = correction.ActionTerms(hinge=-2.0, level=True, level_terms="kink")
    assert terms.names()[terms.n_phi:] == ("K", "K*p", "K^2")
    o = np.stack([SPEC.observation(6, 1.0, 3.0, 3.0, 4.0)[0]] * 3)
    p = o[0, SPEC.index("progress")]
    cols = terms.features(SPEC_V2, np.zeros(3), o, np.array([-3.0, -2.5, -1.5]))[:, terms.n_phi:]
    np.testing.assert_allclose(cols[:2], 0.0)
    np.testing.assert_allclose(cols[2], [0.5, 0.5 * p, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match=r"both, absolute, kink, kinks, kinks_v \(kink, kinks, kinks_v with a hinge\), got .kink. \(hinge=None\)"):
        correction.ActionTerms(level=True, level_terms="kink")
    with pytest.raises(ValueError, match="action_level_terms kink .* needs action_hinge"):
        _tiny(action_response="noop", action_level=True, action_level_terms="kink")


def test_kinks_level_terms_price_an_lr_far_below_the_kink_too():
    """action_level_terms "kinks": K's columns, then D, D x p with D = max(0, the kink - KINK_BELOW - A) (no square,
    so the cost cannot turn below the data's deepest LR): nil between the two kinks (x0.1 to x10 of the default),
    D's below the lower one, K's above the upper one."""
    terms = correction.ActionTerms(hinge=-2.0, level=True, level_terms="kinks")
    assert terms.names()[terms.n_phi:] == ("K", "K*p", "K^2", "D", "D*p") and terms.n == terms.n_phi + 5
    o = np.stack([SPEC.observation(6, 1.0, 3.0, 3.0, 4.0)[0]] * 4)
    p = o[0, SPEC.index("progress")]
    low = -2.0 - KINK_BELOW
    cols = terms.features(SPEC_V2, np.zeros(4), o, np.array([low - 1.0, low + 0.5, -2.5, -1.5]))[:, terms.n_phi:]
    np.testing.assert_allclose(cols[0], [0, 0, 0, 1.0, p], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cols[1:3], 0.0)
    np.testing.assert_allclose(cols[3], [0.5, 0.5 * p, 0.25, 0, 0], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="action_level_terms kinks .* needs action_hinge"):
        _tiny(action_response="noop", action_level=True, action_level_terms="kinks")


def test_fit_action_level_terms_refusals(tmp_path):
    """--level-terms without --level, and --keep of a term whose level terms differ, are refused before any data is read."""
    from lrpilot.app.cli import main

    out, data = tmp_path / "wm_fit", str(tmp_path / "no_data")
    with pytest.raises(SystemExit, match="--level-terms needs --level"):
        main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--level-terms", "absolute", "--data", data, "--out", str(out)])
    leveled = _patched_pretrained(tmp_path, "leveled", action_response="noop", action_level=True, action_level_terms="both")
    with pytest.raises(SystemExit, match="already has level terms \\(action_level_terms both\\), not absolute"):
        main(["worldmodel", "fit-action", "--ckpt", str(leveled), "--keep", "--level-terms", "absolute", "--data", data,
              "--out", str(out)])
    assert not out.exists()
