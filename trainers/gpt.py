"""nanoGPT's GPT in Flax: pre-LayerNorm, exact GELU, learned positions, tied head.

Activations are flattened to (B*T, D) around every dense layer and reshaped to
(B, T, H, hd) only inside attention: on XLA's CPU backend this halves the step time
(with 3-D activations XLA materialises slow transposed copies of the GELU derivative for
the weight gradients; benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT. `bias=False` everywhere as in the protocol."""

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    def num_params(self, include_positions: bool = False) -> int:
        """Parameter count; like nanoGPT, positions are excluded by default."""
        d, l = self.n_embd, self.n_layer
        # biases: c_attn 3d, c_proj d, c_fc 4d, mlp_c_proj d, ln_1 d, ln_2 d
        per_block = 12 * d * d + 2 * d + (11 * d if self.bias else 0)
        n = self.vocab_size * d + l * per_block + d + (d if self.bias else 0)
        return n + (self.block_size * d if include_positions else 0)

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B convention."""
        n = self.num_params()
        return 6 * n + 12 * self.n_layer * self.n_embd * self.block_size


_normal = nn.initializers.normal(stddev=0.02)


def _dense(features: int, cfg: GPTConfig, name: str, std: float = 0.02) -> nn.Dense:
    return nn.Dense(features, use_bias=cfg.bias, kernel_init=nn.initializers.normal(stddev=std), name=name)


class Block(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x_NxD: jax.Array, batch: int, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        n, d = x_NxD.shape
        t, h = n // batch, cfg.n_head
        hd = d // h
        proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=deterministic)

        # attention
        y = nn.LayerNorm(use_bias=cfg.bias, name="ln_1")(x_NxD)
        qkv = _dense(3 * d, cfg, "c_attn")(y)
        q, k, v = jnp.split(qkv.reshape(batch, t, 3 * h, hd), 3, axis=2)
        att_BxHxTxT = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (1.0 / math.sqrt(hd))
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        att_BxHxTxT = jnp.where(causal, att_BxHxTxT, jnp.finfo(att_BxHxTxT.dtype).min)
        att_BxHxTxT = drop(jax.nn.softmax(att_BxHxTxT, axis=-1))
        y = jnp.einsum("bhqk,bkhd->bqhd", att_BxHxTxT, v).reshape(n, d)
        x_NxD = x_NxD + drop(_dense(d, cfg, "c_proj", proj_std)(y))

        # MLP
        y = nn.LayerNorm(use_bias=cfg.bias, name="ln_2")(x_NxD)
        y = nn.gelu(_dense(4 * d, cfg, "c_fc")(y), approximate=False)
        return x_NxD + drop(_dense(d, cfg, "mlp_c_proj", proj_std)(y))


class GPT(nn.Module):
    """Maps tokens (B, T) int32 to logits (B, T, vocab) float32."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, idx_BxT: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        b, t = idx_BxT.shape
        wte = self.param("wte", _normal, (cfg.vocab_size, cfg.n_embd))
        wpe = self.param("wpe", _normal, (cfg.block_size, cfg.n_embd))
        x_NxD = (wte[idx_BxT] + wpe[:t][None]).reshape(b * t, cfg.n_embd)
        x_NxD = nn.Dropout(cfg.dropout)(x_NxD, deterministic=deterministic)
        for i in range(cfg.n_layer):
            x_NxD = Block(cfg, name=f"h_{i}")(x_NxD, b, deterministic)
        x_NxD = nn.LayerNorm(use_bias=cfg.bias, name="ln_f")(x_NxD)
        return (x_NxD @ wte.T).reshape(b, t, cfg.vocab_size)


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy in nats."""
    logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets_BxT[..., None], axis=-1).mean()


def decay_mask(params):
    """True for parameters that get weight decay: exactly the 2-D ones (nanoGPT)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)
