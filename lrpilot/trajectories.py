"""Trajectory files: one Parquet file per finished run, one row per environment step.

Columns (k = 0..L-1, L <= n_decisions + 1):

| column | type | meaning |
|---|---|---|
| step | int32 | decision index k |
| iter | int32 | training iteration of decision point k |
| obs_<field> | float32 | observation k, one column per spec field, in spec order |
| val_loss, train_loss | float64, null | raw metrics (nats) behind observation k |
| reward | float32, null | r_k = val_{k-1} - val_k (null at k = 0) |
| terminated | bool | divergence at step k (the last row) |
| truncated | bool | budget exhausted at step k (the last row, k = n) |
| action | int8 | action index taken at k (-1 on the last row) |
| lr | float64, null | absolute LR of interval k chosen by that action |
| train_loss_std | float64, null | std of the minibatch losses of the interval ending at k |
| grad_norm_mean, grad_norm_max | float64, null | global gradient norm before clipping, over that interval |
| clip_frac | float64, null | share of that interval's updates that were clipped |
| update_rms_ratio | float64, null | RMS of the interval's last parameter update / RMS of the parameters |
| tokens | int64, null | training tokens seen by decision k |

The health columns are null at k = 0 (no interval has ended) and absent from format-1 files,
which predate them (those still load: their columns read as missing).

File key-value metadata: `lrpilot.run` (JSON: task, model/training config, seed, controller,
base_lr, backend, device, wall time, library versions, ...; format 2 adds n_params,
tokens_per_update, default_lr and base_lr_mult), `lrpilot.spec` (the EnvSpec JSON) and
`lrpilot.format` (this format's version).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrpilot.io import atomic_path
from lrpilot.spec import EnvSpec, SpecMismatch

FORMAT_VERSION = "2"
READABLE_FORMATS = ("1", "2")
RAW_FLOAT = ("train_loss_std", "grad_norm_mean", "grad_norm_max", "clip_frac", "update_rms_ratio")
RAW_COLUMNS = ("val_loss", "train_loss", *RAW_FLOAT, "tokens")  # the raw metrics every observation derives from


class TrajectoryFileError(ValueError):
    """A trajectory file is unreadable or does not follow the format; the message names it."""


def schema(spec: EnvSpec, version: str = FORMAT_VERSION) -> pa.Schema:
    fields = ([pa.field("step", pa.int32(), nullable=False), pa.field("iter", pa.int32(), nullable=False)]
              + [pa.field(f"obs_{n}", pa.float32(), nullable=False) for n in spec.names]
              + [pa.field("val_loss", pa.float64()), pa.field("train_loss", pa.float64()), pa.field("reward", pa.float32()),
                 pa.field("terminated", pa.bool_(), nullable=False), pa.field("truncated", pa.bool_(), nullable=False),
                 pa.field("action", pa.int8(), nullable=False), pa.field("lr", pa.float64())])
    if version != "1":
        fields += [pa.field(c, pa.float64()) for c in RAW_FLOAT] + [pa.field("tokens", pa.int64())]
    return pa.schema(fields)


def write_run(path: str | Path, rows: list[dict], run_meta: dict, spec: EnvSpec) -> None:
    """Writes one run atomically: a crash leaves either no file or a complete one."""
    if not rows:
        raise ValueError(f"{path}: a trajectory needs at least one row")
    sch = schema(spec)
    table = pa.Table.from_pylist([{k: r.get(k) for k in sch.names} for r in rows], schema=sch)
    meta = {b"lrpilot.run": json.dumps(run_meta, sort_keys=True, default=str).encode(),
            b"lrpilot.spec": spec.to_json().encode(), b"lrpilot.format": FORMAT_VERSION.encode()}
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_run(path: str | Path, spec: EnvSpec) -> tuple[pa.Table, dict]:
    """Reads and validates one file against `spec`; returns (table, run metadata)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise TrajectoryFileError(f"{path}: not a readable Parquet file ({e})") from None
    meta = table.schema.metadata or {}
    for key in (b"lrpilot.run", b"lrpilot.spec", b"lrpilot.format"):
        if key not in meta:
            raise TrajectoryFileError(f"{path}: missing file metadata '{key.decode()}'; not an lrpilot trajectory file")
    version = meta[b"lrpilot.format"].decode()
    if version not in READABLE_FORMATS:
        raise TrajectoryFileError(f"{path}: format version {version}, expected one of {', '.join(READABLE_FORMATS)}")
    try:
        spec.check_same(json.loads(meta[b"lrpilot.spec"]), where=str(path))
    except SpecMismatch:
        raise
    except Exception as e:
        raise TrajectoryFileError(f"{path}: unreadable 'lrpilot.spec' metadata ({e})") from None
    want = schema(spec, version)
    for f in want:
        if f.name not in table.schema.names:
            raise TrajectoryFileError(f"{path}: missing column '{f.name}' ({f.type})")
        got = table.schema.field(f.name).type
        if got != f.type:
            raise TrajectoryFileError(f"{path}: column '{f.name}' has type {got}, expected {f.type}")
    steps = table.column("step").to_numpy()
    if len(steps) == 0 or len(steps) > spec.n_decisions + 1 or not np.array_equal(steps, np.arange(len(steps))):
        raise TrajectoryFileError(f"{path}: column 'step' must be 0..L-1 with L <= {spec.n_decisions + 1}, got {steps[:8]}...")
    actions = table.column("action").to_numpy()
    if np.any(actions[:-1] < 0) or np.any(actions >= spec.n_actions) or actions[-1] != -1:
        raise TrajectoryFileError(f"{path}: column 'action' must be in [0, {spec.n_actions}) except -1 on the last row")
    try:
        run_meta = json.loads(meta[b"lrpilot.run"])
    except ValueError as e:
        raise TrajectoryFileError(f"{path}: unreadable 'lrpilot.run' metadata ({e})") from None
    return table, run_meta


@dataclasses.dataclass
class Trajectories:
    """A directory of runs as padded arrays (R runs, n = n_decisions).

    obs: (R, n+1, n_obs) float32, rows past an episode's end repeat its last observation.
    actions: (R, n) int32, -1 past the end. length: (R,) number of observation rows.
    terminated: (R,) bool. val_loss: (R, n+1) float64 raw validation loss (nats), NaN where
    missing or past the end. raw: every raw metric column (RAW_COLUMNS) as (R, n+1) float64,
    NaN where missing, past the end, or absent from the file's format. meta: run metadata
    dicts. files: their paths.
    """

    spec: EnvSpec
    obs: np.ndarray
    actions: np.ndarray
    length: np.ndarray
    terminated: np.ndarray
    meta: list
    files: list
    val_loss: np.ndarray | None = None
    raw: dict | None = None

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx) -> "Trajectories":
        idx = np.asarray(idx, dtype=int)
        return Trajectories(self.spec, self.obs[idx], self.actions[idx], self.length[idx], self.terminated[idx],
                            [self.meta[i] for i in idx], [self.files[i] for i in idx],
                            None if self.val_loss is None else self.val_loss[idx],
                            None if self.raw is None else {k: v[idx] for k, v in self.raw.items()})

    def rewards(self) -> np.ndarray:
        """(R, n) rewards r_1..r_n derived from the observations (0 past the end)."""
        r = np.asarray(self.spec.reward(self.obs[:, :-1], self.obs[:, 1:]))
        valid = np.arange(1, self.spec.n_decisions + 1)[None] < self.length[:, None]
        return np.where(valid, r, 0.0).astype(np.float32)


def load_dir(paths: str | Path | list, spec: EnvSpec) -> Trajectories:
    """Loads every `*.parquet` file under the given directories (recursively) or files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.parquet"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such trajectory file or directory")
    n, f = spec.n_decisions, spec.n_obs
    obs = np.zeros((len(files), n + 1, f), np.float32)
    actions = np.full((len(files), n), -1, np.int32)
    length = np.zeros(len(files), np.int32)
    term = np.zeros(len(files), bool)
    raw = {c: np.full((len(files), n + 1), np.nan) for c in RAW_COLUMNS}
    metas = []
    for i, path in enumerate(files):
        table, meta = read_run(path, spec)
        o = np.stack([table.column(f"obs_{name}").to_numpy() for name in spec.names], axis=-1)
        L = len(o)
        obs[i, :L], obs[i, L:] = o, o[-1]
        a = table.column("action").to_numpy()[:-1]
        actions[i, : L - 1] = a
        length[i] = L
        term[i] = bool(table.column("terminated").to_numpy()[-1])
        for c in RAW_COLUMNS:
            if c in table.schema.names:
                raw[c][i, :L] = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
        metas.append(meta)
    return Trajectories(spec, obs, actions, length, term, metas, [str(p) for p in files], raw["val_loss"], raw)
