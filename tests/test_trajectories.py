"""Trajectory files without training: SpecController rows, the format (2, with the raw
training-health columns; format 1 still reads), schema and spec errors naming the file,
divergence as the spec defines it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lrpilot.controllers.base import Observation
from lrpilot.controllers.spec_controller import SpecController
from lrpilot.spec import DEFAULT_SPEC, SpecMismatch
from lrpilot.trajectories import RAW_COLUMNS, TrajectoryFileError, load_dir, pack, read_run, write_run

N = DEFAULT_SPEC.n_decisions
STARTER = Path(__file__).resolve().parents[1] / "collect" / "data" / "starter"
UP = DEFAULT_SPEC.actions.index(2.0)


# ---- rows without training: a SpecController driven by hand -------------------------------------

class Scripted(SpecController):
    """Plays a fixed list of actions."""

    name = "scripted"

    def __init__(self, actions, spec=DEFAULT_SPEC):
        super().__init__(spec)
        self.script = list(actions)

    def choose(self, k):
        return self.script[k]


def _drive(ctrl: SpecController, vals: list[float], max_iters: int = 40, base_lr: float = 1e-3) -> list[dict]:
    """Feeds observation k with val loss vals[k] (train loss 1.02 x val) until the episode ends."""
    ctrl.reset(run_info_for(max_iters, base_lr))
    for k, v in enumerate(vals):
        if ctrl.stop:
            break
        ctrl.observe(Observation(ctrl.points[k], train_loss=None if k == 0 else 1.02 * v, val_loss=v))
    return ctrl.trajectory()


def run_info_for(max_iters, base_lr):
    from lrpilot.controllers.base import RunInfo

    return RunInfo(base_lr=base_lr, min_lr=base_lr / 10, warmup_iters=0, max_iters=max_iters, eval_interval=max_iters)


def _episode(spec=DEFAULT_SPEC, diverge_at: int | None = None, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    n = spec.n_decisions
    vals = list(4.0 * np.exp(-0.03 * np.arange(n + 1)) + rng.uniform(0, 0.01, n + 1))
    if diverge_at is not None:
        vals[diverge_at] = 4.0 * 10  # val / val0 >= 1.5
    return _drive(Scripted(rng.integers(0, spec.n_actions, n).tolist(), spec), vals)


META = {"task": "python_docs", "seed": 7, "controller": {"name": "scripted"}, "config": {"n_layer": 1, "n_embd": 16,
        "max_iters": 40}, "base_lr": 1e-3, "device": "cpu", "nested": {"x": [1, 2.5, None]}}


def test_file_round_trip(tmp_path):
    full, short = _episode(seed=1), _episode(diverge_at=5, seed=2)
    assert len(full) == N + 1 and full[-1]["truncated"] and not full[-1]["terminated"]
    assert len(short) == 6 and short[-1]["terminated"] and not short[-1]["truncated"]
    write_run(tmp_path / "a.parquet", full, META, DEFAULT_SPEC)
    write_run(tmp_path / "b.parquet", short, dict(META, seed=8), DEFAULT_SPEC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # no temporary files left

    for name, rows, seed in (("a.parquet", full, 7), ("b.parquet", short, 8)):
        table, meta = read_run(tmp_path / name, DEFAULT_SPEC)
        assert table.to_pylist() == rows
        assert meta == dict(META, seed=seed)
        kv = pq.read_schema(tmp_path / name).metadata
        assert json.loads(kv[b"lrpilot.spec"]) == json.loads(DEFAULT_SPEC.to_json())
        assert json.loads(kv[b"lrpilot.run"]) == meta and kv[b"lrpilot.format"] == b"2"
        assert table.schema.field("reward").type == pa.float32() and table.column("reward")[0].as_py() is None

    traj = load_dir(tmp_path, DEFAULT_SPEC)
    assert traj.files == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    assert traj.obs.shape == (2, N + 1, DEFAULT_SPEC.n_obs) and traj.obs.dtype == np.float32
    assert traj.actions.shape == (2, N) and traj.val_loss.shape == (2, N + 1)
    np.testing.assert_array_equal(traj.length, [N + 1, 6])
    np.testing.assert_array_equal(traj.terminated, [False, True])
    assert [m["seed"] for m in traj.meta] == [7, 8]
    obs_cols = [f"obs_{n}" for n in DEFAULT_SPEC.names]
    for r, rows in enumerate((full, short)):
        L = len(rows)
        np.testing.assert_array_equal(traj.obs[r, :L], np.array([[row[c] for c in obs_cols] for row in rows], np.float32))
        np.testing.assert_array_equal(traj.actions[r, : L - 1], [row["action"] for row in rows[:-1]])
        np.testing.assert_array_equal(traj.val_loss[r, :L], [row["val_loss"] for row in rows])
        # padding: past the end obs repeat the last row, actions are -1, val_loss is NaN
        np.testing.assert_array_equal(traj.obs[r, L:], np.broadcast_to(traj.obs[r, L - 1], traj.obs[r, L:].shape))
        assert (traj.actions[r, L - 1 :] == -1).all() and np.isnan(traj.val_loss[r, L:]).all()
        rew = traj.rewards()[r]
        np.testing.assert_allclose(rew[: L - 1], [row["reward"] for row in rows[1:]], rtol=0, atol=1e-6)
        assert (rew[L - 1 :] == 0).all()
    vi = DEFAULT_SPEC.index("val")
    assert traj.obs[1, 5, vi] == 1.5 and traj.val_loss[1, 5] == 40.0  # raw loss kept, observation clamped


def test_raw_health_columns_round_trip_and_format_1_still_reads(tmp_path):
    rows = _episode(seed=3)
    for k, row in enumerate(rows):  # what the trainer's driver hands a SpecController, per interval
        row.update(train_loss_std=None if k == 0 else 0.1 * k, grad_norm_mean=None if k == 0 else 1.0 + k,
                   grad_norm_max=None if k == 0 else 2.0 + k, clip_frac=None if k == 0 else 0.5,
                   update_rms_ratio=None if k == 0 else 1e-3, tokens=k * 640)
    write_run(tmp_path / "v2.parquet", rows, META, DEFAULT_SPEC)
    starter = sorted(STARTER.glob("*.parquet"))[:2]  # format 1: no health columns
    assert pq.read_schema(starter[0]).metadata[b"lrpilot.format"] == b"1"
    traj = load_dir([tmp_path / "v2.parquet", *starter], DEFAULT_SPEC)
    assert set(traj.raw) == set(RAW_COLUMNS)
    np.testing.assert_array_equal(traj.raw["grad_norm_max"][0, 1:4], [3.0, 4.0, 5.0])
    assert np.isnan(traj.raw["grad_norm_max"][0, 0]) and traj.raw["tokens"][0, 2] == 1280
    assert np.isnan(traj.raw["clip_frac"][1:]).all() and np.isfinite(traj.raw["val_loss"][1:, 0]).all()


def test_packed_dataset_reads_like_its_files_and_refuses_bad_ones(tmp_path):
    files = sorted(STARTER.glob("*.parquet"))[:3]
    write_run(tmp_path / "runs" / "run_x.parquet", _episode(seed=4), META, DEFAULT_SPEC)
    srcs = [*files, tmp_path / "runs"]
    out = tmp_path / "packed.parquet"
    assert pack(srcs, out, DEFAULT_SPEC) == 4
    a, b = load_dir(srcs, DEFAULT_SPEC), load_dir(out, DEFAULT_SPEC)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.actions, b.actions)
    for k in a.raw:
        np.testing.assert_array_equal(a.raw[k], b.raw[k])
    assert a.meta == b.meta and b.files == [f"{out}#{Path(f).stem}" for f in a.files]
    table = pq.read_table(out)
    assert table.column_names[0] == "run_id" and json.loads(table.schema.metadata[b"lrpilot.runs"])[0]["run_id"]
    with pytest.raises(TrajectoryFileError, match=f"{files[0]}.*loaded twice"):
        load_dir([out, files[0]], DEFAULT_SPEC)  # a packed file beside its runs
    with pytest.raises(TrajectoryFileError, match="also comes from"):
        pack([files[0], files[0]], tmp_path / "twice.parquet", DEFAULT_SPEC)
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.drop_columns(["obs_val"]), bad)
    with pytest.raises(TrajectoryFileError, match=f"{bad}: missing column 'obs_val'"):
        load_dir(bad, DEFAULT_SPEC)
    meta = dict(table.schema.metadata)
    runs = json.loads(meta[b"lrpilot.runs"])
    meta[b"lrpilot.runs"] = json.dumps(runs[:-1]).encode()
    pq.write_table(table.replace_schema_metadata(meta), bad)
    with pytest.raises(TrajectoryFileError, match=f"{bad}: the runs listed"):
        load_dir(bad, DEFAULT_SPEC)



def test_pack_rederives_runs_of_another_spec(tmp_path):
    """A run written under a spec with other observation fields (same dynamics) is packed with its
    observations re-derived from its raw metrics: read back, it equals the run read from its file."""
    from lrpilot.spec import SPEC_V3, EnvSpec

    other = EnvSpec(fields=SPEC_V3.fields, version=3)  # log10 absolute LR as a field, no run context
    write_run(tmp_path / "v1" / "run_a.parquet", _episode(seed=5), META, DEFAULT_SPEC)
    write_run(tmp_path / "v3" / "run_b.parquet", _episode(other, seed=6), META, other)
    srcs = [tmp_path / "v1", tmp_path / "v3"]
    out = tmp_path / "packed.parquet"
    assert pack(srcs, out, DEFAULT_SPEC) == 2
    assert [c for c in pq.read_table(out).column_names if c.startswith("obs_")] == [f"obs_{n}" for n in DEFAULT_SPEC.names]
    for spec in (DEFAULT_SPEC, other):
        a, b = load_dir(srcs, spec), load_dir(out, spec)
        np.testing.assert_allclose(a.obs, b.obs, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(a.actions, b.actions)
    with pytest.raises(SpecMismatch, match="n_decisions"):
        spec10 = dataclasses.replace(DEFAULT_SPEC, n_decisions=10)
        write_run(tmp_path / "d10" / "run_c.parquet", _drive(Scripted([3] * 10, spec10), [4.0] * 11), META, spec10)
        pack([tmp_path / "v1", tmp_path / "d10"], tmp_path / "bad.parquet", DEFAULT_SPEC)  # other dynamics: refused

# ---- schema and spec errors -------------------------------------------------------------------

def _good_file(path: Path) -> Path:
    write_run(path, _episode(), META, DEFAULT_SPEC)
    return path


def _rewrite(path: Path, table: pa.Table, metadata: dict | None) -> None:
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_spec_mismatch_names_field_and_file(tmp_path):
    spec10 = dataclasses.replace(DEFAULT_SPEC, n_decisions=10)
    rows = _drive(Scripted([3] * 10, spec10), [4.0 - 0.1 * k for k in range(11)])
    assert len(rows) == 11 and rows[-1]["truncated"]
    path = tmp_path / "run10.parquet"
    write_run(path, rows, META, spec10)
    assert read_run(path, spec10)[0].num_rows == 11
    with pytest.raises(SpecMismatch, match="n_decisions") as e:
        read_run(path, DEFAULT_SPEC)
    assert str(path) in str(e.value) and "actions" not in str(e.value)
    with pytest.raises(SpecMismatch, match="n_decisions"):
        load_dir(tmp_path, DEFAULT_SPEC)


@pytest.mark.parametrize("damage, needle", [
    ("missing_column", "obs_train"),
    ("wrong_type", "action"),
    ("missing_spec", "lrpilot.spec"),
    ("missing_run", "lrpilot.run"),
    ("bad_run_json", "lrpilot.run"),
    ("bad_spec_json", "lrpilot.spec"),
    ("not_parquet", "Parquet"),
    ("bad_steps", "step"),
])
def test_bad_file_raises_naming_file(tmp_path, damage, needle):
    path = _good_file(tmp_path / "run.parquet")
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    if damage == "missing_column":
        _rewrite(path, table.drop_columns(["obs_train"]), meta)
    elif damage == "wrong_type":
        i = table.schema.get_field_index("action")
        _rewrite(path, table.set_column(i, "action", table.column("action").cast(pa.int32())), meta)
    elif damage in ("missing_spec", "missing_run"):
        del meta[needle.encode()]
        _rewrite(path, table, meta)
    elif damage == "bad_run_json":
        _rewrite(path, table, {**meta, b"lrpilot.run": b"{not json"})
    elif damage == "bad_spec_json":
        _rewrite(path, table, {**meta, b"lrpilot.spec": b"{not json"})
    elif damage == "not_parquet":
        path.write_bytes(b"this is not a parquet file\n" * 10)
    elif damage == "bad_steps":
        i = table.schema.get_field_index("step")
        _rewrite(path, table.set_column(i, table.schema.field("step"), pa.array(np.arange(N + 1)[::-1], pa.int32())), meta)
    with pytest.raises(TrajectoryFileError) as e:
        read_run(path, DEFAULT_SPEC)
    msg = str(e.value)
    assert str(path) in msg and needle in msg, msg
    if damage == "wrong_type":
        assert "int32" in msg and "int8" in msg


def test_load_dir_names_the_bad_file(tmp_path):
    for i in range(3):
        write_run(tmp_path / f"run_{i}.parquet", _episode(seed=i), META, DEFAULT_SPEC)
    assert len(load_dir(tmp_path, DEFAULT_SPEC)) == 3
    bad = tmp_path / "sub" / "run_bad.parquet"
    bad.parent.mkdir()
    table = pq.read_table(tmp_path / "run_1.parquet")
    _rewrite(bad, table.drop_columns(["val_loss"]), table.schema.metadata)
    with pytest.raises(TrajectoryFileError) as e:
        load_dir(tmp_path, DEFAULT_SPEC)
    assert str(bad) in str(e.value) and "val_loss" in str(e.value)
    for i in range(3):
        assert f"run_{i}.parquet" not in str(e.value)



def test_non_finite_loss_is_divergence():
    rows = _drive(Scripted([UP] * N), [4.0, 3.9, 3.8, float("nan"), 3.0])
    assert len(rows) == 4 and rows[-1]["terminated"] and not rows[-1]["truncated"]
    assert rows[-1]["obs_val"] == rows[-1]["obs_train"] == 1.5
    assert rows[-1]["reward"] == pytest.approx(rows[-2]["obs_val"] - 1.5)
    rows = _drive(Scripted([3] * N), [4.0, 3.9, 5.8, 6.0])  # val/val0 = 1.45 (train 1.479) < 1.5, then 1.5
    assert len(rows) == 4 and rows[-1]["terminated"] and not rows[2]["terminated"]
    assert rows[2]["obs_val"] == pytest.approx(1.45)



def test_the_shipped_packed_dataset_v2_holds_2000_runs_with_the_raw_metrics():
    """The file the package ships (collect/data/v2/README.md): one run_id per run, every run with
    the training-health metrics, its metadata listing each run once."""
    from lrpilot.collect import shipped_dataset
    from lrpilot.trajectories import PACKED_KEY

    path = shipped_dataset("v2")
    if path.is_dir():
        pytest.skip("collect/data/v2.parquet is not packed in this checkout")
    table = pq.read_table(path, columns=["run_id", *RAW_COLUMNS])
    ids = table.column("run_id").to_numpy(zero_copy_only=False)
    runs = json.loads(pq.read_metadata(path).metadata[PACKED_KEY])
    assert len(runs) >= 2000 and sorted(m["run_id"] for m in runs) == sorted(set(ids))
    for c in RAW_COLUMNS:  # per run, each metric measured at least once (the first row has no interval)
        seen = {i for i, v in zip(ids, table.column(c).is_valid().to_numpy(zero_copy_only=False)) if v}
        assert seen == set(ids), f"{c}: {len(set(ids) - seen)} runs without it"
