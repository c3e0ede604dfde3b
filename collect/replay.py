"""Replays: a collected group's runs trained again on the same task, config, base LR and LR
schedule (the recorded actions), each with another seed.

A group's runs differ in their schedules, and each has its own seed: how much of their ranking
by final val is the seed's? The replays' ranking against the originals' is the real-vs-real
noise ceiling of the world model's within-group Spearman (`results/noise_ceiling/`).

    names = replay_group(files, out, seed_offset=1)  # one file per run, named replay<offset>_<original>

With seed_offset 0 a replay retrains the original runs exactly (the check that the recorded
actions, config and data are all a replay needs). A replay that diverges where its original did
not holds the LR from there (its episode ends, as in collection); one whose original diverged
holds the last recorded LR to the end.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

from lrpilot import data as datasets, trajectories as tfmt
from lrpilot.controllers.spec_controller import SpecController
from lrpilot.spec import DEFAULT_SPEC, EnvSpec
from lrpilot.trainers.config import TrainConfig


class Replay(SpecController):
    """Plays recorded action indices, one per decision; after them, holds the LR (the no-op)."""

    name = "replay"

    def __init__(self, actions: Sequence[int], spec: EnvSpec = DEFAULT_SPEC, source: str | None = None):
        super().__init__(spec)
        bad = [a for a in actions if not 0 <= int(a) < spec.n_actions]
        if bad:
            raise ValueError(f"Replay: action(s) {bad} outside [0, {spec.n_actions})" + (f" in {source}" if source else ""))
        self.plan, self.source = [int(a) for a in actions], source

    def choose(self, k: int) -> int:
        return self.plan[k] if k < len(self.plan) else self.spec.noop_action

    def describe(self) -> dict:
        return {"name": self.name, "actions": list(self.plan), "of": self.source}


def _one_run(f: Path, spec: EnvSpec):
    """(table, metadata, the file's own spec) of a per-run file; a packed dataset refused."""
    runs = tfmt.read_runs(f, spec)
    if len(runs) != 1 or "#" in runs[0][0]:
        raise ValueError(f"{f}: a packed dataset of {len(runs)} runs; replay per-run files (a collection directory)")
    return runs[0][1:]


def replay_name(original: str, seed_offset: int) -> str:
    return f"replay{seed_offset}_{Path(original).name}"


def _plan(files: Sequence[Path], spec: EnvSpec) -> tuple[str, TrainConfig, str | None, EnvSpec, list]:
    """(task, config, data sha256, the files' own spec, [(file, metadata, actions)]) of one group."""
    runs, first, own = [], None, None
    for f in files:
        table, meta, fspec = _one_run(f, spec)
        if own is not None and fspec != own:
            raise ValueError(f"{f}: its spec differs from {files[0]}'s; a replay group's files share one spec")
        own = fspec
        for field in ("task", "config", "seed", "base_lr_mult"):
            if field not in meta:
                raise ValueError(f"{f}: run metadata lacks '{field}', which a replay needs")
        key = (meta["task"], meta["config"], (meta.get("data") or {}).get("sha256"))
        if first is None:
            first = (f, key)
        elif key != first[1]:
            raise ValueError(f"{f}: task/config/data {key[0]!r} differ from {first[0]}'s {first[1][0]!r}; a replay group "
                             "trains one task and config (pass the files of one collected group)")
        actions = [int(a) for a in table.column("action").to_pylist() if a >= 0]
        runs.append((f, meta, actions))
    if first is None:
        raise ValueError("replay: no run files given")
    task, config, sha = first[1]
    fields = {fl.name for fl in dataclasses.fields(TrainConfig)}
    unknown = set(config) - fields
    if unknown:
        raise ValueError(f"{first[0]}: config field(s) {sorted(unknown)} unknown to this lrpilot's TrainConfig")
    return task, TrainConfig(**config), sha, own, runs


def replay_groups(paths: Sequence[str | Path], spec: EnvSpec = DEFAULT_SPEC) -> list[list[Path]]:
    """The per-run files under `paths` (`trajectories.run_files`; replays left out) by collected group
    (family, job seed and group in their metadata; else task and config), in a stable order."""
    by: dict[str, list[Path]] = {}
    for f in tfmt.run_files(paths):
        _, meta, _ = _one_run(f, spec)
        if "replay_of" in meta:
            continue
        key = tfmt.group_key(meta, f"{meta.get('task')}/{sorted((meta.get('config') or {}).items())}")
        by.setdefault(key, []).append(f)
    return [by[k] for k in sorted(by)]


def replay_group(files: Sequence[str | Path], out: str | Path, seed_offset: int, spec: EnvSpec = DEFAULT_SPEC,
                 progress: bool = False) -> list[str]:
    """Trains the runs of `files` (one collected group: one task and config) together, run i with
    seed + seed_offset and its recorded actions; writes `out/replay<offset>_<name>` per run
    (atomically; files already there are kept and their runs not retrained). Returns the names."""
    from lrpilot.collect.job import trained_meta
    from lrpilot.trainers.loop import RunSpec, train

    files = [Path(f) for f in files]
    task, cfg, sha, spec, runs = _plan(files, spec)  # replays observe and write in the originals' own spec
    out = Path(out)
    todo = [r for r in runs if not (out / replay_name(str(r[0]), seed_offset)).exists()]
    names = [replay_name(str(f), seed_offset) for f, _, _ in runs]
    if not todo:
        return names
    ds = datasets.load(task)
    if sha is not None and ds.meta.get("sha256") not in (None, sha):
        raise ValueError(f"{todo[0][0]}: recorded with {task} of sha256 {sha}; this machine's is {ds.meta.get('sha256')}")
    ctrls = [Replay(a, spec, f.name) for f, _, a in todo]
    specs = [RunSpec(int(m["seed"]) + seed_offset, c, c.name, float(m["base_lr_mult"])) for (_, m, _), c in zip(todo, ctrls)]
    t0 = time.time()
    results = train(ds, cfg, specs, progress=progress)
    wall = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    for (f, meta, _), rs, res, ctrl in zip(todo, specs, results, ctrls):
        m = {**meta, "seed": rs.seed, "controller": ctrl.describe(), "replay_of": f.name, "seed_offset": seed_offset,
             **trained_meta(res, ctrl, wall, len(todo))}
        tfmt.write_run(out / replay_name(str(f), seed_offset), ctrl.trajectory(), m, spec)
    return names

