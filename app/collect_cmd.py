"""`lrpilot collect`, `lrpilot collect summary`, `pack` and `replay`."""

from __future__ import annotations

from pathlib import Path

from lrpilot.app import checks


def _mix(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for it in items:
        k, _, w = it.partition("=")
        try:
            out.append((k, float(w) if w else 1.0))
        except ValueError:
            raise ValueError(f"--explore takes KIND[=WEIGHT] with a number as WEIGHT, got {it!r}") from None
    return tuple(out)


def cmd_collect(args) -> int:
    from lrpilot.collect.edges import V2_MIX
    from lrpilot.collect.job import DEFAULT_MIX, Job, collect
    from lrpilot.collect.tasks import FAMILIES

    if args.action == "summary":
        return _summary(args)
    if args.action == "pack":
        return _pack(args)
    if args.action == "replay":
        return _replay(args)
    if args.dirs:
        raise ValueError(f"unexpected argument(s) {' '.join(args.dirs)}; did you mean 'collect summary DIR' or "
                         "'collect pack DIR OUT'?")
    if not args.out or args.runs is None:
        raise ValueError("lrpilot collect needs --runs N and --out DIR")
    checks.positive(args.runs, "--runs")
    checks.positive(args.parallel, "--parallel")
    default_mix = V2_MIX if FAMILIES[args.family].draws == "v2" else DEFAULT_MIX
    mix = _mix(args.explore) if args.explore else tuple(default_mix.items())
    if args.policy and not args.explore:
        mix = mix + (("policy", 0.5),)
    job = Job(seed=args.seed, family=args.family, tasks=tuple(args.tasks), parallel=args.parallel, mix=mix,
              policy=args.policy)
    n = collect(checks.out_dir(args.out), job, args.runs, ray_address=args.ray, progress=not args.quiet)
    print(f"[collect] trained {n} run(s); {args.out} is complete up to {args.runs} runs of job {args.seed}")
    return 0


def _summary(args) -> int:
    from lrpilot.app import plots
    from lrpilot.collect.summary import summary
    from lrpilot.io import write_json
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.trajectories import load_dir

    if not args.dirs:
        raise ValueError("usage: lrpilot collect summary DIR [DIR ...] [--plot PNG]")
    traj = load_dir(args.dirs, DEFAULT_SPEC)
    info = summary(traj, " ".join(args.dirs))
    first = Path(args.dirs[0])
    png = Path(args.plot) if args.plot else (first if first.is_dir() else first.parent) / "summary.png"
    plots.dataset_summary(traj, png)
    write_json(png.with_suffix(".json"), info)
    print(f"plot: {png}; counts: {png.with_suffix('.json')}")
    return 0


def _pack(args) -> int:
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.trajectories import pack

    if len(args.dirs) < 2:
        raise ValueError("usage: lrpilot collect pack DIR [DIR ...] OUT.parquet")
    *srcs, out = args.dirs
    if not out.endswith(".parquet"):
        raise ValueError(f"collect pack: OUT must be a .parquet file, got {out!r}")
    checks.out_dir(Path(out).parent or ".", "OUT")
    n = pack(srcs, out, DEFAULT_SPEC)
    where = ", ".join(srcs) if len(srcs) <= 3 else f"{', '.join(srcs[:2])} and {len(srcs) - 2} more"
    print(f"[collect] packed {n} runs of {where} into {out} ({Path(out).stat().st_size / 1e6:.1f} MB)")
    return 0


def _replay(args) -> int:
    from lrpilot.collect.replay import replay_group, replay_groups

    if not args.dirs or not args.out:
        raise ValueError("usage: lrpilot collect replay DIR_OR_FILE [...] --out DIR [--seed-offset N]")
    checks.data_dirs(args.dirs, "collect replay")
    if args.seed_offset == 0:
        raise ValueError("--seed-offset 0 retrains the runs with their own seeds; give another offset")
    out = checks.out_dir(args.out)
    groups = replay_groups(args.dirs)
    for files in groups:
        names = replay_group(files, out, args.seed_offset, progress=not args.quiet)
        print(f"[collect] replayed {files[0].parent}: {len(names)} runs of {files[0].name}'s group")
    print(f"[collect] {out}: replays of {sum(map(len, groups))} runs in {len(groups)} group(s), seeds + {args.seed_offset}")
    return 0


def register(sub) -> None:
    from lrpilot.collect.tasks import FAMILIES, default_tasks

    c = sub.add_parser("collect", help="collect real training trajectories (or: collect summary DIR, collect pack DIR OUT)",
                       description="Grow or resume a trajectory dataset; 'summary DIR...' prints its coverage and plots "
                                   "it; 'pack DIR... OUT.parquet' merges its run files into one Parquet dataset; 'replay DIR... --out DIR' "
                                   "retrains each collected group with its recorded actions and other seeds.")
    c.add_argument("action", nargs="?", choices=["summary", "pack", "replay"],
                   help="'summary DIR...': counts and coverage plot; 'pack DIR... OUT.parquet': one Parquet dataset; "
                   "'replay DIR... --out DIR': each collected group's runs trained again with their recorded actions "
                   "and other seeds (the noise ceiling of `worldmodel eval --replays`)")
    c.add_argument("dirs", nargs="*", help="trajectory directories or files (and, for pack, the output file last)")
    c.add_argument("--runs", type=int, help="total runs this job should have (finished ones are kept)")
    c.add_argument("--parallel", type=int, default=4, help="runs trained together in one batched step")
    c.add_argument("--tasks", nargs="+", default=list(default_tasks()),
                   help="corpora to draw runs from (default: every offline corpus this machine has)")
    c.add_argument("--family", default="cpu", choices=list(FAMILIES), help="model-size/run-length family")
    c.add_argument("--explore", nargs="+", help="KIND[=WEIGHT]: walk, cosine, wsd, constant, policy; cpu2/gpu also anneal, ramp, restarts")
    c.add_argument("--policy", help="policy checkpoint for the 'policy' explorer (epsilon-greedy)")
    c.add_argument("--seed", type=int, default=0, help="job seed (a different seed adds a different job)")
    c.add_argument("--out", help="dataset directory")
    c.add_argument("--ray", metavar="ADDRESS", help="run groups as Ray tasks ('local' starts a local instance)")
    c.add_argument("--plot", help="summary: PNG path (default DIR/summary.png; the counts go beside it as JSON)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--seed-offset", type=int, default=1, help="replay: added to every replayed run's seed")
    c.set_defaults(func=cmd_collect)
