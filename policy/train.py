"""Training a policy with PPO inside a world model, with periodic checkpoints and resume, and
its evaluation in the simulator against constant-LR and cosine controllers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lrpilot import checkpoints
from lrpilot.policy.ensemble import n_members
from lrpilot.policy.network import PolicyConfig, build as build_policy, config_support, init_params, lr_support
from lrpilot.policy.ppo import TrainState, episode_returns, make_iteration, policy_act_fn
from lrpilot.trainers import harness
from lrpilot.trajectories import Trajectories
from lrpilot.worldmodel.env import SimEnv, cosine_target, schedule_policy
from lrpilot.worldmodel.model import WorldModelConfig, build as build_wm

SIM_LEVELS = (0.3, 1.0, 3.0, 10.0)  # relative LR levels of the constant and cosine baselines


def load_world_model(path):
    ck = checkpoints.load(path, kind="worldmodel")
    cfg = WorldModelConfig.from_dict(ck.model_config)
    model, ser = build_wm(cfg, ck.spec)
    return ck, cfg, model, ser


def _stats(ret, div) -> dict:
    n = ret.shape[0]
    return {"mean": float(ret.mean()), "stderr": float(ret.std() / np.sqrt(n)), "diverged": float(div.mean())}


def schedule_returns(env: SimEnv, env_params, key, n_envs: int) -> dict:
    """{"constant xC" / "cosine xC": (returns (n_envs,), diverged (n_envs,))} at each C of SIM_LEVELS,
    over the same starts as `episode_returns` with `key`: every baseline in one jitted vmap (one
    compilation, the schedule's peak and kind traced)."""
    peaks = jnp.asarray(SIM_LEVELS * 2, jnp.float32)
    is_cos = jnp.asarray([False] * len(SIM_LEVELS) + [True] * len(SIM_LEVELS))

    def one(peak, cos):
        target = lambda k: jnp.where(cos, cosine_target(env.spec, peak)(k), peak)
        return episode_returns(env, env_params, key, schedule_policy(env.spec, target), n_envs)

    ret, div = jax.jit(jax.vmap(one))(peaks, is_cos)
    names = [f"{'cosine' if c else 'constant'} x{p:g}" for p, c in zip(SIM_LEVELS * 2, [False] * len(SIM_LEVELS) + [True] * len(SIM_LEVELS))]
    order = [n for c in SIM_LEVELS for n in (f"constant x{c:g}", f"cosine x{c:g}")]  # the report's order
    got = {n: (ret[j], div[j]) for j, n in enumerate(names)}
    return {n: got[n] for n in order}


def sim_report(env: SimEnv, env_params, net, params, key, n_envs: int, lr_support=None) -> dict:
    """Returns of the greedy policy (actions masked to `lr_support` as in training) and of constant
    and cosine controllers at SIM_LEVELS (relative LR levels) over the same n_envs starts, and the
    policy's paired advantage over the best of each."""
    act = policy_act_fn(net, params, env, lr_support=lr_support)
    *greedy, lr = episode_returns(env, env_params, key, act, n_envs, with_lr=True)
    rets = {"policy (greedy)": tuple(greedy), **schedule_returns(env, env_params, key, n_envs)}
    rets = {k: (np.asarray(r), np.asarray(d)) for k, (r, d) in rets.items()}
    returns = {k: _stats(*v) for k, v in rets.items()}
    best_const = max((k for k in returns if k.startswith("constant")), key=lambda k: returns[k]["mean"])
    best_cos = max((k for k in returns if k.startswith("cosine")), key=lambda k: returns[k]["mean"])
    paired = {}
    for k in (best_const, best_cos):
        d = rets["policy (greedy)"][0] - rets[k][0]
        paired[k] = {"mean": float(d.mean()), "stderr": float(d.std() / np.sqrt(len(d))), "win_rate": float((d > 0).mean())}
    q = np.percentile(np.asarray(lr), [25, 50, 75], axis=0)  # over episodes (an ended episode keeps its last LR)
    return {"returns": returns, "best_constant": best_const, "best_cosine": best_cos,
            "policy_minus_best": paired, "n_envs": n_envs,
            "policy_lr_rel": {"q25": q[0].round(4).tolist(), "median": q[1].round(4).tolist(), "q75": q[2].round(4).tolist()}}


def format_report(report: dict) -> str:
    if "by_lr_mult" in report:
        return "\n".join(f"episodes from observation 1 of the {r['n_runs']} runs at {m} x their default LR:\n"
                         + format_report(r) for m, r in report["by_lr_mult"].items())
    r, p = report["returns"], report["policy_minus_best"]
    lines = [f"simulator returns over {report['n_envs']} episodes (same starts): "
             + ", ".join(f"{k} {v['mean']:.4f}±{v['stderr']:.4f}" for k, v in r.items())]
    lines += [f"policy - {k} (paired): {v['mean']:+.4f}±{v['stderr']:.4f}, policy better in {100 * v['win_rate']:.0f}% of episodes"
              for k, v in p.items()]
    if "policy_lr_rel" in report:  # reports written before it lack it
        lines.append("policy LR / base LR after each decision (median over episodes): "
                     + " ".join(f"{x:.2f}" for x in report["policy_lr_rel"]["median"]))
    return "\n".join(lines)


def evaluate(policy_path, wm_path, traj, n_envs: int = 256, seed: int = 0,
             max_prefix: int = 5, temperature: float = 1.0, lr_mults=()) -> dict:
    """sim_report of a saved policy in a saved world model (any pair with the same spec and trunk),
    its episodes started from prefixes of 1..max_prefix observations of `traj`'s runs. `lr_mults`:
    instead, one report per multiplier M, {"by_lr_mult": {"M": report + n_runs}}, its episodes
    started as deployed (the first observation) from the runs configured at M x their default LR
    (`Trajectories.at_lr_mult`): the regimes of the validation set (`lrpilot select`). `traj` a dict
    {"M": Trajectories} (e.g. `context_starts` of the runs to come at each M): the same, from
    the first observation of each one's runs."""
    wm_ck, wm_cfg, wm, ser = load_world_model(wm_path)
    ck = checkpoints.load(policy_path, kind="policy", spec=wm_ck.spec)
    if n_members(ck.model_config) > 1:
        raise ValueError(f"policy checkpoint {policy_path} is an ensemble of {n_members(ck.model_config)} policies "
                         "(lrpilot policy ensemble); the simulator report takes one policy: give one of its members")
    if isinstance(traj, dict):
        regimes = traj
    else:  # refused before any simulation
        regimes = {f"{m:g}": traj.subset(traj.at_lr_mult(m)) for m in lr_mults}
    env = SimEnv(wm, ser)
    wm_params = jax.tree.map(jnp.asarray, wm_ck.params)
    net = build_policy(dataclasses.replace(WorldModelConfig.from_dict(ck.model_config["trunk"]), ensemble=1), ck.spec)
    params, support, key = jax.tree.map(jnp.asarray, ck.params), lr_support(ck.model_config), jax.random.key(seed)
    if not regimes:
        return sim_report(env, env.params(wm_params, traj, max_prefix, temperature), net, params, key, n_envs, support)
    return {"by_lr_mult": {m: {**sim_report(env, env.params(wm_params, t, 1, temperature), net, params, key, n_envs, support),
                               "n_runs": len(t)} for m, t in regimes.items()}}


def episode_starts(traj: Trajectories, cfg: PolicyConfig) -> tuple[Trajectories, int]:
    """(runs, max_prefix) that PPO's episodes start from: `traj` and cfg.max_prefix; or with
    cfg.start_lr_mults, as deployed, observation 1 of the runs configured at each M x their default
    LR (`Trajectories.at_lr_mult`), each M's runs repeated (cyclically) to the count of the M with
    most, so that a uniform draw meets every M equally often. A ValueError names an M no run is near."""
    if not cfg.start_lr_mults:
        return traj, cfg.max_prefix
    idx = [traj.at_lr_mult(m) for m in cfg.start_lr_mults]
    n = max(len(i) for i in idx)
    return traj.subset(np.concatenate([np.resize(i, n) for i in idx])), 1


def train(wm_path: str, traj: Trajectories, cfg: PolicyConfig, out: str | Path, progress: bool = True, log=print,
          meta: dict | None = None) -> dict:
    """PPO in the world model at `wm_path`, episodes started from `traj`: prefixes of 1..max_prefix
    observations of its runs, or with cfg.start_lr_mults their first observation, as deployed, of the
    runs at each multiplier (`episode_starts`). Resumes from OUT.state; saves the policy at `out`."""
    wm_ck, wm_cfg, wm, ser = load_world_model(wm_path)
    wm_ck.spec.check_same(traj.spec, where=str(wm_path))
    env = SimEnv(wm, ser)
    traj, max_prefix = episode_starts(traj, cfg)
    if cfg.start_lr_mults:
        log(f"[policy] episodes start at observation 1 of {len(traj) // len(cfg.start_lr_mults)} runs per multiplier "
            f"{', '.join(f'{m:g}' for m in cfg.start_lr_mults)} (repeated to equal counts)")
    env_params = env.params(jax.tree.map(jnp.asarray, wm_ck.params), traj, max_prefix, cfg.temperature)
    trunk_cfg = dataclasses.replace(wm_cfg, ensemble=1)  # the policy has one trunk: member 0's for an ensemble
    net = build_policy(trunk_cfg, wm_ck.spec)
    iteration, tx = make_iteration(net, env, cfg)
    key = jax.random.key(cfg.seed)
    k_init, k_run, k_eval = jax.random.split(key, 3)
    member0 = wm_ck.params if wm_cfg.ensemble == 1 else jax.tree.map(lambda x: x[0], wm_ck.params)
    params = init_params(net, k_init, member0 if cfg.init == "worldmodel" else None)
    model_config = {"trunk": trunk_cfg.to_dict(), "policy": cfg.to_dict(), "world_model_members": wm_cfg.ensemble}
    step = jax.jit(iteration)
    fitted = harness.fit(TrainState(params, tx.init(params), jnp.int32(0)),
                         lambda ts, i: step(ts, env_params, jax.random.fold_in(k_run, i)),
                         harness.Schedule(cfg.iterations, log_every=1, checkpoint_every=cfg.checkpoint_every),
                         state_dir=f"{out}.state", identity={"spec": wm_ck.spec.to_dict(), "trunk": model_config["trunk"],
                                   "policy": harness.options(cfg, ("iterations", "checkpoint_every", "eval_envs"))},
                         progress=progress, desc="ppo", log=lambda s: log(f"[policy] {s}"),
                         postfix=lambda e: {"ret": f"{e['return_mean']:.4f}", "ent": f"{e['entropy']:.2f}"})
    ts, history = fitted.state, fitted.history
    report = sim_report(env, env_params, net, ts.params, k_eval, cfg.eval_envs, config_support(cfg))
    log("[policy] " + format_report(report))
    checkpoints.save(out, kind="policy", params=ts.params, spec=wm_ck.spec, model_config=model_config,
                     meta={"world_model": str(wm_path), "log": history, "sim_eval": report, **(meta or {})})
    log(f"[policy] saved {out}")
    return report

