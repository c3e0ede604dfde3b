"""`lrpilot policy train` and `lrpilot simple`."""

from __future__ import annotations

import dataclasses


def cmd_policy_train(args) -> int:
    from collect.format import load_dir
    from lrpilot.spec import DEFAULT_SPEC
    from policy.network import PolicyConfig
    from trainers.policy import train
    from worldmodel.cli import data_dirs, resolve_ckpt

    over = {f.name: getattr(args, f.name) for f in dataclasses.fields(PolicyConfig) if getattr(args, f.name, None) is not None}
    cfg = PolicyConfig(**over)
    dirs = data_dirs(args.data)
    traj = load_dir(dirs, DEFAULT_SPEC)
    train(resolve_ckpt(args.world_model), traj, cfg, args.out, progress=not args.quiet,
          meta={"data": dirs, "command": "lrpilot policy train"})
    return 0


def register(sub) -> None:
    from policy.network import PolicyConfig

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
