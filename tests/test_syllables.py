"""Syllables in the corpus and the Figure 1 measurement: where a syllable is found, what its lip flow
is (the head's motion taken away, in face units), and which pairs the similarity compares."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opflowtalker.corpus.syllables import (Occurrence, find_syllables, lip_motion, mouth_grid, syllable_descriptors,
                                           syllable_pictures, syllable_similarity)
from opflowtalker.video import write_video

BLUE = ("b", "l", "uw")


def face_landmarks(scale: float = 1.0) -> np.ndarray:
    """68 points: eyes on a line at y = 30, the mouth a ring around (60, 70), the nose between."""
    points = np.zeros((68, 2), np.float32)
    points[27:36] = [60, 50]
    points[36:48] = np.stack([np.linspace(40, 80, 12), np.full(12, 30.0)], axis=1)
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    points[48:68] = np.stack([60 + 12 * np.cos(angles), 70 + 5 * np.sin(angles)], axis=1)
    return points * scale


def jaw_flow(size: int, scale: float, head: tuple[float, float]) -> np.ndarray:
    """A head translation plus the lower lip moving down in proportion to its distance below the
    mouth centre (the same motion in face units at every ``scale``)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    below = np.maximum(ys - 70 * scale, 0) / scale  # in the face's own units
    flow = np.zeros((size, size, 2), np.float32)
    flow[..., 0] = head[0] * scale
    flow[..., 1] = head[1] * scale + 0.2 * below * scale
    return flow


def write_clip(root: Path, identity: str, name: str, phones: list, flow: np.ndarray, landmarks: np.ndarray,
               fps: float = 25.0) -> None:
    n_frames = len(flow) + 1
    size = flow.shape[1]
    folder = root / identity
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"identity": identity, "name": name, "fps": fps, "n_frames": n_frames, "phones": phones}
    (folder / f"{name}.json").write_text(json.dumps(meta))
    np.savez(folder / f"{name}.npz", flow=flow.astype(np.float16), landmarks=np.stack([landmarks] * n_frames))
    frames = np.random.default_rng(0).integers(0, 255, (n_frames, size, size, 3), dtype=np.uint8)
    write_video(folder / f"{name}.mp4", frames, fps)


def test_a_syllable_is_found_by_its_phones_and_spans_their_frames(tmp_path):
    flow = np.zeros((24, 32, 32, 2), np.float32)
    phones = [["sil", 0.0, 0.2], ["b", 0.2, 0.28], ["l", 0.28, 0.36], ["uw", 0.36, 0.6], ["sil", 0.6, 1.0]]
    write_clip(tmp_path, "anna", "00001", phones, flow, face_landmarks(0.25))
    write_clip(tmp_path, "anna", "00002", [["sil", 0.0, 0.3], ["b", 0.3, 0.4], ["ih", 0.4, 0.5], ["n", 0.5, 0.6]],
               flow, face_landmarks(0.25))
    write_clip(tmp_path, "bert", "00003", phones, flow, face_landmarks(0.25))
    found = find_syllables(tmp_path, {"blue": BLUE})
    # 0.2 s at 25 fps is frame 5; the vowel ends at 0.6 s, frame 15, the last frame of the syllable.
    assert found == [Occurrence("anna/00001", "anna", "blue", 5, 16), Occurrence("bert/00003", "bert", "blue", 5, 16)]
    assert len(find_syllables(tmp_path, {"blue": BLUE}, per_identity=0)) == 0


def test_lip_motion_leaves_out_the_head_and_is_the_same_on_a_face_twice_the_size():
    small, large = face_landmarks(1.0), face_landmarks(2.0)
    small_points, small_unit = mouth_grid(small[None])
    large_points, large_unit = mouth_grid(large[None])
    assert large_unit == pytest.approx(2 * small_unit)
    # The head moving alone: no lip motion.
    head_only = np.tile(np.array([3.0, -2.0], np.float32), (1, 128, 128, 1))
    still = lip_motion(head_only, small[None], 0, small_points, small_unit)
    assert np.abs(still).max() < 1e-5
    # The jaw opening, on a moving head, at two sizes of the same face.
    at_small = lip_motion(jaw_flow(128, 1.0, (3.0, -2.0))[None], small[None], 0, small_points, small_unit)
    at_large = lip_motion(jaw_flow(256, 2.0, (3.0, -2.0))[None], large[None], 0, large_points, large_unit)
    assert np.abs(at_small[..., 1]).max() > 0.05       # the lower lip moves down ...
    assert np.abs(at_small[..., 0]).max() < 1e-5        # ... and not sideways
    np.testing.assert_allclose(at_small, at_large, atol=2e-3)


def test_descriptors_of_a_head_that_only_moves_have_no_lip_flow(tmp_path):
    flow = np.tile(np.array([1.5, -0.5], np.float32), (20, 32, 32, 1))
    phones = [["sil", 0.0, 0.1], ["b", 0.1, 0.2], ["l", 0.2, 0.3], ["uw", 0.3, 0.5], ["sil", 0.5, 0.8]]
    write_clip(tmp_path, "anna", "00001", phones, flow, face_landmarks(0.25))
    occurrences = find_syllables(tmp_path, {"blue": BLUE})
    flows, images = syllable_descriptors(tmp_path, occurrences, grid=(4, 6), steps=5)
    assert flows.shape == (1, 5 * 4 * 6 * 2) and images.shape == (1, 5 * 4 * 6)
    assert np.abs(flows).max() < 1e-3
    # Each image step is standardised.
    steps = images.reshape(5, -1)
    np.testing.assert_allclose(steps.mean(axis=1), 0, atol=1e-4)
    # Figure 1's tiles: the mouth of the middle frame and the lip flow at three moments, none here.
    picture, flows = syllable_pictures(tmp_path, occurrences[0], size=(6, 8), steps=3)
    assert picture.shape == (6, 8, 3) and picture.dtype == np.uint8
    assert flows.shape == (3, 6, 8, 2) and np.abs(flows).max() < 1e-3


def _occurrences(identities: list[str], syllables: list[str], repeats: int) -> list[Occurrence]:
    return [Occurrence(f"{who}/{k}", who, s, 0, 5) for who in identities for s in syllables for k in range(repeats)]


@pytest.mark.parametrize("carried_by", ["syllable", "identity"])
def test_similarity_compares_a_syllable_across_faces_with_other_syllables_on_one_face(carried_by):
    rng = np.random.default_rng(0)
    identities, syllables = ["a", "b", "c"], ["s1", "s2", "s3", "s4"]
    occurrences = _occurrences(identities, syllables, 2)
    base = {name: rng.normal(size=64) for name in identities + syllables}
    descriptors = np.stack([base[getattr(o, carried_by)] + 0.3 * rng.normal(size=64) for o in occurrences])
    result = syllable_similarity(descriptors, occurrences)
    assert result["occurrences"] == len(occurrences) and result["chance"] == 0.25
    low, high = result["difference"]["interval"]
    if carried_by == "syllable":  # what the paper says of lip flow
        assert low > 0.5 and result["retrieval"]["mean"] == 1.0
    else:                          # what it says of images: the face dominates
        assert high < -0.5 and result["retrieval"]["mean"] < 0.5


def test_similarity_needs_a_syllable_said_by_two_identities():
    occurrences = _occurrences(["a"], ["s1", "s2"], 2)
    with pytest.raises(ValueError, match="two identities"):
        syllable_similarity(np.eye(4), occurrences)
