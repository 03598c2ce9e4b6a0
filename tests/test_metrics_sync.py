"""Lip-sync scores (LSE-C/D) as syncnet_python computes them, and the landmark distances M/F-LMD."""
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opflowtalker.audio import mel_window
from opflowtalker.landmarks import LandmarkDetector
from opflowtalker.metrics import landmarks as mlm
from opflowtalker.metrics import sync
from opflowtalker.models.checkpoints import CheckpointError
from opflowtalker.models.syncnet import SyncNet

# ----------------------------------------------------------------------------- offset search


def test_sync_scores_find_audio_late_by_one_frame_with_hand_computed_distances():
    # Audio feature t+1 equals video feature t: the audio lags by one frame.
    video = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    audio = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # vshift 1: audio padded with one zero vector at each end.
    # shift -1: |v0-0|=1, |v1-a0|=|(-2,1)|=sqrt5, |v2-a1|=|(0,1)|=1   -> (2+sqrt5)/3
    # shift  0: |v0-a0|=1, |v1-a1|=sqrt2,          |v2-a2|=1         -> (2+sqrt2)/3
    # shift +1: |v0-a1|=0, |v1-a2|=0,              |v2-0|=sqrt2      -> sqrt2/3
    expected = np.array([(2 + math.sqrt(5)) / 3, (2 + math.sqrt(2)) / 3, math.sqrt(2) / 3])
    scores = sync.sync_scores(video, audio, vshift=1)
    assert scores.dists == pytest.approx(expected, abs=1e-5)
    assert scores.lse_d == pytest.approx(math.sqrt(2) / 3, abs=1e-5)
    assert scores.lse_c == pytest.approx(2 / 3, abs=1e-5)  # median (2+sqrt2)/3 minus the minimum
    assert scores.offset == -1  # syncnet_python: vshift - argmin = 1 - 2


def test_in_sync_features_give_offset_zero_and_zero_distance():
    video = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scores = sync.sync_scores(video, video.copy(), vshift=1)
    # shift -1: 1, sqrt2, 1; shift +1: sqrt2, 1, sqrt2.
    assert scores.dists == pytest.approx([(2 + math.sqrt(2)) / 3, 0.0, (1 + 2 * math.sqrt(2)) / 3], abs=1e-5)
    assert (scores.offset, scores.lse_d) == (0, pytest.approx(0.0, abs=1e-5))
    assert scores.lse_c == pytest.approx((2 + math.sqrt(2)) / 3, abs=1e-5)


def test_shifts_past_the_clip_compare_with_zero_vectors_over_31_offsets():
    rng = np.random.default_rng(0)
    video, audio = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    d = sync.offset_distances(video, audio)  # vshift 15
    assert d.shape == (4, 31)
    assert d[0, 0] == pytest.approx(np.linalg.norm(video[0]), abs=1e-5)  # audio frame -15 is padding
    assert d[2, 15 + 1] == pytest.approx(np.linalg.norm(video[2] - audio[3]), abs=1e-5)
    assert d[3, 15 + 1] == pytest.approx(np.linalg.norm(video[3]), abs=1e-5)  # audio frame 4 is padding
    assert sync.sync_scores(video, audio).dists.shape == (31,)


def test_mismatched_features_are_one_sentence_errors():
    with pytest.raises(sync.SyncError, match="one shape"):
        sync.sync_scores(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="vshift"):
        sync.sync_scores(np.zeros((3, 2)), np.zeros((3, 2)), vshift=-1)


# ----------------------------------------------------------------------------- our SyncNet


@pytest.fixture(scope="module")
def syncnet():
    torch.manual_seed(0)
    return SyncNet().eval()


def _clip(frames: int, seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, size=(frames, 96, 96, 3), dtype=np.uint8)
    mel = rng.uniform(-4, 4, size=(80, int(80 * seconds) + 1)).astype(np.float32)
    return faces, mel


def test_clip_features_are_windows_of_frames_t_to_t_plus_4_and_the_mel_of_frame_t(syncnet):
    faces, mel = _clip(frames=9, seconds=0.36)  # 9 frames of video and of audio -> 9 - 5 = 4 windows
    video, audio = sync.syncnet_features(syncnet, faces, mel, batch=3)  # batches of 3 and 1
    assert video.shape == audio.shape == (4, 512)
    t = 2
    window = np.concatenate([cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in faces[t : t + 5]], axis=2) / 255.0
    face_in = torch.from_numpy(window.transpose(2, 0, 1)[:, 48:]).float()[None]  # lower half, 15 channels
    mel_in = torch.from_numpy(mel_window(mel, t))[None, None]
    with torch.no_grad():
        audio_ref, video_ref = syncnet(mel_in, face_in)
    assert np.allclose(video[t], video_ref[0].numpy(), atol=1e-5)
    assert np.allclose(audio[t], audio_ref[0].numpy(), atol=1e-5)
    scores = sync.clip_sync_scores(syncnet, faces, mel)
    expected = sync.sync_scores(video, audio)
    assert scores.dists == pytest.approx(expected.dists, abs=1e-5) and scores.offset == expected.offset
    assert 0.0 <= scores.lse_d <= 2.0 + 1e-4  # unit vectors are at most 2 apart


def test_the_shorter_of_video_and_audio_sets_the_window_count_and_a_tiny_clip_is_refused(syncnet):
    faces, mel = _clip(frames=20, seconds=0.28)  # audio covers 7 frames -> 2 windows
    video, _ = sync.syncnet_features(syncnet, faces, mel)
    assert len(video) == 2
    faces, mel = _clip(frames=5, seconds=1.0)
    with pytest.raises(sync.SyncError, match="at least 6"):
        sync.clip_sync_scores(syncnet, faces, mel)
    with pytest.raises(sync.SyncError, match="uint8"):
        sync.clip_sync_scores(syncnet, faces.astype(np.float32), mel)


# ----------------------------------------------------------------------------- syncnet_python's model


def test_mfcc_frames_every_10ms_and_log_energy_of_an_impulse_by_hand():
    # 1 s at 16 kHz: 25 ms frames every 10 ms -> 1 + ceil((16000 - 400) / 160) = 99 frames.
    assert sync.speech_features_mfcc(np.ones(16000)).shape == (99, 13)
    impulse = np.zeros(1600)
    impulse[0] = 1.0
    ceps = sync.speech_features_mfcc(impulse)
    # Pre-emphasis turns the impulse into (1, -0.97): |X_k|^2 = 1.9409 - 1.94 cos(2 pi k / 512); summed over
    # the 257 one-sided bins the cosines cancel, and the power spectrum divides by 512.
    assert ceps[0, 0] == pytest.approx(math.log(257 * 1.9409 / 512), rel=1e-9)
    assert ceps[1, 0] == pytest.approx(math.log(np.finfo(float).eps))  # frame 1 holds no signal


def test_mfcc_filterbank_edges_by_hand():
    bank = sync.speech_features_filterbank()
    # Edges at mel 0, 105.19, 210.37 (of 2840.0 over 27 steps) -> 0, 68.5, 143.7 Hz -> bins 0, 2, 4 of 513/16000.
    assert bank.shape == (26, 257)
    assert bank[0, :6] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])


# Keys and shapes of syncnet_v2.model, read off syncnet_python's SyncNetModel.py (class S).
_CONV_LAYERS = {
    "netcnnaud": [(0, (64, 1, 3, 3)), (4, (192, 64, 3, 3)), (8, (384, 192, 3, 3)), (11, (256, 384, 3, 3)),
                  (14, (256, 256, 3, 3)), (18, (512, 256, 5, 4))],
    "netcnnlip": [(0, (96, 3, 5, 7, 7)), (4, (256, 96, 1, 5, 5)), (8, (256, 256, 1, 3, 3)),
                  (11, (256, 256, 1, 3, 3)), (14, (256, 256, 1, 3, 3)), (18, (512, 256, 1, 6, 6))],
}


def _reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}

    def norm(prefix: str, n: int):
        state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(n, generator=g)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(n, generator=g)
        state[f"{prefix}.running_mean"] = 0.1 * torch.randn(n, generator=g)
        state[f"{prefix}.running_var"] = 1 + torch.rand(n, generator=g)

    for net, layers in _CONV_LAYERS.items():
        for index, shape in layers:
            fan_in = math.prod(shape[1:])
            state[f"{net}.{index}.weight"] = torch.randn(*shape, generator=g) / math.sqrt(fan_in)
            state[f"{net}.{index}.bias"] = torch.zeros(shape[0])
            norm(f"{net}.{index + 1}", shape[0])
    for net in ("netfcaud", "netfclip"):
        state[f"{net}.0.weight"] = torch.randn(512, 512, generator=g) / math.sqrt(512)
        state[f"{net}.0.bias"] = torch.zeros(512)
        norm(f"{net}.1", 512)
        state[f"{net}.3.weight"] = torch.randn(1024, 512, generator=g) / math.sqrt(512)
        state[f"{net}.3.bias"] = torch.zeros(1024)
    return state


# syncnet_python's S layer by layer, from SyncNetModel.py: (index of the convolution, stride, padding)
# and, after the block's ReLU, a max pool (kernel, stride, padding) or None.
_AUDIO_BLOCKS = [(0, 1, 1, (1, 1, 0)), (4, 1, 1, (3, (1, 2), 0)), (8, 1, 1, None), (11, 1, 1, None),
                 (14, 1, 1, (3, 2, 0)), (18, 1, 0, None)]
_LIP_BLOCKS = [(0, (1, 2, 2), 0, ((1, 3, 3), (1, 2, 2), 0)), (4, (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
               (8, 1, (0, 1, 1), None), (11, 1, (0, 1, 1), None), (14, 1, (0, 1, 1), ((1, 3, 3), (1, 2, 2), 0)),
               (18, 1, 0, None)]


def _reference_hidden(state: dict[str, torch.Tensor], net: str, x: torch.Tensor) -> torch.Tensor:
    """One stream ("aud" or "lip") of S up to the input of its last linear layer, computed from the
    bare tensors with torch.nn.functional and batch norms on their running statistics, as S.eval()."""
    conv, pool = (F.conv2d, F.max_pool2d) if net == "aud" else (F.conv3d, F.max_pool3d)

    def norm(prefix: str, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(y, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5)

    for index, stride, padding, pooling in (_AUDIO_BLOCKS if net == "aud" else _LIP_BLOCKS):
        key = f"netcnn{net}.{index}"
        x = F.relu(norm(f"netcnn{net}.{index + 1}",
                        conv(x, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride, padding=padding)))
        if pooling is not None:
            x = pool(x, *pooling)
    x = x.flatten(1)
    return F.relu(norm(f"netfc{net}.1", F.linear(x, state[f"netfc{net}.0.weight"], state[f"netfc{net}.0.bias"])))


def test_a_syncnet_v2_state_dict_loads_strictly_and_finds_a_sound_three_frames_late(tmp_path):
    """A clip whose picture changes at frame 7 and whose sound bursts at frame 10, scored by a network
    in the syncnet_v2.model layout whose last layers are set so that the burst's audio features
    equal the change's video features and everything else maps to zero: the offset search must
    find video frame t matching audio frame t+3 (offset -3) at distance ~0, and every mean distance
    must equal one computed independently (inputs prepared by hand, the network run from the bare
    tensors, syncnet_python's pairwise distances with zero vectors past the clip's ends)."""
    state = _reference_state_dict()
    faces = np.full((21, 64, 64, 3), 128, np.uint8)  # 21 frames -> 16 windows
    faces[7] = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # in windows 3..7
    wav = np.zeros(21 * 640, np.float32)
    # Samples 6800..7036 lie in MFCC steps 40..43 only (25 ms frames every 10 ms), so in the audio
    # windows t whose steps 4t..4t+19 reach them: 6..10.
    wav[6800:7037] = 0.3 * np.random.default_rng(2).standard_normal(237)

    # The inputs as syncnet_python reads them: 224x224 BGR crops in 0..255, MFCCs of 16-bit samples.
    bgr = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR)[..., ::-1] for f in faces])
    clips = torch.from_numpy(bgr.astype(np.float32)).permute(3, 0, 1, 2)  # (3, T, 224, 224)
    mfcc = torch.from_numpy(sync.speech_features_mfcc(np.round(wav * 32768.0)).T.astype(np.float32))  # (13, M)
    with torch.no_grad():
        lip = _reference_hidden(state, "lip", torch.stack([clips[:, t : t + 5] for t in range(16)]))
        aud = _reference_hidden(state, "aud", torch.stack([mfcc[None, :, 4 * t : 4 * t + 20] for t in range(16)]))
    changed_video = (lip != lip[0]).any(dim=1).nonzero().flatten().tolist()
    changed_audio = (aud != aud[0]).any(dim=1).nonzero().flatten().tolist()
    assert (changed_video, changed_audio) == ([3, 4, 5, 6, 7], [6, 7, 8, 9, 10])

    # Last layers: video features minus those of a plain window; audio features solved so that audio
    # window t + 3 gives exactly the video features of window t.
    video = F.linear(lip, state["netfclip.3.weight"], state["netfclip.3.bias"])
    video = video - video[0]
    state["netfclip.3.bias"] = state["netfclip.3.bias"] - F.linear(lip[:1], state["netfclip.3.weight"],
                                                                   state["netfclip.3.bias"])[0]
    weight = (torch.linalg.pinv(aud[6:11].double() - aud[0].double()) @ video[3:8].double()).T.float()
    state["netfcaud.3.weight"], state["netfcaud.3.bias"] = weight, -(weight @ aud[0])
    audio = F.linear(aud, weight, -(weight @ aud[0]))
    assert torch.allclose(audio[6:11], video[3:8], atol=1e-3) and video[3:8].norm(dim=1).min() > 1.0

    path = tmp_path / "syncnet_v2.model"
    # The released file is a bare state dict in torch's pre-1.6 format, without batch-norm counters.
    torch.save(state, path, _use_new_zipfile_serialization=False)
    model = sync.load_syncnet_v2(path)
    assert not model.training
    assert torch.equal(model.state_dict()["netfcaud.3.weight"], state["netfcaud.3.weight"])
    scores = sync.clip_sync_scores_v2(model, faces, wav, batch=6)  # batches of 6, 6 and 4

    padded = torch.cat([torch.zeros(15, 1024), audio, torch.zeros(15, 1024)])
    # syncnet_python's calc_pdist and evaluate: pairwise distances per shift, their mean over the clip.
    dists = torch.stack([F.pairwise_distance(video, padded[k : k + 16]).mean() for k in range(31)]).double().numpy()
    assert np.sort(dists)[1] > 0.1 * np.sort(dists)[15]  # one clear minimum
    assert scores.dists == pytest.approx(dists, abs=1e-5 * dists.max())
    assert scores.offset == 15 - int(np.argmin(dists)) == -3  # video frame t is audio frame t + 3
    assert scores.lse_d == pytest.approx(dists.min(), abs=1e-5 * dists.max()) and scores.lse_d < 1e-5 * dists.max()
    assert scores.lse_c == pytest.approx(np.sort(dists)[15] - dists.min(), abs=1e-5 * dists.max())


def test_a_state_dict_of_another_network_is_refused_in_one_sentence(tmp_path):
    state = _reference_state_dict()
    del state["netfclip.3.bias"]
    path = tmp_path / "other.model"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"not a syncnet_python SyncNet .* missing key") as info:
        sync.load_syncnet_v2(path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- landmark distances


def test_lmd_by_hand_with_a_missing_frame_skipped():
    gt = np.zeros((3, 68, 2))
    pred = np.zeros((3, 68, 2))
    # Frame 0: mouth point 50 moved 68 px right; the mean moves 1 px, so after centring point 50 is 67 px
    # off and the 67 others 1 px: F = (67 + 67) / 68, M = (67 + 19) / 20 = 4.3.
    pred[0, 50] = (68.0, 0.0)
    pred[1] = gt[1] + (5.0, 3.0)  # frame 1: the same shape elsewhere in the crop -> 0
    pred[2, 7] = np.nan  # frame 2: a lost point in the prediction -> skipped
    result = mlm.lmd(pred, gt)
    assert result["m_lmd"] == pytest.approx(4.3 / 2)
    assert result["f_lmd"] == pytest.approx(134 / 68 / 2)
    assert (result["frames"], result["skipped"]) == (2, 1)


def test_lmd_of_a_non_mouth_point_touches_the_mouth_only_through_centring():
    gt = np.zeros((1, 68, 2))
    pred = np.zeros((1, 68, 2))
    pred[0, 10] = (0.0, 68.0)  # a jaw point: every mouth point is 1 px off after centring
    result = mlm.lmd(pred, gt)
    assert result["m_lmd"] == pytest.approx(1.0) and result["f_lmd"] == pytest.approx(134 / 68)


def test_lmd_of_nothing_comparable_is_nan_and_bad_shapes_are_refused():
    result = mlm.lmd(np.full((2, 68, 2), np.nan), np.zeros((2, 68, 2)))
    assert math.isnan(result["m_lmd"]) and (result["frames"], result["skipped"]) == (0, 2)
    with pytest.raises(mlm.LandmarkMetricError, match="different frames"):
        mlm.lmd(np.zeros((2, 68, 2)), np.zeros((3, 68, 2)))
    with pytest.raises(ValueError, match=r"\(T, 68, 2\)"):
        mlm.lmd(np.zeros((2, 5, 2)), np.zeros((2, 5, 2)))


@pytest.fixture(scope="module")
def hopper_crop(hopper_rgb):
    """A 96x96 crop of a real face and its full-resolution dlib landmarks mapped into it."""
    points = LandmarkDetector("dlib").detect(hopper_rgb)[0].landmarks.astype(np.float64)
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    side = 1.3 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = int(round(side))
    crop = cv2.resize(hopper_rgb[top : top + side, left : left + side], (96, 96), interpolation=cv2.INTER_AREA)
    return crop, (points - (left, top) + 0.5) * 96 / side - 0.5


def test_crop_landmarks_match_those_found_at_full_resolution(hopper_crop):
    crop, expected = hopper_crop
    found = mlm.detect_crop_landmarks(np.stack([crop, crop]))
    assert found.shape == (2, 68, 2) and found.dtype == np.float32
    result = mlm.lmd(found, np.stack([expected, expected]))
    assert result["f_lmd"] < 1.5 and result["m_lmd"] < 1.5  # pixels of the 96 px crop


def test_crop_landmarks_fall_back_to_the_whole_crop_and_follow_box_hints(hopper_crop):
    crop, expected = hopper_crop
    blank = np.full((1, 96, 96, 3), 128, np.uint8)  # no face for the detector to find
    fallback = mlm.detect_crop_landmarks(blank)
    assert np.isfinite(fallback).all() and (fallback > -10).all() and (fallback < 106).all()
    (x0, y0), (x1, y1) = expected.min(0), expected.max(0)
    hinted = mlm.detect_crop_landmarks(crop[None], boxes_hint=np.array([x0, y0, x1, y1]))
    assert mlm.lmd(hinted, expected[None])["f_lmd"] < 2.0
    with pytest.raises(mlm.LandmarkMetricError, match="boxes_hint"):
        mlm.detect_crop_landmarks(crop[None], boxes_hint=np.zeros((3, 4)))
