"""Collection jobs: plan, train in batched groups, write one file per finished run, resume.

A job is fixed by its arguments (family, tasks, exploration mix, policy, parallel K, job
seed): run i belongs to group i // K, whose task and config are drawn from a RNG seeded by
(job seed, group); run i's seed, explorer and base LR from (job seed, i). So `--runs 600`
after `--runs 300` grows the same job, and a rerun after a crash trains only the runs whose
files are missing. The job's arguments are kept in `DIR/jobs/seed<S>.json`; resuming with
different ones is refused (use another --seed to add a different job to the directory).
"""

from __future__ import annotations

import dataclasses
import platform
import random
import time
from pathlib import Path

import numpy as np

import lrpilot
from lrpilot import data as datasets, trajectories as tfmt
from lrpilot.collect import edges, explore
from lrpilot.collect.edges import V2_MIX
from lrpilot.collect.tasks import DEFAULT_TASKS, FAMILIES, GroupPlan, sample_base_mult, sample_group
from lrpilot.data import OFFLINE_TASKS, misplaced_tasks
from lrpilot.io import read_json, write_json
from lrpilot.progress import progress_bar
from lrpilot.spec import DEFAULT_SPEC, EnvSpec

DEFAULT_MIX = {"walk": 0.4, "cosine": 0.25, "wsd": 0.2, "constant": 0.15}


@dataclasses.dataclass(frozen=True)
class Job:
    seed: int = 0
    family: str = "cpu"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    parallel: int = 4
    mix: tuple[tuple[str, float], ...] = tuple(DEFAULT_MIX.items())
    policy: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"collect: unknown family '{self.family}'; expected one of {', '.join(FAMILIES)}")
        if self.parallel <= 0:
            raise ValueError(f"collect: --parallel must be positive, got {self.parallel}")
        if FAMILIES[self.family].timing and self.parallel != edges.TIMING_GRID:
            grid = (f"{len(edges.DROP_STARTS)} cut starts x {len(edges.DROP_FLOORS)} floors" if FAMILIES[self.family].drop
                    else f"{len(edges.TIMING_LEVELS)} configured LRs x {len(edges.TIMING_STARTS)} anneal starts")
            raise ValueError(f"collect: a '{self.family}' group is the {edges.TIMING_GRID}-run grid ({grid}): "
                             f"--parallel must be {edges.TIMING_GRID}, got {self.parallel}")
        # checked here, before collect() records the job's arguments in DIR/jobs/seed<S>.json:
        # a job refused only when its first group is planned would leave that file behind, and
        # the corrected command would then be refused as a different job
        if not self.tasks:
            raise ValueError("collect: --tasks needs at least one task")
        held, unknown = misplaced_tasks(self.tasks)
        if held:
            raise ValueError(f"collect: {held} are held out for zero-shot evaluation and are never collected from")
        if unknown:
            raise ValueError(f"collect: unknown task(s) {unknown}; expected {', '.join(OFFLINE_TASKS)} or file:PATH")
        kinds = {"walk", "cosine", "wsd", "constant", "policy"} | (set(V2_MIX) if FAMILIES[self.family].draws == "v2" else set())
        for k, w in self.mix:
            if k not in kinds or w < 0:
                raise ValueError(f"collect: --explore entry '{k}={w}' invalid; kinds: {', '.join(sorted(kinds))}, weights >= 0")
        if dict(self.mix).get("policy", 0) > 0 and not self.policy:
            raise ValueError("collect: --explore policy=W needs --policy PATH (a policy checkpoint)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"], d["mix"] = list(self.tasks), {k: w for k, w in self.mix}
        return d

    def group(self, g: int) -> GroupPlan:
        return sample_group(random.Random(f"{self.seed}/group/{g}"), self.family, self.tasks)

    def run_seed(self, i: int) -> int:
        """Run i's seed; a forked or anneal-timing group's runs share their first run's (common random numbers)."""
        if FAMILIES[self.family].fork or FAMILIES[self.family].timing:
            i = i - i % self.parallel
        return self.seed * 1_000_003 + i

    def explorer(self, i: int, spec: EnvSpec):
        """Run i's explorer and its base-LR multiplier (of the model's default LR)."""
        rng = random.Random(f"{self.seed}/run/{i}")
        if FAMILIES[self.family].fork:  # shared draws per group, then branch i % parallel
            g = i // self.parallel
            mult = sample_base_mult(random.Random(f"{self.seed}/base/g{g}"), self.family)
            return edges.sample_fork(random.Random(f"{self.seed}/fork/{g}"), i % self.parallel, self.run_seed(i) + i,
                                     mult, spec), mult
        if FAMILIES[self.family].timing:  # shared draws per group; branch i % parallel sets the LR and the anneal start
            g = i // self.parallel
            if FAMILIES[self.family].drop:  # ... or the cut's start and floor
                return edges.sample_drop(random.Random(f"{self.seed}/drop/{g}"), i % self.parallel, self.run_seed(i) + i, spec)
            return edges.sample_timing(random.Random(f"{self.seed}/timing/{g}"), i % self.parallel, self.run_seed(i) + i, spec,
                                       FAMILIES[self.family].timing_levels)
        if FAMILIES[self.family].draws == "v1":  # the starter's order of draws, kept so that its job still grows
            ctrl = explore.sample_explorer(rng, self.run_seed(i), spec, self.policy, dict(self.mix))
            return ctrl, sample_base_mult(rng, self.family)
        mult = sample_base_mult(random.Random(f"{self.seed}/base/{i}"), self.family)
        return edges.sample_explorer_v2(rng, self.run_seed(i), mult, spec, self.policy, dict(self.mix)), mult

    def filename(self, i: int) -> str:
        return f"run_s{self.seed}_{i:05d}.parquet"


def check_job_file(out: Path, job: Job) -> None:
    path = out / "jobs" / f"seed{job.seed}.json"
    if path.exists():
        old = read_json(path)
        diff = sorted(k for k in job.to_dict() if k != "parallel" and old.get(k) != job.to_dict()[k])
        if "parallel" in old and old["parallel"] != job.parallel:
            diff.append("parallel")
        if diff:
            raise ValueError(f"{path}: this directory's job {job.seed} was started with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); resume with the same arguments "
                             f"or start another job with --seed")
    else:
        write_json(path, job.to_dict())


def pending_groups(out: Path, job: Job, n_runs: int) -> dict[int, list[int]]:
    """Group index -> run indices whose files are missing."""
    todo: dict[int, list[int]] = {}
    for i in range(n_runs):
        if not (out / job.filename(i)).exists():
            todo.setdefault(i // job.parallel, []).append(i)
    return todo


def clean_partial(out: Path, job: Job | None = None) -> int:
    """Removes temporary files left by a killed writer (never complete runs): with `job`, only
    that job's, so a job resuming never deletes the file another job (seed) is writing."""
    stale = list(out.glob(f".run_s{job.seed}_*.tmp" if job is not None else ".*.tmp"))
    for p in stale:
        p.unlink()
    return len(stale)


def _versions() -> dict:
    import flax
    import jax
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "lrpilot": lrpilot.__version__}


def trained_meta(res, ctrl, wall: float, n_runs: int) -> dict:
    """The metadata fields of a run file that record how it trained (outcome, device, timing, versions, host):
    `res` its `RunResult`, `ctrl` its controller, trained in a group of n_runs in `wall` seconds."""
    from lrpilot.trainers.loop import device_info

    backend, device = device_info()
    return {"diverged": res.final_info["diverged"], "terminated": ctrl.terminated, "backend": backend, "device": device,
            "group_wall_time": wall, "runs_in_group": n_runs, "ms_per_iter": res.final_info["ms_per_iter"],
            "versions": _versions(), "host": platform.node(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_group(out: str, job_dict: dict, g: int, indices: list[int], spec_json: str, progress: bool = False) -> list[str]:
    """Trains the given runs of group g together and writes their files. Returns file names.

    Top-level and argument-picklable, so Ray workers can call it."""
    from lrpilot.trainers.loop import RunSpec, train

    spec = EnvSpec.from_json(spec_json)
    d = dict(job_dict)
    d["tasks"], d["mix"] = tuple(d["tasks"]), tuple(d["mix"].items())
    job = Job(**d)
    plan = job.group(g)
    ds = datasets.load(plan.task)
    runs, ctrls = [], []
    for i in indices:
        ctrl, mult = job.explorer(i, spec)
        ctrls.append(ctrl)
        runs.append(RunSpec(job.run_seed(i), ctrl, ctrl.name, mult))
    t0 = time.time()
    results = train(ds, plan.cfg, runs, progress=progress)
    wall = time.time() - t0
    written = []
    for i, spec_run, res, ctrl in zip(indices, runs, results, ctrls):
        meta = {
            "task": plan.task, "data": ds.meta, "vocab_size": ds.vocab_size, "config": dataclasses.asdict(plan.cfg),
            "seed": spec_run.seed, "run_index": i, "group": g, "job_seed": job.seed, "family": job.family,
            "controller": ctrl.describe(), "base_lr": plan.cfg.learning_rate * spec_run.lr_mult,
            "base_lr_mult": spec_run.lr_mult, "default_lr": plan.default_lr, "n_params": res.final_info["n_params"],
            "tokens_per_update": plan.cfg.batch_size * plan.cfg.block_size, **trained_meta(res, ctrl, wall, len(indices)),
        }
        name = job.filename(i)
        tfmt.write_run(Path(out) / name, ctrl.trajectory(), meta, spec)
        written.append(name)
    return written


def collect(out: str | Path, job: Job, n_runs: int, spec: EnvSpec = DEFAULT_SPEC, ray_address: str | None = None,
            progress: bool = True, log=print) -> int:
    """Grows `out` to n_runs runs of `job`. Returns the number of runs trained now."""
    out = Path(out)
    for task in job.tasks:  # every corpus readable before the job is recorded: a typo leaves nothing behind
        datasets.check_task(task)
        if task in datasets.OFFLINE_TASKS and task not in datasets.PYTHON_TASKS:
            datasets.load(task)  # a system corpus this machine may lack (DatasetError naming its files)
    out.mkdir(parents=True, exist_ok=True)
    check_job_file(out, job)
    n_stale = clean_partial(out, job)
    todo = pending_groups(out, job, n_runs)
    n_todo = sum(len(v) for v in todo.values())
    log(f"[collect] {out}: job seed {job.seed}, {n_runs - n_todo}/{n_runs} runs present"
        + (f", removed {n_stale} partial file(s)" if n_stale else "") + f", {n_todo} to train in {len(todo)} group(s)")
    if not n_todo:
        return 0
    bar = progress_bar(n_todo, progress, "runs")
    try:
        if ray_address:
            _collect_ray(out, job, todo, spec, ray_address, bar)
        else:
            for g, idx in sorted(todo.items()):
                run_group(str(out), job.to_dict(), g, idx, spec.to_json())
                bar.update(len(idx))
    finally:
        bar.close()
    return n_todo


def _collect_ray(out: Path, job: Job, todo: dict, spec: EnvSpec, address: str, bar) -> None:
    try:
        import ray
    except ImportError:
        raise ImportError("collect --ray needs Ray: pip install 'lrpilot[distributed]'") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    remote = ray.remote(run_group)
    pending = {remote.remote(str(out), job.to_dict(), g, idx, spec.to_json()): len(idx) for g, idx in sorted(todo.items())}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            ray.get(ref)  # re-raises a worker's error
            bar.update(pending.pop(ref))
