"""One resumable training harness for the models lrpilot trains on its own data (world model,
policy): the caller plugs in a state, a `step` and an optional `evaluate`.

    result = fit(state, step, Schedule(steps=3000, eval_every=100, patience=5), evaluate=heldout,
                 state_dir="OUT.state", identity={"spec": ..., "model_config": ...})

* `state` is any pytree (parameters, optimizer state, ...); `step(state, i) -> (state, metrics)`
  is typically jitted, `metrics` a dict of scalars; `evaluate(state) -> dict` must hold
  "score" (lower is better), the selection criterion.
* Every `log_every` steps the mean of the step metrics since the last entry is appended to the
  history; every `eval_every` steps `evaluate` runs too, and the best-scoring state is kept.
  Training stops after `patience` evaluations without a better score (0: never).
* Every `checkpoint_every` steps (and at the end) the state, the best state (unless it is the
  state itself) and the history go into `state_dir` through orbax's `CheckpointManager` (the
  latest step only; orbax writes to a temporary directory and renames it, so a kill leaves the
  previous checkpoint). A rerun with the same `identity` resumes there; a different identity is
  refused, naming the keys and fields (`options(cfg)` makes a config's entry); a key recorded
  since the state was saved is not checked.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from lrpilot.io import json_safe
from lrpilot.progress import progress_bar


@dataclasses.dataclass(frozen=True)
class Schedule:
    """steps: total steps. eval_every / log_every / checkpoint_every: in steps (0: eval never;
    log_every 0: at evaluations; checkpoint_every 0: at evaluations). patience: evaluations
    without a better score before stopping (0: never). select_after: evaluations before this step
    (the untrained state at step 0 included) are logged but never selected, and patience counts
    from it (0: every evaluation counts; the last step's always does)."""

    steps: int
    eval_every: int = 0
    log_every: int = 0
    checkpoint_every: int = 0
    patience: int = 0
    select_after: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"harness: {f.name} must be >= 0, got {getattr(self, f.name)}")
        if (self.log_every == 0 or self.checkpoint_every == 0) and self.eval_every == 0:
            raise ValueError("harness: without evaluations give log_every and checkpoint_every")

    def every(self, name: str) -> int:
        return getattr(self, name) or self.eval_every


@dataclasses.dataclass
class FitResult:
    state: Any  # the state after the last step
    best_state: Any  # the best-scoring state (the last one without evaluations)
    best_score: float
    best_step: int
    history: list  # dicts: step, mean step metrics, evaluation metrics, seconds
    stopped_early: bool


def _manager(state_dir: Path):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    return ocp, ocp.CheckpointManager(state_dir.resolve(), options=opts)


def _restore(state_dir: Path, state, identity: dict, log) -> tuple[Any, Any, dict] | None:
    if not state_dir.is_dir():
        return None
    ocp, mngr = _manager(state_dir)
    step = mngr.latest_step()
    if step is None:
        return None
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    saved = meta.get("identity", {})
    want = json.loads(json.dumps(json_safe(identity)))
    for k in sorted(set(want) - set(saved)):  # recorded since this state was saved: it cannot tell
        log(f"{state_dir} was saved before its {k} was recorded: resuming without checking it")
    diff = sorted(k for k in saved if saved[k] != want.get(k))
    if diff:
        raise ValueError(f"{state_dir}: cannot resume, it was started with different {', '.join(diff)} "
                         f"({'; '.join(_differences(k, saved[k], want.get(k)) for k in diff)}); delete it or use another --out")
    target = {"state": state} if meta.get("best_is_state") else {"state": state, "best": state}
    trees = mngr.restore(step, args=ocp.args.Composite(trees=ocp.args.StandardRestore(target)))["trees"]
    log(f"resuming from {state_dir} at step {meta['step']}")
    return trees["state"], trees.get("best", trees["state"]), meta


def _differences(key: str, saved, want) -> str:
    """What differs under identity `key`: the fields of two dicts (a missing field: its default), else both values."""
    if isinstance(saved, dict) and isinstance(want, dict):
        return ", ".join(f"{key}.{f}: {saved.get(f, 'default')!r} in the state, {want.get(f, 'default')!r} now"
                         for f in sorted(set(saved) | set(want)) if saved.get(f) != want.get(f))
    return f"{key}: {saved!r} in the state, {want!r} now"


def options(cfg, skip=()) -> dict:
    """A config dataclass's fields that differ from their defaults, less `skip`: an identity entry for
    `fit` that states saved before a field existed still match (it was then at its default)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.name not in skip and getattr(cfg, f.name) != f.default}


def _save(state_dir: Path, step: int, state, best, meta: dict) -> None:
    """The state, and the best state unless it is the state itself (then only the meta's `best_is_state` flag)."""
    ocp, mngr = _manager(state_dir)
    trees = {"state": state} if meta["best_is_state"] else {"state": state, "best": best}
    mngr.save(step, args=ocp.args.Composite(trees=ocp.args.StandardSave(trees),
                                            meta=ocp.args.JsonSave(json_safe(meta))), force=True)
    mngr.wait_until_finished()


def fit(state, step: Callable, schedule: Schedule, evaluate: Callable | None = None, state_dir=None,
        identity: dict | None = None, progress: bool = True, desc: str = "train", log=print,
        postfix: Callable[[dict], dict] | None = None) -> FitResult:
    """Runs (or resumes) `schedule.steps` steps of `step` from `state`; see the module docstring."""
    if evaluate is None and schedule.eval_every:
        raise ValueError("harness: eval_every needs an evaluate function")
    if schedule.patience and not schedule.eval_every:
        raise ValueError("harness: patience needs eval_every")
    identity = dict(identity or {})
    state_dir = Path(state_dir) if state_dir is not None else None
    best, best_score, best_step, history, i = state, np.inf, 0, [], 0
    restored = _restore(state_dir, state, identity, log) if state_dir is not None else None
    if restored is not None:
        state, best, meta = restored
        i, best_step, history = int(meta["step"]), int(meta["best_step"]), list(meta["history"])
        # JSON has no inf: a state saved before any step could be selected (select_after) stores null
        best_score = np.inf if meta["best_score"] is None else float(meta["best_score"])
    elif evaluate is not None:
        ev = evaluate(state)
        best_score = float(ev["score"]) if schedule.select_after == 0 else np.inf
        history.append({"step": 0, **{k: float(v) for k, v in ev.items() if k != "score"}, "seconds": 0.0})

    def checkpoint(at: int) -> None:
        if state_dir is not None:
            _save(state_dir, at, state, best, {"step": at, "best_score": best_score, "best_step": best_step,
                                               "best_is_state": best is state, "history": history, "identity": identity})

    bar = progress_bar(schedule.steps, progress, desc)
    bar.update(i)
    t0, recent, stopped = time.perf_counter(), [], False
    try:
        while i < schedule.steps:
            state, metrics = step(state, i)
            recent.append(metrics)
            i += 1
            bar.update(1)
            at_eval = evaluate is not None and (i == schedule.steps or bool(schedule.eval_every) and i % schedule.eval_every == 0)
            if at_eval or i % schedule.every("log_every") == 0 or i == schedule.steps:
                entry = {"step": i, **{k: float(np.mean([float(m[k]) for m in recent])) for k in recent[0]}}
                recent = []
                if at_eval:
                    ev = {k: float(v) for k, v in evaluate(state).items()}
                    if ev["score"] < best_score and (i >= schedule.select_after or i == schedule.steps):
                        best, best_score, best_step = state, ev["score"], i
                    entry.update({k: v for k, v in ev.items() if k != "score"})
                elif evaluate is None:
                    best, best_step = state, i
                entry["seconds"] = time.perf_counter() - t0
                history.append(entry)
                bar.set_postfix(**(postfix(entry) if postfix else {}))
                if not progress and (at_eval or i % schedule.every("checkpoint_every") == 0 or i == schedule.steps):
                    log(f"step {i}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k not in ("step", "seconds")))
                if at_eval and schedule.patience and i - max(best_step, schedule.select_after) >= schedule.patience * schedule.eval_every:
                    log(f"early stop at step {i}: no better score since step {best_step}")
                    stopped = True
            if i % schedule.every("checkpoint_every") == 0 or i == schedule.steps or stopped:
                jax.block_until_ready(state)
                checkpoint(i)
            if stopped:
                break
    finally:
        bar.close()
    return FitResult(state, best, best_score, best_step, history, stopped)
