"""Episodes as symbol sequences: observations as base-B digits, actions as one symbol each.

Vocabulary: digit symbols 0..B-1, action symbols B..B+A-1, PAD = B+A.
An observation of F fields is F*D symbols (field order of the spec; each value written as D
base-B digits, most significant first); a step is those F*D symbols followed by the action.
A spec with static fields (the run's context, version 2) writes them once at the head:

    [static (S*D), obs_0 (F*D), a_0, obs_1 (F*D), a_1, ..., obs_n (F*D)]   length S*D + (n+1)*F*D + n

Two codings of the stochastic fields (`coding`):

* "level": a value x of a field with box [lo, hi] is written as u = (x - lo) / (hi - lo)
  clipped to [0, 1], bin = min(floor(u * B**D), B**D - 1); NaN goes to the top bin (the spec's
  divergence value). Decoding returns the bin's centre (round-trip error at most half a bin).
* "delta": what changed over the interval, squashed so that small changes get fine bins: val as
  x = ln(val_k / val_{k-1}), train as x = ln(train_k / val_k) (the interval's train/val gap),
  each written as u = (asinh(x / c) - asinh(lo / c)) / (asinh(hi / c) - asinh(lo / c)) over its
  box (`DELTA_BOX`, sized from the collected runs; c = `SQUASH`). Near x = 0 a first digit spans
  about 0.0015 of x, against 0.0117 of val for "level" with base 128: an LR action's effect on
  the next val (about 0.005) moves the first digit, not only the second. The top bin is reserved
  for divergence (a diverged observation encodes there and decodes to the spec's divergence
  ratio). Decoding needs the previous observation (`prev_xF`); observation 0 is its own previous.
Deterministic fields (progress, log_lr) are always written as levels.

Works on numpy and jax arrays alike (`xp` is the array module of the input).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lrpilot.spec import EnvSpec


def _xp(x):
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


CODINGS = ("level", "delta")
DELTA_BOX = {"val": (-2.0, 1.0), "train": (-1.2, 1.2)}
"""Boxes of the delta coding, in nats of log ratio: ln(val_k / val_{k-1}) of the collected runs
(starter and v2) lies in [-1.67, 0.63] (99% within [-0.53, 0.08] after the first interval),
ln(train_k / val_k) in [-0.82, 0.86]."""
SQUASH = 0.02  # c of the asinh squash: bins are ~uniform in x within +-c, logarithmic beyond


@dataclasses.dataclass(frozen=True)
class Serializer:
    spec: EnvSpec
    base: int = 128
    digits: int = 2
    coding: str = "level"

    def __post_init__(self):
        if self.base < 2 or self.digits < 1:
            raise ValueError(f"Serializer needs base >= 2 and digits >= 1, got base={self.base}, digits={self.digits}")
        if self.coding not in CODINGS:
            raise ValueError(f"Serializer.coding must be one of {', '.join(CODINGS)}, got {self.coding!r}")

    # ---- vocabulary and layout ---------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        return self.base**self.digits

    @property
    def vocab_size(self) -> int:
        return self.base + self.spec.n_actions + 1

    @property
    def pad(self) -> int:
        return self.base + self.spec.n_actions

    @property
    def obs_len(self) -> int:
        return self.spec.n_obs * self.digits

    @property
    def step_len(self) -> int:
        return self.obs_len + 1

    @property
    def offset(self) -> int:
        """Symbols of the static header before observation 0 (0 without static fields)."""
        return self.spec.n_static * self.digits

    @property
    def seq_len(self) -> int:
        return self.offset + (self.spec.n_decisions + 1) * self.obs_len + self.spec.n_decisions

    def obs_pos(self, k):
        """Position of observation k's first symbol (k an int or an integer array)."""
        return self.offset + k * self.step_len

    def action_pos(self, k):
        return self.offset + k * self.step_len + self.obs_len

    def decision_pos(self, k: int) -> int:
        """Position whose output decides action k: observation k's last symbol."""
        return self.action_pos(k) - 1

    def symbol_roles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per position of a full sequence: (field index or -1 for actions, digit significance or -1,
        step index k). Shapes (seq_len,)."""
        field = np.full(self.seq_len, -1, np.int32)
        sig = np.full(self.seq_len, -1, np.int32)
        step = np.zeros(self.seq_len, np.int32)
        for p in range(self.offset, self.seq_len):  # the header: field -1, step 0 (never a target)
            k, r = divmod(p - self.offset, self.step_len)
            step[p] = k
            if r < self.obs_len:
                field[p], sig[p] = divmod(r, self.digits)
        return field, sig, step

    def value_roles(self) -> tuple[int, ...]:
        """(seq_len,) the role of each position's digit, for the trunk's value embedding: 0 for
        actions; 1 + f * D + s for digit s of observation field f; 1 + F * D + j * D + s for
        digit s of static field j (the header)."""
        field, sig, _ = self.symbol_roles()
        roles = np.where(field >= 0, 1 + field * self.digits + sig, 0)
        head = np.arange(self.offset)
        roles[: self.offset] = 1 + self.spec.n_obs * self.digits + head
        return tuple(int(r) for r in roles)

    # ---- values <-> digits ---------------------------------------------------------------------
    def _box(self, xp, fields=None):
        fields = self.spec.fields if fields is None else fields
        lo = xp.asarray([f.low for f in fields], dtype=xp.float32)
        hi = xp.asarray([f.high for f in fields], dtype=xp.float32)
        return lo, hi

    def _digits(self, b):
        """(..., F) int bins -> (..., F*D) int32 digit symbols, most significant first."""
        xp = _xp(b)
        powers = xp.asarray([self.base ** (self.digits - 1 - d) for d in range(self.digits)], dtype=xp.int32)
        dig = (b.astype(xp.int32)[..., None] // powers) % self.base  # (..., F, D)
        return dig.reshape(*dig.shape[:-2], b.shape[-1] * self.digits)

    def _bins(self, digits_xFD, n_fields: int):
        """(..., F*D) digit symbols -> (..., F) int32 bins."""
        xp = _xp(digits_xFD)
        d = xp.asarray(digits_xFD).reshape(*digits_xFD.shape[:-1], n_fields, self.digits).astype(xp.int32)
        powers = xp.asarray([self.base ** (self.digits - 1 - i) for i in range(self.digits)], dtype=xp.int32)
        return (d * powers).sum(-1)

    def _encode(self, x_xF, fields):
        xp = _xp(x_xF)
        x_xF = xp.asarray(x_xF, dtype=xp.float32)
        lo, hi = self._box(xp, fields)
        u = xp.clip((x_xF - lo) / (hi - lo), 0.0, 1.0)
        b = xp.minimum(xp.floor(u * self.n_bins), self.n_bins - 1)
        return self._digits(xp.where(xp.isnan(x_xF), self.n_bins - 1, b))

    @staticmethod
    def _delta(name: str):
        """(asinh(lo / c), asinh(hi / c)) of a delta-coded field."""
        lo, hi = DELTA_BOX[name]
        return float(np.arcsinh(lo / SQUASH)), float(np.arcsinh(hi / SQUASH))

    def _delta_unit(self, xp, name: str, x):
        a_lo, a_hi = self._delta(name)
        return (xp.arcsinh(x / SQUASH) - a_lo) / (a_hi - a_lo)

    def _delta_value(self, xp, name: str, u):
        a_lo, a_hi = self._delta(name)
        return SQUASH * xp.sinh(a_lo + u * (a_hi - a_lo))

    def encode_obs(self, obs_xF, prev_xF=None):
        """(..., F) float -> (..., F*D) int32 digit symbols. The delta coding needs the previous
        observation `prev_xF` (..., F) (None: each observation is its own previous)."""
        if self.coding == "level":
            return self._encode(obs_xF, self.spec.fields)
        xp = _xp(obs_xF)
        obs = xp.asarray(obs_xF, dtype=xp.float32)
        prev = obs if prev_xF is None else xp.asarray(prev_xF, dtype=xp.float32)
        spec, top = self.spec, self.n_bins - 1
        vi, ti = spec.index("val"), spec.index("train")
        val, train, pval = obs[..., vi], obs[..., ti], prev[..., vi]
        diverged = spec.is_diverged(val, train)
        safe = lambda x: xp.where(diverged | ~(x > 0), 1.0, x)  # noqa: E731  (log of a diverged row is never used)
        units = {"val": self._delta_unit(xp, "val", xp.log(safe(val)) - xp.log(safe(pval))),
                 "train": self._delta_unit(xp, "train", xp.log(safe(train)) - xp.log(safe(val)))}
        lo, hi = self._box(xp)
        cols = []
        for j, f in enumerate(spec.fields):
            if f.deterministic:
                b = xp.minimum(xp.floor(xp.clip((obs[..., j] - lo[j]) / (hi[j] - lo[j]), 0.0, 1.0) * self.n_bins), top)
            else:  # the top bin is divergence alone
                b = xp.where(diverged, top, xp.clip(xp.floor(units[f.name] * self.n_bins), 0, top - 1))
            cols.append(b)
        return self._digits(xp.stack(cols, axis=-1))

    def encode_static(self, static_xS):
        """(..., S) run context -> (..., S*D) int32 digit symbols of the header."""
        return self._encode(static_xS, self.spec.static)

    def decode_obs(self, digits_xFD, prev_xF=None):
        """(..., F*D) digit symbols -> (..., F) float32 observations (bin centres; the delta coding
        needs the previous observation `prev_xF`, and a top bin decodes as divergence, val = train
        = the divergence ratio)."""
        xp = _xp(digits_xFD)
        b = self._bins(digits_xFD, self.spec.n_obs)
        u = (b.astype(xp.float32) + 0.5) / self.n_bins
        lo, hi = self._box(xp)
        level = (lo + u * (hi - lo)).astype(xp.float32)
        if self.coding == "level":
            return level
        if prev_xF is None:
            raise ValueError("Serializer(coding='delta').decode_obs needs the previous observation (prev_xF)")
        spec, top = self.spec, self.n_bins - 1
        vi, ti, r = spec.index("val"), spec.index("train"), spec.divergence_ratio
        prev = xp.asarray(prev_xF, dtype=xp.float32)
        val = prev[..., vi] * xp.exp(self._delta_value(xp, "val", u[..., vi]))
        train = val * xp.exp(self._delta_value(xp, "train", u[..., ti]))
        diverged = (b[..., vi] == top) | (b[..., ti] == top) | spec.is_diverged(val, train)
        cols = [xp.where(diverged, r, val) if j == vi else xp.where(diverged, r, train) if j == ti else level[..., j]
                for j in range(spec.n_obs)]
        return xp.stack(cols, axis=-1).astype(xp.float32)

    def val_from_unit(self, u, prev_xF):
        """Normalised val at position u in [0, 1] of val's code (e.g. the expectation of its digit
        distributions), given the previous observation (..., F) (used by the delta coding)."""
        xp = _xp(u)
        if self.coding == "level":
            f = self.spec.field("val")
            return f.low + u * (f.high - f.low)
        return xp.asarray(prev_xF)[..., self.spec.index("val")] * xp.exp(self._delta_value(xp, "val", u))

    def field_value(self, field: int, value):
        """Digit symbols (..., D) of one field's value (for deterministic fields in the simulator)."""
        xp = _xp(value)
        full = xp.zeros((*xp.shape(value), self.spec.n_obs), xp.float32)
        full = full + xp.asarray([f.low for f in self.spec.fields], xp.float32)
        if xp is np:
            full[..., field] = value
        else:
            full = full.at[..., field].set(value)
        return self._encode(full, self.spec.fields)[..., field * self.digits : (field + 1) * self.digits]

    def top_bin_digits(self) -> np.ndarray:
        return np.full(self.digits, self.base - 1, np.int32)

    def diverged(self, obs_xF):
        """True where a decoded observation is the spec's divergence value (level coding: val in
        the top bin; delta coding: val at the divergence ratio)."""
        f = self.spec.field("val")
        margin = (f.high - f.low) / self.n_bins if self.coding == "level" else 1e-6
        return obs_xF[..., self.spec.index("val")] >= f.high - margin

    # ---- episodes <-> sequences ---------------------------------------------------------------
    def encode_episodes(self, obs_RxKxF, actions_RxN, length_R, static_RxS=None):
        """Padded episodes -> (R, seq_len) int32 symbol sequences, PAD after each episode's end.

        obs (R, n+1, F), actions (R, n) (negative where absent), length (R,) observation rows,
        static (R, S) the runs' context (needed when the spec has static fields).
        Vectorised; works on numpy and jax arrays (so augmentation can run inside a jitted step)."""
        xp = _xp(obs_RxKxF)
        obs = xp.asarray(obs_RxKxF, dtype=xp.float32)
        r, k = obs.shape[:2]
        dig = self.encode_obs(obs, xp.concatenate([obs[:, :1], obs[:, :-1]], axis=1))  # (R, K, F*D); obs 0 is its own previous
        acts = xp.concatenate([xp.asarray(actions_RxN, dtype=xp.int32), xp.full((r, 1), -1, xp.int32)], axis=1)
        step = xp.concatenate([dig, (self.base + acts)[..., None]], axis=-1)  # (R, K, F*D+1)
        seq = step.reshape(r, k * self.step_len)
        if self.offset:
            if static_RxS is None:
                raise ValueError(f"spec version {self.spec.version} has static fields: encode_episodes needs static_RxS")
            seq = xp.concatenate([self.encode_static(static_RxS), seq], axis=1)
        seq = seq[:, : self.seq_len]
        _, _, step_of = self.symbol_roles()
        pos = np.arange(self.seq_len) - self.offset
        is_action = (pos >= 0) & ((pos % self.step_len) == self.obs_len)
        need = xp.asarray(np.where(is_action, step_of + 1, step_of))  # an action k needs observation k+1
        valid = need[None, :] < xp.asarray(length_R)[:, None]
        return xp.where(valid, seq, self.pad).astype(xp.int32)

    def loss_weights(self, seq_RxS, decay: float):
        """(R, S) weight of predicting each position from the previous ones: decay**significance
        on stochastic observation digits of observations k >= 1, 0 elsewhere (deterministic
        fields, actions, observation 0, padding). numpy or jax, like `seq_RxS`."""
        xp = _xp(seq_RxS)
        field, sig, step = self.symbol_roles()
        stochastic = np.array([not self.spec.fields[f].deterministic if f >= 0 else False for f in field])
        w = np.where(stochastic & (step >= 1), decay ** np.maximum(sig, 0), 0.0).astype(np.float32)
        return xp.where(seq_RxS == self.pad, 0.0, xp.asarray(w)[None]).astype(xp.float32)
