"""The VTCS lip reader: mouth crops, CTC decoding, training, checkpoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from opflowtalker.models.checkpoints import CheckpointError, save_safetensors
from opflowtalker.models.ctc import greedy_decode
from opflowtalker.models.lipreader import (CHARACTERS, GRID_WORDS, LipReader, LipReaderConfig, LipReaderError,
                                           lip_inputs, load_lipreader, read_lips)
from opflowtalker.models.mouths import mirror_shapes, mouth_crops, mouth_shapes
from opflowtalker.params import from_params_yaml
from opflowtalker.training.lipreader import (LipReaderTrainParams, LipReadingClips, chance_level,
                                             evaluate_lipreader, lipreader_loss, load_lipreading_clips,
                                             sample_lipreader_batch, train_lipreader)

TINY = dict(crop_height=16, crop_width=24, front_channels=4, channels=(8,), feature_dim=16, hidden=8, layers=1,
            dropout=0.0)
WORDS = ("BIN", "BLUE", "RED", "NOW")


def tiny_train_params(**kw) -> LipReaderTrainParams:
    """params.yaml's ``train_lipreader`` for a tiny reader trained a few steps: TINY's sizes, pixels
    in, no augmentation beyond flips and shifts, a constant rate, an evaluation every 2 steps."""
    values = {k: v for k, v in TINY.items() if k != "feature_dim"}
    return from_params_yaml(LipReaderTrainParams, "train_lipreader", **{
        **values, "lr": 3e-3, "inputs": "pixels", "motion": False, "scale": 0.0, "speed": 0.0, "stretch": 0.0,
        "rotate": 0.0, "jitter": 0.0, "decay_steps": 0, "checkpoint_every": 2, "log_every": 1, "eval_every": 2, **kw})


def tiny_config(**kw) -> LipReaderConfig:
    return LipReaderConfig(**{**TINY, "vocabulary": WORDS, **kw})


def one_hot_log_probs(classes: list[int], n_classes: int) -> torch.Tensor:
    """(1, T, V) log-probabilities whose best class at frame t is classes[t]."""
    logits = torch.full((len(classes), n_classes), -5.0)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = 5.0
    return torch.log_softmax(logits, dim=-1)[None]


def synthetic_face(centre=(60.0, 70.0), eye_y=30.0, square=10, size=96):
    """A dark face crop with a bright square at the mouth and 68 landmarks: the mouth points on an
    ellipse around ``centre``, the eyes on a line ``eye_y``, the rest at the centre."""
    cx, cy = centre
    image = np.full((size, size, 3), 20, dtype=np.uint8)
    half = square // 2
    image[int(cy) - half: int(cy) + half, int(cx) - half: int(cx) + half] = 230
    landmarks = np.tile(np.array([[size / 2, size / 2]], dtype=np.float32), (68, 1))
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    landmarks[48:68] = np.stack([cx + 12 * np.cos(angles), cy + 5 * np.sin(angles)], axis=1)
    landmarks[36:48] = np.stack([np.linspace(cx - 20, cx + 20, 12), np.full(12, eye_y)], axis=1)
    return image, landmarks


# --- the model ---

def test_lip_reader_gives_per_frame_log_probabilities_over_tokens_and_blank():
    for tokens, n in (("words", len(WORDS) + 1), ("characters", len(CHARACTERS) + 1)):
        model = LipReader(tiny_config(tokens=tokens)).eval()
        out = model(torch.rand(2, 7, 1, 16, 24))
        assert out.shape == (2, 7, n)
        assert torch.allclose(out.exp().sum(-1), torch.ones(2, 7), atol=1e-5)


def test_default_reader_reads_the_51_grid_words():
    config = LipReaderConfig()
    assert len(GRID_WORDS) == 51 and config.tokens == "words" and config.n_classes == 52
    assert config.decode(config.encode("place blue  with y five please")) == "PLACE BLUE WITH Y FIVE PLEASE"


def test_padding_a_shorter_clip_does_not_change_what_is_read_from_it():
    torch.manual_seed(0)
    model = LipReader(tiny_config()).eval()
    crops = torch.rand(2, 9, 1, 16, 24)
    batched = model(crops, torch.tensor([6, 9]))
    alone = model(crops[:1, :6])
    assert torch.allclose(batched[0, :6], alone[0], atol=1e-5)


def test_padding_a_shorter_clip_does_not_change_what_is_read_from_its_mouth_shapes():
    torch.manual_seed(0)
    model = LipReader(tiny_config(inputs="landmarks")).eval()
    shapes = torch.randn(2, 9, 20, 2) * 0.1
    batched = model(shapes, torch.tensor([6, 9]))
    alone = model(shapes[:1, :6])
    assert torch.allclose(batched[0, :6], alone[0], atol=1e-5)


def test_standardising_each_clip_makes_the_reader_blind_to_brightness_and_contrast():
    torch.manual_seed(0)
    model = LipReader(tiny_config()).eval()
    crops = torch.rand(1, 8, 1, 16, 24) * 0.5
    assert torch.allclose(model(crops), model(0.2 + 1.5 * crops), atol=1e-4)


def test_a_motion_reader_sees_only_what_moves():
    torch.manual_seed(0)
    model = LipReader(tiny_config(motion=True)).eval()
    crops = torch.rand(1, 8, 1, 16, 24) * 0.5
    face = torch.rand(1, 1, 1, 16, 24) * 0.5
    # Another face under the same motion (a still image added to every frame) reads the same ...
    assert torch.allclose(model(crops), model(crops + face), atol=1e-4)
    # ... and any still video reads as the same thing, whatever its face.
    assert torch.allclose(model(face.expand(1, 8, 1, 16, 24)), model(0.3 + face.expand(1, 8, 1, 16, 24) * 0),
                          atol=1e-5)
    # A reader of frames tells the two faces apart.
    frames = LipReader(tiny_config()).eval()
    assert not torch.allclose(frames(crops), frames(crops + face), atol=1e-3)
    # Padding stays out of the clip's mean frame.
    batched = model(torch.cat([crops, torch.rand(1, 8, 1, 16, 24)]), torch.tensor([5, 8]))
    assert torch.allclose(batched[0, :5], model(crops[:, :5])[0], atol=1e-5)


def test_a_reading_averages_a_clip_with_its_mirror_image_so_both_read_alike():
    torch.manual_seed(0)
    model = LipReader(tiny_config()).eval()
    crops = torch.rand(2, 8, 1, 16, 24)
    lengths = torch.tensor([8, 6])
    read, mirrored = model.read(crops, lengths), model.read(crops.flip(-1), lengths)
    assert torch.allclose(read, mirrored, atol=1e-5)
    # Probabilities still sum to one per frame, and the reading is not the plain forward pass
    # (the network itself is not symmetric).
    assert torch.allclose(read.exp().sum(-1), torch.ones(2, 8), atol=1e-5)
    assert not torch.allclose(read, model(crops, lengths), atol=1e-3)
    expected = torch.log((model(crops, lengths).exp() + model(crops.flip(-1), lengths).exp()) / 2)
    assert torch.allclose(read, expected, atol=1e-5)


def test_bad_inputs_and_configs_are_one_sentence_errors():
    with pytest.raises(LipReaderError):
        LipReaderConfig(tokens="phonemes")
    with pytest.raises(LipReaderError):
        LipReaderConfig(vocabulary=("A", "A"))
    with pytest.raises(LipReaderError, match="not in the lip reader's tokens"):
        tiny_config().encode("BIN GREEN NOW")
    with pytest.raises(LipReaderError, match=r"\(B, T, 1, H, W\)"):
        LipReader(tiny_config())(torch.rand(2, 7, 16, 24))


# --- CTC decoding ---

def test_greedy_decoding_collapses_repeats_then_drops_blanks():
    config = tiny_config()  # classes: 0 blank, 1 BIN, 2 BLUE, 3 RED, 4 NOW
    # BIN BIN | blank | BIN | BLUE BLUE | blank blank | NOW: a blank separates the two BINs.
    log_probs = one_hot_log_probs([1, 1, 0, 1, 2, 2, 0, 0, 4], config.n_classes)
    assert greedy_decode(log_probs, config=config) == ["BIN BIN BLUE NOW"]
    # Only the first `length` frames count.
    assert greedy_decode(log_probs, torch.tensor([5]), config) == ["BIN BIN BLUE"]
    assert greedy_decode(one_hot_log_probs([0, 0, 0], config.n_classes), config=config) == [""]


def test_greedy_decoding_spells_characters_and_keeps_double_letters_split_by_a_blank():
    config = tiny_config(tokens="characters")
    c = {ch: i + 1 for i, ch in enumerate(CHARACTERS)}
    frames = [c["S"], c["E"], c["E"], 0, c["E"], c[" "], c[" "], 0, c["A"], c["'"], 0, 0, c[" "]]
    assert greedy_decode(one_hot_log_probs(frames, config.n_classes), config=config) == ["SEE A'"]


# --- mouth crops ---

def test_mouth_crop_is_centred_on_the_mouth_landmarks_and_sized_by_the_eye_to_mouth_distance():
    image, landmarks = synthetic_face(centre=(60.0, 70.0), eye_y=30.0, square=10)
    crops = mouth_crops(np.stack([image] * 3), np.stack([landmarks] * 3), size=(32, 48), width_scale=1.1)
    assert crops.shape == (3, 32, 48) and crops.dtype == np.float32
    assert 0.0 <= crops.min() and crops.max() <= 1.0
    bright = crops[0] > 0.5
    ys, xs = np.nonzero(bright)
    # The square spans pixels 55..64 x 65..74, centred on (59.5, 69.5): half a pixel off the
    # landmark centre (60, 70) at a scale of 48 / (1.1 * 40).
    scale = 48 / (1.1 * 40.0)
    assert xs.mean() == pytest.approx(23.5 - 0.5 * scale, abs=0.3)
    assert ys.mean() == pytest.approx(15.5 - 0.5 * scale, abs=0.3)
    assert xs.max() - xs.min() + 1 == pytest.approx(10 * scale, abs=1.5)


def test_mouth_crop_is_smoothed_over_time_and_bridges_frames_without_landmarks():
    image, landmarks = synthetic_face()
    frames = np.stack([image] * 9)
    jittered = np.stack([landmarks] * 9)
    jittered[:, 48:68, 0] += np.array([2.0, -2.0] * 4 + [2.0])[:, None]  # lips jitter 4 px frame to frame
    steady = mouth_crops(frames, np.stack([landmarks] * 9))
    smoothed = mouth_crops(frames, jittered, sigma=2.0)
    raw = mouth_crops(frames, jittered, sigma=0.0)
    middle = slice(3, 6)
    assert np.abs(smoothed[middle] - steady[middle]).max() < 0.25 * np.abs(raw[middle] - steady[middle]).max()
    missing = np.stack([landmarks] * 9)
    missing[4] = np.nan
    assert np.allclose(mouth_crops(frames, missing), steady, atol=1e-6)
    with pytest.raises(LipReaderError, match="uint8"):
        mouth_crops(frames.astype(np.float32), missing)


# --- training ---

def fixed_data(n: int = 4, length: int = 12) -> LipReadingClips:
    rng = np.random.default_rng(0)
    texts = ["BIN BLUE NOW", "RED NOW", "BIN RED", "BLUE BLUE NOW"][:n]
    return LipReadingClips([f"s/{i}" for i in range(n)], [rng.random((length, 16, 24), dtype=np.float32) for _ in range(n)],
                           texts)


def test_batches_are_padded_clips_with_their_word_indices():
    data, config = fixed_data(), tiny_config()
    batch = sample_lipreader_batch(data, np.random.default_rng(1), 3, config, flip=0.0, shift=0, speed=0.0)
    assert batch["crops"].shape == (3, 12, 1, 16, 24)
    assert batch["lengths"].tolist() == [12, 12, 12]
    for row, length in zip(batch["targets"], batch["target_lengths"]):
        text = config.decode(row[:length].tolist())
        assert text in data.transcripts and row[length:].eq(0).all()
    mirrored = sample_lipreader_batch(data, np.random.default_rng(1), 3, config, flip=1.0, shift=0, speed=0.0)
    assert torch.equal(mirrored["crops"], batch["crops"].flip(-1))
    faster = sample_lipreader_batch(data, np.random.default_rng(2), 8, config, flip=0.0, shift=0, speed=0.3)
    assert set(faster["lengths"].tolist()) - {12} and all(9 <= n <= 18 for n in faster["lengths"].tolist())


def test_a_few_steps_of_training_reduce_the_ctc_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    config = tiny_config()
    model = LipReader(config)
    batch = sample_lipreader_batch(fixed_data(), np.random.default_rng(0), 4, config, flip=0.0, shift=0, speed=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(40):
        terms = lipreader_loss(model, batch, step)
        assert set(terms) == {"loss", "blank_frames"}
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < 0.5 * losses[0]


class ScriptedReader(nn.Module):
    """Reads "BIN RED" off every clip, whatever it shows."""

    def __init__(self):
        super().__init__()
        self.config = tiny_config()
        self.weight = nn.Parameter(torch.zeros(()))

    read = LipReader.read

    def forward(self, crops, lengths=None):
        said = [1, 1, 0, 3] + [0] * (crops.shape[1] - 4)  # BIN, blank, RED, then blanks
        return one_hot_log_probs(said, self.config.n_classes).expand(crops.shape[0], -1, -1) + self.weight


def test_evaluation_scores_greedy_readings_by_word_and_character_error_rate():
    data = LipReadingClips(["a/0", "a/1"], [np.zeros((6, 16, 24), np.float32)] * 2, ["BIN RED", "BIN BLUE NOW"])
    scores = evaluate_lipreader(ScriptedReader(), data)
    # "BIN BLUE NOW" read as "BIN RED": one substitution and one deletion in 2 + 3 words.
    assert scores["wer"] == pytest.approx(2 / 5)
    assert scores["n"] == 2 and scores["sentence_accuracy"] == 0.5
    # Characters: 7 + 12 in the references. "BIN BLUE NOW" -> "BIN RED" keeps "BIN " and the E of
    # BLUE: "BLU" -> "R" (1 substitution, 2 deletions), " NOW" -> "D" (1 substitution, 3 deletions).
    assert scores["cer"] == pytest.approx(7 / 19)


def test_chance_level_answers_the_commonest_word_of_each_position():
    chance = chance_level(["A B", "A C", "D C"], ["A C", "D B"], samples=5)
    assert chance["majority_sentence"] == "A C"
    assert chance["majority_wer"] == pytest.approx(2 / 4)
    assert chance["majority_cer"] == pytest.approx(2 / 6)
    assert 0.0 < chance["random_wer"] <= 1.0


# --- checkpoints and the whole stage ---

def test_saved_lip_reader_loads_and_reads_the_same(tmp_path):
    torch.manual_seed(0)
    model = LipReader(tiny_config()).eval()
    path = save_safetensors(model, tmp_path / "lipreader.safetensors")
    loaded = load_lipreader(path)
    assert loaded.config == model.config
    crops = torch.rand(2, 7, 1, 16, 24)
    assert torch.equal(loaded(crops), model(crops))
    save_safetensors(nn.Linear(2, 2), tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a LipReader"):
        load_lipreader(tmp_path / "other.safetensors")


def write_tiny_dataset(root: Path) -> tuple[Path, Path]:
    """A prepared folder and a corpus-layout transcript tree: 3 train, 1 val, 1 test clip."""
    prepared, corpus = root / "prepared", root / "corpus"
    image, landmarks = synthetic_face()
    rng = np.random.default_rng(0)
    splits = {"train": ["p/0", "p/1", "p/2"], "val": ["p/3"], "test": ["q/0"]}
    texts = ["BIN BLUE NOW", "BIN RED NOW", "BIN RED", "BIN NOW", "BLUE RED"]
    for (split, keys), offset in zip(splits.items(), (0, 3, 4)):
        for i, key in enumerate(keys):
            faces = np.clip(image[None] + rng.integers(0, 30, (10, 96, 96, 3)), 0, 255).astype(np.uint8)
            (prepared / key).parent.mkdir(parents=True, exist_ok=True)
            np.savez(prepared / f"{key}.npz", faces=faces, landmarks=np.stack([landmarks] * 10),
                     face_found=np.ones(10, bool))
            (corpus / key).parent.mkdir(parents=True, exist_ok=True)
            (corpus / f"{key}.mp4").touch()
            (corpus / f"{key}.txt").write_text(f"Text:  {texts[offset + i]}\n")
        (prepared / f"{split}.txt").write_text("\n".join(keys) + "\n")
        (corpus / f"{split}.txt").write_text("\n".join(keys) + "\n")
    return prepared, corpus


def test_training_stage_writes_a_checkpoint_that_reads_test_clips(tmp_path):
    prepared, corpus = write_tiny_dataset(tmp_path)
    params = tiny_train_params(steps=3, batch_size=2)
    out = tmp_path / "lipreader.safetensors"
    log = train_lipreader(prepared, corpus, out, params, run_dir=tmp_path / "run")
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert log["test"]["n"] == 1 and 0.0 <= log["test"]["cer"]
    assert log["history"]["step"] == [1, 2, 3] and [e["step"] for e in log["history"]["eval"]] == [2, 3]
    assert log["chance"]["majority_sentence"] == "BIN RED NOW"
    # The corpus speaks GRID words, so the checkpoint keeps GRID's vocabulary.
    model = load_lipreader(out)
    assert model.config.vocabulary == GRID_WORDS
    data = np.load(prepared / "q/0.npz")
    read = read_lips(model, data["faces"], data["landmarks"])
    assert set(read.split()) <= set(GRID_WORDS)
    clips = load_lipreading_clips(prepared, corpus, "test", model.config)
    assert clips.transcripts == ["BLUE RED"] and clips.crops[0].shape == (10, 16, 24)


# --- reading mouth shapes ---

def test_mouth_shapes_are_the_lips_in_face_units_wherever_and_however_large_the_face():
    _, landmarks = synthetic_face()
    frames = np.stack([landmarks, landmarks, landmarks])
    frames[1, 48:68, 1] += np.where(np.arange(20) >= 10, 3.0, 0.0)  # the lower points drop: the mouth opens
    shapes = mouth_shapes(frames)
    assert shapes.shape == (3, 20, 2) and np.allclose(shapes.mean(axis=1), 0, atol=1e-6)
    # The ellipse is 24 px wide, the eyes 70 - 30 = 40 px above the mouth (the median frame): 0.6 face units wide.
    assert np.isclose(np.ptp(shapes[0, :, 0]), 24 / 40, atol=1e-3)
    moved = frames * 2.5 + np.array([7.0, -3.0])  # a larger face elsewhere in the crop
    assert np.allclose(mouth_shapes(moved), shapes, atol=1e-5)
    assert not np.allclose(shapes[0], shapes[1], atol=1e-2)
    frames[0, 50, 0] = np.nan
    with pytest.raises(LipReaderError, match="every frame"):
        mouth_shapes(frames)


def test_a_mirrored_mouth_shape_swaps_the_lips_left_and_right_sides():
    _, landmarks = synthetic_face()
    lips = landmarks[48:68].copy()
    # An iBUG mouth: corners 48 and 54, top 51, bottom 57; inner corners 60 and 64.
    lips[0], lips[6] = (40.0, 70.0), (80.0, 70.0)
    lips[3], lips[9] = (62.0, 64.0), (60.0, 77.0)
    shapes = mouth_shapes(np.concatenate([landmarks[:48], lips])[None])[0]
    mirrored = mirror_shapes(shapes)
    assert np.allclose(mirror_shapes(mirrored), shapes)
    assert np.allclose(mirrored[6], shapes[0] * [-1, 1]) and np.allclose(mirrored[0], shapes[6] * [-1, 1])
    assert np.allclose(mirrored[3], shapes[3] * [-1, 1]) and np.allclose(mirrored[9], shapes[9] * [-1, 1])
    assert np.allclose(mirror_shapes(torch.from_numpy(shapes)).numpy(), mirrored)


def test_a_shape_reader_reads_a_clip_and_its_mirror_alike_and_a_still_mouth_as_nothing_moving():
    torch.manual_seed(0)
    model = LipReader(tiny_config(inputs="landmarks", motion=True)).eval()
    shapes = torch.randn(2, 8, 20, 2) * 0.1
    lengths = torch.tensor([8, 6])
    assert model(shapes, lengths).shape == (2, 8, len(WORDS) + 1)
    assert torch.allclose(model.read(shapes, lengths), model.read(mirror_shapes(shapes), lengths), atol=1e-5)
    # With motion on, a mouth that never moves reads the same wherever it is set.
    still = shapes[:, :1].expand(-1, 8, -1, -1)
    assert torch.allclose(model(still, lengths), model(still * 0 + shapes[:1, :1], lengths), atol=1e-5)
    with pytest.raises(LipReaderError, match="shapes"):
        model(torch.rand(2, 8, 1, 16, 24))
    with pytest.raises(LipReaderError, match="inputs"):
        LipReaderConfig(inputs="audio")


def test_shape_batches_are_augmented_in_geometry_only():
    rng = np.random.default_rng(0)
    _, landmarks = synthetic_face()
    clip = mouth_shapes(np.stack([landmarks] * 6))
    data = LipReadingClips(["a"], [clip], ["BIN BLUE"])
    config = tiny_config(inputs="landmarks")
    plain = sample_lipreader_batch(data, rng, 2, config, flip=0.0, shift=2)
    assert plain["crops"].shape == (2, 6, 20, 2) and torch.allclose(plain["crops"][0], torch.from_numpy(clip))
    turned = sample_lipreader_batch(data, rng, 1, config, flip=0.0, scale=0.2, stretch=0.2, rotate=10.0)["crops"][0]
    # Zoom, stretch and tilt keep the mouth centred and change its size and shape.
    assert torch.allclose(turned.mean(dim=1), torch.zeros(6, 2), atol=1e-5) and not torch.allclose(turned, plain["crops"][0])
    noisy = sample_lipreader_batch(data, rng, 1, config, flip=0.0, jitter=0.01)["crops"][0]
    assert 0.005 < float((noisy - plain["crops"][0]).std()) < 0.02


def test_a_shape_reader_trains_and_reads_what_the_detector_finds_on_the_frames(tmp_path):
    prepared, corpus = write_tiny_dataset(tmp_path)
    params = tiny_train_params(steps=2, batch_size=2, inputs="landmarks", motion=True, jitter=0.01)
    out = tmp_path / "lipreader.safetensors"
    train_lipreader(prepared, corpus, out, params, run_dir=tmp_path / "run")
    model = load_lipreader(out)
    assert model.config.inputs == "landmarks"
    data = np.load(prepared / "q/0.npz")
    clips = load_lipreading_clips(prepared, corpus, "test", model.config)
    assert clips.crops[0].shape == (10, 20, 2)
    # The shapes come from the frames, not from the landmarks stored beside them.
    assert np.allclose(clips.crops[0], lip_inputs(model.config, data["faces"], data["landmarks"] * 0 + 1))
    assert set(read_lips(model, data["faces"], data["landmarks"]).split()) <= set(GRID_WORDS)
