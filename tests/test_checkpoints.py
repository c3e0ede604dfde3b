"""checkpoints: round trips, atomic saves, and the errors load raises."""

from __future__ import annotations

import dataclasses
import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrpilot import __version__, checkpoints
from lrpilot.checkpoints import store
from lrpilot.spec import DEFAULT_SPEC, SpecMismatch


class TinyMLP(nn.Module):
    width: int = 8
    out: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.out, param_dtype=jnp.bfloat16)(x)


CONFIG = {"width": 8, "out": 3, "hidden": (8, 8), "dropout": 0.1}


@pytest.fixture(scope="module")
def params():
    return TinyMLP().init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))


def _save(path, params, **kw):
    args = dict(kind="worldmodel", params=params, spec=DEFAULT_SPEC, model_config=CONFIG,
                meta={"step": 100, "metrics": {"loss": 0.25}, "command": "lrpilot train wm"})
    args.update(kw)
    return checkpoints.save(path, **args)


def _assert_tree_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip(tmp_path, params):
    p = _save(tmp_path / "wm", params)
    assert p == tmp_path / "wm" and checkpoints.exists(p)
    ck = checkpoints.load(p, kind="worldmodel", spec=DEFAULT_SPEC, model_config=CONFIG)
    assert isinstance(ck.params, dict) and isinstance(ck.params["params"]["Dense_0"], dict)
    _assert_tree_equal(ck.params, jax.device_get(params))
    assert ck.params["params"]["Dense_1"]["kernel"].dtype == jnp.bfloat16
    assert ck.kind == "worldmodel" and ck.spec == DEFAULT_SPEC and ck.path == p
    assert ck.model_config == {"width": 8, "out": 3, "hidden": [8, 8], "dropout": 0.1}
    assert ck.meta["step"] == 100 and ck.meta["metrics"] == {"loss": 0.25}
    assert ck.meta["lrpilot_version"] == __version__ and ck.extra is None
    # restored params drive the model like the originals
    x = jnp.ones((2, 4))
    np.testing.assert_array_equal(TinyMLP().apply(ck.params, x), TinyMLP().apply(params, x))
    # a meta copied from an older checkpoint (a refit, a stack) gets this save's version and time, not the old ones
    again = checkpoints.save(tmp_path / "refit", kind="worldmodel", params=params, spec=DEFAULT_SPEC, model_config=CONFIG,
                             meta={**ck.meta, "saved_at": "2000-01-01T00:00:00+0000", "lrpilot_version": "0.0.0"})
    meta = checkpoints.load(again).meta
    assert meta["saved_at"] > "2026" and meta["lrpilot_version"] == __version__ and meta["step"] == 100


def test_layout(tmp_path, params):
    p = _save(tmp_path / "wm", params)
    assert (p / "checkpoint.json").is_file() and (p / "params").is_dir() and not (p / "extra").exists()
    h = json.loads((p / "checkpoint.json").read_text())
    assert h["format"] == checkpoints.FORMAT_VERSION and h["kind"] == "worldmodel"
    assert h["lrpilot_version"] == __version__ and h["spec"] == json.loads(DEFAULT_SPEC.to_json())
    assert {tuple(e["path"]): (tuple(e["shape"]), e["dtype"]) for e in h["params"]} == {
        ("params", "Dense_0", "bias"): ((8,), "float32"),
        ("params", "Dense_0", "kernel"): ((4, 8), "float32"),
        ("params", "Dense_1", "bias"): ((3,), "bfloat16"),
        ("params", "Dense_1", "kernel"): ((8, 3), "bfloat16"),
    }
    assert [q.name for q in tmp_path.iterdir()] == ["wm"]  # no temp dirs left behind


def test_odd_leaves_and_extra(tmp_path, params):
    tree = {"a": [np.arange(3, dtype=np.int64), {"b": np.float32(2.5)}], "empty": np.zeros((0, 5), np.float16),
            "flag": np.array([True, False])}
    opt = optax.adam(1e-3)
    state = opt.init(params)
    state = opt.update(jax.tree_util.tree_map(jnp.ones_like, params), state, params)[1]
    p = _save(tmp_path / "wm", tree, extra=state)
    ck = checkpoints.load(p)
    _assert_tree_equal(ck.params, tree)
    # without a structure, extra comes back as nested dicts/lists of the same leaves
    assert ck.extra[0]["count"] == 1
    _assert_tree_equal(ck.extra[0]["mu"], jax.device_get(state[0].mu))
    # with one, the optax state itself
    ck = checkpoints.load(p, extra_like=opt.init(params))
    _assert_tree_equal(ck.extra, jax.device_get(state))
    with pytest.raises(checkpoints.CheckpointError, match="does not fit"):
        checkpoints.load(p, extra_like=optax.sgd(1e-3, momentum=0.9).init(params))


def test_kind_mismatch(tmp_path, params):
    p = _save(tmp_path / "wm", params)
    with pytest.raises(checkpoints.CheckpointError, match=f"{p} is a worldmodel checkpoint, expected policy"):
        checkpoints.load(p, kind="policy")
    with pytest.raises(ValueError, match="kind must be one of"):
        _save(tmp_path / "x", params, kind="critic")


def test_spec_mismatch_names_field(tmp_path, params):
    p = _save(tmp_path / "wm", params)
    other = dataclasses.replace(DEFAULT_SPEC, n_decisions=10)
    with pytest.raises(SpecMismatch, match=r"n_decisions.*has 20, expected 10") as e:
        checkpoints.load(p, spec=other)
    assert str(p) in str(e.value) and "actions" not in str(e.value).split("(")[0]


def test_model_config_mismatch(tmp_path, params):
    p = _save(tmp_path / "wm", params)
    cfg = {**CONFIG, "width": 16, "extra_key": 1}
    del cfg["dropout"]
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.load(p, model_config=cfg)
    msg = str(e.value)
    assert str(p) in msg and "dropout, extra_key, width" in msg
    assert "width: checkpoint has 8, expected 16" in msg and "dropout: checkpoint has 0.1, expected <absent>" in msg

    @dataclasses.dataclass
    class Cfg:
        width: int = 8
        out: int = 3
        hidden: tuple = (8, 8)
        dropout: float = 0.1

    checkpoints.load(p, model_config=Cfg())  # a dataclass config matches its dict (tuples as lists)


def test_interrupted_save(tmp_path, params, monkeypatch):
    p = tmp_path / "wm"
    _save(p, params, meta={"step": 1})

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    seen = []
    real_write_tree = store._write_tree

    def spy(directory, tree, name):
        seen.append(directory.parent)
        return real_write_tree(directory, tree, name)

    monkeypatch.setattr(store, "_write_tree", spy)
    monkeypatch.setattr(store, "_write_header", crash)  # params are on disk, the header never comes
    with pytest.raises(KeyboardInterrupt):
        _save(p, jax.tree_util.tree_map(lambda x: x + 1, params), meta={"step": 2})
    assert seen and seen[0] != p  # the save went to a temporary sibling
    ck = checkpoints.load(p)  # the previous checkpoint is intact
    assert ck.meta["step"] == 1
    _assert_tree_equal(ck.params, jax.device_get(params))

    # a crash that skipped the cleanup leaves a temp dir with params but no header: not a checkpoint
    monkeypatch.setattr(store.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path / "fresh", params)
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists() and not checkpoints.exists(tmp_path / "fresh")
    leftover = seen[-1]
    assert leftover.exists() and (leftover / "params").is_dir() and not checkpoints.exists(leftover)
    with pytest.raises(checkpoints.CheckpointError, match="checkpoint.json missing.*interrupted save"):
        checkpoints.load(leftover)
    # ... and does not get in the way of the next save
    _save(tmp_path / "fresh", params, meta={"step": 3})
    assert checkpoints.load(tmp_path / "fresh").meta["step"] == 3


def test_overwrite(tmp_path, params):
    p = tmp_path / "wm"
    _save(p, params, meta={"step": 1}, extra={"x": np.ones(2)})
    new = jax.tree_util.tree_map(lambda x: x * 2, params)
    _save(p, new, meta={"step": 2}, kind="policy")
    ck = checkpoints.load(p, kind="policy")
    assert ck.meta["step"] == 2 and ck.extra is None and not (p / "extra").exists()
    _assert_tree_equal(ck.params, jax.device_get(new))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["wm"]
    # an existing directory that is not a checkpoint is never clobbered
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a checkpoint"):
        _save(tmp_path / "notes", params)
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"


def test_missing_and_corrupt(tmp_path, params):
    with pytest.raises(checkpoints.CheckpointError, match=f"no checkpoint at {tmp_path / 'nope'}"):
        checkpoints.load(tmp_path / "nope")
    assert not checkpoints.exists(tmp_path / "nope")

    p = _save(tmp_path / "wm", params)
    f = p / "checkpoint.json"
    good = f.read_text()
    f.write_text(good[: len(good) // 2])
    with pytest.raises(checkpoints.CheckpointError, match=f"corrupt checkpoint: {f}: not valid JSON"):
        checkpoints.load(p)
    assert not checkpoints.exists(p)

    h = json.loads(good)
    del h["model_config"]
    f.write_text(json.dumps(h))
    with pytest.raises(checkpoints.CheckpointError, match=f"{f} lacks field.*model_config"):
        checkpoints.load(p)

    h = json.loads(good)
    h["format"] = checkpoints.FORMAT_VERSION + 1
    f.write_text(json.dumps(h))
    with pytest.raises(checkpoints.CheckpointError, match=f"{f}: field 'format' is {h['format']}, from a newer"):
        checkpoints.load(p)

    f.write_text(good)
    shutil.rmtree(p / "params")
    assert not checkpoints.exists(p)
    with pytest.raises(checkpoints.CheckpointError, match=f"corrupt checkpoint: cannot restore {p / 'params'}"):
        checkpoints.load(p)

    _save(p, params)
    h = json.loads(f.read_text())
    h["params"][0]["shape"] = [99]
    f.write_text(json.dumps(h))
    with pytest.raises(checkpoints.CheckpointError, match=r"leaf leaf_00000 is \(8,\) float32, .* says \(99,\)"):
        checkpoints.load(p)


def test_pretrained(tmp_path, monkeypatch, params):
    monkeypatch.setattr(store, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no pretrained policy checkpoint.*{tmp_path / 'policy'}"):
        checkpoints.pretrained("policy")
    _save(tmp_path / "policy", params, kind="policy")
    assert checkpoints.pretrained("policy") == tmp_path / "policy"
    with pytest.raises(ValueError, match="kind must be one of"):
        checkpoints.pretrained("nonsense")
