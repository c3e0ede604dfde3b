"""The host loop: controllers, evaluation points, divergence, timing, results.

`train(data, cfg, runs)` trains every (seed, controller) of `runs` on one dataset, batching
runs that share an optimizer kind into one `RunGroup`. It evaluates at the protocol's points
(every eval_interval updates and at the end) and wherever a controller asks to observe with
a validation loss; best_val_loss is the minimum over the protocol's points only, so every
controller is judged on the same evaluations.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import jax
import numpy as np

import lrpilot
from lrpilot.controllers import Controller, Observation, RunInfo
from lrpilot.data import CharData
from trainers.charlm import ChunkTimer, RunGroup, inference_tokens_per_second
from trainers.config import TrainConfig


@dataclasses.dataclass
class RunResult:
    task: str
    seed: int
    controller: str
    curves: list[dict]
    final_info: dict


def device_info() -> tuple[str, str]:
    d = jax.devices()[0]
    return jax.default_backend(), f"{getattr(d, 'device_kind', d.platform)} x{len(jax.devices())}"


def run_info(cfg: TrainConfig, seed: int, lr_mult: float = 1.0) -> RunInfo:
    return RunInfo(base_lr=cfg.learning_rate * lr_mult, min_lr=cfg.min_lr * lr_mult, warmup_iters=cfg.warmup_iters,
                   max_iters=cfg.max_iters, eval_interval=cfg.eval_interval, seed=seed)


def _check_lr(ctrl: Controller, it: int, lr: float) -> float:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"controller '{ctrl.name}' returned lr={lr!r} at iteration {it}; expected a finite number >= 0")
    return float(lr)


@dataclasses.dataclass
class RunSpec:
    """One run: its seed, its (fresh) controller, a label for records, and a multiplier of
    the config's base and min LR (a mis-set base LR for the robustness grid)."""

    seed: int
    controller: Controller
    label: str
    lr_mult: float = 1.0


def train(data: CharData, cfg: TrainConfig, runs: Sequence[RunSpec], progress: bool = True, devices=None,
          on_eval: Callable | None = None, max_batch: int = 0) -> list[RunResult]:
    """Trains every run; runs sharing an optimizer kind are batched (at most `max_batch` per
    group, 0: no limit). Returns results in the order of `runs`."""
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(runs):
        groups.setdefault(spec.controller.optimizer, []).append(i)
    if max_batch > 0:
        groups = {f"{k}#{j}": v[j : j + max_batch] for k, v in groups.items() for j in range(0, len(v), max_batch)}
    results: list[RunResult | None] = [None] * len(runs)
    for kind, idx in groups.items():
        kind = kind.split("#")[0]
        for i, res in zip(idx, _train_group(data, cfg, kind, [runs[i] for i in idx], progress, devices, on_eval)):
            results[i] = res
    return results  # type: ignore[return-value]


def _train_group(data, cfg, kind, runs, progress, devices, on_eval) -> list[RunResult]:
    t_start = time.perf_counter()
    n = len(runs)
    seeds = [r.seed for r in runs]
    ctrls = [r.controller for r in runs]
    for spec in runs:
        spec.controller.reset(run_info(cfg, spec.seed, spec.lr_mult))
    protocol = run_info(cfg, 0).eval_iters()
    obs_pts = [set(c.observe_iters()) for c in ctrls]
    for c, pts in zip(ctrls, obs_pts):
        bad = [p for p in pts if not 0 <= p <= cfg.max_iters]
        if bad:
            raise ValueError(f"controller '{c.name}' asked to observe at iterations {bad[:3]} outside [0, {cfg.max_iters}]")
    eval_pts = set(protocol)
    for c, pts in zip(ctrls, obs_pts):
        if c.needs_val:
            eval_pts |= pts
    stops = sorted(eval_pts | set().union(*obs_pts) | {0, cfg.max_iters})
    chunk = int(np.gcd.reduce(np.diff(stops))) if len(stops) > 1 else cfg.max_iters

    group = RunGroup(cfg, data.vocab_size, kind, seeds, devices)
    train_arr, val_arr = group.put_data(data.train), group.put_data(data.val)
    losses = np.full((n, cfg.max_iters), np.nan, np.float32)
    last_obs = [0] * n
    last_lr: list[float | None] = [None] * n
    eff_lr = [float("nan")] * n
    curves: list[list[dict]] = [[] for _ in range(n)]
    dead_at: list[int | None] = [None] * n
    diverged = [False] * n
    timer = ChunkTimer()
    ctrl_seconds = [0.0] * n  # host time inside the controller
    eval_seconds = [0.0] * n  # this run's share of evaluations outside the protocol's points
    bar = _progress(cfg.max_iters, progress, f"{data.name} x{n} ({kind})")
    try:
        it = 0
        while True:
            alive = group.alive()
            for r in range(n):
                if not alive[r] and dead_at[r] is None:
                    bad = np.flatnonzero(~np.isfinite(losses[r, : max(it, 1)]))
                    dead_at[r] = int(bad[0]) if len(bad) else it
                    diverged[r] = True
                    nxt = [p for p in sorted(obs_pts[r]) if p >= it]
                    if nxt:  # the controller learns of the divergence as NaN metrics
                        ctrls[r].observe(Observation(nxt[0], train_loss=math.nan, val_loss=math.nan, lr=last_lr[r]))
            evals = None
            if it in eval_pts:
                t0 = time.perf_counter()
                evals = group.evaluate(it, train_arr, val_arr)
                if it not in protocol:  # an evaluation only controllers asked for: charge it to them
                    share = (time.perf_counter() - t0) / n
                    for r in range(n):
                        if it in obs_pts[r] and ctrls[r].needs_val:
                            eval_seconds[r] += share
            for r in range(n):
                if dead_at[r] is not None:
                    continue
                tl, vl = (float(evals[0][r]), float(evals[1][r])) if evals is not None else (None, None)
                tl = tl if cfg.eval_train else None
                mean_train = float(np.mean(losses[r, last_obs[r] : it])) if it > last_obs[r] else None
                if evals is not None and (it in protocol or it in obs_pts[r]):
                    curves[r].append({"iter": it, "train_loss": tl, "val_loss": vl, "lr": last_lr[r],
                                      "effective_lr": eff_lr[r] if kind == "prodigy" else last_lr[r],
                                      "protocol": it in protocol})
                if it in obs_pts[r]:
                    t0 = time.perf_counter()
                    ctrls[r].observe(Observation(it, train_loss=mean_train, val_loss=vl, lr=last_lr[r]))
                    ctrl_seconds[r] += time.perf_counter() - t0
                    last_obs[r] = it
                    if getattr(ctrls[r], "stop", False) and it < cfg.max_iters:
                        dead_at[r] = it  # the controller ended the run (e.g. an env episode terminated)
                        group.stop(r)
            if evals is not None and on_eval is not None:
                on_eval(it, curves)
            if it >= cfg.max_iters or all(d is not None for d in dead_at):
                break
            c = min(chunk, cfg.max_iters - it)
            lrs = np.zeros((n, c), np.float32)
            for r in range(n):
                if dead_at[r] is None:
                    t0 = time.perf_counter()
                    seq = [_check_lr(ctrls[r], i, ctrls[r].lr(i)) for i in range(it, it + c)]
                    ctrl_seconds[r] += time.perf_counter() - t0
                    lrs[r] = seq
                    last_lr[r] = seq[-1]
            t0 = time.perf_counter()
            step_losses, eff = group.train_chunk(lrs, it, train_arr)
            timer.add(c, time.perf_counter() - t0)
            losses[:, it : it + c] = step_losses
            eff_lr = [float(e) for e in eff]
            it += c
            bar.update(c)
            best = [min((p["val_loss"] for p in cv if p["protocol"]), default=float("nan")) for cv in curves]
            bar.set_postfix(best_val=f"{np.nanmin(best):.4f}" if np.isfinite(best).any() else "-", refresh=False)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t_start
    backend, device = device_info()
    out = []
    for r, spec in enumerate(runs):
        seed, ctrl, label = spec.seed, spec.controller, spec.label
        prot = [p for p in curves[r] if p["protocol"]]
        tok_s = float("nan")
        if cfg.sample_tokens > 0:
            tok_s = inference_tokens_per_second(group.model, group.params(r), cfg.sample_tokens, seed)
        steps = max(1, (dead_at[r] if dead_at[r] is not None else cfg.max_iters))
        info = {
            "task": data.name, "controller": label, "seed": seed, "lr_mult": spec.lr_mult,
            "final_train_loss": prot[-1]["train_loss"] if prot else None,
            "best_val_loss": min(p["val_loss"] for p in prot) if prot else None,
            "final_val_loss": prot[-1]["val_loss"] if prot else None,
            "total_train_time": train_seconds,
            "avg_inference_tokens_per_second": tok_s,
            "ms_per_iter": timer.median_ms(),
            "runs_batched": n,
            "controller_overhead_ms": 1e3 * (ctrl_seconds[r] + eval_seconds[r]) / steps,
            "controller_host_ms": 1e3 * ctrl_seconds[r] / steps,
            "controller_eval_ms": 1e3 * eval_seconds[r] / steps,
            "diverged": diverged[r],
            "diverged_at": dead_at[r] if diverged[r] else None,
            "stopped_at": dead_at[r],
            "optimizer": kind,
            "controller_options": ctrl.describe(),
            "config": dataclasses.asdict(cfg),
            "vocab_size": data.vocab_size,
            "backend": backend, "device": device,
            "jax_version": jax.__version__, "lrpilot_version": lrpilot.__version__,
        }
        out.append(RunResult(data.name, seed, label, curves[r], info))
    return out


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, *a, **k): pass
    def close(self): pass


def _progress(total, enabled, desc):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True)
