"""`lrpilot evaluate`: a grid of tasks x controllers x seeds (x base-LR multipliers).

Every controller gets the same seeds (hence the same initialisation, batches and eval
batches), the same budget and the same protocol evaluations. Each finished run is written
atomically under `OUT/runs/...`; a rerun with the same arguments skips finished runs, so an
interrupted evaluation resumes. Results: `results.json` (FORMATS.md), `results.md` and PNG
plots per task. `train=False` (`--report-only`) writes them from the runs already finished,
each cell over the seeds that finished (its `n_seeds`), and trains nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

import lrpilot
from lrpilot import controllers, data as datasets
from lrpilot.app import checks, plots
from lrpilot.io import read_json, write_json, write_text

STAT_FIELDS = ("best_val_loss", "final_train_loss", "total_train_time", "ms_per_iter", "controller_overhead_ms",
               "avg_inference_tokens_per_second")


def safe_name(label: str) -> str:
    """A file-system-safe, collision-free directory name for a label such as 'policy:/a/b'."""
    clean = re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_")[:60]
    return clean if clean == label else f"{clean}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def mult_key(m: float) -> str:
    return f"{m:g}"


def mean_stderr(xs: Sequence[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    if len(xs) == 1:
        return float(xs[0]), None
    return float(np.mean(xs)), float(np.std(xs, ddof=1) / math.sqrt(len(xs)))


def aggregate(infos: list[dict]) -> dict:
    out: dict = {}
    for f in STAT_FIELDS:
        m, s = mean_stderr([i.get(f) for i in infos])
        out[f"{f}_mean"] = m
        if f in ("best_val_loss", "final_train_loss", "total_train_time"):
            out[f"{f}_stderr"] = s
    out["n_seeds"] = len(infos)
    out["n_diverged"] = sum(bool(i.get("diverged")) for i in infos)
    return out


@dataclasses.dataclass
class Grid:
    tasks: list[str]
    controllers: list[str]
    seeds: list[int]
    scale: str
    lr_mults: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    overrides: dict = dataclasses.field(default_factory=dict)


def run_dir(out: Path, task: str, lr_mult: float, ctrl: str, seed: int) -> Path:
    return out / "runs" / safe_name(task) / f"lr_x{mult_key(lr_mult)}" / safe_name(ctrl) / f"seed{seed}"


def _finished(out: Path, task: str, m: float, spec: str, seed: int, cfg_dict: dict, fingerprint: str | None = None) -> dict | None:
    """The run's final_info when it finished under the same training config (and, for a learned
    controller whose record names its checkpoint's fingerprint, the same checkpoint), else None."""
    fi = run_dir(out, task, m, spec, seed) / "final_info.json"
    if not fi.exists():
        return None
    info = read_json(fi)
    recorded = (info.get("controller_options") or {}).get("fingerprint")
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        return None  # another checkpoint now lives at that path: train it again
    return info if info.get("config") == cfg_dict else None


def evaluate(grid: Grid, out: Path, max_batch: int = 0, progress: bool = True, log=print,
             train: bool = True) -> dict:
    from lrpilot.trainers.config import scale_config
    from lrpilot.trainers.loop import RunSpec, device_info, train as train_runs

    # fail fast: every controller spec, task and config, and the output folder, before any training
    fingerprints = {spec: controllers.make(spec).describe().get("fingerprint") for spec in grid.controllers}
    for task in grid.tasks:
        datasets.check_task(task)
        scale_config(task, grid.scale, **grid.overrides)
    out = checks.out_dir(out) if train else Path(out)
    done: dict[tuple, dict] = {}  # (task, lr_mult, controller, seed) -> final_info of a finished run
    for task in grid.tasks:
        cfg = scale_config(task, grid.scale, **grid.overrides)
        cfg_dict = dataclasses.asdict(cfg)
        pending, n_done = [], 0
        for m in grid.lr_mults:
            for spec in grid.controllers:
                for seed in grid.seeds:
                    if (info := _finished(out, task, m, spec, seed, cfg_dict, fingerprints[spec])) is not None:
                        done[task, m, spec, seed] = info
                        n_done += 1
                        continue
                    pending.append(RunSpec(seed, controllers.make(spec), spec, m))
        if not train:
            log(f"[evaluate] {task}: reporting {n_done} finished runs; {len(pending)} not finished, left out")
            continue
        data = datasets.load(task)
        log(f"[evaluate] {task}: {n_done} runs already done, {len(pending)} to train ({cfg.max_iters} iters each)")
        step = max_batch if max_batch > 0 else len(pending) or 1
        for j in range(0, len(pending), step):
            batch = pending[j : j + step]
            for res in train_runs(data, cfg, batch, progress=progress):
                spec = next(b for b in batch if b.label == res.controller and b.seed == res.seed
                            and b.lr_mult == res.final_info["lr_mult"])
                d = run_dir(out, task, spec.lr_mult, spec.label, spec.seed)
                res.final_info["scale"] = grid.scale
                write_json(d / "curves.json", res.curves)
                write_json(d / "final_info.json", res.final_info)
                done[task, spec.lr_mult, spec.label, spec.seed] = res.final_info
            log(f"[evaluate] {task}: {min(j + step, len(pending))}/{len(pending)} runs trained")

    if not done:
        raise ValueError(f"no finished run in {out} matches these tasks, controllers, seeds, LR multipliers and "
                         f"training config; expected final_info.json files under {out / 'runs'} written by "
                         "`lrpilot evaluate` with the same arguments")
    # The machine that trained the runs, not the one writing the report.
    backend = ", ".join(sorted({i.get("backend") for i in done.values() if i.get("backend")}))
    device = ", ".join(sorted({i.get("device") for i in done.values() if i.get("device")}))
    if not device:
        backend, device = device_info()
    by_mult: dict = {}
    for m in grid.lr_mults:
        by_task: dict = {}
        for task in grid.tasks:
            by_task[task] = {}
            for spec in grid.controllers:
                seeds = [s for s in grid.seeds if (task, m, spec, s) in done]
                by_task[task][spec] = {**aggregate([done[task, m, spec, s] for s in seeds]), "seeds": seeds}
        by_mult[mult_key(m)] = by_task
    results = {"scale": grid.scale, "seeds": grid.seeds, "device": device, "backend": backend,
               "lrpilot_version": lrpilot.__version__, "overrides": grid.overrides,
               "results": by_mult.get("1", {}), "lr_mults": grid.lr_mults, "by_lr_mult": by_mult}
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_markdown(results))
    for task in grid.tasks:
        for m in grid.lr_mults:
            curves = {spec: [read_json(run_dir(out, task, m, spec, s) / "curves.json") for s in grid.seeds
                             if (task, m, spec, s) in done] for spec in grid.controllers}
            curves = {spec: sets for spec, sets in curves.items() if sets}
            if not curves:
                continue
            suffix = "" if m == 1 else f"_lr_x{mult_key(m)}"
            n = sorted({len(sets) for sets in curves.values()})
            title = f"{task}, scale {grid.scale}, base LR x{mult_key(m)}, mean of {'/'.join(map(str, n))} seeds"
            plots.loss_and_lr(task, curves, out / f"{safe_name(task)}{suffix}.png", title)
    return results


def fmt(m, s=None, digits=4):
    """m (and ± s when given) with `digits` decimals; "-" for a missing m."""
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def results_markdown(results: dict) -> str:
    lines = [f"# lrpilot evaluate: scale {results['scale']}, seeds {results['seeds']}, {results['device']}", ""]
    for mk, by_task in results["by_lr_mult"].items():
        for task, rows in by_task.items():
            lines += [f"## {task}, base LR x{mk}", "",
                      "| controller | best val loss | final train loss | time (s) | ms/iter | ctrl overhead ms/iter | diverged |",
                      "|---|---|---|---|---|---|---|"]
            ranked = sorted(rows.items(), key=lambda kv: kv[1]["best_val_loss_mean"] if kv[1]["best_val_loss_mean"] is not None else math.inf)
            for spec, r in ranked:
                lines.append(
                    f"| `{spec}` | {fmt(r['best_val_loss_mean'], r['best_val_loss_stderr'])} | "
                    f"{fmt(r['final_train_loss_mean'], r['final_train_loss_stderr'])} | {fmt(r['total_train_time_mean'], None, 1)} | "
                    f"{fmt(r['ms_per_iter_mean'], None, 1)} | {fmt(r['controller_overhead_ms_mean'], None, 3)} | "
                    f"{r['n_diverged']}/{r['n_seeds']} |")
            lines.append("")
    cells = [r for by_task in results["by_lr_mult"].values() for rows in by_task.values() for r in rows.values()]
    if any(r["n_seeds"] < len(results["seeds"]) for r in cells):
        lines += ["Some rows have fewer finished seeds than asked: a row's seed count is the denominator of its "
                  "diverged column, and a single seed has no standard error.", ""]
    lines.append("Mean ± standard error over seeds. best val loss: minimum over the protocol's evaluations (nats/char). "
                 "time and ms/iter are those of the batched group a run trained in (up to --max-batch runs in one "
                 "vmapped step), so they compare groups, not controllers; ctrl overhead is the controller's own "
                 "time per iteration, including any evaluations it asked for beyond the protocol's.")
    return "\n".join(lines) + "\n"
