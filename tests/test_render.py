"""Claims about the embedded talking-face corpus renderer.

Each claim is checked on every portrait that ships with the repository, driven by a
hand-written phone sequence for the GRID-style sentence "bin blue at f two now".
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from opflowtalker.corpus.quality import dlib_lip_gaps, warp_residuals
from opflowtalker.corpus.render import RenderConfig, build_rig, load_portrait, render
from opflowtalker.corpus.viseme import BILABIALS, frame_times, viseme_tracks

FACES = Path(__file__).resolve().parents[1] / "data" / "external" / "faces"
IDENTITIES = ["hopper", "goatee", "woman", "glasses"]

_DURATIONS = [("sil", 0.30), ("b", 0.07), ("ih", 0.09), ("n", 0.07), ("b", 0.07), ("l", 0.06), ("uw", 0.16),
              ("ae", 0.11), ("t", 0.07), ("eh", 0.09), ("f", 0.10), ("t", 0.07), ("uw", 0.15), ("n", 0.07),
              ("aw", 0.22), ("sil", 0.60)]


def _phones():
    out, t = [], 0.0
    for p, d in _DURATIONS:
        out.append((p, round(t, 3), round(t + d, 3)))
        t += d
    return out


PHONES = _phones()
DURATION = PHONES[-1][2]
N_FRAMES = int(round(DURATION * 25))
SPEECH_END = PHONES[-2][2]


@pytest.fixture(scope="module")
def tracks():
    return viseme_tracks(PHONES, N_FRAMES)


@pytest.fixture(scope="module")
def portraits():
    return {name: load_portrait(str(FACES / f"{name}.png")) for name in IDENTITIES}


@pytest.fixture(scope="module")
def clips96(portraits, tracks):
    return {name: render(build_rig(p, RenderConfig(size=96)), tracks, seed=7) for name, p in portraits.items()}


@pytest.fixture(scope="module")
def clips128(portraits, tracks):
    return {name: render(build_rig(p, RenderConfig(size=128)), tracks, seed=3) for name, p in portraits.items()}


@pytest.mark.parametrize("name", IDENTITIES)
def test_stored_flow_warps_next_frame_onto_current(clips96, name):
    clip = clips96[name]
    assert clip.valid.mean() > 0.9  # the mask removes the mouth interior, not the face
    # On pixels moving at least 0.25 px; on barely moving ones uint8 rounding and bilinear
    # resampling set a floor that no flow can get under (see warp_residuals).
    ratio, _, grey = warp_residuals(clip.frames, clip.flow, clip.valid, min_motion=0.25)
    assert ratio <= 0.25
    assert grey < 1.0


@pytest.mark.parametrize("name", IDENTITIES)
def test_flow_carries_landmarks(clips96, name):
    clip = clips96[name]
    # Inner lips sit on the painted rim and closing eyelids squeeze the field within a
    # pixel, where a bilinear read of the flow is not the flow at the point.
    skip = set(range(60, 68)) | {37, 38, 40, 41, 43, 44, 46, 47}
    keep = [i for i in range(68) if i not in skip]
    S = clip.frames.shape[1]
    for t in range(clip.flow.shape[0]):
        p = clip.landmarks[t, keep]
        inside = np.all((p >= 1) & (p <= S - 2), axis=1)
        p = p[inside]
        f = np.stack([cv2.remap(clip.flow[t, ..., c], p[:, 0:1], p[:, 1:2], cv2.INTER_LINEAR)[:, 0] for c in (0, 1)], 1)
        np.testing.assert_allclose(p + f, clip.landmarks[t + 1, keep][inside], atol=0.15)


@pytest.fixture(scope="module")
def dlib_on_frames(clips128):
    """dlib's lip gap on every rendered frame where it finds a face, next to the rendered
    opening, per identity."""
    out = {}
    for name, clip in clips128.items():
        gaps = dlib_lip_gaps(clip.frames)
        found = ~np.isnan(gaps)
        out[name] = (gaps[found], clip.mouth_open[found], len(clip.frames))
    return out


def test_dlib_finds_the_face_in_99_percent_of_frames(dlib_on_frames):
    found = sum(len(m) for m, _, _ in dlib_on_frames.values())
    total = sum(n for _, _, n in dlib_on_frames.values())
    assert found >= 0.99 * total


def test_dlib_lip_gap_tracks_the_opening_and_only_compression_lowers_it_under_the_goatee(dlib_on_frames):
    """dlib's inner-lip gap follows the rendered opening on every face (r >= 0.9) but the goatee's.
    There dlib places the inner lips on the beard line and measures about 0.43 of the opening's
    swing (over 0.7 elsewhere) while scattering about its fit no more than on the other faces
    (0.55 px against 0.62-1.03), so r is lower by the compression alone: with the others'
    smallest slope, its scatter would still give r >= 0.9."""
    fits = {}
    for name, (measured, rendered, _) in dlib_on_frames.items():
        slope, intercept = np.polyfit(rendered, measured, 1)
        scatter = float(np.std(measured - (slope * rendered + intercept)))
        fits[name] = slope, scatter, np.corrcoef(measured, rendered)[0, 1], float(np.std(rendered))
    others = {name: fit for name, fit in fits.items() if name != "goatee"}
    for name, (slope, _, r, _) in others.items():
        assert slope > 0.7 and r >= 0.9, name
    slope, scatter, r, spread = fits["goatee"]
    assert slope < 0.5 and scatter <= min(fit[1] for fit in others.values())
    assert r >= 0.85
    uncompressed = min(fit[0] for fit in others.values()) * spread
    assert uncompressed / np.hypot(uncompressed, scatter) >= 0.9


def _bilabial_frames():
    t = frame_times(N_FRAMES)
    return [int(np.argmin(np.abs(t - 0.5 * (s + e)))) for p, s, e in PHONES if p in BILABIALS]


@pytest.mark.parametrize("name", IDENTITIES)
def test_lips_close_on_bilabials(clips96, name):
    clip = clips96[name]
    rest = clip.mouth_open[0]
    for f in _bilabial_frames():
        assert not clip.interior[f].any()  # nothing painted: no opening at all
        assert clip.mouth_open[f] <= rest + 0.05  # pressed lips may close even a rest gap
    assert clip.mouth_open.max() > rest + 3.0  # and the mouth does open in between


def test_tracks_reach_closure_and_rest(tracks):
    for f in _bilabial_frames():
        assert tracks["closure"][f] == 1.0 and tracks["jaw"][f] == 0.0 and tracks["lift"][f] == 0.0
    t = frame_times(N_FRAMES)
    quiet = t > SPEECH_END + 0.15
    assert quiet.sum() >= 8
    for name, v in tracks.items():
        assert np.all(v[quiet] == 0.0), name


def test_mouth_is_still_during_silence(portraits, tracks):
    still = RenderConfig(size=96, head_rot_deg=0.0, head_shift=0.0, head_scale=0.0, blink_rate=0.0)
    clip = render(build_rig(portraits["hopper"], still), tracks, seed=0)
    quiet = np.nonzero(frame_times(N_FRAMES) > SPEECH_END + 0.15)[0]
    for f in quiet[1:]:
        assert np.array_equal(clip.frames[f], clip.frames[quiet[0]])
        assert np.array_equal(clip.landmarks[f], clip.landmarks[quiet[0]])


def test_same_seed_same_bytes(portraits, tracks):
    rig = build_rig(portraits["glasses"], RenderConfig(size=96))
    a, b, c = render(rig, tracks, seed=11), render(rig, tracks, seed=11), render(rig, tracks, seed=12)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.flow.tobytes() == b.flow.tobytes() and np.array_equal(a.valid, b.valid)
    assert a.frames.tobytes() != c.frames.tobytes()


@pytest.mark.parametrize("name", IDENTITIES)
def test_eyes_blink(portraits, tracks, name):
    rig = build_rig(portraits[name], RenderConfig(size=96, blink_rate=1.0))
    lm = render(rig, tracks, seed=5).landmarks
    lid = 0.5 * (np.linalg.norm(lm[:, 37] - lm[:, 41], axis=1) + np.linalg.norm(lm[:, 44] - lm[:, 46], axis=1))
    assert lid.min() < 0.35 * lid.max()
