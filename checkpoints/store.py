"""Saving and restoring world-model and policy checkpoints (the only place that does).

A checkpoint is a directory:

    <path>/checkpoint.json   kind, spec, model_config, meta, lrpilot_version, format, manifests
    <path>/params/           orbax PyTree checkpoint of the parameter leaves
    <path>/extra/            (optional) orbax PyTree checkpoint of a second tree, e.g. optimizer state

Leaves are stored flat under keys "leaf_00000", ...; the manifest in checkpoint.json lists
each leaf's key path (a list of dict keys / sequence indices), shape and dtype, and is what
rebuilds the nested structure on load (no target tree needed). Zero-size leaves live in the
manifest only (orbax cannot store them).

A save is written into a temporary sibling directory and renamed onto <path> when complete,
so <path> is always absent, the previous checkpoint, or the new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import __version__
from lrpilot.io import json_safe, read_json
from lrpilot.spec import EnvSpec

FORMAT_VERSION = 1
KINDS = ("worldmodel", "policy")
HEADER = "checkpoint.json"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, or not the one the caller asked for."""


@dataclasses.dataclass
class Checkpoint:
    kind: str  # "worldmodel" or "policy"
    params: Any  # nested dict of numpy arrays, saved shapes and dtypes
    spec: EnvSpec
    model_config: dict  # JSON-able model hyper-parameters
    meta: dict  # free JSON-able info; always has lrpilot_version and saved_at
    path: Path
    extra: Any = None  # the optional second tree (e.g. optimizer state), or None


# ---- public API ---------------------------------------------------------------------------------
def save(path, *, kind: str, params, spec: EnvSpec, model_config: dict, meta: dict | None = None,
         extra: Any = None) -> Path:
    """Writes a checkpoint directory at `path` atomically.

    A previous checkpoint at `path` (a directory with a checkpoint.json) is replaced; any other
    non-empty file or directory there raises FileExistsError.

    params / extra: pytrees of arrays (jax or numpy; device arrays are copied to host).
    model_config: a JSON-able dict (a dataclass instance is converted with asdict).
    Returns the checkpoint path.
    """
    path = Path(path)
    _check_kind(kind)
    if not isinstance(spec, EnvSpec):
        raise TypeError(f"spec must be an EnvSpec, got {type(spec).__name__}")
    model_config = _jsonable(_as_dict(model_config), "model_config")
    full_meta = {**_jsonable(dict(meta or {}), "meta"),  # a copied meta's version and time are replaced by this save's
                 "lrpilot_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if path.exists() and not (path.is_dir() and ((path / HEADER).is_file() or not any(path.iterdir()))):
        raise FileExistsError(f"{path} exists and is not a checkpoint; refusing to overwrite it")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        header = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "lrpilot_version": __version__,
            "spec": spec.to_dict(),
            "model_config": model_config,
            "meta": full_meta,
            "params": _write_tree(tmp / "params", params, "params"),
            "extra": None if extra is None else _write_tree(tmp / "extra", extra, "extra"),
        }
        # The header goes last: a directory without it is never a checkpoint.
        _write_header(tmp / HEADER, header)
        _fsync_dir(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path, *, kind: str | None = None, spec: EnvSpec | None = None, model_config: dict | None = None,
         extra_like: Any = None) -> Checkpoint:
    """Restores the checkpoint at `path`, checking it against what the caller expects.

    kind / spec / model_config: when given, must match what was saved (else CheckpointError,
    or SpecMismatch for the spec, naming the file and the differing fields).
    extra_like: a tree with the structure of `extra` (e.g. `optimizer.init(params)`); the
    restored extra leaves are put into that structure. Without it extra comes back as nested
    dicts/lists built from the key paths (namedtuple fields become dict keys).
    Arrays come back as host numpy arrays with the saved shapes and dtypes.
    """
    path = Path(path)
    header = _read_header(path)
    where = str(path)
    saved_kind = header["kind"]
    if kind is not None:
        _check_kind(kind)
        if saved_kind != kind:
            raise CheckpointError(f"{path} is a {saved_kind} checkpoint, expected {kind}")
    if spec is not None:
        spec.check_same(header["spec"], where=where)
    try:
        saved_spec = EnvSpec.from_dict(header["spec"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path / HEADER}: field 'spec' is not a valid EnvSpec ({e})") from None
    if model_config is not None:
        _check_config(header["model_config"], _jsonable(_as_dict(model_config), "model_config"), path)

    params = _read_tree(path / "params", header["params"], None, path)
    extra = None
    if header.get("extra") is not None:
        extra = _read_tree(path / "extra", header["extra"], extra_like, path)
    elif extra_like is not None:
        raise CheckpointError(f"{path} has no extra tree (saved without extra=)")
    return Checkpoint(kind=saved_kind, params=params, spec=saved_spec, model_config=header["model_config"],
                      meta=header["meta"], path=path, extra=extra)


def exists(path) -> bool:
    """True when a complete checkpoint (readable checkpoint.json of a known format, its trees) is at `path`."""
    path = Path(path)
    try:
        header = _read_header(path)
        for name in ("params", "extra"):
            if any(int(np.prod(e["shape"])) for e in header.get(name) or []) and not (path / name).is_dir():
                return False
    except (CheckpointError, OSError, KeyError, TypeError):
        return False
    return True


def fingerprint(path) -> str:
    """Which checkpoint, not only where: the first 16 hex digits of the SHA-256 of its checkpoint.json
    (a checkpoint saved again at the same path gets another)."""
    return hashlib.sha256((Path(path) / "checkpoint.json").read_bytes()).hexdigest()[:16]


def pretrained(kind: str) -> Path:
    """Path of the checkpoint shipped with the package: checkpoints/pretrained/<kind>."""
    _check_kind(kind)
    p = PRETRAINED_DIR / kind
    if not exists(p):
        raise FileNotFoundError(f"no pretrained {kind} checkpoint shipped with this lrpilot (looked in {p}); "
                                f"train one and pass its path instead")
    return p


# ---- header -------------------------------------------------------------------------------------
_REQUIRED = ("format", "kind", "spec", "model_config", "meta", "params")


def _read_header(path: Path) -> dict:
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path} (no such directory)")
    f = path / HEADER
    if not f.is_file():
        raise CheckpointError(f"no checkpoint at {path} ({HEADER} missing: not a checkpoint, "
                              f"or an interrupted save)")
    try:
        header = read_json(f)
    except ValueError as e:  # read_json names the file
        raise CheckpointError(f"corrupt checkpoint: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"corrupt checkpoint: {f} holds a {type(header).__name__}, expected an object")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise CheckpointError(f"corrupt checkpoint: {f} lacks field(s) {', '.join(missing)}")
    fmt = header["format"]
    if not isinstance(fmt, int):
        raise CheckpointError(f"corrupt checkpoint: {f} field 'format' is {fmt!r}, expected an integer")
    if fmt > FORMAT_VERSION:
        raise CheckpointError(f"{f}: field 'format' is {fmt}, from a newer lrpilot "
                              f"({header.get('lrpilot_version')}); this lrpilot {__version__} reads "
                              f"format <= {FORMAT_VERSION}")
    if header["kind"] not in KINDS:
        raise CheckpointError(f"corrupt checkpoint: {f} field 'kind' is {header['kind']!r}, "
                              f"expected one of {KINDS}")
    return header


def _write_header(f: Path, header: dict) -> None:
    with open(f, "w") as fh:
        fh.write(json.dumps(header, indent=1, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _check_config(saved: dict, expected: dict, path: Path) -> None:
    missing = object()
    diffs = [k for k in sorted(set(saved) | set(expected)) if saved.get(k, missing) != expected.get(k, missing)]
    if diffs:
        show = lambda d, k: repr(d[k]) if k in d else "<absent>"  # noqa: E731
        detail = "; ".join(f"{k}: checkpoint has {show(saved, k)}, expected {show(expected, k)}" for k in diffs)
        raise CheckpointError(f"{path}: model_config differs in key(s) {', '.join(diffs)} ({detail})")


# ---- trees --------------------------------------------------------------------------------------
def _checkpointer():
    import orbax.checkpoint as ocp  # slow import; only when a tree is written or read

    return ocp, ocp.PyTreeCheckpointer()


def _write_tree(directory: Path, tree, name: str) -> list[dict]:
    """Saves the leaves of `tree` under `directory`; returns the manifest (one entry per leaf)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    manifest, stored = [], {}
    for i, (kp, leaf) in enumerate(flat):
        keys = [_key_entry(k, name, kp) for k in kp]
        arr = np.asarray(leaf)
        if not (jnp.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise TypeError(f"{name}{jax.tree_util.keystr(kp)}: leaf of dtype {arr.dtype} is not an array of numbers")
        key = f"leaf_{i:05d}"
        manifest.append({"key": key, "path": keys, "shape": list(arr.shape), "dtype": arr.dtype.name})
        if arr.size:
            stored[key] = arr
    if stored:
        _, ckptr = _checkpointer()
        ckptr.save(directory.resolve(), stored)
    return manifest


def _read_tree(directory: Path, manifest: list[dict], like: Any, path: Path):
    f = path / HEADER
    try:
        entries = [(e["key"], e["path"], tuple(e["shape"]), jnp.dtype(e["dtype"])) for e in manifest]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt checkpoint: {f} has a bad manifest for {directory.name} ({e!r})") from None
    want = {k for k, _, shape, _ in entries if int(np.prod(shape))}
    stored = {}
    if want:
        ocp, ckptr = _checkpointer()
        args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in want}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stored = ckptr.restore(directory.resolve(), restore_args=args)
        except Exception as e:
            raise CheckpointError(f"corrupt checkpoint: cannot restore {directory} ({type(e).__name__}: {e})") from None
    leaves = []
    for key, _, shape, dtype in entries:
        arr = np.asarray(stored[key]) if key in want and key in stored else np.zeros(shape, dtype)
        if arr.shape != shape or arr.dtype != dtype:
            raise CheckpointError(f"corrupt checkpoint: {directory} leaf {key} is {arr.shape} {arr.dtype}, "
                                  f"{f} says {shape} {dtype}")
        leaves.append(arr)

    if like is not None:
        like_leaves, treedef = jax.tree_util.tree_flatten(like)
        shapes = [tuple(np.shape(x)) for x in like_leaves]
        if shapes != [s for _, _, s, _ in entries]:
            raise CheckpointError(f"{path}: {directory.name} does not fit the given structure "
                                  f"({len(entries)} saved leaves vs {len(like_leaves)}, or different shapes)")
        return jax.tree_util.tree_unflatten(treedef, leaves)
    return _nest([(p, a) for (_, p, _, _), a in zip(entries, leaves)])


def _key_entry(k, name: str, kp) -> str | int:
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        if not isinstance(k.key, str):
            raise TypeError(f"{name}{tu.keystr(kp)}: dict keys must be strings, got {k.key!r}")
        return k.key
    if isinstance(k, tu.GetAttrKey):
        return k.name
    if isinstance(k, tu.SequenceKey):
        return k.idx
    if isinstance(k, tu.FlattenedIndexKey):
        return k.key
    raise TypeError(f"{name}{tu.keystr(kp)}: unsupported key type {type(k).__name__}")


def _nest(items: list[tuple[list, np.ndarray]]):
    """Nested dicts (str keys) / lists (int keys) from (key path, leaf) pairs in flatten order."""
    if len(items) == 1 and not items[0][0]:
        return items[0][1]
    root: dict = {}
    for keys, leaf in items:
        node = root
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf

    def fix(node):
        if not isinstance(node, dict):
            return node
        if node and all(isinstance(k, int) for k in node):
            return [fix(node[k]) for k in sorted(node)]
        return {k: fix(v) for k, v in node.items()}

    return fix(root)


# ---- helpers ------------------------------------------------------------------------------------
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")


def _as_dict(cfg) -> dict:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f"model_config must be a dict or a dataclass instance, got {type(cfg).__name__}")
    return cfg


def _jsonable(obj: dict, name: str) -> dict:
    """The JSON round trip of `obj` (tuples become lists, numpy scalars plain, NaN null)."""
    try:
        return json.loads(json.dumps(json_safe(obj), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be JSON-able: {e}") from None


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_dir(new: Path, path: Path) -> None:
    """Renames directory `new` onto `path`; a previous directory there is moved aside, then deleted."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old)  # onto the empty placeholder directory
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
