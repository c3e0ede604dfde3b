"""World-model ensembles: the simulator's member sampling and spread, forecasts and fidelity at one
model's cost, training members (bootstraps or seeds only), one per process or in one go."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.worldmodel import forecast
from lrpilot.worldmodel.env import SimEnv
from lrpilot.worldmodel.model import WorldModel

SPEC = DEFAULT_SPEC


def test_ensemble_simulator_samples_a_member_and_reports_spread(tiny_wm, traj):
    cfg, _, ser, params = tiny_wm
    ens_cfg = dataclasses.replace(cfg, ensemble=2)
    model = WorldModel(ens_cfg, ser.vocab_size, ser.seq_len)
    other = model.init(jax.random.key(7), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    env = SimEnv(model, ser)
    same = env.params(jax.tree.map(lambda x: jnp.stack([x, x]), params), traj)
    differ = env.params(jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other), traj)
    keys = jax.random.split(jax.random.key(0), 16)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, None, None)))
    for ep, positive in ((same, False), (differ, True)):
        _, st = jax.vmap(env.reset, in_axes=(0, None))(keys, ep)
        assert set(np.asarray(st.member).tolist()) <= {0, 1}
        obs, st2, r, *_, info = step(keys, st, jnp.int32(3), ep)
        assert obs.shape == (16, SPEC.n_obs) and info["spread"].shape == (16,)
        assert (np.asarray(info["spread"]) > 1e-4).all() == positive and (np.asarray(info["spread"]) >= 0).all()
    # a one-model simulator equals member 0 of an ensemble of two copies (same key, same samples)
    one = SimEnv(WorldModel(cfg, ser.vocab_size, ser.seq_len), ser)
    p1 = one.params(params, traj)
    _, s1 = one.reset_to(p1, 0, 2, 5)
    _, s2 = env.reset_to(same, 0, 2, 5, member=0)
    o1, *_ = one.step(jax.random.key(3), s1, jnp.int32(5), p1)
    o2, *_ = env.step(jax.random.key(3), s2, jnp.int32(5), same)
    np.testing.assert_allclose(np.asarray(o1), np.asarray(o2), rtol=1e-5)


def test_ensemble_forecasts_split_samples_over_members_at_one_models_cost(tiny_wm, traj):
    """Forecasts and fidelity of an ensemble: sample s comes from member s % K, each member simulating
    its share alone (what each member gives alone, with its own key); the NLL is the mixture's."""
    from lrpilot.worldmodel.env import per_member

    cfg, _, ser, params = tiny_wm
    ens = WorldModel(dataclasses.replace(cfg, ensemble=2), ser.vocab_size, ser.seq_len)
    other = ens.init(jax.random.key(7), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other)
    env = SimEnv(ens, ser)
    ep = env.params(stacked, traj, max_prefix=3)
    runs, key = np.arange(4), jax.random.key(1)
    vals = forecast.sample_futures(env, ep, traj, runs, 3, 4, 5, key)
    assert vals.shape == (4, 5, 4)
    single = SimEnv(WorldModel(cfg, ser.vocab_size, ser.seq_len), ser)
    for m, (p, n_m) in enumerate(((params, 3), (other, 2))):  # samples 0, 2, 4 from member 0; 1, 3 from member 1
        alone = forecast.sample_futures(single, single.params(p, traj, max_prefix=3), traj, runs, 3, 4, n_m,
                                        jax.random.fold_in(key, m))
        part = vals[:, :3] if m == 0 else vals[:, 3:]
        np.testing.assert_allclose(part, alone, rtol=1e-5)
    calls = []
    per_member(single, single.params(params, traj), 4, key, lambda e, p, n, k: calls.append(n) or np.zeros((1, n)))
    assert calls == [4]  # one model: one call with every sample
    # the mixture NLL of two identical members is the single model's
    seq = ser.encode_episodes(traj.obs, traj.actions, traj.length, traj.static)[:3]
    nll_1 = forecast.teacher_forced_nll(single.model, params, ser, seq)
    nll_2 = forecast.teacher_forced_nll(ens, jax.tree.map(lambda x: jnp.stack([x, x]), params), ser, seq)
    np.testing.assert_allclose(nll_2, nll_1, rtol=1e-4)
    result, _ = forecast.evaluate(ens, stacked, ser, traj.subset(np.arange(6)), contexts=(3,), n_samples=2, log=lambda s: None)
    assert np.isfinite(result["forecasters"]["worldmodel"]["mae"][0])


def test_forecasts_in_bounded_chunks_draw_what_one_call_draws(tiny_wm, traj, monkeypatch):
    """Many runs are simulated (and scored) a bounded number at a time, the last chunk padded: memory stays
    bounded (at 6 x 192, the 664 held-out runs x 32 samples at once needed 18 GB), the draws are one call's."""
    cfg, model, ser, params = tiny_wm
    env = SimEnv(model, ser)
    ep = env.params(params, traj, max_prefix=3)
    runs, key = np.arange(5), jax.random.key(2)
    seq = ser.encode_episodes(traj.obs, traj.actions, traj.length, traj.static)[:5]
    whole = forecast.sample_futures(env, ep, traj, runs, 3, 4, 3, key, common=False)
    nll = forecast.teacher_forced_nll(model, params, ser, seq)
    monkeypatch.setattr(forecast, "RUNS_AT_ONCE", 2)  # chunks of 2, 2, 1 (padded to 2)
    np.testing.assert_allclose(forecast.sample_futures(env, ep, traj, runs, 3, 4, 3, key, common=False), whole, rtol=1e-5)
    np.testing.assert_allclose(forecast.teacher_forced_nll(model, params, ser, seq), nll, rtol=1e-5)


def test_ensemble_training_stacks_members_and_resumes(tmp_path):
    from conftest import synthetic_trajectories

    from lrpilot import checkpoints
    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import train

    traj = synthetic_trajectories(n_runs=24, noise=0.0)
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=10, eval_every=10, batch_size=8,
                           heldout_frac=0.3, base=16, digits=2, select="nll", ensemble=2)
    train(traj, cfg, tmp_path / "ens", progress=False, log=lambda *_: None)
    ck = checkpoints.load(tmp_path / "ens", kind="worldmodel")
    assert ck.model_config["ensemble"] == 2 and len(ck.meta["members"]) == 2
    leaves = jax.tree.leaves(ck.params)
    assert all(x.shape[0] == 2 for x in leaves) and not np.allclose(leaves[0][0], leaves[0][1])
    logs = []
    train(traj, cfg, tmp_path / "ens2", progress=False, log=logs.append)  # members finished before are loaded
    import shutil
    shutil.rmtree(tmp_path / "ens2")
    logs.clear()
    train(traj, cfg, tmp_path / "ens2", progress=False, log=logs.append)
    assert sum("finished before" in line for line in logs) == 2
    # members trained one per process (--member), then stacked: the same checkpoint as in one go
    for m in (1, 0):
        assert train(traj, cfg, tmp_path / "ens3", progress=False, log=lambda *_: None, only_member=m) is None
    assert not checkpoints.exists(tmp_path / "ens3") and checkpoints.exists(tmp_path / "ens3.members" / "1")
    train(traj, cfg, tmp_path / "ens3", progress=False, log=lambda *_: None)
    for a, b in zip(jax.tree.leaves(ck.params), jax.tree.leaves(checkpoints.load(tmp_path / "ens3", kind="worldmodel").params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="member"):
        train(traj, cfg, tmp_path / "ens4", only_member=2)
    # a member saved before a config field existed (here own_draws) resumes; one of another config is refused
    import json
    head = tmp_path / "ens3.members" / "0" / "checkpoint.json"
    h = json.loads(head.read_text())
    del h["model_config"]["own_draws"]
    head.write_text(json.dumps(h))
    shutil.rmtree(tmp_path / "ens3")
    logs.clear()
    train(traj, cfg, tmp_path / "ens3", progress=False, log=logs.append)
    assert sum("finished before" in line for line in logs) == 2
    with pytest.raises(checkpoints.CheckpointError, match="own_draws: checkpoint has 0.0, expected 0.5"):
        train(traj, dataclasses.replace(cfg, own_draws=0.5), tmp_path / "ens3", progress=False, log=lambda *_: None)


def test_ensemble_of_seeds_only_trains_every_member_on_all_training_groups(tmp_path, monkeypatch):
    from conftest import synthetic_trajectories

    import lrpilot.worldmodel.train as wt
    from lrpilot.worldmodel.model import WorldModelConfig

    traj = synthetic_trajectories(n_runs=12, noise=0.0)
    cfg = WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0, steps=2, eval_every=2, batch_size=4,
                           heldout_frac=0.3, base=16, digits=2, select="nll", ensemble=2, bootstrap=False)
    assert WorldModelConfig.from_dict({"ensemble": 3}).bootstrap  # checkpoints from before the option: bootstraps

    def no_bootstrap(*a):
        raise AssertionError("bootstrap=False resampled the training groups")

    monkeypatch.setattr(wt, "bootstrap", no_bootstrap)
    logs = []
    wt.train(traj, cfg, None, progress=False, log=logs.append)
    n_train = {line.split(" train")[0].split(": ")[-1] for line in logs if " train, " in line}
    assert len(n_train) == 1  # both members: the same training runs
    with pytest.raises(AssertionError, match="resampled"):
        wt.train(traj, dataclasses.replace(cfg, bootstrap=True), None, progress=False, log=lambda *_: None)


def test_ensemble_fidelity_judges_the_spread_against_the_error(tiny_wm):
    from conftest import synthetic_trajectories

    from lrpilot.worldmodel import fidelity

    cfg, _, ser, params = tiny_wm
    ens = WorldModel(dataclasses.replace(cfg, ensemble=2), ser.vocab_size, ser.seq_len)
    other = ens.init(jax.random.key(7), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    traj = synthetic_trajectories(n_runs=6, seed=1)
    env = SimEnv(ens, ser)
    sp = fidelity.spread_vs_error(env, env.params(jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other), traj, 1), traj, 3,
                                  jax.random.key(0))
    assert sp["episodes"] == 18 and sp["mean_spread"] > 0 and -1 <= sp["spearman_spread_error"] <= 1
    assert sp["error_low_spread"] >= 0 and sp["error_high_spread"] >= 0
    same = fidelity.spread_vs_error(env, env.params(jax.tree.map(lambda x: jnp.stack([x, x]), params), traj, 1), traj, 2,
                                    jax.random.key(0))
    assert same["mean_spread"] < 1e-6  # identical members never disagree
