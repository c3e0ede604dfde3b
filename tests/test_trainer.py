"""The batched trainer: divergence handling, exact batching, seeding, sharding, and the CLI.

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
import numpy as np
import pytest

import lrpilot
from lrpilot import controllers, data as datasets
from lrpilot.app.cli import main
from lrpilot.controllers.schedules import Constant, Cosine
from lrpilot.trainers.charlm import RunGroup
from lrpilot.trainers.config import scale_config
from lrpilot.trainers.loop import RunSpec, run_info, train

ROOT = Path(__file__).resolve().parents[1]
from conftest import tiny_cfg

TASK = "python_docs"
FORMATS_FIELDS = ("task", "scale", "controller", "seed", "final_train_loss", "best_val_loss", "total_train_time",
                  "avg_inference_tokens_per_second", "ms_per_iter", "diverged", "backend", "device", "lrpilot_version")
pytestmark = pytest.mark.usefixtures("compile_cache")


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
        losses = [p[k] for p in res.curves for k in ("train_loss", "val_loss")]
        assert all(math.isfinite(x) for x in losses)
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
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_train_writes_formats_files(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--task", TASK, "--scale", "tiny", "--max-iters", "40", "--eval-interval", "20",
               "--controller", "wsd", "--out", str(out), "--quiet"])
    assert rc == 0
    assert "best_val_loss" in capsys.readouterr().out
    fi = json.loads((out / "final_info.json").read_text())
    missing = [f for f in FORMATS_FIELDS if f not in fi]
    assert not missing, f"final_info.json lacks {missing}"
    assert (fi["task"], fi["scale"], fi["controller"], fi["seed"]) == (TASK, "tiny", "wsd", 0)
    assert fi["diverged"] is False and fi["backend"] == jax.default_backend()
    assert fi["lrpilot_version"] == lrpilot.__version__ and isinstance(fi["device"], str) and fi["device"]
    for k in ("total_train_time", "avg_inference_tokens_per_second", "ms_per_iter"):
        assert isinstance(fi[k], float) and fi[k] > 0, k
    assert fi["config"]["max_iters"] == 40 and fi["config"]["eval_interval"] == 20

    curves = json.loads((out / "curves.json").read_text())
    assert [p["iter"] for p in curves] == [0, 20, 40]
    ctrl = controllers.make("wsd")
    ctrl.reset(run_info(scale_config(TASK, "tiny", max_iters=40, eval_interval=20), 0))
    for p in curves:
        assert {"iter", "train_loss", "val_loss", "lr"} <= set(p)
        assert math.isfinite(p["train_loss"]) and math.isfinite(p["val_loss"])
        if p["iter"] == 0:
            assert p["lr"] is None  # no update yet
        else:
            assert p["lr"] == pytest.approx(ctrl.lr(p["iter"] - 1), rel=1e-6)
    assert fi["best_val_loss"] == min(p["val_loss"] for p in curves)
    assert fi["final_train_loss"] == curves[-1]["train_loss"]


@pytest.mark.parametrize("args, needle", [
    (["--task", "no_such_task"], "no_such_task"),
    (["--controller", "cosine:bogus_opt=1"], "bogus_opt"),
    (["--controller", "no_such_ctrl"], "no_such_ctrl"),
    (["--task", "file:/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    (["--max-iters", "0"], "--max-iters"),
])
def test_cli_bad_inputs(tmp_path, capsys, args, needle):
    rc = main(["train", "--scale", "tiny", "--out", str(tmp_path / "x"), "--quiet", *args])
    assert rc != 0
    err = capsys.readouterr().err
    assert needle in err and "error" in err
    assert not (tmp_path / "x" / "final_info.json").exists()


def test_cli_evaluate_report_only_reports_finished_runs_and_trains_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    common = ["--tasks", TASK, "--scale", "tiny", "--max-iters", "40", "--eval-interval", "20", "--out", str(out),
              "--quiet"]
    assert main(["evaluate", "--controllers", "cosine", "--seeds", "1", *common]) == 0
    capsys.readouterr()
    info_path = out / "runs" / TASK / "lr_x1" / "cosine" / "seed0" / "final_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "device": "Trainer GPU x1", "backend": "gpu"}))

    from lrpilot.trainers import loop as trainer_loop

    def no_training(*a, **k):
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(trainer_loop, "train", no_training)
    assert main(["evaluate", "--controllers", "cosine", "wsd", "--seeds", "2", "--report-only", *common]) == 0
    printed = capsys.readouterr().out
    assert "reporting 1 finished runs; 3 not finished" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["device"] == "Trainer GPU x1" and res["backend"] == "gpu"  # the training machine's, not this one's
    cos, wsd = res["results"][TASK]["cosine"], res["results"][TASK]["wsd"]
    assert cos["n_seeds"] == 1 and cos["seeds"] == [0] and cos["best_val_loss_mean"] == info["best_val_loss"]
    assert cos["best_val_loss_stderr"] is None
    assert wsd["n_seeds"] == 0 and wsd["seeds"] == [] and wsd["best_val_loss_mean"] is None
    md = (out / "results.md").read_text()
    assert "| `cosine` |" in md and "0/1" in md and "0/0" in md and "fewer finished seeds" in md
    assert (out / f"{TASK}.png").read_bytes()[:4] == b"\x89PNG"

    # a different training config matches no finished run: a clear error, nothing written over
    before = (out / "results.json").read_text()
    assert main(["evaluate", "--controllers", "cosine", "--seeds", "1", "--report-only", *common,
                 "--max-iters", "60"]) != 0
    err = capsys.readouterr().err
    assert "no finished run" in err and str(out) in err
    assert (out / "results.json").read_text() == before


def test_cli_seeds_count_list_and_zero(tmp_path, capsys):
    from lrpilot.app.cli import _seeds

    assert _seeds("3") == [0, 1, 2] and _seeds("0,") == [0] and _seeds("5,7") == [5, 7]
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--seeds", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and "'0,'" in err  # says how to ask for seed 0 alone
    assert not list(tmp_path.iterdir())


def test_cli_rejects_unknown_scale(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--scale", "huge", "--out", str(tmp_path)])
    assert e.value.code != 0 and "huge" in capsys.readouterr().err


def test_cli_evaluate_grid_and_resume(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", "--tasks", TASK, "--controllers", "cosine", "wsd", "--seeds", "2", "--scale", "tiny",
            "--max-iters", "40", "--eval-interval", "20", "--max-batch", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "0 runs already done, 4 to train" in first
    assert "4/4 runs trained" in first

    res = json.loads((out / "results.json").read_text())
    assert res["scale"] == "tiny" and res["seeds"] == [0, 1]
    assert res["lrpilot_version"] == lrpilot.__version__ and res["device"]
    assert set(res["results"]) == {TASK} and set(res["results"][TASK]) == {"cosine", "wsd"}
    keys = {"best_val_loss_mean", "best_val_loss_stderr", "final_train_loss_mean", "final_train_loss_stderr",
            "total_train_time_mean", "ms_per_iter_mean", "controller_overhead_ms_mean", "n_seeds", "n_diverged"}
    finals = {}
    for ctrl, row in res["results"][TASK].items():
        assert keys <= set(row), keys - set(row)
        assert row["n_seeds"] == 2 and row["n_diverged"] == 0
        infos = [json.loads(f.read_text()) for f in sorted((out / "runs" / TASK / "lr_x1" / ctrl).glob("seed*/final_info.json"))]
        assert [i["seed"] for i in infos] == [0, 1] and all(i["controller"] == ctrl for i in infos)
        for field in ("best_val_loss", "final_train_loss"):
            xs = [i[field] for i in infos]
            assert row[f"{field}_mean"] == pytest.approx(np.mean(xs), rel=1e-9)
            assert row[f"{field}_stderr"] == pytest.approx(np.std(xs, ddof=1) / math.sqrt(2), rel=1e-6)
        finals.update({f: f.stat().st_mtime_ns for f in (out / "runs" / TASK / "lr_x1" / ctrl).glob("seed*/final_info.json")})
    assert len(finals) == 4
    md = (out / "results.md").read_text()
    assert "`cosine`" in md and "`wsd`" in md and "0/2" in md
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "| `cosine` |" in first  # the command prints results.md

    # a rerun trains nothing and leaves the finished runs as they were
    assert main(argv) == 0
    assert "4 runs already done, 0 to train" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in finals} == finals
    assert json.loads((out / "results.json").read_text())["results"] == res["results"]
