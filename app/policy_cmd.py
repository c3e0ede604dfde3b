"""`lrpilot policy train`, `lrpilot policy eval` and `lrpilot policy ensemble`."""

from __future__ import annotations

from pathlib import Path

from lrpilot.app import flags
from lrpilot.app.checks import data_dirs, out_parent, positive, resolve_ckpt


def cmd_policy_train(args) -> int:
    from lrpilot import checkpoints
    from lrpilot.policy.network import PolicyConfig
    from lrpilot.policy.train import train
    from lrpilot.trajectories import load_dir

    cfg = flags.build_config(PolicyConfig, args)
    dirs = data_dirs(args.data)
    out_parent(args.out)
    wm = resolve_ckpt(args.world_model)
    traj = load_dir(dirs, checkpoints.load(wm, kind="worldmodel").spec)  # the world model's spec
    train(wm, traj, cfg, args.out, progress=not args.quiet,
          meta={"data": list(args.data), "command": "lrpilot policy train"})
    return 0


def like_runs(paths, lr_mults) -> dict[str, list]:
    """{"M": [(name, RunInfo)]}: the runs of each finished run's DIR/final_info.json (or that file) as
    they would start at M x the run's default LR, one M per `lr_mults`, else at the run's own
    configured LR (its lr_mult). A ValueError names the file and the field it lacks."""
    import json

    from lrpilot.trainers.config import TrainConfig
    from lrpilot.trainers.loop import run_info

    runs = {}
    for arg in paths:
        f = Path(arg) / "final_info.json" if Path(arg).is_dir() else Path(arg)
        try:
            info = json.loads(f.read_text())
            cfg, n_params = TrainConfig().replace(**info["config"]), int(info["n_params"])
        except OSError as e:
            raise ValueError(f"--like {arg}: cannot read {f} ({e.strerror or e}); give a run directory with "
                             "final_info.json (lrpilot evaluate / train)") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--like {f}: needs a final_info.json with config and n_params "
                             f"({type(e).__name__}: {e})") from None
        name = f"{info.get('task', f.parent.name)} ({f.parent})"
        for m in lr_mults or [float(info.get("lr_mult", 1.0))]:
            runs.setdefault(f"{m:g}", []).append((name, run_info(cfg, int(info.get("seed", 0)), m, n_params)))
    return runs


def cmd_policy_eval(args) -> int:
    import json

    from lrpilot import checkpoints
    from lrpilot.io import write_json
    from lrpilot.policy.train import evaluate, format_report
    from lrpilot.trajectories import context_starts, load_dir

    for m in args.lr_mults or ():
        positive(m, "--lr-mults")
    positive(args.n_envs, "--n-envs")
    if args.like and args.data:
        raise ValueError("--like and --data: give one (episodes start from runs to come, or from the data's runs)")
    like = like_runs(args.like, args.lr_mults) if args.like else None
    spec = checkpoints.load(resolve_ckpt(args.world_model), kind="worldmodel").spec
    if like:
        starts = {m: context_starts(spec, [r for _, r in rs], [n for n, _ in rs]) for m, rs in like.items()}
    else:
        starts = load_dir(data_dirs(args.data or ["starter"]), spec)
    report = evaluate(resolve_ckpt(args.ckpt, "policy"), resolve_ckpt(args.world_model), starts, args.n_envs, args.seed,
                      lr_mults=args.lr_mults or ())
    print(format_report(report))
    if args.out:
        source = {"like": args.like} if like else {"data": args.data or ["starter"]}
        write_json(args.out, {"policy": args.ckpt, "world_model": args.world_model, **source,
                              "seed": args.seed, **({"lr_mults": args.lr_mults} if args.lr_mults else {}), **report})
        print(f"-> {args.out}")
    else:
        best = ({m: r["policy_minus_best"] for m, r in report["by_lr_mult"].items()} if "by_lr_mult" in report
                else report["policy_minus_best"])
        print(json.dumps(best, indent=1))
    return 0


def cmd_policy_ensemble(args) -> int:
    from lrpilot.policy.ensemble import stack

    out_parent(args.out)
    members = [resolve_ckpt(m, "policy") for m in args.members]
    stack(members, args.out, args.combine, meta={"command": "lrpilot policy ensemble", "members": list(args.members)})
    print(f"ensemble of {len(members)} policies ({args.combine}) -> {args.out}")
    return 0


def register(sub) -> None:
    from lrpilot.policy.ensemble import COMBINES
    from lrpilot.policy.network import PolicyConfig

    p = sub.add_parser("policy", help="train a policy with PPO inside a world model")
    ps = p.add_subparsers(dest="policy_command", required=True)
    t = ps.add_parser("train", help="PPO in the simulator; resumable (OUT.state)")
    t.add_argument("--world-model", required=True, help="world-model checkpoint ('pretrained': the shipped one)")
    t.add_argument("--data", nargs="+", default=["starter"], help="trajectories whose prefixes start the simulated episodes")
    t.add_argument("--out", required=True, help="policy checkpoint directory")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    flags.add_config_flags(t.add_argument_group("PPO (PolicyConfig)"), PolicyConfig)
    t.set_defaults(func=cmd_policy_train)
    e = ps.add_parser("eval", help="a policy against constant and cosine controllers inside a world model (same starts)")
    e.add_argument("--ckpt", required=True, help="policy checkpoint ('pretrained': the shipped one)")
    e.add_argument("--world-model", default="pretrained", help="world-model checkpoint ('pretrained': the shipped one)")
    e.add_argument("--data", nargs="+", help="trajectories whose prefixes start the episodes (default: starter)")
    e.add_argument("--like", nargs="+", metavar="RUN",
                   help="instead, start each episode where a run like each RUN (a run directory with final_info.json) "
                        "starts: its model size, tokens per update, length and configured LR (x each --lr-mults M "
                        "of its default LR), as the policy will meet it deployed")
    e.add_argument("--n-envs", type=int, default=256, help="simulated episodes per controller (same starts for all)")
    e.add_argument("--seed", type=int, default=0, help="seed of the starts and the simulator's samples")
    e.add_argument("--lr-mults", nargs="+", type=float, metavar="M",
                   help="one report per M: episodes started as deployed (observation 1) from the runs configured at "
                        "M x their default LR (within a factor 10^0.25), e.g. 0.1 1 10 as lrpilot select's validation")
    e.add_argument("--out", help="write the report here (JSON)")
    e.set_defaults(func=cmd_policy_eval)
    n = ps.add_parser("ensemble", help="stack policy checkpoints (PPO seeds of one recipe) into one checkpoint that "
                                       "acts on the median of their actions")
    n.add_argument("--members", nargs="+", required=True, metavar="CKPT",
                   help="policy checkpoints with the same spec, trunk and LR support ('pretrained': the shipped one)")
    n.add_argument("--combine", choices=COMBINES, default="median",
                   help="the action: the median of the members' actions by LR factor, or the most probable "
                        "action of their mean probabilities")
    n.add_argument("--out", required=True, help="ensemble checkpoint directory")
    n.set_defaults(func=cmd_policy_ensemble)
