"""`lrpilot policy train`, `lrpilot policy eval` and `lrpilot simple`."""

from __future__ import annotations

import dataclasses


def cmd_policy_train(args) -> int:
    from lrpilot.trajectories import load_dir
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.policy.network import PolicyConfig
    from lrpilot.policy.train import train
    from lrpilot.app.worldmodel_cmd import data_dirs, resolve_ckpt

    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(PolicyConfig) if getattr(args, f.name, None) is not None}
    cfg = PolicyConfig(**over)
    dirs = data_dirs(args.data)
    traj = load_dir(dirs, DEFAULT_SPEC)
    train(resolve_ckpt(args.world_model), traj, cfg, args.out, progress=not args.quiet,
          meta={"data": list(args.data), "command": "lrpilot policy train"})
    return 0


def cmd_policy_eval(args) -> int:
    import json

    from lrpilot.trajectories import load_dir
    from lrpilot.io import write_json
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.policy.train import evaluate, format_report
    from lrpilot.app.worldmodel_cmd import data_dirs, resolve_ckpt

    traj = load_dir(data_dirs(args.data), DEFAULT_SPEC)
    report = evaluate(resolve_ckpt(args.ckpt, "policy"), resolve_ckpt(args.world_model), traj, args.n_envs, args.seed)
    print(format_report(report))
    if args.out:
        write_json(args.out, {"policy": args.ckpt, "world_model": args.world_model, "data": args.data,
                              "seed": args.seed, **report})
        print(f"-> {args.out}")
    else:
        print(json.dumps(report["policy_minus_best"], indent=1))
    return 0


def register(sub) -> None:
    from lrpilot.policy.network import PolicyConfig

    p = sub.add_parser("policy", help="train a policy with PPO inside a world model")
    ps = p.add_subparsers(dest="policy_command", required=True)
    t = ps.add_parser("train", help="PPO in the simulator; resumable (OUT.state)")
    t.add_argument("--world-model", required=True, help="world-model checkpoint ('pretrained': the shipped one)")
    t.add_argument("--data", nargs="+", default=["starter"], help="trajectories whose prefixes start the simulated episodes")
    t.add_argument("--out", required=True, help="policy checkpoint directory")
    t.add_argument("--quiet", action="store_true")
    for f in dataclasses.fields(PolicyConfig):
        t.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=None)
    t.set_defaults(func=cmd_policy_train)
    e = ps.add_parser("eval", help="a policy against constant and cosine controllers inside a world model (same starts)")
    e.add_argument("--ckpt", required=True, help="policy checkpoint ('pretrained': the shipped one)")
    e.add_argument("--world-model", default="pretrained", help="world-model checkpoint ('pretrained': the shipped one)")
    e.add_argument("--data", nargs="+", default=["starter"], help="trajectories whose prefixes start the episodes")
    e.add_argument("--n-envs", type=int, default=256)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="write the report here (JSON)")
    e.set_defaults(func=cmd_policy_eval)
    register_simple(sub)


def cmd_simple(args) -> int:
    from lrpilot.policy.network import PolicyConfig
    from lrpilot.app.simple import SimpleConfig, run
    from lrpilot.app.worldmodel_cmd import data_dirs
    from lrpilot.worldmodel.model import WorldModelConfig

    wm_over = {k[3:]: v for k, v in vars(args).items() if k.startswith("wm_") and v is not None}
    pol_over = {k[4:]: v for k, v in vars(args).items() if k.startswith("ppo_") and v is not None}
    cfg = SimpleConfig(rounds=args.rounds, runs_per_round=args.runs_per_round, parallel=args.parallel,
                       family=args.family, tasks=tuple(args.tasks),
                       initial_data=tuple(data_dirs(args.initial_data)) if args.initial_data else (), seed=args.seed)
    run(args.out, cfg, WorldModelConfig(**wm_over), PolicyConfig(**pol_over), progress=not args.quiet)
    return 0


def register_simple(sub) -> None:
    from lrpilot.app.simple import SimpleConfig

    d = SimpleConfig()
    s = sub.add_parser("simple", help="the SimPLe loop: collect, retrain the world model, retrain the policy, repeat")
    s.add_argument("--rounds", type=int, default=d.rounds)
    s.add_argument("--runs-per-round", type=int, default=d.runs_per_round)
    s.add_argument("--parallel", type=int, default=d.parallel)
    s.add_argument("--family", default=d.family)
    s.add_argument("--tasks", nargs="+", default=list(d.tasks))
    s.add_argument("--initial-data", nargs="*", help="trajectory dirs to start from ('starter': the shipped dataset)")
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--out", required=True)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--wm-steps", dest="wm_steps", type=int)
    s.add_argument("--wm-d-model", dest="wm_d_model", type=int)
    s.add_argument("--wm-n-layer", dest="wm_n_layer", type=int)
    s.add_argument("--wm-n-head", dest="wm_n_head", type=int)
    s.add_argument("--wm-batch-size", dest="wm_batch_size", type=int)
    s.add_argument("--wm-eval-every", dest="wm_eval_every", type=int)
    s.add_argument("--ppo-iterations", dest="ppo_iterations", type=int)
    s.add_argument("--ppo-n-envs", dest="ppo_n_envs", type=int)
    s.add_argument("--ppo-n-minibatches", dest="ppo_n_minibatches", type=int)
    s.add_argument("--ppo-eval-envs", dest="ppo_eval_envs", type=int)
    s.set_defaults(func=cmd_simple)
