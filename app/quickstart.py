"""`lrpilot quickstart`: the pretrained policy against cosine, side by side, in a few minutes on a CPU.

Trains two runs of the same model on the same data with the same seed (so the same
initialisation and batches) in one batched step: one under the pretrained policy, one under
nanoGPT's cosine schedule. Needs no download: the default corpus is built from the Python
installation.
"""

from __future__ import annotations

import time

NEXT_STEPS = """
Where to go next
  * your own text:        lrpilot train --task file:PATH --controller policy:pretrained --out runs/mine
  * compare controllers:  lrpilot evaluate --tasks file:PATH --controllers policy:pretrained cosine wsd --seeds 3 --out runs/cmp
  * your own loop:        lrpilot.policy.load("pretrained") is a controller; lrpilot.driver has OptaxLR and TorchLR
                          (examples/optax_loop.py, examples/torch_nanogpt.py)
  * your own trajectories: lrpilot collect --runs 50 --out data/mine, then lrpilot worldmodel train / lrpilot policy train
"""


TRAINING_CORPORA = ("python_docs", "python_docstrings", "python_stdlib", "unicode_names", "licenses", "gettext_catalogs",
                    "mime_xml", "iso_codes_json")  # what the shipped policy's runs were collected on


def cmd_quickstart(args) -> int:
    from lrpilot import controllers, data
    from lrpilot.app import checks, plots
    from lrpilot.app.evaluate import fmt, safe_name
    from lrpilot.io import write_json
    from lrpilot.trainers.config import scale_config
    from lrpilot.trainers.loop import RunSpec, device_info, train

    checks.positive(args.iters, "--iters")
    checks.positive(args.lr_mult, "--lr-mult")
    data.check_task(args.task)
    out = checks.out_dir(args.out)
    backend, device = device_info()
    print(f"lrpilot quickstart: pretrained policy vs cosine on '{args.task}' ({args.scale} scale, {args.iters} iterations, "
          f"base LR x{args.lr_mult:g}, seed {args.seed}) on {backend} ({device})")
    t0 = time.perf_counter()
    ds = data.load(args.task)
    cfg = scale_config(args.task, args.scale, max_iters=args.iters, eval_interval=max(args.iters // 8, 1))
    specs = ["policy:pretrained", "cosine"]
    runs = [RunSpec(args.seed, controllers.make(s), s, args.lr_mult) for s in specs]
    print(f"  data: {len(ds.train):,} train / {len(ds.val):,} val characters, vocab {ds.vocab_size}; "
          f"model {cfg.n_layer} layers x {cfg.n_embd}, block {cfg.block_size}, batch {cfg.batch_size}")
    results = train(ds, cfg, runs, progress=not args.quiet)
    curves = {}
    for r in results:
        d = out / safe_name(r.controller)
        r.final_info["scale"] = args.scale
        write_json(d / "final_info.json", r.final_info)
        write_json(d / "curves.json", r.curves)
        curves[r.controller] = [r.curves]
    plots.loss_and_lr(args.task, curves, out / "quickstart.png",
                      f"{args.task}: pretrained policy vs cosine (seed {args.seed}, base LR x{args.lr_mult:g})")
    print(f"\n  {'controller':20s} {'best val loss':>14s} {'final train loss':>17s}  diverged")
    for r in results:
        fi = r.final_info
        # final_train_loss is None for a run stopped where only val was evaluated
        print(f"  {r.controller:20s} {fi['best_val_loss']:14.4f} {fmt(fi['final_train_loss']):>17s}  {fi['diverged']}")
    a, b = (r.final_info["best_val_loss"] for r in results)
    verdict = "the policy is ahead" if a < b else "cosine is ahead"
    print(f"\n  difference (policy - cosine): {a - b:+.4f} nats/char: {verdict} on this one seed "
          f"(one run each is an anecdote; see the README's results for several seeds).")
    if args.task in TRAINING_CORPORA:
        print(f"  note: '{args.task}' is one of the corpora the pretrained policy's training data came from (other "
              f"runs of it); on held-out shakespeare_char at this scale it beats cosine at base LR x0.1-x1 and x10 "
              f"and loses to it at x3 (README results).")
    print(f"  plots: {out / 'quickstart.png'}   runs: {out}/*/final_info.json, curves.json")
    print(f"  took {time.perf_counter() - t0:.0f} s")
    print(NEXT_STEPS)
    return 0


def register(sub) -> None:
    q = sub.add_parser("quickstart", help="pretrained policy vs cosine on an offline corpus, in a few minutes")
    q.add_argument("--task", default="python_docs", help="any task (default: an offline corpus, no download)")
    q.add_argument("--scale", default="small", choices=["full", "small", "tiny"], help="protocol scale of the model")
    q.add_argument("--iters", type=int, default=1000, help="training iterations of each run")
    q.add_argument("--lr-mult", type=float, default=1.0, help="mis-set the base LR of both runs by this factor")
    q.add_argument("--seed", type=int, default=0, help="the runs' seed (both runs share it)")
    q.add_argument("--out", default="lrpilot-quickstart", help="directory for the runs' files and the plot")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_quickstart)
