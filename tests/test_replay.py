"""Replays (`lrpilot.collect.replay`) and the noise ceiling they give (`lrpilot.worldmodel.ceiling`).

Real training is tiny (the `tiny` family: 40 iterations, `python_docs`), one group of two runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrpilot import trajectories as tfmt
from lrpilot.collect.job import Job, collect
from lrpilot.collect.replay import Replay, replay_group, replay_name
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.ceiling import noise_ceiling, replay_finals
from lrpilot.worldmodel.fidelity import final_val

JOB = Job(family="tiny", tasks=("python_docs",), parallel=2)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "data"
    collect(out, JOB, 2, progress=False, log=lambda *_: None)
    return [out / JOB.filename(i) for i in range(2)]


def test_a_replay_with_the_original_seeds_retrains_the_runs_exactly(group, tmp_path):
    names = replay_group(group, tmp_path, seed_offset=0)
    assert names == [f"replay0_{f.name}" for f in group]
    a, b = load_dir(group, DEFAULT_SPEC), load_dir([tmp_path / n for n in names], DEFAULT_SPEC)
    np.testing.assert_array_equal(a.obs, b.obs)  # the recorded actions, config, base LR and data are all it needs
    np.testing.assert_array_equal(a.actions, b.actions)
    assert [m["replay_of"] for m in b.meta] == [f.name for f in group] and b.meta[0]["controller"]["name"] == "replay"


def test_another_seed_keeps_the_schedule_and_changes_the_losses(group, tmp_path):
    names = replay_group(group, tmp_path, seed_offset=1)
    a, b = load_dir(group, DEFAULT_SPEC), load_dir([tmp_path / n for n in names], DEFAULT_SPEC)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert [m["seed"] for m in b.meta] == [m["seed"] + 1 for m in a.meta]
    assert not np.array_equal(final_val(a), final_val(b))
    # resumable: replays already written are kept, nothing is retrained
    mtimes = [(tmp_path / n).stat().st_mtime_ns for n in names]
    assert replay_group(group, tmp_path, seed_offset=1) == names
    assert [(tmp_path / n).stat().st_mtime_ns for n in names] == mtimes


def test_the_replay_controller_holds_after_its_plan():
    c = Replay([6, 0], DEFAULT_SPEC)
    assert [c.choose(k) for k in range(4)] == [6, 0, DEFAULT_SPEC.noop_action, DEFAULT_SPEC.noop_action]
    with pytest.raises(ValueError, match=r"action\(s\) \[9\] outside \[0, 7\) in r.parquet"):
        Replay([1, 9], DEFAULT_SPEC, "r.parquet")


def test_a_replay_group_is_one_task_and_config(group, tmp_path):
    table, meta = tfmt.read_run(group[1], DEFAULT_SPEC)
    other = tmp_path / "other.parquet"
    tfmt.write_run(other, table.to_pylist(), {**meta, "config": {**meta["config"], "n_embd": 64}}, DEFAULT_SPEC)
    with pytest.raises(ValueError, match=r"other.parquet: task/config/data"):
        replay_group([group[0], other], tmp_path / "out", 1)
    bare = tmp_path / "bare.parquet"
    tfmt.write_run(bare, table.to_pylist(), {k: v for k, v in meta.items() if k != "base_lr_mult"}, DEFAULT_SPEC)
    with pytest.raises(ValueError, match=r"bare.parquet: run metadata lacks 'base_lr_mult'"):
        replay_group([bare], tmp_path / "out", 1)
    packed = tmp_path / "packed.parquet"
    tfmt.pack(group, packed, DEFAULT_SPEC)
    with pytest.raises(ValueError, match=r"packed.parquet: a packed dataset of 2 runs"):
        replay_group([packed], tmp_path / "out", 1)
    assert not (tmp_path / "out").exists()  # refused before any training


def test_noise_ceiling_ranks_replays_against_originals():
    files = [f"r{i}.parquet" for i in range(7)]
    real = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    sim = np.array([0.3, 0.2, 0.1, 0.4, 0.5, 0.6, 0.7])  # group 1 reversed, group 2 right
    groups = [np.array([0, 1, 2]), np.array([3, 4, 5, 6])]
    same = {f: float(v) for f, v in zip(files, real)}
    nc = noise_ceiling(groups, files, real, sim, same)
    assert nc["n_groups"] == 2 and nc["n_runs"] == 7 and nc["real_vs_replay"]["mean"] == 1.0
    assert nc["sim_vs_real"]["mean"] == 0.0 and nc["ceiling_minus_sim"]["mean"] == 1.0 and nc["seed_sd"] == 0.0
    swapped = {**same, "r3.parquet": 0.55, "r6.parquet": 0.45}  # group 2's replays rank 3rd, 2nd, 4th, 1st
    nc = noise_ceiling(groups, files, real, sim, {k: v for k, v in swapped.items() if k != "r0.parquet"})
    assert nc["n_groups"] == 1 and nc["n_runs"] == 4  # group 1 keeps 2 replayed runs: too few to rank
    assert nc["real_vs_replay"]["mean"] == pytest.approx(-0.4) and nc["sim_vs_real"]["mean"] == 1.0
    assert nc["perfect_predictor"] is None


def test_replay_finals_refuse_a_file_that_is_not_a_replay(group, tmp_path):
    names = replay_group(group, tmp_path, seed_offset=1)
    rep = load_dir([tmp_path / n for n in names], DEFAULT_SPEC)
    last = [tfmt.read_run(tmp_path / n, DEFAULT_SPEC)[0].column("obs_val")[-1].as_py() for n in names]  # the files' last rows
    assert replay_finals(rep) == pytest.approx(dict(zip([f.name for f in group], last)))
    with pytest.raises(ValueError, match=r"run_s0_00000.parquet: not a replay"):
        replay_finals(load_dir(group, DEFAULT_SPEC))


def test_eval_reports_the_noise_ceiling_of_replayed_groups(tmp_path, tiny_wm):
    """Replays that are copies of the held-out runs: ceiling 1, and the world model's ranking on those groups is the
    section's own within-group Spearman."""
    from lrpilot import checkpoints
    from lrpilot.app.cli import main
    from lrpilot.collect import starter_dataset
    from lrpilot.worldmodel.model import WorldModelConfig
    from lrpilot.worldmodel.train import split_runs

    cfg, _, _, params = tiny_wm
    ckpt, rep = tmp_path / "wm", tmp_path / "replays"
    checkpoints.save(ckpt, kind="worldmodel", params=params, spec=DEFAULT_SPEC, model_config=cfg.to_dict())
    full = load_dir(starter_dataset(), DEFAULT_SPEC)
    _, ho = split_runs(full, WorldModelConfig.from_dict(cfg.to_dict()).heldout_frac, cfg.seed)
    for i in ho:
        table, meta = tfmt.read_run(full.files[i], DEFAULT_SPEC)
        tfmt.write_run(rep / replay_name(full.files[i], 1), table.to_pylist(), {**meta, "replay_of": full.files[i].split("/")[-1]},
                       DEFAULT_SPEC)
    args = ["worldmodel", "eval", "--ckpt", str(ckpt), "--data", "starter", "--contexts", "3", "--samples", "2", "--heldout-only"]
    assert main(args + ["--out", str(tmp_path / "e"), "--replays", str(rep)]) == 0
    held = json.loads((tmp_path / "e" / "forecast.json").read_text())["fidelity"]["heldout"]
    nc = held["noise_ceiling"]
    assert nc["n_groups"] == held["n_groups"] and nc["real_vs_replay"]["mean"] == 1.0
    assert nc["sim_vs_real"]["mean"] == pytest.approx(held["within_group_spearman"]["mean"])
    assert main(args + ["--out", str(tmp_path / "f"), "--replays", str(tmp_path / "none")]) == 2  # before any data
    assert main(args + ["--out", str(tmp_path / "f"), "--replays", str(rep), "--no-fidelity"]) == 2
    assert not (tmp_path / "f").exists()


def test_collect_replay_cli_replays_each_group_of_a_directory(group, tmp_path, capsys):
    from lrpilot.app.cli import main

    src, out = group[0].parent, tmp_path / "rep"
    assert main(["collect", "replay", str(src), "--out", str(out), "--quiet"]) == 0
    assert "replays of 2 runs in 1 group(s), seeds + 1" in capsys.readouterr().out
    rep = load_dir(out, DEFAULT_SPEC)
    assert sorted(m["replay_of"] for m in rep.meta) == [f.name for f in group]
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["collect", "replay", str(src), str(out), "--out", str(out), "--quiet"]) == 0  # replays skipped, kept
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    for bad in (["collect", "replay", str(src)], ["collect", "replay", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                ["collect", "replay", str(src), "--out", str(tmp_path / "x"), "--seed-offset", "0"]):
        assert main(bad) == 2
    assert not (tmp_path / "x").exists()
