"""The lip-reading corpus: more training sentences as mouth crops, made exactly as the corpus's are."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from opflowtalker.assets import LIPREADING_PORTRAITS
from opflowtalker.corpus.build import CorpusParams, plan_corpus, render_corpus_clip
from opflowtalker.corpus.lipreading import (CropSettings, LipReadingCorpusError, LipReadingCorpusParams,
                                            build_lipreading_corpus, lipreading_crops, plan_lipreading,
                                            read_lipreading_corpus)
from opflowtalker.corpus.sentences import Sentence, split_of
from opflowtalker.datasets import Clip
from opflowtalker.models.lipreader import LipReaderConfig, lip_inputs
from opflowtalker.models.mouths import mouth_crops
from opflowtalker.params import from_params_yaml
from opflowtalker.preprocess import PreprocessParams, preprocess_clip
from opflowtalker.training.lipreader import train_lipreader

from test_lipreader import tiny_train_params, write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
CORPUS = from_params_yaml(CorpusParams, "corpus", n_sentences=24, size=96, faces=str(ROOT / "data" / "external" / "faces"),
                          workers=1)
CROP = CropSettings(face_size=96, crop_height=32, crop_width=48)


def lipreading_params(**overrides) -> LipReadingCorpusParams:
    """params.yaml's ``lipreading_corpus`` without its further faces (the corpus's training faces only)."""
    return from_params_yaml(LipReadingCorpusParams, "lipreading_corpus", **{"identities": {}, **overrides})


EXTERNAL = ROOT / "data" / "external"
EXTRA = lipreading_params(n_sentences=200, seed=3, faces=str(EXTERNAL / "lipreading_faces"),
                          identities={"astronaut": ["espeak-us-female"], "smiler": ["piper-joe", "espeak-rp-male"]})


def test_plan_says_unseen_training_sentences_with_training_identities_only():
    specs = plan_lipreading(CORPUS, lipreading_params(n_sentences=200, seed=3))
    corpus_sentences = {spec.sentence for spec in plan_corpus(CORPUS)}
    texts = [spec.sentence for spec in specs]
    assert 100 < len(specs) < 200  # a tenth each of val and test sentences is dropped
    assert len(set(texts)) == len(texts) and not set(texts) & corpus_sentences
    assert all(split_of(Sentence.from_text(t)) == "train" for t in texts)
    assert {spec.identity for spec in specs} == set(CORPUS.identities) - {CORPUS.test_identity}
    assert all(spec.voice in CORPUS.identities[spec.identity] for spec in specs)
    assert plan_lipreading(CORPUS, lipreading_params(n_sentences=200, seed=3)) == specs
    assert plan_lipreading(CORPUS, lipreading_params(n_sentences=0)) == []


def test_further_faces_join_the_training_identities_but_the_held_out_face_cannot():
    specs = plan_lipreading(CORPUS, EXTRA)
    assert {spec.identity for spec in specs} == set(CORPUS.identities) - {CORPUS.test_identity} | set(EXTRA.identities)
    assert all(spec.voice in EXTRA.identities[spec.identity] for spec in specs if spec.identity in EXTRA.identities)
    with pytest.raises(LipReadingCorpusError, match="held-out identity"):
        plan_lipreading(CORPUS, dataclasses.replace(EXTRA, identities={CORPUS.test_identity: ["espeak-gb-female"]}))
    with pytest.raises(LipReadingCorpusError, match="at least one voice"):
        dataclasses.replace(EXTRA, identities={"smiler": []})


@pytest.mark.parametrize("identity", [p.identity for p in LIPREADING_PORTRAITS])
def test_every_further_portrait_is_a_face_whose_lips_move_when_it_speaks(identity):
    params = dataclasses.replace(EXTRA, identities={identity: ["espeak-us-male"]})
    spec = next(s for s in plan_lipreading(CORPUS, params) if s.identity == identity)
    crops, shapes = lipreading_crops(spec, CORPUS, CROP, params)
    # The lips move in the shapes dlib measures on the face crops too: the lip gap (points 62, 66) opens and closes.
    gap = shapes[:, 18, 1] - shapes[:, 14, 1]
    assert shapes.shape == (len(crops), 20, 2) and gap.max() - gap.min() > 0.05, gap
    # The lips move (and so the crop frames them): the frames differ most where the mouth is.
    motion = crops.astype(np.float32).std(axis=0)
    assert motion.max() > 20, motion.max()
    h, w = motion.shape
    assert motion[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean() > motion.mean()


def test_crops_are_those_the_corpus_and_preprocessing_give_the_same_clip(tmp_path):
    # A spec of the talking-face corpus, once through its files and preprocessing, once in memory.
    spec = plan_corpus(CORPUS)[0]
    render_corpus_clip(spec, CORPUS, tmp_path / spec.identity)
    clip = Clip(spec.identity, spec.name, tmp_path / spec.identity / f"{spec.name}.mp4", spec.sentence, "train")
    prepared = preprocess_clip(clip, from_params_yaml(PreprocessParams, "preprocess", size=CROP.face_size, pads=CROP.pads,
                                                      smooth=CROP.smooth))
    expected = mouth_crops(prepared["faces"], prepared["landmarks"], size=(32, 48), width_scale=CROP.crop_scale,
                           sigma=CROP.crop_sigma)
    crops, shapes = lipreading_crops(spec, CORPUS, CROP, lipreading_params())
    assert crops.dtype == np.uint8 and crops.shape == expected.shape
    assert np.abs(crops / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    # The shapes are those a landmark reader measures on the prepared clip (same detector, faces
    # within half a grey level, so the points agree to a small fraction of the eye-to-mouth distance).
    measured = lip_inputs(LipReaderConfig(inputs="landmarks"), prepared["faces"], prepared["landmarks"])
    assert shapes.shape == measured.shape and np.abs(shapes - measured).mean() < 0.01
    assert crops.std(axis=0).max() > 20  # the lips move


def test_built_corpus_reads_back_and_refuses_crops_made_otherwise(tmp_path):
    out = tmp_path / "lipreading.npz"
    summary = build_lipreading_corpus(out, CORPUS, lipreading_params(n_sentences=4, seed=5, workers=1), CROP)
    specs = plan_lipreading(CORPUS, lipreading_params(n_sentences=4, seed=5))
    assert summary["clips"] == len(specs) > 0
    keys, crops, transcripts = read_lipreading_corpus(out, CROP.mouth())
    assert keys == [s.key for s in specs] and transcripts == [s.sentence.upper() for s in specs]
    assert [c.shape[1:] for c in crops] == [(32, 48)] * len(specs) and sum(map(len, crops)) == summary["frames"]
    assert 0.0 <= min(c.min() for c in crops) and max(c.max() for c in crops) <= 1.0
    keys_again, shapes, _ = read_lipreading_corpus(out, CROP.mouth(), "landmarks")
    assert keys_again == keys and [s.shape for s in shapes] == [(len(c), 20, 2) for c in crops]
    with pytest.raises(LipReadingCorpusError, match="rebuild it"):
        read_lipreading_corpus(out, {**CROP.mouth(), "crop_height": 16})
    with pytest.raises(LipReadingCorpusError, match="not found"):
        read_lipreading_corpus(tmp_path / "missing.npz", CROP.mouth())
    build_lipreading_corpus(empty := tmp_path / "empty.npz", CORPUS, lipreading_params(n_sentences=0), CROP)
    assert read_lipreading_corpus(empty, CROP.mouth()) == ([], [], [])


def test_the_lip_reader_trains_on_the_corpus_and_the_extra_clips(tmp_path):
    prepared, corpus = write_tiny_dataset(tmp_path)
    params = tiny_train_params(steps=2, batch_size=2)
    config = params.model_config()
    mouth = {"crop_height": config.crop_height, "crop_width": config.crop_width, "crop_scale": config.crop_scale,
             "crop_sigma": config.crop_sigma}
    extra = tmp_path / "lipreading.npz"
    rng = np.random.default_rng(0)
    np.savez(extra, crops=rng.integers(0, 255, (18, 16, 24), dtype=np.uint8), lengths=np.array([8, 10]),
             transcripts=np.array(["BIN BLUE AT A ONE NOW", "SET RED BY B TWO SOON"]),
             keys=np.array(["x/lr0", "x/lr1"]), crop=np.array(json.dumps(mouth)))
    log = train_lipreader(prepared, corpus, tmp_path / "lipreader.safetensors", params, run_dir=tmp_path / "run",
                          extra=extra)
    assert log["train_clips"] == {"corpus": 3, "extra": 2}
    np.savez(extra, crops=np.zeros((18, 16, 24), np.uint8), lengths=np.array([8, 10]),
             transcripts=np.array(["A", "B"]), keys=np.array(["x/lr0", "x/lr1"]),
             crop=np.array(json.dumps({**mouth, "crop_width": 48})))
    with pytest.raises(LipReadingCorpusError, match="crop_width"):
        train_lipreader(prepared, corpus, tmp_path / "again.safetensors", params, run_dir=tmp_path / "run2",
                        extra=extra)
