"""Serialization: digits, bins, the level and delta codings, episode layout, loss weights."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from lrpilot.spec import DEFAULT_SPEC
from lrpilot.worldmodel.serialization import Serializer

SPEC = DEFAULT_SPEC


# ---- serialization ----------------------------------------------------------------------------
def test_layout_arithmetic():
    ser = Serializer(SPEC, base=128, digits=2)
    assert ser.obs_len == 8 and ser.step_len == 9
    assert ser.seq_len == 21 * 8 + 20
    assert ser.vocab_size == 128 + 7 + 1 and ser.pad == 135
    assert ser.action_pos(0) == 8 and ser.obs_pos(1) == 9 and ser.decision_pos(1) == 16


def test_round_trip_within_half_bin():
    ser = Serializer(SPEC, base=16, digits=3)
    rng = np.random.default_rng(0)
    lo = np.array([f.low for f in SPEC.fields])
    hi = np.array([f.high for f in SPEC.fields])
    x = (lo + rng.uniform(size=(1000, SPEC.n_obs)) * (hi - lo)).astype(np.float32)
    back = ser.decode_obs(ser.encode_obs(x))
    assert np.all(np.abs(back - x) <= (hi - lo) / ser.n_bins / 2 + 1e-6)


def test_digits_most_significant_first_and_bin_centres():
    spec = dataclasses.replace(SPEC)
    ser = Serializer(spec, base=10, digits=2)
    i = spec.index("progress")  # box [0, 1]: bin b covers [b/100, (b+1)/100)
    x = np.zeros(spec.n_obs, np.float32)
    x[i] = 0.375
    x[spec.index("log_lr")] = -3.0
    d = ser.encode_obs(x)
    assert list(d[i * 2 : i * 2 + 2]) == [3, 7]
    assert ser.decode_obs(d)[i] == pytest.approx(0.375)  # centre of bin 37 is 0.375


def test_edges_beyond_box_and_nan():
    ser = Serializer(SPEC, base=128, digits=2)
    v = SPEC.index("val")
    lo, hi = SPEC.field("val").low, SPEC.field("val").high
    x = np.zeros((5, SPEC.n_obs), np.float32)
    x[:, v] = [lo, hi, lo - 5.0, hi + 5.0, np.nan]
    dig = ser.encode_obs(x).reshape(5, SPEC.n_obs, 2)[:, v]
    assert dig[0].tolist() == [0, 0]
    assert dig[1].tolist() == [127, 127]  # the top of the box is the top bin
    assert dig[2].tolist() == [0, 0] and dig[3].tolist() == [127, 127]  # clipped
    assert dig[4].tolist() == [127, 127]  # NaN = divergence value
    full = ser.decode_obs(ser.encode_obs(x))
    dec = full[:, v]
    half = (hi - lo) / ser.n_bins / 2
    assert dec[0] == pytest.approx(lo + half) and dec[1] == pytest.approx(hi - half)
    assert ser.diverged(full).tolist() == [False, True, False, True, True]


def test_jax_and_numpy_agree():
    ser = Serializer(SPEC)
    x = np.random.default_rng(1).uniform(-1, 2, (7, SPEC.n_obs)).astype(np.float32)
    np.testing.assert_array_equal(ser.encode_obs(x), np.asarray(ser.encode_obs(jnp.asarray(x))))


def _decode_episode(ser, seq_S, length):
    """Observations 0..length-1 decoded one after the other, each from the previous decoded one
    (what the simulator does; observation 0, val = train = 1, is its own previous)."""
    out, prev = [], np.ones(SPEC.n_obs, np.float32)
    for k in range(length):
        prev = ser.decode_obs(seq_S[ser.obs_pos(k) : ser.obs_pos(k) + ser.obs_len], prev)
        out.append(prev)
    return np.stack(out)


def test_delta_coding_round_trip_through_a_whole_episode(traj):
    ser = Serializer(SPEC, base=128, digits=2, coding="delta")
    seq = ser.encode_episodes(traj.obs, traj.actions, traj.length)
    v, t = SPEC.index("val"), SPEC.index("train")
    for r in range(len(traj)):
        dec = _decode_episode(ser, seq[r], int(traj.length[r]))
        np.testing.assert_allclose(dec[:, v], traj.obs[r, : traj.length[r], v], rtol=2e-4)  # errors do not pile up
        np.testing.assert_allclose(dec[:, t], traj.obs[r, : traj.length[r], t], rtol=4e-4)


def test_delta_coding_resolves_an_lr_action_in_the_first_digit():
    """Halving the LR moves the next normalised val by about 0.005 (the starter data): under the
    delta coding that is several first-digit bins, under the level coding less than one."""
    v = SPEC.index("val")
    prev = np.array([0.5, 0.0, 0.40, 0.40], np.float32)
    a, b = prev.copy(), prev.copy()
    a[v], b[v] = 0.40, 0.395
    first = lambda ser, x: int(ser.encode_obs(x, prev)[v * ser.digits])  # noqa: E731
    delta, level = Serializer(SPEC, coding="delta"), Serializer(SPEC, coding="level")
    assert abs(first(delta, a) - first(delta, b)) >= 5
    assert abs(first(level, a) - first(level, b)) <= 1


def test_delta_coding_divergence_is_the_top_bin():
    ser = Serializer(SPEC, base=16, digits=2, coding="delta")
    v, t, r = SPEC.index("val"), SPEC.index("train"), SPEC.divergence_ratio
    prev = np.tile(np.array([0.5, 0.0, 0.4, 0.4], np.float32), (4, 1))
    x = prev.copy()
    x[:, v] = [r, np.nan, 0.4, 0.4]
    x[:, t] = [r, 0.4, r, 0.41]  # a train loss past the ratio diverges too (the spec's rule)
    dig = ser.encode_obs(x, prev).reshape(4, SPEC.n_obs, 2)
    assert (dig[:3, v] == 15).all() and (dig[3, v] != 15).any()
    dec = ser.decode_obs(ser.encode_obs(x, prev), prev)
    assert ser.diverged(dec).tolist() == [True, True, True, False]
    assert (dec[:3, v] == r).all() and (dec[:3, t] == r).all()
    # a finite value never lands in the top bin: only divergence decodes as divergence
    y = prev.copy()
    y[:, v] = 1.49
    assert not ser.diverged(ser.decode_obs(ser.encode_obs(y, prev), prev)).any()


def test_delta_coding_jax_and_numpy_within_one_bin(traj):
    ser = Serializer(SPEC, coding="delta")
    prev = np.concatenate([traj.obs[:, :1], traj.obs[:, :-1]], 1)
    a = ser._bins(ser.encode_obs(traj.obs, prev), SPEC.n_obs)
    b = np.asarray(ser._bins(ser.encode_obs(jnp.asarray(traj.obs), jnp.asarray(prev)), SPEC.n_obs))
    assert np.abs(a - b).max() <= 1
    d = ser.encode_obs(traj.obs[:, 3], traj.obs[:, 2])
    np.testing.assert_allclose(np.asarray(ser.decode_obs(jnp.asarray(d), jnp.asarray(traj.obs[:, 2]))),
                               ser.decode_obs(d, traj.obs[:, 2]), rtol=1e-5)


def test_delta_decoding_needs_the_previous_observation():
    ser = Serializer(SPEC, coding="delta")
    with pytest.raises(ValueError, match="previous observation"):
        ser.decode_obs(np.zeros(ser.obs_len, np.int32))
    with pytest.raises(ValueError, match="coding"):
        Serializer(SPEC, coding="log")


def test_episode_encoding_and_padding(traj):
    ser = Serializer(SPEC)
    t = traj.subset([0, 1])
    t.length[1] = 4  # a short (terminated) episode
    seq = ser.encode_episodes(t.obs, t.actions, t.length)
    assert seq[0, ser.action_pos(0)] == ser.base + t.actions[0, 0]
    np.testing.assert_array_equal(seq[0, : ser.obs_len], ser.encode_obs(t.obs[0, 0]))
    end = ser.obs_pos(3) + ser.obs_len  # observation 3 is the last
    assert np.all(seq[1, end:] == ser.pad)
    assert np.all(seq[1, :end] != ser.pad)


# ---- loss ------------------------------------------------------------------------------------
def test_loss_weights_mask_and_decay(traj):
    ser = Serializer(SPEC)
    seq = ser.encode_episodes(traj.obs[:1], traj.actions[:1], traj.length[:1])
    w = ser.loss_weights(seq, decay=0.8)[0]
    field, sig, step = ser.symbol_roles()
    for p in range(ser.seq_len):
        f = field[p]
        if f < 0 or SPEC.fields[f].deterministic or step[p] == 0:
            assert w[p] == 0.0, p
        else:
            assert w[p] == pytest.approx(0.8 ** sig[p])
    short = seq.copy()
    short[0, ser.obs_pos(5) :] = ser.pad
    assert ser.loss_weights(short, 0.8)[0, ser.obs_pos(5) :].sum() == 0.0
