"""The batched trainer: divergence handling, exact batching, seeding, sharding, get_batch.

Every run is tiny (the tiny scale, 40 iterations, offline `python_docs` corpus). Runs with the
same shapes share their XLA compilations through a per-session persistent compilation cache.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot import controllers, data as datasets
from lrpilot.controllers.schedules import Constant, Cosine
from lrpilot.trainers.charlm import RunGroup, get_batch
from lrpilot.trainers.config import scale_config
from lrpilot.trainers.loop import RunSpec, run_info, train

ROOT = Path(__file__).resolve().parents[1]
from conftest import tiny_cfg

TASK = "python_docs"
FORMATS_FIELDS = ("task", "scale", "controller", "seed", "final_train_loss", "best_val_loss", "total_train_time",
                  "avg_inference_tokens_per_second", "ms_per_iter", "diverged", "backend", "device", "lrpilot_version")


class Recording(Constant):
    """constant, recording every observation it receives."""

    def reset(self, run):
        super().reset(run)
        self.seen = []

    def observe(self, obs):
        self.seen.append(obs)


class RecordingCosine(Cosine):
    """cosine, recording every observation it receives (at the protocol's evaluations)."""

    def reset(self, run):
        super().reset(run)
        self.seen = []

    def observe(self, obs):
        self.seen.append(obs)


class EveryTen(Cosine):
    """cosine, observing (with a validation loss) every 10 iterations, recording what it sees."""

    def reset(self, run):
        super().reset(run)
        self.seen = []

    def observe_iters(self):
        return list(range(0, self._run().max_iters + 1, 10))

    def observe(self, obs):
        self.seen.append(obs)


# the same group, by built-in specs, for the sharding subprocess (same LRs, same protocol evaluations)
GROUP_SPECS = [(0, "cosine"), (0, "constant:lr_mult=1e6"), (1, "qlearning:every=10")]


def group_runs():
    return [RunSpec(0, EveryTen(), "cosine"), RunSpec(0, Recording(lr_mult=1e6), "constant:lr_mult=1e6"),
            RunSpec(1, controllers.make("qlearning:every=10"), "qlearning:every=10")]


@pytest.fixture(scope="module")
def ds():
    return datasets.load(TASK)


def _start(n_devices: int):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", SHARDED_SCRIPT, json.dumps(GROUP_SPECS)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    return proc, result


@pytest.fixture(scope="module")
def sharded():
    """The group below trained over 2 (forced host) CPU devices in a subprocess, started early so
    that it overlaps with the in-process work. Returns functions that wait for the sharded result
    and for the unsharded CPU reference (None: use this process's numbers; a second subprocess
    when this process does not run on the CPU)."""
    procs = [_start(2)]
    if jax.default_backend() != "cpu":
        procs.append(_start(1))
    yield procs[0][1], (procs[1][1] if len(procs) > 1 else None)
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def group(ds, sharded):
    """One batched group of 3: a cosine run, a run with a 1e6 x LR (diverges) sharing its seed,
    and a Q-learning run with another seed."""
    runs = group_runs()
    return runs, train(ds, tiny_cfg(), runs, progress=False)


# ---------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------
def test_divergent_run_is_marked_and_frozen(group):
    runs, results = group
    bad = results[1].final_info
    assert bad["diverged"] is True
    assert isinstance(bad["diverged_at"], int) and 0 < bad["diverged_at"] <= 10
    assert bad["stopped_at"] == bad["diverged_at"]
    # no evaluation is recorded after the divergence; the protocol metrics use the finite ones
    assert [p["iter"] for p in results[1].curves] == [0]
    assert bad["best_val_loss"] == results[1].curves[0]["val_loss"]
    # its controller learned of it as NaN metrics, once, at its next observation point
    seen = runs[1].controller.seen
    assert [o.iter for o in seen] == [0, 20]
    assert math.isfinite(seen[0].val_loss)
    assert math.isnan(seen[1].val_loss) and math.isnan(seen[1].train_loss)
    assert seen[1].lr == pytest.approx(2e-3 * 1e6)


def test_other_runs_in_the_group_finish_normally(group):
    cfg = tiny_cfg()
    protocol = run_info(cfg, 0).eval_iters()
    _, results = group
    for res in (results[0], results[2]):
        fi = res.final_info
        assert fi["diverged"] is False and fi["diverged_at"] is None and fi["stopped_at"] is None
        assert [p["iter"] for p in res.curves if p["protocol"]] == protocol
        losses = [p["val_loss"] for p in res.curves] + [p["train_loss"] for p in res.curves if p["protocol"]]
        assert all(math.isfinite(x) for x in losses)
        assert all(p["train_loss"] is None for p in res.curves if not p["protocol"])  # controller-only: val alone
        assert res.curves[-1]["val_loss"] < res.curves[0]["val_loss"] - 0.3  # it learned
        assert fi["runs_batched"] == 3


def test_divergent_run_parameters_stay_finite_and_frozen(ds):
    cfg = tiny_cfg()
    g = RunGroup(cfg, ds.vocab_size, "adamw", [0, 0, 1])
    train_arr = g.put_data(ds.train)
    lrs = np.full((3, 10), 2e-3, np.float32)
    lrs[1] = 2e3
    losses = g.train_chunk(lrs, 0, train_arr).losses
    assert g.alive().tolist() == [True, False, True]
    assert not np.isfinite(losses[1]).all() and np.isfinite(losses[[0, 2]]).all()
    snap = jax.tree.map(np.asarray, g.state)
    for leaf in jax.tree.leaves(snap["params"]):
        assert np.isfinite(leaf[1]).all()
    g.train_chunk(lrs, 10, train_arr)
    after = jax.tree.map(np.asarray, g.state)
    for a, b in zip(jax.tree.leaves(snap["params"]) + jax.tree.leaves(snap["opt"]),
                    jax.tree.leaves(after["params"]) + jax.tree.leaves(after["opt"])):
        np.testing.assert_array_equal(a[1], b[1])  # the dead run does not move
    assert any(not np.array_equal(a[0], b[0]) for a, b in
               zip(jax.tree.leaves(snap["params"]), jax.tree.leaves(after["params"])))


# ---------------------------------------------------------------------------------------------
# batching and seeding
# ---------------------------------------------------------------------------------------------
def test_batching_is_exact(ds, group):
    """The cosine run of the group trained alone: the same curves. (Alone it is trained in chunks
    of 20 updates, in the group in chunks of 10: chunking must not matter either.)"""
    runs, results = group
    ctrl = RecordingCosine()
    (alone,) = train(ds, tiny_cfg(), [RunSpec(0, ctrl, "cosine")], progress=False)
    assert alone.final_info["runs_batched"] == 1
    batched = [p for p in results[0].curves if p["protocol"]]
    assert [p["iter"] for p in alone.curves] == [p["iter"] for p in batched] == [0, 20, 40]
    for a, b in zip(alone.curves, batched):
        for k in ("train_loss", "val_loss", "lr"):
            if a[k] is None:
                assert b[k] is None
            else:
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["iter"], k)
    # the mean minibatch losses of every training step agree as well: alone the controller saw
    # means over 20 updates, in the group means over 10
    seen10 = {o.iter: o.train_loss for o in runs[0].controller.seen}
    assert [o.iter for o in ctrl.seen] == [0, 20, 40]
    for o in ctrl.seen[1:]:
        assert o.train_loss == pytest.approx((seen10[o.iter - 10] + seen10[o.iter]) / 2, rel=1e-5)
    assert alone.final_info["best_val_loss"] == pytest.approx(results[0].final_info["best_val_loss"], rel=1e-5)


@pytest.mark.parametrize("width", [1, 2])
def test_vmap_groups_are_exact(ds, width):
    """4 runs (one diverging) vmapped `width` at a time, `lax.map` over the groups: the same
    losses, parameters (to float noise: other widths pick other kernels) and divergence as all
    4 vmapped together."""
    cfg = tiny_cfg()
    lrs = np.full((4, 10), 2e-3, np.float32)
    lrs[2] = 2e3
    out = {}
    for w in (4, width):
        g = RunGroup(cfg, ds.vocab_size, "adamw", [0, 1, 2, 3], vmap_width=w)
        assert g.width == w
        train_arr = g.put_data(ds.train)
        losses = np.concatenate([g.train_chunk(lrs, it, train_arr)[0] for it in (0, 10)], axis=1)
        out[w] = losses, g.alive(), jax.tree.map(np.asarray, g.state["params"])
    (l4, a4, p4), (lw, aw, pw) = out[4], out[width]
    assert a4.tolist() == aw.tolist() == [True, True, False, True]
    np.testing.assert_allclose(lw[[0, 1, 3]], l4[[0, 1, 3]], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(pw)):  # float noise of other kernels only
        np.testing.assert_allclose(b[[0, 1, 3]], a[[0, 1, 3]], rtol=1e-4, atol=1e-5)
        assert np.isfinite(b[2]).all()


def test_vmap_width_is_a_divisor_and_validated():
    from lrpilot.trainers.charlm import _vmap_width

    cfg = tiny_cfg()
    assert [_vmap_width(cfg, n, 1, 4) for n in (1, 2, 3, 4, 6, 8)] == [1, 2, 3, 4, 3, 4]
    assert _vmap_width(cfg, 8, 2, None) == 8  # several devices: one vmap over the sharded runs
    small = scale_config("shakespeare_char", "small")
    if jax.default_backend() == "cpu":
        assert _vmap_width(small, 8, 1, None) == 2
    with pytest.raises(ValueError, match="vmap_width"):
        _vmap_width(cfg, 4, 1, 0)


def test_seed_determines_initialisation_not_controller(group):
    _, results = group
    a, b, c = (r.curves[0] for r in results)
    assert (a["iter"], b["iter"], c["iter"]) == (0, 0, 0)
    # same seed 0, different controllers: the same initial model and evaluation batches
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    # seed 1: another initialisation
    assert abs(a["val_loss"] - c["val_loss"]) > 1e-4


def test_seeds_past_uint32_initialise(ds):
    """A collection job's run seeds grow with its job seed: any int seed is taken mod 2**32."""
    g = RunGroup(tiny_cfg(), ds.vocab_size, "adamw", [2**32 + 7, 7, 8])
    for leaf in jax.tree.leaves(g.state["params"]):
        np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
    assert any(not np.array_equal(np.asarray(x[1]), np.asarray(x[2])) for x in jax.tree.leaves(g.state["params"]))


# ---------------------------------------------------------------------------------------------
# sharding over devices
# ---------------------------------------------------------------------------------------------
SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from lrpilot import controllers, data
    from lrpilot.trainers import loop
    from lrpilot.trainers.config import scale_config

    made = []

    class Spy(loop.RunGroup):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    loop.RunGroup = Spy
    cfg = scale_config("python_docs", "tiny", max_iters=40, eval_interval=20, sample_tokens=0)
    specs = [loop.RunSpec(s, controllers.make(c), c) for s, c in json.loads(sys.argv[1])]
    res = loop.train(data.load("python_docs"), cfg, specs, progress=False)
    leaf = jax.tree.leaves(made[0].state["params"])[0]
    print("RESULT " + json.dumps({
        "n_devices": len(jax.devices()), "n_padded": made[0].n_padded,
        "leaf_devices": len(leaf.sharding.device_set), "shard_rows": [s.data.shape[0] for s in leaf.addressable_shards],
        "runs": [{"best_val_loss": r.final_info["best_val_loss"], "diverged": r.final_info["diverged"],
                  "diverged_at": r.final_info["diverged_at"],
                  "val": [[p["iter"], p["val_loss"]] for p in r.curves if p["protocol"]]} for r in res]}))
""")


def test_sharded_training_matches_unsharded(group, sharded):
    """3 runs over 2 devices (padded to 4) give the numbers of the same 3 runs on one device."""
    get_sharded, get_reference = sharded
    out = get_sharded()
    assert out["n_devices"] == 2
    assert out["n_padded"] == 4  # 3 runs padded to a multiple of 2 devices
    assert out["leaf_devices"] == 2 and out["shard_rows"] == [2, 2]
    if get_reference is None:
        _, results = group
        reference = [{"best_val_loss": r.final_info["best_val_loss"], "diverged": r.final_info["diverged"],
                      "diverged_at": r.final_info["diverged_at"],
                      "val": [[p["iter"], p["val_loss"]] for p in r.curves if p["protocol"]]} for r in results]
    else:
        reference = get_reference()["runs"]
    assert len(out["runs"]) == 3
    assert [r["diverged"] for r in reference] == [False, True, False]
    for got, ref in zip(out["runs"], reference):
        assert got["diverged"] == ref["diverged"] and got["diverged_at"] == ref["diverged_at"]
        assert got["best_val_loss"] == pytest.approx(ref["best_val_loss"], rel=1e-5)
        ref_val = ref["val"]
        assert [i for i, _ in got["val"]] == [i for i, _ in ref_val]
        assert [v for _, v in got["val"]] == pytest.approx([v for _, v in ref_val], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# get_batch
# ---------------------------------------------------------------------------------------------
def test_get_batch_windows():
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.integers(0, 60000, size=500), jnp.uint16)
    x, y = get_batch(data, jax.random.key(0), 16, 32)
    x, y, d = np.asarray(x), np.asarray(y), np.asarray(data)
    assert x.shape == y.shape == (16, 32) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for row_x, row_y in zip(x, y):
        starts = [i for i in range(len(d) - 32) if np.array_equal(d[i : i + 32], row_x)]
        assert starts, "window not found in the data"
        i = starts[0]
        np.testing.assert_array_equal(row_y, d[i + 1 : i + 33])


def test_get_batch_start_range():
    """nanoGPT: starts uniform in [0, len - block); every window fits, y's last token included."""
    block, n = 8, 13
    data = jnp.arange(n, dtype=jnp.uint16)
    starts = set()
    for k in range(40):
        x, y = get_batch(data, jax.random.key(k), 16, block)
        starts |= set(np.asarray(x[:, 0]).tolist())
        np.testing.assert_array_equal(np.asarray(x), np.asarray(x[:, :1]) + np.arange(block))
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x) + 1)
    assert starts == set(range(n - block))


def test_val_estimate_runs_cost_no_evaluation_of_their_own_and_ignore_their_batchmates(ds):
    """`policy_est`: evaluated only before the protocol's first evaluation after 0 (decisions every
    2 updates, the protocol every 20); the evaluations a batchmate (the same policy without
    estimates) asks for are not shown to it: beside it or beside cosine (same batch width), it
    trains bit for bit the same. Controller-only evaluations skip the train split."""
    est = controllers.make("policy_est:pretrained")
    both = train(ds, tiny_cfg(), [RunSpec(0, controllers.make("policy:pretrained"), "policy"), RunSpec(0, est, "policy_est")],
                 progress=False)
    (_, quiet) = train(ds, tiny_cfg(), [RunSpec(1, Cosine(), "cosine"), RunSpec(0, controllers.make("policy_est:pretrained"),
                                                                               "policy_est")], progress=False)
    assert [c["iter"] for c in both[0].curves] == list(range(0, 41, 2))
    assert [c["iter"] for c in both[1].curves] == [*range(0, 21, 2), 40]
    assert [c["train_loss"] is None for c in both[0].curves] == [c["iter"] not in (0, 20, 40) for c in both[0].curves]
    assert [(c["iter"], c["val_loss"], c["lr"]) for c in quiet.curves] == [(c["iter"], c["val_loss"], c["lr"]) for c in both[1].curves]
    assert [r["val_loss"] is not None for r in est.trajectory()] == [True] * len(est.trajectory())  # estimated ones too
    assert both[1].final_info["controller_options"]["val_estimate"] is True
    assert both[1].final_info["controller_eval_ms"] < both[0].final_info["controller_eval_ms"]
