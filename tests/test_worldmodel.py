"""World model: serialization, loss masking and weighting, causality, the cached simulator."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.worldmodel import forecast
from lrpilot.worldmodel.env import SimEnv, simulate
from lrpilot.worldmodel.model import init_cache, weighted_loss

SPEC = DEFAULT_SPEC


# ---- loss ---------------------------------------------------------------------------------------
def test_weighted_loss_ignores_unweighted_positions():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 10, 8)), jnp.float32)
    seq = jnp.asarray(rng.integers(0, 8, (2, 10)), jnp.int32)
    w = jnp.zeros((2, 10)).at[:, 3].set(1.0).at[:, 7].set(0.8)
    base, total = weighted_loss(logits, seq, w)
    assert float(total) == pytest.approx(2 * 1.8)
    noise = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32) * 3
    changed = logits.at[:, 4].add(noise).at[:, 0].add(noise)  # predictions of unweighted targets 5 and 1
    assert float(weighted_loss(changed, seq, w)[0]) == pytest.approx(float(base), rel=1e-6)
    changed = logits.at[:, 2].add(noise)  # prediction of weighted target 3
    assert abs(float(weighted_loss(changed, seq, w)[0]) - float(base)) > 1e-3


# ---- model -----------------------------------------------------------------------------------
def test_causality(tiny_wm):
    cfg, model, ser, params = tiny_wm
    seq = jnp.asarray(np.random.default_rng(0).integers(0, ser.vocab_size, (1, ser.seq_len)), jnp.int32)
    a, _ = model.apply({"params": params}, seq)
    b, _ = model.apply({"params": params}, seq.at[0, 50].set((seq[0, 50] + 1) % ser.vocab_size))
    d = jnp.abs(a - b).max(axis=(0, 2))
    assert float(d[:50].max()) == 0.0
    assert float(d[50:].max()) > 0.0


def test_cached_decoding_equals_full_forward(tiny_wm):
    cfg, model, ser, params = tiny_wm
    seq = jnp.asarray(np.random.default_rng(1).integers(0, ser.vocab_size, (3, ser.seq_len)), jnp.int32)
    full, _ = model.apply({"params": params}, seq)
    cache = init_cache(cfg, 3, ser.seq_len)
    outs, pos = [], 0
    for s in [7, 1, 5, 1, 1, 9] + [1] * (ser.seq_len - 24):
        o, cache = model.apply({"params": params}, seq[:, pos : pos + s], pos, cache)
        outs.append(o)
        pos += s
    assert pos == ser.seq_len
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), atol=1e-5)


def test_value_embedding_has_a_vector_per_role_and_cached_decoding_stays_exact():
    from lrpilot.spec import SPEC_V3
    from lrpilot.worldmodel.model import WorldModelConfig, build

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, value_embed=True, coding="delta")
    model, ser = build(cfg, SPEC_V3)
    roles = np.array(ser.value_roles())
    field, sig, _ = ser.symbol_roles()
    assert roles[ser.action_pos(0)] == 0 and (roles[: ser.offset] > 0).all()
    assert len(set(roles[field >= 0])) == SPEC_V3.n_obs * ser.digits  # one role per (field, digit) whatever the step
    params = model.init(jax.random.key(0), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    assert params["trunk"]["role_value"].shape == (1 + (SPEC_V3.n_obs + SPEC_V3.n_static) * ser.digits, 16)
    seq = jnp.asarray(np.random.default_rng(1).integers(0, ser.vocab_size, (2, ser.seq_len)), jnp.int32)
    full, _ = model.apply({"params": params}, seq)
    cache = init_cache(cfg, 2, ser.seq_len)
    outs, pos = [], 0
    for s in [ser.offset + 3, 5, 1] + [1] * (ser.seq_len - ser.offset - 9):
        o, cache = model.apply({"params": params}, seq[:, pos : pos + s], pos, cache)
        outs.append(o)
        pos += s
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), atol=1e-5)
    # without the value embedding the same config has no role vectors (old checkpoints load unchanged)
    plain, _ = build(dataclasses.replace(cfg, value_embed=False), SPEC_V3)
    assert "role_value" not in plain.init(jax.random.key(0), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]["trunk"]


def test_mixture_head_is_a_distribution_over_the_bins_with_a_divergence_bin():
    from lrpilot.worldmodel.model import WorldModelConfig, mixture_logits

    rng = np.random.default_rng(0)
    out = mixture_logits(jnp.asarray(rng.normal(size=(4, 3 * 3 + 1)), jnp.float32), 64)
    assert out.shape == (4, 64)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(out, -1)), 0.0, atol=1e-5)  # log-probabilities, normalised
    # one component: the expected bin follows its mean (a shift is one parameter), the top bin is sigmoid(d - 5)
    def expected_bin(mu):
        p = jnp.asarray([[0.0, mu, 0.0, -20.0]], jnp.float32)  # weight, mean (pre-sigmoid), log-scale, divergence
        probs = np.exp(np.asarray(mixture_logits(p, 64))[0])
        return float(probs[:-1] @ np.arange(63) / probs[:-1].sum()), float(probs[-1])
    (lo, top), (hi, _) = expected_bin(-1.0), expected_bin(1.0)
    assert lo < 32 < hi and top == pytest.approx(float(jax.nn.sigmoid(-25.0)), abs=1e-9)
    with pytest.raises(ValueError, match="digits=1"):
        WorldModelConfig(head="mixture", digits=2)


# ---- simulator -------------------------------------------------------------------------------
def test_env_step_matches_model_likelihood(tiny_wm, traj):
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    ep = env.params(params, traj)
    obs0, st = jax.jit(env.reset)(jax.random.key(3), ep)
    step = jax.jit(env.step)
    for i in range(4):
        obs1, st1, r, term, trunc, info = step(jax.random.key(10 + i), st, i % SPEC.n_actions, ep)
        # teacher forcing the sequence the env wrote through the full forward pass gives the logits it sampled from
        full, _ = model.apply({"params": params}, st1.tokens[None])
        sampled = [j for j in range(ser.obs_len) if not SPEC.fields[j // ser.digits].deterministic]
        positions = jnp.asarray([int(st.pos) + j for j in sampled])  # symbol j of the step sits at pos + 1 + j
        np.testing.assert_allclose(np.asarray(info["logits"]), np.asarray(full[0, positions]), atol=1e-5)
        # deterministic fields follow the dynamics exactly; the reward comes from the two observations
        lr = float(np.clip(float(st.lr_rel) * SPEC.actions[i % SPEC.n_actions], *SPEC.lr_range))
        assert float(obs1[SPEC.index("progress")]) == pytest.approx((int(st.k) + 1) / SPEC.n_decisions)
        assert float(obs1[SPEC.index("log_lr")]) == pytest.approx(np.log10(lr), abs=1e-5)
        assert float(r) == pytest.approx(float(st.obs[SPEC.index("val")] - obs1[SPEC.index("val")]), abs=1e-6)
        assert int(st1.pos) == int(st.pos) + ser.step_len
        st = st1


@pytest.mark.parametrize("coding", ["level", "delta"])
def test_mean_val_is_the_sampled_vals_mean_at_lower_variance(coding, traj):
    from lrpilot.worldmodel.model import WorldModelConfig, build

    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, base=16, coding=coding)
    model, ser = build(cfg, SPEC)
    params = model.init(jax.random.key(1), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]  # broad digit distributions
    env = SimEnv(model, ser)
    ep = env.params(params, traj, max_prefix=3)
    _, st = env.reset_to(ep, 0, 3, 3)
    keys = jax.random.split(jax.random.key(0), 4000)
    obs, _, _, term, _, info = jax.jit(jax.vmap(env.step, in_axes=(0, None, None, None)))(keys, st, jnp.int32(2), ep)
    val, mean = np.asarray(obs[:, SPEC.index("val")], np.float64), np.asarray(info["mean_val"], np.float64)
    assert np.asarray(term).any()  # random digits reach the divergence bin: it counts at the divergence ratio in both
    assert abs(mean.mean() - val.mean()) < 4 * val.std() / np.sqrt(len(val))
    assert mean.std() < 0.5 * val.std()


def test_reset_starts_from_a_real_prefix(tiny_wm, traj):
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    ep = env.params(params, traj, max_prefix=5)
    for s in range(5):
        obs, st = env.reset(jax.random.key(s), ep)
        p = int(st.start)
        assert 1 <= p <= 5 and int(st.k) == p - 1 and int(st.pos) == p * ser.step_len - 1
        match = [r for r in range(len(traj)) if np.allclose(traj.obs[r, p - 1], np.asarray(obs))]
        assert match, "the start observation comes from a real trajectory"
        r = match[0]
        np.testing.assert_array_equal(np.asarray(st.tokens[: int(st.pos)]), np.asarray(ep.seq[r, : int(st.pos)]))


def test_divergence_terminates_and_truncation_at_budget(tiny_wm, traj):
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    # a digit head that always predicts the top digit: every sampled val/train lands in the top bin
    p = jax.tree.map(lambda x: x, params)
    p["digit_head"] = {"kernel": jnp.zeros_like(p["digit_head"]["kernel"]),
                       "bias": jnp.zeros_like(p["digit_head"]["bias"]).at[-1].set(50.0)}
    ep = env.params(p, traj)
    _, st = env.reset(jax.random.key(0), ep)
    obs, st2, r, term, trunc, info = env.step(jax.random.key(1), st, 3, ep)
    assert bool(term) and not bool(trunc) and bool(st2.done)
    assert float(obs[SPEC.index("val")]) == SPEC.divergence_ratio
    assert float(r) == pytest.approx(float(st.obs[SPEC.index("val")]) - SPEC.divergence_ratio, abs=1e-6)
    # frozen afterwards
    obs3, st3, r3, term3, trunc3, _ = env.step(jax.random.key(2), st2, 3, ep)
    assert float(r3) == 0.0 and not bool(term3) and int(st3.k) == int(st2.k)
    # budget: with the normal model an episode is truncated at k = n (never terminated by it)
    ep = env.params(params, traj)
    r, term, trunc, was_done, final = simulate(env, ep, jax.random.key(5), lambda key, st: jnp.int32(3), 8)
    ended = np.asarray(term | trunc)
    assert np.all(ended.sum(1) == 1)
    assert np.all(np.asarray(final.k)[np.asarray(trunc).any(1)] == SPEC.n_decisions)


def test_env_jits_and_vmaps(tiny_wm, traj):
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    ep = env.params(params, traj)
    keys = jax.random.split(jax.random.key(0), 64)
    obs, st = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, ep)
    out = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(keys, st, jnp.arange(64) % SPEC.n_actions, ep)
    assert out[0].shape == (64, SPEC.n_obs) and out[2].shape == (64,)


# ---- trainer and forecasting -------------------------------------------------------------------
def test_training_lowers_heldout_loss_and_resumes(tmp_path):
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import split_runs, train

    traj = synthetic_trajectories(n_runs=40, noise=0.0)  # deterministic dynamics: learnable from 30 runs

    tr, ho = split_runs(traj, 0.3)
    assert set(tr).isdisjoint(ho) and len(tr) + len(ho) == len(traj)
    groups = lambda idx: {traj.meta[i]["group"] for i in idx}
    assert groups(tr).isdisjoint(groups(ho)), "runs of one group stay on one side"
    cfg = WorldModelConfig(n_layer=1, d_model=32, n_head=2, dropout=0.0, steps=60, eval_every=20, batch_size=16,
                           learning_rate=3e-3, warmup=5, heldout_frac=0.3, base=16, digits=2, select="nll")
    res = train(traj, cfg, tmp_path / "wm", progress=False, log=lambda *_: None)
    assert res.log[0]["step"] == 0
    assert res.best_heldout < res.log[0]["heldout_loss"] - 0.3, res.log
    longer = dataclasses.replace(cfg, steps=80)
    logs = []
    res2 = train(traj, longer, tmp_path / "wm", progress=False, log=logs.append)
    assert any("resuming" in line and "step 60" in line for line in logs)
    assert [h["step"] for h in res2.log] == [0, 20, 40, 60, 80]
    with pytest.raises(ValueError, match=r"cannot resume.*training\.own_draws: 'default' in the state, 0\.5 now"):
        train(traj, dataclasses.replace(longer, steps=100, own_draws=0.5), tmp_path / "wm", progress=False, log=lambda *_: None)


def test_warm_start_continues_from_the_given_parameters():
    """init_params (SimPLe's continued training): step 0's held-out loss is the given model's, not a
    fresh one's; an ensemble's stacked parameters give each member its own; another architecture is refused."""
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import train, warm_params

    traj = synthetic_trajectories(n_runs=24, noise=0.0)
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=40, eval_every=20, batch_size=8,
                           learning_rate=3e-3, warmup=5, heldout_frac=0.3, base=16, digits=2, select="nll")
    quiet = dict(progress=False, log=lambda *_: None)
    first = train(traj, cfg, None, **quiet)
    assert first.best_heldout < first.log[0]["heldout_loss"] - 0.3
    warm = train(traj, dataclasses.replace(cfg, steps=20), None, init_params=first.params, **quiet)
    assert warm.log[0]["heldout_loss"] == pytest.approx(first.best_heldout, abs=1e-4)
    stacked = jax.tree.map(lambda a: np.stack([np.asarray(a), np.asarray(a) + 1.0]), first.params)
    got = warm_params(first.params, {**stacked, "action_linear": {"w": np.zeros(3)}}, member=1)
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a) + 1.0)
    wider = train(traj, dataclasses.replace(cfg, d_model=32, steps=1), None, **quiet)
    with pytest.raises(ValueError, match="init_params: .* has shape"):
        warm_params(first.params, wider.params)
    with pytest.raises(ValueError, match="init_params: the parameters' structure"):
        warm_params(first.params, {"other": np.zeros(2)})


def test_history_mask_still_learns_and_changes_what_is_learned(tmp_path):
    """With history_mask the model still learns (it predicts every loss digit from a history with
    holes), and what it learns differs from the unmasked model's."""
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import train

    traj = synthetic_trajectories(n_runs=24, noise=0.0)
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=40, eval_every=20, batch_size=8,
                           learning_rate=3e-3, warmup=5, heldout_frac=0.3, base=16, digits=2, select="nll")
    plain = train(traj, cfg, None, progress=False, log=lambda *_: None)
    masked = train(traj, dataclasses.replace(cfg, history_mask=0.5), None, progress=False, log=lambda *_: None)
    assert masked.best_heldout < masked.log[0]["heldout_loss"] - 0.3
    assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(masked.params)[0])
    with pytest.raises(ValueError, match="history_mask"):
        WorldModelConfig(history_mask=1.0)


def test_simple_forecasters():
    lin = np.array([4.0, 3.8, 3.6, 3.4, 3.2])
    assert forecast.linear(lin, 2) == pytest.approx(2.8)
    assert forecast.last_value(lin, 3) == 3.2
    k = np.arange(0, 8, dtype=float)
    pl = 1.0 + 2.0 * np.maximum(k, 1) ** -0.5
    assert forecast.power_law(pl, 3) == pytest.approx(1.0 + 2.0 * 10 ** -0.5, rel=0.02)


# ---- fidelity --------------------------------------------------------------------------------
def test_spearman_and_ranks():
    from lrpilot.worldmodel.fidelity import rank, spearman

    np.testing.assert_array_equal(rank(np.array([3.0, 1.0, 2.0, 2.0])), [3.0, 0.0, 1.5, 1.5])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    from lrpilot.worldmodel.fidelity import within_group

    s = within_group(np.array([1.0, 2, 3, 3, 2, 1, 5, 5, 5]), np.arange(9.0), [np.arange(3), np.arange(3, 6), np.arange(6, 9)])
    assert s == {"mean": 0.0, "stderr": 1.0, "n": 2}  # +1 and -1; a group with no ranking (constant score) left out


def test_real_action_effect_recovers_a_known_slope():
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.responses import action_rows, fe_slope

    traj = synthetic_trajectories(n_runs=30, seed=3, noise=0.0)
    for m in traj.meta:
        m["controller"] = {"name": "random_walk"}
    rows, x, y = action_rows(traj)
    assert len(rows) == 30 * 10 and set(np.round(x, 3)) <= set(np.round(np.log2(SPEC.actions), 3))
    slope, se = fe_slope(np.array([r for r, _ in rows]), x, y)
    assert slope < 0 and se < abs(slope) / 3  # a higher LR lowers the next val in these curves: halving costs


def test_fidelity_section_has_every_field(tiny_wm):
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel import fidelity

    cfg, model, ser, params = tiny_wm
    traj = synthetic_trajectories(n_runs=12, seed=1)
    for i, m in enumerate(traj.meta):
        m["group"] = i // 4  # 3 groups of 4
        m["controller"] = {"name": "random_walk"}
    out, details = fidelity.evaluate(model, params, ser, traj, traj, n_samples=2, log=lambda s: None)
    h = out["heldout"]
    assert h["n_groups"] == 3 and h["n_runs"] == 12 and h["samples"] == 2
    for k in ("within_group_spearman", "regression_spearman", "onestep_spearman"):
        assert -1 <= h[k]["mean"] <= 1 and h[k]["n"] == 3
    assert h["final_val_mae"] > 0 and h["final_val_mae_train_mean"] > 0 and h["onestep_final_val_mae"] >= 0
    assert {"real", "real_stderr", "sim", "ratio", "real_ci95", "ratio_ci95"} <= set(h["action_effect"]) and h["action_effect"]["n_rows"] == 120
    assert set(h["high_lr_cost"]) == {"real", "sim", "ratio", "n_groups", "real_stderr", "sim_stderr", "ratio_ci95"}
    assert h["fork_effect"]["n_rows"] == 0 and h["fork_effect"]["ratio"] is None  # no forked group here
    assert "spread" not in h and h["action_effect"]["linear_ratio"] is not None  # one model: no spread to judge
    paired = h["action_effect"]["paired"]
    assert paired["n_rows"] == 120
    assert paired["per_doubling"] == pytest.approx((paired["doubling"] - paired["halving"]) / 2, abs=1e-6)
    assert details["sim"].shape == (12,) and np.all((details["sim"] > 0) & (details["sim"] <= 1.5))
    env = fidelity.SimEnv(model, ser)  # a script simulating with eval_keys(seed)[0] reproduces the section's draws
    again = fidelity.sim_final(env, env.params(params, traj, max_prefix=1), traj, 2, fidelity.eval_keys(0)[0])
    np.testing.assert_allclose(np.nanmedian(again, 1), details["sim"], rtol=0, atol=1e-6)


def test_paired_walk_response_forces_each_action_from_the_same_prefix(tiny_wm):
    """The simulator's own response inside walks: each row's real prefix, then halving, the no-op or
    doubling, whatever the run did; the caller's runs are left as they were."""
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel import responses

    cfg, model, ser, params = tiny_wm
    traj = synthetic_trajectories(n_runs=4, seed=3)
    rows = [(r, k) for r in range(4) for k in (10, 13)]
    env = SimEnv(model, ser)
    prm = env.params(params, traj, 1)
    before = traj.actions.copy()
    out = responses.paired_walk_response(env, prm, traj, rows, 2, jax.random.key(0))
    assert np.array_equal(traj.actions, before) and out["n_rows"] == 8

    def next_val(factor):
        forced = traj.actions.copy()
        forced[[r for r, _ in rows], [k for _, k in rows]] = list(SPEC.actions).index(factor)
        return responses.sim_next(env, prm, dataclasses.replace(traj, actions=forced), rows, 2, jax.random.key(0))

    noop = next_val(1.0)
    assert out["doubling"] == pytest.approx(float(np.mean(next_val(2.0) - noop)), abs=1e-6)
    assert out["halving"] == pytest.approx(float(np.mean(next_val(0.5) - noop)), abs=1e-6)
    assert responses.paired_walk_response(env, prm, traj, [], 2, jax.random.key(0)) is None


def test_fork_effect_pairs_each_branch_with_the_noop_branch(tiny_wm):
    """Branches of a forked group that share the history up to the fork: the real effect is the
    difference of their next vals; a world model that ignores actions has a simulated slope ~0."""
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel import fidelity, responses
    from lrpilot.worldmodel.env import SimEnv

    cfg, model, ser, params = tiny_wm
    traj = synthetic_trajectories(n_runs=14, seed=2)
    vi, at = SPEC.index("val"), 10
    for i, m in enumerate(traj.meta):
        g, a = divmod(i, 7)
        m["group"], m["controller"] = g, {"name": "fork", "at": at, "action": a}
        traj.obs[i, : at + 1] = traj.obs[7 * g, : at + 1]
        traj.actions[i, :at], traj.actions[i, at] = traj.actions[7 * g, :at], a
        traj.obs[i, at + 1, vi] = traj.obs[7 * g, at, vi] - 0.01 * np.log2(SPEC.actions[a])  # doubling: -0.01
    rows = responses.fork_rows(traj)
    assert fidelity.groups(traj) == []  # forked groups are judged by fork_effect, not ranked from prefix 1
    traj.meta[0]["controller"] = {"name": "random_walk"}
    assert fidelity.groups(traj, min_size=1)[0].tolist() == [0]
    traj.meta[0]["controller"] = {"name": "fork", "at": at, "action": 0}
    assert len(rows) == 12 and all(traj.meta[o]["controller"]["action"] == SPEC.noop_action for *_, o in rows)
    out = responses.fork_effect(SimEnv(model, ser), SimEnv(model, ser).params(params, traj, 1), traj, 4, jax.random.key(0))
    assert out["real"] == pytest.approx(-0.01, abs=1e-5) and out["n_groups"] == 2
    assert abs(out["sim"]) < 0.05 and out["ratio"] == pytest.approx(out["sim"] / out["real"])


def test_checkpoint_selection_on_fidelity_uses_validation_groups_only(tmp_path):
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import heldout_runs, split_runs, train, training_runs

    traj = synthetic_trajectories(n_runs=60, noise=0.0)
    for i, m in enumerate(traj.meta):
        m["group"] = i // 4  # 15 groups of 4
    tr, va, ho = split_runs(traj, 0.2, 0, 0.2)
    assert len(set(tr) | set(va) | set(ho)) == 60 and not (set(tr) & set(va)) and not (set(va) & set(ho))
    assert list(ho) == list(split_runs(traj, 0.2, 0)[1])  # the held-out groups do not depend on val_frac
    cfg = WorldModelConfig(n_layer=1, d_model=32, n_head=2, dropout=0.0, steps=40, eval_every=20, batch_size=16,
                           learning_rate=3e-3, warmup=5, heldout_frac=0.2, val_frac=0.2, base=16, digits=2,
                           select_samples=2, select_after=20)
    assert list(training_runs(traj, cfg)) == list(tr) and list(heldout_runs(traj, cfg)) == list(ho)
    res = train(traj, cfg, tmp_path / "wm", progress=False, log=lambda *_: None)
    assert all("val_spearman" in h for h in res.log) and res.n_heldout == len(ho)
    from lrpilot import checkpoints

    meta = checkpoints.load(tmp_path / "wm").meta
    assert meta["selected_on"] == "fidelity" and meta["n_val_runs"] == len(va)
    assert meta["best_step"] >= 20  # the untrained state is never selected (select_after)
    assert meta["best_val_spearman"] == max(h["val_spearman"] for h in res.log if h["step"] >= 20)
    with pytest.raises(ValueError, match="val_frac"):
        WorldModelConfig(val_frac=0.0)
    assert WorldModelConfig.from_dict({"n_layer": 3}).select == "nll"  # a checkpoint from before selection by fidelity
