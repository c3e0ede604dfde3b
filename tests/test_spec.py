"""Spec versions: what each observes, re-deriving files of one version under another, refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_trajectories import META, Scripted

from lrpilot.controllers.base import Observation, RunInfo
from lrpilot.spec import RUN_CONTEXT, SPEC_V1, SPEC_V2, SPEC_V3, EnvSpec, ObsField
from lrpilot.trajectories import TrajectoryFileError, load_dir, write_run

BASE = 3e-3


def _drive(ctrl, vals, base_lr=BASE, max_iters=40):
    """Feeds observation k with val loss vals[k] (train loss 1.02 x val) to a controller that knows
    the run's context; returns its rows."""
    ctrl.reset(RunInfo(base_lr=base_lr, min_lr=base_lr / 10, warmup_iters=0, max_iters=max_iters, eval_interval=max_iters,
                       tokens_per_update=256, n_params=12345))
    for k, v in enumerate(vals):
        if ctrl.stop:
            break
        ctrl.observe(Observation(ctrl.points[k], train_loss=None if k == 0 else 1.02 * v, val_loss=v))
    return ctrl.trajectory()


def test_v3_observes_the_absolute_lr_beside_the_relative_one():
    assert SPEC_V3.names == ("progress", "log_lr", "log_abs_lr", "val", "train") and SPEC_V3.static == RUN_CONTEXT
    obs, _ = SPEC_V3.observation(4, 0.25, 2.0, 2.1, 4.0, base_lr=BASE)
    assert obs[SPEC_V3.index("log_lr")] == pytest.approx(math.log10(0.25))
    assert obs[SPEC_V3.index("log_abs_lr")] == pytest.approx(math.log10(0.25 * BASE), abs=1e-6)
    assert obs[SPEC_V3.index("val")] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="base LR"):
        SPEC_V3.observation(4, 0.25, 2.0, 2.1, 4.0)
    # the same dynamics as versions 1 and 2: files of either re-derive under it
    assert SPEC_V3.same_dynamics(SPEC_V1) and SPEC_V3.same_dynamics(SPEC_V2)
    np.testing.assert_array_equal(np.asarray(SPEC_V3.deterministic_values(np.array([1, 2]), np.array([1.0, 10.0]), -3.0)["log_abs_lr"]),
                                  [-3.0, -2.0])


def test_extra_fields_need_version_3_and_must_be_known():
    v1_fields = SPEC_V1.fields
    with pytest.raises(ValueError, match="version 3"):
        EnvSpec(fields=SPEC_V3.fields, static=RUN_CONTEXT, version=2)
    with pytest.raises(ValueError, match="among"):
        EnvSpec(fields=(*v1_fields, ObsField("grad_norm", 0.0, 1.0, True)), version=3)
    with pytest.raises(ValueError, match="among"):
        EnvSpec(fields=(*v1_fields, ObsField("log_abs_lr", -6.0, 0.0, False)), version=3)
    assert EnvSpec.from_json(SPEC_V3.to_json()) == SPEC_V3 and SPEC_V3.diff(SPEC_V2) == ["fields", "version"]


def test_a_collected_file_re_derives_under_every_version(tmp_path):
    """A run written under version 1 (what collection writes) loads under versions 2 and 3 with the
    observations those specs would have recorded themselves."""
    script = [6, 0, 3, 5, 1] * 4
    vals = [4.0 * math.exp(-0.05 * k) for k in range(21)]
    rows = _drive(Scripted(script, SPEC_V1), vals, base_lr=BASE)
    meta = dict(META, base_lr=BASE, n_params=12345, tokens_per_update=256)
    write_run(tmp_path / "v1.parquet", rows, meta, SPEC_V1)
    for spec in (SPEC_V2, SPEC_V3):
        got = load_dir(tmp_path, spec)
        direct = _drive(Scripted(script, spec), vals, base_lr=BASE)  # what a controller under `spec` records
        want = np.array([[r[f"obs_{n}"] for n in spec.names] for r in direct], np.float32)
        np.testing.assert_allclose(got.obs[0], want, atol=1e-6)
        np.testing.assert_allclose(got.static[0], [math.log10(BASE), math.log10(12345), math.log10(256), math.log10(40)], atol=1e-6)


def test_a_file_of_an_unknown_version_is_refused_naming_file_and_version(tmp_path):
    rows = _drive(Scripted([3] * 20, SPEC_V1), [4.0] * 21)
    path = tmp_path / "future.parquet"
    write_run(path, rows, META, SPEC_V1)
    table = pq.read_table(path)
    spec = json.loads(table.schema.metadata[b"lrpilot.spec"])
    spec["version"] = 9
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"lrpilot.spec": json.dumps(spec).encode()}), path)
    with pytest.raises(TrajectoryFileError, match="version 9") as e:
        load_dir(tmp_path, SPEC_V3)
    assert str(path) in str(e.value)


def test_a_file_without_its_raw_losses_cannot_be_re_derived(tmp_path):
    rows = _drive(Scripted([3] * 20, SPEC_V1), [4.0] * 21)
    for r in rows:
        r["val_loss"] = None
    write_run(tmp_path / "noraw.parquet", rows, dict(META, base_lr=BASE), SPEC_V1)
    assert len(load_dir(tmp_path, SPEC_V1)) == 1  # under its own spec it reads
    with pytest.raises(TrajectoryFileError, match="re-derive") as e:
        load_dir(tmp_path, SPEC_V3)
    assert "noraw.parquet" in str(e.value) and "version 3" in str(e.value)


def test_the_simulator_writes_the_absolute_lr_from_the_episode_base(tmp_path):
    import jax
    import jax.numpy as jnp

    from lrpilot.worldmodel.env import SimEnv
    from lrpilot.worldmodel.model import WorldModelConfig, build

    rows = _drive(Scripted([6] * 20, SPEC_V1), [4.0 * math.exp(-0.05 * k) for k in range(21)], base_lr=BASE)
    write_run(tmp_path / "r.parquet", rows, dict(META, base_lr=BASE, n_params=12345, tokens_per_update=256), SPEC_V1)
    traj = load_dir(tmp_path, SPEC_V3)
    cfg = dataclasses.replace(WorldModelConfig(n_layer=1, d_model=16, n_head=2, dropout=0.0), coding="delta")
    model, ser = build(cfg, SPEC_V3)
    params = model.init(jax.random.key(0), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    env = SimEnv(model, ser)
    ep = env.params(params, traj, max_prefix=1)
    _, st = env.reset_to(ep, 0, 1, 1)
    assert float(st.log_base_lr) == pytest.approx(math.log10(BASE), abs=1e-6)
    obs, st, *_ = env.step(jax.random.key(1), st, SPEC_V3.actions.index(2.0), ep)
    assert float(obs[SPEC_V3.index("log_abs_lr")]) == pytest.approx(math.log10(2 * BASE), abs=1e-5)
