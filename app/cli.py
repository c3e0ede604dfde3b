"""The `lrpilot` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def _config_flags(p: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field (e.g. --max-iters, --batch-size), plus --lr."""
    from lrpilot.trainers.config import TrainConfig

    g = p.add_argument_group("training overrides (default: the scale's value)")
    for f in dataclasses.fields(TrainConfig):
        typ = {"int": int, "float": float, "bool": _bool}[f.type if isinstance(f.type, str) else f.type.__name__]
        flags = [f"--{f.name.replace('_', '-')}"] + (["--lr"] if f.name == "learning_rate" else [])
        g.add_argument(*flags, dest=f"cfg_{f.name}", type=typ, default=None, metavar=f.type.upper() if isinstance(f.type, str) else None)


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _overrides(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def _seeds(s: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5,7' -> [0, 5, 7]."""
    try:
        if "," in s:
            return [int(x) for x in s.split(",") if x]
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,1,2), got {s!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"--seeds takes a positive count (3: seeds 0, 1, 2) or a list, got {n}; "
                                         "for one given seed write a list such as '0,' or '5,'")
    return list(range(n))


def cmd_train(args) -> int:
    from lrpilot import controllers, data
    from lrpilot.io import write_json
    from lrpilot.trainers.config import scale_config
    from lrpilot.trainers.loop import RunSpec, train

    ctrl = controllers.make(args.controller)
    ds = data.load(args.task)
    cfg = scale_config(args.task, args.scale, **_overrides(args))
    (res,) = train(ds, cfg, [RunSpec(args.seed, ctrl, args.controller, args.lr_mult)], progress=not args.quiet)
    res.final_info["scale"] = args.scale
    out = Path(args.out)
    write_json(out / "curves.json", res.curves)
    write_json(out / "final_info.json", res.final_info)
    fi = res.final_info
    print(f"{args.task} {args.controller} seed {args.seed}: best_val_loss {fi['best_val_loss']:.4f}  "
          f"final_train_loss {fi['final_train_loss']:.4f}  {fi['total_train_time']:.1f} s  "
          f"{fi['ms_per_iter']:.1f} ms/iter  diverged {fi['diverged']}  -> {out}/final_info.json")
    return 0


def cmd_evaluate(args) -> int:
    from lrpilot.app.evaluate import Grid, evaluate

    grid = Grid(tasks=args.tasks, controllers=args.controllers, seeds=args.seeds, scale=args.scale,
                lr_mults=args.lr_mults, overrides=_overrides(args))
    evaluate(grid, Path(args.out), max_batch=args.max_batch, progress=not args.quiet, train=not args.report_only)
    print((Path(args.out) / "results.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    import lrpilot
    from lrpilot.controllers import names
    from lrpilot.trainers.config import SCALES

    p = argparse.ArgumentParser(prog="lrpilot", description="Learned learning-rate control from real training runs.")
    p.add_argument("--version", action="version", version=f"lrpilot {lrpilot.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one char-level GPT under a controller")
    t.add_argument("--task", default="shakespeare_char", help="shakespeare_char, enwik8, text8, an offline corpus or file:PATH")
    t.add_argument("--scale", default="small", choices=SCALES)
    t.add_argument("--controller", default="cosine", help=f"NAME[:key=value,...]; names: {', '.join(names())}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr-mult", type=float, default=1.0, help="multiply the base and min LR (a mis-set LR)")
    t.add_argument("--out", required=True)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="tasks x controllers x seeds, with mean and standard error")
    e.add_argument("--tasks", nargs="+", default=["shakespeare_char"])
    e.add_argument("--controllers", nargs="+", default=["cosine"], help="controller specs, space separated")
    e.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a count (3) or a list (0,1,2)")
    e.add_argument("--scale", default="small", choices=SCALES)
    e.add_argument("--lr-mults", nargs="+", type=float, default=[1.0], help="base-LR multipliers (robustness grid)")
    e.add_argument("--max-batch", type=int, default=0, help="at most this many runs trained together (0: all of a task)")
    e.add_argument("--out", required=True)
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--report-only", action="store_true",
                   help="write results.json, results.md and the plots from the runs already finished in --out "
                        "(each row over its finished seeds); train nothing")
    _config_flags(e)
    e.set_defaults(func=cmd_evaluate)

    _register_optional(sub)
    return p


def _register_optional(sub) -> None:
    """Subcommands that live in the other packages register themselves here."""
    for modname in ("lrpilot.app.collect_cmd", "lrpilot.app.worldmodel_cmd", "lrpilot.app.policy_cmd", "lrpilot.app.quickstart"):
        try:
            mod = __import__(modname, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name and modname.startswith(e.name):
                continue
            raise
        mod.register(sub)


def main(argv: list[str] | None = None) -> int:
    from lrpilot.data import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"lrpilot {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrpilot {args.command}: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
