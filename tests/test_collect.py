"""Collection jobs: one file per run, resume, growth, divergence in training, CLI, Ray.

Real training is tiny (the `tiny` family: 1 layer, width 16, 40 iterations, `python_docs`),
two runs per group, so every group has the same shapes and, after the first compilation,
loads its XLA executables from the session's persistent compilation cache (conftest), shared
with subprocesses and Ray workers. One 4-run job is collected once per module and copied where
a test needs to change it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrpilot.collect.job as cj
from lrpilot import trajectories as tfmt
from lrpilot.app import plots
from lrpilot.collect.explore import Follow
from lrpilot.collect.job import Job, collect
from lrpilot.collect.summary import summary
from lrpilot.controllers.spec_controller import SpecController
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trainers.loop import RunSpec, train
from lrpilot.trajectories import load_dir, read_run

JOB = Job(family="tiny", tasks=("python_docs",), parallel=2)
N = DEFAULT_SPEC.n_decisions
UP = DEFAULT_SPEC.actions.index(2.0)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """JOB grown to 4 runs (2 groups) in a fresh directory: (dir, runs trained, log lines)."""
    out = tmp_path_factory.mktemp("job") / "data"
    logs: list[str] = []
    n = collect(out, JOB, 4, progress=False, log=logs.append)
    return out, n, logs


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}


def _count_groups(monkeypatch) -> list:
    """Replaces collect.job.run_group by a wrapper recording (group, indices) of each call."""
    calls, real = [], cj.run_group

    def counted(out, job_dict, g, indices, spec_json, progress=False):
        calls.append((g, list(indices)))
        return real(out, job_dict, g, indices, spec_json, progress)

    monkeypatch.setattr(cj, "run_group", counted)
    return calls


def _no_training(monkeypatch) -> None:
    def fail(*a, **k):
        raise AssertionError("collect trained a run it should not have")

    monkeypatch.setattr(cj, "run_group", fail)


def _same_runs(a: Path, b: Path, names: list[str]) -> None:
    """Same observations, actions and raw losses (runs are deterministic given the job)."""
    ta, tb = load_dir([a / n for n in names], DEFAULT_SPEC), load_dir([b / n for n in names], DEFAULT_SPEC)
    np.testing.assert_array_equal(ta.obs, tb.obs)
    np.testing.assert_array_equal(ta.actions, tb.actions)
    np.testing.assert_array_equal(ta.length, tb.length)
    np.testing.assert_array_equal(ta.val_loss, tb.val_loss)
    assert [m["controller"] for m in ta.meta] == [m["controller"] for m in tb.meta]


# ---- a job ----------------------------------------------------------------------------------

def test_job_writes_one_file_per_run(collected, tmp_path, monkeypatch):
    out, n, logs = collected
    assert n == 4
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [JOB.filename(i) for i in range(4)]
    assert JOB.filename(3) == "run_s0_00003.parquet"
    assert json.loads((out / "jobs" / "seed0.json").read_text()) == JOB.to_dict()
    assert "0/4 runs present" in logs[0] and "4 to train in 2 group(s)" in logs[0]

    import jax

    import lrpilot

    for i in range(4):
        table, m = read_run(out / JOB.filename(i), DEFAULT_SPEC)
        plan, (ctrl, mult) = JOB.group(i // 2), JOB.explorer(i, DEFAULT_SPEC)
        assert m["task"] == "python_docs" == plan.task
        assert m["config"] == dataclasses.asdict(plan.cfg) and m["config"]["max_iters"] == 40
        assert m["seed"] == JOB.run_seed(i) and m["run_index"] == i and m["group"] == i // 2
        assert m["job_seed"] == 0 and m["family"] == "tiny" and m["runs_in_group"] == 2
        assert m["controller"] == json.loads(json.dumps(ctrl.describe()))
        assert m["base_lr_mult"] == mult and m["base_lr"] == pytest.approx(plan.cfg.learning_rate * mult)
        assert m["backend"] == jax.default_backend() and m["device"]
        assert m["versions"]["jax"] == jax.__version__ and m["versions"]["lrpilot"] == lrpilot.__version__
        assert {"python", "flax", "optax", "numpy"} <= set(m["versions"])
        assert m["group_wall_time"] > 0 and m["ms_per_iter"] > 0 and m["finished_at"]
        assert m["terminated"] == bool(table.column("terminated")[-1].as_py())
        if not m["terminated"]:  # a normal run ends at the budget
            assert table.num_rows == N + 1 and table.column("truncated").to_pylist() == [False] * N + [True]
        lr = table.column("lr").to_pylist()
        assert all(x is not None and x > 0 for x in lr[:-1]) and lr[-1] is None
    traj = load_dir(out, DEFAULT_SPEC)
    assert (traj.obs[:, 0, DEFAULT_SPEC.index("val")] == 1.0).all()
    assert np.isfinite(traj.val_loss[:, 0]).all() and (traj.val_loss[:, 0] > 3).all()  # ~ln(vocab) at init

    lines: list[str] = []
    info = summary(traj, str(out), log=lines.append)
    plots.trajectory_sample(traj, tmp_path / "summary.png")
    expected: dict = {}
    for i in range(4):
        name = JOB.explorer(i, DEFAULT_SPEC)[0].describe()["name"]
        expected[name] = expected.get(name, 0) + 1
    assert info["runs"] == 4 and info["by_task_controller"] == {"python_docs": expected}
    assert info["by_model_size"] == {"1x16": 4} and info["terminated"] == int(traj.terminated.sum())
    assert info["devices"] == sorted({m["device"] for m in traj.meta})
    assert lines[0].startswith(f"4 runs in {out}") and any(l.startswith("python_docs") for l in lines)
    png = (tmp_path / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    _no_training(monkeypatch)  # complete: a rerun trains nothing and touches nothing
    before = _mtimes(out)
    assert collect(out, JOB, 4, progress=False, log=lambda s: None) == 0
    assert _mtimes(out) == before


# ---- resume ---------------------------------------------------------------------------------

def test_resume_after_interrupt(collected, tmp_path, monkeypatch):
    out = tmp_path / "data"
    real, calls = cj.run_group, []

    def killed_during_second_group(o, job_dict, g, indices, spec_json, progress=False):
        calls.append(g)
        if g == 1:  # the first group is written; the second is killed while writing its first file
            def killed_write(table, where, *a, **k):
                Path(where).write_bytes(b"PAR1 half a file")
                raise KeyboardInterrupt

            monkeypatch.setattr(tfmt.pq, "write_table", killed_write)
        return real(o, job_dict, g, indices, spec_json, progress)

    monkeypatch.setattr(cj, "run_group", killed_during_second_group)
    with pytest.raises(KeyboardInterrupt):
        collect(out, JOB, 4, progress=False, log=lambda s: None)
    monkeypatch.undo()
    assert calls == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == sorted([JOB.filename(0), JOB.filename(1), "jobs"])  # no partial
    assert not list(out.glob(".*"))
    before = _mtimes(out)

    calls = _count_groups(monkeypatch)
    logs: list[str] = []
    assert collect(out, JOB, 4, progress=False, log=logs.append) == 2
    assert calls == [(1, [2, 3])]  # only the missing runs
    assert "2/4 runs present" in logs[0]
    after = _mtimes(out)
    assert {k: after[k] for k in before} == before and len(after) == 4
    _same_runs(out, collected[0], [JOB.filename(i) for i in range(4)])


def test_stale_temporary_file_is_removed_and_never_read(collected, tmp_path, monkeypatch):
    out = _copy(collected[0], tmp_path / "data")
    for i in (2, 3):
        (out / JOB.filename(i)).unlink()
    stale = out / f".{JOB.filename(3)}.k1ll3d.tmp"
    stale.write_bytes(b"PAR1" + os.urandom(300))  # a killed writer's half-written file
    other = out / ".run_s1_00000.parquet.w0rk1n.tmp"  # another job (seed 1) writing right now
    other.write_bytes(b"PAR1")
    assert len(load_dir(out, DEFAULT_SPEC)) == 2  # readers never see temporary files
    info = summary(load_dir(out, DEFAULT_SPEC), log=lambda s: None)
    assert info["runs"] == 2

    calls = _count_groups(monkeypatch)
    logs: list[str] = []
    assert collect(out, JOB, 4, progress=False, log=logs.append) == 2
    assert "removed 1 partial file(s)" in logs[0]
    assert not stale.exists() and other.exists()
    assert calls == [(1, [2, 3])]
    _same_runs(out, collected[0], [JOB.filename(i) for i in range(4)])


def test_growing_a_job_trains_only_the_new_runs(collected, tmp_path, monkeypatch):
    out = _copy(collected[0], tmp_path / "data")
    before = _mtimes(out)
    calls = _count_groups(monkeypatch)
    assert collect(out, JOB, 6, progress=False, log=lambda s: None) == 2
    assert calls == [(2, [4, 5])]
    after = _mtimes(out)
    assert sorted(after) == [JOB.filename(i) for i in range(6)]
    assert {k: after[k] for k in before} == before
    m = [read_run(out / JOB.filename(i), DEFAULT_SPEC)[1] for i in (4, 5)]
    assert [x["group"] for x in m] == [2, 2] and [x["seed"] for x in m] == [JOB.run_seed(4), JOB.run_seed(5)]
    assert collect(out, JOB, 6, progress=False, log=lambda s: None) == 0 and calls == [(2, [4, 5])]
    assert collect(out, JOB, 3, progress=False, log=lambda s: None) == 0  # shrinking deletes nothing
    assert len(list(out.glob("*.parquet"))) == 6


@pytest.mark.parametrize("change, field", [
    ({"tasks": ("python_docstrings",)}, "tasks"),
    ({"parallel": 4}, "parallel"),
    ({"mix": (("walk", 1.0),)}, "mix"),
])
def test_resume_with_other_arguments_is_refused(collected, tmp_path, monkeypatch, change, field):
    out = tmp_path / "data"
    (out / "jobs").mkdir(parents=True)
    shutil.copy(collected[0] / "jobs" / "seed0.json", out / "jobs" / "seed0.json")
    _no_training(monkeypatch)
    other = dataclasses.replace(JOB, **change)
    with pytest.raises(ValueError) as e:
        collect(out, other, 4, progress=False, log=lambda s: None)
    msg = str(e.value)
    assert str(out / "jobs" / "seed0.json") in msg and f"different {field} " in msg and "--seed" in msg
    assert json.loads((out / "jobs" / "seed0.json").read_text()) == JOB.to_dict()  # not overwritten
    # the same arguments under another job seed are a different job: accepted
    assert collect(out, dataclasses.replace(other, seed=1), 0, progress=False, log=lambda s: None) == 0
    assert json.loads((out / "jobs" / "seed1.json").read_text())["seed"] == 1


# ---- divergence -------------------------------------------------------------------------------

class AlwaysUp(SpecController):
    name = "always_up"

    def choose(self, k):
        return UP


def test_divergence_ends_the_episode_and_the_run():
    from lrpilot import data as datasets

    cfg = JOB.group(0).cfg
    up, normal = AlwaysUp(), Follow("constant", 1.0, seed=0)
    res = train(datasets.load("python_docs"), cfg, [RunSpec(0, up, "up", 10.0), RunSpec(1, normal, "normal", 1.0)],
                progress=False)
    rows = up.trajectory()
    assert up.terminated and up.stop
    assert 2 <= len(rows) < N + 1  # stopped early
    last, prev = rows[-1], rows[-2]
    assert last["terminated"] and not last["truncated"] and last["action"] == -1 and last["lr"] is None
    assert not any(r["terminated"] or r["truncated"] for r in rows[:-1])
    assert last["obs_val"] == last["obs_train"] == DEFAULT_SPEC.divergence_ratio == 1.5
    assert last["reward"] == pytest.approx(prev["obs_val"] - 1.5, abs=1e-6)
    raw = [last["val_loss"], last["train_loss"]]
    assert any(not math.isfinite(x) or x >= 1.5 * rows[0]["val_loss"] for x in raw)
    assert [r["action"] for r in rows[:-1]] == [UP] * (len(rows) - 1)
    assert res[0].final_info["stopped_at"] <= last["iter"] < cfg.max_iters  # training stopped there

    rows = normal.trajectory()
    assert not normal.terminated and len(rows) == N + 1
    assert rows[-1]["truncated"] and rows[-1]["step"] == N and rows[-1]["iter"] == cfg.max_iters
    assert not any(r["terminated"] for r in rows) and not any(r["truncated"] for r in rows[:-1])
    assert res[1].final_info["stopped_at"] is None



# ---- the command line -------------------------------------------------------------------------

def test_cli_collect_and_summary(collected, tmp_path, capsys):
    from lrpilot.app.cli import main

    out = tmp_path / "cli"
    assert main(["collect", "--runs", "2", "--parallel", "2", "--family", "tiny", "--tasks", "python_docs",
                 "--out", str(out), "--quiet"]) == 0
    assert "trained 2 run(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.parquet")) == [JOB.filename(0), JOB.filename(1)]
    _same_runs(out, collected[0], [JOB.filename(0), JOB.filename(1)])  # the CLI's job is JOB

    lrpilot_exe = Path(sys.executable).parent / "lrpilot"
    cmd = [str(lrpilot_exe)] if lrpilot_exe.exists() else [sys.executable, "-m", "lrpilot.app.cli"]
    p = subprocess.run(cmd + ["collect", "summary", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"2 runs in {out}" in p.stdout and "python_docs" in p.stdout and "outcomes:" in p.stdout
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    counts = json.loads((out / "summary.json").read_text())
    assert counts["runs"] == 2 and counts["by_task"] == {"python_docs": 2} and sum(counts["by_outcome"].values()) == 2

    packed = tmp_path / "packed.parquet"  # pack, then every reader takes the packed file like the directory
    assert main(["collect", "pack", str(out), str(packed)]) == 0 and "packed 2 runs" in capsys.readouterr().out
    _same_runs_packed(out, packed)
    assert main(["collect", "summary", str(packed), "--plot", str(tmp_path / "p.png")]) == 0
    assert "2 runs" in capsys.readouterr().out and (tmp_path / "p.png").exists()
    assert main(["collect", "pack", str(out)]) == 2 and "usage" in capsys.readouterr().err

    held = tmp_path / "held"
    assert main(["collect", "--runs", "2", "--parallel", "2", "--family", "tiny", "--tasks", "shakespeare_char",
                 "--out", str(held), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "held out" in err and "shakespeare_char" in err
    assert not (held / "jobs").exists()  # nothing recorded: the corrected command is not refused later
    assert main(["collect", "summary"]) == 2


def _same_runs_packed(a: Path, packed: Path) -> None:
    ta, tb = load_dir(a, DEFAULT_SPEC), load_dir(packed, DEFAULT_SPEC)
    np.testing.assert_array_equal(ta.obs, tb.obs)
    for k in ta.raw:
        np.testing.assert_array_equal(ta.raw[k], tb.raw[k])
    assert ta.meta == tb.meta and all(f.startswith(f"{packed}#run_") for f in tb.files)


# ---- Ray ----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # Ray starting its processes
def test_ray_collect_matches_local(collected, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from lrpilot.trainers import loop as trainer_loop

    def not_here(*a, **k):
        raise AssertionError("trained in the driver, not in a Ray worker")

    monkeypatch.setattr(trainer_loop, "train", not_here)  # workers import their own, unpatched
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        assert collect(out, JOB, 4, progress=False, ray_address="local", log=lambda s: None) == 4
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
    names = [JOB.filename(i) for i in range(4)]
    assert sorted(p.name for p in out.glob("*.parquet")) == names and not list(out.glob(".*"))
    _same_runs(out, collected[0], names)
    for n in names:
        a, b = read_run(out / n, DEFAULT_SPEC)[0], read_run(collected[0] / n, DEFAULT_SPEC)[0]
        assert a.equals(b)
