"""Policy: GAE, masked normalisation, initialisation from the world model, PPO on a known
environment, deployment behaviour (NaN/missing metrics, LR range, spec mismatch)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot import checkpoints
from lrpilot.controllers import Observation, RunInfo
from lrpilot.policy.network import PolicyConfig, build, init_params
from lrpilot.policy.ppo import TrainState, gae, make_iteration, make_train, masked_normalize
from lrpilot.spec import DEFAULT_SPEC, SpecMismatch
from lrpilot.worldmodel.env import SimEnv, SimState

SPEC = DEFAULT_SPEC


def test_gae_separates_termination_and_truncation():
    r = jnp.array([[1.0, 1.0, 0.0]])
    v = jnp.array([[0.5, 0.5, 0.0]])
    active = jnp.array([[True, True, False]])
    g, lam = 1.0, 1.0
    term = jnp.array([[False, True, False]])
    adv, ret = gae(r, v, term, jnp.zeros_like(term), active, g, lam)
    np.testing.assert_allclose(np.asarray(adv), [[1.5, 0.5, 0.0]])  # no bootstrap after termination
    trunc = term
    adv2, _ = gae(r, v, jnp.zeros_like(term), trunc, active, g, lam, truncation_value=jnp.array([[0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(adv2), [[3.5, 2.5, 0.0]])  # truncation bootstraps with its value
    adv3, _ = gae(jnp.ones((1, 3)), jnp.zeros((1, 3)), jnp.zeros((1, 3), bool), jnp.zeros((1, 3), bool),
                  jnp.ones((1, 3), bool), 1.0, 0.5)
    np.testing.assert_allclose(np.asarray(adv3), [[1 + 0.5 * 1.5, 1.5, 1.0]])


def test_masked_normalize_ignores_padding():
    x = jnp.array([1.0, 2.0, 3.0, 100.0])
    m = jnp.array([True, True, True, False])
    y = masked_normalize(x, m)
    assert float(y[3]) == 0.0
    np.testing.assert_allclose(np.asarray(y[:3]), np.asarray((x[:3] - 2.0) / jnp.sqrt(2 / 3 + 1e-8)), rtol=1e-5)


def test_init_from_world_model_by_subtree(tiny_wm):
    cfg, model, ser, wm_params = tiny_wm
    net = build(cfg, SPEC)
    p = init_params(net, jax.random.key(1), wm_params)
    for a, b in zip(jax.tree.leaves(p["trunk"]), jax.tree.leaves(wm_params["trunk"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(p["action_head"]["kernel"]).sum()) == 0.0  # fresh heads: a uniform policy at first
    scratch = init_params(net, jax.random.key(1))
    assert not np.allclose(np.asarray(scratch["trunk"]["wte"]["embedding"]), np.asarray(wm_params["trunk"]["wte"]["embedding"]))
    bigger = dataclasses.replace(cfg, d_model=32)
    with pytest.raises(ValueError, match="do not fit"):
        init_params(build(bigger, SPEC), jax.random.key(0), wm_params)


class RewardedActionEnv(SimEnv):
    """A known environment with the simulator's shape: the val loss drops by 0.02 per step when
    the action is `good`, else stays; episodes run to the budget. Optimal return 0.02 per step."""

    good = 5

    def step(self, key, state: SimState, action, params):
        spec, ser = self.spec, self.ser
        action = jnp.asarray(action, jnp.int32)
        k1 = state.k + 1
        obs = state.obs
        obs = obs.at[spec.index("progress")].set(k1 / spec.n_decisions)
        obs = obs.at[spec.index("val")].add(jnp.where(action == self.good, -0.02, 0.0))
        syms = jnp.concatenate([(ser.base + action)[None], ser.encode_obs(obs)])
        tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, syms, state.pos, 0)
        trunc = k1 >= spec.n_decisions
        reward = jnp.where(state.done, 0.0, spec.reward(state.obs, obs))
        keep = lambda old, new: jnp.where(state.done, old, new)
        new = SimState(tokens=keep(state.tokens, tokens), cache=state.cache, pos=keep(state.pos, state.pos + ser.step_len),
                       k=keep(state.k, k1), obs=keep(state.obs, obs), lr_rel=state.lr_rel, done=state.done | trunc,
                       log_base_lr=state.log_base_lr, start=state.start, member=state.member,
                       log_params=state.log_params)
        return new.obs, new, reward, jnp.array(False), trunc & ~state.done, {}


def test_ppo_learns_a_known_environment(tiny_wm, traj):
    cfg, model, ser, wm_params = tiny_wm
    env = RewardedActionEnv(model, ser)
    ep = env.params(wm_params, traj, max_prefix=1)  # every episode has all 20 decisions
    net = build(cfg, SPEC)
    pcfg = PolicyConfig(n_envs=32, n_minibatches=2, update_epochs=4, learning_rate=3e-3, ent_coef=0.0, reward_scale=10.0)
    iteration, tx = make_iteration(net, env, pcfg)
    params = init_params(net, jax.random.key(0), wm_params)
    ts = TrainState(params, tx.init(params), jnp.int32(0))
    step = jax.jit(iteration)
    returns = []
    for i in range(25):
        ts, m = step(ts, ep, jax.random.key(i))
        returns.append(float(m["return_mean"]))
    optimal = 0.02 * SPEC.n_decisions
    assert returns[0] < 0.5 * optimal  # a uniform policy picks the good action 1/7 of the time
    assert np.mean(returns[-3:]) > 0.8 * optimal, returns


def test_train_is_one_function_vmappable_over_seeds(tiny_wm, traj):
    cfg, model, ser, wm_params = tiny_wm
    env = SimEnv(model, ser)
    ep = env.params(wm_params, traj)
    net = build(cfg, SPEC)
    pcfg = PolicyConfig(n_envs=4, n_minibatches=2, update_epochs=1, iterations=2)
    train = make_train(net, env, pcfg, ep, lambda k: init_params(net, k, wm_params))
    ts, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 3))
    assert metrics["return_mean"].shape == (3, 2)
    assert ts.iteration.tolist() == [2, 2, 2]


# ---- deployment ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_ckpt(tmp_path_factory, tiny_wm):
    cfg, model, ser, wm_params = tiny_wm
    net = build(cfg, SPEC)
    params = init_params(net, jax.random.key(0), wm_params)
    # a policy that always doubles the LR: the range clamp must hold
    params["action_head"]["bias"] = jnp.zeros(SPEC.n_actions).at[SPEC.actions.index(2.0)].set(10.0)
    path = tmp_path_factory.mktemp("pol") / "policy"
    checkpoints.save(path, kind="policy", params=params, spec=SPEC,
                     model_config={"trunk": cfg.to_dict(), "policy": PolicyConfig(support_mask=True).to_dict()})
    return path


def _run(ctrl, vals, max_iters=200):
    ctrl.reset(RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=max_iters, eval_interval=50,
                       n_params=808_960, tokens_per_update=768))  # the small scale's run context
    pts = ctrl.observe_iters()
    lrs = []
    for k, it in enumerate(pts):
        v = vals(k)
        ctrl.observe(Observation(it, train_loss=None if k == 0 else v, val_loss=v))
        lrs.append(ctrl.lr(min(it, max_iters - 1)))
    return lrs


def test_deployed_policy_is_deterministic_and_clamped(policy_ckpt):
    from lrpilot import policy

    ctrl = policy.load(policy_ckpt)
    lrs = _run(ctrl, lambda k: 4.0 - 0.1 * k)
    assert lrs == _run(policy.load(policy_ckpt), lambda k: 4.0 - 0.1 * k)  # greedy: same every time
    assert max(lrs) <= SPEC.lr_range[1] * 1e-3 * (1 + 1e-9)
    assert 4e-3 < max(lrs) <= PolicyConfig().lr_max_rel * 1e-3 * (1 + 1e-6)  # doubling stops at the LR support
    assert all(math.isfinite(x) and x > 0 for x in lrs)
    sampled = policy.load(policy_ckpt, greedy=False, seed=3)
    assert len(_run(sampled, lambda k: 4.0 - 0.1 * k)) == SPEC.n_decisions + 1


def test_deployed_policy_on_nan_and_missing_metrics(policy_ckpt):
    from lrpilot import policy

    ctrl = policy.load(policy_ckpt)
    ctrl.reset(RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=200, eval_interval=50))
    pts = ctrl.observe_iters()
    ctrl.observe(Observation(pts[0], val_loss=4.0))
    ctrl.observe(Observation(pts[1], train_loss=None, val_loss=None))  # missing: the last value is repeated
    assert not ctrl.stop and ctrl.rows[-1]["val_loss"] == 4.0
    lr_before = ctrl.lr(pts[2])
    ctrl.observe(Observation(pts[2], train_loss=float("nan"), val_loss=float("nan")))  # divergence
    assert ctrl.stop and ctrl.terminated
    assert ctrl.lr(pts[2]) == lr_before and math.isfinite(lr_before)  # the LR is held, never NaN
    ctrl.observe(Observation(pts[3], val_loss=3.0))  # ignored after the end
    assert len(ctrl.rows) == 3


def test_policy_checkpoint_with_another_spec_is_refused(policy_ckpt):
    from lrpilot import policy

    other = dataclasses.replace(SPEC, n_decisions=10)
    with pytest.raises(SpecMismatch, match="n_decisions"):
        policy.load(policy_ckpt, spec=other)
    with pytest.raises(checkpoints.CheckpointError, match="expected worldmodel"):
        checkpoints.load(policy_ckpt, kind="worldmodel")


# ---- the report in the simulator, and the shipped checkpoints -------------------------------------
def test_sim_report_pairs_the_policy_with_the_best_baselines(tmp_path, tiny_wm, traj, policy_ckpt):
    from lrpilot.policy.train import evaluate, format_report

    cfg, model, ser, wm_params = tiny_wm
    wm_path = tmp_path / "wm"
    checkpoints.save(wm_path, kind="worldmodel", params=wm_params, spec=SPEC, model_config=cfg.to_dict())
    rep = evaluate(policy_ckpt, wm_path, traj, n_envs=8)
    r = rep["returns"]
    assert set(r) == {"policy (greedy)"} | {f"{s} x{c:g}" for s in ("constant", "cosine") for c in (0.3, 1, 3, 10)}
    best = rep["best_constant"]
    assert r[best]["mean"] == max(v["mean"] for k, v in r.items() if k.startswith("constant"))
    # paired over the same starts: the mean difference is the difference of the means
    d = rep["policy_minus_best"][best]
    assert d["mean"] == pytest.approx(r["policy (greedy)"]["mean"] - r[best]["mean"], abs=1e-6)
    assert 0.0 <= d["win_rate"] <= 1.0 and d["stderr"] >= 0.0
    assert "paired" in format_report(rep)
    # the greedy policy's LR after each decision: quartiles over episodes, on the spec's LR grid and in its range
    lr = rep["policy_lr_rel"]
    assert all(len(lr[k]) == SPEC.n_decisions for k in ("q25", "median", "q75"))
    assert np.all(np.array(lr["q25"]) <= np.array(lr["median"])) and np.all(np.array(lr["median"]) <= np.array(lr["q75"]))
    assert SPEC.lr_range[0] <= min(lr["q25"]) and max(lr["q75"]) <= SPEC.lr_range[1]
    assert "policy LR / base LR after each decision" in format_report(rep)


def test_eval_by_lr_mult_starts_as_deployed_from_the_runs_of_each_regime(tmp_path, tiny_wm, traj, policy_ckpt, capsys):
    from lrpilot.app.cli import main
    from lrpilot.policy.train import evaluate, format_report

    mults = [0.1, 0.12, 1.0, 1.5, 10.0, 30.0] * 2  # two runs per multiplier, the first six at x0.1 to x30
    runs = dataclasses.replace(traj, meta=[{**m, "base_lr_mult": x} for m, x in zip(traj.meta, mults)])
    assert list(runs.at_lr_mult(0.1)) == [0, 1, 6, 7] and list(runs.at_lr_mult(1)) == [2, 3, 8, 9]  # 1.5: 0.18 decades
    assert list(runs.at_lr_mult(10, tol_decades=0.1)) == [4, 10]
    with pytest.raises(ValueError, match=r"within 0.25 decades of 1000 x .*base_lr_mult of the 12 runs: 0.1 to 30"):
        runs.at_lr_mult(1000)
    with pytest.raises(ValueError, match="positive"):
        runs.at_lr_mult(0)
    unrecorded = dataclasses.replace(traj, meta=[{k: v for k, v in m.items() if k != "base_lr_mult"} for m in traj.meta])
    with pytest.raises(ValueError, match="none recorded"):
        unrecorded.at_lr_mult(1)

    cfg, model, ser, wm_params = tiny_wm
    wm_path = tmp_path / "wm"
    checkpoints.save(wm_path, kind="worldmodel", params=wm_params, spec=SPEC, model_config=cfg.to_dict())
    rep = evaluate(policy_ckpt, wm_path, runs, n_envs=8, lr_mults=(0.1, 1))["by_lr_mult"]
    assert list(rep) == ["0.1", "1"] and rep["0.1"]["n_runs"] == 4
    # each regime's report is the plain report over its runs' first observations (same key, same starts)
    alone = evaluate(policy_ckpt, wm_path, runs.subset([2, 3, 8, 9]), n_envs=8, max_prefix=1)
    assert rep["1"]["returns"] == alone["returns"] and rep["1"]["policy_lr_rel"] == alone["policy_lr_rel"]
    assert "the 4 runs at 0.1 x their default LR" in format_report({"by_lr_mult": rep})
    # the CLI refuses a non-positive multiplier before any data or checkpoint is looked up
    assert main(["policy", "eval", "--ckpt", str(tmp_path / "nope"), "--lr-mults", "1", "-0.1",
                 "--data", str(tmp_path / "no_data")]) == 2
    assert "--lr-mults must be positive, got -0.1" in capsys.readouterr().err


def test_ppo_starts_as_deployed_from_each_regime_equally(tmp_path, traj, capsys):
    from lrpilot.app.cli import main
    from lrpilot.policy.train import episode_starts

    mults = [0.1, 0.12, 1.0, 1.5, 10.0, 30.0] * 2  # x0.1: runs 0, 1, 6, 7; x10: runs 4, 10 (30 is 0.48 decades off)
    runs = dataclasses.replace(traj, meta=[{**m, "base_lr_mult": x} for m, x in zip(traj.meta, mults)])
    same, p = episode_starts(runs, PolicyConfig(max_prefix=4))
    assert same is runs and p == 4  # without start_lr_mults: the data's prefixes of 1..max_prefix observations
    starts, p = episode_starts(runs, PolicyConfig(max_prefix=4, start_lr_mults=(0.1, 10.0)))
    assert p == 1  # observation 1, as deployed
    assert starts.files == [runs.files[i] for i in (0, 1, 6, 7, 4, 10, 4, 10)]  # x10's two runs repeated to x0.1's four
    with pytest.raises(ValueError, match="1000 x its default LR"):
        episode_starts(runs, PolicyConfig(start_lr_mults=(1.0, 1000.0)))
    # the flag takes several floats (an empty default typed from the field's annotation); a bad one is refused
    assert main(["policy", "train", "--world-model", str(tmp_path / "nope"), "--out", str(tmp_path / "p"),
                 "--start-lr-mults", "0.1", "-1"]) == 2
    assert "--start-lr-mults must be positive LR multipliers, got (0.1, -1.0)" in capsys.readouterr().err


def test_action_mask_keeps_the_lr_in_its_support():
    from lrpilot.policy.network import action_mask

    m = lambda lr: np.asarray(action_mask(SPEC, lr, 0.01, 10.0)).tolist()
    x2, keep, half = SPEC.actions.index(2.0), SPEC.actions.index(1.0), SPEC.actions.index(0.5)
    assert all(m(1.0))
    assert not m(8.0)[x2] and m(5.0)[x2]  # 8 x 2 leaves the support; 5 x 2 = 10 is its edge
    assert m(30.0)[keep] and m(30.0)[half] and not any(m(30.0)[keep + 1 :])  # outside: never further out
    assert not m(0.012)[half] and m(0.012)[keep]
    assert np.asarray(action_mask(SPEC, jnp.ones((3, 2)), 0.01, 10.0)).shape == (3, 2, SPEC.n_actions)


def test_ppo_rollouts_respect_the_lr_support(tiny_wm, traj):
    from lrpilot.policy.ppo import make_rollout

    cfg, model, ser, wm_params = tiny_wm
    env = SimEnv(model, ser)
    net = build(cfg, SPEC)
    params = init_params(net, jax.random.key(0), wm_params)
    params["action_head"]["bias"] = jnp.zeros(SPEC.n_actions).at[SPEC.actions.index(2.0)].set(10.0)  # always double
    pcfg = PolicyConfig(n_envs=8, n_minibatches=2, lr_max_rel=4.0, support_mask=True)
    ro = make_rollout(net, env, pcfg)(params, env.params(wm_params, traj), jax.random.key(1), 8)
    assert ro.mask.shape == ro.action.shape + (SPEC.n_actions,)
    taken = jnp.take_along_axis(ro.mask, ro.action[..., None], -1)[..., 0]
    assert bool(jnp.all(taken | ~ro.active))  # a masked action is never taken
    assert bool(jnp.any(ro.active & ~ro.mask[..., SPEC.actions.index(2.0)]))  # and the mask did bind
    # off by default: the same policy doubles all the way to the spec's range
    free = make_rollout(net, env, PolicyConfig(n_envs=8, n_minibatches=2, lr_max_rel=4.0))(
        params, env.params(wm_params, traj), jax.random.key(1), 8)
    assert bool(jnp.all(free.mask)) and bool(jnp.all((free.action == SPEC.actions.index(2.0)) | ~free.active))


def test_lr_support_of_old_and_new_checkpoints():
    from lrpilot.policy.network import lr_support

    old = {k: v for k, v in PolicyConfig().to_dict().items() if k != "support_mask"}  # saved before the option
    assert lr_support({"policy": old}) == (0.01, 10.0)
    assert lr_support({"policy": PolicyConfig().to_dict()}) is None
    assert lr_support({"policy": PolicyConfig(support_mask=True, lr_max_rel=4.0).to_dict()}) == (0.01, 4.0)


def test_pessimism_and_halting_where_the_ensemble_disagrees(tiny_wm, traj):
    """MOPO: each reward is lessened by pessimism x the members' spread, nothing else changes;
    MOReL: an episode ends (terminated, marked halted) at the first step whose spread passes halt_spread."""
    from lrpilot.policy.ppo import make_rollout
    from lrpilot.worldmodel.model import WorldModel

    cfg, _, ser, wm_params = tiny_wm
    model = WorldModel(dataclasses.replace(cfg, ensemble=2), ser.vocab_size, ser.seq_len)
    other = model.init(jax.random.key(7), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    env = SimEnv(model, ser)
    ep = env.params(jax.tree.map(lambda a, b: jnp.stack([a, b]), wm_params, other), traj)
    net = build(cfg, SPEC)
    params = init_params(net, jax.random.key(0), wm_params)
    roll = lambda **kw: make_rollout(net, env, PolicyConfig(n_envs=8, n_minibatches=2, **kw))(params, ep, jax.random.key(1), 8)
    base, pess = roll(), roll(pessimism=2.0)
    assert bool(jnp.all(base.action == pess.action)) and bool(jnp.all(base.active == pess.active))
    cut = (base.reward - pess.reward) / 2.0  # the spread of each step, as the rollout reports it
    np.testing.assert_allclose(np.asarray(cut), np.asarray(jnp.where(base.active, base.spread, 0.0)), atol=1e-6)
    assert bool(jnp.all(jnp.where(base.active, cut >= 0, cut == 0))) and float(cut[base.active].mean()) > 1e-3
    assert not bool(jnp.any(base.halted))
    thr = float(jnp.median(cut[base.active]))
    over = np.asarray(base.active & (cut > thr))
    assert over.any(1).all()
    first = np.argmax(over, axis=1)  # the step each episode halts at
    halted = roll(halt_spread=thr)
    np.testing.assert_array_equal(np.asarray(halted.active.sum(1)), first + 1)
    at = lambda x: np.asarray(x)[np.arange(8), first]
    assert at(halted.halted).all() and at(halted.terminated).all() and np.asarray(halted.halted.sum(1) == 1).all()
    never = roll(halt_spread=float(cut.max()) * 2)  # no step's passes it: the same episodes as without halting
    assert bool(jnp.all(never.active == base.active)) and not bool(jnp.any(never.halted))
    with pytest.raises(ValueError, match="halt_spread"):
        PolicyConfig(halt_spread=-1.0)


def test_eval_like_a_run_to_come_starts_where_that_run_starts(tmp_path, tiny_wm, capsys):
    import json

    from conftest import synthetic_trajectories

    from lrpilot.app.cli import main
    from lrpilot.policy.train import evaluate
    from lrpilot.spec import SPEC_V2
    from lrpilot.trajectories import context_starts
    from lrpilot.worldmodel.model import build as build_wm

    cfg = tiny_wm[0]
    model, _ = build_wm(cfg, SPEC_V2)  # a spec with the run's static context
    wm_params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
    wm, pol = tmp_path / "wm", tmp_path / "pol"
    checkpoints.save(wm, kind="worldmodel", params=wm_params, spec=SPEC_V2, model_config=cfg.to_dict())
    checkpoints.save(pol, kind="policy", params=init_params(build(cfg, SPEC_V2), jax.random.key(0), wm_params),
                     spec=SPEC_V2, model_config={"trunk": cfg.to_dict(), "policy": PolicyConfig().to_dict()})
    runs = [RunInfo(base_lr=3e-3, min_lr=3e-4, warmup_iters=100, max_iters=2000, eval_interval=250, tokens_per_update=768,
                    n_params=844_672),
            RunInfo(base_lr=1e-2, min_lr=1e-3, warmup_iters=10, max_iters=500, eval_interval=50, tokens_per_update=4096,
                    n_params=10_000_000)]
    starts = context_starts(SPEC_V2, runs, ["a", "b"])
    assert list(starts.length) == [1, 1] and starts.files == ["a", "b"] and starts.meta[1]["n_params"] == 10_000_000
    np.testing.assert_allclose(starts.static[1], np.log10([1e-2, 1e7, 4096, 500]), rtol=1e-6)
    # the same two runs once they have run: their first observations are the starts' (val = train = 1)
    real = dataclasses.replace(synthetic_trajectories(2, spec=SPEC_V2), static=starts.static)
    np.testing.assert_array_equal(starts.obs[:, 0], real.obs[:, 0])
    rep = evaluate(pol, wm, {"3": starts}, n_envs=8)["by_lr_mult"]["3"]
    alone = evaluate(pol, wm, real, n_envs=8, max_prefix=1)
    assert rep["n_runs"] == 2 and rep["returns"] == alone["returns"] and rep["policy_lr_rel"] == alone["policy_lr_rel"]
    with pytest.raises(ValueError, match="2 names for 1 runs"):
        context_starts(SPEC_V2, runs[:1], ["a", "b"])

    # the CLI: a finished run's final_info.json gives the run to come, at its own LR or at each --lr-mults M
    run = tmp_path / "run"
    run.mkdir()
    (run / "final_info.json").write_text(json.dumps({"task": "t", "seed": 0, "lr_mult": 3.0, "n_params": 844_672,
                                                     "config": {"learning_rate": 1e-3, "min_lr": 1e-4}}))
    assert main(["policy", "eval", "--ckpt", str(pol), "--world-model", str(wm), "--like", str(run), "--n-envs", "8",
                 "--out", str(tmp_path / "r.json")]) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["like"] == [str(run)] and got["by_lr_mult"]["3"]["returns"] == evaluate(
        pol, wm, {"3": context_starts(SPEC_V2, runs[:1])}, n_envs=8)["by_lr_mult"]["3"]["returns"]
    assert main(["policy", "eval", "--ckpt", str(pol), "--world-model", str(wm), "--like", str(run / "final_info.json"),
                 "--lr-mults", "0.1", "10", "--n-envs", "8", "--out", str(tmp_path / "m.json")]) == 0
    assert list(json.loads((tmp_path / "m.json").read_text())["by_lr_mult"]) == ["0.1", "10"]
    # refusals name the file or the flags, before any checkpoint is looked up
    capsys.readouterr()
    assert main(["policy", "eval", "--ckpt", str(tmp_path / "nope"), "--like", str(tmp_path / "none")]) == 2
    assert f"cannot read {tmp_path / 'none'}" in capsys.readouterr().err
    (run / "final_info.json").write_text(json.dumps({"config": {"learning_rate": 1e-3}}))
    assert main(["policy", "eval", "--ckpt", str(tmp_path / "nope"), "--like", str(run)]) == 2
    assert "final_info.json with config and n_params (KeyError: 'n_params')" in capsys.readouterr().err
    assert main(["policy", "eval", "--ckpt", str(tmp_path / "nope"), "--like", str(run), "--data", "starter"]) == 2
    assert "--like and --data: give one" in capsys.readouterr().err
