"""Pins the nanoGPT "baby GPT" protocol: data split, scale configs, model, optimizer, evaluation points.

References are independent of the code under test: the protocol's published numbers written out,
torch.optim.AdamW (when torch is importable), and arithmetic written out here. Training runs
use the tiny scale on the offline `python_docs` corpus (always available) with a few dozen
iterations; a per-session persistent compilation cache lets runs of the same shapes share
their XLA compilations across tests and files.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_cfg

from lrpilot import controllers, data as datasets
from lrpilot.controllers import RunInfo
from lrpilot.controllers.schedules import Schedule
from lrpilot.trainers import optim
from lrpilot.trainers.charlm import RunGroup
from lrpilot.trainers.config import TrainConfig, scale_config
from lrpilot.trainers.gpt import GPT, GPTConfig, decay_mask
from lrpilot.trainers.loop import RunSpec, run_info, train

TASK = "python_docs"  # offline corpus: the training tests never need a download


# ---------------------------------------------------------------------------------------------
# data split
# ---------------------------------------------------------------------------------------------
def test_shakespeare_char_split():
    datasets._CACHE.pop("shakespeare_char", None)
    try:
        ds = datasets.load("shakespeare_char")
    except datasets.DatasetError as e:
        if "no data file found" in str(e):
            pytest.skip(f"tinyshakespeare not available: {e}")
        raise
    assert len(ds.train) == 1_003_854
    assert len(ds.val) == 111_540
    assert ds.vocab_size == 65
    text = open(ds.meta["path"], encoding="utf-8").read()
    assert len(text) == 1_115_394
    cut = int(len(text) * 0.9)
    assert ds.decode(ds.train[:500]) == text[:500]  # first 90% is train ...
    assert ds.decode(ds.train[-500:]) == text[cut - 500 : cut]
    assert ds.decode(ds.val[:500]) == text[cut : cut + 500]  # ... last 10% is val
    assert ds.decode(ds.val[-500:]) == text[-500:]
    assert ds.chars == tuple(sorted(set(text)))
    assert ds.train.dtype == np.uint16 and ds.val.dtype == np.uint16


# ---------------------------------------------------------------------------------------------
# scale configs
# ---------------------------------------------------------------------------------------------
FULL_MODEL = dict(n_layer=6, n_head=6, n_embd=384, dropout=0.2, block_size=256, bias=False)
OPTIM = dict(beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)


def _check(cfg: TrainConfig, expected: dict):
    got = {k: getattr(cfg, k) for k in expected}
    assert got == expected


def test_full_shakespeare_config():
    _check(scale_config("shakespeare_char", "full"), {
        **FULL_MODEL, **OPTIM, "batch_size": 64, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100,
        "max_iters": 5000, "eval_interval": 250, "eval_iters": 200})


@pytest.mark.parametrize("task", ["enwik8", "text8"])
def test_full_hutter_config(task):
    _check(scale_config(task, "full"), {
        **FULL_MODEL, **OPTIM, "batch_size": 32, "learning_rate": 5e-4, "min_lr": 5e-5, "warmup_iters": 200,
        "max_iters": 100_000, "eval_interval": 1000, "eval_iters": 200})


@pytest.mark.parametrize("task", ["shakespeare_char", "enwik8", "python_docs"])
def test_small_config(task):
    _check(scale_config(task, "small"), {
        "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "max_iters": 2000,
        "dropout": 0.0, "bias": False, "eval_interval": 250, "eval_iters": 20, **OPTIM,
        "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100})


def test_full_model_size():
    n = scale_config("shakespeare_char", "full").model(65).num_params()
    assert round(n / 1e6, 2) == 10.65  # nanoGPT prints "number of parameters: 10.65M"


def test_overrides():
    base = scale_config("shakespeare_char", "small")
    cfg = scale_config("shakespeare_char", "small", max_iters=300, learning_rate=3e-3, eval_interval=None)
    assert cfg.max_iters == 300 and cfg.learning_rate == 3e-3
    assert cfg.eval_interval == base.eval_interval  # None means "the scale's value"
    assert cfg.replace(max_iters=300) == cfg.replace(max_iters=300)
    assert {f: getattr(cfg, f) for f in ("n_layer", "n_embd", "batch_size")} == \
           {f: getattr(base, f) for f in ("n_layer", "n_embd", "batch_size")}
    with pytest.raises(ValueError, match="max_itres"):
        scale_config("shakespeare_char", "small", max_itres=300)
    with pytest.raises(ValueError, match="bogus_field"):
        base.replace(bogus_field=1)
    with pytest.raises(ValueError, match="scale"):
        scale_config("shakespeare_char", "huge")
    with pytest.raises(ValueError, match="warmup_iters"):
        scale_config("shakespeare_char", "small", warmup_iters=5000)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def _n(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("cfg", [
    GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
    GPTConfig(vocab_size=27, block_size=16, n_layer=3, n_head=2, n_embd=8),
    GPTConfig(vocab_size=27, block_size=16, n_layer=2, n_head=2, n_embd=8, bias=True),
], ids=["full", "small", "bias"])
def test_num_params_matches_flax(cfg):
    shapes = jax.eval_shape(GPT(cfg).init, jax.random.key(0), jnp.zeros((1, cfg.block_size), jnp.int32))["params"]
    total = _n(shapes)
    assert cfg.num_params() == total - _n(shapes["wpe"])  # nanoGPT: positions excluded
    assert cfg.num_params(include_positions=True) == total


@pytest.fixture(scope="module")
def small_model():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=3, n_head=3, n_embd=96)
    model = GPT(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, cfg.block_size), jnp.int32))["params"]
    return cfg, model, params


@pytest.fixture(scope="module")
def apply(small_model):
    _, model, _ = small_model
    def fn(params, idx):  # logits and the final LayerNorm's output
        logits, state = model.apply({"params": params}, idx, capture_intermediates=True)
        return logits, state["intermediates"]["ln_f"]["__call__"][0]

    jitted = jax.jit(fn)
    return lambda params, idx: tuple(np.asarray(a) for a in jitted(params, idx))


def test_init_statistics(small_model):
    cfg, _, params = small_model
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(params)}
    assert not any("bias" in k for k in flat), "the protocol has no biases"
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    n_proj = n_ln = n_w = 0
    for name, v in flat.items():
        if v.ndim == 2:
            std = proj_std if name.endswith(("c_proj/kernel",)) else 0.02
            assert v.std() == pytest.approx(std, rel=0.06), name
            assert abs(v.mean()) < 4 * std / math.sqrt(v.size), name
            n_proj += name.endswith("c_proj/kernel")
            n_w += 1
        else:
            assert name.endswith("scale"), name
            np.testing.assert_array_equal(v, 1.0, err_msg=name)
            n_ln += 1
    assert n_proj == 2 * cfg.n_layer  # c_proj and mlp_c_proj in every block
    assert n_w == 2 + 4 * cfg.n_layer  # wte, wpe, c_attn, c_proj, c_fc, mlp_c_proj
    assert n_ln == 2 * cfg.n_layer + 1
    assert set(params) == {"wte", "wpe", "ln_f"} | {f"h_{i}" for i in range(cfg.n_layer)}


def test_tied_head(small_model, apply):
    cfg, model, params = small_model
    idx = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 10), dtype=np.int32)
    logits, h = apply(params, idx)
    np.testing.assert_allclose(np.asarray(logits).reshape(-1, cfg.vocab_size), np.asarray(h @ params["wte"].T),
                               rtol=1e-5, atol=1e-5)
    # no separate output head: wte is the only parameter with a vocabulary-sized axis
    assert [k for k, v in jax.tree_util.tree_leaves_with_path(params) if cfg.vocab_size in v.shape] == \
           [k for k, _ in jax.tree_util.tree_leaves_with_path({"wte": params["wte"]})]
    # changing wte for one unused token changes its logit (the head reads wte), nothing else
    unused = int(np.setdiff1d(np.arange(cfg.vocab_size), np.asarray(idx))[0])
    wte = np.array(params["wte"])
    wte[unused] *= 3.0
    p2 = {**params, "wte": jnp.asarray(wte)}
    logits2, _ = apply(p2, idx)
    np.testing.assert_allclose(np.asarray(logits2[..., unused]), 3.0 * np.asarray(logits[..., unused]), rtol=1e-4, atol=1e-6)
    others = np.delete(np.arange(cfg.vocab_size), unused)
    np.testing.assert_allclose(np.asarray(logits2[..., others]), np.asarray(logits[..., others]), rtol=1e-6)


def test_causal(small_model, apply):
    cfg, _, params = small_model
    changed = np.repeat(np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 10), dtype=np.int32), 2, 0)
    changed[1, 5:] = (changed[0, 5:] + 7) % cfg.vocab_size  # row 1 differs from row 0 from position 5 on
    out, _ = apply(params, changed)
    a, b = out[:1], out[1:]
    np.testing.assert_allclose(a[0, :5], b[0, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[0, 5:], b[0, 5:], atol=1e-3)


def test_initial_loss_near_uniform(small_model, apply):
    cfg, _, params = small_model
    idx, targets = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 2, 10), dtype=np.int32)
    logits, _ = apply(params, idx)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    loss = -np.take_along_axis(logp, np.asarray(targets)[..., None], -1).mean()
    # small logits at init (std-0.02 embeddings): the loss starts near ln(65) = 4.17
    assert abs(loss - math.log(cfg.vocab_size)) < 0.15
    assert np.abs(logits).max() < 2.0


# ---------------------------------------------------------------------------------------------
# optimizer
# ---------------------------------------------------------------------------------------------
def test_decay_mask_is_exactly_2d(small_model):
    cfg, _, params = small_model
    mask = decay_mask(params)
    assert mask["wte"] and mask["wpe"] and not mask["ln_f"]["scale"]
    for i in range(cfg.n_layer):
        blk = mask[f"h_{i}"]
        assert all(blk[k]["kernel"] for k in ("c_attn", "c_proj", "c_fc", "mlp_c_proj"))
        assert not blk["ln_1"]["scale"] and not blk["ln_2"]["scale"]
    assert jax.tree.leaves(mask) == [p.ndim == 2 for p in jax.tree.leaves(params)]


def test_weight_decay_step_on_zero_gradients(small_model):
    _, _, params = small_model
    cfg = scale_config(TASK, "small")
    tx = optim.make("adamw", cfg)
    lr = 0.5

    @jax.jit
    def step(params):
        state = optim.set_lr(tx.init(params), lr)
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
        return optax.apply_updates(params, updates)

    new = step(params)
    for (path, p), q in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new)):
        factor = (1 - lr * cfg.weight_decay) if p.ndim == 2 else 1.0
        np.testing.assert_allclose(np.asarray(q), factor * np.asarray(p), rtol=1e-6, err_msg=str(path))


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    cfg = scale_config(TASK, "small")
    rng = np.random.default_rng(0)
    p0 = {"emb": rng.normal(size=(5, 3)).astype(np.float32), "w": rng.normal(size=(3, 4)).astype(np.float32),
          "scale": rng.normal(size=(4,)).astype(np.float32)}
    # step 1 is clipped (norm >> 1), steps 2-3 are not; the LR changes at every step
    grads = [{k: (s * rng.normal(size=v.shape)).astype(np.float32) for k, v in p0.items()} for s in (3.0, 0.05, 0.1)]
    lrs = [1e-2, 3e-2, 5e-3]

    tx = optim.make("adamw", cfg)

    @jax.jit
    def step(params, state, g, lr):
        state = optim.set_lr(state, lr)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.asarray, p0)
    state = tx.init(params)
    for g, lr in zip(grads, lrs):
        params, state = step(params, state, g, np.float32(lr))

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    topt = torch.optim.AdamW(
        [{"params": [tp["emb"], tp["w"]], "weight_decay": 0.1}, {"params": [tp["scale"]], "weight_decay": 0.0}],
        lr=lrs[0], betas=(0.9, 0.99), eps=1e-8)
    for g, lr in zip(grads, lrs):
        for k, t in tp.items():
            t.grad = torch.tensor(g[k])
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 1.0)
        for group in topt.param_groups:
            group["lr"] = lr
        topt.step()
    for k in p0:
        np.testing.assert_allclose(np.asarray(params[k]), tp[k].detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=k)
        assert not np.allclose(np.asarray(params[k]), p0[k])


# ---------------------------------------------------------------------------------------------
# no recompilation when the LR changes
# ---------------------------------------------------------------------------------------------
def test_changing_lr_never_recompiles():
    ds = datasets.load(TASK)
    cfg = tiny_cfg()
    traces = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration" and "_train_chunk" in str(kw.get("fun_name", "")):
            traces.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        group = RunGroup(cfg, ds.vocab_size, "adamw", [0])
        train_arr = group.put_data(ds.train)
        cache_size = getattr(group._chunk, "_cache_size", None)

        def params():
            return [np.asarray(x) for x in jax.tree.leaves(group.state["params"])]

        p0 = params()
        group.train_chunk(np.full((1, 20), 1e-3, np.float32), 0, train_arr)
        n_traces, size = len(traces), cache_size() if cache_size else None
        assert n_traces == 1
        p1 = params()
        assert any(not np.array_equal(a, b) for a, b in zip(p0, p1))
        # other LRs, including per-iteration ones and zero: same shapes, so no new trace or compile
        group.train_chunk(np.linspace(0.0, 5e-3, 20, dtype=np.float32)[None], 20, train_arr)
        p2 = params()
        group.train_chunk(np.zeros((1, 20), np.float32), 40, train_arr)
        p3 = params()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(traces) == n_traces
    if cache_size is not None:
        assert cache_size() == size
    # and the new LRs really took effect: LR 0 leaves the parameters exactly as they were
    assert any(not np.array_equal(a, b) for a, b in zip(p1, p2))
    assert all(np.array_equal(a, b) for a, b in zip(p2, p3))


# ---------------------------------------------------------------------------------------------
# evaluation points and the metrics computed from them
# ---------------------------------------------------------------------------------------------
def test_protocol_eval_points():
    cfg = scale_config("shakespeare_char", "small")
    assert run_info(cfg, 0).eval_iters() == [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000]
    full = scale_config("shakespeare_char", "full")
    assert run_info(full, 0).eval_iters() == list(range(0, 5001, 250))
    assert len(run_info(scale_config("enwik8", "full"), 0).eval_iters()) == 101
    odd = RunInfo(base_lr=1e-3, min_lr=1e-4, warmup_iters=5, max_iters=45, eval_interval=20)
    assert odd.eval_iters() == [0, 20, 40, 45]  # the end is always evaluated


class Spike(Schedule):
    """A policy-like controller that observes at a non-protocol iteration (30) and then
    sets a harmful LR, so the best validation loss over *all* its evaluations is at 30."""

    name = "spike"

    def after_warmup(self, s, S):
        return self.peak

    def reset(self, run):
        super().reset(run)
        self.seen = []

    def observe_iters(self):
        return sorted(set(self._run().eval_iters()) | {30})

    def observe(self, obs):
        self.seen.append(obs)

    def lr(self, it):
        return 2e-3 if it < 30 else 0.1  # harmful (val ~4.0 at 40 against ~3.3 at 30), below the divergence (1.5 x ~4.6)


@pytest.fixture(scope="module")
def extra_points_runs():
    ds = datasets.load(TASK)
    cfg = tiny_cfg()
    runs = [RunSpec(0, Spike(), "spike"), RunSpec(1, controllers.make("qlearning:every=10"), "qlearning:every=10"),
            RunSpec(2, controllers.make("cosine"), "cosine")]
    return cfg, runs, train(ds, cfg, runs, progress=False)


def test_curves_have_every_protocol_point(extra_points_runs):
    cfg, _, results = extra_points_runs
    protocol = run_info(cfg, 0).eval_iters()
    assert protocol == [0, 20, 40]
    extra = {"spike": [30], "qlearning:every=10": [10, 30], "cosine": []}
    for res in results:
        iters = [p["iter"] for p in res.curves]
        assert iters == sorted(protocol + extra[res.controller]), res.controller
        for p in res.curves:
            assert p["protocol"] == (p["iter"] in protocol)
            assert math.isfinite(p["val_loss"])
            # the train split is evaluated at the protocol's points only (controller-only evaluations: val)
            assert math.isfinite(p["train_loss"]) if p["protocol"] else p["train_loss"] is None
        assert not res.final_info["diverged"]


def test_best_val_loss_over_protocol_points_only(extra_points_runs):
    _, _, results = extra_points_runs
    for res in results:
        prot = [p for p in res.curves if p["protocol"]]
        assert res.final_info["best_val_loss"] == min(p["val_loss"] for p in prot)
        assert res.final_info["final_train_loss"] == prot[-1]["train_loss"]
        assert res.final_info["final_val_loss"] == prot[-1]["val_loss"]
    spike = next(r for r in results if r.controller == "spike")
    at30 = next(p for p in spike.curves if p["iter"] == 30)
    assert not at30["protocol"]
    # the extra observation point is the best evaluation of the run, yet it does not count
    assert at30["val_loss"] < spike.final_info["best_val_loss"]


def test_observations_and_recorded_lr(extra_points_runs):
    _, runs, results = extra_points_runs
    spike = runs[0].controller
    assert [o.iter for o in spike.seen] == [0, 20, 30, 40]
    assert spike.seen[0].train_loss is None and spike.seen[0].lr is None
    curves = {p["iter"]: p for p in results[0].curves}
    for o in spike.seen:
        assert o.val_loss == pytest.approx(curves[o.iter]["val_loss"], rel=1e-6)
    for o in spike.seen[1:]:
        assert o.lr == pytest.approx(spike.lr(o.iter - 1))  # the LR of the last update
        assert curves[o.iter]["lr"] == pytest.approx(spike.lr(o.iter - 1))
        assert math.isfinite(o.train_loss)
    cos = runs[2].controller
    for p in results[2].curves[1:]:
        assert p["lr"] == pytest.approx(cos.lr(p["iter"] - 1), rel=1e-6)
