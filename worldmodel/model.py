"""The world model: a causal transformer over an episode's symbol sequence.

`Trunk` is shared with the policy (same architecture, same parameter names under "trunk",
so a policy starts from a world model's trunk by subtree). It runs either over a whole
sequence (training, teacher forcing) or incrementally with an explicit key/value cache:
`trunk(tokens_BxS, pos0, cache)` writes the S new tokens' keys and values at positions
pos0..pos0+S-1 and attends over everything before them. Attention always spans the whole
episode: no window hides the start of the run.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrpilot.spec import EnvSpec
from lrpilot.worldmodel.serialization import CODINGS, Serializer


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Architecture, serialization and training of a world model (saved in its checkpoint)."""

    n_layer: int = 3  # transformer blocks
    d_model: int = 64  # width of the residual stream
    n_head: int = 4  # attention heads
    dropout: float = 0.2  # dropout in training
    base: int = 128  # B: digit base
    digits: int = 2  # D: digits per value
    coding: str = "level"  # stochastic fields as levels in their boxes, or "delta": per-interval log changes (serialization.py)
    value_embed: bool = False  # add each digit's value (digit / base) times a learned vector of its role (field, significance)
    action_embed: bool = False  # add each action's log2 LR factor times a learned vector: actions as ordered magnitudes
    head: str = "categorical"  # "categorical": a free logit per digit; "mixture": a discretized logistic mixture (digits=1)
    mixture: int = 3  # logistic components of the mixture head
    loss_decay: float = 0.8  # weight of digit s is loss_decay**s
    obs_noise: float = 0.002  # training augmentation: std of the jitter added to stochastic observations
    history_mask: float = 0.0  # training augmentation: share of past observations whose losses the model reads as PAD
    own_draws: float = 0.0  # scheduled sampling: share of past observations the model reads as its own draws (train.py)
    aux_weight: float = 0.0  # weight of the auxiliary loss: a regression head predicts each interval's change in val (train.py)
    aux_scale: str = "global"  # the change's unit in that loss: its std over all intervals, or per interval of the run ("interval")
    action_response: str = "model"  # model: the transformer's; residual: + a linear term fit on its residuals; noop: its no-op's + that term
    action_level: bool = False  # that linear term also corrects the transformer's response to the LR level (correction.py)
    action_level_terms: str = "both"  # ... through the log LR relative to the configured one and the absolute ("both"), the
    # "absolute" only, or the absolute above the kink of action_hinge ("kink"; "kinks": and below a second kink
    # KINK_BELOW decades under it, the cost of a vanishing LR; "kinks_v": and a V about KINK_V decades under the first,
    # the collected runs' default LR: what being off it costs, fit on rollouts by rollout.py)
    action_convex: bool = False  # that term's action part gains a x (log10 absolute LR)^2 (correction.py)
    action_hinge: float | None = None  # ... and a x max(0, log10 absolute LR - action_hinge - action_hinge_params x log10 N)
    action_hinge_params: float = 0.0  # the kink's shift per decade of the parameter count N (correction.py)
    action_hinge_offsets: tuple[float, ...] = ()  # ... and a x max(0, log10 absolute LR - that kink - o) for each o: more
    # kinks, o decades from the first (e.g. (-1, 1): x1 and x100 of the default for a kink at x10; correction.py)
    action_divergence: bool = False  # an action can diverge the run: its excess hazard over holding (hazard.py; needs noop and a hinge)
    action_fit: str = "all"  # that term's fit: "all" decisions pooled, "exogenous" (random-walk and fork runs, run fixed effects)
    # or "paired" (runs of groups sharing a seed, group x decision fixed effects; correction.py)
    # training
    learning_rate: float = 1e-3  # peak AdamW learning rate (warmup, then cosine to a tenth)
    weight_decay: float = 0.1  # AdamW weight decay on 2-D weights
    batch_size: int = 32  # episodes per training step
    steps: int = 3000  # training steps (at most)
    warmup: int = 100  # linear LR warmup steps
    heldout_frac: float = 0.15  # share of run groups held out for evaluation (never trained on, never selected on)
    val_frac: float = 0.15  # share of run groups for checkpoint selection (select=fidelity)
    select: str = "fidelity"  # checkpoint selection: fidelity (within-group Spearman on the validation groups) or nll
    select_samples: int = 8  # simulated futures per validation run for the fidelity criterion
    eval_every: int = 100  # steps between evaluations (and checkpoints)
    patience: int = 8  # stop after this many evaluations without a better selection score (0: never)
    select_after: int = 500  # no state before this step is selected (an untrained model's ranking is luck); patience counts from it
    seed: int = 0  # initialisation, batches and the held-out split
    ensemble: int = 1  # K members (seeds seed..seed+K-1, each on a bootstrap of the training groups) in one checkpoint
    bootstrap: bool = True  # ensemble members train on bootstraps of the training groups (false: all of them, seeds only)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"WorldModelConfig: d_model={self.d_model} not divisible by n_head={self.n_head}")
        if self.coding not in CODINGS:
            raise ValueError(f"WorldModelConfig.coding must be one of {', '.join(CODINGS)}, got {self.coding!r}")
        if self.head not in HEADS:
            raise ValueError(f"WorldModelConfig.head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.head == "mixture" and (self.digits != 1 or self.mixture < 1):
            raise ValueError(f"WorldModelConfig: the mixture head needs digits=1 and mixture >= 1, got digits={self.digits}, "
                             f"mixture={self.mixture}")
        if not 0 <= self.history_mask < 1:
            raise ValueError(f"WorldModelConfig.history_mask must be in [0, 1), got {self.history_mask}")
        if not 0 <= self.own_draws < 1:
            raise ValueError(f"WorldModelConfig.own_draws must be in [0, 1), got {self.own_draws}")
        if self.action_response not in RESPONSES:
            raise ValueError(f"WorldModelConfig.action_response must be one of {', '.join(RESPONSES)}, got {self.action_response!r}")
        if self.action_fit not in ACTION_FITS:
            raise ValueError(f"WorldModelConfig.action_fit must be one of {', '.join(ACTION_FITS)}, got {self.action_fit!r}")
        if self.action_level_terms not in LEVEL_TERMS or (self.action_level_terms != "both" and not self.action_level):
            raise ValueError(f"WorldModelConfig.action_level_terms must be one of {', '.join(LEVEL_TERMS)}, and both without "
                             f"action_level; got {self.action_level_terms!r} (action_level={self.action_level!r})")
        if self.action_level_terms in KINKED and self.action_hinge is None:
            raise ValueError(f"WorldModelConfig.action_level_terms {self.action_level_terms} reads the LR against the action "
                             "term's kink: it needs action_hinge")
        if self.action_hinge is not None and not (isinstance(self.action_hinge, (int, float)) and math.isfinite(self.action_hinge)):
            raise ValueError(f"WorldModelConfig.action_hinge must be None or a finite log10 LR, got {self.action_hinge!r}")
        if not (isinstance(self.action_hinge_params, (int, float)) and math.isfinite(self.action_hinge_params)) or (
                self.action_hinge_params and self.action_hinge is None):
            raise ValueError(f"WorldModelConfig.action_hinge_params must be a finite number of decades per decade of the "
                             f"parameter count, and 0 without action_hinge; got {self.action_hinge_params!r} "
                             f"(action_hinge={self.action_hinge!r})")
        offsets = self.action_hinge_offsets
        object.__setattr__(self, "action_hinge_offsets", tuple(offsets) if isinstance(offsets, (list, tuple)) else offsets)
        if not isinstance(self.action_hinge_offsets, tuple) or (self.action_hinge_offsets and self.action_hinge is None) or not all(
                isinstance(o, (int, float)) and math.isfinite(o) and o != 0 for o in self.action_hinge_offsets) or len(
                set(self.action_hinge_offsets)) < len(self.action_hinge_offsets):
            raise ValueError(f"WorldModelConfig.action_hinge_offsets must be distinct finite nonzero decades from the kink of "
                             f"action_hinge, which they need; got {offsets!r} (action_hinge={self.action_hinge!r})")
        if self.action_divergence and (self.action_response != "noop" or self.action_hinge is None):
            raise ValueError(f"WorldModelConfig.action_divergence adds an action's hazard to the no-op's continuation, read against "
                             f"the action term's kink: it needs action_response noop and action_hinge, got "
                             f"{self.action_response!r} and {self.action_hinge!r}")
        if self.aux_scale not in ("global", "interval"):
            raise ValueError(f"WorldModelConfig.aux_scale must be global or interval, got {self.aux_scale!r}")
        if not self.aux_weight >= 0:
            raise ValueError(f"WorldModelConfig.aux_weight must be >= 0, got {self.aux_weight}")
        if not 0 < self.loss_decay <= 1:
            raise ValueError(f"WorldModelConfig.loss_decay must be in (0, 1], got {self.loss_decay}")
        if self.select_after < 0:
            raise ValueError(f"WorldModelConfig.select_after must be >= 0, got {self.select_after}")
        if not 0 < self.heldout_frac < 1:
            raise ValueError(f"WorldModelConfig.heldout_frac must be in (0, 1), got {self.heldout_frac}")
        if self.select not in ("fidelity", "nll"):
            raise ValueError(f"WorldModelConfig.select must be fidelity or nll, got {self.select!r}")
        if not 0 <= self.val_frac < 1 - self.heldout_frac or (self.select == "fidelity" and self.val_frac == 0):
            raise ValueError(f"WorldModelConfig.val_frac must be in [0, 1 - heldout_frac) and > 0 with select=fidelity, "
                             f"got {self.val_frac}")

    def serializer(self, spec: EnvSpec) -> Serializer:
        return Serializer(spec, self.base, self.digits, self.coding)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"WorldModelConfig: unknown field(s) {sorted(unknown)}")
        d = {"coding": "level", **d}  # saved before the delta coding existed
        return cls(**{**LEGACY, **d}) if "select" not in d else cls(**d)


HEADS = ("categorical", "mixture")
RESPONSES = ("model", "residual", "noop")
ACTION_FITS = ("all", "exogenous", "paired")
LEVEL_TERMS = ("both", "absolute", "kink", "kinks", "kinks_v")  # the level terms psi: of the log LR relative to the configured one and
# the absolute, of the absolute only, of how far the absolute one is above the action term's kink (needs action_hinge), or
# that and how far it is below a second kink KINK_BELOW decades under the first, or those and how far above and below a
# third, KINK_V decades under the first, it is
KINKED = ("kink", "kinks", "kinks_v")  # the level terms that read the action term's kink (need action_hinge)
KINK_BELOW = 2.0  # decades between the level terms' two kinks ("kinks"): x10 -> x0.1 of the collected runs' default LR
KINK_V = 1.0  # decades between the first kink and the V of "kinks_v": x10 -> x1 of the collected runs' default LR
LEGACY = {"val_frac": 0.0, "select": "nll", "patience": 5}
"""How a checkpoint saved before checkpoint selection by fidelity was trained (its missing fields)."""


def init_cache(cfg: WorldModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    """Empty key/value cache: {"k", "v"}: tuples of n_layer arrays (B, n_head, max_len, head_dim).

    One array per layer, so that a write updates that layer's buffer in place (a stacked array
    would be rebuilt at every call). Heads before positions: a token's write and the attention
    read are then contiguous (on CPU this layout is ~10x faster than (B, max_len, n_head, head_dim))."""
    shape = (batch, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layer))
    return {"k": zeros, "v": tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layer))}


class Block(nn.Module):
    cfg: WorldModelConfig

    @nn.compact
    def __call__(self, x_BxSxD, pos0, kv, deterministic):
        cfg = self.cfg
        b, s, d = x_BxSxD.shape
        h, hd = cfg.n_head, d // cfg.n_head
        drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=deterministic)
        y = nn.LayerNorm(name="ln_1")(x_BxSxD).reshape(b * s, d)
        qkv = nn.Dense(3 * d, name="c_attn")(y).reshape(b, s, 3 * h, hd).transpose(0, 2, 1, 3)
        q, k, v = jnp.split(qkv, 3, axis=1)  # (B, H, S, hd)
        q_pos = pos0 + jnp.arange(s)
        if kv is None:  # whole sequence
            keys, vals, k_pos = k, v, q_pos
            new_kv = None
        else:  # write into the cache, attend over it
            k_cache = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, 0, pos0, 0))
            v_cache = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, 0, pos0, 0))
            keys, vals, k_pos = k_cache, v_cache, jnp.arange(k_cache.shape[2])
            new_kv = (k_cache, v_cache)
        att = jnp.einsum("bhqd,bhkd->bhqk", q, keys) / math.sqrt(hd)
        att = jnp.where(k_pos[None, :] <= q_pos[:, None], att, jnp.finfo(att.dtype).min)
        att = drop(jax.nn.softmax(att, axis=-1))
        y = jnp.einsum("bhqk,bhkd->bqhd", att, vals).reshape(b * s, d)
        x_BxSxD = x_BxSxD + drop(nn.Dense(d, name="c_proj")(y)).reshape(b, s, d)
        y = nn.LayerNorm(name="ln_2")(x_BxSxD).reshape(b * s, d)
        y = nn.Dense(d, name="mlp_c_proj")(nn.gelu(nn.Dense(4 * d, name="c_fc")(y)))
        return x_BxSxD + drop(y).reshape(b, s, d), new_kv


class Trunk(nn.Module):
    """Embeddings, blocks and final norm: tokens (B, S) -> hidden (B, S, d_model).

    A digit symbol's embedding is a lookup (symbols are unordered to it); with
    `cfg.value_embed` each digit also adds (digit / base) x a learned vector of its role (the
    field and significance of its position, `roles`, from `Serializer.value_roles`), so that
    nearby values start out close: an ordinal prior that the lookup alone learns only from data."""

    cfg: WorldModelConfig
    vocab_size: int
    max_len: int
    roles: tuple[int, ...] = ()  # (max_len,) role of each position (0: not a digit); needed with value_embed
    action_log2: tuple[float, ...] = ()  # (A,) log2 of each action's LR factor; needed with action_embed

    @nn.compact
    def __call__(self, tokens_BxS, pos0=0, cache=None, deterministic=True):
        cfg = self.cfg
        s = tokens_BxS.shape[1]
        emb = nn.Embed(self.vocab_size, cfg.d_model, name="wte", embedding_init=nn.initializers.normal(0.02))
        wpe = self.param("wpe", nn.initializers.normal(0.02), (self.max_len, cfg.d_model))
        x = emb(tokens_BxS) + jax.lax.dynamic_slice_in_dim(wpe, pos0, s)[None]
        if cfg.value_embed:
            if len(self.roles) != self.max_len:
                raise ValueError(f"Trunk: value_embed needs a role per position ({self.max_len}), got {len(self.roles)}")
            roles = jnp.asarray(self.roles, jnp.int32)
            role_S = jax.lax.dynamic_slice_in_dim(roles, pos0, s)
            role_emb = self.param("role_value", nn.initializers.normal(0.1), (int(max(self.roles)) + 1, cfg.d_model))
            value_BxS = jnp.where((tokens_BxS < cfg.base) & (role_S > 0)[None], tokens_BxS / cfg.base, 0.0)
            x = x + value_BxS[..., None] * jnp.take(role_emb, role_S, axis=0)[None]  # (numpy params from a checkpoint too)
        if cfg.action_embed:
            if not self.action_log2:
                raise ValueError("Trunk: action_embed needs each action's log2 LR factor (action_log2)")
            a = tokens_BxS - cfg.base
            is_act = (a >= 0) & (a < len(self.action_log2))
            mag_BxS = jnp.where(is_act, jnp.asarray(self.action_log2, jnp.float32)[jnp.clip(a, 0, len(self.action_log2) - 1)], 0.0)
            x = x + mag_BxS[..., None] * self.param("action_value", nn.initializers.normal(0.1), (cfg.d_model,))[None, None]
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        new_k, new_v = [], []
        for i in range(cfg.n_layer):
            kv = None if cache is None else (cache["k"][i], cache["v"][i])
            x, kv = Block(cfg, name=f"h_{i}")(x, pos0, kv, deterministic)
            if kv is not None:
                new_k.append(kv[0])
                new_v.append(kv[1])
        x = nn.LayerNorm(name="ln_f")(x)
        new_cache = None if cache is None else {"k": tuple(new_k), "v": tuple(new_v)}
        return x, new_cache


class WorldModel(nn.Module):
    """Trunk plus a digit head: logits (B, S, base) for the symbol after each position. With
    `with_change` (training with cfg.aux_weight > 0) also a regression head's output (B, S): at the
    position before an observation's first val digit, the predicted change of val over the interval
    (in units of its training std). Simulation never reads it; it shapes the trunk so that the
    action's effect is carried by the hidden state from which the val digits are sampled."""

    cfg: WorldModelConfig
    vocab_size: int
    max_len: int
    roles: tuple[int, ...] = ()  # see Trunk
    action_log2: tuple[float, ...] = ()  # see Trunk

    @nn.compact
    def __call__(self, tokens_BxS, pos0=0, cache=None, deterministic=True, with_change=False):
        h, cache = Trunk(self.cfg, self.vocab_size, self.max_len, self.roles, self.action_log2, name="trunk")(
            tokens_BxS, pos0, cache, deterministic)
        if self.cfg.head == "mixture":
            logits = mixture_logits(nn.Dense(3 * self.cfg.mixture + 1, name="mixture_head")(h), self.cfg.base)
        else:
            logits = nn.Dense(self.cfg.base, name="digit_head")(h)
        if with_change:
            return logits, cache, nn.Dense(1, name="change_head")(h)[..., 0]
        return logits, cache


def member(model: WorldModel, params: dict, m: int) -> tuple[WorldModel, dict]:
    """Member m of an ensemble (params stacked on a leading member axis) as a single model."""
    return model.clone(cfg=dataclasses.replace(model.cfg, ensemble=1)), jax.tree.map(lambda x: x[m], params)


def mixture_logits(params_xP, n_bins: int):
    """(..., 3M + 1) head outputs -> (..., n_bins) log-probabilities of the bins of u in [0, 1]: the
    top bin (the coding's divergence) with probability sigmoid(d), the other n_bins - 1 bins a
    mixture of M logistics over u (weights, means, log-scales) discretized by CDF differences
    (the bins at either edge take the tails). A mean shift is one parameter here, where a free
    logit per bin must learn it bin by bin."""
    m = (params_xP.shape[-1] - 1) // 3
    w, mu, log_s = params_xP[..., :m], params_xP[..., m : 2 * m], params_xP[..., 2 * m : 3 * m]
    d = params_xP[..., -1] - 5.0  # divergence starts rare (sigmoid(-5) = 0.007)
    mu = jax.nn.sigmoid(mu)  # component means inside the box
    inv_s = jnp.exp(-jnp.clip(log_s - 3.0, -7.0, 7.0))  # scale e^(log_s - 3): starts near 0.05 of the box
    n = n_bins - 1
    edges = jnp.arange(1, n, dtype=jnp.float32) / n_bins  # inner edges of bins 0..n-1 (bin n-1 ends at the top bin)
    cdf = jax.nn.sigmoid((edges[..., :, None] - mu[..., None, :]) * inv_s[..., None, :])  # (..., n-1, M)
    lo = jnp.concatenate([jnp.zeros_like(cdf[..., :1, :]), cdf], axis=-2)
    hi = jnp.concatenate([cdf, jnp.ones_like(cdf[..., :1, :])], axis=-2)
    logw = jax.nn.log_softmax(w, axis=-1)[..., None, :]
    log_bins = jax.nn.logsumexp(logw + jnp.log(jnp.maximum(hi - lo, 1e-12)), axis=-1)  # (..., n)
    return jnp.concatenate([log_bins + jax.nn.log_sigmoid(-d)[..., None], jax.nn.log_sigmoid(d)[..., None]], axis=-1)


def build(cfg: WorldModelConfig, spec: EnvSpec) -> tuple[WorldModel, Serializer]:
    ser = cfg.serializer(spec)
    return WorldModel(cfg, ser.vocab_size, ser.seq_len, ser.value_roles(), action_log2(spec)), ser


def action_log2(spec: EnvSpec) -> tuple[float, ...]:
    """(A,) log2 of each action's LR factor (the trunk's ordinal action embedding)."""
    return tuple(math.log2(f) for f in spec.actions)


def weighted_loss(logits_BxSxB, seq_BxS, weights_BxS):
    """Digit-significance-weighted cross-entropy of predicting seq[:, 1:] from positions [:-1].

    weights_BxS weighs the target at each position (0 for non-targets). Returns (mean loss per
    unit weight, total weight)."""
    tgt = seq_BxS[:, 1:]
    w = weights_BxS[:, 1:]
    logp = jax.nn.log_softmax(logits_BxSxB[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.clip(tgt, 0, logits_BxSxB.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    total = jnp.sum(w)
    return jnp.sum(nll * w) / jnp.maximum(total, 1e-8), total
