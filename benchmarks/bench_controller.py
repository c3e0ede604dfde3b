"""The deployed policy's overhead: `PolicyController.observe` + `lr` per decision, next to the
training step it controls.

    python benchmarks/bench_controller.py [--episodes 5] [--ckpt PATH] [--chunk 50] [--reps 5]
    python benchmarks/bench_controller.py --quick          # smoke check (< 1 min)

What is timed
* the controller: a policy checkpoint (default: a random-init one, WorldModelConfig() trunk and
  PolicyConfig(), saved with `checkpoints.save` in a temporary directory; or `--ckpt PATH`,
  'pretrained' for the shipped one) loaded with `policy.load` (built and jitted once: its load
  time is reported apart), driven through whole episodes of the small scale (2000 iterations,
  21 observations, a decision every 100 iterations) with synthetic decreasing losses. Per
  decision: one `observe` (encode the episode, one forward pass, greedy action) plus the `lr`
  calls of the interval (one per iteration, as `lrpilot.trainers.loop` calls it).
* a training step: `RunGroup.train_chunk` at the small scale (nanoGPT's CPU recipe), one run,
  chunks of `--chunk` iterations, median per iteration, compile excluded.
* overhead = controller time per decision as a % of one step and of one decision interval
  (max_iters / n_decisions = 100 steps). Episodes and step chunks are interleaved.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import med, print_header


# ---- the policy ------------------------------------------------------------------------------------
def random_policy_checkpoint(path: Path, seed: int) -> Path:
    """A random-init policy checkpoint with the default trunk; the action head gets small random
    weights (its init is zeros) so that the greedy actions vary as a trained policy's would."""
    import jax

    from lrpilot import checkpoints
    from lrpilot.policy.network import PolicyConfig, build, init_params
    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.worldmodel.model import WorldModelConfig

    wm_cfg = WorldModelConfig()
    net = build(wm_cfg, DEFAULT_SPEC)
    k_init, k_head = jax.random.split(jax.random.key(seed))
    params = init_params(net, k_init)
    head = params["action_head"]
    params = {**params, "action_head": {**head, "kernel": 0.02 * jax.random.normal(k_head, head["kernel"].shape)}}
    return checkpoints.save(path, kind="policy", params=params, spec=DEFAULT_SPEC,
                            model_config={"trunk": wm_cfg.to_dict(), "policy": PolicyConfig().to_dict()},
                            meta={"note": "random init, for bench_controller"})


def run_episode(ctrl, info, rng) -> tuple[list[float], list[float], list[float]]:
    """One episode; returns per-decision seconds of observe, of the interval's lr calls, and per lr call."""
    from lrpilot.controllers import Observation

    ctrl.reset(info)
    pts = list(ctrl.observe_iters())
    v0 = 4.17 + rng.uniform(-0.05, 0.05)
    t_obs, t_lr, t_call = [], [], []
    for k, it in enumerate(pts):
        frac = it / info.max_iters
        val = v0 * (0.45 + 0.55 * math.exp(-5 * frac)) + rng.normal(0, 0.01)
        train = None if k == 0 else val * 0.98
        t0 = time.perf_counter()
        ctrl.observe(Observation(it, train_loss=train, val_loss=val, lr=None if k == 0 else ctrl.lr(it - 1)))
        dt_obs = time.perf_counter() - t0
        if k + 1 >= len(pts):
            break  # the last observation ends the episode: no action, no interval
        n_it = pts[k + 1] - it
        t0 = time.perf_counter()
        for i in range(it, pts[k + 1]):
            lr = ctrl.lr(i)
        dt_lr = time.perf_counter() - t0
        if not (math.isfinite(lr) and lr > 0):
            raise RuntimeError(f"controller returned lr={lr} at iteration {it}")
        t_obs.append(dt_obs)
        t_lr.append(dt_lr)
        t_call.append(dt_lr / n_it)
    return t_obs, t_lr, t_call


class StepTimer:
    def __init__(self, cfg, ds, chunk: int):
        from lrpilot.trainers.charlm import RunGroup

        self.group = RunGroup(cfg, ds.vocab_size, "adamw", [0])
        self.train = self.group.put_data(ds.train)
        self.lrs = np.full((1, chunk), cfg.learning_rate, np.float32)
        self.chunk, self.it = chunk, 0
        self.block()  # compile

    def block(self) -> float:
        t0 = time.perf_counter()
        self.group.train_chunk(self.lrs, self.it, self.train)
        self.it += self.chunk
        return (time.perf_counter() - t0) / self.chunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="policy checkpoint ('pretrained' = the shipped one); "
                                                 "default: a random-init one in a temporary directory")
    ap.add_argument("--episodes", type=int, default=5, help="timed episodes (21 observations, 20 decisions each)")
    ap.add_argument("--chunk", type=int, default=50, help="iterations per timed training chunk")
    ap.add_argument("--reps", type=int, default=5, help="timed training chunks (interleaved with the episodes)")
    ap.add_argument("--task", default="shakespeare_char", help="dataset of the training step")
    ap.add_argument("--data-dir", default=None, help="sets LRPILOT_DATA_DIR (where <task>/input.txt is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke check: 2 episodes, 2 chunks of 10 iterations")
    a = ap.parse_args()
    if a.data_dir:
        os.environ["LRPILOT_DATA_DIR"] = a.data_dir
    episodes, chunk, reps = (2, 10, 2) if a.quick else (a.episodes, a.chunk, a.reps)

    import jax

    from lrpilot import data, policy
    from lrpilot.trainers.config import scale_config
    from lrpilot.trainers.loop import run_info
    from lrpilot.trajectories import gpt_params

    cfg = scale_config(a.task, "small")
    ds = data.load(a.task)
    n_params = gpt_params(ds.vocab_size, cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.bias)
    info = run_info(cfg, a.seed, n_params=n_params)  # the run context a spec-v2 policy observes
    print_header(f"bench_controller: deployed policy overhead per decision{' (quick)' if a.quick else ''}")

    with tempfile.TemporaryDirectory(prefix="bench_controller_") as tmp:
        ckpt = a.ckpt or random_policy_checkpoint(Path(tmp) / "policy", a.seed)
        t0 = time.perf_counter()
        ctrl = policy.load(ckpt)
        t_load = time.perf_counter() - t0
    net = ctrl.net
    n_par = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ctrl.params))
    interval = cfg.max_iters // ctrl.spec.n_decisions
    print(f"# policy: trunk {net.cfg.n_layer}L/{net.cfg.n_head}H/{net.cfg.d_model}, {n_par / 1e6:.3f}M params, "
          f"seq_len {net.max_len}, {'random init' if a.ckpt is None else a.ckpt}, greedy | run: small scale "
          f"({cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, block {cfg.block_size}, batch {cfg.batch_size}), "
          f"{cfg.max_iters} iterations, {ctrl.spec.n_decisions} decisions (every {interval} iterations) | "
          f"{episodes} episodes, {reps} chunks of {chunk} iterations", flush=True)
    print(f"policy.load (build + jit compile, once per process): {1e3 * t_load:.0f} ms", flush=True)

    steps = StepTimer(cfg, ds, chunk)
    rng = np.random.default_rng(a.seed)
    run_episode(ctrl, info, rng)  # warm-up episode (first dispatches)
    obs_t, lr_t, call_t, step_t = [], [], [], []
    for i in range(max(episodes, reps)):
        if i < episodes:
            o, l, c = run_episode(ctrl, info, rng)
            obs_t += o
            lr_t += l
            call_t += c
        if i < reps:
            step_t.append(steps.block())

    per_dec = [o + l for o, l in zip(obs_t, lr_t)]
    dec, step = med(per_dec), med(step_t)
    print(f"controller observe: {1e3 * med(obs_t):8.3f} ms median per decision (max {1e3 * max(obs_t):.3f}, "
          f"{len(obs_t)} decisions)")
    print(f"controller lr     : {1e6 * med(call_t):8.3f} us per call, {1e3 * med(lr_t):.3f} ms per interval "
          f"of {interval} calls")
    print(f"controller total  : {1e3 * dec:8.3f} ms per decision (observe + {interval} lr calls), "
          f"{1e3 * dec * ctrl.spec.n_decisions:.1f} ms per episode")
    print(f"training step     : {1e3 * step:8.3f} ms per iteration (small scale, N=1, median of {len(step_t)} "
          f"chunks of {chunk})")
    print(f"overhead          : {100 * dec / step:8.2f} % of one step | {100 * dec / (interval * step):.4f} % of a "
          f"decision interval ({interval} steps)")


if __name__ == "__main__":
    main()
