"""Training configurations: the protocol's scales (full, small, tiny) and per-field overrides."""

from __future__ import annotations

import dataclasses

from lrpilot.trainers.gpt import GPTConfig

HUTTER = ("enwik8", "text8")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One char-LM training run. LRs are absolute; iterations count optimizer updates."""

    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads
    n_embd: int = 128  # model width
    block_size: int = 64  # context length (characters)
    dropout: float = 0.0  # dropout in training
    bias: bool = False  # biases in linear layers and LayerNorms
    batch_size: int = 12  # sequences per update
    max_iters: int = 2000  # optimizer updates
    learning_rate: float = 1e-3  # base (peak) LR
    min_lr: float = 1e-4  # floor LR of the decaying schedules
    warmup_iters: int = 100  # linear warmup updates
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    weight_decay: float = 0.1  # AdamW weight decay on 2-D weights
    grad_clip: float = 1.0  # global gradient-norm clip
    eval_interval: int = 250  # updates between protocol evaluations
    eval_iters: int = 20  # batches per evaluation
    eval_train: bool = True  # also estimate the train loss at evaluations (collection skips it)
    sample_tokens: int = 500  # tokens generated to measure inference speed (0: skip)

    def __post_init__(self):
        pos = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_iters", "eval_interval", "eval_iters")
        for name in pos:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"TrainConfig.min_lr must be in [0, learning_rate], got {self.min_lr}")
        if not 0 <= self.warmup_iters <= self.max_iters:
            raise ValueError(f"TrainConfig.warmup_iters must be in [0, max_iters], got {self.warmup_iters}")
        self.model(vocab_size=1)  # validates the shape fields

    def model(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias)

    def replace(self, **overrides) -> "TrainConfig":
        fields = {f.name: f.type for f in dataclasses.fields(self)}
        unknown = set(overrides) - set(fields)
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; valid: {', '.join(fields)}")
        return dataclasses.replace(self, **overrides)


SMALL = TrainConfig()  # nanoGPT's CPU recipe
TINY = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, max_iters=200, learning_rate=2e-3,
                   min_lr=2e-4, warmup_iters=10, eval_interval=50, eval_iters=4, sample_tokens=50)
FULL_SHAKESPEARE = TrainConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
                               max_iters=5000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                               eval_interval=250, eval_iters=200)
FULL_HUTTER = FULL_SHAKESPEARE.replace(batch_size=32, max_iters=100_000, learning_rate=5e-4, min_lr=5e-5,
                                       warmup_iters=200, eval_interval=1000)
SCALES = ("full", "small", "tiny")


def scale_config(task: str, scale: str, **overrides) -> TrainConfig:
    """The protocol's configuration for `task` at `scale`, with fields overridden."""
    if scale == "full":
        base = FULL_HUTTER if task in HUTTER else FULL_SHAKESPEARE
    elif scale == "small":
        base = SMALL
    elif scale == "tiny":
        base = TINY
    else:
        raise ValueError(f"unknown scale '{scale}'; expected one of {', '.join(SCALES)}")
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})
