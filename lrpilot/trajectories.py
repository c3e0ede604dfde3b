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
from lrpilot.spec import EnvSpec

FORMAT_VERSION = "2"
READABLE_FORMATS = ("1", "2")
PACKED_KEY = b"lrpilot.runs"  # a packed dataset: the runs' metadata, a JSON list keyed by run_id
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


def _read_table(path: Path) -> tuple[pa.Table, dict, str]:
    """The Parquet table of an lrpilot file, its key-value metadata and its format version, with
    the spec checked against nothing yet."""
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise TrajectoryFileError(f"{path}: not a readable Parquet file ({e})") from None
    meta = table.schema.metadata or {}
    packed = PACKED_KEY in meta
    for key in ((PACKED_KEY if packed else b"lrpilot.run"), b"lrpilot.spec", b"lrpilot.format"):
        if key not in meta:
            raise TrajectoryFileError(f"{path}: missing file metadata '{key.decode()}'; not an lrpilot trajectory file")
    version = meta[b"lrpilot.format"].decode()
    if version not in READABLE_FORMATS:
        raise TrajectoryFileError(f"{path}: format version {version}, expected one of {', '.join(READABLE_FORMATS)}")
    return table, meta, version


def _check(where: str, table: pa.Table, meta: dict, version: str, spec: EnvSpec, header: bool = True,
           rows: bool = True) -> None:
    """Validates the spec and the columns (`header`) and the rows of one run (`rows`) of `table`."""
    if header:
        own = file_spec(where, meta)
        if not spec.same_dynamics(own):
            spec.check_same(own, where=where)  # raises, naming the fields
        for f in schema(own, version):
            if f.name not in table.schema.names:
                raise TrajectoryFileError(f"{where}: missing column '{f.name}' ({f.type})")
            got = table.schema.field(f.name).type
            if got != f.type:
                raise TrajectoryFileError(f"{where}: column '{f.name}' has type {got}, expected {f.type}")
    if not rows:
        return
    steps = table.column("step").to_numpy()
    if len(steps) == 0 or len(steps) > spec.n_decisions + 1 or not np.array_equal(steps, np.arange(len(steps))):
        raise TrajectoryFileError(f"{where}: column 'step' must be 0..L-1 with L <= {spec.n_decisions + 1}, got {steps[:8]}...")
    actions = table.column("action").to_numpy()
    if np.any(actions[:-1] < 0) or np.any(actions >= spec.n_actions) or actions[-1] != -1:
        raise TrajectoryFileError(f"{where}: column 'action' must be in [0, {spec.n_actions}) except -1 on the last row")


def file_spec(where: str, meta: dict) -> EnvSpec:
    """The spec a file was written under (from its metadata); TrajectoryFileError naming the file
    and the version when this lrpilot cannot read it."""
    d = _json(where, meta[b"lrpilot.spec"], "lrpilot.spec")
    try:
        return EnvSpec.from_dict(d)
    except (ValueError, TypeError, KeyError) as e:
        raise TrajectoryFileError(f"{where}: unreadable 'lrpilot.spec' metadata, spec version {d.get('version') if isinstance(d, dict) else '?'} ({e})") from None


def _json(where: str, raw: bytes, key: str):
    try:
        return json.loads(raw)
    except ValueError as e:
        raise TrajectoryFileError(f"{where}: unreadable '{key}' metadata ({e})") from None


def read_run(path: str | Path, spec: EnvSpec) -> tuple[pa.Table, dict]:
    """Reads and validates one per-run file against `spec`; returns (table, run metadata)."""
    path = Path(path)
    table, meta, version = _read_table(path)
    if PACKED_KEY in meta:
        raise TrajectoryFileError(f"{path}: a packed dataset of several runs; read it with read_runs or load_dir")
    _check(str(path), table, meta, version, spec)
    spec.check_same(file_spec(str(path), meta), where=str(path))  # read_run returns the file's own columns
    return table, _json(str(path), meta[b"lrpilot.run"], "lrpilot.run")


def read_runs(path: str | Path, spec: EnvSpec) -> list[tuple[str, pa.Table, dict, EnvSpec]]:
    """Every run of a per-run file or a packed dataset, validated against `spec` (the same spec,
    or one with the same dynamics whose observations can be re-derived):
    [(name, table, metadata, the file's own spec)]; a packed run's name is 'PATH#run_id'."""
    path = Path(path)
    table, meta, version = _read_table(path)
    own = file_spec(str(path), meta)
    if PACKED_KEY not in meta:
        _check(str(path), table, meta, version, spec)
        return [(str(path), table, _json(str(path), meta[b"lrpilot.run"], "lrpilot.run"), own)]
    _check(str(path), table, meta, version, spec, rows=False)
    if "run_id" not in table.schema.names:
        raise TrajectoryFileError(f"{path}: a packed dataset without its 'run_id' column")
    runs = _json(str(path), meta[PACKED_KEY], PACKED_KEY.decode())
    ids = table.column("run_id").to_pylist()
    start: dict = {}
    for i, rid in enumerate(ids):
        start.setdefault(rid, i)
    bounds = sorted(start.values()) + [len(ids)]
    length = {ids[a]: b - a for a, b in zip(bounds[:-1], bounds[1:])}
    listed = [m.get("run_id") for m in runs]
    if sorted(map(str, listed)) != sorted(map(str, start)) or len(set(listed)) != len(listed):
        raise TrajectoryFileError(f"{path}: the runs listed in {PACKED_KEY.decode()} ({len(listed)}) are not the runs "
                                  f"with rows ({len(start)}), or one is listed twice")
    out = []
    for m in runs:
        rid = m["run_id"]
        run_table = table.slice(start[rid], length[rid]).drop_columns(["run_id"])
        where = f"{path}#{rid}"
        _check(where, run_table, meta, version, spec, header=False)
        out.append((where, run_table, {k: v for k, v in m.items() if k != "run_id"}, own))
    return out


def gpt_params(vocab: int, n_layer: int, n_embd: int, block_size: int, bias: bool = False) -> int:
    """Parameters of lrpilot's char GPT, positions included (what RunGroup.n_params counts)."""
    d = n_embd
    per_block = 12 * d * d + 2 * d + (11 * d if bias else 0)
    return vocab * d + n_layer * per_block + d + (d if bias else 0) + block_size * d


def run_context(where: str, meta: dict, spec: EnvSpec) -> np.ndarray:
    """The run's static fields under `spec` from its metadata (a format-1 run's parameter count
    and tokens per update from its model config)."""
    try:
        cfg = meta["config"]
        n_params = meta.get("n_params") or gpt_params(meta["vocab_size"], cfg["n_layer"], cfg["n_embd"],
                                                      cfg["block_size"], cfg.get("bias", False))
        tpu = meta.get("tokens_per_update") or cfg["batch_size"] * cfg["block_size"]
        return spec.static_values(meta["base_lr"], n_params, tpu, cfg["max_iters"])
    except (KeyError, TypeError, ValueError) as e:
        raise TrajectoryFileError(f"{where}: cannot derive the run context of spec version {spec.version} from its "
                                  f"metadata ({type(e).__name__}: {e})") from None


def derive_observations(where: str, table: pa.Table, meta: dict, spec: EnvSpec) -> np.ndarray:
    """(L, n_obs) observations under `spec` re-derived from a run's raw columns (val_loss,
    train_loss, lr) and its base LR, for a file written under another spec with the same dynamics."""
    val = table.column("val_loss").to_numpy(zero_copy_only=False).astype(np.float64)
    train = table.column("train_loss").to_numpy(zero_copy_only=False).astype(np.float64)
    lr = table.column("lr").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(val[0]) or "base_lr" not in meta:
        raise TrajectoryFileError(f"{where}: cannot re-derive spec version {spec.version}'s observations (no initial "
                                  "val_loss or base_lr); re-collect it or read it under its own spec")
    out = []
    for k in range(len(val)):
        lr_rel = 1.0 if k == 0 else lr[k - 1] / meta["base_lr"]
        out.append(spec.observation(k, lr_rel, val[k], None if k == 0 else train[k], val[0], meta["base_lr"])[0])
    return np.stack(out)


def pack(paths, out: str | Path, spec: EnvSpec) -> int:
    """Merges per-run files (or directories of them) into one Parquet dataset at `out`
    (atomically): the columns of `spec` plus `run_id` (the file's stem), rows grouped by run, the
    runs' metadata in `lrpilot.runs` (a JSON list keyed by run_id). Format-1 runs get the raw
    health columns as nulls; runs written under another spec with the same dynamics (e.g. the
    SimPLe rounds' spec-v2 runs) get their observation columns re-derived under `spec` from their
    raw metrics (the run context is not a column: readers derive it from the metadata). Returns
    the number of runs."""
    files = run_files(paths)
    if not files:
        raise FileNotFoundError(f"{paths}: no trajectory files to pack")
    sch = schema(spec)
    tables, metas, seen = [], [], {}
    for f in files:
        for where, table, meta, own in read_runs(f, spec):
            if not spec.same_dynamics(own):
                spec.check_same(own, where=where)  # raises, naming the fields
            if own.fields != spec.fields:  # a packed dataset holds one spec's observation columns
                obs = derive_observations(where, table, meta, spec).astype(np.float32)
                table = table.drop_columns([c for c in table.schema.names if c.startswith("obs_")])
                for j, name in enumerate(spec.names):
                    table = table.append_column(pa.field(f"obs_{name}", pa.float32(), nullable=False), pa.array(obs[:, j]))
            rid = where.split("#", 1)[1] if "#" in where else Path(where).stem
            if rid in seen:
                raise TrajectoryFileError(f"{where}: run '{rid}' also comes from {seen[rid]}")
            seen[rid] = where
            cols = {c: table.column(c) if c in table.schema.names else pa.nulls(table.num_rows, sch.field(c).type)
                    for c in sch.names}
            tables.append(pa.table({"run_id": pa.array([rid] * table.num_rows, pa.string()), **cols}))
            metas.append({"run_id": rid, **meta})
    merged = pa.concat_tables(tables).replace_schema_metadata({
        PACKED_KEY: json.dumps(metas, sort_keys=True, default=str).encode(), b"lrpilot.spec": spec.to_json().encode(),
        b"lrpilot.format": FORMAT_VERSION.encode()})
    with atomic_path(out) as tmp:
        pq.write_table(merged, tmp, row_group_size=64 * (spec.n_decisions + 1), compression="zstd")
    return len(metas)


def group_key(meta: dict, fallback: str) -> str:
    """A run's collected group (family/job seed/group: runs trained in one batched group share a task and a
    config), or `fallback` for a run without one."""
    if "group" in meta and "job_seed" in meta:
        return f"{meta.get('family')}/{meta['job_seed']}/{meta['group']}"
    return fallback


def run_files(paths) -> list[Path]:
    """The trajectory files of `paths` (files, or directories searched recursively for *.parquet), sorted per directory."""
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
    return files


@dataclasses.dataclass
class Trajectories:
    """A directory of runs as padded arrays (R runs, n = n_decisions).

    obs: (R, n+1, n_obs) float32, rows past an episode's end repeat its last observation.
    actions: (R, n) int32, -1 past the end. length: (R,) number of observation rows.
    terminated: (R,) bool. static: (R, n_static) the runs' context (specs with static fields). val_loss: (R, n+1) float64 raw validation loss (nats), NaN where
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
    static: np.ndarray | None = None  # (R, n_static) float32: the runs' context, for specs with static fields

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx) -> "Trajectories":
        idx = np.asarray(idx, dtype=int)
        return Trajectories(self.spec, self.obs[idx], self.actions[idx], self.length[idx], self.terminated[idx],
                            [self.meta[i] for i in idx], [self.files[i] for i in idx],
                            None if self.val_loss is None else self.val_loss[idx],
                            None if self.raw is None else {k: v[idx] for k, v in self.raw.items()},
                            None if self.static is None else self.static[idx])

    def at_lr_mult(self, mult: float, tol_decades: float = 0.25) -> np.ndarray:
        """Indices of the runs configured at `mult` x their default LR (run metadata base_lr_mult,
        format 2 and the starter runs) within `tol_decades` decades; runs that do not record it are
        left out. A ValueError names the multiplier and the range present when none is near."""
        m = np.array([float(x.get("base_lr_mult", np.nan)) for x in self.meta])
        if not mult > 0:
            raise ValueError(f"base-LR multiplier must be positive, got {mult}")
        with np.errstate(invalid="ignore", divide="ignore"):
            idx = np.flatnonzero(np.abs(np.log10(m) - np.log10(mult)) <= tol_decades)
        if not len(idx):
            have = m[np.isfinite(m)]
            rng = f"{have.min():.3g} to {have.max():.3g}" if len(have) else "none recorded"
            raise ValueError(f"no run configured within {tol_decades} decades of {mult:g} x its default LR "
                             f"(base_lr_mult of the {len(self)} runs: {rng})")
        return idx

    def rewards(self) -> np.ndarray:
        """(R, n) rewards r_1..r_n derived from the observations (0 past the end)."""
        r = np.asarray(self.spec.reward(self.obs[:, :-1], self.obs[:, 1:]))
        valid = np.arange(1, self.spec.n_decisions + 1)[None] < self.length[:, None]
        return np.where(valid, r, 0.0).astype(np.float32)


def context_starts(spec: EnvSpec, runs, names=None) -> Trajectories:
    """Runs about to start, as Trajectories of one observation each: the spec's first observation
    (val = train = 1 at the configured LR) and each run's context (`RunInfo`s: base LR, parameter
    count, tokens per update, length), what a deployed controller sees at its first decision.
    Simulated episodes from them start where such a run starts. meta: each RunInfo's fields and
    "task" (its name from `names`, else "run i"); files: the names."""
    runs = list(runs)
    if not runs:
        raise ValueError("context_starts: no run given")
    names = [f"run {i}" for i in range(len(runs))] if names is None else list(names)
    if len(names) != len(runs):
        raise ValueError(f"context_starts: {len(names)} names for {len(runs)} runs")
    R, n = len(runs), spec.n_decisions
    first = np.stack([spec.observation(0, 1.0, 1.0, None, 1.0, r.base_lr)[0] for r in runs])
    static = (np.stack([spec.static_values(r.base_lr, r.n_params, r.tokens_per_update, r.max_iters) for r in runs])
              if spec.n_static else None)
    raw = {c: np.full((R, n + 1), np.nan) for c in RAW_COLUMNS}
    return Trajectories(spec, np.repeat(first[:, None], n + 1, axis=1), np.full((R, n), -1, np.int32), np.ones(R, np.int32),
                        np.zeros(R, bool), [{"task": t, **dataclasses.asdict(r)} for t, r in zip(names, runs)], names,
                        raw["val_loss"], raw, static)


def load_dir(paths: str | Path | list, spec: EnvSpec) -> Trajectories:
    """Loads every run of the given files, packed datasets and directories (every `*.parquet`
    below them, recursively); a run found twice is an error naming both places."""
    runs, seen = [], {}
    for f in run_files(paths):
        for where, table, meta, own in read_runs(f, spec):
            key = (meta.get("family"), meta.get("job_seed"), meta.get("run_index"), meta.get("seed"), meta.get("task"))
            if key in seen and key[2] is not None:
                raise TrajectoryFileError(f"{where}: the same run as {seen[key]} (loaded twice: a packed file beside its runs?)")
            seen[key] = where
            runs.append((where, table, meta, own))
    n, f = spec.n_decisions, spec.n_obs
    obs = np.zeros((len(runs), n + 1, f), np.float32)
    actions = np.full((len(runs), n), -1, np.int32)
    length = np.zeros(len(runs), np.int32)
    term = np.zeros(len(runs), bool)
    raw = {c: np.full((len(runs), n + 1), np.nan) for c in RAW_COLUMNS}
    static = np.zeros((len(runs), spec.n_static), np.float32)
    metas = []
    for i, (where, table, meta, own) in enumerate(runs):
        if own.fields == spec.fields:
            o = np.stack([table.column(f"obs_{name}").to_numpy() for name in spec.names], axis=-1)
        else:
            o = derive_observations(where, table, meta, spec)
        if spec.n_static:
            static[i] = run_context(where, meta, spec)
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
    return Trajectories(spec, obs, actions, length, term, metas, [r[0] for r in runs], raw["val_loss"], raw,
                        static if spec.n_static else None)
