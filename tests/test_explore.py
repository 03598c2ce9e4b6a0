"""The explorer's views: a held-out clip with its exact landmarks and flow, a generator's version of
it, one frame of both with their motion, the lip dynamics over time, and a typed sentence said."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from opflowtalker import explore  # noqa: E402
from opflowtalker.landmarks import MOUTH, lip_gap  # noqa: E402
from opflowtalker.models.checkpoints import save_safetensors  # noqa: E402
from opflowtalker.models.opflowtalker import OpFlowTalker, OpFlowTalkerConfig  # noqa: E402
from opflowtalker.viz import draw_landmarks, flow_to_color  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from opflowtalker.corpus.build import CorpusParams, build_corpus
    from opflowtalker.params import from_params_yaml
    from opflowtalker.preprocess import PreprocessParams, preprocess_dataset

    root = tmp_path_factory.mktemp("explore")
    build_corpus(root / "corpus", from_params_yaml(CorpusParams, "corpus", n_sentences=24, size=96, workers=2,
                                                   faces=str(ROOT / "data" / "external" / "faces")))
    preprocess_dataset("corpus", root / "corpus", root / "prepared", splits=("test",),
                       params=from_params_yaml(PreprocessParams, "preprocess", size=96, workers=1))
    torch.manual_seed(0)
    models = root / "generators"
    save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.0625)), models / "full.safetensors")
    save_safetensors(OpFlowTalker(OpFlowTalkerConfig(width=0.0625, explicit_motion=True)), models / "full_motion.safetensors")
    return root


@pytest.fixture(scope="module")
def clip(study):
    key = explore.test_keys(study / "prepared")[0]
    return explore.load_clip(study / "prepared", key, study / "corpus")


@pytest.fixture(scope="module")
def generated(study, clip):
    found = explore.find_generators(study / "generators")
    return [explore.generate_on_clip(found[name], clip) for name in ("full", "full_motion")]


def test_a_clip_comes_with_its_exact_landmarks_flow_speech_and_script(study, clip):
    from opflowtalker.corpus.sentences import Sentence

    n = len(clip)
    assert clip.faces.shape == (n, 96, 96, 3) and clip.landmarks.shape == (n, 68, 2)
    assert clip.flow.shape == (n - 1, 96, 96, 2) and clip.mels.shape == (n, 80, 16)
    assert Sentence.from_text(clip.script).text == clip.script and clip.voice
    assert abs(len(clip.wav) / explore.SAMPLE_RATE - n / clip.fps) < 0.1
    with pytest.raises(explore.ExploreError, match="no clip 'nobody/0'"):
        explore.load_clip(study / "prepared", "nobody/0", study / "corpus")
    with pytest.raises(explore.ExploreError, match="preprocess"):
        explore.test_keys(study / "nowhere")


def test_a_generator_regenerates_the_clip_with_its_video_flow_and_its_own_motion_field(study, clip, generated):
    plain, motion = generated
    for g in generated:
        assert g.frames.shape == clip.faces.shape and g.flow.shape == clip.flow.shape
    assert plain.motion is None and motion.motion.shape == (len(clip), 96, 96, 2)
    assert list(explore.find_generators(study / "generators")) == ["full", "full_motion"]
    again = explore.generate_on_clip(study / "generators" / "full.safetensors", clip)
    assert np.array_equal(again.frames, plain.frames)
    with pytest.raises(explore.ExploreError, match="no generator"):
        explore.generate_on_clip(study / "generators" / "none.safetensors", clip)


def test_a_frame_view_shows_the_real_frame_with_its_mouth_and_the_true_flow_on_a_shared_scale(clip, generated):
    t = len(clip) // 2
    fig = explore.frame_view(clip, generated, t)
    axes = np.array(fig.axes).reshape(3, 3)
    assert np.array_equal(axes[0, 0].images[0].get_array(), draw_landmarks(clip.faces[t], clip.landmarks[t][MOUTH]))
    assert np.array_equal(axes[0, 1].images[0].get_array(), generated[0].frames[t])
    scale = max(np.linalg.norm(f, axis=-1).max() for f in (clip.flow[t], generated[0].flow[t], generated[1].flow[t]))
    assert np.array_equal(axes[1, 0].images[0].get_array(), flow_to_color(clip.flow[t], max_norm=scale))
    # Only the generator that predicts a motion field has a third-row panel.
    assert not axes[2, 1].get_visible() and axes[2, 2].get_visible()
    plt.close(fig)
    two_rows = explore.frame_view(clip, generated[:1], len(clip) - 1)  # the last frame shows the motion into it
    assert len(two_rows.axes) == 4
    plt.close(two_rows)
    with pytest.raises(explore.ExploreError, match="outside"):
        explore.frame_view(clip, generated, len(clip))


def test_the_dynamics_follow_the_real_lips_and_mark_the_silence_around_the_speech(clip, generated):
    table = explore.dynamics(clip, generated[:1])
    assert len(table) == len(clip)
    assert np.allclose(table["lip gap (px) real"], lip_gap(clip.landmarks))
    # The corpus pads 0.2 s of digital silence before and after the speech.
    assert table["silent"].iloc[0] and table["silent"].iloc[-1] and not table["silent"].all()
    assert table["lip gap (px) real"][table["silent"]].mean() < table["lip gap (px) real"][~table["silent"]].mean()
    # The mouth's exact flow is large where the lips open or close and small where they rest.
    moving = np.abs(np.diff(table["lip gap (px) real"].to_numpy()))
    flow = table["mouth flow (px) real"].to_numpy()[:-1]
    assert np.corrcoef(moving, flow)[0, 1] > 0.3
    assert {"lip gap (px) full", "mouth flow (px) full"} <= set(table.columns)
    fig = explore.dynamics_view(table, t=5, fps=clip.fps)
    assert len(fig.axes) == 3
    assert fig.axes[0].lines[-1].get_xdata()[0] == pytest.approx(5 / clip.fps)  # the cursor
    assert len(fig.axes[2].patches) == len(explore.silent_stretches(table["silent"]))
    plt.close(fig)


def test_silent_stretches_are_runs_of_silent_frames():
    assert explore.silent_stretches([1, 1, 0, 0, 1, 0, 1, 1, 1]) == [(0, 2), (4, 5), (6, 9)]
    assert explore.silent_stretches([0, 0]) == []


def test_a_typed_sentence_is_said_by_a_generator_on_a_photo(study, tmp_path):
    from opflowtalker.video import probe

    checkpoint = study / "generators" / "full.safetensors"
    photo = ROOT / "data" / "external" / "faces" / "hopper.png"
    said = explore.say("Place BLUE with y five please", "piper-joe", photo, checkpoint, tmp_path / "said.mp4")
    assert said["sentence"] == "place blue with y five please" and said["video"].is_file()
    speech_seconds = len(explore.load_wav(said["speech"], explore.SAMPLE_RATE)) / explore.SAMPLE_RATE
    assert abs(probe(said["video"]).duration - speech_seconds) < 0.15
    video, wav, gaps = explore.generated_from_video(said["video"], "full")
    assert len(video.frames) == len(gaps) and np.isfinite(gaps).mean() > 0.9  # the face is found on the frames
    assert len(wav) / explore.SAMPLE_RATE == pytest.approx(speech_seconds, abs=0.15)
    # One's own speech file instead of a sentence.
    own = explore.say("", "", photo, checkpoint, tmp_path / "own.mp4", speech=said["speech"])
    assert own["sentence"] is None and own["video"].is_file()
    with pytest.raises(explore.ExploreError, match="not a GRID sentence"):
        explore.say("hello there", "piper-joe", photo, checkpoint, tmp_path / "x.mp4")
    with pytest.raises(explore.ExploreError, match="face file not found"):
        explore.say("place blue with y five please", "piper-joe", tmp_path / "nobody.png", checkpoint, tmp_path / "x.mp4")
    with pytest.raises(explore.ExploreError, match="unknown voice"):
        explore.say("place blue with y five please", "nobody", photo, checkpoint, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.skipif(__import__("opflowtalker.browser", fromlist=["x"]).find_chromium() is None,
                    reason="headless Chromium is not installed")
def test_the_explorer_runs_in_jupyterlab_with_its_widgets_and_figures(study, tmp_path):
    from PIL import Image

    from opflowtalker.browser import run_in_jupyterlab
    from opflowtalker.notebooks import parameterized_copy

    notebook = parameterized_copy(ROOT / "notebooks" / "explore.ipynb", tmp_path / "lab" / "explore.ipynb", {
        "prepared": str(study / "prepared"), "corpus": str(study / "corpus"),
        "generators_dir": str(study / "generators"), "generator_a": "full", "generator_b": "full_motion",
        "photo": str(ROOT / "data" / "external" / "faces" / "hopper.png"), "interactive": True})
    page = run_in_jupyterlab(notebook, tmp_path / "explorer.png")
    # The clip, two generators and the voice to choose; the frame slider; play, pause, repeat and
    # "say it"; the frame view and the dynamics drawn by the kernel into the widgets' outputs.
    assert page["dropdowns"] == 4 and page["sliders"] == 1 and page["buttons"] >= 4
    assert page["figures"] == 2 and page["errors"] == 0
    with Image.open(tmp_path / "explorer.png") as shot:
        assert shot.width > 800 and shot.height > 1000
        assert np.asarray(shot.convert("L")).std() > 20  # not a blank page
