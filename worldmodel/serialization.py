"""Episodes as symbol sequences: observations as base-B digits, actions as one symbol each.

Vocabulary: digit symbols 0..B-1, action symbols B..B+A-1, PAD = B+A.
An observation of F fields is F*D symbols (field order of the spec; each value written as D
base-B digits, most significant first); a step is those F*D symbols followed by the action.
A spec with static fields (the run's context, version 2) writes them once at the head:

    [static (S*D), obs_0 (F*D), a_0, obs_1 (F*D), a_1, ..., obs_n (F*D)]   length S*D + (n+1)*F*D + n

Encoding a value x of a field with box [lo, hi]: u = (x - lo) / (hi - lo) clipped to [0, 1],
bin = min(floor(u * B**D), B**D - 1); NaN goes to the top bin (the spec's divergence value).
Decoding returns the bin's centre, so the round-trip error is at most half a bin.

Works on numpy and jax arrays alike (`xp` is the array module of the input).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from lrpilot.spec import EnvSpec


def _xp(x):
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


@dataclasses.dataclass(frozen=True)
class Serializer:
    spec: EnvSpec
    base: int = 128
    digits: int = 2

    def __post_init__(self):
        if self.base < 2 or self.digits < 1:
            raise ValueError(f"Serializer needs base >= 2 and digits >= 1, got base={self.base}, digits={self.digits}")

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

    # ---- values <-> digits ---------------------------------------------------------------------
    def _box(self, xp, fields=None):
        fields = self.spec.fields if fields is None else fields
        lo = xp.asarray([f.low for f in fields], dtype=xp.float32)
        hi = xp.asarray([f.high for f in fields], dtype=xp.float32)
        return lo, hi

    def _encode(self, x_xF, fields):
        xp = _xp(x_xF)
        x_xF = xp.asarray(x_xF, dtype=xp.float32)
        lo, hi = self._box(xp, fields)
        u = xp.clip((x_xF - lo) / (hi - lo), 0.0, 1.0)
        b = xp.minimum(xp.floor(u * self.n_bins), self.n_bins - 1)
        b = xp.where(xp.isnan(x_xF), self.n_bins - 1, b).astype(xp.int32)
        powers = xp.asarray([self.base ** (self.digits - 1 - d) for d in range(self.digits)], dtype=xp.int32)
        dig = (b[..., None] // powers) % self.base  # (..., F, D)
        return dig.reshape(*dig.shape[:-2], len(fields) * self.digits)

    def encode_obs(self, obs_xF):
        """(..., F) float -> (..., F*D) int32 digit symbols."""
        return self._encode(obs_xF, self.spec.fields)

    def encode_static(self, static_xS):
        """(..., S) run context -> (..., S*D) int32 digit symbols of the header."""
        return self._encode(static_xS, self.spec.static)

    def decode_obs(self, digits_xFD):
        """(..., F*D) digit symbols -> (..., F) float32 bin centres."""
        xp = _xp(digits_xFD)
        d = xp.asarray(digits_xFD).reshape(*digits_xFD.shape[:-1], self.spec.n_obs, self.digits).astype(xp.int32)
        powers = xp.asarray([self.base ** (self.digits - 1 - i) for i in range(self.digits)], dtype=xp.int32)
        b = (d * powers).sum(-1)
        lo, hi = self._box(xp)
        return (lo + (b.astype(xp.float32) + 0.5) / self.n_bins * (hi - lo)).astype(xp.float32)

    def field_value(self, field: int, value):
        """Digit symbols (..., D) of one field's value (for deterministic fields in the simulator)."""
        xp = _xp(value)
        full = xp.zeros((*xp.shape(value), self.spec.n_obs), xp.float32)
        full = full + xp.asarray([f.low for f in self.spec.fields], xp.float32)
        if xp is np:
            full[..., field] = value
        else:
            full = full.at[..., field].set(value)
        return self.encode_obs(full)[..., field * self.digits : (field + 1) * self.digits]

    def top_bin_digits(self) -> np.ndarray:
        return np.full(self.digits, self.base - 1, np.int32)

    def diverged(self, obs_xF):
        """True where the decoded val is in the top bin (the spec's divergence value)."""
        f = self.spec.field("val")
        return obs_xF[..., self.spec.index("val")] >= f.high - (f.high - f.low) / self.n_bins

    # ---- episodes <-> sequences ---------------------------------------------------------------
    def encode_episodes(self, obs_RxKxF, actions_RxN, length_R, static_RxS=None):
        """Padded episodes -> (R, seq_len) int32 symbol sequences, PAD after each episode's end.

        obs (R, n+1, F), actions (R, n) (negative where absent), length (R,) observation rows,
        static (R, S) the runs' context (needed when the spec has static fields).
        Vectorised; works on numpy and jax arrays (so augmentation can run inside a jitted step)."""
        xp = _xp(obs_RxKxF)
        obs = xp.asarray(obs_RxKxF, dtype=xp.float32)
        r, k = obs.shape[:2]
        dig = self.encode_obs(obs)  # (R, K, F*D)
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
