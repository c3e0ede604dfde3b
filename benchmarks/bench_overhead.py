"""A controller's whole overhead in a real run: its decisions and the evaluations it asks for
beyond the protocol's, as a share of the run's training time (the policy issue's "cheap to
deploy" target: <= 1% at the small scale).

    python benchmarks/bench_overhead.py --ckpt results/simple_v2/round_0/policy
    python benchmarks/bench_overhead.py --ckpt pretrained --task python_docs --iters 2000
    python benchmarks/bench_overhead.py --quick          # smoke check (tiny scale, ~1 min)

What is measured: one real training run per controller, alone (no batchmates), through lrpilot's
trainer (`trainers.loop.train`, the same code `lrpilot evaluate` runs), same task, seed and
config: `cosine` (the reference: no extra evaluation), `policy:CKPT` (a real validation
evaluation at each of its decisions that the protocol does not evaluate) and `policy_est:CKPT`
(real evaluations only before the protocol's first one; elsewhere val is estimated from the
train losses). Printed per run, from its final_info.json fields: the median training step
(ms/iter), the controller's overhead per iteration (`controller_overhead_ms`: host time in the
controller + the evaluations only it asked for) split into host and evaluation, the overhead as
a share of the run's wall time and of one step, the evaluations it asked for, and the best val.
The task defaults to an offline corpus (python_docs), never a test task: speed only, nothing is
chosen on it. Machine load shifts both times alike; the header records it.
"""

from __future__ import annotations

import argparse
import os

from _common import print_header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="pretrained", help="policy checkpoint ('pretrained': the shipped one)")
    ap.add_argument("--task", default="python_docs", help="corpus of the runs (default: an offline one)")
    ap.add_argument("--scale", default="small", choices=["small", "tiny", "full"])
    ap.add_argument("--iters", type=int, default=None, help="iterations per run (default: the scale's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--controllers", nargs="+", default=None,
                    help="controller specs (default: cosine policy:CKPT policy_est:CKPT)")
    ap.add_argument("--data-dir", default=None, help="sets LRPILOT_DATA_DIR")
    ap.add_argument("--quick", action="store_true", help="smoke check: tiny scale, 200 iterations")
    a = ap.parse_args()
    if a.data_dir:
        os.environ["LRPILOT_DATA_DIR"] = a.data_dir
    scale, iters = ("tiny", 200) if a.quick else (a.scale, a.iters)

    from lrpilot import controllers, data
    from lrpilot.trainers.config import scale_config
    from lrpilot.trainers.loop import RunSpec, train

    specs = a.controllers or ["cosine", f"policy:{a.ckpt}", f"policy_est:{a.ckpt}"]
    ctrls = [controllers.make(s) for s in specs]  # bad specs and checkpoints fail before any data is read
    data.check_task(a.task)
    ds = data.load(a.task)
    overrides = {} if iters is None else {"max_iters": iters, "eval_interval": max(iters // 8, 1)}
    cfg = scale_config(a.task, scale, **overrides)
    print_header(f"bench_overhead: a controller's whole overhead in one real run{' (quick)' if a.quick else ''}")
    print(f"# task {a.task}, {scale} scale ({cfg.n_layer}L x {cfg.n_embd}, block {cfg.block_size}, batch {cfg.batch_size}), "
          f"{cfg.max_iters} iterations, protocol evaluations every {cfg.eval_interval} ({cfg.eval_iters} batches), "
          f"seed {a.seed}; one run per controller, trained alone")
    print(f"{'controller':44s} {'ms/iter':>8s} {'wall s':>7s} {'overhead ms/iter':>17s} {'host':>7s} {'evals':>7s} "
          f"{'% of wall':>9s} {'% of step':>9s} {'extra evals':>11s} {'best val':>9s}")
    for spec, ctrl in zip(specs, ctrls):
        (res,) = train(ds, cfg, [RunSpec(a.seed, ctrl, spec)], progress=False, max_batch=1)
        fi = res.final_info
        steps = fi["stopped_at"] or cfg.max_iters
        over_s = fi["controller_overhead_ms"] * steps / 1e3
        extra = sum(1 for p in res.curves if not p["protocol"])
        print(f"{spec[:44]:44s} {fi['ms_per_iter']:8.1f} {fi['total_train_time']:7.1f} {fi['controller_overhead_ms']:17.3f} "
              f"{fi['controller_host_ms']:7.3f} {fi['controller_eval_ms']:7.3f} {100 * over_s / fi['total_train_time']:8.2f}% "
              f"{100 * fi['controller_overhead_ms'] / fi['ms_per_iter']:8.2f}% {extra:11d} {fi['best_val_loss']:9.4f}",
              flush=True)


if __name__ == "__main__":
    main()
