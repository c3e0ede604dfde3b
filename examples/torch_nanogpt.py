"""A nanoGPT-style PyTorch loop whose LR comes from any lrpilot controller.

A tiny character-level GPT (plain torch, causal self-attention) on the offline `python_docs`
corpus, trained with AdamW (decay on 2-D weights only, as nanoGPT). Where nanoGPT does
`lr = get_lr(it); for g in optimizer.param_groups: g['lr'] = lr`, this loop calls
`lrpilot.driver.TorchLR.step(it, ...)`, which asks the controller.

    python examples/torch_nanogpt.py                                  # cosine schedule, 200 updates
    python examples/torch_nanogpt.py --controller wsd:decay_frac=0.2 --iters 400
    python examples/torch_nanogpt.py --controller plateau             # a reactive rule (needs val)
    python examples/torch_nanogpt.py --controller policy:pretrained   # the shipped learned policy
    python examples/torch_nanogpt.py --controller policy:PATH         # a policy checkpoint directory

Needs PyTorch (`pip install 'lrpilot[torch]'`). Only a learned policy (`policy:...`) needs JAX;
schedules and reactive rules are pure Python.
Set LRPILOT_DATA_DIR to a directory of prepared datasets if you have one. Runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ModuleNotFoundError:
    sys.exit("this example needs PyTorch: pip install 'lrpilot[torch]' (on a CPU machine, pip install torch "
             "--index-url https://download.pytorch.org/whl/cpu keeps it small)")

try:
    import lrpilot  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrpilot.controllers import make
from lrpilot.data import load
from lrpilot.driver import LoopDriver, TorchLR


class Block(nn.Module):
    """Pre-LN transformer block: causal multi-head self-attention and a 4x GELU MLP."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as nanoGPT
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """idx, targets: (B, T) int64 -> mean next-character cross-entropy (nats)."""
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def get_batch(data: torch.Tensor, batch: int, block: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of `data` (N,) int64: x, y (batch, block), y shifted by one character."""
    ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
    x = torch.stack([data[i : i + block] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block] for i in ix.tolist()])
    return x, y


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor, batch: int, block: int, n: int, gen: torch.Generator) -> float:
    model.eval()
    losses = [model(*get_batch(data, batch, block, gen)).item() for _ in range(n)]
    model.train()
    return float(np.mean(losses))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--controller", default="cosine", help="controller spec, e.g. cosine, wsd:decay_frac=0.2, "
                    "plateau, policy:pretrained or policy:PATH (default cosine)")
    ap.add_argument("--iters", type=int, default=200, help="optimizer updates (default 200)")
    ap.add_argument("--eval-every", type=int, default=50, help="evaluation interval in updates (default 50)")
    ap.add_argument("--lr", type=float, default=3e-3, help="base (peak) LR (default 3e-3)")
    ap.add_argument("--min-lr", type=float, default=None, help="floor LR (default lr / 10)")
    ap.add_argument("--warmup", type=int, default=None, help="warmup updates (default iters // 20)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=32, help="context length in characters")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--eval-batches", type=int, default=4, help="val batches per evaluation")
    ap.add_argument("--dataset", default="python_docs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a model this small "
                    "only loses to thread synchronisation; 0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    data = load(args.dataset)
    train = torch.from_numpy(data.train.astype(np.int64))
    val = torch.from_numpy(data.val.astype(np.int64))
    warmup = args.iters // 20 if args.warmup is None else args.warmup
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(args.seed)
        model = GPT(data.vocab_size, args.block_size, args.n_layer, args.n_head, args.n_embd)
    gen_train = torch.Generator().manual_seed(args.seed)
    gen_eval = torch.Generator().manual_seed(args.seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.99))
    n_params = sum(p.numel() for p in params)
    # the run's context (parameter count, tokens per update): policies of spec v2+ observe it
    driver = LoopDriver(make(args.controller), base_lr=args.lr, max_iters=args.iters, min_lr=args.min_lr,
                        warmup_iters=warmup, eval_interval=args.eval_every, seed=args.seed,
                        n_params=n_params, tokens_per_update=args.batch_size * args.block_size)
    lr_ctl = TorchLR(driver, optimizer)
    print(f"{data.name}: vocab {data.vocab_size}, {len(data.train):,} train chars; GPT {n_params / 1e3:.0f}k params; "
          f"controller {args.controller}, {args.iters} updates, observes at {len(driver.observe_points)} points")
    t0 = time.perf_counter()
    prev_loss = None  # loss of the previous update
    since_print: list[float] = []  # minibatch losses since the last printed line
    for it in range(args.iters + 1):  # the extra step delivers the final observation
        val_loss = None
        if driver.wants_eval(it) or it % args.eval_every == 0 or it == args.iters:
            val_loss = estimate_loss(model, val, args.batch_size, args.block_size, args.eval_batches, gen_eval)
        lr = lr_ctl.step(it, train_loss=prev_loss, val_loss=val_loss)  # sets every param_group['lr']
        if val_loss is not None:
            tl = f"{np.mean(since_print):.4f}" if since_print else "-"
            print(f"iter {it:5d}  lr {lr:.3e}  train {tl:>6}  val {val_loss:.4f}")
            since_print = []
        if it == args.iters or driver.finished:
            break
        x, y = get_batch(train, args.batch_size, args.block_size, gen_train)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        prev_loss = loss.item()
        since_print.append(prev_loss)
    if driver.finished and it < args.iters:
        print(f"the controller stopped the run at iteration {it}")
    if driver.n_bad_lr:
        print(f"warning: the controller returned {driver.n_bad_lr} invalid LRs (previous LR kept)")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
