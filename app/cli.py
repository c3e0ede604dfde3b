"""The `lrpilot` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lrpilot.app import checks, flags


def train_config(args, task: str):
    """The scale's TrainConfig for `task` with the training flags given; errors name the flags."""
    from lrpilot.trainers.config import TrainConfig, scale_config

    try:
        return scale_config(task, args.scale, **flags.given(TrainConfig, args))
    except ValueError as e:
        raise ValueError(flags.flagify(str(e), TrainConfig)) from None


def _training_flags(p) -> None:
    from lrpilot.trainers.config import TrainConfig

    g = p.add_argument_group("training overrides (default: the scale's value)")
    flags.add_config_flags(g, TrainConfig, aliases={"learning_rate": ["--lr"]}, default_note="the scale's value")


def _seeds(s: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5,7' -> [0, 5, 7]."""
    try:
        if "," in s:
            seeds = [int(x) for x in s.split(",") if x.strip()]
            if not seeds or min(seeds) < 0:
                raise ValueError
            return seeds
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list of seeds >= 0 (0,1,2), got {s!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"--seeds takes a positive count (3: seeds 0, 1, 2) or a list, got {n}; "
                                         "for one given seed write a list such as '0,' or '5,'")
    return list(range(n))


def cmd_train(args) -> int:
    from lrpilot import controllers, data
    from lrpilot.app.evaluate import fmt
    from lrpilot.io import write_json
    from lrpilot.trainers.loop import RunSpec, train

    # every argument is checked before any data is looked up or any step is trained
    ctrl = controllers.make(args.controller)
    cfg = train_config(args, args.task)
    checks.positive(args.lr_mult, "--lr-mult")
    data.check_task(args.task)
    out = checks.out_dir(args.out)
    ds = data.load(args.task)
    (res,) = train(ds, cfg, [RunSpec(args.seed, ctrl, args.controller, args.lr_mult)], progress=not args.quiet)
    res.final_info["scale"] = args.scale
    write_json(out / "curves.json", res.curves)
    write_json(out / "final_info.json", res.final_info)
    fi = res.final_info
    print(f"{args.task} {args.controller} seed {args.seed}: best_val_loss {fi['best_val_loss']:.4f}  "
          f"final_train_loss {fmt(fi['final_train_loss'])}  {fi['total_train_time']:.1f} s  "
          f"{fi['ms_per_iter']:.1f} ms/iter{' (compilation included)' if fi['ms_per_iter_includes_compile'] else ''}  "
          f"diverged {fi['diverged']}  -> {out}/final_info.json")
    if fi["stop_reason"]:
        print(f"  stopped early at iteration {fi['stopped_at']}: {fi['stop_reason']}")
    return 0


def cmd_evaluate(args) -> int:
    from lrpilot.app.evaluate import Grid, evaluate
    from lrpilot.trainers.config import TrainConfig

    checks.positive(args.max_batch, "--max-batch", allow_zero=True)
    for m in args.lr_mults:
        checks.positive(m, "--lr-mults")
    for task in args.tasks:
        train_config(args, task)  # the training flags, checked for every task before any run
    grid = Grid(tasks=args.tasks, controllers=args.controllers, seeds=args.seeds, scale=args.scale,
                lr_mults=args.lr_mults, overrides=flags.given(TrainConfig, args))
    evaluate(grid, Path(args.out), max_batch=args.max_batch, progress=not args.quiet, train=not args.report_only)
    print((Path(args.out) / "results.md").read_text())
    return 0


class _Help(argparse.HelpFormatter):
    """Shows each option's default (where it has a meaningful one and its help does not already)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default:" in h or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return h
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{h} (default: {shown})".replace("%", "%%") if "%" not in h else h


class Parser(argparse.ArgumentParser):
    def __init__(self, *a, **k):
        k.setdefault("formatter_class", _Help)
        super().__init__(*a, **k)


def build_parser() -> argparse.ArgumentParser:
    import lrpilot
    from lrpilot.controllers import names
    from lrpilot.trainers.config import SCALES

    p = Parser(prog="lrpilot", description="Learned learning-rate control from real training runs.")
    p.add_argument("--version", action="version", version=f"lrpilot {lrpilot.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train one char-level GPT under a controller")
    t.add_argument("--task", default="shakespeare_char", help="shakespeare_char, enwik8, text8, an offline corpus or file:PATH")
    t.add_argument("--scale", default="small", choices=SCALES, help="protocol scale (see the README's Scales)")
    t.add_argument("--controller", default="cosine", help=f"NAME[:key=value,...]; names: {', '.join(names())}")
    t.add_argument("--seed", type=int, default=0, help="run seed: initialisation, batches, evaluation batches")
    t.add_argument("--lr-mult", type=float, default=1.0, help="multiply the base and min LR (a mis-set LR)")
    t.add_argument("--out", required=True, help="directory for final_info.json and curves.json")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _training_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="tasks x controllers x seeds, with mean and standard error")
    e.add_argument("--tasks", nargs="+", default=["shakespeare_char"], help="datasets (names as for train --task)")
    e.add_argument("--controllers", nargs="+", default=["cosine"], help="controller specs, space separated")
    e.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a count (3) or a list (0,1,2)")
    e.add_argument("--scale", default="small", choices=SCALES, help="protocol scale (see the README's Scales)")
    e.add_argument("--lr-mults", nargs="+", type=float, default=[1.0], help="base-LR multipliers (robustness grid)")
    e.add_argument("--max-batch", type=int, default=0, help="at most this many runs trained together (0: all of a task)")
    e.add_argument("--out", required=True, help="grid directory (resumable: finished runs are kept)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.add_argument("--report-only", action="store_true",
                   help="write results.json, results.md and the plots from the runs already finished in --out "
                        "(each row over its finished seeds); train nothing")
    _training_flags(e)
    e.set_defaults(func=cmd_evaluate)

    _register_optional(sub)
    return p


def _register_optional(sub) -> None:
    """The other commands, each defined beside its work in the app layer."""
    from lrpilot.app import collect_cmd, policy_cmd, quickstart, select, simple, worldmodel_cmd

    for mod in (collect_cmd, worldmodel_cmd, policy_cmd, simple, select, quickstart):
        mod.register(sub)


NO_RESUME = ("train", "quickstart")  # commands whose runs are not saved until they finish


def main(argv: list[str] | None = None) -> int:
    """The `lrpilot` command. Returns 0, 2 (a named error) or 130 (Ctrl-C). Run from the command
    line (argv None), a Ctrl-C ends the process at once after saying so: the finished work is
    already on disk (every file is written atomically), and an orderly interpreter shutdown
    while XLA's threads are still busy can crash."""
    from lrpilot.data import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ValueError, FileNotFoundError, ImportError) as e:
        print(f"lrpilot {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in NO_RESUME:
            msg = f"interrupted; `lrpilot {args.command}` does not resume: nothing of this run was saved"
        else:
            msg = "interrupted; finished work is saved, rerun the same command to resume"
        print(f"lrpilot {args.command}: {msg}", file=sys.stderr)
        if argv is None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
