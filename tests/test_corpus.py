"""The embedded corpus: LRS2-like clips of real faces saying held-out-able sentences, with exact
landmarks and flow, and mouths that move with the speech."""
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from opflowtalker.audio import load_wav
from opflowtalker.corpus.build import CorpusParams, build_corpus, plan_corpus, speak_and_render
from opflowtalker.corpus.quality import warp_residuals
from opflowtalker.corpus.sentences import Sentence, split_of
from opflowtalker.corpus.speech import BILABIALS
from opflowtalker.datasets import read_dataset
from opflowtalker.params import from_params_yaml
from opflowtalker.video import probe, read_video

ROOT = Path(__file__).resolve().parents[1]
PARAMS = from_params_yaml(CorpusParams, "corpus", n_sentences=24, size=96, faces=str(ROOT / "data" / "external" / "faces"),
                          workers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(root, PARAMS)
    return root


def clips(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.json"))


def test_layout_is_lrs2_like_and_read_by_the_dataset_reader(corpus):
    listed = {split: read_dataset("corpus", corpus, split) for split in ("train", "val", "test")}
    assert sum(map(len, listed.values())) == PARAMS.n_sentences
    for split, items in listed.items():
        for clip in items:
            assert clip.video == corpus / clip.speaker / f"{clip.name}.mp4"
            assert clip.transcript == json.loads(clip.video.with_suffix(".json").read_text())["sentence"].upper()


def test_test_clips_are_held_out_sentences_on_the_held_out_face(corpus):
    test = read_dataset("corpus", corpus, "test")
    train = read_dataset("corpus", corpus, "train") + read_dataset("corpus", corpus, "val")
    assert test and {c.speaker for c in test} == {PARAMS.test_identity}
    assert PARAMS.test_identity not in {c.speaker for c in train}
    assert not {c.transcript for c in test} & {c.transcript for c in train}
    # The split is a property of the sentence, so no corpus size can leak a test sentence.
    assert all(split_of(Sentence.from_text(c.transcript.lower())) == "test" for c in test)


def test_every_clip_has_video_audio_transcript_phones_landmarks_and_flow(corpus):
    for meta_path in clips(corpus):
        meta = json.loads(meta_path.read_text())
        info = probe(meta_path.with_suffix(".mp4"))
        assert (info.fps, info.width, info.height, info.audio_codec) == (25.0, 96, 96, "aac")
        frames, _ = read_video(meta_path.with_suffix(".mp4"))
        data = np.load(meta_path.with_suffix(".npz"))
        t = len(frames)
        assert t == meta["n_frames"]
        assert data["landmarks"].shape == (t, 68, 2)
        assert data["flow"].shape == (t - 1, 96, 96, 2) and data["flow"].dtype == np.float16
        assert data["valid"].shape == (t - 1, 96, 96) and data["valid"].dtype == bool
        assert 0.9 < data["valid"].mean() <= 1.0  # only the mouth interior and edges are invalid
        phones = meta["phones"]
        assert phones[0][1] == 0 and all(a[2] == b[1] for a, b in zip(phones, phones[1:]))
        assert abs(phones[-1][2] - t / 25) < 0.05


def test_mouth_opening_follows_the_speech_envelope(corpus):
    """The rendered lip gap against the RMS of the audio in each frame's 40 ms. Over whole clips
    (pauses included) r is 0.5-0.85; inside the speech alone it is lower (0.2-0.75: loudness is
    not openness, "m" is loud and closed) but well above a mismatched pairing of one clip's
    audio with another clip's mouth, which is near 0."""
    whole, speech = [], []
    for meta_path in clips(corpus):
        phones = [p for p in json.loads(meta_path.read_text())["phones"] if p[0] != "sil"]
        wav = load_wav(meta_path.with_suffix(".mp4"))
        gap = np.load(meta_path.with_suffix(".npz"))["mouth_open"]
        env = np.array([np.sqrt(np.mean(wav[i * 640:(i + 1) * 640] ** 2)) for i in range(len(gap))])
        whole.append(np.corrcoef(env, gap)[0, 1])
        a, b = int(phones[0][1] * 25), int(np.ceil(phones[-1][2] * 25))
        speech.append((env[a:b], gap[a:b]))
    assert min(whole) >= 0.4 and np.mean(whole) >= 0.6
    matched = [np.corrcoef(e, g)[0, 1] for e, g in speech]
    mismatched = []
    for (env, _), (_, gap) in zip(speech, speech[1:] + speech[:1]):
        n = min(len(env), len(gap))
        mismatched.append(np.corrcoef(env[:n], gap[:n])[0, 1])
    assert np.mean(matched) >= 0.4
    assert np.mean(matched) - np.mean(mismatched) >= 0.3


def test_lips_close_on_p_b_m(corpus):
    for meta_path in clips(corpus):
        phones = json.loads(meta_path.read_text())["phones"]
        gap = np.load(meta_path.with_suffix(".npz"))["mouth_open"]
        rest = gap[0]
        for phone, start, end in phones:
            if phone in BILABIALS:
                frame = min(int(0.5 * (start + end) * 25), len(gap) - 1)
                window = gap[max(0, frame - 1): frame + 2]
                assert window.min() <= rest + 0.1, (meta_path.stem, phone, start)


@pytest.mark.parametrize("identity", ["hopper", "goatee", "woman", "glasses"])
def test_stored_flow_explains_the_frames_of_real_sentences(identity):
    """At the study's size and on synthesised sentences: outside the validity mask, warping frame
    t+1 back with the flow leaves at most a quarter of the unwarped residual on pixels moving
    0.25 px or more (on barely moving pixels uint8 rounding sets the floor; see warp_residuals).
    Measured on the rendered frames: the stored H.264 adds its own small noise on top."""
    params = dataclasses.replace(PARAMS, size=from_params_yaml(CorpusParams, "corpus").size)
    spec = next(s for s in plan_corpus(dataclasses.replace(params, n_sentences=60)) if s.identity == identity)
    video = speak_and_render(spec, params).video
    ratio_moving, ratio_valid, _ = warp_residuals(video.frames, video.flow, video.valid)
    assert ratio_moving <= 0.25
    assert ratio_valid <= 0.5


def test_same_parameters_same_corpus_byte_for_byte(corpus, tmp_path):
    again = tmp_path / "again"
    build_corpus(again, PARAMS)

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(again) == digest(corpus)


def test_plan_uses_the_parameters_and_rejects_an_unknown_test_identity():
    specs = plan_corpus(PARAMS)
    assert len(specs) == PARAMS.n_sentences
    assert all(s.voice in PARAMS.identities[s.identity] for s in specs)
    with pytest.raises(ValueError, match="test identity"):
        plan_corpus(from_params_yaml(CorpusParams, "corpus", test_identity="nobody"))


def test_any_folder_of_portraits_makes_a_corpus(tmp_path):
    """A user's own photos, named <identity>.<png|jpg>, are identities like the packaged ones."""
    from PIL import Image

    faces = tmp_path / "faces"
    faces.mkdir()
    Image.open(ROOT / "data" / "external" / "faces" / "woman.png").save(faces / "ada.jpg")
    Image.open(ROOT / "data" / "external" / "faces" / "goatee.png").save(faces / "bob.png")
    params = from_params_yaml(CorpusParams, "corpus", n_sentences=40, size=96, faces=str(faces), workers=1,
                              identities={"ada": ["espeak-us-female"], "bob": ["espeak-us-male"]}, test_identity="bob")
    spec = next(s for s in plan_corpus(params) if s.identity == "ada")
    video = speak_and_render(spec, params).video
    assert video.frames.shape[1:] == (96, 96, 3)
    # An identity without a photo: planning alone needs none, building says which file is missing.
    photoless = dataclasses.replace(params, identities={**params.identities, "cy": ["piper-joe"]})
    assert any(s.identity == "cy" for s in plan_corpus(photoless))
    with pytest.raises(FileNotFoundError, match="no portrait for this identity") as info:
        build_corpus(tmp_path / "out", photoless)
    assert info.value.filename == str(faces / "cy.png")


def test_the_quality_stage_measures_the_stored_clips_and_the_chapter_reads_it(corpus, tmp_path):
    import json

    from opflowtalker.cli import main
    from opflowtalker.report.corpus import (corpus_sentence, framing_table, limitation_bullets, quality_frames,
                                            quality_sentences, split_sentence)

    out = tmp_path / "quality.json"
    assert main(["corpus-quality", "--corpus", str(corpus), "--out", str(out)]) == 0
    quality = json.loads(out.read_text())
    test = [c for c in clips(corpus) if json.loads(c.with_suffix(".json").read_text())["split"] == "test"]
    assert len(quality["clips"]) == 2 * len(test) and quality["size"] == PARAMS.size
    for row in quality["clips"]:
        assert row["warp ratio, moving px"] < 0.5  # the stored flow explains most of the change
        assert row["warp ratio, moving px, H.264"] > row["warp ratio, moving px"]  # compression adds what no flow explains
        assert row["dlib finds face"] > 0.9 and row["dlib gap vs rendered (r)"] > 0.5
    assert set(quality["framing"]) == set(PARAMS.identities)
    assert all(f["gap at p, b, m (median px)"] < f["widest gap (median px)"] for f in quality["framing"].values())

    meta = {f"{c.parent.name}/{c.stem}": json.loads(c.with_suffix(".json").read_text()) for c in clips(corpus)}
    rows, summary = quality_frames(quality)
    assert list(summary.columns) == sorted({r["identity"] for r in quality["clips"]}) + ["all"]
    text = quality_sentences(quality)
    assert "the flow removes most of it" in text and "higher than on the rendered frames" in text
    assert split_sentence(meta).endswith("(the test split holds out both).")
    assert corpus_sentence(meta).startswith(f"{len(PARAMS.identities)} photographs, one identity each; {len(meta)} clips")
    bullets = limitation_bullets(quality, meta)
    assert bullets.count("\n* ") == 5 and framing_table(quality).index.tolist() == sorted(PARAMS.identities)


def test_the_quality_stage_refuses_a_folder_without_a_corpus_in_one_line(tmp_path, capsys):
    from opflowtalker.cli import main

    assert main(["corpus-quality", "--corpus", str(tmp_path), "--out", str(tmp_path / "q.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no corpus at" in err[0] and not (tmp_path / "q.json").exists()
    assert main(["corpus-quality", "--corpus", str(tmp_path), "--min-motion", "-1", "--out", str(tmp_path / "q.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-motion takes a distance" in err[0] and not (tmp_path / "q.json").exists()
