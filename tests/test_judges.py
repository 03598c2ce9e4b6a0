"""The judges: the sync judge finds a shift it is given, the lip reader's grammar decoding reads only
grammar sentences, the control rows are scored by the same function as the generators, and the
intervals say "no difference" when there is none."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from opflowtalker import evaluate, renditions
from opflowtalker.evaluate import EvalParams, evaluate_generator, evaluate_reference, Source
from opflowtalker.metrics.intervals import mean_interval, paired_interval, verdict
from opflowtalker.metrics.sync import clip_sync_scores_judge, shifted_mel
from opflowtalker.models.checkpoints import save_safetensors
from opflowtalker.models.ctc import grammar_decode
from opflowtalker.models.lipreader import LipReader, LipReaderConfig
from opflowtalker.models.sync_judge import SyncJudge, SyncJudgeConfig, load_sync_judge
from opflowtalker.params import from_params_yaml
from opflowtalker.renditions import CONTROLS, control_renditions
from opflowtalker.report import strips_of_clip
from opflowtalker.training.data import PreparedClip
from opflowtalker.training.sync_judge import _judge_clips, judge_batch, judge_loss
from opflowtalker.audio import mel_windows

torch.set_num_threads(1)

FPS = 25.0
SIZE = 96


def _face_landmarks() -> np.ndarray:
    """68 points of a frontal face in a 96-px crop: eyes at y 38, mouth around (48, 70)."""
    points = np.zeros((68, 2), np.float32)
    points[:, 0], points[:, 1] = np.linspace(20, 76, 68), 50.0
    points[36:48] = [(30 + 3 * i, 38) if i < 6 else (54 + 3 * (i - 6), 38) for i in range(12)]
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    points[48:68] = np.stack([48 + 12 * np.cos(angles), 70 + 5 * np.sin(angles)], axis=1)
    return points


def _talking_clip(rng: np.random.Generator, n_frames: int = 60, key: str = "c") -> PreparedClip:
    """A face whose mouth opens with the loudness of its audio: a dark ellipse whose height follows
    a random smooth loudness, and a mel spectrogram whose energy is that loudness (80 steps/s)."""
    loud = np.convolve(rng.random(n_frames + 8), np.ones(4) / 4, mode="same")[4: 4 + n_frames]
    loud = (loud - loud.min()) / (np.ptp(loud) + 1e-6)
    loud[rng.random(n_frames) < 0.25] = 0.0  # pauses
    steps = int(np.ceil(n_frames * 80 / FPS)) + 16
    per_step = loud[np.minimum((np.arange(steps) * FPS / 80).astype(int), n_frames - 1)]
    mel = (per_step[None] * np.linspace(1, 0.2, 80)[:, None] * 6 - 4 + 0.1 * rng.normal(size=(80, steps)))
    faces = np.full((n_frames, SIZE, SIZE, 3), 170, np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for t in range(n_frames):
        inside = ((xx - 48) / 12.0) ** 2 + ((yy - 70) / (1.0 + 6.0 * loud[t])) ** 2 <= 1
        faces[t][inside] = 40
    landmarks = np.repeat(_face_landmarks()[None], n_frames, axis=0)
    mel = mel.astype(np.float32)
    return PreparedClip(key, faces, mel_windows(mel, FPS, n_frames=n_frames), landmarks, FPS, mel)


TINY_JUDGE = SyncJudgeConfig(channels=(8, 16, 16), embedding_dim=32)


def test_the_sync_judge_finds_a_shift_it_is_given():
    rng = np.random.default_rng(0)
    clips = [_talking_clip(rng, key=f"c{i}") for i in range(6)]
    data = _judge_clips(clips, TINY_JUDGE)
    torch.manual_seed(0)
    judge = SyncJudge(TINY_JUDGE)
    optimizer = torch.optim.Adam(judge.parameters(), lr=3e-3)
    for step in range(120):
        batch = judge_batch(data, np.random.default_rng([0, step]), 16, max_offset=8, windows_per_clip=4)
        loss = judge_loss(judge, batch, temperature=0.1)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = _talking_clip(np.random.default_rng(99), key="test")
    real = clip_sync_scores_judge(judge, test.faces, test.landmarks, test.mel, FPS)
    moved = clip_sync_scores_judge(judge, test.faces, test.landmarks, shifted_mel(test.mel, 5, FPS), FPS)
    assert abs(real.offset) <= 1, real.offset
    assert abs(moved.offset + 5) <= 1, moved.offset  # audio delayed by 5 frames: video t matches audio t+5
    still = np.repeat(test.faces[:1], len(test.faces), axis=0)
    frozen = clip_sync_scores_judge(judge, still, test.landmarks, test.mel, FPS)
    assert real.lse_c > 3 * frozen.lse_c


def test_shifted_mel_delays_the_audio_by_whole_frames():
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
    moved = shifted_mel(mel, 5, FPS)
    assert moved.shape == mel.shape
    np.testing.assert_array_equal(moved[:, 16:], mel[:, :-16])  # 5 frames at 25 fps: 16 mel steps
    assert (moved[:, :16] == mel.min()).all()
    np.testing.assert_array_equal(shifted_mel(mel, -5, FPS)[:, :-16], mel[:, 16:])


def test_judge_crops_of_a_still_video_are_still_even_when_the_real_mouth_moves():
    from opflowtalker.models.sync_judge import judge_crops

    rng = np.random.default_rng(1)
    clip = _talking_clip(rng)
    moving = clip.landmarks.copy()
    moving[:, 48:68, 1] += np.linspace(0, 6, len(moving))[:, None]  # the jaw drops over the clip
    still = np.repeat(clip.faces[:1], len(clip.faces), axis=0)
    crops = judge_crops(still, moving, TINY_JUDGE)
    assert np.abs(np.diff(crops, axis=0)).max() == 0


def _tiny_reader() -> LipReader:
    from opflowtalker.corpus.sentences import SLOTS

    grammar = tuple(tuple(w.upper() for w in slot) for slot in SLOTS)
    return LipReader(LipReaderConfig(crop_height=16, crop_width=24, front_channels=4, channels=(8,), feature_dim=16,
                                     hidden=8, grammar=grammar)).eval()


def test_grammar_decoding_reads_one_word_of_each_slot_in_order():
    reader = _tiny_reader()
    config = reader.config
    log_probs = torch.log_softmax(torch.randn(3, 40, config.n_classes), dim=-1)
    for text in grammar_decode(log_probs, None, config):
        words = text.split()
        assert len(words) == 6 and all(w in slot for w, slot in zip(words, config.grammar))
    # A path that clearly says a grammar sentence is read as that sentence.
    sentence = ["SET", "RED", "AT", "B", "NINE", "SOON"]
    index = {t: i + 1 for i, t in enumerate(config.token_list)}
    frames = [0, index[sentence[0]], index[sentence[0]], 0]
    for word in sentence[1:]:
        frames += [index[word], index[word], 0]
    clear = torch.full((1, len(frames), config.n_classes), -20.0)
    clear[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    assert grammar_decode(clear, None, config) == [" ".join(sentence)]


def test_intervals_call_a_difference_a_win_only_when_it_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    lo, hi = mean_interval(base)
    assert lo < base.mean() < hi
    diff, lo, hi = paired_interval(base + 0.5, base)  # the same clips, every one better by 0.5
    assert diff == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    assert verdict(lo, hi, True, "a", "b") == "a" and verdict(lo, hi, False, "a", "b") == "b"
    noise = rng.normal(size=40)
    _, lo, hi = paired_interval(base + 0.01 * noise, base - 0.01 * noise + 0.0)
    assert verdict(lo, hi, True, "a", "b") == "no difference measured"


def test_control_rows_come_from_the_same_scoring_as_the_generator_rows(tmp_path, monkeypatch, hopper_rgb):
    """A generator that returns the real frames scores exactly what the ground-truth control does,
    every metric and every clip; the still-reference control scores otherwise."""
    import cv2

    rng = np.random.default_rng(3)
    face = cv2.resize(hopper_rgb[40:440, 60:460], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    clips = []
    for i in range(2):
        clip = _talking_clip(rng, n_frames=30, key=f"woman/{i:05d}")
        clip.faces = np.ascontiguousarray(np.where(clip.faces == 40, clip.faces, face[None]).astype(np.uint8))
        clips.append(clip)
    prepared = tmp_path / "prepared"
    for clip in clips:
        (prepared / clip.key).parent.mkdir(parents=True, exist_ok=True)
        n = len(clip.faces)
        np.savez(prepared / f"{clip.key}.npz", faces=clip.faces, mel=clip.mel, landmarks=clip.landmarks, fps=FPS,
                 flow=np.zeros((n - 1, SIZE, SIZE, 2), np.float16), valid=np.ones((n - 1, SIZE, SIZE), bool))
    (prepared / "test.txt").write_text("".join(c.key + "\n" for c in clips))
    judge_path, reader_path = tmp_path / "judge.safetensors", tmp_path / "reader.safetensors"
    torch.manual_seed(0)
    judge = SyncJudge(TINY_JUDGE).eval()
    from dataclasses import asdict
    save_safetensors(judge, judge_path, metadata={"model": "SyncJudge", "config": asdict(TINY_JUDGE)})
    reader = _tiny_reader()
    save_safetensors(reader, reader_path, metadata={"model": "LipReader", "config": asdict(reader.config)})
    assert load_sync_judge(judge_path).config == TINY_JUDGE

    scripts = ["BIN BLUE AT A ONE AGAIN", "SET RED BY B TWO NOW"]
    monkeypatch.setattr(evaluate, "_sources", lambda dataset, split: {
        c.key: Source(tmp_path / f"{i}.mp4", s, "voice") for i, (c, s) in enumerate(zip(clips, scripts))})
    import opflowtalker.metrics.speech as speech
    monkeypatch.setattr(speech, "transcribe", lambda video, grammar=None: scripts[int(video.stem)].lower())
    params = from_params_yaml(EvalParams, "evaluate", landmark_frame_step=5, fd_frame_step=10, strip_frames=2, strip_clips=2,
                              shift=5, threads=1)
    rows = evaluate_reference(prepared, {"kind": "corpus"}, judge_path, reader_path, tmp_path / "ref.npz", params)
    assert set(rows) == set(CONTROLS)

    monkeypatch.setattr(evaluate, "load_model_checkpoint", lambda path: torch.nn.Linear(1, 1))
    monkeypatch.setattr(renditions, "generate_clip", lambda model, clip, window, batch: clip.faces.copy())
    copy = evaluate_generator("copy", "copies the real video", "unused", prepared, tmp_path / "ref.npz", judge_path,
                              reader_path, params, frames_out=tmp_path / "frames.npz")
    # The strips of both kept clips come back, each its own clip's first frames.
    with np.load(tmp_path / "frames.npz") as kept:
        for i, clip in enumerate(clips):
            strip = strips_of_clip(kept, i)
            assert str(strip["clip"]) == clip.key and len(strip["generated"]) == 2
            np.testing.assert_array_equal(strip["generated"], clip.faces[:2])
    truth = rows["ground_truth"]
    for key, values in truth["per_clip"].items():
        if key == "keys" or isinstance(values[0], str):
            assert copy["per_clip"][key] == values, key
        else:
            np.testing.assert_allclose(copy["per_clip"][key], values, err_msg=key)
    assert copy["fd_face"] == pytest.approx(truth["fd_face"], abs=1e-6)
    still = rows["still_reference"]
    assert still["psnr"] < truth["psnr"] and still["per_clip"]["keys"] == truth["per_clip"]["keys"]
    # The temporal metrics are scored for the controls too: the talking truth changes under a
    # still flow, the still frame does not.
    assert truth["jitter"] > 0.1 and still["jitter"] < 1e-3
    # So does the lip flow error: DIS finds the motion of the talking frames, which the still flow
    # lacks, and none in the still frame.
    assert truth["flow_error"] > 0.02 and still["flow_error"] < 1e-3
    assert rows["wrong_audio"]["per_clip"]["speech"] == [s.lower() for s in scripts[::-1]]
    assert rows["shifted_audio"]["expected_offset"] == -5
    # The controls are renditions of the clips, nothing typed: the still one is one frame repeated.
    shown = control_renditions("still_reference", clips, scripts, params.window, params.shift)
    assert all((r.frames == r.frames[0]).all() for r in shown)
