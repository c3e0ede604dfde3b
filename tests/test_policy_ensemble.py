"""Policy ensembles (`policy.ensemble`, `lrpilot policy ensemble`): members stacked in one checkpoint,
deployed as one controller acting on the median of their actions or on their mean probabilities;
what is refused."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot import checkpoints, policy
from lrpilot.app.cli import main
from lrpilot.controllers import Observation, RunInfo
from lrpilot.policy.ensemble import combine_rule, median_action, mixture_logits, stack
from lrpilot.policy.network import PolicyConfig, build, init_params
from lrpilot.spec import DEFAULT_SPEC, SpecMismatch

SPEC = DEFAULT_SPEC
INFO = RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=200, eval_interval=50,
               n_params=808_960, tokens_per_update=768)


def _policy(path, cfg, wm_params, bias: dict, head_seed: int | None = None, spec=SPEC, support=False, meta=None):
    """A policy checkpoint whose action head's bias favours `bias` ({LR factor: logit}); with
    `head_seed`, a small random kernel too, so that its actions depend on the episode."""
    net = build(cfg, spec)
    params = init_params(net, jax.random.key(0), wm_params)
    b = jnp.zeros(spec.n_actions)
    for factor, logit in bias.items():
        b = b.at[spec.actions.index(factor)].set(logit)
    head = {**params["action_head"], "bias": b}
    if head_seed is not None:
        head["kernel"] = 0.5 * jax.random.normal(jax.random.key(head_seed), head["kernel"].shape)
    params = {**params, "action_head": head}
    return checkpoints.save(path, kind="policy", params=params, spec=spec,
                            model_config={"trunk": cfg.to_dict(), "policy": PolicyConfig(support_mask=support).to_dict()},
                            meta=meta)


def _lrs(ctrl, vals=lambda k: 4.0 - 0.1 * k):
    ctrl.reset(INFO)
    out = []
    for k, it in enumerate(ctrl.observe_iters()):
        ctrl.observe(Observation(it, train_loss=None if k == 0 else vals(k), val_loss=vals(k)))
        out.append(ctrl.lr(min(it, INFO.max_iters - 1)))
    return out


def test_mixture_logits_are_the_log_of_the_mean_probability():
    logits = jnp.array([[2.0, 0.0, -1.0], [-3.0, 1.0, 0.5], [0.0, 0.0, 4.0]])
    want = np.log(np.mean(np.asarray(jax.nn.softmax(logits, -1)), 0))
    np.testing.assert_allclose(np.asarray(mixture_logits(logits)), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mixture_logits(logits[:1])), np.asarray(jax.nn.log_softmax(logits[0])), rtol=1e-5)


def test_the_median_action_orders_the_members_by_lr_factor():
    f = SPEC.actions  # 0.5 0.8 0.95 1.0 1.05 1.25 2.0
    assert median_action([6, 0, 3], f) == 3 and median_action(np.array([0, 0, 6]), f) == 0
    assert median_action([2, 5], f) == 2 and median_action([5, 4], f) == 4  # even K: the smaller move
    assert median_action([0, 6], f) == 0  # a tie in size: the lower


def test_the_median_ensemble_follows_its_middle_member(tmp_path, tiny_wm):
    cfg, _, _, wm_params = tiny_wm
    up = _policy(tmp_path / "up", cfg, wm_params, {2.0: 10.0})
    down = _policy(tmp_path / "down", cfg, wm_params, {0.5: 10.0})
    hold = _policy(tmp_path / "hold", cfg, wm_params, {1.0: 10.0})
    lean_up = _policy(tmp_path / "lean_up", cfg, wm_params, {2.0: 1.0, 0.5: 0.5})
    ens = stack([up, down, hold], tmp_path / "med")
    ctrl = policy.load(ens)
    assert ctrl.combine == "median" and ctrl.describe()["combine"] == "median"
    assert set(_lrs(ctrl)[1:]) == {INFO.base_lr}  # one climbs, one cuts: the LR holds (after the warmup)
    # two members for doubling, however weakly, outvote one sure of halving (the mean rule halves: below)
    lrs = _lrs(policy.load(stack([lean_up, lean_up, down], tmp_path / "votes")))
    assert lrs[-1] == pytest.approx(SPEC.lr_range[1] * INFO.base_lr)
    sampled = policy.load(ens, greedy=False, seed=3)
    assert len(_lrs(sampled)) == SPEC.n_decisions + 1
    # members trained with the LR support are masked to it, each before the median
    fenced = _policy(tmp_path / "fenced", cfg, wm_params, {2.0: 10.0}, support=True)
    lrs = _lrs(policy.load(stack([fenced, fenced, fenced], tmp_path / "fenced3")))
    assert 4 * INFO.base_lr < max(lrs) <= PolicyConfig().lr_max_rel * INFO.base_lr * (1 + 1e-6)


def test_the_mean_ensemble_acts_on_its_members_mean_probabilities(tmp_path, tiny_wm):
    cfg, _, _, wm_params = tiny_wm
    up = _policy(tmp_path / "up", cfg, wm_params, {2.0: 10.0})
    down = _policy(tmp_path / "down", cfg, wm_params, {0.5: 10.0})
    lean_up = _policy(tmp_path / "lean_up", cfg, wm_params, {2.0: 1.0, 0.5: 0.5})  # its argmax doubles, barely
    base = INFO.base_lr
    # a 2-1 majority doubles at every decision (up to the spec's clip), whichever member is alone
    ens = stack([up, down, up], tmp_path / "maj", "mean")
    lrs = _lrs(policy.load(ens))
    assert lrs[-1] == pytest.approx(SPEC.lr_range[1] * base) and lrs[-1] == _lrs(policy.load(up))[-1]
    # split 1-1, the third member's probabilities decide, though its own preference is weak
    lrs = _lrs(policy.load(stack([up, down, lean_up], tmp_path / "tie", "mean")))
    assert lrs[-1] == pytest.approx(SPEC.lr_range[1] * base)
    lrs = _lrs(policy.load(stack([down, up, down], tmp_path / "maj_down", "mean")))
    assert lrs[-1] == pytest.approx(SPEC.lr_range[0] * base)
    # probabilities, not votes: two members barely for doubling are outweighed by one sure of halving
    lrs = _lrs(policy.load(stack([lean_up, lean_up, down], tmp_path / "sure", "mean")))
    assert lrs[-1] == pytest.approx(SPEC.lr_range[0] * base) and _lrs(policy.load(lean_up))[-1] > base
    ctrl = policy.load(ens)
    assert ctrl.members == 3 and ctrl.describe()["members"] == 3 and ctrl.combine == "mean"
    assert [m["path"] for m in checkpoints.load(ens).model_config["policy_members"]] == [str(up), str(down), str(up)]


def test_an_ensemble_of_one_policy_twice_is_that_policy(tmp_path, tiny_wm):
    cfg, _, _, wm_params = tiny_wm
    p = _policy(tmp_path / "p", cfg, wm_params, {}, head_seed=1)  # actions that depend on the episode
    single = _lrs(policy.load(p), lambda k: 4.0 - 0.3 * k + 0.2 * (k % 3))
    assert len(set(single)) > 2
    for rule in ("median", "mean"):
        assert _lrs(policy.load(stack([p, p], tmp_path / rule, rule)), lambda k: 4.0 - 0.3 * k + 0.2 * (k % 3)) == single


def test_what_an_ensemble_refuses(tmp_path, tiny_wm):
    cfg, _, _, wm_params = tiny_wm
    a = _policy(tmp_path / "a", cfg, wm_params, {2.0: 1.0})
    with pytest.raises(ValueError, match="at least 2"):
        stack([a], tmp_path / "one")
    with pytest.raises(ValueError, match="combine='vote'"):
        stack([a, a], tmp_path / "x", "vote")
    assert combine_rule({"policy_members": [{}, {}]}) == "mean"  # an ensemble saved before the rule was a choice
    with pytest.raises(ValueError, match="policy_combine='vote'"):
        combine_rule({"policy_combine": "vote"})
    other_spec = _policy(tmp_path / "spec", cfg, None, {}, spec=dataclasses.replace(SPEC, n_decisions=10))
    with pytest.raises(SpecMismatch, match="n_decisions"):
        stack([a, other_spec], tmp_path / "x")
    wide = _policy(tmp_path / "wide", dataclasses.replace(cfg, d_model=32), None, {})
    with pytest.raises(ValueError, match=r"wide: its trunk differs .*\['d_model'\]"):
        stack([a, wide], tmp_path / "x")
    fenced = _policy(tmp_path / "fenced", cfg, wm_params, {}, support=True)
    with pytest.raises(ValueError, match="fenced: LR support"):
        stack([a, fenced], tmp_path / "x")
    ens = stack([a, a], tmp_path / "aa")
    with pytest.raises(ValueError, match="itself an ensemble of 2"):
        stack([a, ens], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written by a refused stack
    # the simulator's report takes one policy
    from lrpilot.policy.train import evaluate

    wm = checkpoints.save(tmp_path / "wm", kind="worldmodel", params=wm_params, spec=SPEC, model_config=cfg.to_dict())
    with pytest.raises(ValueError, match="aa is an ensemble of 2 policies"):
        evaluate(ens, wm, {}, n_envs=4)


def test_the_ensemble_command(tmp_path, tiny_wm, capsys):
    cfg, _, _, wm_params = tiny_wm
    a = _policy(tmp_path / "a", cfg, wm_params, {2.0: 1.0})
    b = _policy(tmp_path / "b", cfg, wm_params, {0.5: 1.0}, head_seed=2)
    assert main(["policy", "ensemble", "--members", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    assert "ensemble of 2 policies (median)" in capsys.readouterr().out
    assert policy.load(tmp_path / "ab").members == 2 and policy.load(tmp_path / "ab").combine == "median"
    assert main(["policy", "ensemble", "--members", str(a), str(b), "--combine", "mean", "--out", str(tmp_path / "m2")]) == 0
    assert policy.load(tmp_path / "m2").combine == "mean"
    capsys.readouterr()
    assert main(["policy", "ensemble", "--members", str(a), "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "at least 2" in err and "Traceback" not in err and not (tmp_path / "one").exists()
    assert main(["policy", "ensemble", "--members", str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "missing" in capsys.readouterr().err


def test_an_ensemble_names_the_world_model_its_members_were_trained_in(tmp_path, tiny_wm):
    cfg, _, _, wm_params = tiny_wm
    a, b, c = (_policy(tmp_path / n, cfg, wm_params, {}, meta={"world_model": w}) for n, w in [("a", "wm1"), ("b", "wm1"), ("c", "wm2")])
    assert checkpoints.load(stack([a, b], tmp_path / "ab")).meta["world_model"] == "wm1"
    mixed = checkpoints.load(stack([a, c], tmp_path / "ac")).meta
    assert mixed["world_models"] == ["wm1", "wm2"] and "world_model" not in mixed
    unknown = checkpoints.load(stack([a, _policy(tmp_path / "d", cfg, wm_params, {})], tmp_path / "ad")).meta
    assert "world_model" not in unknown and "world_models" not in unknown  # one member does not say: nothing claimed
