"""`lrpilot select`: candidate policies compared on a fixed validation set of real runs, never on a
test task.

The validation set (VALIDATION) is a grid of offline corpora the dataset was collected on, at the
small protocol's size, base LR x0.1, x1 and x10, two seeds: every candidate and nanoGPT's cosine
train on the same seeds, batches and budget (`lrpilot evaluate` under OUT, resumable; a candidate
added later trains only its own runs). Each candidate's score is its mean best val loss over the
cells (task x multiplier), and beside it the mean and the worst of its per-cell margin over
cosine. The chosen candidate has the lowest score. shakespeare_char, enwik8 and text8 are refused.

A candidate may name several checkpoints of one recipe (PPO seeds: NAME=CKPT,CKPT): it is then
judged as the recipe, each cell the mean over its checkpoints, its standard error over the
checkpoints (PPO seed to seed, which one checkpoint's runs do not show), and a cell counts only where
every checkpoint finished it. The single checkpoints' scores are listed beside it, so choosing a
recipe does not reward the luckiest of several seeds.

Candidates judged before in OUT on the same validation set (its selection.json) stay in the table, their
finished runs reused: a later call names only what it adds (a name given again is judged anew, as given);
`only=True` (`--only`) writes the table for the given candidates alone. A previous candidate whose
checkpoint is gone is dropped, and said so.

    OUT/runs/...        the runs (as `lrpilot evaluate`)
    OUT/results.json    the grid (FORMATS.md)
    OUT/selection.json  {"validation": the grid, "reference": "cosine", "candidates": {name: {"controllers": [spec,
                        ...], "score", "margin_mean", "margin_worst", "member_scores": {spec: score} (several
                        checkpoints only), "cells": {"task x mult": {"best_val_loss", "stderr", "cosine",
                        "margin"}}}}, "chosen": name}
    OUT/selection.md    the same as a table
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lrpilot.io import write_json, write_text

REFERENCE = "cosine"
LEARNED = ("policy:", "policy_est:")  # controller specs a candidate may be given as (else: a checkpoint path)


@dataclasses.dataclass(frozen=True)
class Validation:
    tasks: tuple[str, ...] = ("python_docs", "gettext_catalogs")  # offline corpora (never a test task)
    lr_mults: tuple[float, ...] = (0.1, 1.0, 10.0)  # base-LR multipliers
    seeds: tuple[int, ...] = (0, 1)  # the same seeds for every controller
    scale: str = "small"  # protocol scale of the runs

    def __post_init__(self):
        from lrpilot.data import OFFLINE_TASKS, misplaced_tasks

        held, other = misplaced_tasks(self.tasks)
        if held:
            raise ValueError(f"select: {held} are test tasks; candidates are never chosen on them")
        if other or not self.tasks:
            raise ValueError(f"select: validation tasks must be offline corpora ({', '.join(OFFLINE_TASKS)}) or file:PATH, "
                             f"got {list(self.tasks)}")
        if not self.lr_mults or min(self.lr_mults) <= 0 or not self.seeds:
            raise ValueError(f"select: need positive LR multipliers and at least one seed, got {self.lr_mults}, {self.seeds}")


VALIDATION = Validation()


def _members(ctrls: str | list[str]) -> list[str]:
    """A candidate's checkpoints: one spec, or the list of one recipe's."""
    return [ctrls] if isinstance(ctrls, str) else list(ctrls)


def _cell(rows: dict, ctrls: list[str]) -> tuple[float, float | None] | None:
    """A cell's (mean, stderr) for a candidate's checkpoints `ctrls`; None unless every one finished it."""
    means = [rows[c]["best_val_loss_mean"] for c in ctrls]
    if any(m is None for m in means):
        return None
    if len(ctrls) == 1:
        return means[0], rows[ctrls[0]]["best_val_loss_stderr"]
    return float(np.mean(means)), float(np.std(means, ddof=1) / np.sqrt(len(means)))


def score(results: dict, candidates: dict[str, str | list[str]]) -> dict:
    """selection.json's candidates and choice from `lrpilot evaluate`'s results (module docstring);
    `candidates`: {name: controller spec, or a list of them for one recipe's checkpoints}."""
    def summary(ctrls: list[str]) -> dict:
        cells = {}
        for m, by_task in results["by_lr_mult"].items():
            for task, rows in by_task.items():
                c, ref = _cell(rows, ctrls), rows[REFERENCE]["best_val_loss_mean"]
                if c is not None and ref is not None:
                    cells[f"{task} x{m}"] = {"best_val_loss": c[0], "stderr": c[1], "cosine": ref, "margin": c[0] - ref}
        margins = [v["margin"] for v in cells.values()]
        return {"controllers": list(ctrls), "cells": cells,
                "score": float(np.mean([v["best_val_loss"] for v in cells.values()])) if cells else None,
                "margin_mean": float(np.mean(margins)) if cells else None,
                "margin_worst": float(np.max(margins)) if cells else None}

    out = {}
    for name, ctrls in candidates.items():
        ctrls = _members(ctrls)
        out[name] = summary(ctrls)
        if len(ctrls) > 1:
            out[name]["member_scores"] = {c: summary([c])["score"] for c in ctrls}
    ranked = sorted((n for n in out if out[n]["score"] is not None), key=lambda n: out[n]["score"])
    return {"reference": REFERENCE, "candidates": out, "chosen": ranked[0] if ranked else None}


def selection_markdown(sel: dict) -> str:
    cells = sorted({c for v in sel["candidates"].values() for c in v["cells"]})
    lines = ["# lrpilot select: validation set " + ", ".join(f"{k} {v}" for k, v in sel["validation"].items()), "",
             "| candidate | " + " | ".join(cells) + " | mean | mean margin over cosine | worst margin |",
             "|---" * (len(cells) + 4) + "|"]
    first = next(iter(sel["candidates"].values()), None)
    if first:
        lines.append("| cosine (reference) | " + " | ".join(f"{first['cells'][c]['cosine']:.4f}" if c in first["cells"] else "-"
                                                         for c in cells) + " | - | - | - |")
    for name, v in sel["candidates"].items():
        def cell(c):
            x = v["cells"].get(c)
            return "-" if x is None else f"{x['best_val_loss']:.4f}" + (f" ± {x['stderr']:.4f}" if x["stderr"] else "")
        mark = " (chosen)" if name == sel["chosen"] else ""
        seeds = v.get("member_scores")
        if seeds:
            mark += f" (mean of {len(seeds)}: " + " / ".join(f"{x:.4f}" if x is not None else "-" for x in seeds.values()) + ")"
        lines.append(f"| {name}{mark} | " + " | ".join(cell(c) for c in cells)
                     + (f" | {v['score']:.4f} | {v['margin_mean']:+.4f} | {v['margin_worst']:+.4f} |" if v["score"] is not None
                        else " | - | - | - |"))
    lines += ["", "Best val loss (nats/char), mean ± standard error over the seeds; margin: candidate - cosine in the "
              "same cell (negative: the candidate is better). The chosen candidate has the lowest mean. A candidate of several "
              "checkpoints (one recipe's PPO seeds): each cell the mean over them, its standard error over the checkpoints; "
              "their own means in brackets."]
    return "\n".join(lines) + "\n"


def previous(out: str | Path, validation: Validation, log=print) -> dict[str, list[str]]:
    """{name: controller specs} of the candidates in OUT/selection.json, if it was written for
    `validation`; those whose checkpoint no longer exists are left out (logged)."""
    from lrpilot import checkpoints
    from lrpilot.io import read_json

    f = Path(out) / "selection.json"
    if not f.exists():
        return {}
    sel = read_json(f)
    try:
        same = sel["validation"] == {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(validation).items()}
        cands = {name: list(v["controllers"]) for name, v in sel["candidates"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{f}: not a selection.json of lrpilot select (missing or malformed {e}); move it away to start "
                         "a new table (the runs under runs/ are reused)") from None
    if not same:
        log(f"[select] {f} was written for another validation set ({sel['validation']}); its candidates are not carried")
        return {}
    kept = {}
    for name, specs in cands.items():
        gone = [path for path in (c.partition(":")[2] for c in specs) if not checkpoints.exists(path)]
        if gone:
            log(f"[select] previous candidate {name!r} dropped: no checkpoint at {', '.join(gone)}")
        else:
            kept[name] = specs
    return kept


def select(candidates: dict[str, str | list[str]], out: str | Path, validation: Validation = VALIDATION, max_batch: int = 0,
           progress: bool = True, log=print, only: bool = False) -> dict:
    """Trains what is missing of the validation grid for `candidates` ({name: policy checkpoint, or
    a learned controller's spec `policy:CKPT` / `policy_est:CKPT`, or a list of them for one recipe})
    and cosine, and writes selection.json / selection.md under `out`, with the candidates of an
    earlier selection.json there unless `only` (module docstring)."""
    from lrpilot.app.evaluate import Grid, evaluate

    if not candidates:
        raise ValueError("select: give at least one candidate, NAME=POLICY_CHECKPOINT")
    ctrls = {name: [c if c.startswith(LEARNED) else f"policy:{c}" for c in _members(cs)] for name, cs in candidates.items()}
    if not all(ctrls.values()):
        raise ValueError(f"select: a candidate without a checkpoint: {candidates}")
    if not only:
        before = {n: c for n, c in previous(out, validation, log).items() if n not in ctrls}
        if before:
            log(f"[select] {len(before)} candidates judged before in {out} stay in the table (--only: the given ones alone)")
        ctrls = {**before, **ctrls}
    specs = list(dict.fromkeys(c for cs in ctrls.values() for c in cs))  # each checkpoint trained once
    grid = Grid(tasks=list(validation.tasks), controllers=[REFERENCE, *specs], seeds=list(validation.seeds),
                scale=validation.scale, lr_mults=list(validation.lr_mults))
    results = evaluate(grid, Path(out), max_batch=max_batch, progress=progress, log=log)
    sel = {"validation": dataclasses.asdict(validation), **score(results, ctrls)}
    write_json(Path(out) / "selection.json", sel)
    write_text(Path(out) / "selection.md", selection_markdown(sel))
    return sel


def _candidates(items: list[str]) -> dict[str, list[str]]:
    from lrpilot import checkpoints
    from lrpilot.app.checks import resolve_ckpt

    out = {}
    for it in items:
        name, sep, paths = it.partition("=")
        if not sep or not name or not paths or "" in paths.split(","):
            raise ValueError(f"--candidates: expected NAME=POLICY_CHECKPOINT[,POLICY_CHECKPOINT...], got {it!r}")
        if name in out:
            raise ValueError(f"--candidates: the name {name!r} is given twice")
        out[name] = []
        for path in paths.split(","):
            kind = next((k for k in LEARNED if path.startswith(k)), "")
            path = resolve_ckpt(path[len(kind):], kind="policy")
            checkpoints.load(path, kind="policy")  # a missing or wrong checkpoint is named before any run
            if kind + path in out[name]:
                raise ValueError(f"--candidates: {name!r} names {kind + path} twice")
            out[name].append(kind + path)
    return out


def cmd_select(args) -> int:
    v = Validation(tasks=tuple(args.tasks), lr_mults=tuple(args.lr_mults), seeds=tuple(args.seeds), scale=args.scale)
    sel = select(_candidates(args.candidates), args.out, v, max_batch=args.max_batch, progress=not args.quiet, only=args.only)
    print((Path(args.out) / "selection.md").read_text())
    print(f"chosen: {sel['chosen']} ({', '.join(sel['candidates'][sel['chosen']]['controllers'])})" if sel["chosen"]
          else "no candidate finished")
    return 0


def register(sub) -> None:
    from lrpilot.app.cli import _seeds
    from lrpilot.trainers.config import SCALES

    s = sub.add_parser("select", help="compare candidate policies on real runs of a validation set (never a test task)")
    s.add_argument("--candidates", nargs="+", required=True, metavar="NAME=CKPT[,CKPT]",
                   help="policy checkpoints to compare (CKPT, policy:CKPT, or policy_est:CKPT for its val-estimate mode); "
                        "several comma-separated checkpoints (one recipe's PPO seeds) are judged as one candidate, on their mean")
    s.add_argument("--out", required=True, help="the grid's directory (resumable: finished runs are kept)")
    s.add_argument("--tasks", nargs="+", default=list(VALIDATION.tasks), help="validation corpora (offline corpora only)")
    s.add_argument("--lr-mults", nargs="+", type=float, default=list(VALIDATION.lr_mults), help="base-LR multipliers")
    s.add_argument("--seeds", type=_seeds, default=list(VALIDATION.seeds), help="a count (2) or a list (0,1)")
    s.add_argument("--scale", default=VALIDATION.scale, choices=SCALES, help="protocol scale")
    s.add_argument("--max-batch", type=int, default=0, help="at most this many runs trained together (0: all of a task)")
    s.add_argument("--only", action="store_true", help="the table lists the given candidates alone (by default the "
                   "candidates of an earlier selection.json in --out on the same validation set stay, their runs reused)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_select)
