"""Simulator speed: world-model env steps per second with the key/value cache against re-running
the whole sequence, and what one simulated step costs next to one real env step.

    python benchmarks/bench_sim.py [--envs 64,256,1024] [--nocache-envs 16,64] [--steps 20] [--reps 3]
    python benchmarks/bench_sim.py --ckpt PATH --data DIR      # a trained world model, real reset prefixes
    python benchmarks/bench_sim.py --quick                     # smoke check (< 1 min)

What is timed (compile excluded: each jitted function is called once before timing)
(a) cache: `worldmodel.env.simulate` (jitted) with N environments x `--steps` steps under a random
    policy: reset from a real prefix (one model call over the prefix fills the cache), then per
    step the action symbol and the observation written into the cache segment by segment,
    sampling each stochastic digit from the last logits. env steps/s = N * steps / seconds.
(b) no cache: the same rollout (same keys, same sampling schedule, same dynamics) where every
    sampled digit's logits come from the model's full forward over the whole padded episode
    (seq_len symbols), as a simulator without a cache would do. Deterministic symbols after the
    last stochastic digit need no model call here. Both variants draw the same random numbers,
    so the benchmark also reports the fraction of episodes whose symbols agree exactly (float
    rounding may flip a rare sample; a low figure would mean the two variants differ).
(c) a real env step: one decision interval of a real training run, N=1 `RunGroup`:
    `train_chunk` over max_iters / n_decisions iterations plus one `evaluate` (eval_iters
    batches), at the small scale (nanoGPT's CPU recipe, 2000 iterations: 100 iterations, train
    and val evaluated as the protocol does) and at a collection scale (2L/2H/64, block 64,
    batch 12, 800 iterations: 40 iterations, val only as collection does).
    ratio = real step seconds / simulated step seconds (1 / env steps per second, per N).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import med, print_header


# ---- inputs ---------------------------------------------------------------------------------------
def synthetic_trajectories(spec, n_runs: int = 32, seed: int = 0):
    """Episodes shaped like training curves (as tests/conftest.py builds them): reset prefixes only."""
    from lrpilot.trajectories import Trajectories

    rng = np.random.default_rng(seed)
    n, f = spec.n_decisions, spec.n_obs
    obs = np.zeros((n_runs, n + 1, f), np.float32)
    actions = np.full((n_runs, n), -1, np.int32)
    length = np.full(n_runs, n + 1, np.int32)
    for r in range(n_runs):
        lr_rel, val, v0 = 1.0, 1.0, 4.0 + rng.uniform(-0.3, 0.3)
        obs[r, 0] = spec.observation(0, 1.0, v0, None, v0)[0]
        for k in range(n):
            a = int(rng.integers(spec.n_actions))
            actions[r, k] = a
            lr_rel = spec.next_lr_rel(lr_rel, a)
            val = max(val - 0.05 * min(lr_rel, 3.0) / 3.0 * val + rng.normal(0, 0.003), 0.2)
            obs[r, k + 1] = spec.observation(k + 1, lr_rel, val * v0, 0.98 * val * v0, v0)[0]
    return Trajectories(spec, obs, actions, length, np.zeros(n_runs, bool), [{}] * n_runs,
                        [f"synthetic{r}" for r in range(n_runs)])


def world_model(ckpt: str | None, seed: int):
    import jax
    import jax.numpy as jnp

    from lrpilot.spec import DEFAULT_SPEC
    from lrpilot.worldmodel.model import WorldModelConfig, build

    if ckpt:
        from lrpilot import checkpoints

        ck = checkpoints.load(checkpoints.pretrained("worldmodel") if ckpt == "pretrained" else ckpt, kind="worldmodel")
        cfg = WorldModelConfig.from_dict(ck.model_config)
        model, ser = build(cfg, ck.spec)
        return cfg, model, ser, jax.tree.map(jnp.asarray, ck.params), f"checkpoint {ckpt}"
    cfg = WorldModelConfig()
    model, ser = build(cfg, DEFAULT_SPEC)
    params = model.init(jax.random.key(seed), jnp.zeros((1, ser.seq_len), jnp.int32))["params"]
    return cfg, model, ser, params, "random init"


# ---- (b) the no-cache simulator -----------------------------------------------------------------------
def nocache_simulate(env, params, key, actions_fn, n_envs: int, n_steps: int):
    """`worldmodel.env.simulate` without a cache: same keys, schedule and dynamics; each sampled
    digit's logits from a full forward over the whole padded sequence. Returns (rewards, tokens)."""
    import jax
    import jax.numpy as jnp

    from lrpilot.worldmodel.env import quantile_sample

    model, ser, spec = env.model, env.ser, env.spec
    segs = env._segments
    stoch_fields = jnp.asarray([not f.deterministic for f in spec.fields])
    stoch_ix = jnp.asarray([spec.index("val"), spec.index("train")])
    i_lr = spec.index("log_lr")

    def reset(key):
        k_run, k_pre = jax.random.split(key)
        r = jax.random.randint(k_run, (), 0, params.seq.shape[0])
        n_prefix = jnp.minimum(params.max_prefix, params.length[r] - 1)
        p = jax.random.randint(k_pre, (), 1, n_prefix + 1)
        pos = (p * ser.step_len - 1).astype(jnp.int32)
        obs = params.obs[r, p - 1]
        tokens = jnp.where(jnp.arange(ser.seq_len) < pos, params.seq[r], ser.pad)
        return {"tokens": tokens, "pos": pos, "k": (p - 1).astype(jnp.int32), "obs": obs,
                "lr_rel": (10.0 ** obs[i_lr]).astype(jnp.float32), "done": jnp.array(False)}

    def step(key, st, action):
        action = jnp.asarray(action, jnp.int32)
        lo, hi = spec.lr_range
        lr_rel = jnp.clip(st["lr_rel"] * jnp.asarray(spec.actions, jnp.float32)[action], lo, hi)
        k1 = st["k"] + 1
        det = jnp.zeros(spec.n_obs, jnp.float32)
        det = det.at[spec.index("progress")].set(k1 / spec.n_decisions).at[i_lr].set(jnp.log10(lr_rel))
        step_syms = jnp.concatenate([(ser.base + action)[None], ser.encode_obs(det)])
        keys = jax.random.split(key, len(segs))
        u_field = {}
        for (off, length, sample_j), kk in zip(segs, keys):
            if sample_j is None:
                continue  # nothing is sampled after the last segment: no model call
            seq = jax.lax.dynamic_update_slice_in_dim(st["tokens"], step_syms[: off + length], st["pos"], 0)
            logits, _ = model.apply({"params": params.wm_params}, seq[None])  # whole padded sequence
            lg = jax.lax.dynamic_index_in_dim(logits[0], st["pos"] + off + length - 1, keepdims=False)
            f_j = sample_j // ser.digits
            sym, u_field[f_j] = quantile_sample(kk, lg / params.temperature, u_field.get(f_j))
            step_syms = step_syms.at[1 + sample_j].set(sym)
        obs = ser.decode_obs(step_syms[1:])
        obs = jnp.where(stoch_fields, obs, det)
        diverged = ser.diverged(obs)
        obs = jnp.where(diverged, obs.at[stoch_ix].set(spec.divergence_ratio), obs)
        reward = jnp.where(st["done"], 0.0, spec.reward(st["obs"], obs))
        truncated = (k1 >= spec.n_decisions) & ~diverged
        tokens = jax.lax.dynamic_update_slice_in_dim(st["tokens"], step_syms, st["pos"], 0)
        keep = lambda old, new: jnp.where(st["done"], old, new)
        new = {"tokens": keep(st["tokens"], tokens), "pos": keep(st["pos"], st["pos"] + ser.step_len),
               "k": keep(st["k"], k1), "obs": keep(st["obs"], obs), "lr_rel": keep(st["lr_rel"], lr_rel),
               "done": st["done"] | diverged | truncated}
        return new, reward

    def one(key):
        k0, k1 = jax.random.split(key)
        st = reset(k0)

        def body(st, kk):
            ka, ks = jax.random.split(kk)
            st2, r = step(ks, st, actions_fn(ka, st))
            return st2, r

        st, r = jax.lax.scan(body, st, jax.random.split(k1, n_steps))
        return r, st["tokens"]

    return jax.vmap(one)(jax.random.split(key, n_envs))


def random_policy(n_actions: int):
    import jax

    return lambda key, st: jax.random.randint(key, (), 0, n_actions)


def time_fn(f, reps: int) -> tuple[float, float, object]:
    """(compile + first call seconds, median seconds of `reps` calls, last output)."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(f())
    first = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(f())
        ts.append(time.perf_counter() - t0)
    return first, med(ts), out


# ---- (c) a real env step ------------------------------------------------------------------------------
def real_env_step(cfg, ds, n_decisions: int, reps: int) -> dict:
    """Seconds of one decision interval of a real run: train_chunk over max_iters/n_decisions
    iterations + one evaluate, N=1, compile excluded."""
    from lrpilot.trainers.charlm import RunGroup

    iters = max(1, cfg.max_iters // n_decisions)
    group = RunGroup(cfg, ds.vocab_size, "adamw", [0])
    tr, va = group.put_data(ds.train), group.put_data(ds.val)
    lrs = np.full((1, iters), cfg.learning_rate, np.float32)
    it = 0
    group.train_chunk(lrs, it, tr)  # compile
    group.evaluate(it, tr, va)
    t_train, t_eval = [], []
    for _ in range(reps):
        it += iters
        t0 = time.perf_counter()
        group.train_chunk(lrs, it, tr)
        t_train.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        group.evaluate(it, tr, va)
        t_eval.append(time.perf_counter() - t0)
    return {"iters": iters, "train": med(t_train), "eval": med(t_eval), "step": med(t_train) + med(t_eval)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", default="64,256,1024", help="environment counts N for the cached simulator")
    ap.add_argument("--nocache-envs", default="16,64",
                    help="environment counts N for the no-cache variant ('' to skip; it is ~20-40x slower per env step)")
    ap.add_argument("--steps", type=int, default=20, help="env steps per rollout (default: a whole episode, 20)")
    ap.add_argument("--reps", type=int, default=3, help="timed rollouts per N (median reported)")
    ap.add_argument("--ckpt", default=None, help="world-model checkpoint, 'pretrained' for the shipped one (default: WorldModelConfig() at random init)")
    ap.add_argument("--data", default=None, help="trajectory directory for reset prefixes (default: synthetic episodes)")
    ap.add_argument("--real", default="small,collect",
                    help="real env steps to time: small (4L/128, 100 it + eval of 20+20 batches), "
                         "collect (2L/64, 40 it + eval of 20 val batches); '' to skip")
    ap.add_argument("--real-reps", type=int, default=3, help="timed decision intervals per real scale")
    ap.add_argument("--task", default="shakespeare_char", help="dataset of the real runs")
    ap.add_argument("--data-dir", default=None, help="sets LRPILOT_DATA_DIR (where <task>/input.txt is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=1,
                    help="K > 1: a K-member ensemble (the checkpoint's parameters stacked K times, or K random inits); "
                         "every member runs every step, so the cost is about K times one model's (no-cache skipped)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: N=16 for both variants, 1 rep, real step at the collection scale only, shortened "
                         "to 10 iterations and 4 eval batches")
    a = ap.parse_args()
    if a.data_dir:
        os.environ["LRPILOT_DATA_DIR"] = a.data_dir
    envs, nc_envs, reps, real_reps = a.envs, a.nocache_envs, a.reps, a.real_reps
    if a.quick:
        envs, nc_envs, reps, real_reps = "16", "16", 1, 1
        real = "collect" if a.real else ""
    else:
        real = a.real

    import jax

    from lrpilot.worldmodel.env import SimEnv, simulate

    cfg, model, ser, wm_params, source = world_model(a.ckpt, a.seed)
    if a.ensemble > 1:
        import dataclasses

        import jax.numpy as jnp

        from lrpilot.worldmodel.model import build

        if cfg.ensemble == 1:
            inits = [wm_params] if a.ckpt else []
            extra = {k: v for k, v in wm_params.items() if k == "action_linear"}  # the linear action term, where it has one
            while len(inits) < a.ensemble:
                inits.append({**model.init(jax.random.key(a.seed + len(inits) + 1), jnp.zeros((1, ser.seq_len), jnp.int32))["params"],
                              **extra})
            wm_params = jax.tree.map(lambda *xs: jnp.stack(xs), *inits)
            cfg = dataclasses.replace(cfg, ensemble=a.ensemble)
            model, _ = build(cfg, ser.spec)
        source += f", {cfg.ensemble}-member ensemble"
        nc_envs = ""
    spec = ser.spec
    if a.data:
        from lrpilot.trajectories import load_dir

        traj, traj_src = load_dir(a.data, spec), f"trajectories {a.data}"
    else:
        traj, traj_src = synthetic_trajectories(spec, seed=a.seed), "synthetic trajectories"
    env = SimEnv(model, ser)
    params = env.params(wm_params, traj)
    n_calls = len(env._segments)
    n_sampled = sum(s[2] is not None for s in env._segments)
    n_par = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(wm_params))

    print_header(f"bench_sim: simulated env steps per second, cache vs no cache{' (quick)' if a.quick else ''}")
    print(f"# world model {cfg.n_layer}L/{cfg.n_head}H/{cfg.d_model} ({n_par / 1e6:.3f}M params, {source}), "
          f"seq_len {ser.seq_len}, {ser.step_len} symbols per step ({n_sampled} sampled), reset prefixes from "
          f"{len(traj)} {traj_src}, random actions, {a.steps} steps per rollout, {reps} timed rollouts per N", flush=True)
    print(f"# per env step: cache = {n_calls} model calls over {ser.step_len} new symbols; "
          f"no cache = {n_sampled} full forwards over {ser.seq_len} symbols; times include the reset", flush=True)

    act = random_policy(spec.n_actions)
    key = jax.random.key(a.seed)
    sim_rate = {}
    tokens_cache = {}
    for n in [int(x) for x in envs.split(",") if x]:
        f = jax.jit(lambda p, k, n=n: simulate(env, p, k, act, n, a.steps))
        first, t, out = time_fn(lambda: f(params, key), reps)
        sim_rate[("cache", n)] = n * a.steps / t
        tokens_cache[n] = np.asarray(out[4].tokens)
        print(f"sim cache    N={n:<5d}: {n * a.steps / t:10.0f} env steps/s | {1e3 * t / a.steps:8.2f} ms per batched "
              f"step | {1e6 * t / (n * a.steps):8.1f} us per env step | compile+first {first:.1f} s", flush=True)
    for n in [int(x) for x in nc_envs.split(",") if x]:
        f = jax.jit(lambda p, k, n=n: nocache_simulate(env, p, k, act, n, a.steps))
        first, t, out = time_fn(lambda: f(params, key), reps)
        sim_rate[("nocache", n)] = n * a.steps / t
        line = (f"sim no-cache N={n:<5d}: {n * a.steps / t:10.0f} env steps/s | {1e3 * t / a.steps:8.2f} ms per batched "
                f"step | {1e6 * t / (n * a.steps):8.1f} us per env step | compile+first {first:.1f} s")
        if ("cache", n) in sim_rate:
            same = float(np.mean(np.all(tokens_cache[n] == np.asarray(out[1]), axis=1)))
            line += (f" | cache speed-up x{sim_rate[('cache', n)] / sim_rate[('nocache', n)]:.1f}"
                     f" | episodes identical to the cached run {100 * same:.0f}%")
        print(line, flush=True)

    if not real:
        return
    from lrpilot import data
    from lrpilot.trainers.config import scale_config

    ds = data.load(a.task)
    scales = {
        "small": scale_config(a.task, "small", sample_tokens=0),
        "collect": scale_config(a.task, "small", n_layer=2, n_head=2, n_embd=64, max_iters=800, warmup_iters=0,
                                eval_train=False, sample_tokens=0),
    }
    for name in [s for s in real.split(",") if s]:
        if name not in scales:
            raise SystemExit(f"--real: unknown scale {name!r}; expected small, collect")
        c = scales[name]
        if a.quick:  # shortened decision interval: exercises the code, not a real figure
            c = c.replace(max_iters=10 * spec.n_decisions, eval_iters=4)
        r = real_env_step(c, ds, spec.n_decisions, real_reps)
        evals = f"{c.eval_iters} {'train+val' if c.eval_train else 'val'} batches"
        print(f"real env step {name:<7s} ({c.n_layer}L/{c.n_head}H/{c.n_embd}, block {c.block_size}, batch "
              f"{c.batch_size}): {1e3 * r['step']:9.1f} ms = train {r['iters']} it {1e3 * r['train']:8.1f} ms + "
              f"eval of {evals} {1e3 * r['eval']:7.1f} ms{' (quick: shortened)' if a.quick else ''}", flush=True)
        ratios = " | ".join(f"{kind} N={n}: x{r['step'] * rate:,.0f}" for (kind, n), rate in sim_rate.items())
        if ratios:
            print(f"ratio real/simulated step cost ({name}): {ratios}", flush=True)


if __name__ == "__main__":
    main()
