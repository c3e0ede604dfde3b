"""The linear one-step action response beside the transformer (worldmodel/correction.py): its
fit, and how the simulator adds it and lets the model read it; and the one-step baseline
simulator (worldmodel/onestep.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC, SPEC_V2
from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel import correction
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModelConfig, build

SPEC = DEFAULT_SPEC
LOG2 = np.log2(np.asarray(SPEC.actions))


def _tiny(seed=0, spec=SPEC, **kw):
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, **{"base": 16, **kw})
    model, ser = build(cfg, spec)
    return model, ser, model.init(jax.random.key(seed), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]


def _linear_runs(n_runs: int, effect: float, noise: float = 0.002, seed: int = 0, convex: float = 0.0,
                 kink: tuple[float, ...] = (0.0, 0.0, 0.0), log_params=None, upper: tuple[float, float] = (0.0, 0.0)) -> Trajectories:
    """Random-action runs whose val changes by -0.01 + (effect + convex * L^2 + s * max(0, L - h - hp * P)
    + su * max(0, L - h - hp * P - u)) * log2(action factor) + noise, (s, h[, hp]) = kink, (su, u) = upper (L: log10
    of the LR before the action over the base LR, the
    runs' log absolute LR: base LR 1). With log_params (n_runs,): spec v2 runs, run r with P = log_params[r] in
    its static context (else P = 0)."""
    P = np.zeros(n_runs) if log_params is None else np.asarray(log_params, float)
    s_k, h_k, hp_k = (tuple(kink) + (0.0,))[:3]
    rng = np.random.default_rng(seed)
    n = SPEC.n_decisions
    obs = np.zeros((n_runs, n + 1, SPEC.n_obs), np.float32)
    actions = rng.integers(0, SPEC.n_actions, (n_runs, n)).astype(np.int32)
    for r in range(n_runs):
        lr, val = 1.0, 1.0
        obs[r, 0] = SPEC.observation(0, 1.0, 4.0, None, 4.0)[0]
        for k in range(n):
            L = np.log10(lr)
            lr = SPEC.next_lr_rel(lr, int(actions[r, k]))
            slope = effect + convex * L * L + s_k * max(0.0, L - h_k - hp_k * P[r]) + upper[0] * max(0.0, L - h_k - hp_k * P[r] - upper[1])
            val = val - 0.01 + slope * LOG2[actions[r, k]] + rng.normal(0, noise)
            obs[r, k + 1] = SPEC.observation(k + 1, lr, 4.0 * val, 4.0 * val, 4.0)[0]
    metas = [{"task": "t", "group": r, "job_seed": 0, "family": "test", "controller": {"name": "random_walk"}} for r in range(n_runs)]
    static = None if log_params is None else np.stack([np.zeros(n_runs), P, np.full(n_runs, 3.0), np.full(n_runs, 3.0)],
                                                       1).astype(np.float32)  # base LR 1, 1000 tokens and iterations
    return Trajectories(SPEC if log_params is None else SPEC_V2, obs, actions, np.full(n_runs, n + 1, np.int32),
                        np.zeros(n_runs, bool), metas, [f"run{r}.parquet" for r in range(n_runs)],
                        np.full((n_runs, n + 1), np.nan), static=static)


def test_expected_next_val_is_the_simulators_mean_val(traj):
    model, ser, params = _tiny(1, digits=1, base=32)  # one digit, level coding: mean_val is exact, whatever the key
    env = SimEnv(model, ser)
    ep = env.params(params, traj)
    tf = correction.expected_next_val(model, params, ser, traj, samples=2)
    assert np.isnan(tf[:, 0]).all() and np.isfinite(tf[:, 1:]).all()
    for r, k in [(0, 0), (1, 3), (2, 7), (5, SPEC.n_decisions - 1)]:
        _, st = env.reset_to(ep, r, k + 1, k + 1)  # its own cache, over the prefix only
        *_, info = env.step(jax.random.key(0), st, jnp.int32(traj.actions[r, k]), ep)
        assert float(info["mean_val"]) == pytest.approx(tf[r, k + 1], abs=1e-5)


@pytest.mark.parametrize("response", ["residual", "noop"])
def test_fit_recovers_a_known_action_effect(response):
    model, ser, params = _tiny(action_response=response)
    params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}  # knows nothing: all residual
    runs = _linear_runs(24, effect=0.004)
    fitted = correction.fit(model, params, ser, runs)
    w = fitted["w"]
    assert w.shape == (correction.N_FEATURES,) and float(fitted["b"]) == 0.0
    o = runs.obs[:, 1:-1].reshape(-1, SPEC.n_obs)
    a = LOG2[runs.actions[:, 1:].reshape(-1)]
    slope = np.polyfit(a, correction.action_features(SPEC, a, o, np.zeros(len(a))) @ w, 1)[0]
    assert slope == pytest.approx(0.004, rel=0.15)
    none = correction.fit(model, params, ser, _linear_runs(24, effect=0.0, seed=1))["w"]
    assert abs(np.polyfit(a, correction.action_features(SPEC, a, o, np.zeros(len(a))) @ none, 1)[0]) < 0.0008
    with pytest.raises(ValueError, match="training decisions"):
        correction.fit(model, params, ser, dataclasses.replace(runs.subset([0]), length=np.array([2], np.int32)))


def test_convex_term_follows_an_effect_that_grows_with_the_lr_in_effect():
    runs = _linear_runs(48, effect=0.002, convex=0.02, seed=3)
    r, k = np.nonzero(np.arange(SPEC.n_decisions)[None] >= 1)
    o, a = runs.obs[r, k], LOG2[runs.actions[r, k]]
    true = (0.002 + 0.02 * o[:, SPEC.index("log_lr")] ** 2) * a
    err = {}
    for convex in (False, True):
        model, ser, params = _tiny(action_response="noop", action_convex=convex)
        params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
        w = correction.fit(model, params, ser, runs)["w"]
        assert w.shape == (correction.ActionTerms(convex=convex).n_phi,)
        err[convex] = np.sqrt(np.mean((correction.ActionTerms(convex=convex).features(SPEC, a, o, np.zeros(len(a))) @ w - true) ** 2))
    assert err[True] < 0.5 * err[False]  # a x L alone cannot follow the curve
    with pytest.raises(ValueError, match="action_convex"):  # weights of another layout are refused, not misread
        correction.correction(SPEC, {"w": jnp.zeros(correction.N_FEATURES), "b": jnp.float32(0)}, LOG2, 1,
                              jnp.asarray(o[0]), 0.0, jnp.nan, correction.ActionTerms(convex=True))


def test_hinge_term_follows_an_effect_that_rises_only_above_a_kink():
    """The real effect is flat at low LR and steep above ~x30 of the default: a parabola in the LR fits
    it worse than a kink, and is wrong at the far low end."""
    # The fit's target (next val less an untrained model's expected next val) carries the runs' whole decay, so
    # each fit has a large estimation error of its own: the kink must win on each of two draws of the runs
    # (err ratios 0.15-0.79 over eight draws, 2026-12-05).
    for seed in (4, 5):
        runs = _linear_runs(128, effect=0.002, kink=(0.03, 0.5), seed=seed)
        r, k = np.nonzero(np.arange(SPEC.n_decisions)[None] >= 1)
        o, a = runs.obs[r, k], LOG2[runs.actions[r, k]]
        true = (0.002 + 0.03 * np.maximum(o[:, SPEC.index("log_lr")] - 0.5, 0)) * a
        err = {}
        for convex, hinge in ((True, None), (False, 0.5)):
            model, ser, params = _tiny(action_response="noop", action_convex=convex, action_hinge=hinge)
            params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
            terms = correction.ActionTerms(convex=convex, hinge=hinge)
            w = correction.fit(model, params, ser, runs)["w"]
            assert w.shape == (terms.n_phi,) == (8,)
            err[hinge] = np.sqrt(np.mean((terms.features(SPEC, a, o, np.zeros(len(a))) @ w - true) ** 2))
        assert err[0.5] < 0.8 * err[None], (seed, err)
    for bad in ("x", float("nan")):
        with pytest.raises(ValueError, match="action_hinge"):
            WorldModelConfig(action_hinge=bad)
    with pytest.raises(ValueError, match="action_hinge"):  # 8 weights read as convex + hinge (9) are refused
        correction.correction(SPEC, {"w": jnp.zeros(8), "b": jnp.float32(0)}, LOG2, 1, jnp.asarray(o[0]), 0.0, jnp.nan,
                              correction.ActionTerms(convex=True, hinge=0.5))
    for bad in ({"action_hinge_params": 0.1}, {"action_hinge": 0.5, "action_hinge_params": float("inf")}):
        with pytest.raises(ValueError, match="action_hinge_params"):  # a moving kink needs a kink, and a finite slope
            WorldModelConfig(**bad)


def test_kink_that_moves_with_the_parameter_count_follows_an_effect_that_does():
    """Larger models diverge at a lower LR: the effect's kink sits at h + hp x log10 N. A kink fixed at
    their mean place fits it worse than one that moves, and the simulator places it by each run's context."""
    P = np.repeat([4.0, 8.0], 48)  # 1e4 and 1e8 parameters: kinks at L = 0.5 and -0.5
    runs = _linear_runs(96, effect=0.002, kink=(0.03, 1.5, -0.25), seed=5, log_params=P)
    r, k = np.nonzero(np.ones((len(runs), SPEC.n_decisions), bool) & (np.arange(SPEC.n_decisions)[None] >= 1))
    o, a, lp = runs.obs[r, k], LOG2[runs.actions[r, k]], P[r]
    true = (0.002 + 0.03 * np.maximum(o[:, SPEC.index("log_lr")] - 1.5 + 0.25 * lp, 0)) * a
    err = {}
    for hinge, hp in ((0.0, 0.0), (1.5, -0.25)):
        model, ser, params = _tiny(spec=SPEC_V2, action_response="noop", action_hinge=hinge, action_hinge_params=hp)
        params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
        terms = correction.ActionTerms.of(model.cfg)
        w = correction.fit(model, params, ser, runs)["w"]
        err[hp] = np.sqrt(np.mean((terms.features(SPEC_V2, a, o, np.zeros(len(a)), lp) @ w - true) ** 2))
        assert terms.names()[-1] == f"a*kink({hinge:g},{hp:g})"
    assert err[-0.25] < 0.5 * err[0.0], err
    # the simulator: the kink of run r at its own parameter count
    env = SimEnv(model, ser)
    w = np.zeros(terms.n_phi, np.float32)
    w[-1] = 0.02
    ep = env.params({**params, "action_linear": {"w": w, "b": np.float32(0)}}, runs)
    ep0 = env.params({**params, "action_linear": {"w": np.zeros_like(w), "b": np.float32(0)}}, runs)
    double, key = jnp.int32(SPEC.actions.index(2.0)), jax.random.key(0)
    checked = 0
    for run in (0, 57):  # at L -0.06 below its kink (P = 4: 0.5), at L 0.60 above its (P = 8: -0.5)
        _, st = env.reset_to(ep, run, 8, 8)
        *_, info = env.step(key, st, double, ep)
        *_, info0 = env.step(key, st, double, ep0)
        L = float(st.obs[SPEC.index("log_lr")])
        if not bool(info["diverged"]):
            assert float(info["mean_val"] - info0["mean_val"]) == pytest.approx(0.02 * max(L - 1.5 + 0.25 * P[run], 0), abs=1e-5)
            checked += 1
    assert checked  # (a step that samples divergence adds no term)
    v1 = _linear_runs(4, effect=0.0)  # a spec without the parameter count cannot place the kink: refused, named
    model1, ser1, params1 = _tiny(action_response="noop", action_hinge=1.5, action_hinge_params=-0.25)
    with pytest.raises(ValueError, match=r"action_hinge_params=-0.25 .*\(version 1\)"):
        SimEnv(model1, ser1).params(params1, v1)
    with pytest.raises(ValueError, match=r"action_hinge_params=-0.25 .*\(version 1\)"):
        correction.fit(model1, params1, ser1, v1)


def test_a_kept_term_stays_and_only_the_added_terms_are_fit_on_what_it_leaves():
    runs = _linear_runs(128, effect=0.002, kink=(0.03, 0.5), seed=4)
    base, ser, params = _tiny(action_response="noop", action_level=True)
    params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
    kept = correction.with_action_linear(base, params, ser, runs)
    more = base.clone(cfg=dataclasses.replace(base.cfg, action_hinge=0.5))
    out = correction.with_action_linear(more, kept, ser, runs, keep_terms=correction.ActionTerms.of(base.cfg))["action_linear"]
    names = correction.ActionTerms.of(more.cfg).names()
    assert len(out["w"]) == len(names) == correction.N_FEATURES + 1 + 6 and float(out["b"]) == float(kept["action_linear"]["b"])
    j = names.index("a*kink(0.5,0)")
    np.testing.assert_array_equal(np.delete(out["w"], j), kept["action_linear"]["w"])  # the kept weights, in their places
    fresh = correction.with_action_linear(more, params, ser, runs)["action_linear"]["w"][j]
    assert out["w"][j] > 0.3 * 0.03 and fresh > 0.3 * 0.03  # the kink is found stagewise too (the kept term's a*L took some)
    with pytest.raises(ValueError, match="nothing to fit"):
        correction.with_action_linear(base, kept, ser, runs, keep_terms=correction.ActionTerms.of(base.cfg))
    with pytest.raises(ValueError, match="can only gain terms"):  # the kept term's psi cannot be dropped
        level_free = more.clone(cfg=dataclasses.replace(more.cfg, action_level=False))
        correction.with_action_linear(level_free, kept, ser, runs, keep_terms=correction.ActionTerms.of(base.cfg))
    with pytest.raises(ValueError, match="needs parameters that have one"):
        correction.with_action_linear(more, params, ser, runs, keep_terms=correction.ActionTerms.of(base.cfg))


def _confounded_runs(n_runs: int, seed: int = 1) -> Trajectories:
    """Runs of a reactive controller ("ramp") that always doubles the LR in the runs whose val falls
    fastest by themselves (drift -0.03 per step against -0.005, noise 0.02) and holds it in the
    others; the action itself does nothing. Pooled with random walks, the drift poses as an action
    effect."""
    rng = np.random.default_rng(seed)
    n, up, hold = SPEC.n_decisions, SPEC.actions.index(2.0), SPEC.noop_action
    obs = np.zeros((n_runs, n + 1, SPEC.n_obs), np.float32)
    actions = np.zeros((n_runs, n), np.int32)
    for r in range(n_runs):
        fast = r % 2 == 0
        actions[r] = up if fast else hold
        lr, val = 1.0, 1.0
        obs[r, 0] = SPEC.observation(0, 1.0, 4.0, None, 4.0)[0]
        for k in range(n):
            lr = min(SPEC.next_lr_rel(lr, int(actions[r, k])), 90.0)
            val = max(val - (0.03 if fast else 0.005) + rng.normal(0, 0.02), 0.05)  # noisy: the last change hides the drift
            obs[r, k + 1] = SPEC.observation(k + 1, lr, 4.0 * val, 4.0 * val, 4.0)[0]
    metas = [{"task": "t", "group": 100 + r, "job_seed": 0, "family": "test", "controller": {"name": "ramp"}} for r in range(n_runs)]
    return Trajectories(SPEC, obs, actions, np.full(n_runs, n + 1, np.int32), np.zeros(n_runs, bool), metas,
                        [f"ramp{r}.parquet" for r in range(n_runs)], np.full((n_runs, n + 1), np.nan))


def test_within_runs_removes_each_runs_mean():
    run = np.array([3, 3, 7, 7, 7])
    M = np.array([[1.0, 2.0], [3.0, 2.0], [0.0, 1.0], [3.0, 1.0], [6.0, 4.0]])
    np.testing.assert_allclose(correction.within_runs(run, M), [[-1, 0], [1, 0], [-3, -1], [0, -1], [3, 2]])
    np.testing.assert_allclose(correction.within_runs(run, M[:, 0]), [-1, 1, -3, 0, 3])


def test_exogenous_fit_ignores_reactive_runs_whose_actions_follow_their_dynamics():
    model, ser, params = _tiny(action_response="noop")
    params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
    walks = _linear_runs(64, effect=0.004)  # the model knows nothing: its sampled digits add noise to the residuals
    ramps = _confounded_runs(24)
    runs = Trajectories(SPEC, *(np.concatenate([getattr(walks, f), getattr(ramps, f)]) for f in ("obs", "actions", "length", "terminated")),
                        walks.meta + ramps.meta, walks.files + ramps.files, np.concatenate([walks.val_loss, ramps.val_loss]))
    o = walks.obs[:, 1:-1].reshape(-1, SPEC.n_obs)
    a = LOG2[walks.actions[:, 1:].reshape(-1)]

    def slope(lin):
        return np.polyfit(a, correction.action_features(SPEC, a, o, np.zeros(len(a))) @ lin["w"], 1)[0]

    exo = correction.with_action_linear(model, params, ser, runs, "exogenous")["action_linear"]
    assert slope(exo) == pytest.approx(0.004, rel=0.15)
    assert slope(correction.fit(model, params, ser, runs)) < 0.002  # pooled: the fast runs' drift counts as the doubling's
    with pytest.raises(ValueError, match="random_walk or fork runs"):
        correction.fit(model, params, ser, _confounded_runs(4), rows_from="exogenous")
    with pytest.raises(ValueError, match="action_fit must be one of all, exogenous, paired"):
        WorldModelConfig(action_fit="walks")


def test_level_terms_correct_every_step_centred_on_the_training_decisions():
    model, ser, params = _tiny(action_response="noop", action_level=True)
    params = {**params, "digit_head": jax.tree.map(jnp.zeros_like, params["digit_head"])}
    runs = _linear_runs(24, effect=0.004)
    lin = correction.fit(model, params, ser, runs)
    assert lin["w"].shape == (correction.N_FEATURES + 6,)
    o = runs.obs[:, 1:-1].reshape(-1, SPEC.n_obs)
    a = LOG2[runs.actions[:, 1:].reshape(-1)]
    feats = correction.action_features(SPEC, a, o, np.zeros(len(a)), level=True)
    assert feats.shape == (len(a), correction.N_FEATURES + 6)
    noop_delta = feats[:, correction.N_FEATURES :] @ lin["w"][correction.N_FEATURES :] + lin["b"]
    assert abs(noop_delta.mean()) < 1e-6  # psi is centred: on average the level terms shift nothing
    assert np.polyfit(a, feats @ lin["w"] + lin["b"], 1)[0] == pytest.approx(0.004, rel=0.2)
    out = correction.with_action_linear(model, params, ser, runs)
    assert out["action_linear"]["w"].shape == (correction.N_FEATURES + 6,)


def test_simulator_adds_the_correction_and_the_model_reads_it(traj):
    model, ser, params = _tiny(action_response="residual")
    env = SimEnv(model, ser)
    w = np.zeros(correction.N_FEATURES, np.float32)
    w[0] = 0.01  # val moves by 0.01 per doubling of the LR, whatever the state
    ep0 = env.params(params, traj)
    ep_zero = env.params({**params, "action_linear": {"w": np.zeros_like(w), "b": np.float32(0)}}, traj)
    ep_w = env.params({**params, "action_linear": {"w": w, "b": np.float32(0)}}, traj)
    step = jax.jit(env.step)
    vi = SPEC.index("val")
    for action in range(SPEC.n_actions):
        _, st = env.reset_to(ep0, 2, 4, 5)
        key = jax.random.key(action)
        o0, s0, *_, i0 = step(key, st, action, ep0)
        oz, sz, *_, iz = step(key, st, action, ep_zero)
        ow, sw, *_, iw = step(key, st, action, ep_w)
        np.testing.assert_allclose(np.asarray(oz), np.asarray(o0), atol=1e-6)  # zero weights: the model alone
        assert (np.asarray(sz.tokens) == np.asarray(s0.tokens)).all()
        diverged = bool(i0["diverged"])
        shift = 0.0 if diverged else 0.01 * LOG2[action]
        assert float(iw["mean_val"] - i0["mean_val"]) == pytest.approx(shift, abs=1e-6)
        assert float(ow[vi] - o0[vi]) == pytest.approx(shift, abs=1e-5)
        # the tokens carry the corrected val, and the cache is the one a full forward pass over them gives
        assert np.asarray(ser.decode_obs(sw.tokens[st.pos + 1 : st.pos + 1 + ser.obs_len]))[vi] == pytest.approx(
            float(ow[vi]), abs=(SPEC.field("val").high - SPEC.field("val").low) / ser.n_bins)
        if not bool(sw.done):
            *_, s2, _, _, _, info2 = step(jax.random.key(99), sw, 3, ep_w)
            full, _ = model.apply({"params": params}, s2.tokens[None])
            sampled = [j for j in range(ser.obs_len) if not SPEC.fields[j // ser.digits].deterministic]
            np.testing.assert_allclose(np.asarray(info2["logits"]), np.asarray(full[0, int(sw.pos) + np.asarray(sampled)]), atol=1e-5)


def test_noop_response_samples_the_noop_continuation_and_writes_the_action_taken(traj):
    model, ser, params = _tiny(action_response="noop")
    alone = SimEnv(model.clone(cfg=dataclasses.replace(model.cfg, action_response="model")), ser)
    env = SimEnv(model, ser)
    ep0 = alone.params(params, traj)
    ep = env.params({**params, "action_linear": {"w": np.zeros(correction.N_FEATURES, np.float32), "b": np.float32(0)}}, traj)
    _, st = alone.reset_to(ep0, 1, 5, 5)
    noop, double = SPEC.noop_action, SPEC.actions.index(2.0)
    for i in range(3):
        key = jax.random.key(i)
        o_noop, s_noop, *_ = alone.step(key, st, noop, ep0)
        o_dbl, s_dbl, *_ = alone.step(key, st, double, ep0)
        o, s, *_ = env.step(key, st, double, ep)
        for j, f in enumerate(SPEC.fields):  # the losses of the held LR, the LR of the action taken
            want = o_dbl[j] if f.deterministic else o_noop[j]
            assert float(o[j]) == pytest.approx(float(want), abs=1e-5), f.name
        assert float(s.lr_rel) == pytest.approx(float(s_dbl.lr_rel))
        assert int(s.tokens[st.pos]) == ser.base + double  # the model reads the action taken
        assert (np.asarray(s.tokens[st.pos + 1 : st.pos + ser.step_len]) == np.asarray(ser.encode_obs(o, st.obs))).all()
    assert (np.asarray(s_noop.tokens) != np.asarray(s.tokens)).any()
    with pytest.raises(ValueError, match="action_response"):
        correction.with_action_linear(alone.model, params, ser, traj)
    with pytest.raises(ValueError, match="action_response"):
        WorldModelConfig(action_response="both")


@pytest.mark.parametrize("convex,hinge", [(True, None), (False, -10.0), (False, 10.0)])  # kink below / above every LR
def test_simulator_adds_the_convex_or_hinge_term_of_the_action_taken(traj, convex, hinge):
    model, ser, params = _tiny(action_response="residual", action_convex=convex, action_hinge=hinge)
    env = SimEnv(model, ser)
    w = np.zeros(correction.ActionTerms(convex=convex, hinge=hinge).n_phi, np.float32)
    w[0], w[-1] = 0.01, 0.02  # a and a x A^2, or a x max(0, A - hinge)
    ep = env.params({**params, "action_linear": {"w": w, "b": np.float32(0)}}, traj)
    ep0 = env.params({**params, "action_linear": {"w": np.zeros_like(w), "b": np.float32(0)}}, traj)
    _, st = env.reset_to(ep, 1, 5, 5)
    double, key = jnp.int32(SPEC.actions.index(2.0)), jax.random.key(0)
    *_, info = env.step(key, st, double, ep)
    *_, info0 = env.step(key, st, double, ep0)
    A = float(st.obs[SPEC.index("log_lr")] + ep.log_base[1])
    extra = A * A if convex else max(A - hinge, 0.0)
    if not bool(info["diverged"]):
        assert float(info["mean_val"] - info0["mean_val"]) == pytest.approx(0.01 + 0.02 * extra, abs=1e-5)


def test_ensemble_members_each_correct_and_the_spread_shows_it(traj):
    model, ser, params = _tiny(action_response="residual")
    ens = model.clone(cfg=dataclasses.replace(model.cfg, ensemble=2))
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    w = np.zeros((2, correction.N_FEATURES), np.float32)
    w[0, 0] = 0.02  # member 0 says a doubling costs 0.02, member 1 that it costs nothing
    env = SimEnv(ens, ser)
    ep = env.params({**stacked, "action_linear": {"w": w, "b": np.zeros(2, np.float32)}}, traj)
    _, st = env.reset_to(ep, 0, 3, 3, member=1)
    *_, info = env.step(jax.random.key(0), st, jnp.int32(SPEC.actions.index(2.0)), ep)
    if not bool(info["diverged"]):
        assert float(info["spread"]) == pytest.approx(0.01, abs=1e-5)  # std of (x + 0.02, x)


def test_training_with_action_linear_saves_the_weights(tmp_path):
    from conftest import synthetic_trajectories

    from lrpilot import checkpoints
    from lrpilot.worldmodel.train import train

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=20, eval_every=10, batch_size=8, base=16,
                           heldout_frac=0.3, select="nll", action_response="noop")
    res = train(synthetic_trajectories(n_runs=12), cfg, tmp_path / "wm", progress=False, log=lambda *_: None)
    ck = checkpoints.load(tmp_path / "wm", kind="worldmodel")
    assert ck.params["action_linear"]["w"].shape == (correction.N_FEATURES,) and ck.params["action_linear"]["b"].shape == ()
    np.testing.assert_allclose(ck.params["action_linear"]["w"], np.asarray(res.params["action_linear"]["w"]))
    assert WorldModelConfig.from_dict(ck.model_config).action_response == "noop"


def test_onestep_baseline_rolls_out_linear_dynamics_exactly():
    from lrpilot.worldmodel import fidelity, onestep

    runs = _linear_runs(12, effect=0.004, noise=0.0)
    final = onestep.final_val(onestep.fit(runs), runs)
    np.testing.assert_allclose(final, fidelity.final_val(runs), atol=2e-3)  # noise-free linear dynamics: the real finals
    assert fidelity.spearman(final, fidelity.final_val(runs)) > 0.95
    short = dataclasses.replace(runs, length=np.array([2] * 12, np.int32))
    np.testing.assert_allclose(onestep.final_val(onestep.fit(runs), short), short.obs[:, 1, SPEC.index("val")], atol=2e-3)
    with pytest.raises(ValueError, match="training decisions"):
        onestep.fit(dataclasses.replace(runs.subset([0]), length=np.array([1], np.int32)))


def test_fit_action_refuses_a_missing_checkpoint_before_reading_data(tmp_path, capsys):
    from lrpilot.app.cli import main

    out = tmp_path / "wm_fit"
    assert main(["worldmodel", "fit-action", "--ckpt", str(tmp_path / "nope"), "--data", str(tmp_path / "no_data"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and str(tmp_path / "nope") in err and not out.exists()
    with pytest.raises(SystemExit):
        main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--response", "both", "--out", str(out)])
    # a kink that moves needs a kink; --keep needs a term of the same response to keep: refused before any data is read
    assert main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--hinge-params", "-0.2", "--data", str(tmp_path / "no_data"),
                 "--out", str(out)]) == 2
    assert "action_hinge_params" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit, match="no linear action term with action_response 'residual'"):
        main(["worldmodel", "fit-action", "--ckpt", "pretrained", "--keep", "--response", "residual", "--hinge", "-1",
              "--data", str(tmp_path / "no_data"), "--out", str(out)])

