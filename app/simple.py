"""The SimPLe loop: collect real runs, retrain the world model on everything so far, retrain
the policy inside it, repeat.

    DIR/round_<r>/data/        real runs collected in round r (exploration, and from round 1 the
                               previous round's policy with epsilon noise)
    DIR/round_<r>/worldmodel   world model trained on the initial data and rounds 0..r
    DIR/round_<r>/policy       policy trained by PPO in that world model
    DIR/summary.json           per round: runs, held-out world-model loss, simulator returns of
                               the policy and of the constant/cosine baselines, and the real
                               best val loss (normalised) of the round's policy-driven runs

Every step resumes: collection skips finished runs, training resumes from `.state`
checkpoints, and a step whose artifact exists is skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lrpilot import checkpoints
from lrpilot.collect.job import DEFAULT_MIX, Job, collect
from lrpilot.io import read_json, write_json
from lrpilot.policy.network import PolicyConfig
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trajectories import load_dir
from lrpilot.worldmodel.model import WorldModelConfig


@dataclasses.dataclass(frozen=True)
class SimpleConfig:
    rounds: int = 3  # SimPLe rounds (collect, world model, policy)
    runs_per_round: int = 32  # real runs collected per round
    parallel: int = 8  # runs trained together in one batched step
    family: str = "cpu"  # model-size/run-length family of the collected runs
    tasks: tuple[str, ...] = ("python_docs", "python_docstrings", "python_stdlib", "unicode_names")  # corpora
    policy_weight: float = 0.5  # share of a round's runs driven by the previous policy (from round 1)
    initial_data: tuple[str, ...] = ()  # trajectory dirs to start from ('starter': the shipped dataset)
    seed: int = 0  # job seed of the rounds' collections

    def __post_init__(self):
        for name in ("rounds", "runs_per_round", "parallel"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SimpleConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.policy_weight <= 1:
            raise ValueError(f"SimpleConfig.policy_weight must be in [0, 1], got {self.policy_weight}")


def _policy_runs_score(data_dir: Path) -> dict:
    """Mean final normalised val (val/val0) of the policy-driven runs of a round's data."""
    traj = load_dir(data_dir, DEFAULT_SPEC)
    vi = DEFAULT_SPEC.index("val")
    by: dict[str, list] = {}
    for i, m in enumerate(traj.meta):
        name = m["controller"]["name"]
        by.setdefault("policy" if name == "policy_eps" else "explore", []).append(float(traj.obs[i, traj.length[i] - 1, vi]))
    return {k: {"final_val_rel_mean": float(np.mean(v)), "n": len(v)} for k, v in by.items()}


def run(out: str | Path, cfg: SimpleConfig, wm_cfg: WorldModelConfig, pol_cfg: PolicyConfig, progress: bool = True,
        log=print) -> dict:
    from lrpilot.policy import train as policy_trainer
    from lrpilot.worldmodel import train as wm_trainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {"config": dataclasses.asdict(cfg), "rounds": []}
    prev_policy: str | None = None
    data_dirs = [str(d) for d in cfg.initial_data]
    for r in range(cfg.rounds):
        rd = out / f"round_{r}"
        mix = dict(DEFAULT_MIX)
        if prev_policy is not None:
            total = sum(mix.values())
            mix = {k: v * (1 - cfg.policy_weight) / total for k, v in mix.items()}
            mix["policy"] = cfg.policy_weight
        job = Job(seed=cfg.seed * 1000 + r, family=cfg.family, tasks=cfg.tasks, parallel=cfg.parallel,
                  mix=tuple(mix.items()), policy=prev_policy)
        log(f"[simple] round {r}: collecting {cfg.runs_per_round} real runs" + (" (with the last policy)" if prev_policy else ""))
        collect(rd / "data", job, cfg.runs_per_round, progress=progress, log=log)
        data_dirs.append(str(rd / "data"))
        traj = load_dir(data_dirs, DEFAULT_SPEC)
        wm_path = rd / "worldmodel"
        if not checkpoints.exists(wm_path):
            log(f"[simple] round {r}: training the world model on {len(traj)} runs")
            wm_trainer.train(traj, wm_cfg, wm_path, progress=progress, log=log, meta={"data": data_dirs, "round": r})
        pol_path = rd / "policy"
        if not checkpoints.exists(pol_path):
            log(f"[simple] round {r}: training the policy in the world model")
            policy_trainer.train(str(wm_path), traj, pol_cfg, pol_path, progress=progress, log=log,
                                 meta={"data": data_dirs, "round": r})
        wm_meta = checkpoints.load(wm_path, kind="worldmodel").meta
        pol_meta = checkpoints.load(pol_path, kind="policy").meta
        entry = {"round": r, "runs_total": len(traj), "runs_this_round": cfg.runs_per_round,
                 "worldmodel_heldout_loss": wm_meta.get("best_heldout_loss"),
                 "sim_eval": pol_meta.get("sim_eval"), "real_runs": _policy_runs_score(rd / "data"),
                 "worldmodel": str(wm_path), "policy": str(pol_path)}
        summary["rounds"] = [e for e in summary["rounds"] if e["round"] != r] + [entry]
        write_json(summary_path, summary)
        sim = entry["sim_eval"]["returns"]
        log(f"[simple] round {r}: world model held-out {entry['worldmodel_heldout_loss']:.4f}; simulator return policy "
            f"{sim['policy (greedy)']['mean']:.4f} vs best constant {sim[entry['sim_eval']['best_constant']]['mean']:.4f} "
            f"and best cosine {sim[entry['sim_eval']['best_cosine']]['mean']:.4f}; real runs {entry['real_runs']}")
        prev_policy = str(pol_path)
    return summary


def cmd_simple(args) -> int:
    from lrpilot.app import flags
    from lrpilot.app.checks import data_dirs, out_dir

    cfg = flags.build_config(SimpleConfig, args)
    cfg = dataclasses.replace(cfg, initial_data=tuple(data_dirs(list(cfg.initial_data))))
    wm_cfg = flags.build_config(WorldModelConfig, args, prefix="wm-")
    pol_cfg = flags.build_config(PolicyConfig, args, prefix="ppo-")
    for task in cfg.tasks:
        Job(family=cfg.family, tasks=(task,))  # refuses held-out, unknown or unreadable corpora before any work
    run(out_dir(args.out), cfg, wm_cfg, pol_cfg, progress=not args.quiet)
    return 0


def register(sub) -> None:
    from lrpilot.app import flags

    s = sub.add_parser("simple", help="the SimPLe loop: collect, retrain the world model, retrain the policy, repeat")
    s.add_argument("--out", required=True, help="the loop's directory (resumable)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    flags.add_config_flags(s.add_argument_group("the loop (SimpleConfig)"), SimpleConfig)
    flags.add_config_flags(s.add_argument_group("world model (WorldModelConfig), prefixed --wm-"), WorldModelConfig, prefix="wm-")
    flags.add_config_flags(s.add_argument_group("PPO (PolicyConfig), prefixed --ppo-"), PolicyConfig, prefix="ppo-")
    s.set_defaults(func=cmd_simple)
