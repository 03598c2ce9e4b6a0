"""Claims about the preprocessing stage: Wav2Lip-style face crops with crop-space optical flow.

A tiny corpus (two faces, ten sentences) is built once; its clips carry exact frame flow, which
the stage carries into crop space. A copy of one of its videos without the stored flow stands in
for a real LRS2 clip, for which the stage estimates flow with DIS.
"""

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from opflowtalker import datasets, params as params_module
from opflowtalker.corpus.build import CorpusParams, build_corpus
from opflowtalker.crops import face_boxes, smooth_boxes
from opflowtalker.landmarks import mouth_mask
from opflowtalker.params import from_params_yaml
from opflowtalker.preprocess import PreprocessError, PreprocessParams, dis_flow, preprocess_clip, preprocess_dataset
from opflowtalker.video import probe, write_video

from conftest import study_params

FACES = Path(__file__).resolve().parents[1] / "data" / "external" / "faces"
SPLITS = ("train", "test")
MOVING = 0.25  # px per frame: slower pixels differ by less than the rounding and resampling floor
JAW_AND_NOSE = list(range(0, 17)) + list(range(27, 36))
KEYS = {"faces", "boxes", "landmarks", "face_found", "mel", "flow", "valid", "fps", "flow_source"}
PREP = from_params_yaml(PreprocessParams, "preprocess", workers=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(root, from_params_yaml(
        CorpusParams, "corpus", n_sentences=10, size=128, faces=str(FACES), workers=2,
        identities={"hopper": ["espeak-us-female"], "glasses": ["espeak-us-male"]}, test_identity="glasses",
    ))
    return root


@pytest.fixture(scope="module")
def processed(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    summary = preprocess_dataset("corpus", corpus, out, PREP, splits=SPLITS)
    return out, summary


@pytest.fixture(scope="module")
def prepared(processed) -> dict[str, dict[str, np.ndarray]]:
    out, _ = processed
    result = {}
    for split in SPLITS:
        for key in (out / f"{split}.txt").read_text().split():
            with np.load(out / f"{key}.npz") as data:
                result[key] = {k: data[k] for k in data.files}
    return result


@pytest.fixture(scope="module")
def lrs2_like(corpus, tmp_path_factory):
    """One corpus video, without its exact flow and landmarks, in LRS2's ``main/`` layout."""
    clip = datasets.read_dataset("corpus", corpus, "test")[0]
    root = tmp_path_factory.mktemp("lrs2")
    (root / "main" / clip.speaker).mkdir(parents=True)
    shutil.copy(clip.video, root / "main" / clip.speaker / f"{clip.name}.mp4")
    (root / "test.txt").write_text(f"{clip.key} NF\n")
    out = root / "prepared"
    summary = preprocess_dataset("lrs2", root, out, PREP, splits=("test",))
    with np.load(out / f"{clip.key}.npz") as data:
        return clip.key, {k: data[k] for k in data.files}, summary


def _warp_ratio(clip, exclude_mouth=True):
    """Photometric residual of crop t+1 warped back onto crop t by the flow, over the unwarped
    residual, on valid pixels that move at least MOVING px (outside the mouth)."""
    S = clip["faces"].shape[1]
    gx, gy = np.meshgrid(np.arange(S, dtype=np.float32), np.arange(S, dtype=np.float32))
    warped = plain = 0.0
    for t in range(len(clip["flow"])):
        f = clip["flow"][t].astype(np.float32)
        a, b = clip["faces"][t].astype(np.float32), clip["faces"][t + 1]
        back = cv2.remap(b, gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR).astype(np.float32)
        m = clip["valid"][t] & (np.linalg.norm(f, axis=-1) >= MOVING)
        if exclude_mouth:
            m &= ~mouth_mask(clip["landmarks"][t], (S, S), dilate=2)
        warped += np.abs(a - back)[m].sum()
        plain += np.abs(a - b.astype(np.float32))[m].sum()
    return warped / plain


def test_every_listed_clip_is_prepared_with_its_arrays(corpus, processed, prepared):
    out, summary = processed
    for split in SPLITS:
        source = [c.key for c in datasets.read_dataset("corpus", corpus, split)]
        assert (out / f"{split}.txt").read_text().split() == source
        assert summary["splits"][split] == {"clips": len(source), "written": len(source), "skipped": 0, "no_face": 0}
    assert summary["frames"] == sum(len(c["faces"]) for c in prepared.values())
    assert summary["faces_not_found"] == 0
    for key, clip in prepared.items():
        T = len(clip["faces"])
        assert set(clip) == KEYS, key
        assert clip["faces"].shape == (T, 96, 96, 3) and clip["faces"].dtype == np.uint8
        assert clip["boxes"].shape == (T, 4) and clip["boxes"].dtype == np.float32
        assert clip["landmarks"].shape == (T, 68, 2) and clip["landmarks"].dtype == np.float32
        assert clip["mel"].shape[0] == 80 and clip["mel"].dtype == np.float32
        assert clip["flow"].shape == (T - 1, 96, 96, 2) and clip["flow"].dtype == np.float16
        assert clip["valid"].shape == (T - 1, 96, 96) and clip["valid"].dtype == bool
        assert str(clip["flow_source"]) == "exact" and float(clip["fps"]) == 25.0
        assert clip["face_found"].all()


def test_crops_are_square_boxes_inside_the_frame(prepared):
    for key, clip in prepared.items():
        x0, y0, x1, y1 = clip["boxes"].T
        np.testing.assert_allclose(x1 - x0, y1 - y0, atol=1e-3)
        assert x0.min() >= 0 and y0.min() >= 0 and x1.max() <= 128 + 1e-3 and y1.max() <= 128 + 1e-3, key


def test_crops_are_centred_on_the_face_with_the_chin_inside(prepared):
    for key, clip in prepared.items():
        lm = clip["landmarks"]
        # The box spans the jaw from edge to edge, as Wav2Lip's detector box does; smoothing over
        # moving frames lets a cheek or brow point stray just past the edge, no further.
        assert lm[..., 0].min() >= -2 and lm[..., 0].max() <= 97 and lm[..., 1].min() >= -2, key
        centre = 0.5 * (lm[:, 0, 0] + lm[:, 16, 0])
        assert np.abs(centre - 48).max() < 6, key
        # The chin (point 8) sits in the bottom fifth, with Wav2Lip's room below it wherever the
        # video frame has that room; where it does not, the box goes down to the frame's edge.
        x0, y0, x1, y1 = clip["boxes"].T
        scale = 96 / (x1 - x0)
        chin = lm[:, 8, 1] / scale + y0
        pad = 10 / 96 * (lm[:, 16, 0] - lm[:, 0, 0]) / scale
        held = chin + pad <= 128
        assert lm[:, 8, 1].min() >= 0.8 * 96, key
        assert np.all(lm[held, 8, 1] <= 95), key
        np.testing.assert_allclose(y1[~held], 128, err_msg=key)


def test_crop_space_flow_warps_next_crop_onto_current(prepared):
    for key, clip in prepared.items():
        assert clip["valid"].mean() > 0.85, key
        assert _warp_ratio(clip) <= 0.5, key


def test_crop_landmarks_follow_crop_space_flow(prepared):
    for key, clip in prepared.items():
        flow = clip["flow"].astype(np.float32)
        for t in range(len(flow)):
            p = clip["landmarks"][t, JAW_AND_NOSE]
            inside = np.all((p >= 1) & (p <= 96 - 2), axis=1)
            p = p[inside]
            f = np.stack([cv2.remap(flow[t, ..., c], p[:, :1], p[:, 1:], cv2.INTER_LINEAR)[:, 0] for c in (0, 1)], 1)
            np.testing.assert_allclose(p + f, clip["landmarks"][t + 1, JAW_AND_NOSE][inside], atol=0.1,
                                       err_msg=f"{key} frame {t}")


def test_one_mel_window_per_frame(prepared):
    # 80 mel steps per second at 25 fps: 3.2 steps per frame, plus the frame centred at zero.
    for key, clip in prepared.items():
        T = len(clip["faces"])
        assert abs(clip["mel"].shape[1] - (1 + 80 * T / 25)) <= 1, key


def test_dis_is_used_for_a_video_with_no_exact_flow(lrs2_like):
    key, clip, summary = lrs2_like
    assert summary["splits"]["test"]["written"] == 1
    assert str(clip["flow_source"]) == "dis"
    assert clip["face_found"].mean() > 0.95  # dlib finds the rendered face in nearly every frame
    assert clip["valid"].mean() > 0.8  # forward and backward DIS agree on most of the face
    assert set(clip) == KEYS and clip["flow"].dtype == np.float16
    assert _warp_ratio(clip, exclude_mouth=False) <= 0.6


def test_dis_on_corpus_crops_agrees_with_the_exact_flow(prepared):
    clip = next(iter(prepared.values()))
    errors = []
    for t in range(len(clip["flow"])):
        estimate, ok = dis_flow(clip["faces"][t], clip["faces"][t + 1])
        both = ok & clip["valid"][t]
        errors.append(np.linalg.norm(estimate - clip["flow"][t].astype(np.float32), axis=-1)[both])
    assert np.mean(np.concatenate(errors)) < 0.5  # px


def test_a_rerun_skips_finished_clips_and_redoes_changed_videos(corpus, processed, prepared):
    out, first = processed
    again = preprocess_dataset("corpus", corpus, out, PREP, splits=SPLITS)
    for split in SPLITS:
        n = first["splits"][split]["clips"]
        assert again["splits"][split] == {"clips": n, "written": 0, "skipped": n, "no_face": 0}
    assert again["seconds"] < 1.0

    clip = datasets.read_dataset("corpus", corpus, "test")[0]
    later = (out / f"{clip.key}.npz").stat().st_mtime + 10
    os.utime(clip.video, (later, later))
    redone = preprocess_dataset("corpus", corpus, out, PREP, splits=("test",))
    assert redone["splits"]["test"]["written"] == 1


def test_a_video_without_a_face_is_left_out_with_a_warning(tmp_path, caplog):
    root = tmp_path / "lrs2"
    rng = np.random.default_rng(0)
    frames = np.full((10, 64, 64, 3), 128, np.uint8)
    write_video(root / "main" / "x" / "blank.mp4", frames, 25, audio=(0.1 * rng.standard_normal(6400), 16000))
    (root / "val.txt").write_text("x/blank\n")
    with caplog.at_level(logging.WARNING, logger="opflowtalker.preprocess"):
        summary = preprocess_dataset("lrs2", root, tmp_path / "out", PREP, splits=("val",))
    assert summary["splits"]["val"] == {"clips": 0, "written": 0, "skipped": 0, "no_face": 1}
    assert (tmp_path / "out" / "val.txt").read_text() == ""
    assert any("x/blank" in r.getMessage() and "no face" in r.getMessage() for r in caplog.records)


def test_boxes_are_smoothed_over_the_next_frames_like_wav2lip():
    boxes = np.array([[0, 0, 10, 10]] * 5 + [[10, 0, 20, 10]] * 10, dtype=np.float64)
    smoothed = smooth_boxes(boxes, 5)
    # Frame i averages frames i..i+4, so a jump at frame 5 is spread over frames 1-5.
    np.testing.assert_allclose(smoothed[:, 0], [0, 2, 4, 6, 8] + [10] * 10)
    np.testing.assert_allclose(smooth_boxes(boxes[:3], 5), np.repeat(boxes[:3].mean(0, keepdims=True), 3, 0))


def test_pads_scale_with_the_face():
    lm = np.zeros((1, 68, 2))
    lm[0, :, 0] = np.linspace(100, 292, 68)  # a face 192 px wide, twice the reference
    lm[0, :, 1] = np.linspace(100, 292, 68)
    (x0, y0, x1, y1), = face_boxes(lm, (1000, 1000), (0, 10, 0, 0), 1)
    assert x1 - x0 == pytest.approx(212) and y1 - y0 == pytest.approx(212)
    assert y1 == pytest.approx(292 + 20)  # 10 px at 96 px face width is 20 px here
    assert (x0 + x1) / 2 == pytest.approx(196)


def test_params_come_from_a_params_yaml_group():
    group = dict(study_params()["preprocess"])
    p = params_module.from_mapping(PreprocessParams, {**group, "size": 256, "pads": [0, 12, 0, 0]})
    assert p.size == 256 and p.pads == (0, 12, 0, 0) and p.smooth == group["smooth"]
    del group["smooth"]
    with pytest.raises(params_module.ParamsError, match="lacks parameter.s. smooth"):
        params_module.from_mapping(PreprocessParams, group)


@pytest.mark.parametrize("bad", [
    {"pads": (0, 10, 0)}, {"pads": (0, -1, 0, 0)}, {"size": 8}, {"smooth": 0},
    {"flow_estimator": "raft"}, {"landmark_backend": "opencv"}, {"fps": 0}, {"workers": 0},
])
def test_bad_parameters_are_refused_in_one_sentence(bad):
    with pytest.raises(PreprocessError) as err:
        dataclasses.replace(PREP, **bad)
    assert isinstance(err.value, ValueError) and err.value.args[0].count(". ") == 0


def test_bad_inputs_are_refused_in_one_sentence(corpus, tmp_path):
    clip = datasets.read_dataset("corpus", corpus, "test")[0]
    with pytest.raises(PreprocessError, match="not found"):
        preprocess_clip(datasets.Clip("x", "gone", tmp_path / "gone.mp4", None, "test"), PREP)

    # Stored landmarks for fewer frames than the video has.
    broken = tmp_path / clip.speaker
    broken.mkdir()
    shutil.copy(clip.video, broken / "c.mp4")
    with np.load(clip.video.with_suffix(".npz")) as data:
        np.savez(broken / "c.npz", landmarks=data["landmarks"][:-3], flow=data["flow"][:-3], valid=data["valid"][:-3])
    with pytest.raises(PreprocessError, match="frames"):
        preprocess_clip(datasets.Clip(clip.speaker, "c", broken / "c.mp4", None, "test"), PREP)

    # Exact flow cannot be resampled to another frame rate.
    with pytest.raises(PreprocessError, match="fps"):
        preprocess_clip(clip, dataclasses.replace(PREP, fps=30))
    assert probe(clip.video).fps == 25

    with pytest.raises(ValueError, match="unknown dataset kind"):
        preprocess_dataset("voxceleb", corpus, tmp_path / "out", PREP)
    with pytest.raises(PreprocessError, match="workers"):
        preprocess_dataset("corpus", corpus, tmp_path / "out", dataclasses.replace(PREP, workers=0))


def test_two_workers_write_the_same_files_as_one(corpus, prepared, tmp_path):
    summary = preprocess_dataset("corpus", corpus, tmp_path, dataclasses.replace(PREP, workers=2), splits=("train",))
    assert summary["splits"]["train"]["written"] == summary["splits"]["train"]["clips"] > 1
    for key in (tmp_path / "train.txt").read_text().split():
        with np.load(tmp_path / f"{key}.npz") as data:
            for name in KEYS:
                np.testing.assert_array_equal(data[name], prepared[key][name], err_msg=f"{key} {name}")
