"""Temporal metrics: jitter (warping error against the true flow), mouth motion in silence and the
lip flow error."""
from __future__ import annotations

import numpy as np
import pytest

from opflowtalker.metrics.temporal import (frame_levels, lip_flow_error, silence_motion, silent_frames, temporal_jitter,
                                          warp_errors)


def _texture(size=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (size // 4, size // 4))
    return np.kron(base, np.ones((4, 4)))  # smooth enough for bilinear warping


def _moving(n=6, size=32, dx=1):
    """A texture moving ``dx`` px right per frame, its flow (I_t ~ warp(I_{t+1}, F_t)) and validity."""
    tex = _texture(size * 2)
    frames = np.stack([np.repeat(tex[:size, 16 - dx * t: 16 - dx * t + size, None], 3, axis=2) for t in range(n)])
    flow = np.zeros((n - 1, size, size, 2), np.float32)
    flow[..., 0] = dx  # what frame t shows at x, frame t+1 shows at x + dx
    valid = np.ones((n - 1, size, size), bool)
    valid[:, :, :2] = valid[:, :, -2:] = False
    return frames.astype(np.uint8), flow, valid


def test_warping_error_is_small_with_the_true_flow_and_large_without_it():
    frames, flow, valid = _moving()
    with_flow = warp_errors(frames, flow, valid)
    without = warp_errors(frames, np.zeros_like(flow), valid)
    assert with_flow.shape == (5,) and with_flow.max() < 1.0 and without.min() > 10 * with_flow.max()
    # A flickering copy jitters more than the steady one under the same flow.
    flicker = frames.astype(np.int16) + np.where(np.arange(6) % 2, 20, -20)[:, None, None, None]
    assert temporal_jitter(np.clip(flicker, 0, 255).astype(np.uint8), flow, valid) > \
        temporal_jitter(frames, flow, valid) + 10
    with pytest.raises(ValueError, match="need frames"):
        warp_errors(frames[:3], flow, valid)


def test_silent_frames_keep_a_margin_from_speech():
    mel = np.full((80, 80), -4.0, np.float32)  # 1 s of silence at 80 steps/s: 25 frames
    mel[:, 32:48] = 1.0  # speech under frames 10-14
    levels = frame_levels(mel, 25)
    assert levels[12] == pytest.approx(1.0) and levels[0] == pytest.approx(-4.0)
    silent = silent_frames(mel, 25, margin=3)
    assert not silent[7:18].any()  # speech and 3 frames either side
    assert silent[:6].all() and silent[19:].all()
    assert not silent_frames(np.zeros((80, 80), np.float32), 25).any()  # no contrast, no silence found


def test_mouth_motion_in_silence_counts_only_the_mouth_in_silent_pairs():
    n, size = 8, 32
    frames = np.full((n, size, size, 3), 128, np.uint8)
    flow = np.zeros((n - 1, size, size, 2), np.float32)
    valid = np.ones((n - 1, size, size), bool)
    mouth = np.zeros((size, size), bool)
    mouth[20:26, 10:22] = True
    silent = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    steady = silence_motion(frames, flow, valid, mouth, silent)
    talking = frames.copy()
    talking[1::2, 20:26, 10:22] = 200  # the mouth opens and closes every frame
    assert steady == 0 and silence_motion(talking, flow, valid, mouth, silent) == pytest.approx(72.0)
    # The same mouth motion in speech only is not counted.
    speaking_only = frames.copy()
    speaking_only[5::2, 20:26, 10:22] = 200
    assert silence_motion(speaking_only, flow, valid, mouth, silent) == 0
    # Motion outside the mouth is not counted either.
    elsewhere = frames.copy()
    elsewhere[1::2, :5] = 0
    assert silence_motion(elsewhere, flow, valid, mouth, silent) == 0
    assert np.isnan(silence_motion(frames, flow, valid, mouth, np.zeros(n, bool)))


def test_lip_flow_error_is_small_for_the_moving_video_and_the_true_motion_for_a_still_one():
    frames, flow, valid = _moving(n=6, size=48, dx=1)
    mouth = np.zeros((48, 48), bool)
    mouth[12:36, 6:26] = True
    moving = lip_flow_error(frames, flow, valid, mouth)
    still = lip_flow_error(np.repeat(frames[:1], 6, axis=0), flow, valid, mouth)
    assert moving < 0.3
    assert still == pytest.approx(1.0, abs=0.05)  # DIS finds no motion: the error is the true 1 px
    # Only the mouth counts: motion the video gets wrong elsewhere does not.
    wrong_elsewhere = frames.copy()
    wrong_elsewhere[:, :, 40:] = frames[0, :, 40:]
    assert lip_flow_error(wrong_elsewhere, flow, valid, mouth) == pytest.approx(moving, abs=0.05)
    assert np.isnan(lip_flow_error(frames, flow, valid, np.zeros((48, 48), bool)))
    with pytest.raises(ValueError, match="need frames"):
        lip_flow_error(frames[:3], flow, valid, mouth)
