"""The SimPLe loop: collect real runs, retrain the world model on everything so far, retrain
the policy inside it, repeat.

    DIR/round_<r>/data/          real runs collected in round r: exploration, and a `policy_weight`
                                 share driven with epsilon noise by the previous round's policy
                                 (round 0: `initial_policy`, if given)
    DIR/round_<r>/worldmodel     world model trained on the initial data and rounds 0..r (with its
                                 linear action term when --wm-action-response is residual or noop);
                                 with `wm_finetune_steps` = N > 0, rounds r >= 1 start from round
                                 r-1's world model and train N steps (SimPLe's continued training)
    DIR/round_<r>/fidelity.json  its fidelity (worldmodel/fidelity.py) on the held-out and training groups
    DIR/round_<r>/policy         policy trained by PPO in that world model
    DIR/summary.json             per round: runs, held-out world-model loss, fidelity, the
                                 simulator's verdict (policy vs constant and cosine schedules), and
                                 the real result of the round's policy-driven runs against the
                                 exploration runs of the same batched groups (same task, model and
                                 run length; base LRs drawn alike)

Every step resumes: collection skips finished runs, training resumes from `.state`
checkpoints, and a step whose artifact exists is skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lrpilot import checkpoints
from lrpilot.collect.edges import V2_MIX
from lrpilot.collect.job import DEFAULT_MIX, Job, collect
from lrpilot.collect.tasks import FAMILIES
from lrpilot.io import read_json, write_json, write_text
from lrpilot.policy.network import PolicyConfig
from lrpilot.spec import SPECS
from lrpilot.trajectories import Trajectories, load_dir
from lrpilot.worldmodel.model import WorldModelConfig


@dataclasses.dataclass(frozen=True)
class SimpleConfig:
    rounds: int = 3  # SimPLe rounds (collect, world model, policy)
    runs_per_round: int = 64  # real runs collected per round
    parallel: int = 8  # runs trained together in one batched step
    family: str = "cpu"  # model-size/run-length family of the collected runs (cpu2: dataset v2's draws)
    tasks: tuple[str, ...] = ("python_docs", "python_docstrings", "python_stdlib", "unicode_names")  # corpora
    policy_weight: float = 0.5  # share of a round's runs driven by the previous policy (round 0: initial_policy's)
    initial_data: tuple[str, ...] = ()  # trajectory dirs to start from ('starter': the shipped dataset)
    initial_policy: str | None = None  # a policy checkpoint that drives round 0's policy share (none: round 0 explores)
    spec: str = "v1"  # observation spec of the world model and the policy (v1, v2, v3)
    fidelity_samples: int = 8  # world-model samples per run for each round's fidelity section (0: skip it)
    seed: int = 0  # job seed of the rounds' collections
    wm_finetune_steps: int = 0  # > 0: rounds >= 1 continue the previous round's world model for this many steps (0: from scratch)

    def __post_init__(self):
        for name in ("rounds", "runs_per_round", "parallel"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SimpleConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.policy_weight <= 1:
            raise ValueError(f"SimpleConfig.policy_weight must be in [0, 1], got {self.policy_weight}")
        if self.family not in FAMILIES:
            raise ValueError(f"SimpleConfig.family: unknown family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.spec not in SPECS:
            raise ValueError(f"SimpleConfig.spec: unknown spec {self.spec!r}; expected one of {', '.join(SPECS)}")
        for name in ("fidelity_samples", "wm_finetune_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"SimpleConfig.{name} must be >= 0, got {getattr(self, name)}")


def real_comparison(traj: Trajectories) -> dict | None:
    """The policy-driven runs (controller policy_eps) against the exploration runs of the same
    batched groups: per group, the mean final and best normalised val (val / val at step 0) of
    each side; the difference policy - exploration as mean +- standard error over the groups that
    have both (negative: the policy's runs ended lower). None without such a group."""
    from lrpilot.trajectories import group_key

    vi = traj.spec.index("val")
    by: dict[str, dict[str, list]] = {}
    for i, (m, f) in enumerate(zip(traj.meta, traj.files)):
        side = "policy" if m.get("controller", {}).get("name") == "policy_eps" else "explore"
        v = traj.obs[i, : traj.length[i], vi]
        by.setdefault(group_key(m, f), {"policy": [], "explore": []})[side].append((float(v[-1]), float(v.min())))
    both = [g for g in by.values() if g["policy"] and g["explore"]]
    if not both:
        return None
    out = {"n_groups": len(both), "n_policy": sum(len(g["policy"]) for g in both),
           "n_explore": sum(len(g["explore"]) for g in both)}
    for j, name in enumerate(("final_val_rel", "best_val_rel")):
        d = np.array([np.mean([x[j] for x in g["policy"]]) - np.mean([x[j] for x in g["explore"]]) for g in both])
        out[name] = {"policy": float(np.mean([x[j] for g in both for x in g["policy"]])),
                     "explore": float(np.mean([x[j] for g in both for x in g["explore"]])),
                     "policy_minus_explore": float(d.mean()),
                     "stderr": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
                     "policy_better_groups": float(np.mean(d < 0))}
    return out


def _fidelity(wm_path: Path, traj: Trajectories, n_samples: int, log) -> dict:
    """The world model's fidelity section on its held-out and training groups (forecast.json's)."""
    from lrpilot.worldmodel import fidelity
    from lrpilot.worldmodel.model import build
    from lrpilot.worldmodel.train import heldout_runs, training_runs

    ck = checkpoints.load(wm_path, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build(cfg, ck.spec)
    return fidelity.evaluate(model, ck.params, ser, traj.subset(heldout_runs(traj, cfg)),
                             traj.subset(training_runs(traj, cfg)), n_samples, log=log)[0]


def _brief(fid: dict | None) -> dict | None:
    """The fidelity numbers the summary carries, per side."""
    if fid is None:
        return None
    return {side: {"within_group_spearman": f["within_group_spearman"], "n_groups": f["n_groups"],
                   "action_effect_ratio": f["action_effect"]["ratio"], "high_lr_cost_ratio": f["high_lr_cost"]["ratio"],
                   "action_effect_ratio_ci95": f["action_effect"].get("ratio_ci95"),
                   "high_lr_cost_ratio_ci95": f["high_lr_cost"].get("ratio_ci95"),
                   "final_val_mae": f["final_val_mae"]} for side, f in fid.items()}


def run(out: str | Path, cfg: SimpleConfig, wm_cfg: WorldModelConfig, pol_cfg: PolicyConfig, progress: bool = True,
        log=print) -> dict:
    from lrpilot.policy import train as policy_trainer
    from lrpilot.worldmodel import train as wm_trainer

    out, spec = Path(out), SPECS[cfg.spec]
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {"rounds": []}
    summary["config"] = dataclasses.asdict(cfg)  # the latest invocation's; each round records its world model's start
    prev_policy: str | None = cfg.initial_policy
    prev_wm: Path | None = None
    data_dirs = [str(d) for d in cfg.initial_data]
    base_mix = V2_MIX if FAMILIES[cfg.family].draws == "v2" else DEFAULT_MIX
    for r in range(cfg.rounds):
        rd = out / f"round_{r}"
        mix = dict(base_mix)
        if prev_policy is not None:
            total = sum(mix.values())
            mix = {k: v * (1 - cfg.policy_weight) / total for k, v in mix.items()}
            mix["policy"] = cfg.policy_weight
        job = Job(seed=cfg.seed * 1000 + r, family=cfg.family, tasks=cfg.tasks, parallel=cfg.parallel,
                  mix=tuple(mix.items()), policy=prev_policy)
        log(f"[simple] round {r}: collecting {cfg.runs_per_round} real runs" + (f" (a share with {prev_policy})" if prev_policy else ""))
        collect(rd / "data", job, cfg.runs_per_round, spec=spec, progress=progress, log=log)
        data_dirs.append(str(rd / "data"))
        traj = load_dir(data_dirs, spec)
        wm_path = rd / "worldmodel"
        if not checkpoints.exists(wm_path):
            r_cfg, init = wm_cfg, None
            if cfg.wm_finetune_steps and prev_wm is not None:
                steps = cfg.wm_finetune_steps
                r_cfg = dataclasses.replace(wm_cfg, steps=steps, select_after=min(wm_cfg.select_after, steps),
                                            warmup=min(wm_cfg.warmup, steps - 1))
                init = checkpoints.load(prev_wm, kind="worldmodel").params
            log(f"[simple] round {r}: training the world model on {len(traj)} runs"
                + (f" ({r_cfg.steps} steps from {prev_wm})" if init is not None else ""))
            wm_trainer.train(traj, r_cfg, wm_path, progress=progress, log=log, init_params=init,
                             meta={"data": data_dirs, "round": r, "spec": cfg.spec,
                                   "init": None if init is None else str(prev_wm)})
        fid_path = rd / "fidelity.json"
        if cfg.fidelity_samples and not fid_path.exists():
            log(f"[simple] round {r}: the world model's fidelity")
            write_json(fid_path, _fidelity(wm_path, traj, cfg.fidelity_samples, log))
        pol_path = rd / "policy"
        if not checkpoints.exists(pol_path):
            log(f"[simple] round {r}: training the policy in the world model")
            policy_trainer.train(str(wm_path), traj, pol_cfg, pol_path, progress=progress, log=log,
                                 meta={"data": data_dirs, "round": r})
        wm_meta = checkpoints.load(wm_path, kind="worldmodel").meta
        pol_meta = checkpoints.load(pol_path, kind="policy").meta
        seen = [wm_meta.get(k) for k in ("n_train_runs", "n_val_runs", "n_heldout_runs")]
        entry = {"round": r, "runs_total": sum(n or 0 for n in seen) if seen[0] is not None else len(traj),
                 "runs_this_round": cfg.runs_per_round,  # runs_total: the runs its world model trained and was judged on
                 "worldmodel_heldout_loss": wm_meta.get("best_heldout_loss"), "worldmodel_init": wm_meta.get("init"),
                 "fidelity": _brief(read_json(fid_path) if fid_path.exists() else None),
                 "sim_eval": pol_meta.get("sim_eval"),
                 "real_runs": {"driven_by": prev_policy, "vs_exploration": real_comparison(
                     traj.subset([i for i, f in enumerate(traj.files) if Path(f).parent == rd / "data"]))},
                 "worldmodel": str(wm_path), "policy": str(pol_path)}
        summary["rounds"] = [e for e in summary["rounds"] if e["round"] != r] + [entry]
        write_json(summary_path, summary)
        write_text(out / "summary.md", summary_markdown(summary))
        log(f"[simple] {round_line(entry)}")
        prev_policy, prev_wm = str(pol_path), wm_path
    return summary


def summary_markdown(summary: dict) -> str:
    """summary.json as a table, one row per round."""
    from lrpilot.app.evaluate import fmt
    from lrpilot.worldmodel.fidelity import fmt_interval

    lines = ["| round | runs (this round) | held-out Spearman | action-effect ratio | high-LR ratio | "
             "sim: policy - best constant | sim: policy - best cosine | real: policy-driven - exploration, final val / val0 (groups) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in sorted(summary["rounds"], key=lambda e: e["round"]):
        h = (e.get("fidelity") or {}).get("heldout") or {}
        sp = (h.get("within_group_spearman") or {})
        sim = e["sim_eval"]["policy_minus_best"]
        c, k = sim[e["sim_eval"]["best_constant"]], sim[e["sim_eval"]["best_cosine"]]
        real = e["real_runs"]["vs_exploration"]
        rl = "-" if not real else (f"{real['final_val_rel']['policy_minus_explore']:+.4f} ± "
                                   f"{fmt(real['final_val_rel']['stderr'], None, 4)} ({real['n_groups']})")
        lines.append(f"| {e['round']} | {e['runs_total']} ({e['runs_this_round']}) | {fmt(sp.get('mean'), None, 3)}"
                     f"{' ± ' + fmt(sp.get('stderr'), None, 3) if sp.get('stderr') else ''} | {fmt(h.get('action_effect_ratio'), None, 2)}"
                     f"{fmt_interval(h.get('action_effect_ratio_ci95'))} | {fmt(h.get('high_lr_cost_ratio'), None, 2)}"
                     f"{fmt_interval(h.get('high_lr_cost_ratio_ci95'))} | {c['mean']:+.4f} ± {c['stderr']:.4f} | "
                     f"{k['mean']:+.4f} ± {k['stderr']:.4f} | {rl} |")
    lines += ["", "Round r's real runs were driven by round r-1's policy (round 0: --initial-policy); negative: the "
              "policy-driven runs ended lower than the exploration runs of their groups."]
    return "\n".join(lines) + "\n"


def round_line(e: dict) -> str:
    """One round of the summary in words."""
    from lrpilot.app.evaluate import fmt

    sim = e["sim_eval"]["returns"]
    line = (f"round {e['round']}: {e['runs_total']} runs; world model held-out loss {e['worldmodel_heldout_loss']:.4f}; "
            f"simulator return policy {sim['policy (greedy)']['mean']:.4f} vs best constant "
            f"{sim[e['sim_eval']['best_constant']]['mean']:.4f}, best cosine {sim[e['sim_eval']['best_cosine']]['mean']:.4f}")
    if e.get("fidelity"):
        h = e["fidelity"]["heldout"]
        sp = h["within_group_spearman"]["mean"]
        line += (f"; held-out Spearman {fmt(sp, None, 3)}, action-effect ratio {fmt(h['action_effect_ratio'], None, 3)}, "
                 f"high-LR ratio {fmt(h['high_lr_cost_ratio'], None, 3)}")
    real = e["real_runs"]["vs_exploration"]
    if real:
        f = real["final_val_rel"]
        line += (f"; real: policy-driven runs' final val / val0 {f['policy']:.4f} vs exploration {f['explore']:.4f} "
                 f"(policy - exploration {f['policy_minus_explore']:+.4f} ± {f['stderr'] or 0:.4f} over {real['n_groups']} groups)")
    return line


def cmd_simple(args) -> int:
    from lrpilot.app import flags
    from lrpilot.app.checks import data_dirs, out_dir, resolve_ckpt

    cfg = flags.build_config(SimpleConfig, args)
    cfg = dataclasses.replace(cfg, initial_data=tuple(data_dirs(list(cfg.initial_data))))
    if cfg.initial_policy is not None:  # a policy whose observations are not the loop's is refused before any work
        cfg = dataclasses.replace(cfg, initial_policy=resolve_ckpt(cfg.initial_policy, kind="policy"))
        SPECS[cfg.spec].check_same(checkpoints.load(cfg.initial_policy, kind="policy").spec, where=cfg.initial_policy)
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
