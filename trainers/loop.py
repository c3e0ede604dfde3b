"""The host loop: controllers, evaluation points, divergence, timing, results.

`train(data, cfg, runs)` trains every (seed, controller) of `runs` on one dataset, batching
runs that share an optimizer kind into one `RunGroup`. Each run's controller is driven by a
`LoopDriver` (the same driver a user's own loop uses). The loop evaluates at the protocol's
points (every eval_interval updates and at the end) and wherever a controller asks to observe
with a validation loss; best_val_loss is the minimum over the protocol's points only, so every
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
from lrpilot.controllers import Controller, RunInfo
from lrpilot.data import CharData
from lrpilot.driver import LoopDriver
from lrpilot.progress import progress_bar
from lrpilot.spec import DEFAULT_SPEC
from lrpilot.trainers.charlm import ChunkTimer, RunGroup, inference_tokens_per_second
from lrpilot.trainers.config import TrainConfig


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


def run_info(cfg: TrainConfig, seed: int, lr_mult: float = 1.0, n_params: int | None = None) -> RunInfo:
    return RunInfo(base_lr=cfg.learning_rate * lr_mult, min_lr=cfg.min_lr * lr_mult, warmup_iters=cfg.warmup_iters,
                   max_iters=cfg.max_iters, eval_interval=cfg.eval_interval, seed=seed,
                   tokens_per_update=cfg.batch_size * cfg.block_size, n_params=n_params)


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
        group = _Group(data, cfg, kind.split("#")[0], [runs[i] for i in idx], devices)
        for i, res in zip(idx, group.train(progress, on_eval)):
            results[i] = res
    return results  # type: ignore[return-value]


@dataclasses.dataclass
class _Run:
    """Host-side record of one run of a group."""

    spec: RunSpec
    driver: LoopDriver
    curves: list = dataclasses.field(default_factory=list)
    stopped_at: int | None = None  # iteration at which the run stopped updating (divergence or its controller)
    diverged: bool = False  # the spec's divergence: a non-finite loss, or val >= divergence_ratio x initial val
    stop_reason: str | None = None
    val0: float | None = None  # validation loss at iteration 0
    eval_seconds: float = 0.0  # its share of evaluations outside the protocol's points
    eff_lr: float = float("nan")


def _best_val(r: _Run) -> float:
    """Minimum validation loss over the protocol's evaluations; a diverged run's best before it
    diverged (NaN when there is none)."""
    vals = [p["val_loss"] for p in r.curves if p["protocol"] and p["val_loss"] is not None
            and math.isfinite(p["val_loss"]) and (not r.diverged or p["iter"] < r.stopped_at)]
    return min(vals) if vals else float("nan")


class _Group:
    """The runs of one RunGroup, their drivers, and the evaluation points they need."""

    def __init__(self, data: CharData, cfg: TrainConfig, kind: str, specs: list[RunSpec], devices):
        self.data, self.cfg, self.kind = data, cfg, kind
        self.group = RunGroup(cfg, data.vocab_size, kind, [s.seed for s in specs], devices)
        n_params = self.group.n_params
        self.runs = [_Run(s, LoopDriver.from_run(s.controller, run_info(cfg, s.seed, s.lr_mult, n_params))) for s in specs]
        self.protocol = set(run_info(cfg, 0).eval_iters())
        self.eval_pts = set(self.protocol)
        for r in self.runs:
            self.eval_pts |= {p for p in r.driver.observe_points if r.driver.wants_eval(p)}
        stops = sorted(self.eval_pts | {p for r in self.runs for p in r.driver.observe_points} | {0, cfg.max_iters})
        self.chunk = int(np.gcd.reduce(np.diff(stops))) if len(stops) > 1 else cfg.max_iters
        self.losses = np.full((len(specs), cfg.max_iters), np.nan, np.float32)

    def _at_stop(self, it: int, train_arr, val_arr) -> None:
        """Divergence bookkeeping, evaluation, curves and observations at iteration `it`."""
        alive = self.group.alive()
        for i, r in enumerate(self.runs):
            if not alive[i] and r.stopped_at is None:
                bad = np.flatnonzero(~np.isfinite(self.losses[i, : max(it, 1)]))
                r.stopped_at, r.diverged = (int(bad[0]) if len(bad) else it), True
                r.stop_reason = f"diverged: non-finite training loss at iteration {r.stopped_at}"
                r.driver.diverged(it)
        evals = None
        if it in self.eval_pts:
            t0 = time.perf_counter()
            evals = self.group.evaluate(it, train_arr, val_arr, with_train=it in self.protocol)
            if it not in self.protocol:  # an evaluation only controllers asked for: charge it to them
                share = (time.perf_counter() - t0) / len(self.runs)
                for r in self.runs:
                    if r.driver.wants_eval(it):
                        r.eval_seconds += share
        for i, r in enumerate(self.runs):
            if r.stopped_at is not None:
                continue
            # a run sees the protocol's evaluations and those it asked for, never its batchmates': its
            # result does not depend on what it was batched with (val_estimate runs beside others)
            seen = evals is not None and (it in self.protocol or r.driver.wants_eval(it))
            tl, vl = (float(evals[0][i]), float(evals[1][i])) if seen else (None, None)
            tl = tl if self.cfg.eval_train and it in self.protocol else None
            if seen:
                lr = r.driver.last_lr
                r.curves.append({"iter": it, "train_loss": tl, "val_loss": vl, "lr": lr,
                                 "effective_lr": r.eff_lr if self.kind == "prodigy" else lr,
                                 "protocol": it in self.protocol})
            if it == 0 and vl is not None:
                r.val0 = vl
            observed = r.driver.observe(it, vl)
            ratio = DEFAULT_SPEC.divergence_ratio
            if vl is not None and it > 0 and not (vl < ratio * r.val0):  # the spec's divergence (NaN included)
                r.stopped_at, r.diverged = it, True
                r.stop_reason = (f"diverged: validation loss {vl:.4g} at iteration {it} >= {ratio:g} x the initial "
                                 f"{r.val0:.4g}")
                r.driver.diverged(it + 1)  # tells a controller that did not observe here
                self.group.stop(i)
            elif observed and r.driver.finished and it < self.cfg.max_iters:
                r.stopped_at = it  # the controller ended the run (e.g. an env episode terminated)
                r.stop_reason = r.spec.controller.stop_reason or f"stopped by its controller at iteration {it}"
                self.group.stop(i)

    def train(self, progress: bool, on_eval: Callable | None) -> list[RunResult]:
        cfg, n = self.cfg, len(self.runs)
        t_start = time.perf_counter()
        train_arr, val_arr = self.group.put_data(self.data.train), self.group.put_data(self.data.val)
        timer = ChunkTimer()
        bar = progress_bar(cfg.max_iters, progress, f"{self.data.name} x{n} ({self.kind})")
        try:
            it = 0
            while True:
                self._at_stop(it, train_arr, val_arr)
                best = [_best_val(r) for r in self.runs]  # after the evaluation, so the last one is shown too
                bar.set_postfix(best_val=f"{np.nanmin(best):.4f}" if np.isfinite(best).any() else "-", refresh=False)
                if on_eval is not None and it in self.eval_pts:
                    on_eval(it, [r.curves for r in self.runs])
                if it >= cfg.max_iters or all(r.stopped_at is not None for r in self.runs):
                    break
                c = min(self.chunk, cfg.max_iters - it)
                lrs = np.zeros((n, c), np.float32)
                for i, r in enumerate(self.runs):
                    if r.stopped_at is None:
                        lrs[i] = r.driver.lrs(it, c)
                t0 = time.perf_counter()
                out = self.group.train_chunk(lrs, it, train_arr)
                timer.add(c, time.perf_counter() - t0)
                self.losses[:, it : it + c] = out.losses
                for i, r in enumerate(self.runs):
                    r.eff_lr = float(out.effective_lr[i])
                    if r.stopped_at is None:
                        r.driver.add_losses(out.losses[i], out.grad_norm[i], out.clipped[i], out.update_ratio[i])
                it += c
                bar.update(c)
        finally:
            bar.close()
        return [self._result(i, r, time.perf_counter() - t_start, timer) for i, r in enumerate(self.runs)]

    def _result(self, i: int, r: _Run, train_seconds: float, timer: ChunkTimer) -> RunResult:
        cfg, spec = self.cfg, r.spec
        last = r.curves[-1] if r.curves else None  # the last evaluation: at the end, or where the run stopped
        tok_s = float("nan")
        if cfg.sample_tokens > 0:
            tok_s = inference_tokens_per_second(self.group.model, self.group.params(i), cfg.sample_tokens, spec.seed)
        steps = max(1, (r.stopped_at if r.stopped_at is not None else cfg.max_iters))
        backend, device = device_info()
        info = {
            "task": self.data.name, "controller": spec.label, "seed": spec.seed, "lr_mult": spec.lr_mult,
            "final_train_loss": last["train_loss"] if last else None,
            "best_val_loss": _best_val(r),
            "final_val_loss": last["val_loss"] if last else None,
            "final_iter": last["iter"] if last else None,
            "total_train_time": train_seconds,
            "avg_inference_tokens_per_second": tok_s,
            "ms_per_iter": timer.median_ms(),
            "ms_per_iter_includes_compile": timer.includes_compile(),
            "runs_batched": len(self.runs),
            "controller_overhead_ms": 1e3 * (r.driver.host_seconds + r.eval_seconds) / steps,
            "controller_host_ms": 1e3 * r.driver.host_seconds / steps,
            "controller_eval_ms": 1e3 * r.eval_seconds / steps,
            "diverged": r.diverged,
            "diverged_at": r.stopped_at if r.diverged else None,
            "stopped_at": r.stopped_at,
            "stop_reason": r.stop_reason,
            "optimizer": self.kind,
            "controller_options": spec.controller.describe(),
            "config": dataclasses.asdict(cfg),
            "vocab_size": self.data.vocab_size,
            "n_params": self.group.n_params,
            "backend": backend, "device": device,
            "jax_version": jax.__version__, "lrpilot_version": lrpilot.__version__,
        }
        return RunResult(self.data.name, spec.seed, spec.label, r.curves, info)
