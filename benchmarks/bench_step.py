"""Training-step speed: JAX `RunGroup` (1..N runs vmapped) against PyTorch nanoGPT.

    python benchmarks/bench_step.py [--scale small] [--runs 1,2,4,8] [--chunk 50] [--reps 3] [--rounds 3]
    python benchmarks/bench_step.py --scale full --runs 1,2,4,8 --peak-tflops 989   # on a GPU: MFU
    python benchmarks/bench_step.py --quick                                        # smoke check (< 1 min)

What is timed
* JAX: the real training step of `trainers.charlm.RunGroup.train_chunk` (nanoGPT's get_batch
  on device, forward, backward, AdamW with clip 1.0, the NaN guard), a `lax.scan` of `--chunk`
  iterations of a `vmap` over N runs. One chunk call is timed at a time (compile excluded: the
  first call of each group is a warm-up), divided by the chunk length: ms per batched step.
  Per run-step = that / N; throughput = N * iterations / s.
* PyTorch: nanoGPT's model.py written out below (pre-LN, bias=False, tied head, exact GELU,
  `F.scaled_dot_product_attention(is_causal=True)`, its init), its optimizer groups (AdamW,
  fused=False, decay on >= 2-D parameters), its get_batch (random windows of the same uint16
  train split), its loop body (set LR, forward, backward, clip_grad_norm_ 1.0, step,
  zero_grad(set_to_none=True), loss.item()), with `torch.set_num_threads(os.cpu_count())`. Timed
  in blocks of the same `--chunk` iterations. It runs in a separate process (spawned once, kept
  for the whole benchmark) so that the two frameworks' thread pools never share a process.
* The measurements are interleaved: each round runs torch, then JAX for every N (the order
  reversed on odd rounds), `--reps` blocks each, and the figures are medians over all blocks of
  all rounds (this machine's speed drifts; the per-round medians are printed as well).

`--scale full` (JAX only): the protocol's full model (6L/6H/384, block 256, batch 64, dropout
0.2); reports tokens/s and, with `--peak-tflops`, model FLOPs utilisation
MFU = GPTConfig.flops_per_token() * tokens/s / peak, flops_per_token = 6 N + 12 L d T
(PaLM's convention; N = non-embedding-position parameters, as nanoGPT counts them). The peak
is the device's dense peak for the dtype used (fp32 here; on an NVIDIA GPU XLA runs fp32
matmuls in TF32 by default, so take the TF32 peak for a like-for-like figure).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time

import numpy as np
from _common import med, print_header


# ---- PyTorch nanoGPT (runs in its own process) ----------------------------------------------------
def _torch_worker(conn, shape: dict, train_u16: np.ndarray, threads: int, seed: int, warmup: int) -> None:
    """Builds nanoGPT and its optimizer, warms up, then answers ("run", n) with the seconds of n steps."""
    try:
        import torch
        import torch.nn as nn
        from torch.nn import functional as F
    except ImportError as e:
        conn.send(("error", f"torch is not importable ({e})"))
        return

    torch.set_num_threads(threads)
    torch.manual_seed(seed)

    class LayerNorm(nn.Module):
        """LayerNorm with an optional bias (nanoGPT)."""

        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
            self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
            self.attn_dropout = nn.Dropout(c["dropout"])
            self.resid_dropout = nn.Dropout(c["dropout"])
            self.n_head, self.n_embd, self.dropout = c["n_head"], c["n_embd"], c["dropout"]

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=self.dropout if self.training else 0, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])
            self.dropout = nn.Dropout(c["dropout"])

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln_1 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.attn = CausalSelfAttention(c)
            self.ln_2 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.mlp = MLP(c)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(c["vocab_size"], c["n_embd"]),
                wpe=nn.Embedding(c["block_size"], c["n_embd"]),
                drop=nn.Dropout(c["dropout"]),
                h=nn.ModuleList([Block(c) for _ in range(c["n_layer"])]),
                ln_f=LayerNorm(c["n_embd"], bias=c["bias"]),
            ))
            self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c["n_layer"]))

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets):
            b, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

        def configure_optimizers(self, weight_decay, learning_rate, betas):
            param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
            decay = [p for p in param_dict.values() if p.dim() >= 2]
            nodecay = [p for p in param_dict.values() if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": weight_decay}, {"params": nodecay, "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=False)

    c = shape
    model = GPT(c)
    model.train()
    opt = model.configure_optimizers(c["weight_decay"], c["learning_rate"], (c["beta1"], c["beta2"]))
    block, batch = c["block_size"], c["batch_size"]
    data = train_u16

    def get_batch():
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    def get_lr(it):  # nanoGPT's cosine with warmup
        warm, decay_iters, lr, min_lr = c["warmup_iters"], c["max_iters"], c["learning_rate"], c["min_lr"]
        if it < warm:
            return lr * (it + 1) / (warm + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warm) / (decay_iters - warm)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    state = {"it": 0, "xy": get_batch()}

    def step():
        it = state["it"]
        lr = get_lr(it % c["max_iters"])
        for g in opt.param_groups:
            g["lr"] = lr
        X, Y = state["xy"]
        _, loss = model(X, Y)
        state["xy"] = get_batch()  # nanoGPT prefetches the next batch here
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["it"] = it + 1
        return loss.item()

    for _ in range(warmup):
        step()
    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    conn.send(("ready", {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": n_params}))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        _, n = msg
        t0 = time.perf_counter()
        for _ in range(n):
            loss = step()
        conn.send((time.perf_counter() - t0, loss))


class TorchRunner:
    def __init__(self, cfg, vocab_size: int, train_u16: np.ndarray, threads: int, seed: int = 0, warmup: int = 5):
        shape = {**{k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias",
                                                 "batch_size", "learning_rate", "min_lr", "warmup_iters", "max_iters",
                                                 "beta1", "beta2", "weight_decay", "grad_clip")},
                 "vocab_size": vocab_size}
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_torch_worker, args=(child, shape, train_u16, threads, seed, warmup), daemon=True)
        self.proc.start()
        kind, self.info = self.conn.recv()
        if kind == "error":
            self.proc.join()
            raise RuntimeError(self.info)

    def block(self, n: int) -> float:
        """Seconds per iteration over n iterations."""
        self.conn.send(("run", n))
        dt, _ = self.conn.recv()
        return dt / n

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)


# ---- JAX ---------------------------------------------------------------------------------------------
class JaxRunner:
    def __init__(self, cfg, vocab_size: int, train_u16: np.ndarray, n_runs: int, chunk: int, vmap_width=None):
        from lrpilot.trainers.charlm import RunGroup

        self.group = RunGroup(cfg, vocab_size, "adamw", list(range(n_runs)), vmap_width=vmap_width)
        self.train = self.group.put_data(train_u16)
        self.lrs = np.full((n_runs, chunk), cfg.learning_rate, np.float32)
        self.chunk, self.n, self.it = chunk, n_runs, 0
        t0 = time.perf_counter()
        self._run()  # compile + first run
        self.compile_s = time.perf_counter() - t0

    def _run(self) -> float:
        t0 = time.perf_counter()
        losses = self.group.train_chunk(self.lrs, self.it, self.train).losses  # returns host arrays: synchronised
        self.it += self.chunk
        if not np.isfinite(losses).all():
            raise RuntimeError(f"JAX N={self.n}: non-finite loss")
        return time.perf_counter() - t0

    def block(self) -> float:
        """Seconds per batched iteration over one chunk."""
        return self._run() / self.chunk


# ---- main ------------------------------------------------------------------------------------------------


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        for kv in item.split(","):
            k, sep, v = kv.partition("=")
            if not sep:
                raise SystemExit(f"--set expects key=value, got {kv!r}")
            out[k.strip()] = v.strip()
    return out


def _typed(cfg, overrides: dict) -> dict:
    import dataclasses

    types = {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    out = {}
    for k, v in overrides.items():
        if k not in types:
            raise SystemExit(f"--set: unknown TrainConfig field {k!r}; valid: {', '.join(types)}")
        t = types[k]
        out[k] = (v.lower() in ("1", "true", "yes")) if t is bool else t(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("small", "full"), default="small",
                    help="small: nanoGPT's CPU recipe (4L/4H/128, block 64, batch 12); full: the protocol (JAX only)")
    ap.add_argument("--task", default="shakespeare_char", help="dataset (its train split feeds both frameworks)")
    ap.add_argument("--data-dir", default=None, help="sets LRPILOT_DATA_DIR (where <task>/input.txt is)")
    ap.add_argument("--runs", default=None, help="comma list of batched run counts N (default 1,2,4,8; full: 1)")
    ap.add_argument("--chunk", type=int, default=None, help="iterations per timed block (default 50; full: 10)")
    ap.add_argument("--reps", type=int, default=None, help="timed blocks per framework per round (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (torch, JAX N=..., torch, ...)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default os.cpu_count())")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="device peak in TFLOP/s for MFU (e.g. H100 SXM: 989 bf16 dense, 495 tf32, 67 fp32); "
                         "default: MFU not reported")
    ap.add_argument("--vmap-width", type=int, default=None,
                    help="runs per vmapped sub-batch (default: RunGroup's choice for the device and model size)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,...]",
                    help="override TrainConfig fields of the scale (e.g. --set batch_size=4,block_size=64)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: N=1,2, chunk 5, 2 reps, 1 round (full scale: N=1, chunk 2, batch 4, block 64)")
    a = ap.parse_args()
    if a.data_dir:
        os.environ["LRPILOT_DATA_DIR"] = a.data_dir

    full = a.scale == "full"
    runs = a.runs or ("1" if full else "1,2,4,8")
    chunk = a.chunk or (10 if full else 50)
    reps = a.reps or 3
    rounds = a.rounds
    over = _overrides(a.set)
    if a.quick:
        runs = a.runs or ("1" if full else "1,2")
        chunk, reps, rounds = a.chunk or (2 if full else 5), a.reps or 2, 1
        if full:
            over = {"batch_size": "4", "block_size": "64", **over}
    run_counts = [int(x) for x in runs.split(",")]

    from lrpilot import data
    from lrpilot.trainers.config import scale_config

    cfg = scale_config(a.task, a.scale)
    cfg = cfg.replace(**_typed(cfg, over))
    ds = data.load(a.task)
    gcfg = cfg.model(ds.vocab_size)
    use_torch = not (a.no_torch or full)

    print_header(f"bench_step: training-step speed, scale {a.scale}{' (quick)' if a.quick else ''}")
    print(f"# model {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, block {cfg.block_size}, batch {cfg.batch_size}, "
          f"dropout {cfg.dropout}, vocab {ds.vocab_size} ({a.task}), {gcfg.num_params() / 1e6:.3f}M params "
          f"(no positions), AdamW clip {cfg.grad_clip} | blocks of {chunk} iterations, {reps} per framework per round, "
          f"{rounds} round(s)", flush=True)

    torch_r = None
    if use_torch:
        try:
            torch_r = TorchRunner(cfg, ds.vocab_size, ds.train, a.threads, warmup=2 if a.quick else 5)
            print(f"# torch {torch_r.info['torch']}, {torch_r.info['threads']} threads, "
                  f"{torch_r.info['params'] / 1e6:.3f}M params (no positions), separate process", flush=True)
        except Exception as e:  # torch missing or broken: JAX figures only
            print(f"# torch reference skipped: {e}", flush=True)
    elif full and not a.no_torch:
        print("# torch reference: not run at --scale full (JAX only)")

    jax_r = {}
    for n in run_counts:
        jax_r[n] = JaxRunner(cfg, ds.vocab_size, ds.train, n, chunk, a.vmap_width)
        w = jax_r[n].group.width
        print(f"# jax N={n}: vmapped {w} at a time ({n // w} group(s) in one jitted step), "
              f"compile + first chunk {jax_r[n].compile_s:.1f} s", flush=True)
    from lrpilot.trainers import xla
    print(f"# XLA CPU compiler options of the training step: {xla.cpu_options() or 'none'}", flush=True)

    jax_t = {n: [] for n in run_counts}
    jax_round = {n: [] for n in run_counts}
    torch_t, torch_round = [], []
    for rnd in range(rounds):
        order = (["torch"] if torch_r else []) + run_counts
        if rnd % 2:
            order = order[::-1]
        for who in order:
            if who == "torch":
                ts = [torch_r.block(chunk) for _ in range(reps)]
                torch_t += ts
                torch_round.append(med(ts))
            else:
                ts = [jax_r[who].block() for _ in range(reps)]
                jax_t[who] += ts
                jax_round[who].append(med(ts))
    if torch_r:
        torch_r.close()

    tokens_per_run_step = cfg.batch_size * cfg.block_size
    fpt = gcfg.flops_per_token()
    rounds_s = lambda xs: "/".join(f"{1e3 * x:.1f}" for x in xs)
    base = None
    for n in run_counts:
        step = med(jax_t[n])
        per_run = step / n
        tok_s = n * tokens_per_run_step / step
        line = (f"jax   N={n:<3d}: {1e3 * step:8.2f} ms per batched step | {1e3 * per_run:8.2f} ms per run-step | "
                f"{n / step:8.1f} run-iters/s | {tok_s:10.0f} tokens/s")
        if a.peak_tflops:
            line += f" | MFU {100 * fpt * tok_s / (a.peak_tflops * 1e12):5.2f}% of {a.peak_tflops:g} TFLOP/s"
        line += f" | round medians {rounds_s(jax_round[n])} ms"
        print(line)
        base = base or (n, per_run)
    if torch_t:
        tt = med(torch_t)
        print(f"torch nanoGPT : {1e3 * tt:8.2f} ms per step         | {1e3 * tt:8.2f} ms per run-step | "
              f"{1 / tt:8.1f} run-iters/s | {tokens_per_run_step / tt:10.0f} tokens/s | round medians {rounds_s(torch_round)} ms")
        if 1 in jax_t:
            r = med(jax_t[1]) / tt
            print(f"jax N=1 / torch per-iteration time: {r:.3f} ({'no slower' if r <= 1.0 else 'slower'} than PyTorch)")
    if base and base[0] == 1:
        for n in run_counts:
            if n > 1:
                gain = base[1] / (med(jax_t[n]) / n)
                print(f"jax N={n} per-run throughput / N=1: x{gain:.3f} ({'higher' if gain > 1 else 'not higher'})")
    if a.peak_tflops is None and jax_t:
        print(f"# flops_per_token {fpt / 1e6:.2f} MFLOP (6N + 12LdT); pass --peak-tflops for MFU")


if __name__ == "__main__":
    main()
